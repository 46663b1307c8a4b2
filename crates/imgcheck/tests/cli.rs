//! The real `imgcheck` binary: exit codes, output formats, input formats.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Server;

/// Runs the binary off the async runtime (the test server lives on it) and returns its output.
async fn imgcheck(args: Vec<String>, stdin: Option<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgcheck"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            std::io::Write::write_all(&mut input, text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--timeout",
        "2s",
        "--backoff",
        "50ms",
        "--max-backoff",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(list.iter().map(|s| s.to_string()));
    v
}

fn jsonl(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_ok_exits_0_with_no_output() {
    let server = Server::start().await;
    let out = imgcheck(
        args(&[]),
        Some(format!(
            "{}\n{}\n",
            server.url("/ok.png"),
            server.url("/chain/1")
        )),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 checked, 2 ok"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_records_exit_2_one_jsonl_line_per_record() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        &dir.path().join("articles.csv"),
        &format!(
            "id,url\n1,{ok}\n2,{missing}\n3,{missing}\n4,{html}\n5,not a url\n",
            ok = server.url("/ok.png"),
            missing = server.url("/missing.png"),
            html = server.url("/html.png"),
        ),
    );
    let out = imgcheck(args(&[&input]), None).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = jsonl(&out);
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["id"].as_str().unwrap(), l["class"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("2", "not_found"),
            ("3", "not_found"),
            ("4", "not_image"),
            ("5", "invalid_url")
        ]
    );
    assert_eq!(lines[0]["status"], 404);
    assert_eq!(lines[0]["attempts"], 1);
    assert!(lines[0]["elapsed_ms"].is_u64());
    assert_eq!(lines[0]["final_url"], server.url("/missing.png"));
    assert_eq!(
        server.count("/missing.png"),
        2,
        "one URL, two records, one check"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not_found=1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_output_and_custom_columns() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        &dir.path().join("in.data"),
        &format!("article,image\na1,{}\n", server.url("/gone.png")),
    );
    let out = imgcheck(
        args(&[
            &input,
            "--input-format",
            "csv",
            "--id-column",
            "article",
            "--url-column",
            "image",
            "--format",
            "csv",
        ]),
        None,
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("id,url,class,status,final_url,attempts,elapsed_ms,detail")
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&format!("a1,{},not_found,410,", server.url("/gone.png"))),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_input_from_stdin() {
    let server = Server::start().await;
    let input = format!(
        "{{\"id\": 17, \"url\": \"{}\"}}\n{{\"id\": 18, \"url\": \"{}\"}}\n",
        server.url("/ok.png"),
        server.url("/forbidden.png")
    );
    let out = imgcheck(args(&["-"]), Some(input)).await;
    assert_eq!(out.status.code(), Some(2));
    let lines = jsonl(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "18");
    assert_eq!(lines[0]["class"], "http_status");
    assert_eq!(lines[0]["status"], 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_errors_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let out = imgcheck(args(&[missing.to_str().unwrap()]), None).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.csv"));

    let bad = write(&dir.path().join("bad.csv"), "id,image\n1,http://x/y.png\n");
    let out = imgcheck(args(&[&bad]), None).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url-column"));

    let out = imgcheck(args(&["--concurrency", "0"]), Some(String::new())).await;
    assert_eq!(out.status.code(), Some(3));
    let out = imgcheck(args(&["--no-such-flag"]), None).await;
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_documents_exit_codes() {
    let out = imgcheck(vec!["--help".into()], None).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes",
        "2  broken",
        "3  configuration",
        "4  --max-runtime",
        "one attempt at a URL, all hops together",
    ] {
        assert!(help.contains(needle), "{needle} missing from --help");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runtime_exits_4_and_reports_unchecked() {
    let server = Server::start().await;
    let input: String = (0..5)
        .map(|i| format!("{}\n", server.url(&format!("/hang.png?{i}"))))
        .collect();
    let started = Instant::now();
    let out = imgcheck(
        vec![
            "--timeout".into(),
            "60s".into(),
            "--max-runtime".into(),
            "1s".into(),
        ],
        Some(input),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(15), "no-hang bound");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = jsonl(&out);
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["class"] == "unchecked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_file_skips_ok_urls_on_the_next_run() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.db");
    let input = format!(
        "{}\n{}\n",
        server.url("/cached.png"),
        server.url("/missing.png")
    );
    let cache_args = args(&["--cache", cache.to_str().unwrap()]);
    let first = imgcheck(cache_args.clone(), Some(input.clone())).await;
    assert_eq!(first.status.code(), Some(2));
    let second = imgcheck(cache_args, Some(input)).await;
    assert_eq!(second.status.code(), Some(2));
    assert_eq!(server.count("/cached.png"), 1);
    assert_eq!(server.count("/missing.png"), 4);
    assert!(String::from_utf8_lossy(&second.stderr).contains("1 skipped from cache"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_cache_write_still_writes_the_broken_records() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.db");
    crate::support::unwritable_cache(&cache);
    let input = format!(
        "{}\n{}\n",
        server.url("/ok.png"),
        server.url("/missing.png")
    );
    let out = imgcheck(args(&["--cache", cache.to_str().unwrap()]), Some(input)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines = jsonl(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["class"], "not_found");
    assert!(stderr.contains("2 checked, 1 ok"), "{stderr}");
    assert!(
        stderr.contains("warning: the result cache was not updated"),
        "{stderr}"
    );
}
