//! `batchlock` against DynamoDB (moto, started by `scripts/test.sh`), selected the way the
//! incident specifies: `BATCH_LOCK_TABLE` alone. A small TCP proxy in front of the server lets
//! a test take "the store" down and bring it back without losing its state.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::{TestEnv, alive, read_pid, read_tree, text, tree_script, wait_exit, wait_for};

const ENDPOINT_ENV: &str = "BATCHLOCK_TEST_DYNAMODB_ENDPOINT";

fn endpoint() -> Option<String> {
    match std::env::var(ENDPOINT_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{ENDPOINT_ENV} is unset but CI=true: run the tests through `bash scripts/test.sh`"
            );
            eprintln!("\n!!!!! SKIPPING DynamoDB CLI test: {ENDPOINT_ENV} is unset !!!!!\n");
            None
        }
    }
}

/// One table per test, reached through `BATCH_LOCK_TABLE` and dummy credentials.
struct Dynamo {
    env: TestEnv,
    table: String,
    endpoint: String,
}

impl Dynamo {
    fn new(endpoint: String) -> Self {
        let d = Self {
            env: TestEnv::new(),
            table: format!("cli-{}", &uuid_like()),
            endpoint,
        };
        let out = d.run(&["init"]);
        assert!(out.status.success(), "init: {}", text(&out.stderr));
        d
    }

    fn cmd(&self) -> Command {
        let mut cmd = self.env.cmd();
        cmd.env_remove("BATCHLOCK_STORE")
            .env("BATCH_LOCK_TABLE", &self.table)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "ap-northeast-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("ECS_CONTAINER_METADATA_URI_V4");
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().expect("run batchlock")
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }
}

