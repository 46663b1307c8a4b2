//! # batchlock
//!
//! Lease locks for scheduled batch jobs: a job runs **at most once at a time** per key, **never
//! longer than its limit**, and operators can see and stop it.
//!
//! * [`LeaseStore`] is the contract every backend implements (SQLite is the embedded default;
//!   [`MemoryStore`] is the in-process reference). [`conformance`] is the suite each backend
//!   must pass.
//! * [`supervisor`] runs a command under a lease: heartbeats, max runtime, process-group kills,
//!   signal forwarding, and a run record on every path.
//!
//! The protocol and why it is safe are written down in `docs/protocol.md`.
#![deny(missing_docs)]

pub mod config;
pub mod conformance;
pub mod fault;
pub mod lease;
mod memory;
mod protocol;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod store;
#[cfg(unix)]
pub mod supervisor;

pub use lease::{
    Acquire, AcquireRequest, FencingToken, Holder, KeyError, Lease, LockKey, LockRecord, Release,
    Renewal, RunOutcome, RunRecord,
};
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use store::{LeaseStore, StoreError};
