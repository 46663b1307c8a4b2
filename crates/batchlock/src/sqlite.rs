//! The embedded default store: one SQLite file shared by every process on a host.
//!
//! Safety across processes comes from SQLite itself: every read-decide-write step runs in a
//! `BEGIN IMMEDIATE` transaction (the write lock is taken before the read, so two processes can
//! never both decide a key is free), the database is in WAL mode so readers (`status`) never
//! block writers, and a busy timeout turns lock contention into a short wait instead of an
//! error. Calls run on tokio's blocking pool so that a slow disk or a busy database never stalls
//! the supervisor's timers and signal handling.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

use crate::lease::{
    Acquire, AcquireRequest, FencingToken, Holder, Lease, LockRecord, Release, Renewal, RunRecord,
    now_millis,
};
use crate::protocol::{self, Step};
use crate::store::{LeaseStore, StoreError};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long a call waits for another process's write transaction before failing.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS locks (
    key            TEXT PRIMARY KEY NOT NULL,
    token          INTEGER NOT NULL,
    owner          TEXT,
    holder         TEXT,
    acquired_at    INTEGER NOT NULL,
    renewed_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS runs (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    key    TEXT NOT NULL,
    run_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs (key, seq);
";

/// A [`LeaseStore`] in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

/// The default database path: `$XDG_STATE_HOME/batchlock/locks.db`, else
/// `$HOME/.local/state/batchlock/locks.db`, else `/tmp/batchlock/locks.db`.
///
/// Processes must use the same file to exclude each other; for jobs run by several users on one
/// host, pass a shared path such as `--store sqlite:/var/lib/batchlock/locks.db`.
pub fn default_path() -> PathBuf {
    let state_home = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state_home.join("batchlock").join("locks.db")
}

impl SqliteStore {
    /// Opens (and on first use creates) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_busy_timeout(path, DEFAULT_BUSY_TIMEOUT)
    }

    /// Like [`open`](Self::open), waiting at most `busy_timeout` for another process's write
    /// transaction. Keep it within the caller's per-call timeout: a call the caller gave up on
    /// keeps running on the blocking pool until SQLite returns.
    pub fn open_with_busy_timeout(
        path: impl AsRef<Path>,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let store = format!("sqlite:{}", path.display());
        let setup = |message: String| StoreError::Setup {
            store: store.clone(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                setup(format!(
                    "cannot create directory {}: {e}; pass --store sqlite:PATH with a writable path",
                    dir.display()
                ))
            })?;
        }
        let conn = Connection::open(&path).map_err(|e| {
            setup(format!(
                "cannot open database file: {e}; pass --store sqlite:PATH with a writable path"
            ))
        })?;
        configure_retrying(&conn, busy_timeout).map_err(|e| match e {
            InitError::Sql(e) => map_err(&store, e),
            InitError::TooNew(v) => setup(format!(
                "schema version {v} was written by a newer batchlock (this one reads {SCHEMA_VERSION}); upgrade batchlock"
            )),
        })?;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        let store = self.describe();
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await;
        match joined {
            Ok(result) => result.map_err(|e| map_err(&store, e)),
            Err(e) => Err(StoreError::Unavailable {
                store,
                message: format!("database task failed: {e}"),
            }),
        }
    }

    /// One read-decide-write step on `key` inside an immediate transaction.
    async fn step<T: Send + 'static>(
        &self,
        key: String,
        f: impl FnOnce(Option<&LockRecord>, u64) -> Step<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = read_lock(&tx, &key)?;
            // "now" is read after the write lock is held, so no other writer can slip in
            // between our clock reading and our decision.
            let step = f(existing.as_ref(), now_millis());
            if let Some(rec) = &step.write {
                write_lock(&tx, rec)?;
            }
            tx.commit()?;
            Ok(step.answer)
        })
        .await
    }
}

enum InitError {
    Sql(rusqlite::Error),
    TooNew(i64),
}

