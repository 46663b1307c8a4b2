//! Operator commands end to end: status, stop, release --force, history.

use std::time::Duration;

use crate::util::{TestEnv, text, wait_exit, wait_for};

fn start_holder(env: &TestEnv, key: &str) -> std::process::Child {
    let hook = format!(
        "echo \"$BATCHLOCK_KEY $BATCHLOCK_FENCING_TOKEN\" > {}",
        env.path("on-lost").display()
    );
    let mut child = env.spawn(&[
        "run",
        "--key",
        key,
        "--lease",
        "6s",
        "--kill-grace",
        "500ms",
        "--clock-skew",
        "0s",
        "--on-lost",
        &hook,
        "--",
        "sleep",
        "300",
    ]);
    if !wait_for(Duration::from_secs(20), || {
        env.status(key)["state"] == "held"
    }) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("holder never acquired: {}", text(&out.stderr));
    }
    child
}

#[test]
fn status_shows_the_holder() {
    let env = TestEnv::new();
    let mut holder = start_holder(&env, "st");
    let s = env.status("st");
    assert_eq!(s["key"], "st");
    assert_eq!(s["token"], 1);
    assert_eq!(s["holder"]["pid"], holder.id());
    assert!(
        s["expires_in_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 6000)
    );
    assert_eq!(s["run_id"].as_str().map(str::len), Some(32));
    let table = env.run(&["status"]);
    let table = text(&table.stdout);
    assert!(
        table.contains("st")
            && table.contains("held")
            && table.contains(&format!("pid {}", holder.id())),
        "{table}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn stop_terminates_the_holder_gracefully() {
    let env = TestEnv::new();
    let mut holder = start_holder(&env, "stp");
    let out = env.run(&["stop", "stp"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("pid {}", holder.id())));
    let st = wait_exit(&mut holder, Duration::from_secs(10)).expect("holder stops");
    assert_eq!(st.code(), Some(122));
    assert_eq!(env.history("stp")[0]["outcome"], "stopped");
    assert_eq!(env.status("stp")["state"], "free");
    assert!(!env.path("on-lost").exists(), "a stop is not a lost lease");
    // Nothing left to stop now.
    assert_eq!(env.run(&["stop", "stp"]).status.code(), Some(1));
}

#[test]
fn forced_release_is_audited_and_the_old_holder_is_killed() {
    let env = TestEnv::new();
    let mut holder = start_holder(&env, "fr");
    let refused = env.run(&["release", "fr"]);
    assert_eq!(
        refused.status.code(),
        Some(64),
        "release without --force is a usage error"
    );
    assert!(text(&refused.stderr).contains("--force"));
    assert_eq!(env.status("fr")["state"], "held");

    let out = env.run(&["release", "fr", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("previous holder"));
    // The old holder learns at its next heartbeat and kills its command.
    let st = wait_exit(&mut holder, Duration::from_secs(10)).expect("old holder ends");
    assert_eq!(st.code(), Some(123), "lock lost");
    let h = env.history("fr");
    let outcomes: Vec<&str> = h.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["lost", "force_released"]);
    let hook = std::fs::read_to_string(env.path("on-lost")).expect("on-lost hook ran");
    assert_eq!(hook.trim(), "fr 1");
    // A new run gets a greater fencing token.
    let out = env.run(&["run", "--key", "fr", "--", "true"]);
    assert!(out.status.success());
    assert_eq!(env.history("fr")[0]["token"], 2);
}

#[test]
fn history_table_and_limit() {
    let env = TestEnv::new();
    for code in [0, 3] {
        env.run(&[
            "run",
            "--key",
            "h",
            "--",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
    }
    let h = env.history("h");
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["outcome"], "failed");
    assert_eq!(h[0]["exit_code"], 3);
    assert_eq!(h[1]["outcome"], "ok");
    let limited = env.run(&["history", "h", "--limit", "1", "--json"]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&limited.stdout).unwrap();
    assert_eq!(v.len(), 1);
    let table = text(&env.run(&["history"]).stdout);
    assert!(table.contains("failed") && table.contains("ok"), "{table}");
}
