//! The result cache: URLs confirmed OK recently need no request tonight.
//!
//! Only successes are stored. A failure deletes the URL's row, so a URL that broke is checked
//! again on every run until it works, and a transient failure (a timeout during a server's bad
//! minute) can never be mistaken for a final verdict. Times are wall-clock Unix seconds,
//! because they must mean the same thing in tomorrow's process.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

/// The cache file could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[error("result cache `{path}`: {source}: check the path, or run without --cache")]
pub struct CacheError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// A SQLite file of URLs last seen OK, and when.
pub struct ResultCache {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("path", &self.path)
            .finish()
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl ResultCache {
    /// Opens (creating if needed) the cache at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CacheError> {
        let path = path.as_ref().to_path_buf();
        let wrap = |source| CacheError {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(wrap)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS url_ok (
                 url TEXT PRIMARY KEY NOT NULL,
                 checked_at INTEGER NOT NULL,
                 final_url TEXT
             );",
        )
        .map_err(wrap)?;
        Ok(ResultCache { path, conn })
    }

    fn wrap(&self, source: rusqlite::Error) -> CacheError {
        CacheError {
            path: self.path.clone(),
            source,
        }
    }

    /// When `url` was last confirmed OK no earlier than `now - max_age`, that time.
    pub fn fresh_ok(
        &self,
        url: &str,
        max_age: Duration,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, CacheError> {
        let oldest = unix_secs(now).saturating_sub(max_age.as_secs() as i64);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT checked_at FROM url_ok WHERE url = ?1 AND checked_at >= ?2")
            .map_err(|e| self.wrap(e))?;
        let at: Option<i64> = stmt
            .query_row(params![url, oldest], |row| row.get(0))
            .optional()
            .map_err(|e| self.wrap(e))?;
        Ok(at.map(|s| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64)))
    }

    /// Stores the verdicts of one run in one transaction: `(url, ok, final_url)`.
    pub fn store<'a>(
        &mut self,
        verdicts: impl IntoIterator<Item = (&'a str, bool, Option<&'a str>)>,
        now: SystemTime,
    ) -> Result<(), CacheError> {
        let at = unix_secs(now);
        let tx = self.conn.transaction().map_err(|e| CacheError {
            path: self.path.clone(),
            source: e,
        })?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO url_ok (url, checked_at, final_url) VALUES (?1, ?2, ?3)
                     ON CONFLICT(url) DO UPDATE SET checked_at = ?2, final_url = ?3",
                )
                .map_err(|e| CacheError {
                    path: self.path.clone(),
                    source: e,
                })?;
            let mut delete = tx
                .prepare_cached("DELETE FROM url_ok WHERE url = ?1")
                .map_err(|e| CacheError {
                    path: self.path.clone(),
                    source: e,
                })?;
            for (url, ok, final_url) in verdicts {
                let result = if ok {
                    upsert.execute(params![url, at, final_url])
                } else {
                    delete.execute(params![url])
                };
                result.map_err(|e| CacheError {
                    path: self.path.clone(),
                    source: e,
                })?;
            }
        }
        tx.commit().map_err(|e| CacheError {
            path: self.path.clone(),
            source: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_fresh_until_max_age_and_failure_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = ResultCache::open(dir.path().join("c.db")).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        cache.store([("http://a/x.png", true, None)], t0).unwrap();
        assert!(
            cache
                .fresh_ok("http://a/x.png", day, t0 + day / 2)
                .unwrap()
                .is_some()
        );
        assert!(
            cache
                .fresh_ok("http://a/x.png", day, t0 + day * 2)
                .unwrap()
                .is_none()
        );
        assert!(cache.fresh_ok("http://b/y.png", day, t0).unwrap().is_none());
        cache.store([("http://a/x.png", false, None)], t0).unwrap();
        assert!(cache.fresh_ok("http://a/x.png", day, t0).unwrap().is_none());
    }
}
