//! The lease state machine as pure functions over a lock record.
//!
//! Stores that can run a read-decide-write step atomically (a mutex, an SQL transaction) call
//! these so that every such store makes exactly the same decisions. Stores that only offer
//! conditional writes (DynamoDB) encode the same rules in their conditions; `docs/protocol.md`
//! is the reference for both.

use std::time::Duration;

use crate::lease::{
    Acquire, AcquireRequest, FencingToken, Lease, LockRecord, Release, Renewal, duration_millis,
};

/// What an atomic step decided: an optional new record to write, and the answer to return.
pub(crate) struct Step<T> {
    /// The record to store, or `None` to leave the store unchanged.
    pub write: Option<LockRecord>,
    /// The result for the caller.
    pub answer: T,
}

impl<T> Step<T> {
    fn unchanged(answer: T) -> Self {
        Self {
            write: None,
            answer,
        }
    }
}

fn expiry(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_add(duration_millis(ttl))
}

/// Acquire: free, expired or never-used keys are taken with the next token; our own lease is
/// returned unchanged (idempotent retry); anything else reports the holder.
pub(crate) fn acquire(
    existing: Option<&LockRecord>,
    req: &AcquireRequest,
    now_ms: u64,
) -> Step<Acquire> {
    if let Some(rec) = existing {
        if rec.owner.as_deref() == Some(req.owner.as_str()) {
            return Step::unchanged(Acquire::Acquired(Lease {
                key: rec.key.clone(),
                owner: req.owner.clone(),
                token: rec.token,
                expires_at_ms: rec.expires_at_ms,
            }));
        }
        if rec.is_held_at(now_ms) {
            return Step::unchanged(Acquire::Held(rec.clone()));
        }
    }
    let token = FencingToken(existing.map_or(0, |r| r.token.0) + 1);
    let expires_at_ms = expiry(now_ms, req.ttl);
    let record = LockRecord {
        key: req.key.as_str().to_owned(),
        token,
        owner: Some(req.owner.clone()),
        holder: Some(req.holder.clone()),
        acquired_at_ms: now_ms,
        renewed_at_ms: now_ms,
        expires_at_ms,
        stop_requested: false,
    };
    let lease = Lease {
        key: record.key.clone(),
        owner: req.owner.clone(),
        token,
        expires_at_ms,
    };
    Step {
        write: Some(record),
        answer: Acquire::Acquired(lease),
    }
}

fn owns(existing: Option<&LockRecord>, lease: &Lease) -> bool {
    existing
        .is_some_and(|r| r.owner.as_deref() == Some(lease.owner.as_str()) && r.token == lease.token)
}

/// Renew: only the same owner and token may extend. An expired lease that nobody took over is
/// still ours (the token proves nobody else acquired in between), so renewing it is safe.
pub(crate) fn renew(
    existing: Option<&LockRecord>,
    lease: &Lease,
    ttl: Duration,
    now_ms: u64,
) -> Step<Renewal> {
    match existing {
        Some(rec) if owns(existing, lease) => {
            let mut rec = rec.clone();
            rec.renewed_at_ms = now_ms;
            rec.expires_at_ms = expiry(now_ms, ttl);
            let answer = Renewal::Renewed {
                expires_at_ms: rec.expires_at_ms,
                stop_requested: rec.stop_requested,
            };
            Step {
                write: Some(rec),
                answer,
            }
        }
        other => Step::unchanged(Renewal::Lost(other.cloned())),
    }
}

/// Release: only the same owner and token may free the key; the token stays.
pub(crate) fn release(existing: Option<&LockRecord>, lease: &Lease) -> Step<Release> {
    match existing {
        Some(rec) if owns(existing, lease) => Step {
            write: Some(freed(rec)),
            answer: Release::Released,
        },
        other => Step::unchanged(Release::NotHeld(other.cloned())),
    }
}

/// Force-release: frees any owner, keeps the token; answers the record as it was.
pub(crate) fn force_release(existing: Option<&LockRecord>) -> Step<Option<LockRecord>> {
    match existing {
        Some(rec) if rec.owner.is_some() => Step {
            write: Some(freed(rec)),
            answer: Some(rec.clone()),
        },
        _ => Step::unchanged(None),
    }
}

/// Stop request: marks an unexpired holder's record; answers it.
pub(crate) fn request_stop(existing: Option<&LockRecord>, now_ms: u64) -> Step<Option<LockRecord>> {
    match existing {
        Some(rec) if rec.is_held_at(now_ms) => {
            let mut marked = rec.clone();
            marked.stop_requested = true;
            Step {
                write: Some(marked.clone()),
                answer: Some(marked),
            }
        }
        _ => Step::unchanged(None),
    }
}

fn freed(rec: &LockRecord) -> LockRecord {
    LockRecord {
        owner: None,
        stop_requested: false,
        ..rec.clone()
    }
}
