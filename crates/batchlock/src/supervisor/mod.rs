//! Runs one command under a lease: acquire, spawn, heartbeat, enforce deadlines, release,
//! record.
//!
//! # Deadlines
//!
//! All deadlines inside the supervisor use the monotonic clock. The lease deadline counts from
//! the instant a *successful* renewal (or the acquisition) was **sent**, because the store
//! computed the new expiry from a clock reading taken no earlier than that:
//!
//! ```text
//! terminate_at = last_success_sent + lease − clock_skew − kill_grace − kill_margin
//! kill_at      = terminate_at + kill_grace          (SIGKILL to the group)
//! ```
//!
//! so the whole process group is dead `clock_skew + kill_margin` before any other host can see
//! the lease as expired. See `docs/protocol.md`.

#[cfg(unix)]
#[path = "unix.rs"]
mod os;

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, error, info, warn};

use crate::lease::{
    Acquire, AcquireRequest, Holder, Lease, LockKey, LockRecord, Release, Renewal, RunOutcome,
    RunRecord, now_millis,
};
use crate::store::{LeaseStore, StoreError};

/// Exit codes of `batchlock run`, beside the child's own code which passes through.
///
/// They follow `sysexits.h` and GNU `timeout` where a convention exists.
pub mod exit {
    /// The command succeeded, or the run was skipped because the lock is held (default).
    pub const OK: u8 = 0;
    /// Bad command line or option value.
    pub const USAGE: u8 = 64;
    /// The store could not be used (unreachable, not set up, access denied).
    pub const STORE: u8 = 69;
    /// An unexpected internal error.
    pub const INTERNAL: u8 = 70;
    /// The lock is held and `--on-conflict fail` was given, or `wait` timed out.
    pub const CONFLICT: u8 = 75;
    /// The configuration file could not be read or is invalid.
    pub const CONFIG: u8 = 78;
    /// An operator asked the run to stop (`batchlock stop`).
    pub const STOPPED: u8 = 122;
    /// The lease could not be guaranteed (store unreachable past the deadline, or taken).
    pub const LOCK_LOST: u8 = 123;
    /// The command reached its maximum runtime (`--timeout`) and was killed.
    pub const TIMEOUT: u8 = 124;
    /// The command was found but could not be executed.
    pub const NOT_EXECUTABLE: u8 = 126;
    /// The command was not found.
    pub const NOT_FOUND: u8 = 127;
    /// Added to the signal number when the command died of a signal.
    pub const SIGNAL_BASE: u8 = 128;
}

/// Lease timing, validated so that a renewal can fail at least once and be retried before the
/// child must be terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// How often the lease is renewed.
    pub heartbeat: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// The largest clock difference assumed between any two hosts sharing the store.
    pub clock_skew: Duration,
    /// Extra time kept between the SIGKILL and the earliest possible expiry elsewhere.
    pub kill_margin: Duration,
}

/// The default lease: 60 s, as the incident's design asks.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// The default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// The default clock-skew allowance between hosts.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(2);
/// The default bound on one store call.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `--wait-timeout` for `--on-conflict wait`.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Why a [`LeaseTiming`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimingError {
    /// The lease leaves no room for a renewal before the child must be killed.
    #[error(
        "lease {lease} is too short: it must exceed heartbeat {heartbeat} + kill grace {grace} + clock skew {skew} + margin {margin}; raise --lease or lower --kill-grace"
    )]
    LeaseTooShort {
        /// The lease.
        lease: String,
        /// The heartbeat.
        heartbeat: String,
        /// The kill grace.
        grace: String,
        /// The clock skew.
        skew: String,
        /// The margin.
        margin: String,
    },
    /// A duration that must be positive is zero.
    #[error("{what} must be greater than zero")]
    Zero {
        /// Which setting.
        what: &'static str,
    },
}

