//! The documented exit-code table, end to end.

use std::os::unix::fs::PermissionsExt;

use crate::util::{TestEnv, text};

fn code(env: &TestEnv, args: &[&str]) -> i32 {
    let out = env.run(args);
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed: {}", text(&out.stderr)))
}

#[test]
fn child_codes_pass_through() {
    let env = TestEnv::new();
    assert_eq!(code(&env, &["run", "--key", "c", "--", "true"]), 0);
    assert_eq!(
        code(&env, &["run", "--key", "c", "--", "sh", "-c", "exit 3"]),
        3
    );
    assert_eq!(
        code(&env, &["run", "--key", "c", "--", "sh", "-c", "kill -9 $$"]),
        137
    );
}

#[test]
fn timeout_is_124() {
    let env = TestEnv::new();
    assert_eq!(
        code(
            &env,
            &[
                "run",
                "--key",
                "c",
                "--timeout",
                "300ms",
                "--",
                "sleep",
                "30"
            ]
        ),
        124
    );
}

#[test]
fn command_not_found_127_and_not_executable_126_release_and_record() {
    let env = TestEnv::new();
    assert_eq!(
        code(&env, &["run", "--key", "c", "--", "/nonexistent/cmd"]),
        127
    );
    let script = env.path("noexec.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        code(&env, &["run", "--key", "c", "--", script.to_str().unwrap()]),
        126
    );
    let h = env.history("c");
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|r| r["outcome"] == "failed"));
    assert!(
        h[1]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/cmd")
    );
    assert_eq!(env.status("c")["state"], "free", "no lock left behind");
}

#[test]
fn conflict_codes() {
    let env = TestEnv::new();
    let mut holder = env.spawn(&["run", "--key", "busy", "--", "sleep", "30"]);
    assert!(crate::util::wait_for(
        std::time::Duration::from_secs(10),
        || env.status("busy")["state"] == "held"
    ));
    assert_eq!(
        code(&env, &["run", "--key", "busy", "--", "true"]),
        0,
        "skip is success by default"
    );
    assert_eq!(
        code(
            &env,
            &[
                "run",
                "--key",
                "busy",
                "--conflict-exit-code",
                "9",
                "--",
                "true"
            ]
        ),
        9
    );
    assert_eq!(
        code(
            &env,
            &[
                "run",
                "--key",
                "busy",
                "--on-conflict",
                "fail",
                "--",
                "true"
            ]
        ),
        75
    );
    assert_eq!(
        code(
            &env,
            &[
                "run",
                "--key",
                "busy",
                "--on-conflict",
                "wait",
                "--wait-timeout",
                "300ms",
                "--",
                "true"
            ]
        ),
        75
    );
    let skipped = env.history("busy");
    assert_eq!(skipped.len(), 4);
    assert!(skipped.iter().all(|r| r["outcome"] == "skipped"));
    assert!(
        skipped[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", holder.id()))
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
}

#[test]
fn usage_errors_are_64_with_one_line_messages() {
    let env = TestEnv::new();
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--key", "", "--", "true"], "empty"),
        (
            &["run", "--key", &"x".repeat(129), "--", "true"],
            "limit is 128",
        ),
        (&["run", "--key", "a b", "--", "true"], "' '"),
        (
            &["run", "--key", "k", "--timeout", "soon", "--", "true"],
            "soon",
        ),
        (&["run", "--key", "k"], "missing command"),
        (&["run", "--", "true"], "no lock key"),
        (
            &["run", "--key", "k", "--lease", "3s", "--", "true"],
            "too short",
        ),
        (&["--store", "redis://x", "status"], "unknown store"),
        (
            &["--store", "memory:", "run", "--key", "k", "--", "true"],
            "cannot exclude",
        ),
        (
            &["run", "--key", "k", "--require-timeout", "--", "true"],
            "--timeout",
        ),
        (&["frobnicate"], "unrecognized"),
    ];
    for (args, needle) in cases {
        let out = env.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in: {err}"
        );
    }
    assert!(env.history("k").is_empty(), "nothing ran");
}

#[test]
fn config_errors_are_78_and_name_the_line() {
    let env = TestEnv::new();
    let cfg = env.path("bad.toml");
    std::fs::write(&cfg, "[jobs.a]\ncommand = [\"true\"]\ntimeout = 5\n").unwrap();
    let out = env.run(&["--config", cfg.to_str().unwrap(), "run", "a"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains("line 3"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["--config", "/nonexistent/batchlock.toml", "status"]);
    assert_eq!(out.status.code(), Some(78));
    std::fs::write(&cfg, "[jobs.a]\ncommand = [\"true\"]\n").unwrap();
    let out = env.run(&["--config", cfg.to_str().unwrap(), "run", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "an unknown job name is a usage error"
    );
    assert!(text(&out.stderr).contains("defined jobs: a"));
}

#[test]
fn unusable_store_is_69() {
    let env = TestEnv::new();
    let out = env
        .cmd()
        .env("BATCHLOCK_STORE", "sqlite:/proc/no-such-dir/locks.db")
        .args(["run", "--key", "k", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    assert!(text(&out.stderr).contains("--store sqlite:PATH"));
}

#[test]
fn help_documents_the_exit_codes() {
    let env = TestEnv::new();
    let out = env.run(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for code in ["124", "123", "122", "127", "126", "75", "64", "69", "78"] {
        assert!(help.contains(code), "--help misses {code}");
    }
}
