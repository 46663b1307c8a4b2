//! The lease data model shared by every store: lock records, leases, holders and run records.
//!
//! Times that leave the process (stored in a record) are wall-clock milliseconds since the Unix
//! epoch, because a second process, possibly on another host, must be able to compare them.
//! Deadlines *inside* a process never use these; see [`crate::supervisor`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The longest lock key we accept, in bytes.
///
/// Chosen to fit comfortably in every store's key limits (DynamoDB allows 2048 bytes for a
/// partition key, Redis and SQLite far more) while staying readable in a status table.
pub const MAX_KEY_LEN: usize = 128;

/// Wall-clock milliseconds since the Unix epoch, as stored in lock and run records.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Saturating conversion of a duration to whole milliseconds.
pub fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A validated lock key: 1 to [`MAX_KEY_LEN`] bytes of `A-Z a-z 0-9 _ - . : /`.
///
/// The character set is deliberately narrow so that a key can be used unquoted in shells, log
/// lines, file names and every store's key syntax without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LockKey(String);

/// Why a string is not a valid [`LockKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("lock key is empty: give a name such as `xml_articles`")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("lock key `{key}` is {len} bytes long; the limit is {MAX_KEY_LEN}")]
    TooLong {
        /// The key as given (truncated for display).
        key: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The key contains a character outside the allowed set.
    #[error("lock key `{key}` contains {ch:?}; use only letters, digits and `_ - . : /`")]
    BadChar {
        /// The key as given.
        key: String,
        /// The first offending character.
        ch: char,
    },
}

impl LockKey {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            let shown: String = key.chars().take(40).collect();
            return Err(KeyError::TooLong {
                key: format!("{shown}..."),
                len: key.len(),
            });
        }
        if let Some(ch) = key
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')))
        {
            return Err(KeyError::BadChar { key, ch });
        }
        Ok(Self(key))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LockKey {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<LockKey> for String {
    fn from(k: LockKey) -> String {
        k.0
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A number that strictly increases with every acquisition of one key.
///
/// It survives release and force-release, so a process that lost its lease can always be told
/// apart from the current holder by downstream systems (`BATCHLOCK_FENCING_TOKEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who holds (or held) a lease: enough for an operator to find the process.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Holder {
    /// Host name of the machine running the supervisor.
    pub host: String,
    /// Process id of the supervisor.
    pub pid: u32,
    /// Free-form identity details, such as an ECS task ARN or a job name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

impl Holder {
    /// The identity of the current process.
    pub fn current() -> Self {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown-host".to_owned());
        Self {
            host,
            pid: std::process::id(),
            details: BTreeMap::new(),
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pid {}", self.host, self.pid)?;
        for (k, v) in &self.details {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// The stored state of one key.
///
/// A record is never deleted by the lease protocol: releasing only clears [`owner`], so the
/// fencing token keeps counting up across holders.
///
/// [`owner`]: LockRecord::owner
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The lock key.
    pub key: String,
    /// The last fencing token issued for this key.
    pub token: FencingToken,
    /// Run id of the holder, or `None` when the lock was released.
    pub owner: Option<String>,
    /// Identity of the last holder.
    pub holder: Option<Holder>,
    /// When the current holder acquired the lease (epoch ms).
    pub acquired_at_ms: u64,
    /// When the current holder last renewed it (epoch ms, by the holder's clock).
    pub renewed_at_ms: u64,
    /// When the lease expires unless renewed (epoch ms, by the holder's clock).
    pub expires_at_ms: u64,
    /// An operator asked the holder to stop (`batchlock stop`).
    pub stop_requested: bool,
}

impl LockRecord {
    /// Whether the record names an owner whose lease has not expired at `now_ms`.
    pub fn is_held_at(&self, now_ms: u64) -> bool {
        self.owner.is_some() && now_ms < self.expires_at_ms
    }

    /// Whether a new owner may take the key at `now_ms` (free or expired).
    pub fn is_takeable_at(&self, now_ms: u64) -> bool {
        !self.is_held_at(now_ms)
    }
}

/// What a caller asks for when acquiring.
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    /// The lock key.
    pub key: LockKey,
    /// A unique id for this run; the owner of the lease if it is granted.
    pub owner: String,
    /// Who is asking.
    pub holder: Holder,
    /// How long the lease lasts without renewal.
    pub ttl: Duration,
}

/// A granted lease: the proof of ownership passed to renew and release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lock key.
    pub key: String,
    /// The run id that owns it.
    pub owner: String,
    /// The fencing token of this acquisition.
    pub token: FencingToken,
    /// When it expires unless renewed (epoch ms).
    pub expires_at_ms: u64,
}

/// The result of [`crate::LeaseStore::try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// The lease is ours.
    Acquired(Lease),
    /// Somebody else holds an unexpired lease; here is their record.
    Held(LockRecord),
}

/// The result of [`crate::LeaseStore::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours, until `expires_at_ms`.
    Renewed {
        /// The new expiry (epoch ms).
        expires_at_ms: u64,
        /// An operator asked us to stop.
        stop_requested: bool,
    },
    /// Not ours any more (released by force, or taken over); the current record if any.
    Lost(Option<LockRecord>),
}

/// The result of [`crate::LeaseStore::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The lease was ours and is now free.
    Released,
    /// The lease was not ours any more; nothing was changed.
    NotHeld(Option<LockRecord>),
}

/// Why a run ended; stored in the run history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunOutcome {
    /// The command exited with status 0.
    Ok,
    /// The command exited non-zero, died of a signal, or could not be started.
    Failed,
    /// The command was killed at its maximum runtime.
    Timeout,
    /// The lease could no longer be guaranteed, so the command was killed.
    Lost,
    /// An operator (`batchlock stop`) or a signal to the supervisor stopped the command.
    Stopped,
    /// The lock was held by someone else, so the command did not run.
    Skipped,
    /// An operator force-released the lock (`batchlock release --force`).
    ForceReleased,
}

