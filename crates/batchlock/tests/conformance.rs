//! The shared conformance suite against every store built into this crate.

use std::sync::Arc;

use batchlock::{LeaseStore, MemoryStore, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    conformance::run_all(Arc::new(MemoryStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = batchlock::SqliteStore::open(dir.path().join("nested/dir/locks.db")).unwrap();
    conformance::run_all(Arc::new(store)).await;
}

/// The in-process race above shares one connection; this one gives every contender its own
/// connection (as separate processes have), so SQLite's own locking decides the winner.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_race_across_connections_has_one_winner() {
    use batchlock::{Acquire, AcquireRequest, Holder, LockKey};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locks.db");
    let stores: Vec<Arc<dyn LeaseStore>> = (0..50)
        .map(|_| Arc::new(batchlock::SqliteStore::open(&path).unwrap()) as Arc<dyn LeaseStore>)
        .collect();
    let key = LockKey::new("race").unwrap();
    let mut last = None;
    for round in 0..20 {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, store) in stores.iter().enumerate() {
            let store = Arc::clone(store);
            let req = AcquireRequest {
                key: key.clone(),
                owner: format!("{round}-{i}"),
                holder: Holder::current(),
                ttl: std::time::Duration::from_secs(60),
            };
            tasks.spawn(async move { store.try_acquire(&req).await });
        }
        let mut winners = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Acquire::Acquired(lease) = r.unwrap().unwrap() {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        let w = winners.pop().unwrap();
        assert!(last.is_none_or(|t| w.token > t));
        last = Some(w.token);
        stores[0].release(&w).await.unwrap();
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_refuses_unwritable_path_with_a_hint() {
    let err = batchlock::SqliteStore::open("/proc/batchlock-cannot-write/locks.db").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("--store sqlite:PATH"), "{msg}");
    assert!(matches!(err, batchlock::StoreError::Setup { .. }));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_prunes_history_per_key() {
    use batchlock::sqlite::HISTORY_PER_KEY;
    use batchlock::{Holder, RunOutcome, RunRecord};
    let dir = tempfile::tempdir().unwrap();
    let store = batchlock::SqliteStore::open(dir.path().join("locks.db")).unwrap();
    let total = HISTORY_PER_KEY as usize + 5;
    for i in 0..total {
        for key in ["pruned", "other"] {
            if key == "other" && i > 2 {
                continue;
            }
            let run = RunRecord {
                key: key.into(),
                run_id: format!("run-{i}"),
                token: None,
                holder: Holder::current(),
                command: vec![],
                started_at_ms: i as u64,
                ended_at_ms: i as u64,
                outcome: RunOutcome::Ok,
                exit_code: Some(0),
                signal: None,
                message: None,
            };
            store.append_run(&run).await.unwrap();
        }
    }
    let runs = store.list_runs(Some("pruned"), usize::MAX).await.unwrap();
    assert_eq!(runs.len(), HISTORY_PER_KEY as usize);
    assert_eq!(
        runs[0].run_id,
        format!("run-{}", total - 1),
        "the newest are kept"
    );
    assert_eq!(
        store
            .list_runs(Some("other"), usize::MAX)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Many processes may open a brand-new database at the same moment (the first scheduled run on
/// a host); every one of them must succeed, including the switch to WAL mode.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_first_use_by_many_at_once() {
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    batchlock::SqliteStore::open(&path).map(|_| ())
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join().unwrap() {
                panic!("round {round}: a concurrent first open failed: {e}");
            }
        }
    }
}
