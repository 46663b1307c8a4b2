//! Command-line definition.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

fn duration(s: &str) -> Result<Duration, String> {
    batchlock::config::parse_duration(s).map_err(|e| e.to_string())
}

pub const EXIT_CODES: &str = "\
Exit codes of `batchlock run`:
  0        the command succeeded, or the run was skipped (lock held, --on-conflict skip)
  1-255    otherwise the command's own exit code passes through
  128+N    the command died of signal N (e.g. 143 after SIGTERM)
  64       usage error (bad option, duration, key, missing command)
  69       store error (unreachable, not set up, access denied)
  70       internal error
  75       lock held and --on-conflict fail, or --on-conflict wait timed out
  78       configuration file error
  122      stopped by `batchlock stop`
  123      lock lost: the lease could not be renewed in time (or was taken); command killed
  124      the command reached --timeout and was killed
  126      the command is not executable
  127      the command was not found";

/// Run scheduled batch jobs at most once at a time, never forever.
#[derive(Debug, Parser)]
#[command(name = "batchlock", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Where locks live: sqlite:PATH (default: ~/.local/state/batchlock/locks.db),
    /// dynamodb:TABLE. BATCH_LOCK_TABLE=TABLE also selects DynamoDB.
    #[arg(long, global = true, env = "BATCHLOCK_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// TOML file of named jobs (default: ./batchlock.toml if it exists).
    #[arg(long, global = true, env = "BATCHLOCK_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, env = "BATCHLOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Bound on every single store call.
    #[arg(long, global = true, value_parser = duration, default_value = "5s", value_name = "DURATION")]
    pub store_timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines (colored on a terminal).
    Human,
    /// One JSON object per line (CloudWatch).
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    /// Do not run; log who holds the lock; exit 0 (or --conflict-exit-code).
    Skip,
    /// Do not run; exit 75 (or --conflict-exit-code).
    Fail,
    /// Wait for the lock up to --wait-timeout, then behave like fail.
    Wait,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command under a lease lock.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Show who holds which lock.
    Status {
        /// Only this key.
        key: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Ask the holder of KEY to terminate its command gracefully (at its next heartbeat).
    Stop {
        /// The lock key.
        key: String,
    },
    /// Free KEY whoever holds it (recorded in the history).
    Release {
        /// The lock key.
        key: String,
        /// Required: this frees the lock even while its holder still runs.
        #[arg(long)]
        force: bool,
    },
    /// Show recent runs.
    History {
        /// Only this key.
        key: Option<String>,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Create the store: the SQLite schema, or the DynamoDB table (on-demand) with TTL.
    /// Idempotent.
    Init,
    /// Check that the store is reachable and set up, and say what to fix.
    /// Exits 0 when healthy, 69 when something must be fixed.
    Doctor,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A job defined in the configuration file (gives key, command, timeout, ...).
    pub job: Option<String>,

    /// Lock key (letters, digits, `_ - . : /`, at most 128 bytes); defaults to the job name.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// Lease duration; the lease is renewed every third of it.
    #[arg(long, env = "BATCHLOCK_LEASE", value_parser = duration, value_name = "DURATION")]
    pub lease: Option<Duration>,

    /// Maximum runtime of the command (e.g. 2h); SIGTERM, then SIGKILL after --kill-grace.
    #[arg(long, env = "BATCHLOCK_TIMEOUT", value_parser = duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,

    /// Time between SIGTERM and SIGKILL [default: 10s].
    #[arg(long, env = "BATCHLOCK_KILL_GRACE", value_parser = duration, value_name = "DURATION")]
    pub kill_grace: Option<Duration>,

    /// Largest clock difference between hosts sharing the store [default: 2s].
    #[arg(long, env = "BATCHLOCK_CLOCK_SKEW", value_parser = duration, value_name = "DURATION")]
    pub clock_skew: Option<Duration>,

    /// What to do when the lock is held [default: skip].
    #[arg(long, value_enum)]
    pub on_conflict: Option<OnConflict>,

    /// How long --on-conflict wait waits [default: 1h].
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub wait_timeout: Option<Duration>,

    /// Exit code when the run does not happen because of the lock.
    #[arg(long, value_name = "N")]
    pub conflict_exit_code: Option<u8>,

    /// Shell command run after the job was killed because the lock was lost (for alerting);
    /// it sees BATCHLOCK_KEY, BATCHLOCK_RUN_ID, BATCHLOCK_FENCING_TOKEN, BATCHLOCK_REASON.
    #[arg(long, value_name = "SHELL-COMMAND")]
    pub on_lost: Option<String>,

    /// Fail unless a maximum runtime is set (a guard for deployments).
    #[arg(long)]
    pub require_timeout: bool,

    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}
