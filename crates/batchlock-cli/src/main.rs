//! `batchlock`: the thin binary over the `batchlock` library.

mod cli;
mod commands;

use std::io::IsTerminal;
use std::process::ExitCode;

use batchlock::StoreError;
use batchlock::config::ConfigError;
use batchlock::supervisor::{SupervisorError, exit};
use clap::Parser;

/// A problem with the command line, reported with exit code 64.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let _log_flush = init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("batchlock: cannot start the async runtime: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // A store call we gave up on may still run on the blocking pool; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("batchlock: error: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
}

/// Maps the typed library errors in the chain onto the documented exit codes.
fn exit_code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<UsageError>()
            || cause.is::<batchlock::KeyError>()
            || cause.is::<batchlock::supervisor::TimingError>()
        {
            return exit::USAGE;
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                ConfigError::BadDuration { .. }
                | ConfigError::UnknownStore { .. }
                | ConfigError::UnknownJob { .. }
                | ConfigError::BadTableName { .. }
                | ConfigError::Key(_) => exit::USAGE,
                _ => exit::CONFIG,
            };
        }
        if let Some(e) = cause.downcast_ref::<SupervisorError>() {
            return e.exit_code();
        }
        if cause.is::<StoreError>() {
            return exit::STORE;
        }
    }
    exit::INTERNAL
}

/// Logs go through a lossy background writer: when stderr blocks (a full pipe, a stalled log
/// driver) log lines are dropped instead of freezing the supervisor's timers and signal
/// handling. The returned guard flushes what is queued at exit (waiting at most a second).
fn init_logging(format: cli::LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("BATCHLOCK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        // The default queue (128k lines) is allocated up front: measurable in a process that
        // lives a few milliseconds, and far more than a supervisor ever logs at once.
        .buffered_lines_limit(1024)
        .thread_name("batchlock-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        cli::LogFormat::Json => builder.json().flatten_event(true).init(),
        cli::LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .init(),
    }
    guard
}