impl LeaseTiming {
    /// Timing for `lease` with the heartbeat at a third of it and default grace and skew.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            heartbeat: lease / 3,
            kill_grace: DEFAULT_KILL_GRACE,
            clock_skew: DEFAULT_CLOCK_SKEW,
            kill_margin: Duration::from_millis(500),
        }
    }

    /// How long after a successful renewal was sent the child may still run untroubled.
    pub fn terminate_after(&self) -> Duration {
        self.lease
            .saturating_sub(self.clock_skew)
            .saturating_sub(self.kill_grace)
            .saturating_sub(self.kill_margin)
    }

    /// When the guard process must kill the group on its own if the supervisor has not: just
    /// after the supervisor's own SIGKILL, still `clock_skew` + 400 ms before expiry. It only
    /// matters if the supervisor is frozen (SIGSTOP, a blocked log write, a suspended host).
    pub fn watchdog_after(&self, last_ok: Instant) -> Instant {
        last_ok + self.terminate_after() + self.kill_grace + Duration::from_millis(100)
    }

    /// Checks that the timing leaves room for at least one renewal retry.
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.lease.is_zero() {
            return Err(TimingError::Zero { what: "lease" });
        }
        if self.heartbeat.is_zero() {
            return Err(TimingError::Zero { what: "heartbeat" });
        }
        if self.terminate_after() <= self.heartbeat {
            let f = |d: Duration| humantime::format_duration(d).to_string();
            return Err(TimingError::LeaseTooShort {
                lease: f(self.lease),
                heartbeat: f(self.heartbeat),
                grace: f(self.kill_grace),
                skew: f(self.clock_skew),
                margin: f(self.kill_margin),
            });
        }
        Ok(())
    }
}

/// What to do when the lock is held by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Do not run; log the holder; exit with the conflict exit code (default 0).
    Skip,
    /// Do not run; exit with the conflict exit code (default [`exit::CONFLICT`]).
    Fail,
    /// Wait for the lock, up to the given time, then behave like `Fail`.
    Wait(Duration),
}

/// Everything needed to run one command under a lease.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The lock key.
    pub key: LockKey,
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// Lease timing.
    pub timing: LeaseTiming,
    /// Maximum runtime of the command.
    pub timeout: Option<Duration>,
    /// Conflict policy.
    pub conflict: ConflictPolicy,
    /// Exit code when the run is skipped or fails on conflict; `None` for the policy default.
    pub conflict_exit_code: Option<u8>,
    /// Who we are, as shown to operators.
    pub holder: Holder,
    /// Bound on every single store call.
    pub store_timeout: Duration,
    /// A shell command run (`/bin/sh -c`) after the command was killed because the lease was
    /// lost, for alerting; it gets `BATCHLOCK_KEY`, `BATCHLOCK_RUN_ID`,
    /// `BATCHLOCK_FENCING_TOKEN` and `BATCHLOCK_REASON`, and at most [`HOOK_TIMEOUT`].
    pub on_lost: Option<String>,
}

/// How long an `on_lost` hook may run before its process group is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// How a run ended, for the caller to log and exit with.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run id (lease owner).
    pub run_id: String,
    /// Why the run ended.
    pub outcome: RunOutcome,
    /// The process exit code `batchlock` should use.
    pub exit_code: u8,
    /// The fencing token held, if the lock was acquired.
    pub token: Option<crate::FencingToken>,
    /// The holder's record when the run was skipped.
    pub held_by: Option<LockRecord>,
    /// Whether the run was recorded in the history.
    pub recorded: bool,
}

impl RunReport {
    /// The report of the run recorded as `rec` (run id, outcome and token come from it).
    fn of(rec: &RunRecord, exit_code: u8, held_by: Option<LockRecord>, recorded: bool) -> Self {
        Self {
            run_id: rec.run_id.clone(),
            outcome: rec.outcome,
            exit_code,
            token: rec.token,
            held_by,
            recorded,
        }
    }
}

