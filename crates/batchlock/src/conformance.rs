//! The shared conformance suite: plain async functions every [`LeaseStore`] must pass.
//!
//! A backend's test calls [`run_all`] (or the functions one by one) against a fresh store. The
//! functions panic with a message on a contract violation, so they work under any test harness.
//! Each function uses its own keys, so the suite can share one store between functions.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::lease::{
    Acquire, AcquireRequest, Holder, Lease, LockKey, Release, Renewal, RunOutcome, RunRecord,
    now_millis,
};
use crate::store::LeaseStore;

/// A unique prefix so that repeated runs against a persistent store (a shared DynamoDB table or
/// database) never see each other's keys.
fn unique(name: &str) -> LockKey {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    LockKey::new(format!("conf.{name}.{}", &suffix[..12])).expect("valid key")
}

fn request(key: &LockKey, owner: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest {
        key: key.clone(),
        owner: owner.to_owned(),
        holder: Holder {
            host: "conformance-host".into(),
            pid: 42,
            details: [("owner".to_owned(), owner.to_owned())].into(),
        },
        ttl,
    }
}

async fn acquired(store: &dyn LeaseStore, key: &LockKey, owner: &str, ttl: Duration) -> Lease {
    match store
        .try_acquire(&request(key, owner, ttl))
        .await
        .expect("acquire")
    {
        Acquire::Acquired(lease) => lease,
        Acquire::Held(rec) => panic!("{owner} expected to acquire {key}, but it is held: {rec:?}"),
    }
}

const LONG: Duration = Duration::from_secs(60);

/// The owner recorded for `key` (`None` when released); the record must exist.
async fn owner_of(store: &dyn LeaseStore, key: &LockKey) -> Option<String> {
    store
        .get(key.as_str())
        .await
        .expect("get")
        .expect("record exists")
        .owner
}

/// Runs every conformance function against `store`.
pub async fn run_all(store: Arc<dyn LeaseStore>) {
    acquire_free_then_conflict(&*store).await;
    acquire_is_idempotent_for_same_owner(&*store).await;
    takeover_only_after_expiry(&*store).await;
    renew_extends_and_is_idempotent(&*store).await;
    stale_owner_or_token_is_refused(&*store).await;
    fencing_tokens_strictly_increase(&*store).await;
    stop_request_reaches_next_renew(&*store).await;
    force_release_frees_and_keeps_token(&*store).await;
    get_and_list_show_records(&*store).await;
    history_keeps_order_and_outcome(&*store).await;
    release_and_record_frees_and_records(&*store).await;
    race_has_exactly_one_winner(Arc::clone(&store), 50, 20).await;
}

/// A free key is acquired; a second owner then gets the holder's record back.
pub async fn acquire_free_then_conflict(store: &dyn LeaseStore) {
    let key = unique("conflict");
    let before = now_millis();
    let lease = acquired(store, &key, "a", LONG).await;
    assert_eq!(lease.key, key.as_str());
    assert_eq!(lease.owner, "a");
    assert!(
        lease.expires_at_ms >= before + 59_000,
        "expiry must be about now + ttl"
    );
    match store.try_acquire(&request(&key, "b", LONG)).await.unwrap() {
        Acquire::Held(rec) => {
            assert_eq!(rec.owner.as_deref(), Some("a"));
            assert_eq!(rec.token, lease.token);
            let holder = rec.holder.expect("holder is reported");
            assert_eq!(holder.host, "conformance-host");
            assert_eq!(holder.details.get("owner").map(String::as_str), Some("a"));
        }
        other => panic!("second owner must not acquire a held key: {other:?}"),
    }
}

/// Acquiring again as the same owner (a retry after a lost answer) returns the same lease.
pub async fn acquire_is_idempotent_for_same_owner(store: &dyn LeaseStore) {
    let key = unique("idem");
    let first = acquired(store, &key, "a", LONG).await;
    let again = acquired(store, &key, "a", LONG).await;
    assert_eq!(
        first.token, again.token,
        "a retry must not issue a new token"
    );
}

