//! The supervisor against a store that starts failing mid-run.
//!
//! These run in-process (the supervisor reaps every child of the process), so they take a
//! lock to run one at a time.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use batchlock::fault::{Fault, FaultInjectingStore};
use batchlock::lease::now_millis;
use batchlock::supervisor::{self, ConflictPolicy, LeaseTiming, RunSpec, exit};
use batchlock::{Holder, LeaseStore, LockKey, MemoryStore, RunOutcome};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn timing() -> LeaseTiming {
    LeaseTiming {
        lease: Duration::from_secs(3),
        heartbeat: Duration::from_secs(1),
        kill_grace: Duration::from_millis(300),
        clock_skew: Duration::from_millis(200),
        kill_margin: Duration::from_millis(500),
    }
}

fn spec(key: &str, script: String, conflict: ConflictPolicy) -> RunSpec {
    RunSpec {
        key: LockKey::new(key).unwrap(),
        command: ["sh", "-c", &script].iter().map(OsString::from).collect(),
        timing: timing(),
        timeout: Some(Duration::from_secs(60)),
        conflict,
        conflict_exit_code: None,
        holder: Holder::current(),
        store_timeout: Duration::from_millis(500),
        on_lost: None,
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        let state = s
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        state != Some("Z")
    })
}

async fn store_fault_mid_run(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let inner: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
    let faulty = Arc::new(FaultInjectingStore::new(Arc::clone(&inner)));
    let script = format!("sleep 300 & echo \"$$ $!\" > {}; wait", pids.display());
    let run = tokio::spawn(supervisor::run(
        Arc::clone(&faulty) as Arc<dyn LeaseStore>,
        spec("faulty", script, ConflictPolicy::Skip),
    ));
    // Let one heartbeat succeed, then break the store.
    let mut tree = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(&pids) {
            tree = s
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect();
            if tree.len() == 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tree.len(), 2, "child started");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    faulty.set(fault);
    // Note when the whole tree is gone, independently of when the supervisor returns (its
    // release and history calls still wait on the broken store).
    let watched = tree.clone();
    let watcher = std::thread::spawn(move || {
        loop {
            if watched.iter().all(|p| !alive(*p)) {
                return now_millis();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("supervisor must not hang on a broken store")
        .unwrap()
        .unwrap();
    let dead_at = watcher.join().unwrap();
    assert_eq!(report.outcome, RunOutcome::Lost);
    assert_eq!(report.exit_code, exit::LOCK_LOST);
    for pid in &tree {
        assert!(!alive(*pid), "process {pid} outlived the lease deadline");
    }
    // The last successful renewal is what other hosts see: the tree died before it expired,
    // with the clock-skew allowance to spare.
    let rec = inner.get("faulty").await.unwrap().expect("record");
    assert!(rec.owner.is_some(), "release could not reach the store");
    let skew = timing().clock_skew.as_millis() as u64;
    assert!(
        dead_at + skew <= rec.expires_at_ms,
        "child died at {dead_at}, lease expires at {}",
        rec.expires_at_ms
    );

    // Another runner, on the healthy store, gets the lock once it expires, without overlap.
    let started = dir.path().join("second-start");
    let second = supervisor::run(
        Arc::clone(&inner),
        spec(
            "faulty",
            format!("date +%s%3N > {}", started.display()),
            ConflictPolicy::Wait(Duration::from_secs(10)),
        ),
    )
    .await
    .unwrap();
    assert_eq!(second.outcome, RunOutcome::Ok);
    let second_start: u64 = std::fs::read_to_string(&started)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        second_start >= rec.expires_at_ms,
        "second run started before the lease expired"
    );
    assert!(second.token.unwrap() > report.token.unwrap());
}

#[tokio::test(flavor = "current_thread")]
async fn failing_store_mid_run_kills_the_child_before_expiry() {
    let _serial = SERIAL.lock().await;
    store_fault_mid_run(Fault::Fail).await;
}

#[tokio::test(flavor = "current_thread")]
async fn hanging_store_mid_run_kills_the_child_before_expiry() {
    let _serial = SERIAL.lock().await;
    store_fault_mid_run(Fault::Hang).await;
}

#[tokio::test(flavor = "current_thread")]
async fn too_short_a_lease_is_refused_before_anything_runs() {
    let _serial = SERIAL.lock().await;
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
    let mut s = spec("short", "true".into(), ConflictPolicy::Skip);
    s.timing.kill_grace = Duration::from_secs(3);
    let err = supervisor::run(Arc::clone(&store), s).await.unwrap_err();
    assert_eq!(err.exit_code(), exit::USAGE);
    assert!(
        store.get("short").await.unwrap().is_none(),
        "nothing acquired"
    );
}
