//! Configuration: store locations, durations, and the optional TOML file of named jobs.
//!
//! ```toml
//! # batchlock.toml
//! store = "sqlite:/var/lib/batchlock/locks.db"   # optional
//!
//! [jobs.xml_articles]
//! command = ["bundle", "exec", "rake", "xml:articles"]
//! timeout = "2h"
//! lease = "60s"
//! on_conflict = "skip"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::lease::{KeyError, LockKey};

/// Configuration problems: each message names the value and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line and column.
        message: String,
    },
    /// A job name that the configuration file does not define.
    #[error("job `{name}` is not defined in {path}; defined jobs: {available}")]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The file searched.
        path: String,
        /// The names it defines.
        available: String,
    },
    /// A duration that does not parse.
    #[error("invalid duration `{value}`: {message} (use forms like 90s, 15m, 2h, 1h30m)")]
    BadDuration {
        /// The value given.
        value: String,
        /// The parser's complaint.
        message: String,
    },
    /// A store location with an unknown scheme.
    #[error("unknown store `{value}`: use sqlite:PATH, dynamodb:TABLE or memory: (for tests only)")]
    UnknownStore {
        /// The value given.
        value: String,
    },
    /// A DynamoDB table name that DynamoDB would refuse.
    #[error(
        "DynamoDB table name `{value}` is invalid: use 3 to 255 characters of letters, digits and `_ - .`"
    )]
    BadTableName {
        /// The value given.
        value: String,
    },
    /// An invalid lock key.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Whether `name` follows DynamoDB's table naming rules.
pub fn is_valid_table_name(name: &str) -> bool {
    (3..=255).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses a human duration such as `90s`, `15m`, `2h` or `1h30m`.
pub fn parse_duration(value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| ConfigError::BadDuration {
        value: value.to_owned(),
        message: e.to_string(),
    })
}

/// Where locks are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite file (`sqlite:PATH`); the embedded default.
    Sqlite(PathBuf),
    /// A DynamoDB table (`dynamodb:TABLE`).
    DynamoDb(String),
    /// In-process memory (`memory:`): excludes nothing across processes; for tests.
    Memory,
}

impl FromStr for StoreLocation {
    type Err = ConfigError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let unknown = || ConfigError::UnknownStore {
            value: value.to_owned(),
        };
        let (scheme, rest) = value.split_once(':').ok_or_else(unknown)?;
        match scheme {
            "sqlite" if !rest.is_empty() => Ok(StoreLocation::Sqlite(PathBuf::from(rest))),
            "dynamodb" if !rest.is_empty() => {
                if !is_valid_table_name(rest) {
                    return Err(ConfigError::BadTableName {
                        value: rest.to_owned(),
                    });
                }
                Ok(StoreLocation::DynamoDb(rest.to_owned()))
            }
            "memory" => Ok(StoreLocation::Memory),
            _ => Err(unknown()),
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreLocation::DynamoDb(t) => write!(f, "dynamodb:{t}"),
            StoreLocation::Memory => f.write_str("memory:"),
        }
    }
}

/// A duration written as a human string in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// The conflict policy as written in configuration and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    /// Skip the run.
    Skip,
    /// Fail the run.
    Fail,
    /// Wait for the lock.
    Wait,
}

/// One named job of the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Lock key; defaults to the job name.
    pub key: Option<LockKey>,
    /// Command and arguments, used when none is given after `--`.
    pub command: Option<Vec<String>>,
    /// Maximum runtime.
    pub timeout: Option<HumanDuration>,
    /// Lease duration.
    pub lease: Option<HumanDuration>,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Option<HumanDuration>,
    /// Clock-skew allowance.
    pub clock_skew: Option<HumanDuration>,
    /// Conflict policy.
    pub on_conflict: Option<ConflictMode>,
    /// How long `wait` waits.
    pub wait_timeout: Option<HumanDuration>,
    /// Exit code on conflict.
    pub conflict_exit_code: Option<u8>,
    /// Shell command to run when the lease is lost.
    pub on_lost: Option<String>,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Store location, such as `sqlite:/var/lib/batchlock/locks.db`.
    pub store: Option<String>,
    /// Require every run to have a maximum runtime (`timeout`): a guard for deployments.
    #[serde(default)]
    pub require_timeout: bool,
    /// Named jobs.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    /// Where it was read from (not part of the file).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.path = Some(path.to_owned());
        Ok(config)
    }

    /// Parses configuration text; the error names the line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let mut msg = e.message().to_owned();
            if let Some(span) = e.span() {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                msg = format!("line {line}, column {col}: {msg}");
            }
            msg
        })
    }

    /// The job called `name`, with its key defaulted to the name.
    pub fn job(&self, name: &str) -> Result<JobConfig, ConfigError> {
        let mut job = self
            .jobs
            .get(name)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownJob {
                name: name.to_owned(),
                path: self.path.as_ref().map_or_else(
                    || "the configuration".to_owned(),
                    |p| p.display().to_string(),
                ),
                available: if self.jobs.is_empty() {
                    "none".to_owned()
                } else {
                    self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            })?;
        if job.key.is_none() {
            job.key = Some(LockKey::new(name)?);
        }
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_human_forms() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        let err = parse_duration("ten minutes").unwrap_err().to_string();
        assert!(
            err.contains("`ten minutes`") && err.contains("15m"),
            "{err}"
        );
    }

    #[test]
    fn store_locations_parse_and_reject_unknown_schemes() {
        assert_eq!(
            "sqlite:/tmp/x.db".parse::<StoreLocation>().unwrap(),
            StoreLocation::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            "dynamodb:locks".parse::<StoreLocation>().unwrap(),
            StoreLocation::DynamoDb("locks".into())
        );
        for bad in ["dynamodb:ab", "dynamodb:has space", "dynamodb:a/b"] {
            let err = bad.parse::<StoreLocation>().unwrap_err().to_string();
            assert!(err.contains("invalid") && err.contains("3 to 255"), "{err}");
        }
        assert!(
            "dynamodb:w-rails-0930-dev-apn1-batch-locks"
                .parse::<StoreLocation>()
                .is_ok()
        );
        for bad in ["redis://x", "sqlite:", "nothing"] {
            let err = bad.parse::<StoreLocation>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("sqlite:PATH"), "{err}");
        }
    }

    #[test]
    fn config_errors_name_the_line() {
        let err = ConfigFile::parse("[jobs.a]\ntimeout = \"2h\"\nlease = 5\n").unwrap_err();
        assert!(err.starts_with("line 3"), "{err}");
        let err = ConfigFile::parse("[jobs.a]\ntimeout = \"soon\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("soon"), "{err}");
        let err = ConfigFile::parse("[jobs.a]\ntimout = \"2h\"\n").unwrap_err();
        assert!(err.contains("timout"), "{err}");
    }

    #[test]
    fn jobs_default_their_key_and_unknown_jobs_list_the_known() {
        let cfg = ConfigFile::parse(
            "[jobs.xml_articles]\ncommand = [\"rake\", \"xml:articles\"]\ntimeout = \"2h\"\n",
        )
        .unwrap();
        let job = cfg.job("xml_articles").unwrap();
        assert_eq!(job.key.unwrap().as_str(), "xml_articles");
        assert_eq!(job.timeout.unwrap().0, Duration::from_secs(7200));
        let err = cfg.job("sitemap").unwrap_err().to_string();
        assert!(
            err.contains("`sitemap`") && err.contains("xml_articles"),
            "{err}"
        );
    }
}