/// Failures that stop `run` before the command could start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The store failed while acquiring.
    #[error("could not acquire `{key}`: {source}")]
    Acquire {
        /// The key.
        key: String,
        /// The store failure.
        #[source]
        source: StoreError,
    },
    /// Signal handlers could not be installed.
    #[error("could not install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The timing is unusable.
    #[error(transparent)]
    Timing(#[from] TimingError),
}

impl SupervisorError {
    /// The exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            SupervisorError::Acquire { .. } => exit::STORE,
            SupervisorError::Signals(_) => exit::INTERNAL,
            SupervisorError::Timing(_) => exit::USAGE,
        }
    }
}

/// Why the supervisor ended (or is ending) the command early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Timeout,
    LeaseDeadline,
    LeaseTaken,
    StopRequested,
    Signal(i32),
}

impl StopReason {
    fn outcome(self) -> RunOutcome {
        match self {
            StopReason::Timeout => RunOutcome::Timeout,
            StopReason::LeaseDeadline | StopReason::LeaseTaken => RunOutcome::Lost,
            StopReason::StopRequested | StopReason::Signal(_) => RunOutcome::Stopped,
        }
    }
}

enum Beat {
    Renewed { sent: Instant, stop_requested: bool },
    Failed(StoreError),
    Lost(Option<LockRecord>),
}

