//! The DynamoDB store against a real DynamoDB-compatible server (moto, started by
//! `scripts/moto.sh`; `scripts/test.sh` does that and exports the endpoint).
//!
//! Every test uses a table of its own, so tests can run in parallel and never see each other's
//! items. Credentials and region are fixed in the config: a developer's own AWS environment is
//! never used, so these tests cannot touch a real account.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
};
use batchlock::{
    Acquire, AcquireRequest, Holder, LeaseStore, LockKey, Release, RunOutcome, RunRecord,
    StoreError,
};
use batchlock_dynamodb::{
    CheckStatus, DynamoConfig, DynamoStore, LOCK_PK_PREFIX, LOCK_SK, PARTITION_KEY, SORT_KEY,
    TTL_ATTRIBUTE, attr, checks, doctor, init_table,
};

const ENDPOINT_ENV: &str = "BATCHLOCK_TEST_DYNAMODB_ENDPOINT";
const REGION: &str = "ap-northeast-1";

/// The test server's endpoint. Without one, fail on CI (a test that silently does nothing is
/// worse than a red build) and skip loudly elsewhere.
fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{ENDPOINT_ENV} is unset but CI=true: run the tests through `bash scripts/test.sh`, \
                 which starts moto"
            );
            eprintln!(
                "\n!!!!! SKIPPING DynamoDB test: {ENDPOINT_ENV} is unset. Run `bash scripts/test.sh`, \
                 or `. scripts/moto.sh start` before `cargo test`. !!!!!\n"
            );
            None
        }
    }
}

fn fresh_table_name() -> String {
    format!("batchlock-test-{}", uuid::Uuid::new_v4().simple())
}

fn config(endpoint: &str, table: &str) -> DynamoConfig {
    DynamoConfig::new(table)
        .with_region(REGION)
        .with_endpoint_url(endpoint)
        .with_static_credentials("test", "test")
}

/// A store on a new, initialised table; `None` when the test must be skipped.
async fn fresh_store() -> Option<DynamoStore> {
    let endpoint = endpoint()?;
    let store = DynamoStore::connect(config(&endpoint, &fresh_table_name()))
        .await
        .expect("connect");
    init_table(&store).await.expect("init");
    Some(store)
}

/// A store whose table does not exist.
async fn store_without_table() -> Option<DynamoStore> {
    let endpoint = endpoint()?;
    Some(
        DynamoStore::connect(config(&endpoint, &fresh_table_name()))
            .await
            .expect("connect"),
    )
}

