//! Process control on Unix: process groups, the parent-death guard, group signals, reaping.
//!
//! Everything here exists because killing only the direct child is not enough: `sh -c`,
//! `bundle exec` and friends start the real worker as a grandchild. The child therefore leads
//! its own process group and every signal targets the whole group.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Makes this process the reaper of orphaned descendants (Linux), so that a grandchild whose
/// parent exited is reparented to us and reaped by us instead of escaping to init, and so that
/// zombies are collected when we run as a container's PID 1.
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
}

/// Starts `argv` in process group `group` (the guard's, see [`spawn_guard`]), or as the
/// leader of a new group when there is no guard, with `env` added to its environment.
///
/// No `pre_exec` hook is used, so the standard library can start the child with
/// `posix_spawn` (a vfork-style clone) instead of copying the whole supervisor with fork: that
/// is most of the wrapper's start-up cost. Supervisor death is covered by the guard, which
/// exists before the child does.
pub fn spawn_child(
    argv: &[OsString],
    env: &[(&str, String)],
    group: Option<Pid>,
) -> io::Result<Pid> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(group.map_or(0, Pid::as_raw));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn()?;
    // The child is reaped by `reap_all`, never through `Child::wait`, so dropping the handle
    // (which neither waits nor kills) is what we want.
    Ok(Pid::from_raw(child.id() as i32))
}

/// A forked watcher that SIGKILLs the job's process group when the supervisor dies, or when
/// the supervisor misses the lease's kill deadline.
///
/// The guard is forked *before* the job and leads the process group the job then joins, so the
/// group id is known from the start and there is no moment in which a job runs unguarded. It
/// blocks on a pipe whose only write end the supervisor holds: the kernel closes it when the
/// supervisor dies, however it dies (`PR_SET_PDEATHSIG` would only reach the direct child, not
/// the grandchildren that do the real work), and the guard then kills the whole group,
/// itself included. It ignores the termination signals that the supervisor forwards to the
/// group, so only SIGKILL ends it early. The supervisor also writes each new hard deadline into
/// the pipe; the guard enforces it on `CLOCK_BOOTTIME` (which, unlike the monotonic clock,
/// keeps counting while a host is suspended), so a frozen supervisor (SIGSTOP, a blocked
/// write to stderr) cannot let its child outlive the lease.
#[derive(Debug)]
pub struct Guard {
    pid: Pid,
    write_end: Option<OwnedFd>,
}

fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; it is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

fn boottime_deadline(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    boottime_ms() + left.as_millis() as u64
}

impl Guard {
    /// Tells the guard to kill the group now and exit (closing our end of the pipe).
    pub fn disarm(&mut self) {
        self.write_end.take();
    }

    /// Moves the guard's hard deadline.
    pub fn set_deadline(&self, deadline: Instant) {
        if let Some(fd) = &self.write_end {
            let bytes = boottime_deadline(deadline).to_ne_bytes();
            // Eight bytes are far below PIPE_BUF, so the write is atomic; the guard drains
            // the pipe continuously, so it cannot fill up.
            // SAFETY: writes from a buffer we own to a descriptor we own.
            unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        }
    }

    /// The guard's process id, which is also the job's process group id (the guard is our
    /// child and is reaped with the others).
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// Forks the guard, leader of a new process group for the job, with a first hard deadline.
pub fn spawn_guard(deadline: Instant) -> io::Result<Guard> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let first_deadline = boottime_deadline(deadline);
    // SAFETY: after fork the child only calls async-signal-safe functions (close, signal,
    // clock_gettime, poll, read, kill, _exit) and never returns into the parent's Rust code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => unsafe {
            // Both sides set the group, so that it exists whichever runs first.
            libc::setpgid(0, 0);
            libc::close(write_end.as_raw_fd());
            for sig in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGPIPE,
                libc::SIGTSTP,
                libc::SIGTTIN,
                libc::SIGTTOU,
            ] {
                libc::signal(sig, libc::SIG_IGN);
            }
            let fd = read_end.as_raw_fd();
            let mut deadline = first_deadline;
            loop {
                let now = boottime_ms();
                if now >= deadline {
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let wait = (deadline - now).min(i32::MAX as u64) as i32;
                let n = libc::poll(&mut pfd, 1, wait);
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                if n == 0 {
                    continue;
                }
                let mut buf = [0u8; 8];
                let got = libc::read(fd, buf.as_mut_ptr().cast(), 8);
                if got == 8 {
                    deadline = u64::from_ne_bytes(buf);
                } else if got < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                } else {
                    // EOF: the supervisor is gone or done.
                    break;
                }
            }
            libc::kill(-libc::getpid(), libc::SIGKILL);
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => {
            let _ = nix::unistd::setpgid(child, child);
            drop(read_end);
            Ok(Guard {
                pid: child,
                write_end: Some(write_end),
            })
        }
    }
}

/// SIGKILLs group `pgid` and waits, up to `limit`, until no member is left (reaping the ones
/// that are our children). A member stuck in an uninterruptible system call can only die when
/// the call ends; the lock must not be released before then.
pub fn kill_group_and_wait(pgid: Pid, limit: Duration) {
    let end = std::time::Instant::now() + limit;
    // Members usually die within microseconds of SIGKILL: poll fast first, then back off.
    let mut pause = Duration::from_micros(50);
    loop {
        signal_group(pgid, Signal::SIGKILL);
        reap_all();
        if matches!(killpg(pgid, None), Err(nix::errno::Errno::ESRCH)) {
            return;
        }
        if std::time::Instant::now() >= end {
            tracing::warn!(
                pgid = pgid.as_raw(),
                "process group still alive after SIGKILL"
            );
            return;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Sends `signal` to every process of group `pgid`; a group that is already gone is fine.
pub fn signal_group(pgid: Pid, signal: Signal) {
    let _ = killpg(pgid, signal);
}

/// Reaps every child that has exited, without blocking.
pub fn reap_all() -> Vec<(Pid, WaitStatus)> {
    let mut reaped = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    reaped.push((pid, status));
                }
            }
        }
    }
    reaped
}

/// Blocks until `pid` (a child known to exit promptly, such as a disarmed guard) has exited.
pub fn wait_for(pid: Pid) {
    loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}