/// Runs one store call bounded by `store_timeout`, retrying transient failures twice.
async fn bounded<T, F, Fut>(
    store_timeout: Duration,
    what: &str,
    store: &str,
    mut f: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let result = match timeout(store_timeout, f()).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout {
                store: store.to_owned(),
                after: store_timeout,
            }),
        };
        match result {
            Err(e) if e.is_transient() && attempt < 3 => {
                warn!(error = %e, attempt, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Runs `spec.command` under a lease in `store`. See the module docs.
///
/// It owns child processes of the whole process while it runs: it becomes a child subreaper
/// and reaps *every* exited child (`waitpid(-1)`), so do not run other child processes, or
/// two `run`s, in the same process at the same time.
pub async fn run(store: Arc<dyn LeaseStore>, spec: RunSpec) -> Result<RunReport, SupervisorError> {
    spec.timing.validate()?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let started_at_ms = now_millis();
    let key = spec.key.as_str().to_owned();
    let describe = store.describe();
    let command_strings: Vec<String> = spec
        .command
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    // Every path ends in one history record; this is its common part.
    let base = RunRecord {
        key: key.clone(),
        run_id: run_id.clone(),
        token: None,
        holder: spec.holder.clone(),
        command: command_strings.clone(),
        started_at_ms,
        ended_at_ms: started_at_ms,
        outcome: RunOutcome::Skipped,
        exit_code: None,
        signal: None,
        message: None,
    };

    let request = AcquireRequest {
        key: spec.key.clone(),
        owner: run_id.clone(),
        holder: spec.holder.clone(),
        ttl: spec.timing.lease,
    };
    // Handlers first: a SIGTERM that arrives while we acquire or wait must not kill us with
    // the lock held (and, as PID 1, must not be ignored during a long wait).
    let mut signals = Signals::install().map_err(SupervisorError::Signals)?;
    let wait_started = Instant::now();
    let (lease, acquired_sent) = loop {
        let sent = Instant::now();
        let answer = bounded(spec.store_timeout, "acquire", &describe, || {
            store.try_acquire(&request)
        })
        .await
        .map_err(|source| SupervisorError::Acquire {
            key: key.clone(),
            source,
        })?;
        match answer {
            Acquire::Acquired(lease) => break (lease, sent),
            Acquire::Held(holder) => {
                let waiting = match spec.conflict {
                    ConflictPolicy::Wait(limit) => {
                        let remaining = limit.saturating_sub(wait_started.elapsed());
                        (!remaining.is_zero()).then_some(remaining)
                    }
                    _ => None,
                };
                if let Some(remaining) = waiting {
                    // Poll often enough to take over promptly when the holder's lease ends,
                    // without hammering the store: at most every second, sooner if the lease
                    // is about to expire.
                    let until_expiry = holder.expires_at_ms.saturating_sub(now_millis());
                    let pause =
                        Duration::from_millis(until_expiry.clamp(100, 1000) + 20).min(remaining);
                    debug!(key, holder = ?holder.holder, "lock held; waiting");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        sig = signals.termination() => {
                            let message = format!("{} received while waiting for the lock; not running", sig.as_str());
                            warn!(key, run_id, "{message}");
                            let rec = RunRecord {
                                ended_at_ms: now_millis(),
                                outcome: RunOutcome::Stopped,
                                message: Some(message),
                                ..base
                            };
                            let recorded = append(&*store, &rec, spec.store_timeout).await;
                            return Ok(RunReport::of(&rec, exit::SIGNAL_BASE + sig as u8, Some(holder), recorded));
                        }
                    }
                }
                return Ok(skipped(&*store, &spec, holder, base).await);
            }
        }
    };
    info!(key, run_id, token = %lease.token, holder = %spec.holder, store = describe, "lock acquired");

    if let Some(sig) = signals.pending() {
        let message = format!(
            "{} received before the command started; not running",
            sig.as_str()
        );
        warn!(key, run_id, "{message}");
        let rec = RunRecord {
            token: Some(lease.token),
            ended_at_ms: now_millis(),
            outcome: RunOutcome::Stopped,
            message: Some(message),
            ..base
        };
        let recorded = finish(&*store, &lease, &rec, spec.store_timeout).await;
        return Ok(RunReport::of(
            &rec,
            exit::SIGNAL_BASE + sig as u8,
            None,
            recorded,
        ));
    }
    os::become_subreaper();
    let env = [
        ("BATCHLOCK_KEY", key.clone()),
        ("BATCHLOCK_RUN_ID", run_id.clone()),
        ("BATCHLOCK_FENCING_TOKEN", lease.token.to_string()),
    ];
    // The guard first: the job joins the guard's process group, so it is guarded from its
    // first instruction.
    let mut guard = match os::spawn_guard(spec.timing.watchdog_after(acquired_sent)) {
        Ok(g) => Some(g),
        Err(e) => {
            warn!(error = %e, "could not start the guard process; grandchildren may outlive a killed supervisor");
            None
        }
    };
    let group = guard.as_ref().map(os::Guard::pid);
    let child = match os::spawn_child(&spec.command, &env, group) {
        Ok(pid) => pid,
        Err(e) => {
            if let Some(g) = guard.as_mut() {
                g.disarm();
                os::wait_for(g.pid());
            }
            // As in shells: 127 when there is nothing to run, 126 for anything that exists
            // but cannot be executed (permissions, bad format, a directory).
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::NOT_EXECUTABLE,
            };
            let program = command_strings.first().cloned().unwrap_or_default();
            let message = format!("cannot run `{program}`: {e}");
            error!(key, run_id, "{message}");
            let rec = RunRecord {
                token: Some(lease.token),
                ended_at_ms: now_millis(),
                outcome: RunOutcome::Failed,
                exit_code: Some(code.into()),
                message: Some(message),
                ..base
            };
            let recorded = finish(&*store, &lease, &rec, spec.store_timeout).await;
            return Ok(RunReport::of(&rec, code, None, recorded));
        }
    };
    let pgid = group.unwrap_or(child);
    info!(key, run_id, token = %lease.token, holder = %spec.holder, pid = child.as_raw(), command = ?command_strings, "command started");

    let status = supervise(
        Arc::clone(&store),
        &spec,
        &lease,
        acquired_sent,
        (child, pgid),
        &mut signals,
        guard.as_ref(),
    )
    .await;
    // Whatever is left in the group must not outlive the lease, nor keep working once the
    // lock is released: kill it and wait (bounded) until the group is really gone. The guard
    // is a member, so this also ends and reaps it.
    os::kill_group_and_wait(pgid, Duration::from_secs(2));
    drop(guard);
    let ended_at_ms = now_millis();

    let (outcome, exit_code, code, sig) = decide(&status);
    let message = status.reason.map(|r| describe_reason(r, &spec));
    match &message {
        Some(m) => warn!(key, run_id, outcome = %outcome, exit_code, "{m}"),
        None => info!(key, run_id, outcome = %outcome, exit_code, "command finished"),
    }
    let rec = RunRecord {
        token: Some(lease.token),
        ended_at_ms,
        outcome,
        exit_code: code,
        signal: sig,
        message: message.clone(),
        ..base
    };
    let recorded = finish(&*store, &lease, &rec, spec.store_timeout).await;
    if let (RunOutcome::Lost, Some(hook)) = (outcome, &spec.on_lost) {
        let mut hook_env = env.to_vec();
        hook_env.push(("BATCHLOCK_REASON", message.unwrap_or_default()));
        run_hook(hook, &hook_env).await;
    }
    Ok(RunReport::of(&rec, exit_code, None, recorded))
}

/// Runs the `on_lost` hook in its own process group, bounded by [`HOOK_TIMEOUT`].
async fn run_hook(hook: &str, env: &[(&str, String)]) {
    let argv: Vec<OsString> = vec!["/bin/sh".into(), "-c".into(), hook.into()];
    let pid = match os::spawn_child(&argv, env, None) {
        Ok(pid) => pid,
        Err(e) => {
            error!(error = %e, "could not start the on-lost hook");
            return;
        }
    };
    let end = Instant::now() + HOOK_TIMEOUT;
    loop {
        if let Some((_, status)) = os::reap_all().into_iter().find(|(p, _)| *p == pid) {
            info!(status = ?status, "on-lost hook finished");
            break;
        }
        if Instant::now() >= end {
            warn!("on-lost hook exceeded its time; killing it");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    os::kill_group_and_wait(pid, Duration::from_secs(1));
}

async fn skipped(
    store: &dyn LeaseStore,
    spec: &RunSpec,
    holder: LockRecord,
    base: RunRecord,
) -> RunReport {
    let who = holder
        .holder
        .as_ref()
        .map_or_else(|| "unknown holder".to_owned(), ToString::to_string);
    let since = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(holder.acquired_at_ms),
    );
    let message = format!(
        "lock `{}` is held by {who} (run {}, token {}) since {since}",
        holder.key,
        holder.owner.as_deref().unwrap_or("?"),
        holder.token
    );
    let exit_code = spec.conflict_exit_code.unwrap_or(match spec.conflict {
        ConflictPolicy::Skip => exit::OK,
        ConflictPolicy::Fail | ConflictPolicy::Wait(_) => exit::CONFLICT,
    });
    warn!(
        key = holder.key,
        holder = %who,
        holder_run_id = holder.owner.as_deref().unwrap_or("?"),
        token = %holder.token,
        since = %since,
        exit_code,
        "{message}; not running"
    );
    let rec = RunRecord {
        ended_at_ms: now_millis(),
        outcome: RunOutcome::Skipped,
        message: Some(message),
        ..base
    };
    let recorded = append(store, &rec, spec.store_timeout).await;
    RunReport::of(&rec, exit_code, Some(holder), recorded)
}

/// Releases the lease and records the run (one store round trip where the store allows it).
async fn finish(
    store: &dyn LeaseStore,
    lease: &Lease,
    rec: &RunRecord,
    store_timeout: Duration,
) -> bool {
    let describe = store.describe();
    let (key, run_id) = (lease.key.as_str(), lease.owner.as_str());
    match bounded(store_timeout, "release", &describe, || {
        store.release_and_record(lease, rec)
    })
    .await
    {
        Ok(Release::Released) => {
            info!(key, run_id, token = %lease.token, outcome = %rec.outcome, "lock released; run recorded");
            true
        }
        Ok(Release::NotHeld(current)) => {
            warn!(
                key,
                run_id,
                current_owner = current.and_then(|c| c.owner).as_deref().unwrap_or("none"),
                "lock was no longer ours at release; left it untouched; run recorded"
            );
            true
        }
        Err(e) => {
            error!(
                key,
                run_id,
                error = %e,
                "could not release the lock or record the run; the lock frees itself when its lease expires"
            );
            false
        }
    }
}

async fn append(store: &dyn LeaseStore, rec: &RunRecord, store_timeout: Duration) -> bool {
    let describe = store.describe();
    match bounded(store_timeout, "record run", &describe, || {
        store.append_run(rec)
    })
    .await
    {
        Ok(()) => true,
        Err(e) => {
            error!(key = rec.key, run_id = rec.run_id, error = %e, "could not record the run in the history");
            false
        }
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    child: tokio::signal::unix::Signal,
    /// Held only so that a handler is installed: a terminal's Ctrl-Z (or a write to the
    /// terminal from the background) must not stop the supervisor while its child runs on.
    /// Handlers, unlike an ignored disposition, are reset by exec, so the child is unaffected.
    _stop: [tokio::signal::unix::Signal; 3],
}

impl Signals {
    /// Installed before the lock is taken so that no SIGCHLD or SIGTERM can be missed.
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            child: signal(SignalKind::child())?,
            _stop: [
                signal(SignalKind::from_raw(libc::SIGTSTP))?,
                signal(SignalKind::from_raw(libc::SIGTTIN))?,
                signal(SignalKind::from_raw(libc::SIGTTOU))?,
            ],
        })
    }

    /// The next termination signal.
    async fn termination(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.hup.recv() => Signal::SIGHUP,
            _ = self.quit.recv() => Signal::SIGQUIT,
        }
    }

    /// A termination signal that already arrived, without waiting.
    fn pending(&mut self) -> Option<Signal> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        [
            (&mut self.term, Signal::SIGTERM),
            (&mut self.int, Signal::SIGINT),
            (&mut self.hup, Signal::SIGHUP),
            (&mut self.quit, Signal::SIGQUIT),
        ]
        .into_iter()
        .find_map(|(stream, sig)| stream.poll_recv(&mut cx).is_ready().then_some(sig))
    }
}

