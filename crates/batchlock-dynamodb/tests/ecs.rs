//! Holder details from a fake ECS task metadata endpoint on 127.0.0.1.
//!
//! The fake is a few lines of `std::net`: it answers each request with a canned response, like
//! the ECS agent does for `GET ${ECS_CONTAINER_METADATA_URI_V4}/task`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use batchlock_dynamodb::{
    ECS_METADATA_ENV, EcsMetadataError, ecs_holder, ecs_holder_details, ecs_holder_details_from,
};

/// An abridged real task metadata document (v4, Fargate).
const TASK_JSON: &str = r#"{
  "Cluster": "arn:aws:ecs:ap-northeast-1:123456789012:cluster/batch",
  "TaskARN": "arn:aws:ecs:ap-northeast-1:123456789012:task/batch/0123456789abcdef0123456789abcdef",
  "Family": "xml-articles",
  "Revision": "7",
  "DesiredStatus": "RUNNING",
  "KnownStatus": "RUNNING",
  "LaunchType": "FARGATE",
  "AvailabilityZone": "ap-northeast-1a",
  "Containers": [{"Name": "job", "DockerId": "abc"}]
}"#;

/// Serves `status` + `body` to every request until `requests` were answered; returns the base
/// URI (like the value of `ECS_CONTAINER_METADATA_URI_V4`) and the paths requested.
fn serve(
    status: &'static str,
    body: &'static str,
    requests: usize,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v4/abc-123", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut paths = Vec::new();
        for _ in 0..requests {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            let head = String::from_utf8_lossy(&buf[..n]);
            paths.push(head.split_whitespace().nth(1).unwrap_or("").to_owned());
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(response.as_bytes()).unwrap();
        }
        paths
    });
    (base, handle)
}

#[tokio::test]
async fn details_come_from_the_task_endpoint() {
    let (base, server) = serve("200 OK", TASK_JSON, 1);
    let details = ecs_holder_details_from(&base, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(
        details["task_arn"],
        "arn:aws:ecs:ap-northeast-1:123456789012:task/batch/0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        details["cluster"],
        "arn:aws:ecs:ap-northeast-1:123456789012:cluster/batch"
    );
    assert_eq!(details["family"], "xml-articles");
    assert_eq!(details["revision"], "7");
    assert_eq!(details.len(), 4);
    assert_eq!(server.join().unwrap(), ["/v4/abc-123/task"]);
}

#[tokio::test]
async fn env_var_selects_the_endpoint() {
    let (base, server) = serve("200 OK", TASK_JSON, 1);
    // SAFETY: this is the only test in this binary that reads or writes the environment (the
    // others pass the URI directly, and the HTTP client is built without proxy detection), so
    // no other thread reads the environment while it changes.
    unsafe { std::env::set_var(ECS_METADATA_ENV, &base) };
    let details = ecs_holder_details().await.unwrap();
    assert_eq!(details["family"], "xml-articles");
    server.join().unwrap();

    let (base, server) = serve("200 OK", TASK_JSON, 1);
    unsafe { std::env::set_var(ECS_METADATA_ENV, &base) };
    let holder = ecs_holder().await;
    assert_eq!(holder.pid, std::process::id());
    assert_eq!(
        holder.details["cluster"],
        "arn:aws:ecs:ap-northeast-1:123456789012:cluster/batch"
    );
    server.join().unwrap();

    // The endpoint is gone: the holder is still returned, without details.
    unsafe { std::env::set_var(ECS_METADATA_ENV, &base) };
    assert!(ecs_holder().await.details.is_empty());
    unsafe { std::env::remove_var(ECS_METADATA_ENV) };
    assert!(
        ecs_holder_details().await.unwrap().is_empty(),
        "not on ECS: no details, no error"
    );
}

#[tokio::test]
async fn error_status_and_bad_json_are_errors() {
    let (base, server) = serve("500 Internal Server Error", "{}", 1);
    let err = ecs_holder_details_from(&base, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EcsMetadataError::Status { status: 500, .. }),
        "{err}"
    );
    server.join().unwrap();

    let (base, server) = serve("200 OK", "not json", 1);
    let err = ecs_holder_details_from(&base, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(err, EcsMetadataError::Json { .. }), "{err}");
    assert!(err.to_string().contains("/task"), "{err}");
    server.join().unwrap();
}

#[tokio::test]
async fn a_silent_endpoint_times_out_quickly() {
    // Accepts the connection, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(conn);
    });
    let started = Instant::now();
    let err = ecs_holder_details_from(&base, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, EcsMetadataError::Request { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    server.join().unwrap();
}