impl RunOutcome {
    /// The snake_case name used in logs, JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Failed => "failed",
            RunOutcome::Timeout => "timeout",
            RunOutcome::Lost => "lost",
            RunOutcome::Stopped => "stopped",
            RunOutcome::Skipped => "skipped",
            RunOutcome::ForceReleased => "force_released",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the run history of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The lock key.
    pub key: String,
    /// The run id (also the lease owner while it ran).
    pub run_id: String,
    /// The fencing token it held, if it acquired the lock.
    pub token: Option<FencingToken>,
    /// Who ran it.
    pub holder: Holder,
    /// The command line, as given.
    #[serde(default)]
    pub command: Vec<String>,
    /// When the run started (epoch ms).
    pub started_at_ms: u64,
    /// When it ended (epoch ms).
    pub ended_at_ms: u64,
    /// Why it ended.
    pub outcome: RunOutcome,
    /// The command's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the command, if any.
    pub signal: Option<i32>,
    /// A human explanation (who held the lock, what failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(LockKey::new("missing_images_check").is_ok());
        assert!(LockKey::new("team/xml.articles:v2-a").is_ok());
        assert_eq!(LockKey::new(""), Err(KeyError::Empty));
        assert!(matches!(
            LockKey::new("a".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong { len, .. }) if len == MAX_KEY_LEN + 1
        ));
        assert!(LockKey::new("a".repeat(MAX_KEY_LEN)).is_ok());
        assert!(matches!(
            LockKey::new("has space"),
            Err(KeyError::BadChar { ch: ' ', .. })
        ));
    }

    #[test]
    fn held_and_takeable_follow_expiry_and_owner() {
        let mut r = LockRecord {
            key: "k".into(),
            token: FencingToken(3),
            owner: Some("run".into()),
            holder: None,
            acquired_at_ms: 0,
            renewed_at_ms: 0,
            expires_at_ms: 1000,
            stop_requested: false,
        };
        assert!(r.is_held_at(999));
        assert!(!r.is_held_at(1000));
        assert!(r.is_takeable_at(1000));
        r.owner = None;
        assert!(!r.is_held_at(0));
    }
}