struct ChildStatus {
    wait: WaitStatus,
    reason: Option<StopReason>,
}

/// The heartbeat loop, on its own task so that a slow store call never delays the deadlines.
fn start_heartbeat(
    store: Arc<dyn LeaseStore>,
    lease: Lease,
    timing: LeaseTiming,
    store_timeout: Duration,
    first_sent: Instant,
) -> (mpsc::Receiver<Beat>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(8);
    let handle = tokio::spawn(async move {
        let call_timeout = store_timeout.min(timing.heartbeat);
        let mut next = first_sent + timing.heartbeat;
        let mut retry_delay = Duration::from_millis(250);
        loop {
            sleep_until(next).await;
            let sent = Instant::now();
            let result = match timeout(call_timeout, store.renew(&lease, timing.lease)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout {
                    store: store.describe(),
                    after: call_timeout,
                }),
            };
            let beat = match result {
                Ok(Renewal::Renewed { stop_requested, .. }) => {
                    next = sent + timing.heartbeat;
                    retry_delay = Duration::from_millis(250);
                    Beat::Renewed {
                        sent,
                        stop_requested,
                    }
                }
                Ok(Renewal::Lost(current)) => {
                    let _ = tx.send(Beat::Lost(current)).await;
                    return;
                }
                Err(e) => {
                    // Retry soon, with a capped backoff; the supervisor's lease deadline, not
                    // this loop, decides when trying is pointless.
                    next = Instant::now() + retry_delay;
                    retry_delay = (retry_delay * 2)
                        .min(timing.heartbeat / 2)
                        .max(Duration::from_millis(50));
                    Beat::Failed(e)
                }
            };
            if tx.send(beat).await.is_err() {
                return;
            }
        }
    });
    (rx, handle)
}

