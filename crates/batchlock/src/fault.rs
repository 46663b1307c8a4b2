//! A fault-injecting [`LeaseStore`] wrapper, for testing what the supervisor does when the
//! store fails in the middle of a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::lease::{Acquire, AcquireRequest, Lease, LockRecord, Release, Renewal, RunRecord};
use crate::store::{LeaseStore, StoreError};

/// How a [`FaultInjectingStore`] behaves right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Pass every call through.
    None = 0,
    /// Fail every call at once with [`StoreError::Unavailable`].
    Fail = 1,
    /// Never answer (the caller's timeout must fire).
    Hang = 2,
}

/// Wraps a store and fails or hangs its calls on demand.
#[derive(Debug)]
pub struct FaultInjectingStore {
    inner: Arc<dyn LeaseStore>,
    fault: AtomicU8,
}

impl FaultInjectingStore {
    /// Wraps `inner`, initially passing calls through.
    pub fn new(inner: Arc<dyn LeaseStore>) -> Self {
        Self {
            inner,
            fault: AtomicU8::new(Fault::None as u8),
        }
    }

    /// Switches the behaviour for the following calls.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    async fn gate(&self) -> Result<(), StoreError> {
        match self.fault.load(Ordering::SeqCst) {
            1 => Err(StoreError::Unavailable {
                store: self.describe(),
                message: "injected fault".into(),
            }),
            2 => {
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl LeaseStore for FaultInjectingStore {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
    async fn try_acquire(&self, request: &AcquireRequest) -> Result<Acquire, StoreError> {
        self.gate().await?;
        self.inner.try_acquire(request).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewal, StoreError> {
        self.gate().await?;
        self.inner.renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<Release, StoreError> {
        self.gate().await?;
        self.inner.release(lease).await
    }
    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        self.gate().await?;
        self.inner.get(key).await
    }
    async fn list(&self) -> Result<Vec<LockRecord>, StoreError> {
        self.gate().await?;
        self.inner.list().await
    }
    async fn force_release(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        self.gate().await?;
        self.inner.force_release(key).await
    }
    async fn request_stop(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        self.gate().await?;
        self.inner.request_stop(key).await
    }
    async fn append_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.gate().await?;
        self.inner.append_run(run).await
    }
    async fn list_runs(
        &self,
        key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.gate().await?;
        self.inner.list_runs(key, limit).await
    }
}
