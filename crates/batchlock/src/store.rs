//! The [`LeaseStore`] trait: the contract every lock backend implements.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;

use crate::lease::{Acquire, AcquireRequest, Lease, LockRecord, Release, Renewal, RunRecord};

/// A failure of the store itself (not a lock conflict: conflicts are ordinary results).
///
/// Every backend maps its own errors onto these variants so that the supervisor can decide
/// what to do (retry until the renew deadline, or give up) without knowing the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or answered with a transient error; retrying may help.
    #[error("{store} is unavailable: {message}")]
    Unavailable {
        /// Which store (for example `sqlite:/var/lib/batchlock/locks.db`).
        store: String,
        /// What went wrong.
        message: String,
    },
    /// The call did not finish in time.
    #[error("{store} did not answer within {}", humantime::format_duration(*.after))]
    Timeout {
        /// Which store.
        store: String,
        /// How long we waited.
        after: Duration,
    },
    /// The store is not set up for us (missing table, unwritable path, wrong schema version):
    /// retrying will not help; `message` says what to do.
    #[error("{store} is not usable: {message}")]
    Setup {
        /// Which store.
        store: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The store refused us (credentials, permissions).
    #[error("{store} denied access: {message}")]
    PermissionDenied {
        /// Which store.
        store: String,
        /// What was denied.
        message: String,
    },
    /// A stored record could not be understood.
    #[error("{store} holds an unreadable record: {message}")]
    Corrupt {
        /// Which store.
        store: String,
        /// What could not be read.
        message: String,
    },
}

impl StoreError {
    /// Whether retrying the same call later might succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        )
    }
}

/// A place that stores lease locks and run history.
///
/// # Contract
///
/// Every implementation must pass the whole [`crate::conformance`] suite. In short:
///
/// * **One holder.** At any instant at most one owner holds an unexpired lease on a key, even
///   when many processes call [`try_acquire`](Self::try_acquire) at once.
/// * **Expiry is decided by the write itself.** A lease is free when it was released, or when
///   its `expires_at_ms` is not after the writer's "now". The check and the write happen
///   atomically (a transaction, or a conditional write); a background clean-up (such as
///   DynamoDB TTL) is never what frees a lease.
/// * **Fencing.** Each successful acquisition gets a token strictly greater than every token
///   previously issued for that key, including across release and force-release.
/// * **Conditional ownership.** [`renew`](Self::renew) and [`release`](Self::release) change
///   the record only if both owner and token still match, so a stale holder can never extend
///   or delete its successor's lease.
/// * **Idempotence.** Acquiring again with the same owner returns the same lease; renewing
///   with the same owner and token succeeds however often it is repeated (a renewal that
///   succeeded on the server but timed out on the client must not look like a lost lease).
/// * **No hidden waits.** Calls either answer or fail; callers bound them with timeouts.
#[async_trait]
pub trait LeaseStore: Send + Sync + Debug {
    /// A short description for messages, such as `sqlite:/path/locks.db`.
    fn describe(&self) -> String;

    /// Takes the lease if the key is free or expired, or returns the current holder's record.
    ///
    /// If the key is already held by `request.owner`, returns that lease unchanged.
    async fn try_acquire(&self, request: &AcquireRequest) -> Result<Acquire, StoreError>;

    /// Extends `lease` to now + `ttl` if owner and token still match.
    ///
    /// Returns [`Renewal::Lost`] when they do not. Reports a pending stop request.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewal, StoreError>;

    /// Frees `lease` if owner and token still match; otherwise changes nothing.
    async fn release(&self, lease: &Lease) -> Result<Release, StoreError>;

    /// The record of `key`, held or not; `None` if the key was never used.
    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError>;

    /// All lock records, sorted by key.
    async fn list(&self) -> Result<Vec<LockRecord>, StoreError>;

    /// Frees `key` whoever holds it, keeping its fencing token.
    ///
    /// Returns the record as it was if it had an owner (even an expired one).
    async fn force_release(&self, key: &str) -> Result<Option<LockRecord>, StoreError>;

    /// Asks the current holder of `key` to stop; its next renewal reports the request.
    ///
    /// Returns the holder's record, or `None` if nobody holds an unexpired lease.
    async fn request_stop(&self, key: &str) -> Result<Option<LockRecord>, StoreError>;

    /// Releases `lease` (as [`release`](Self::release)) and appends `run` to the history.
    ///
    /// The default makes two calls; stores that can do both in one transaction should, since
    /// this is on the path of every run. The run is recorded even when the lease was no longer
    /// ours.
    async fn release_and_record(
        &self,
        lease: &Lease,
        run: &RunRecord,
    ) -> Result<Release, StoreError> {
        let released = self.release(lease).await?;
        self.append_run(run).await?;
        Ok(released)
    }

    /// Appends a run record to the history of its key.
    async fn append_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// The most recent runs, newest first, of `key` (or of every key), at most `limit`.
    async fn list_runs(
        &self,
        key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError>;
}