/// An unexpired lease cannot be taken; an expired one can, with a new token.
pub async fn takeover_only_after_expiry(store: &dyn LeaseStore) {
    let key = unique("takeover");
    let ttl = Duration::from_millis(400);
    let old = acquired(store, &key, "old", ttl).await;
    assert!(
        matches!(
            store
                .try_acquire(&request(&key, "new", LONG))
                .await
                .unwrap(),
            Acquire::Held(_)
        ),
        "taken over before expiry"
    );
    tokio::time::sleep(ttl + Duration::from_millis(150)).await;
    let new = acquired(store, &key, "new", LONG).await;
    assert!(new.token > old.token, "takeover must issue a greater token");
}

/// Renewal moves the expiry forward and can be repeated with the same lease.
pub async fn renew_extends_and_is_idempotent(store: &dyn LeaseStore) {
    let key = unique("renew");
    let lease = acquired(store, &key, "a", Duration::from_secs(5)).await;
    for _ in 0..2 {
        match store.renew(&lease, LONG).await.unwrap() {
            Renewal::Renewed {
                expires_at_ms,
                stop_requested,
            } => {
                assert!(expires_at_ms > lease.expires_at_ms + 50_000);
                assert!(!stop_requested);
            }
            Renewal::Lost(rec) => panic!("own lease reported lost: {rec:?}"),
        }
    }
    let rec = store.get(key.as_str()).await.unwrap().expect("record");
    assert!(
        rec.expires_at_ms > lease.expires_at_ms + 50_000,
        "renewal must be stored"
    );
}

