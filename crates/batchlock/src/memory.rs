//! An in-process store: the reference implementation of the contract, and a test double.
//!
//! It only coordinates tasks inside one process; use it in tests and embedded callers, never to
//! protect jobs started as separate processes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::lease::{
    Acquire, AcquireRequest, Lease, LockRecord, Release, Renewal, RunRecord, now_millis,
};
use crate::protocol::{self, Step};
use crate::store::{LeaseStore, StoreError};

/// A [`LeaseStore`] kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    locks: BTreeMap<String, LockRecord>,
    runs: Vec<RunRecord>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn step<T>(&self, key: &str, f: impl FnOnce(Option<&LockRecord>, u64) -> Step<T>) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let step = f(state.locks.get(key), now_millis());
        if let Some(rec) = step.write {
            state.locks.insert(key.to_owned(), rec);
        }
        step.answer
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn try_acquire(&self, request: &AcquireRequest) -> Result<Acquire, StoreError> {
        Ok(self.step(request.key.as_str(), |rec, now| {
            protocol::acquire(rec, request, now)
        }))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewal, StoreError> {
        Ok(self.step(&lease.key, |rec, now| protocol::renew(rec, lease, ttl, now)))
    }

    async fn release(&self, lease: &Lease) -> Result<Release, StoreError> {
        Ok(self.step(&lease.key, |rec, _| protocol::release(rec, lease)))
    }

    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        Ok(self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .locks
            .get(key)
            .cloned())
    }

    async fn list(&self) -> Result<Vec<LockRecord>, StoreError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state.locks.values().cloned().collect())
    }

    async fn force_release(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        Ok(self.step(key, |rec, _| protocol::force_release(rec)))
    }

    async fn request_stop(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        Ok(self.step(key, protocol::request_stop))
    }

    async fn append_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .runs
            .push(run.clone());
        Ok(())
    }

    async fn list_runs(
        &self,
        key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .runs
            .iter()
            .rev()
            .filter(|r| key.is_none_or(|k| r.key == k))
            .take(limit)
            .cloned()
            .collect())
    }
}