/// Waits for the child while enforcing every deadline; returns once the group leader exited.
///
/// One `select!` over the child's exit, the heartbeat results, the max-runtime, lease and kill
/// timers, and the signals we forward.
async fn supervise(
    store: Arc<dyn LeaseStore>,
    spec: &RunSpec,
    lease: &Lease,
    acquired_sent: Instant,
    (child, pgid): (Pid, Pid),
    signals: &mut Signals,
    guard: Option<&os::Guard>,
) -> ChildStatus {
    let timing = spec.timing;
    let key = lease.key.as_str();
    let timeout_at = spec.timeout.map(|t| Instant::now() + t);
    let mut terminate_at = acquired_sent + timing.terminate_after();
    let (mut beats, heartbeat) = start_heartbeat(
        store,
        lease.clone(),
        timing,
        spec.store_timeout,
        acquired_sent,
    );
    let mut reason: Option<StopReason> = None;
    let mut kill_at: Option<Instant> = None;
    let mut deadline_fired = false;
    let mut timeout_fired = false;
    let mut beats_open = true;
    let far = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);

    // Starts a graceful stop (SIGTERM now, SIGKILL after the grace) unless one is under way;
    // a stop already under way keeps its reason but never gets a later SIGKILL than this one.
    let terminate = |why: StopReason,
                     reason: &mut Option<StopReason>,
                     kill_at: &mut Option<Instant>| {
        let now = Instant::now();
        let latest_kill = now + timing.kill_grace;
        if reason.is_none() {
            *reason = Some(why);
            warn!(key, pid = child.as_raw(), reason = ?why, "terminating the command's process group (SIGTERM)");
            os::signal_group(pgid, Signal::SIGTERM);
        }
        *kill_at = Some(kill_at.map_or(latest_kill, |k| k.min(latest_kill)));
    };

    let guard_pid = guard.map(os::Guard::pid);
    loop {
        let mut child_status = None;
        for (pid, status) in os::reap_all() {
            if pid == child {
                child_status = Some(status);
            } else if Some(pid) == guard_pid && child_status.is_none() {
                // Only SIGKILL ends the guard early (the OOM killer, an operator); the job
                // still runs under our deadlines, but our own death would no longer stop it.
                error!(key, guard = pid.as_raw(), status = ?status, "the guard process died; the job is no longer protected against the supervisor's death");
            }
        }
        if let Some(status) = child_status {
            heartbeat.abort();
            return ChildStatus {
                wait: status,
                reason,
            };
        }
        tokio::select! {
            _ = signals.child.recv() => {}
            _ = signals.term.recv() => on_signal(Signal::SIGTERM, pgid, &mut reason, &mut kill_at, timing.kill_grace),
            _ = signals.int.recv() => on_signal(Signal::SIGINT, pgid, &mut reason, &mut kill_at, timing.kill_grace),
            _ = signals.hup.recv() => on_signal(Signal::SIGHUP, pgid, &mut reason, &mut kill_at, timing.kill_grace),
            _ = signals.quit.recv() => on_signal(Signal::SIGQUIT, pgid, &mut reason, &mut kill_at, timing.kill_grace),
            beat = beats.recv(), if beats_open => match beat {
                Some(Beat::Renewed { sent, stop_requested }) => {
                    let next = sent + timing.terminate_after();
                    if next > terminate_at {
                        terminate_at = next;
                        if let Some(g) = guard {
                            g.set_deadline(timing.watchdog_after(sent));
                        }
                    }
                    debug!(key, token = %lease.token, "lease renewed");
                    if stop_requested && reason.is_none() {
                        info!(key, "stop requested by an operator");
                        terminate(StopReason::StopRequested, &mut reason, &mut kill_at);
                    }
                }
                Some(Beat::Failed(e)) => {
                    let left = terminate_at.saturating_duration_since(Instant::now());
                    warn!(key, error = %e, terminate_in = %humantime::format_duration(Duration::from_millis(left.as_millis() as u64)), "lease renewal failed; retrying");
                }
                Some(Beat::Lost(current)) => {
                    error!(key, current_owner = current.as_ref().and_then(|c| c.owner.as_deref()).unwrap_or("none"), "lease lost; killing the command now");
                    // Somebody else may already hold the lock: no grace period.
                    reason = Some(StopReason::LeaseTaken);
                    os::signal_group(pgid, Signal::SIGKILL);
                    kill_at = None;
                    beats_open = false;
                }
                None => beats_open = false,
            },
            _ = sleep_until(terminate_at), if !deadline_fired => {
                deadline_fired = true;
                error!(key, "lease could not be renewed in time; terminating before it can expire");
                terminate(StopReason::LeaseDeadline, &mut reason, &mut kill_at);
            }
            _ = sleep_until(timeout_at.unwrap_or(far)), if timeout_at.is_some() && !timeout_fired => {
                timeout_fired = true;
                terminate(StopReason::Timeout, &mut reason, &mut kill_at);
            }
            _ = sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                warn!(key, pid = child.as_raw(), "kill grace over; SIGKILL to the process group");
                os::signal_group(pgid, Signal::SIGKILL);
                kill_at = None;
            }
        }
    }
}

