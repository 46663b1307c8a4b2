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

/// Starts `argv` as the leader of a new process group with `env` added to its environment.
///
/// On Linux the child also gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies at once if the
/// supervisor is killed; the guard process ([`spawn_guard`]) extends that to the whole group.
pub fn spawn_child(argv: &[OsString], env: &[(&str, String)]) -> io::Result<Pid> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    #[cfg(target_os = "linux")]
    {
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
        // functions (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect; then nobody would send
                // the signal, so give up now rather than run unsupervised.
                if libc::getppid() != parent.as_raw() {
                    libc::_exit(137);
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    // The child is reaped by `reap_all`, never through `Child::wait`, so dropping the handle
    // (which neither waits nor kills) is what we want.
    Ok(Pid::from_raw(child.id() as i32))
}

/// A forked watcher that SIGKILLs the child's process group when the supervisor dies.
///
/// `PR_SET_PDEATHSIG` only reaches the direct child; if the supervisor is killed with SIGKILL,
/// grandchildren would live on without a lease. The guard blocks on a pipe whose only write
/// end the supervisor holds: the kernel closes it when the supervisor dies, however it dies,
/// and the guard then kills the group.
#[derive(Debug)]
pub struct Guard {
    pid: Pid,
    write_end: Option<OwnedFd>,
}

impl Guard {
    /// Tells the guard to kill the group now and exit (closing our end of the pipe).
    pub fn disarm(&mut self) {
        self.write_end.take();
    }

    /// The guard's process id (it is our child and is reaped with the others).
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// Forks the guard for process group `pgid`.
pub fn spawn_guard(pgid: Pid) -> io::Result<Guard> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: after fork the child only calls async-signal-safe functions (close, sigaction via
    // signal, read, kill, _exit) and never returns into Rust code of the parent.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => unsafe {
            libc::close(write_end.as_raw_fd());
            for sig in [
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGQUIT,
                libc::SIGPIPE,
            ] {
                libc::signal(sig, libc::SIG_IGN);
            }
            let mut buf = [0u8; 1];
            loop {
                let n = libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), 1);
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            libc::kill(-pgid.as_raw(), libc::SIGKILL);
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(read_end);
            Ok(Guard {
                pid: child,
                write_end: Some(write_end),
            })
        }
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
