//! `batchlock run`: mutual exclusion, timeouts, signals, supervisor death.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::{
    TestEnv, alive, read_pid, read_tree, signal, text, tree_script, wait_exit, wait_for,
};

/// Ten concurrent runs per round on one key: exactly one runs, and no two child intervals
/// (recorded by the children themselves) overlap, across rounds either.
#[test]
fn ten_concurrent_runs_never_overlap() {
    let env = TestEnv::new();
    let log = env.path("intervals.log");
    let script = format!(
        "echo \"start $(date +%s%N) $BATCHLOCK_RUN_ID\" >> {log}; sleep 0.3; echo \"end $(date +%s%N) $BATCHLOCK_RUN_ID\" >> {log}",
        log = log.display()
    );
    let rounds = 4;
    for round in 0..rounds {
        let mut children: Vec<_> = (0..10)
            .map(|_| env.spawn(&["run", "--key", "shared", "--", "sh", "-c", &script]))
            .collect();
        for child in &mut children {
            let st = wait_exit(child, Duration::from_secs(30)).expect("run finished");
            assert_eq!(
                st.code(),
                Some(0),
                "round {round}: skip and success both exit 0"
            );
        }
        let lines = std::fs::read_to_string(&log).unwrap();
        let starts = lines.lines().filter(|l| l.starts_with("start")).count();
        assert_eq!(
            starts,
            round + 1,
            "round {round}: exactly one run per round\n{lines}"
        );
    }
    // Intervals, in log order, must alternate start/end of the same run.
    let lines = std::fs::read_to_string(&log).unwrap();
    let events: Vec<(String, u128, String)> = lines
        .lines()
        .map(|l| {
            let mut p = l.split_whitespace();
            (
                p.next().unwrap().to_owned(),
                p.next().unwrap().parse().unwrap(),
                p.next().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(events.len(), rounds * 2);
    let mut last_end = 0;
    for pair in events.chunks(2) {
        assert_eq!(pair[0].0, "start");
        assert_eq!(pair[1].0, "end");
        assert_eq!(pair[0].2, pair[1].2, "an interval must belong to one run");
        assert!(pair[0].1 >= last_end, "intervals overlap");
        last_end = pair[1].1;
    }
    let history = env.history("shared");
    let ok = history.iter().filter(|r| r["outcome"] == "ok").count();
    let skipped = history.iter().filter(|r| r["outcome"] == "skipped").count();
    assert_eq!(ok, rounds);
    assert_eq!(skipped, rounds * 9);
}

fn assert_timeout_kills_tree(script: &str) {
    let env = TestEnv::new();
    let pidfile = env.path("grandchild.pid");
    let script = script.replace("PIDFILE", &pidfile.display().to_string());
    let started = Instant::now();
    let mut child = env.spawn(&[
        "run",
        "--key",
        "t",
        "--timeout",
        "1s",
        "--kill-grace",
        "500ms",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let grandchild = read_pid(&pidfile);
    assert!(alive(grandchild));
    let st = wait_exit(&mut child, Duration::from_secs(20)).expect("supervisor exits");
    assert_eq!(st.code(), Some(124), "timeout exit code");
    assert!(started.elapsed() < Duration::from_secs(15), "no hang");
    assert!(
        wait_for(Duration::from_secs(2), || !alive(grandchild)),
        "grandchild {grandchild} survived the timeout"
    );
    let history = env.history("t");
    assert_eq!(history[0]["outcome"], "timeout");
    assert_eq!(
        env.status("t")["state"],
        "free",
        "lock released after timeout"
    );
}

#[test]
fn timeout_kills_child_and_grandchildren() {
    assert_timeout_kills_tree("sleep 300 & echo $! > PIDFILE; wait");
}

#[test]
fn timeout_kills_a_tree_that_ignores_sigterm() {
    assert_timeout_kills_tree("trap '' TERM; sleep 300 & echo $! > PIDFILE; wait; wait; sleep 300");
}

/// ECS StopTask sends SIGTERM to the supervisor: the child gets it, the lock is released and
/// the history says the run was stopped.
#[test]
fn sigterm_to_supervisor_reaches_the_child() {
    let env = TestEnv::new();
    let marker = env.path("got-term");
    let ready = env.path("ready");
    let script = format!(
        "trap 'echo term > {m}; exit 0' TERM; echo $$ > {r}; while :; do sleep 0.05; done",
        m = marker.display(),
        r = ready.display()
    );
    let mut child = env.spawn(&["run", "--key", "sig", "--", "sh", "-c", &script]);
    read_pid(&ready);
    signal(child.id(), Signal::SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(20)).expect("supervisor exits");
    assert!(marker.exists(), "child never saw SIGTERM");
    assert_eq!(
        st.code(),
        Some(0),
        "the child's own exit code passes through"
    );
    assert_eq!(env.history("sig")[0]["outcome"], "stopped");
    assert_eq!(env.status("sig")["state"], "free");
}

/// A second signal escalates to SIGKILL for a child that ignores the first.
#[test]
fn second_signal_escalates_to_sigkill() {
    let env = TestEnv::new();
    let ready = env.path("ready");
    let script = format!("trap '' TERM INT; echo $$ > {}; sleep 300", ready.display());
    let mut child = env.spawn(&[
        "run",
        "--key",
        "esc",
        "--kill-grace",
        "30s",
        "--lease",
        "2m",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    read_pid(&ready);
    signal(child.id(), Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "child ignores the first signal"
    );
    signal(child.id(), Signal::SIGINT);
    let st = wait_exit(&mut child, Duration::from_secs(10)).expect("escalated");
    assert_eq!(st.code(), Some(128 + 9));
    assert_eq!(env.history("esc")[0]["outcome"], "stopped");
}

/// A supervisor with a 3 s lease over [`tree_script`]; returns it and the tree's two pids.
fn spawn_short_lease_tree(env: &TestEnv, key: &str) -> (std::process::Child, Vec<i32>) {
    let pidfile = env.path("pids");
    let script = tree_script(&pidfile);
    let sup = env.spawn(&[
        "run",
        "--key",
        key,
        "--lease",
        "3s",
        "--kill-grace",
        "200ms",
        "--clock-skew",
        "0s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    (sup, read_tree(&pidfile))
}

/// `kill -9` of the supervisor: the whole process group dies with it, and once the lease has
/// expired another run acquires.
#[test]
fn killed_supervisor_takes_its_tree_along_and_the_lease_expires() {
    let env = TestEnv::new();
    let (mut sup, pids) = spawn_short_lease_tree(&env, "k9");
    signal(sup.id(), Signal::SIGKILL);
    sup.wait().unwrap();
    for pid in &pids {
        assert!(
            wait_for(Duration::from_secs(3), || !alive(*pid)),
            "process {pid} outlived its supervisor"
        );
    }
    // The lease is still valid right now: a new run is skipped...
    let out = env.run(&["run", "--key", "k9", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        env.history("k9")[0]["outcome"],
        "skipped",
        "{}",
        text(&out.stderr)
    );
    // ...and after expiry it runs (waiting for the lock instead of polling by hand).
    let marker = env.path("second-ran");
    let out = env.run(&[
        "run",
        "--key",
        "k9",
        "--on-conflict",
        "wait",
        "--wait-timeout",
        "20s",
        "--",
        "touch",
        &marker.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(marker.exists(), "the next run must acquire after expiry");
}

/// Waiters take over promptly once the holder releases.
#[test]
fn wait_policy_runs_after_the_holder_finishes() {
    let env = TestEnv::new();
    let mut first = env.spawn(&["run", "--key", "w", "--", "sleep", "1"]);
    assert!(wait_for(
        Duration::from_secs(10),
        || env.status("w")["state"] == "held"
    ));
    let started = Instant::now();
    let out = env.run(&[
        "run",
        "--key",
        "w",
        "--on-conflict",
        "wait",
        "--wait-timeout",
        "30s",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    first.wait().unwrap();
    let history = env.history("w");
    assert_eq!(history.iter().filter(|r| r["outcome"] == "ok").count(), 2);
}

/// The child sees its key, run id and fencing token; tokens grow from run to run.
#[test]
fn child_environment_carries_key_run_id_and_token() {
    let env = TestEnv::new();
    let out_file = env.path("env");
    let script = format!(
        "echo \"$BATCHLOCK_KEY $BATCHLOCK_RUN_ID $BATCHLOCK_FENCING_TOKEN\" >> {}",
        out_file.display()
    );
    for _ in 0..2 {
        let out = env.run(&["run", "--key", "envkey", "--", "sh", "-c", &script]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let text = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines[0][0], "envkey");
    assert_eq!(lines[0][1].len(), 32);
    assert_eq!(lines[0][2], "1");
    assert_eq!(lines[1][2], "2");
    let history = env.history("envkey");
    assert_eq!(history[0]["run_id"], lines[1][1]);
}

/// Named jobs come from the configuration file.
#[test]
fn named_job_from_config_file() {
    let env = TestEnv::new();
    let marker = env.path("job-ran");
    std::fs::write(
        env.path("batchlock.toml"),
        format!(
            "[jobs.xml_articles]\ncommand = [\"touch\", \"{}\"]\ntimeout = \"1m\"\nlease = \"30s\"\n",
            marker.display()
        ),
    )
    .unwrap();
    let out = env.run(&["run", "xml_articles"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(marker.exists());
    let h = env.history("xml_articles");
    assert_eq!(h[0]["outcome"], "ok");
    assert_eq!(h[0]["holder"]["details"]["job"], "xml_articles");
}

/// `--log-format json` writes one JSON object per line with key, run id and token.
#[test]
fn json_logs_carry_lifecycle_fields() {
    let env = TestEnv::new();
    let out = env.run(&["--log-format", "json", "run", "--key", "j", "--", "true"]);
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let acquired = events
        .iter()
        .find(|e| e["message"] == "lock acquired")
        .expect("acquired event");
    assert_eq!(acquired["key"], "j");
    assert_eq!(acquired["token"], "1");
    assert!(acquired["run_id"].as_str().is_some_and(|s| s.len() == 32));
    for step in [
        "command started",
        "command finished",
        "lock released; run recorded",
    ] {
        assert!(
            events.iter().any(|e| e["message"] == step),
            "missing {step}"
        );
    }
}

/// As a container's PID 1 (a new PID namespace here), the supervisor reaps orphaned zombies
/// and handles the SIGTERM that ECS StopTask sends to PID 1.
#[test]
fn as_pid1_reaps_orphans_and_handles_sigterm() {
    let env = TestEnv::new();
    let report = env.path("pid1-report");
    let marker = env.path("pid1-term");
    let script = format!(
        "echo \"pid1=$(cat /proc/1/comm)\" > {r}; \
         (sleep 0.1 &); (sleep 0.1 &); (sleep 0.1 &); sleep 1; \
         for p in /proc/[0-9]*/stat; do cut -d' ' -f3 $p; done | grep -c Z >> {r}; \
         trap 'echo term > {m}; exit 0' TERM; kill -TERM 1; \
         i=0; while [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done",
        r = report.display(),
        m = marker.display()
    );
    let out = std::process::Command::new("unshare")
        .args([
            "--fork",
            "--pid",
            "--mount-proc",
            env!("CARGO_BIN_EXE_batchlock"),
        ])
        .args([
            "--store",
            &env.store(),
            "run",
            "--key",
            "pid1",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .expect("unshare (util-linux) must be installed");
    let stderr = text(&out.stderr);
    let report = std::fs::read_to_string(&report).unwrap_or_else(|_| panic!("no report: {stderr}"));
    let mut lines = report.lines();
    assert_eq!(lines.next(), Some("pid1=batchlock"), "{stderr}");
    assert_eq!(lines.next(), Some("0"), "zombies left unreaped: {stderr}");
    assert!(
        marker.exists(),
        "SIGTERM to PID 1 never reached the child: {stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(env.history("pid1")[0]["outcome"], "stopped");
}

/// A frozen supervisor (SIGSTOP; the same holds for a blocked log write or a suspended host)
/// cannot renew, so its guard kills the job on its own before the lease can expire.
#[test]
fn frozen_supervisor_cannot_let_the_job_outlive_its_lease() {
    let env = TestEnv::new();
    let (mut sup, pids) = spawn_short_lease_tree(&env, "frozen");
    signal(sup.id(), Signal::SIGSTOP);
    let stopped_at = Instant::now();
    let expires_in = env.status("frozen")["expires_in_ms"]
        .as_u64()
        .expect("held");
    let expiry = stopped_at + Duration::from_millis(expires_in);
    assert!(
        wait_for(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))),
        "the job kept running under a frozen supervisor"
    );
    assert!(
        Instant::now() < expiry,
        "the job died only after the lease expired"
    );
    signal(sup.id(), Signal::SIGCONT);
    let st = wait_exit(&mut sup, Duration::from_secs(10)).expect("supervisor ends after SIGCONT");
    assert_ne!(st.code(), Some(0));
}

/// A termination signal while waiting for the lock ends the wait; nothing runs.
#[test]
fn sigterm_while_waiting_for_the_lock() {
    let env = TestEnv::new();
    let mut holder = env.spawn(&["run", "--key", "wt", "--", "sleep", "30"]);
    if !wait_for(Duration::from_secs(20), || {
        env.status("wt")["state"] == "held"
    }) {
        let _ = holder.kill();
        let out = holder.wait_with_output().unwrap();
        panic!("holder never acquired: {}", text(&out.stderr));
    }
    let marker = env.path("must-not-exist");
    let mut waiter = env.spawn(&[
        "run",
        "--key",
        "wt",
        "--on-conflict",
        "wait",
        "--",
        "touch",
        &marker.display().to_string(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    signal(waiter.id(), Signal::SIGTERM);
    let st = wait_exit(&mut waiter, Duration::from_secs(10)).expect("waiter ends");
    assert_eq!(st.code(), Some(128 + 15));
    assert!(!marker.exists());
    assert_eq!(env.history("wt")[0]["outcome"], "stopped");
    holder.kill().unwrap();
    holder.wait().unwrap();
}

/// The first runs on a host open a database that does not exist yet, all at once (and an
/// operator may run `status` at the same moment): none of them may fail with "database is
/// locked" while the file is being created and switched to WAL.
#[test]
fn first_use_of_a_new_database_by_many_processes() {
    for round in 0..8 {
        let env = TestEnv::new();
        let children: Vec<_> = (0..12)
            .map(|i| {
                if i % 2 == 0 {
                    env.spawn(&["run", "--key", "first", "--", "true"])
                } else {
                    env.spawn(&["status", "first", "--json"])
                }
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        }
    }
}