impl From<rusqlite::Error> for InitError {
    fn from(e: rusqlite::Error) -> Self {
        InitError::Sql(e)
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Connection settings, then the schema.
fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), InitError> {
    conn.busy_timeout(busy_timeout)?;
    // In WAL mode NORMAL syncs at checkpoints instead of at every commit. A power loss may
    // then roll back the last few commits, which for a lock table is harmless: every process
    // that held or wanted a lock died with the host, a rolled-back acquire leaves the key
    // free, and a rolled-back release leaves it to expire. The database stays consistent.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Every `batchlock run` is a short-lived process; by default the last connection to close
    // checkpoints the WAL and fsyncs, which costs more than the whole lock protocol...
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    // ...and the first connection of a process replays the whole WAL, so keep it short.
    conn.pragma_update(None, "wal_autocheckpoint", 100)?;
    init_schema(conn)
}

/// [`configure`], retried while another process holds a conflicting lock.
///
/// When several processes open a new file at once, switching it to WAL needs an exclusive
/// lock and SQLite answers "database is locked" at once instead of waiting in its busy handler
/// (waiting could deadlock). The loser simply tries again until the busy timeout is used up.
fn configure_retrying(conn: &Connection, busy_timeout: Duration) -> Result<(), InitError> {
    let end = std::time::Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        match configure(conn, busy_timeout) {
            Err(InitError::Sql(e))
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < end =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn init_schema(conn: &Connection) -> Result<(), InitError> {
    let version = user_version(conn)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(InitError::TooNew(version));
    }
    // WAL is a property of the file and cannot be switched inside a transaction.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Still correct (every step is a transaction), but readers then block writers.
        tracing::warn!(
            journal_mode = mode,
            "SQLite could not switch to WAL mode (network file system?); `status` may delay runs"
        );
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    // Another process may have created the schema while we waited for the write lock.
    let result = (|| -> Result<(), InitError> {
        let version = user_version(conn)?;
        if version > SCHEMA_VERSION {
            return Err(InitError::TooNew(version));
        }
        if version < SCHEMA_VERSION {
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

fn map_err(store: &str, e: rusqlite::Error) -> StoreError {
    let store = store.to_owned();
    let message = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable {
            store,
            message: format!("{message} (another process kept the database locked)"),
        },
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            StoreError::Setup {
                store,
                message: format!("{message}; pass --store sqlite:PATH with a writable path"),
            }
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt { store, message }
        }
        _ => match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt { store, message },
            _ => StoreError::Unavailable { store, message },
        },
    }
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

const LOCK_COLUMNS: &str =
    "key, token, owner, holder, acquired_at, renewed_at, expires_at, stop_requested";

fn row_to_lock(row: &rusqlite::Row<'_>) -> rusqlite::Result<LockRecord> {
    let holder: Option<String> = row.get(3)?;
    let holder = holder
        .map(|h| serde_json::from_str::<Holder>(&h))
        .transpose()
        .map_err(json_err)?;
    Ok(LockRecord {
        key: row.get(0)?,
        token: FencingToken(row.get::<_, i64>(1)? as u64),
        owner: row.get(2)?,
        holder,
        acquired_at_ms: row.get::<_, i64>(4)? as u64,
        renewed_at_ms: row.get::<_, i64>(5)? as u64,
        expires_at_ms: row.get::<_, i64>(6)? as u64,
        stop_requested: row.get(7)?,
    })
}

fn read_lock(conn: &Connection, key: &str) -> rusqlite::Result<Option<LockRecord>> {
    conn.query_row(
        &format!("SELECT {LOCK_COLUMNS} FROM locks WHERE key = ?1"),
        [key],
        row_to_lock,
    )
    .optional()
}

fn write_lock(conn: &Connection, rec: &LockRecord) -> rusqlite::Result<()> {
    let holder = rec
        .holder
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(json_err)?;
    conn.execute(
        &format!(
            "INSERT OR REPLACE INTO locks ({LOCK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ),
        params![
            rec.key,
            rec.token.0 as i64,
            rec.owner,
            holder,
            rec.acquired_at_ms as i64,
            rec.renewed_at_ms as i64,
            rec.expires_at_ms as i64,
            rec.stop_requested,
        ],
    )?;
    Ok(())
}

/// Runs kept per key; older ones are pruned as new ones arrive, so the file cannot grow
/// without bound on a host that runs a job every minute for years.
pub const HISTORY_PER_KEY: i64 = 1000;

fn insert_run(conn: &Connection, run: &RunRecord) -> rusqlite::Result<()> {
    let json = serde_json::to_string(run).map_err(json_err)?;
    conn.execute(
        "INSERT INTO runs (key, run_id, record) VALUES (?1, ?2, ?3)",
        params![run.key, run.run_id, json],
    )?;
    conn.execute(
        "DELETE FROM runs WHERE key = ?1 AND seq <= \
         (SELECT seq FROM runs WHERE key = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        params![run.key, HISTORY_PER_KEY],
    )?;
    Ok(())
}

#[async_trait]
impl LeaseStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    async fn try_acquire(&self, request: &AcquireRequest) -> Result<Acquire, StoreError> {
        let request = request.clone();
        self.step(request.key.as_str().to_owned(), move |rec, now| {
            protocol::acquire(rec, &request, now)
        })
        .await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewal, StoreError> {
        let lease = lease.clone();
        self.step(lease.key.clone(), move |rec, now| {
            protocol::renew(rec, &lease, ttl, now)
        })
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<Release, StoreError> {
        let lease = lease.clone();
        self.step(lease.key.clone(), move |rec, _| {
            protocol::release(rec, &lease)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let key = key.to_owned();
        self.call(move |conn| read_lock(conn, &key)).await
    }

    async fn list(&self) -> Result<Vec<LockRecord>, StoreError> {
        self.call(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {LOCK_COLUMNS} FROM locks ORDER BY key"))?;
            stmt.query_map([], row_to_lock)?.collect()
        })
        .await
    }

    async fn force_release(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        self.step(key.to_owned(), |rec, _| protocol::force_release(rec))
            .await
    }

    async fn request_stop(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        self.step(key.to_owned(), protocol::request_stop).await
    }

    async fn release_and_record(
        &self,
        lease: &Lease,
        run: &RunRecord,
    ) -> Result<Release, StoreError> {
        let (lease, run) = (lease.clone(), run.clone());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let step = protocol::release(read_lock(&tx, &lease.key)?.as_ref(), &lease);
            if let Some(rec) = &step.write {
                write_lock(&tx, rec)?;
            }
            insert_run(&tx, &run)?;
            tx.commit()?;
            Ok(step.answer)
        })
        .await
    }

    async fn append_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        self.call(move |conn| insert_run(conn, &run)).await
    }

    async fn list_runs(
        &self,
        key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let key = key.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT record FROM runs WHERE (?1 IS NULL OR key = ?1) ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![key, limit], |r| r.get::<_, String>(0))?;
            rows.map(|json| serde_json::from_str(&json?).map_err(json_err))
                .collect()
        })
        .await
    }
}