fn request(key: &str, owner: &str) -> AcquireRequest {
    AcquireRequest {
        key: LockKey::new(key).unwrap(),
        owner: owner.into(),
        holder: Holder {
            host: "test-host".into(),
            pid: 7,
            details: [("task_arn".to_owned(), format!("arn:task/{owner}"))].into(),
        },
        ttl: Duration::from_secs(60),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_store_conforms() {
    let Some(store) = fresh_store().await else {
        return;
    };
    batchlock::conformance::run_all(Arc::new(store)).await;
}

/// Separate clients (as separate processes have) racing on one key: DynamoDB's conditional
/// write, not anything in our process, must pick exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_across_clients_has_one_winner() {
    let Some(first) = fresh_store().await else {
        return;
    };
    let endpoint = endpoint().unwrap();
    let mut stores: Vec<Arc<dyn LeaseStore>> = vec![Arc::new(first.clone())];
    for _ in 1..10 {
        let s = DynamoStore::connect(config(&endpoint, first.table()))
            .await
            .unwrap();
        stores.push(Arc::new(s));
    }
    let mut last = None;
    for round in 0..10 {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, store) in stores.iter().enumerate() {
            let store = Arc::clone(store);
            let req = request("race", &format!("{round}-{i}"));
            tasks.spawn(async move { store.try_acquire(&req).await });
        }
        let mut winners = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Acquire::Acquired(lease) = r.unwrap().unwrap() {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let w = winners.pop().unwrap();
        assert!(last.is_none_or(|t| w.token > t));
        last = Some(w.token);
        assert_eq!(stores[0].release(&w).await.unwrap(), Release::Released);
    }
}

#[tokio::test]
async fn init_twice_is_harmless() {
    let Some(store) = store_without_table().await else {
        return;
    };
    let first = init_table(&store).await.expect("first init");
    assert!(first.created_table && first.enabled_ttl, "{first:?}");
    let lease = match store.try_acquire(&request("kept", "a")).await.unwrap() {
        Acquire::Acquired(lease) => lease,
        other => panic!("{other:?}"),
    };
    let second = init_table(&store).await.expect("second init");
    assert!(!second.created_table && !second.enabled_ttl, "{second:?}");
    let rec = store
        .get("kept")
        .await
        .unwrap()
        .expect("items survive init");
    assert_eq!(rec.token, lease.token);
    let report = doctor(&store).await;
    assert!(report.is_healthy(), "{report}");
}

#[tokio::test]
async fn doctor_reports_a_missing_table() {
    let Some(store) = store_without_table().await else {
        return;
    };
    let report = doctor(&store).await;
    assert!(!report.is_healthy());
    let table = report.check(checks::TABLE).expect("table check");
    assert_eq!(table.status, CheckStatus::Problem);
    assert!(table.detail.contains(store.table()), "{report}");
    assert!(
        table.fix.as_deref().unwrap().contains("batchlock init"),
        "{report}"
    );
    assert_eq!(
        report.check(checks::TTL).unwrap().status,
        CheckStatus::Skipped
    );
    let text = report.to_string();
    assert!(text.contains("PROBLEM table exists"), "{text}");
}

#[tokio::test]
async fn doctor_reports_missing_ttl_and_init_fixes_it() {
    let Some(store) = store_without_table().await else {
        return;
    };
    // A table made by hand with the right keys but without TTL.
    let def = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, kt| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kt)
            .build()
            .unwrap()
    };
    store
        .client()
        .create_table()
        .table_name(store.table())
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(def(PARTITION_KEY))
        .attribute_definitions(def(SORT_KEY))
        .key_schema(key(PARTITION_KEY, KeyType::Hash))
        .key_schema(key(SORT_KEY, KeyType::Range))
        .send()
        .await
        .unwrap();

    let report = doctor(&store).await;
    let ttl = report.check(checks::TTL).expect("ttl check");
    assert_eq!(ttl.status, CheckStatus::Problem, "{report}");
    assert!(
        ttl.fix.as_deref().unwrap().contains(TTL_ATTRIBUTE),
        "{report}"
    );
    for name in [checks::REACHABLE, checks::TABLE, checks::KEY_SCHEMA] {
        assert_eq!(
            report.check(name).unwrap().status,
            CheckStatus::Ok,
            "{report}"
        );
    }
    for check in batchlock_dynamodb::IAM_ACTIONS
        .iter()
        .copied()
        .chain([checks::TRANSACTIONS])
    {
        assert_eq!(
            report.check(check).map(|c| &c.status),
            Some(&CheckStatus::Ok),
            "{report}"
        );
    }
    assert!(
        store.get("anything").await.unwrap().is_none(),
        "doctor must not leave items behind"
    );

    let outcome = init_table(&store).await.unwrap();
    assert!(!outcome.created_table && outcome.enabled_ttl, "{outcome:?}");
    let report = doctor(&store).await;
    assert!(report.is_healthy(), "{report}");
}

#[tokio::test]
async fn doctor_reports_a_wrong_key_schema() {
    let Some(store) = store_without_table().await else {
        return;
    };
    store
        .client()
        .create_table()
        .table_name(store.table())
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let report = doctor(&store).await;
    assert_eq!(
        report.check(checks::KEY_SCHEMA).unwrap().status,
        CheckStatus::Problem,
        "{report}"
    );
    let err = init_table(&store).await.unwrap_err();
    assert!(matches!(err, StoreError::Setup { .. }), "{err}");
}