fn uuid_like() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn two_runs_through_batch_lock_table_one_skipped_with_the_holder() {
    let Some(endpoint) = endpoint() else { return };
    let d = Dynamo::new(endpoint);
    let ready = d.env.path("ready");
    let script = format!("echo $$ > {}; sleep 30", ready.display());
    let mut first = d.spawn(&[
        "run",
        "--key",
        "xml_articles",
        "--lease",
        "6s",
        "--kill-grace",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    read_pid(&ready);
    let second = d.run(&[
        "run",
        "--key",
        "xml_articles",
        "--",
        "sh",
        "-c",
        "echo MUST-NOT-RUN",
    ]);
    assert_eq!(second.status.code(), Some(0));
    assert!(!text(&second.stdout).contains("MUST-NOT-RUN"));
    let log = text(&second.stderr);
    assert!(
        log.contains("is held by") && log.contains(&format!("pid {}", first.id())),
        "{log}"
    );

    let status = d.json(&["status", "xml_articles", "--json"]);
    assert_eq!(status[0]["state"], "held");
    assert_eq!(status[0]["holder"]["pid"], first.id());

    // stop: the holder terminates its command at its next heartbeat (every 2 s here).
    let out = d.run(&["stop", "xml_articles"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let st = wait_exit(&mut first, Duration::from_secs(15)).expect("holder stops");
    assert_eq!(st.code(), Some(122));

    // release --force on a held lock kills the holder at its next heartbeat.
    let mut holder = d.spawn(&[
        "run",
        "--key",
        "xml_articles",
        "--lease",
        "6s",
        "--kill-grace",
        "1s",
        "--",
        "sleep",
        "30",
    ]);
    assert!(wait_for(Duration::from_secs(15), || d.json(&[
        "status",
        "xml_articles",
        "--json"
    ])[0]["state"]
        == "held"));
    let out = d.run(&["release", "xml_articles", "--force"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let st = wait_exit(&mut holder, Duration::from_secs(15)).expect("old holder ends");
    assert_eq!(st.code(), Some(123));

    let history = d.json(&["history", "xml_articles", "--json"]);
    let outcomes: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["lost", "force_released", "stopped", "skipped"]);
    let tokens: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["token"].as_u64())
        .collect();
    assert!(
        tokens[0] > tokens[2],
        "fencing tokens grow across runs: {tokens:?}"
    );
}

/// A loopback TCP proxy that can be switched off (connections refused by being dropped at
/// once, open ones cut) and on again, with the server's state intact behind it.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&down);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if flag.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let flag = Arc::clone(&flag);
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(50)))
                            .unwrap();
                        let mut buf = [0u8; 16384];
                        loop {
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, down }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// The store goes away while a job holds the lock: the job is killed before the lease can
/// expire, the exit code says "lock lost", and once the store is back the next run acquires.
#[test]
fn store_outage_mid_run_kills_the_job_before_expiry_then_recovers() {
    let Some(upstream) = endpoint() else { return };
    let proxy = Proxy::start(&upstream);
    let d = Dynamo::new(proxy.endpoint());
    let pidfile = d.env.path("pids");
    let script = tree_script(&pidfile);
    let mut sup = d.spawn(&[
        "run",
        "--key",
        "missing_images_check",
        "--lease",
        "6s",
        "--kill-grace",
        "500ms",
        "--clock-skew",
        "500ms",
        "--store-timeout",
        "1s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let pids = read_tree(&pidfile);
    // Let a heartbeat or two succeed, then note the lease as the store last saw it.
    std::thread::sleep(Duration::from_millis(2500));
    let status = d.json(&["status", "missing_images_check", "--json"]);
    let expires_in = status[0]["expires_in_ms"].as_u64().expect("held");
    let read_at = Instant::now();
    proxy.set_down(true);

    let st = wait_exit(&mut sup, Duration::from_secs(30)).expect("supervisor ends");
    let dead_at = Instant::now();
    assert_eq!(
        st.code(),
        Some(123),
        "lock lost: {}",
        text(
            &sup.stderr
                .take()
                .map(|mut e| {
                    let mut s = String::new();
                    e.read_to_string(&mut s).unwrap();
                    s.into_bytes()
                })
                .unwrap_or_default()
        )
    );
    for pid in &pids {
        assert!(!alive(*pid), "{pid} survived the outage");
    }
    // The store's view of expiry can only have moved later than what we read (renewals that
    // slipped through before the outage), so this bound is conservative.
    assert!(
        dead_at < read_at + Duration::from_millis(expires_in),
        "job ended {:?} after the read, lease expired {expires_in} ms after it",
        dead_at - read_at
    );

    proxy.set_down(false);
    let marker = d.env.path("next-ran");
    let out = d.run(&[
        "run",
        "--key",
        "missing_images_check",
        "--on-conflict",
        "wait",
        "--wait-timeout",
        "30s",
        "--",
        "touch",
        &marker.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        marker.exists(),
        "the next run acquires once the store is back and the lease expired"
    );
}

#[test]
fn init_is_idempotent_and_doctor_is_healthy() {
    let Some(endpoint) = endpoint() else { return };
    let d = Dynamo::new(endpoint);
    let again = d.run(&["init"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("already existed"),
        "{}",
        text(&again.stdout)
    );
    let doc = d.run(&["doctor"]);
    assert_eq!(
        doc.status.code(),
        Some(0),
        "{}{}",
        text(&doc.stdout),
        text(&doc.stderr)
    );
}

#[test]
fn missing_table_is_a_store_error_that_says_run_init() {
    let Some(endpoint) = endpoint() else { return };
    let d = Dynamo {
        env: TestEnv::new(),
        table: format!("never-created-{}", uuid_like()),
        endpoint,
    };
    let out = d.run(&["run", "--key", "k", "--", "true"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        text(&out.stderr).contains("batchlock init"),
        "{}",
        text(&out.stderr)
    );
    let doc = d.run(&["doctor"]);
    assert_eq!(doc.status.code(), Some(69));
    let bad = d
        .cmd()
        .env("BATCH_LOCK_TABLE", "bad table!")
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(
        text(&bad.stderr).contains("invalid"),
        "{}",
        text(&bad.stderr)
    );
}
