//! A small harness: one temporary directory and SQLite store per test, and helpers to start
//! the binary and to watch processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn store(&self) -> String {
        format!("sqlite:{}", self.path("locks.db").display())
    }

    /// The binary with this test's store and nothing from the developer's environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchlock"));
        cmd.current_dir(self.dir.path())
            .env("BATCHLOCK_STORE", self.store())
            .env_remove("BATCH_LOCK_TABLE")
            .env_remove("BATCHLOCK_CONFIG")
            .env_remove("BATCHLOCK_LEASE")
            .env_remove("BATCHLOCK_TIMEOUT")
            .env_remove("BATCHLOCK_KILL_GRACE")
            .env_remove("BATCHLOCK_CLOCK_SKEW")
            .env_remove("BATCHLOCK_LOG_FORMAT")
            .env("BATCHLOCK_LOG", "batchlock=debug,info");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run batchlock")
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn batchlock")
    }

    pub fn history(&self, key: &str) -> Vec<serde_json::Value> {
        let out = self.run(&["history", key, "--json", "--limit", "100"]);
        assert!(
            out.status.success(),
            "history failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("history json")
    }

    pub fn status(&self, key: &str) -> serde_json::Value {
        let out = self.run(&["status", key, "--json"]);
        assert!(out.status.success(), "status failed: {}", text(&out.stderr));
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("status json");
        v.into_iter().next().unwrap_or(serde_json::Value::Null)
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `cond` until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Reads a pid written by a test child, waiting for the file to appear.
pub fn read_pid(path: &Path) -> i32 {
    let mut pid = None;
    assert!(
        wait_for(Duration::from_secs(10), || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        }),
        "child never wrote {}",
        path.display()
    );
    pid.unwrap()
}

/// Whether `pid` is a live process (zombies count as dead: they run no code).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("kill");
}

/// A shell script that starts a grandchild (`sleep 300`) and writes "SHELL-PID SLEEP-PID" to
/// `pidfile`: the smallest process tree that shows whether a kill reaches the whole group.
pub fn tree_script(pidfile: &Path) -> String {
    format!("sleep 300 & echo \"$$ $!\" > {}; wait", pidfile.display())
}

/// Waits for [`tree_script`]'s pid file and returns both pids.
pub fn read_tree(pidfile: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    assert!(
        wait_for(Duration::from_secs(15), || {
            pids = std::fs::read_to_string(pidfile)
                .map(|s| {
                    s.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            pids.len() == 2
        }),
        "the process tree never started"
    );
    pids
}