/// The holder comes back inside the failed conditional write (ALL_OLD), with its details.
#[tokio::test]
async fn conflict_returns_the_holder_from_the_failed_write() {
    let Some(store) = fresh_store().await else {
        return;
    };
    let Acquire::Acquired(lease) = store.try_acquire(&request("job", "a")).await.unwrap() else {
        panic!("first acquire");
    };

    // The server honours ReturnValuesOnConditionCheckFailure: the failed write carries the item.
    let raw = store
        .client()
        .update_item()
        .table_name(store.table())
        .key(
            PARTITION_KEY,
            AttributeValue::S(format!("{LOCK_PK_PREFIX}job")),
        )
        .key(SORT_KEY, AttributeValue::S(LOCK_SK.into()))
        .update_expression("SET #stop = :t")
        .condition_expression("attribute_not_exists(#owner)")
        .expression_attribute_names("#stop", attr::STOP_REQUESTED)
        .expression_attribute_names("#owner", attr::OWNER)
        .expression_attribute_values(":t", AttributeValue::Bool(true))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await
        .unwrap_err();
    let old = match raw.into_service_error() {
        UpdateItemError::ConditionalCheckFailedException(e) => {
            e.item.expect("ALL_OLD item in the error")
        }
        other => panic!("expected a failed condition: {other:?}"),
    };
    assert_eq!(old.get(attr::OWNER), Some(&AttributeValue::S("a".into())));

    match store.try_acquire(&request("job", "b")).await.unwrap() {
        Acquire::Held(rec) => {
            assert_eq!(rec.owner.as_deref(), Some("a"));
            assert_eq!(rec.token, lease.token);
            let holder = rec.holder.expect("holder");
            assert_eq!(holder.host, "test-host");
            assert_eq!(holder.details["task_arn"], "arn:task/a");
        }
        other => panic!("b must not acquire: {other:?}"),
    }
}

/// TTL may delete an idle lock item; the next token must still be greater than every token
/// handed out before (downstream systems reject tokens they have seen exceeded).
#[tokio::test]
async fn tokens_keep_growing_after_the_item_is_collected() {
    let Some(store) = fresh_store().await else {
        return;
    };
    let mut last = 0;
    for _ in 0..3 {
        let Acquire::Acquired(lease) = store.try_acquire(&request("gc", "a")).await.unwrap() else {
            panic!("acquire");
        };
        assert!(lease.token.0 > last);
        last = lease.token.0;
        store.release(&lease).await.unwrap();
    }
    store
        .client()
        .delete_item()
        .table_name(store.table())
        .key(
            PARTITION_KEY,
            AttributeValue::S(format!("{LOCK_PK_PREFIX}gc")),
        )
        .key(SORT_KEY, AttributeValue::S(LOCK_SK.into()))
        .send()
        .await
        .unwrap();
    let Acquire::Acquired(lease) = store.try_acquire(&request("gc", "b")).await.unwrap() else {
        panic!("acquire after collection");
    };
    assert!(lease.token.0 > last, "{} after {last}", lease.token);

    let item = store
        .client()
        .get_item()
        .table_name(store.table())
        .key(
            PARTITION_KEY,
            AttributeValue::S(format!("{LOCK_PK_PREFIX}gc")),
        )
        .key(SORT_KEY, AttributeValue::S(LOCK_SK.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let AttributeValue::N(gc_at) = &item[TTL_ATTRIBUTE] else {
        panic!("TTL attribute must be a Number");
    };
    let gc_at: u64 = gc_at.parse().unwrap();
    let expires_s = lease.expires_at_ms / 1000;
    assert!(
        gc_at >= expires_s + 29 * 24 * 3600,
        "TTL {gc_at} must be far beyond lease expiry {expires_s} (epoch seconds)"
    );
}

#[tokio::test]
async fn missing_table_is_a_setup_error_that_says_run_init() {
    let Some(store) = store_without_table().await else {
        return;
    };
    let err = store
        .try_acquire(&request("job", "a"))
        .await
        .expect_err("no table");
    assert!(matches!(err, StoreError::Setup { .. }), "{err:?}");
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(msg.contains("batchlock init"), "{msg}");
    assert!(msg.contains(store.table()) && msg.contains(REGION), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(matches!(
        store.list_runs(None, 5).await,
        Err(StoreError::Setup { .. })
    ));
}

/// A server that is not there fails fast and as a transient error, within the time limits.
#[tokio::test]
async fn unreachable_endpoint_fails_fast_and_transient() {
    // Nothing listens on this port: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = DynamoConfig::new("batchlock-unreachable")
        .with_region(REGION)
        .with_endpoint_url(format!("http://127.0.0.1:{port}"))
        .with_static_credentials("test", "test")
        .with_timeouts(
            Duration::from_millis(300),
            Duration::from_millis(500),
            Duration::from_secs(2),
        );
    let store = DynamoStore::connect(cfg).await.unwrap();
    let started = Instant::now();
    let err = store.get("job").await.expect_err("nobody listens");
    assert!(err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("batchlock-unreachable"), "{err}");
}

/// A server that accepts connections but never answers: the operation timeout must end the
/// call (this is what keeps a renewal from outliving its lease).
#[tokio::test]
async fn hanging_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        // Accept and hold connections without answering, until the test ends.
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok((conn, _)) = listener.accept() {
                held.push(conn);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let cfg = DynamoConfig::new("batchlock-hang")
        .with_region(REGION)
        .with_endpoint_url(format!("http://127.0.0.1:{port}"))
        .with_static_credentials("test", "test")
        .with_timeouts(
            Duration::from_millis(300),
            Duration::from_millis(400),
            Duration::from_secs(1),
        );
    let store = DynamoStore::connect(cfg).await.unwrap();
    let started = Instant::now();
    let err = store.get("job").await.expect_err("no answer");
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    assert!(took < Duration::from_millis(1800), "took {took:?}");
    drop(holder);
}

/// A loopback proxy in front of the test server that notes the action (`X-Amz-Target`) of
/// every request and, if `strip_all_old`, deletes the `ALL_OLD` item from every failed
/// condition (`Item` of a `ConditionalCheckFailedException`, and of each cancellation reason
/// of a `TransactionCanceledException`): a server that ignores
/// `ReturnValuesOnConditionCheckFailure`.
struct Proxy {
    endpoint: String,
    /// How many items it removed.
    stripped: Arc<AtomicUsize>,
    /// The actions of the requests it relayed, in order (such as `UpdateItem`).
    actions: Arc<Mutex<Vec<String>>>,
}

fn proxy(upstream: &str, strip_all_old: bool) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let stripped = Arc::new(AtomicUsize::new(0));
    let actions = Arc::new(Mutex::new(Vec::new()));
    let (counter, log) = (Arc::clone(&stripped), Arc::clone(&actions));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (upstream, counter, log) =
                (upstream.clone(), Arc::clone(&counter), Arc::clone(&log));
            std::thread::spawn(move || {
                let _ = relay(conn, &upstream, strip_all_old, &counter, &log);
            });
        }
    });
    Proxy {
        endpoint,
        stripped,
        actions,
    }
}