/// After a takeover, the old owner can neither renew nor release, and a wrong token is refused
/// even with the right owner.
pub async fn stale_owner_or_token_is_refused(store: &dyn LeaseStore) {
    let key = unique("stale");
    let old = acquired(store, &key, "old", Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let new = acquired(store, &key, "new", LONG).await;

    assert!(
        matches!(store.renew(&old, LONG).await.unwrap(), Renewal::Lost(Some(ref r)) if r.owner.as_deref() == Some("new"))
    );
    assert!(matches!(
        store.release(&old).await.unwrap(),
        Release::NotHeld(_)
    ));
    let wrong_token = Lease {
        token: old.token,
        ..new.clone()
    };
    assert!(matches!(
        store.renew(&wrong_token, LONG).await.unwrap(),
        Renewal::Lost(_)
    ));
    assert!(matches!(
        store.release(&wrong_token).await.unwrap(),
        Release::NotHeld(_)
    ));

    let rec = store.get(key.as_str()).await.unwrap().expect("record");
    assert_eq!(
        rec.owner.as_deref(),
        Some("new"),
        "stale calls must not disturb the holder"
    );
    assert_eq!(rec.token, new.token);
    assert_eq!(store.release(&new).await.unwrap(), Release::Released);
    assert_eq!(owner_of(store, &key).await, None, "released");
}

/// Tokens grow across release, force-release and takeover.
pub async fn fencing_tokens_strictly_increase(store: &dyn LeaseStore) {
    let key = unique("fence");
    let mut last = None;
    for round in 0..6 {
        let lease = acquired(store, &key, &format!("o{round}"), LONG).await;
        if let Some(prev) = last {
            assert!(
                lease.token > prev,
                "token {} not greater than {prev}",
                lease.token
            );
        }
        last = Some(lease.token);
        if round % 2 == 0 {
            assert_eq!(store.release(&lease).await.unwrap(), Release::Released);
        } else {
            assert!(store.force_release(key.as_str()).await.unwrap().is_some());
        }
    }
}

/// `request_stop` is reported by the holder's next renewal; a free key has nobody to stop.
pub async fn stop_request_reaches_next_renew(store: &dyn LeaseStore) {
    let key = unique("stop");
    assert!(
        store.request_stop(key.as_str()).await.unwrap().is_none(),
        "unused key has no holder"
    );
    let lease = acquired(store, &key, "a", LONG).await;
    let rec = store
        .request_stop(key.as_str())
        .await
        .unwrap()
        .expect("holder record");
    assert_eq!(rec.owner.as_deref(), Some("a"));
    match store.renew(&lease, LONG).await.unwrap() {
        Renewal::Renewed { stop_requested, .. } => assert!(stop_requested, "stop request lost"),
        Renewal::Lost(r) => panic!("stop request must not lose the lease: {r:?}"),
    }
    store.release(&lease).await.unwrap();
    let next = acquired(store, &key, "b", LONG).await;
    match store.renew(&next, LONG).await.unwrap() {
        Renewal::Renewed { stop_requested, .. } => {
            assert!(
                !stop_requested,
                "a stop request must not outlive its holder"
            )
        }
        Renewal::Lost(r) => panic!("{r:?}"),
    }
}

/// Force-release frees a held key, reports who held it, and the holder's lease is then lost.
pub async fn force_release_frees_and_keeps_token(store: &dyn LeaseStore) {
    let key = unique("force");
    let lease = acquired(store, &key, "a", LONG).await;
    let was = store
        .force_release(key.as_str())
        .await
        .unwrap()
        .expect("previous holder");
    assert_eq!(was.owner.as_deref(), Some("a"));
    assert!(
        store.force_release(key.as_str()).await.unwrap().is_none(),
        "already free"
    );
    assert!(matches!(
        store.renew(&lease, LONG).await.unwrap(),
        Renewal::Lost(_)
    ));
    let rec = store.get(key.as_str()).await.unwrap().expect("record kept");
    assert_eq!(rec.token, lease.token, "force-release keeps the token");
    let next = acquired(store, &key, "b", LONG).await;
    assert!(next.token > lease.token);
}

/// `get` returns held and released records; `list` includes them, sorted by key.
pub async fn get_and_list_show_records(store: &dyn LeaseStore) {
    let a = unique("list-a");
    let b = unique("list-b");
    assert!(store.get(a.as_str()).await.unwrap().is_none());
    let la = acquired(store, &a, "a", LONG).await;
    acquired(store, &b, "b", LONG).await;
    store.release(&la).await.unwrap();
    let all = store.list().await.unwrap();
    let keys: Vec<&str> = all.iter().map(|r| r.key.as_str()).collect();
    assert!(keys.contains(&a.as_str()) && keys.contains(&b.as_str()));
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "list must be sorted by key");
    let ra = all.iter().find(|r| r.key == a.as_str()).unwrap();
    assert!(ra.owner.is_none());
    let rb = all.iter().find(|r| r.key == b.as_str()).unwrap();
    assert_eq!(rb.owner.as_deref(), Some("b"));
    assert!(rb.is_held_at(now_millis()));
}