/// Forwards a signal the supervisor received; a second one escalates to SIGKILL.
fn on_signal(
    sig: Signal,
    child: Pid,
    reason: &mut Option<StopReason>,
    kill_at: &mut Option<Instant>,
    grace: Duration,
) {
    if reason.is_some() {
        warn!(
            signal = sig.as_str(),
            "second signal; SIGKILL to the process group"
        );
        os::signal_group(child, Signal::SIGKILL);
        *kill_at = None;
        return;
    }
    info!(
        signal = sig.as_str(),
        pid = child.as_raw(),
        "forwarding signal to the command's process group"
    );
    *reason = Some(StopReason::Signal(sig as i32));
    os::signal_group(child, sig);
    *kill_at = Some(Instant::now() + grace);
}

fn decide(status: &ChildStatus) -> (RunOutcome, u8, Option<i32>, Option<i32>) {
    let (code, sig) = match status.wait {
        WaitStatus::Exited(_, code) => (Some(code), None),
        WaitStatus::Signaled(_, sig, _) => (None, Some(sig as i32)),
        _ => (None, None),
    };
    let natural = match (code, sig) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => exit::SIGNAL_BASE.saturating_add(s as u8),
        _ => exit::INTERNAL,
    };
    let exit_code = match status.reason {
        Some(StopReason::Timeout) => exit::TIMEOUT,
        Some(StopReason::LeaseDeadline | StopReason::LeaseTaken) => exit::LOCK_LOST,
        Some(StopReason::StopRequested) => exit::STOPPED,
        Some(StopReason::Signal(_)) | None => natural,
    };
    let outcome = match status.reason {
        Some(reason) => reason.outcome(),
        None if natural == 0 => RunOutcome::Ok,
        None => RunOutcome::Failed,
    };
    (outcome, exit_code, code, sig)
}

fn describe_reason(reason: StopReason, spec: &RunSpec) -> String {
    let f = |d: Duration| humantime::format_duration(d).to_string();
    match reason {
        StopReason::Timeout => format!(
            "command exceeded its maximum runtime of {}; terminated",
            spec.timeout.map(f).unwrap_or_default()
        ),
        StopReason::LeaseDeadline => format!(
            "lease could not be renewed within {}; command terminated before the lease could expire",
            f(spec.timing.terminate_after())
        ),
        StopReason::LeaseTaken => {
            "lease was taken away (force-released or taken over); command killed".to_owned()
        }
        StopReason::StopRequested => "stop requested by an operator; command terminated".to_owned(),
        StopReason::Signal(sig) => format!(
            "supervisor received {}; forwarded to the command",
            Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.as_str().to_owned())
        ),
    }
}