impl Proxy {
    /// The actions relayed since the last call.
    fn take_actions(&self) -> Vec<String> {
        std::mem::take(&mut *self.actions.lock().unwrap())
    }
}

/// One HTTP/1.1 message: the head (up to the blank line) and a `Content-Length` body.
fn read_message(r: &mut impl BufRead) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Removes the `ALL_OLD` items from a failed-condition answer; returns how many it removed.
fn strip_all_old(json: &mut serde_json::Value) -> usize {
    let kind = json["__type"].as_str().unwrap_or_default().to_owned();
    let mut removed = 0;
    if kind.contains("ConditionalCheckFailed") {
        removed += usize::from(json.as_object_mut().unwrap().remove("Item").is_some());
    }
    if kind.contains("TransactionCanceled") {
        if let Some(reasons) = json["CancellationReasons"].as_array_mut() {
            for reason in reasons {
                if let Some(reason) = reason.as_object_mut() {
                    removed += usize::from(reason.remove("Item").is_some());
                }
            }
        }
    }
    removed
}

fn relay(
    client: TcpStream,
    upstream: &str,
    strip: bool,
    stripped: &AtomicUsize,
    actions: &Mutex<Vec<String>>,
) -> io::Result<()> {
    let mut requests = BufReader::new(client.try_clone()?);
    let mut client = client;
    while let Some((head, body)) = read_message(&mut requests)? {
        if let Some(target) = header(&head, "x-amz-target") {
            let action = target.rsplit('.').next().unwrap_or(target);
            actions.lock().unwrap().push(action.to_owned());
        }
        let mut server = TcpStream::connect(upstream)?;
        server.write_all(head.as_bytes())?;
        server.write_all(&body)?;
        let (head, mut body) = read_message(&mut BufReader::new(server))?
            .ok_or_else(|| io::Error::other("no answer"))?;
        if strip {
            if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) {
                let removed = strip_all_old(&mut json);
                if removed > 0 {
                    stripped.fetch_add(removed, Ordering::SeqCst);
                    body = serde_json::to_vec(&json).unwrap();
                }
            }
        }
        let head: String = head
            .split("\r\n")
            .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("content-length:"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        write!(client, "{head}content-length: {}\r\n\r\n", body.len())?;
        client.write_all(&body)?;
    }
    Ok(())
}

