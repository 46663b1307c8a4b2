//! The incident, replayed end to end by `deploy/incident/replay.sh` against the DynamoDB test
//! server, with the `batchlock` binary that `scripts/test.sh` builds before the tests.
//!
//! This test builds nothing itself (a nested `cargo build` would wait on the lock of the
//! `cargo test` running it): it looks for the binary next to its own test executable, in the
//! same target directory, and fails with what to do if it is missing or older than the code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use batchlock::config::ConfigFile;

const ENDPOINT_ENV: &str = "BATCHLOCK_TEST_DYNAMODB_ENDPOINT";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{ENDPOINT_ENV} is unset but CI=true: run the tests through `bash scripts/test.sh`"
            );
            eprintln!("\n!!!!! SKIPPING the incident replay: {ENDPOINT_ENV} is unset !!!!!\n");
            None
        }
    }
}

/// `BATCHLOCK_BIN`, else `batchlock` in the target directory this test was built in
/// (`<target>/debug/deps/incident-*` → `<target>/debug/batchlock`).
fn batchlock_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BATCHLOCK_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps")
        .join("batchlock")
}

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let modified = if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs") {
            path.metadata().unwrap().modified().unwrap()
        } else {
            continue;
        };
        newest = newest.max(modified);
    }
    newest
}

#[test]
fn incident_replays_end_to_end() {
    let Some(endpoint) = endpoint() else { return };
    let bin = batchlock_bin();
    assert!(
        bin.is_file(),
        "no batchlock binary at {}: run `cargo build -p batchlock-cli` before the tests (scripts/test.sh does)",
        bin.display()
    );
    if std::env::var_os("BATCHLOCK_BIN").is_none() {
        let built = bin.metadata().unwrap().modified().unwrap();
        for crate_dir in ["batchlock", "batchlock-cli", "batchlock-dynamodb"] {
            let src = repo_root().join("crates").join(crate_dir).join("src");
            assert!(
                newest_source(&src) <= built,
                "{} is older than {}: run `cargo build -p batchlock-cli` so the replay tests the current code",
                bin.display(),
                src.display()
            );
        }
    }

    let script = repo_root().join("deploy/incident/replay.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("BATCHLOCK_BIN", &bin)
        .env(ENDPOINT_ENV, &endpoint)
        .output()
        .expect("run bash");
    let log = String::from_utf8_lossy(&out.stderr);
    eprintln!("{log}");
    assert!(
        out.status.success(),
        "{} failed ({}); the FAIL line above says which check",
        script.display(),
        out.status
    );
    assert!(
        log.contains("checks passed"),
        "replay.sh exited 0 without reaching its end"
    );
}

/// The replay must exercise the jobs that are deployed: same names, lock keys and rake tasks
/// as the ECS example's config, only with durations shrunk to seconds.
#[test]
fn the_replayed_jobs_are_the_deployed_jobs() {
    let load = |p: &str| {
        let path = repo_root().join(p);
        ConfigFile::load(&path).unwrap_or_else(|e| panic!("{e}"))
    };
    let deployed = load("deploy/terraform/examples/ecs-batches/batchlock.toml");
    let replayed = load("deploy/incident/batchlock.toml");
    assert!(
        replayed.require_timeout,
        "the replay runs under require_timeout as production does"
    );
    assert_eq!(
        deployed.jobs.keys().collect::<Vec<_>>(),
        replayed.jobs.keys().collect::<Vec<_>>()
    );
    for name in deployed.jobs.keys() {
        let (d, r) = (deployed.job(name).unwrap(), replayed.job(name).unwrap());
        assert_eq!(d.key, r.key, "job `{name}`: lock key");
        assert_eq!(d.on_conflict, r.on_conflict, "job `{name}`: on_conflict");
        let task = |cmd: Option<Vec<String>>| cmd.and_then(|c| c.last().cloned());
        assert_eq!(task(d.command), task(r.command), "job `{name}`: rake task");
        assert!(
            r.timeout.is_some(),
            "job `{name}`: the replay needs a timeout too"
        );
    }
    let rakefile = std::fs::read_to_string(repo_root().join("deploy/incident/Rakefile")).unwrap();
    for (namespace, task) in [
        ("missing_images", "check_articles"),
        ("xml", "articles"),
        ("sitemap", "refresh"),
    ] {
        assert!(
            rakefile.contains(&format!("namespace :{namespace} do"))
                && rakefile.contains(&format!("task :{task} do")),
            "the Rakefile must define {namespace}:{task}"
        );
    }
}