/// Runs come back newest first, filtered by key, limited, with their outcome intact.
pub async fn history_keeps_order_and_outcome(store: &dyn LeaseStore) {
    let key = unique("history");
    let other = unique("history-other");
    let outcomes = [
        RunOutcome::Ok,
        RunOutcome::Failed,
        RunOutcome::Timeout,
        RunOutcome::Lost,
        RunOutcome::Stopped,
        RunOutcome::Skipped,
        RunOutcome::ForceReleased,
    ];
    for (i, outcome) in outcomes.iter().enumerate() {
        let run = RunRecord {
            key: key.as_str().into(),
            run_id: format!("run-{i}"),
            token: Some(crate::FencingToken(i as u64 + 1)),
            holder: Holder::current(),
            command: vec!["echo".into(), i.to_string()],
            started_at_ms: 1000 + i as u64,
            ended_at_ms: 2000 + i as u64,
            outcome: *outcome,
            exit_code: Some(i as i32),
            signal: None,
            message: Some(format!("message {i}")),
        };
        store.append_run(&run).await.unwrap();
        let mut noise = run.clone();
        noise.key = other.as_str().into();
        store.append_run(&noise).await.unwrap();
    }
    let runs = store.list_runs(Some(key.as_str()), 100).await.unwrap();
    assert_eq!(runs.len(), outcomes.len());
    for (run, (i, outcome)) in runs.iter().zip(outcomes.iter().enumerate().rev()) {
        assert_eq!(run.run_id, format!("run-{i}"), "newest first");
        assert_eq!(run.outcome, *outcome);
        assert_eq!(run.exit_code, Some(i as i32));
        assert_eq!(
            run.message.as_deref(),
            Some(format!("message {i}").as_str())
        );
        assert_eq!(run.key, key.as_str());
    }
    let limited = store.list_runs(Some(key.as_str()), 3).await.unwrap();
    assert_eq!(limited.len(), 3);
    assert_eq!(limited[0].run_id, format!("run-{}", outcomes.len() - 1));
    let everything = store.list_runs(None, 1000).await.unwrap();
    assert!(everything.iter().any(|r| r.key == other.as_str()));
}

/// `ways` concurrent acquirers on one key, `rounds` times: exactly one wins each round, and the
/// winners' tokens strictly increase from round to round.
pub async fn race_has_exactly_one_winner(store: Arc<dyn LeaseStore>, ways: usize, rounds: usize) {
    let key = unique("race");
    let mut last_token = None;
    for round in 0..rounds {
        let mut tasks = tokio::task::JoinSet::new();
        for way in 0..ways {
            let store = Arc::clone(&store);
            let req = request(&key, &format!("r{round}-w{way}"), LONG);
            tasks.spawn(async move { store.try_acquire(&req).await });
        }
        let mut winners = Vec::new();
        let mut holders = BTreeSet::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("task").expect("store call") {
                Acquire::Acquired(lease) => winners.push(lease),
                Acquire::Held(rec) => {
                    holders.insert(rec.owner.clone());
                }
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} winners: {winners:?}",
            winners.len()
        );
        let winner = winners.pop().unwrap();
        for h in &holders {
            assert_eq!(
                h.as_deref(),
                Some(winner.owner.as_str()),
                "losers must see the winner"
            );
        }
        if let Some(prev) = last_token {
            assert!(winner.token > prev);
        }
        last_token = Some(winner.token);
        assert_eq!(store.release(&winner).await.unwrap(), Release::Released);
    }
}

/// `release_and_record` frees our lease and records the run; for a lease that is no longer
/// ours it changes no lock but still records the run.
pub async fn release_and_record_frees_and_records(store: &dyn LeaseStore) {
    let key = unique("finish");
    let lease = acquired(store, &key, "a", LONG).await;
    let run = |run_id: &str| RunRecord {
        key: key.as_str().into(),
        run_id: run_id.into(),
        token: Some(lease.token),
        holder: Holder::current(),
        command: vec!["true".into()],
        started_at_ms: 1,
        ended_at_ms: 2,
        outcome: RunOutcome::Ok,
        exit_code: Some(0),
        signal: None,
        message: None,
    };
    assert_eq!(
        store
            .release_and_record(&lease, &run("first"))
            .await
            .unwrap(),
        Release::Released
    );
    assert_eq!(owner_of(store, &key).await, None, "released");
    let next = acquired(store, &key, "b", LONG).await;
    assert!(matches!(
        store
            .release_and_record(&lease, &run("stale"))
            .await
            .unwrap(),
        Release::NotHeld(_)
    ));
    assert_eq!(owner_of(store, &key).await.as_deref(), Some("b"));
    let runs = store.list_runs(Some(key.as_str()), 10).await.unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["stale", "first"]);
    store.release(&next).await.unwrap();
}