/// Without ALL_OLD in the failed write, the store reads the item (consistently) and still makes
/// every decision right: the whole conformance suite, race included, through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_all_old_the_store_falls_back_to_a_read() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    let Proxy {
        endpoint: proxied,
        stripped,
        ..
    } = proxy(&endpoint, true);
    let store = DynamoStore::connect(config(&proxied, &fresh_table_name()))
        .await
        .unwrap();
    init_table(&store).await.unwrap();

    let Acquire::Acquired(_) = store.try_acquire(&request("job", "a")).await.unwrap() else {
        panic!("first acquire");
    };
    match store.try_acquire(&request("job", "b")).await.unwrap() {
        Acquire::Held(rec) => {
            assert_eq!(rec.owner.as_deref(), Some("a"));
            assert_eq!(rec.holder.unwrap().details["task_arn"], "arn:task/a");
        }
        other => panic!("b must not acquire: {other:?}"),
    }
    assert!(
        stripped.load(Ordering::SeqCst) >= 1,
        "the proxy must have removed the ALL_OLD item"
    );
    batchlock::conformance::run_all(Arc::new(store)).await;
}

fn finished(lease: &batchlock::Lease, run_id: &str) -> RunRecord {
    RunRecord {
        key: lease.key.clone(),
        run_id: run_id.into(),
        token: Some(lease.token),
        holder: Holder::default(),
        command: vec!["true".into()],
        started_at_ms: 1,
        ended_at_ms: 2,
        outcome: RunOutcome::Ok,
        exit_code: Some(0),
        signal: None,
        message: None,
    }
}

/// The end of a run is one request when the lease is still ours; when it is not, the run is
/// still recorded and the holder reported, from the cancelled transaction's ALL_OLD item
/// (no extra read) or, without it, from a consistent read.
#[tokio::test]
async fn release_and_record_is_one_transaction() {
    let Some(endpoint) = endpoint() else {
        return;
    };
    for strip in [false, true] {
        let proxy = proxy(&endpoint, strip);
        let store = DynamoStore::connect(config(&proxy.endpoint, &fresh_table_name()))
            .await
            .unwrap();
        init_table(&store).await.unwrap();
        let Acquire::Acquired(lease) = store.try_acquire(&request("end", "a")).await.unwrap()
        else {
            panic!("acquire");
        };
        proxy.take_actions();
        let released = store
            .release_and_record(&lease, &finished(&lease, "first"))
            .await
            .unwrap();
        assert_eq!(released, Release::Released);
        assert_eq!(
            proxy.take_actions(),
            ["TransactWriteItems"],
            "strip={strip}"
        );

        let Acquire::Acquired(_) = store.try_acquire(&request("end", "b")).await.unwrap() else {
            panic!("b acquires the freed lock");
        };
        proxy.take_actions();
        match store
            .release_and_record(&lease, &finished(&lease, "stale"))
            .await
            .unwrap()
        {
            Release::NotHeld(Some(rec)) => assert_eq!(rec.owner.as_deref(), Some("b")),
            other => panic!("a's lease is gone: {other:?}"),
        }
        let expected: &[&str] = if strip {
            &["TransactWriteItems", "GetItem", "PutItem"]
        } else {
            &["TransactWriteItems", "PutItem"]
        };
        assert_eq!(proxy.take_actions(), expected, "strip={strip}");
        assert_eq!(proxy.stripped.load(Ordering::SeqCst) > 0, strip);

        // Retrying after a lost answer: the first attempt landed, so the run is not recorded
        // twice and nothing else changes.
        store
            .release_and_record(&lease, &finished(&lease, "stale"))
            .await
            .unwrap();
        let runs = store.list_runs(Some("end"), 10).await.unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["stale", "first"], "strip={strip}");
        assert_eq!(
            store.get("end").await.unwrap().unwrap().owner.as_deref(),
            Some("b")
        );
    }
}
