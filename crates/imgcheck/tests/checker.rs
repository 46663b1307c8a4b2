//! The library against the misbehaving server: one behaviour pinned per test.

use std::time::Duration;

use imgcheck::{Checker, Class, Record, ResultCache, RunOptions, RunReport, Url, UrlOutcome};

use crate::support::{self, Server};

/// Short timeouts and waits, so failures come quickly; generous enough for a loaded machine.
fn checker() -> Checker {
    Checker::builder()
        .concurrency(16)
        .per_host(4)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(2))
        .max_retries(2)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .max_retry_after(Duration::from_secs(2))
        .max_redirects(5)
        .build()
        .unwrap()
}

async fn check(server: &Server, path: &str) -> UrlOutcome {
    checker()
        .check_url(&Url::parse(&server.url(path)).unwrap())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_image_needs_one_head() {
    let server = Server::start().await;
    let o = check(&server, "/ok.png").await;
    assert_eq!((o.class, o.status, o.attempts), (Class::Ok, Some(200), 1));
    let hits = server.hits("/ok.png");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].method, "HEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_404_and_410_are_not_retried() {
    let server = Server::start().await;
    let o = check(&server, "/missing.png").await;
    assert_eq!(
        (o.class, o.status, o.attempts),
        (Class::NotFound, Some(404), 1)
    );
    let o = check(&server, "/gone.png").await;
    assert_eq!((o.class, o.status), (Class::NotFound, Some(410)));
    // HEAD, then GET in case the server only rejects HEAD; no retries.
    assert_eq!(server.count("/missing.png"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_another_http_status() {
    let server = Server::start().await;
    let o = check(&server, "/forbidden.png").await;
    assert_eq!(
        (o.class, o.status, o.attempts),
        (Class::HttpStatus, Some(403), 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_then_ok_on_retry() {
    let server = Server::start().await;
    let o = check(&server, "/flaky.png").await;
    assert_eq!((o.class, o.attempts), (Class::Ok, 2));
    // HEAD 500, GET 500, then the retry goes straight to GET: HEAD was rejected.
    let methods: Vec<String> = server
        .hits("/flaky.png")
        .into_iter()
        .map(|s| s.method)
        .collect();
    assert_eq!(methods, ["HEAD", "GET", "GET"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_error_stops_after_max_retries() {
    let server = Server::start().await;
    let o = check(&server, "/always500.png").await;
    assert_eq!(
        (o.class, o.status, o.attempts),
        (Class::HttpStatus, Some(500), 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let server = Server::start().await;
    let o = check(&server, "/limited.png").await;
    assert_eq!((o.class, o.attempts), (Class::Ok, 2));
    let hits = server.hits("/limited.png");
    assert_eq!(
        hits[0].method, "HEAD",
        "429 on HEAD backs off instead of trying GET"
    );
    // A correctness bound, not a speed claim: the server asked for one second.
    let waited = hits[1].at - hits[0].at;
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_rejected_with_405_falls_back_to_ranged_get() {
    let server = Server::start().await;
    let o = check(&server, "/head405.png").await;
    assert_eq!((o.class, o.status), (Class::Ok, Some(206)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_dropped_connection_falls_back_to_get() {
    let server = Server::start().await;
    let o = check(&server, "/headdrop.png").await;
    assert_eq!((o.class, o.status), (Class::Ok, Some(206)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_range_with_huge_body_is_cut_off() {
    let server = Server::start().await;
    let started = std::time::Instant::now();
    let o = check(&server, "/huge.jpg").await;
    assert_eq!((o.class, o.status), (Class::Ok, Some(200)), "{o:?}");
    // No-hang bound: 10x the request timeout.
    assert!(started.elapsed() < Duration::from_secs(20));
    // The server's writes stop once the socket buffers are full: what it got rid of is the
    // cap (64 KiB) plus what the kernel buffers, nowhere near the 1 GiB it offered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = server.huge_bytes_sent();
    assert!(sent < 32 << 20, "the server sent {sent} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_at_an_image_url_is_not_an_image() {
    let server = Server::start().await;
    let o = check(&server, "/html.png").await;
    assert_eq!((o.class, o.status), (Class::NotImage, Some(200)));
    assert!(o.detail.unwrap().contains("text/html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_content_type_with_png_bytes_is_an_image() {
    let server = Server::start().await;
    let o = check(&server, "/notype.png").await;
    assert_eq!((o.class, o.status), (Class::Ok, Some(206)));
    let methods: Vec<String> = server
        .hits("/notype.png")
        .into_iter()
        .map(|s| s.method)
        .collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_content_type_with_text_bytes_is_not_an_image() {
    let server = Server::start().await;
    let o = check(&server, "/octet.png").await;
    assert_eq!(o.class, Class::NotImage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_chain_is_followed_to_its_end() {
    let server = Server::start().await;
    let o = check(&server, "/chain/3").await;
    assert_eq!(o.class, Class::Ok);
    assert_eq!(o.final_url.as_deref(), Some(server.url("/ok.png").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_redirect_chain_is_too_many_redirects() {
    let server = Server::start().await;
    let o = check(&server, "/chain/20").await;
    assert_eq!(o.class, Class::TooManyRedirects);
    // Limit 5: the first request plus five redirects followed, HEAD only.
    assert_eq!(server.count("/chain/20"), 1);
    assert_eq!(server.count("/chain/15"), 1);
    assert_eq!(server.count("/chain/14"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loop_is_detected() {
    let server = Server::start().await;
    let o = check(&server, "/loop/a").await;
    assert_eq!((o.class, o.status), (Class::RedirectLoop, Some(302)));
    assert_eq!(server.count("/loop/a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_that_never_answers_times_out() {
    let server = Server::start().await;
    let checker = Checker::builder()
        .request_timeout(Duration::from_millis(500))
        .max_retries(1)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let o = checker
        .check_url(&Url::parse(&server.url("/hang.png")).unwrap())
        .await;
    assert_eq!((o.class, o.attempts), (Class::Timeout, 2));
    // A timeout does not also try GET: only HEAD, twice.
    assert_eq!(server.count("/hang.png"), 2);
    assert!(started.elapsed() < Duration::from_secs(10), "no-hang bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_covers_all_hops_of_an_attempt() {
    let server = Server::start().await;
    // Every hop answers in 600 ms, under the 1 s timeout; five hops take 3 s in all.
    let timeout = Duration::from_secs(1);
    assert!(support::SLOW_HOP < timeout);
    let checker = Checker::builder()
        .request_timeout(timeout)
        .max_retries(1)
        .backoff(Duration::from_millis(10), Duration::from_millis(10))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let o = checker
        .check_url(&Url::parse(&server.url("/slowchain/4")).unwrap())
        .await;
    let elapsed = started.elapsed();
    assert_eq!((o.class, o.attempts), (Class::Timeout, 2), "{o:?}");
    // Two attempts of one timeout each, not hops x timeout; generous for a loaded machine.
    assert!(
        elapsed < timeout * 2 + Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert_eq!(
        server.count("/slowchain/1"),
        0,
        "the chain was never finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_listener_times_out() {
    let addr = support::silent_listener().await;
    let checker = Checker::builder()
        .request_timeout(Duration::from_millis(500))
        .max_retries(0)
        .build()
        .unwrap();
    let o = checker
        .check_url(&Url::parse(&format!("http://{addr}/x.png")).unwrap())
        .await;
    assert_eq!(o.class, Class::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_per_second_times_out() {
    let server = Server::start().await;
    let checker = Checker::builder()
        .request_timeout(Duration::from_secs(2))
        .max_retries(0)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let o = checker
        .check_url(&Url::parse(&server.url("/drip.png")).unwrap())
        .await;
    assert_eq!(o.class, Class::Timeout);
    assert!(started.elapsed() < Duration::from_secs(20), "no-hang bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_host_is_a_dns_error() {
    let o = checker()
        .check_url(&Url::parse("http://imgcheck-test.invalid/x.png").unwrap())
        .await;
    assert_eq!((o.class, o.attempts), (Class::Dns, 1), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_a_connect_error() {
    let port = support::closed_port().await;
    let o = checker()
        .check_url(&Url::parse(&format!("http://127.0.0.1:{port}/x.png")).unwrap())
        .await;
    assert_eq!((o.class, o.attempts), (Class::Connect, 1), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_in_the_url_do_not_change_the_class() {
    let port = support::closed_port().await;
    for path in [
        "/tls/a.png",
        "/dns error/tls handshake/certificate.png",
        "/x.png?q=TLS+certificate+dns+error+timed+out",
    ] {
        let o = checker()
            .check_url(&Url::parse(&format!("http://127.0.0.1:{port}{path}")).unwrap())
            .await;
        assert_eq!((o.class, o.attempts), (Class::Connect, 1), "{o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_https_url_is_a_tls_error() {
    let addr = support::plaintext_listener().await;
    let o = checker()
        .check_url(&Url::parse(&format!("https://{addr}/x.png")).unwrap())
        .await;
    assert_eq!(o.class, Class::Tls, "{o:?}");
}

async fn run(records: Vec<Record>, cache: Option<&mut ResultCache>) -> RunReport {
    imgcheck::run(&checker(), records, &RunOptions::default(), cache, &mut ())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_urls_are_requested_once_and_reported_per_record() {
    let server = Server::start().await;
    let mut records: Vec<Record> = (0..50)
        .map(|i| Record::new(format!("ok-{i}"), server.url("/dup.png")))
        .collect();
    records.extend((0..5).map(|i| Record::new(format!("bad-{i}"), server.url("/missing.png"))));
    records.push(Record::new("fragment", server.url("/dup.png#top")));
    records.push(Record::new("junk", "not a url"));
    records.push(Record::new("ftp", "ftp://example.com/x.png"));
    let report = run(records, None).await;
    assert_eq!(server.count("/dup.png"), 1);
    assert_eq!(
        server.count("/missing.png"),
        2,
        "HEAD and GET, once for five records"
    );
    let s = &report.summary;
    assert_eq!((s.records, s.distinct_urls, s.checked, s.ok), (58, 4, 2, 1));
    assert_eq!(s.broken_records, 7);
    assert_eq!(s.broken.get(&Class::NotFound), Some(&1));
    assert_eq!(s.broken.get(&Class::InvalidUrl), Some(&2));
    let broken: Vec<&str> = report.broken().map(|r| r.record.id.as_str()).collect();
    assert_eq!(
        broken,
        ["bad-0", "bad-1", "bad-2", "bad-3", "bad-4", "junk", "ftp"]
    );
    assert_eq!(s.exit_code(), imgcheck::EXIT_BROKEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_skips_recent_ok_and_rechecks_failures() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cache = ResultCache::open(dir.path().join("cache.db")).unwrap();
    let records = vec![
        Record::new("1", server.url("/cached.png")),
        Record::new("2", server.url("/missing.png")),
    ];
    let first = run(records.clone(), Some(&mut cache)).await;
    assert_eq!(first.summary.skipped_from_cache, 0);
    let second = run(records, Some(&mut cache)).await;
    assert_eq!(
        server.count("/cached.png"),
        1,
        "the OK URL is skipped the second time"
    );
    assert_eq!(
        server.count("/missing.png"),
        4,
        "the failure is checked again"
    );
    assert_eq!(second.summary.skipped_from_cache, 1);
    assert_eq!(second.summary.checked, 1);
    assert!(second.results[0].outcome.from_cache);
    assert_eq!(second.results[1].outcome.class, Class::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_cache_write_is_a_warning_not_an_error() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    support::unwritable_cache(&path);
    let mut cache = ResultCache::open(&path).unwrap();
    let records = vec![
        Record::new("1", server.url("/ok.png")),
        Record::new("2", server.url("/missing.png")),
    ];
    let report = run(records, Some(&mut cache)).await;
    let s = &report.summary;
    assert_eq!((s.checked, s.ok, s.broken_records), (2, 1, 1));
    assert_eq!(s.exit_code(), imgcheck::EXIT_BROKEN);
    let warning = s.cache_warning.as_deref().expect("a cache warning");
    assert!(warning.contains("disk says no"), "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_runtime_stops_the_run_and_reports_unchecked() {
    let server = Server::start().await;
    let checker = Checker::builder()
        .concurrency(2)
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut records = vec![Record::new("ok", server.url("/ok.png"))];
    records.extend(
        (0..10).map(|i| Record::new(format!("h{i}"), server.url(&format!("/hang.png?{i}")))),
    );
    let options = RunOptions {
        max_runtime: Some(Duration::from_secs(1)),
        ..RunOptions::default()
    };
    let started = std::time::Instant::now();
    let report = imgcheck::run(&checker, records, &options, None, &mut ())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "no-hang bound");
    let s = &report.summary;
    assert!(s.deadline_reached);
    assert_eq!((s.ok, s.unchecked), (1, 10));
    assert_eq!(s.exit_code(), imgcheck::EXIT_DEADLINE);
    assert!(
        report.results[1..]
            .iter()
            .all(|r| r.outcome.class == Class::Unchecked)
    );
}
