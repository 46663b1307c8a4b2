//! A small HTTP/1.1 server on 127.0.0.1 whose routes misbehave on purpose, one way each.
//!
//! Written on a bare `TcpListener` so that each misbehaviour (never answering, dripping,
//! dropping the connection, ignoring `Range`) is exactly what the test says, with no framework
//! in between that would "helpfully" fix it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The first bytes of a PNG, plus a little more so a `Range: bytes=0-15` is meaningful.
pub const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

/// How long each hop of `/slowchain/N` takes to answer.
pub const SLOW_HOP: Duration = Duration::from_millis(600);

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub at: Instant,
}

/// A running misbehaving server.
#[derive(Clone)]
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Body bytes of `/huge.jpg` that the client accepted before it hung up.
    huge_sent: Arc<AtomicUsize>,
}

impl Server {
    /// Starts the server on 127.0.0.1 with an OS-chosen port.
    pub async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server {
            addr,
            seen: Arc::default(),
            huge_sent: Arc::default(),
        };
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move { s.serve(stream).await });
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests seen for `path` (any method).
    pub fn hits(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    pub fn huge_bytes_sent(&self) -> usize {
        self.huge_sent.load(Ordering::SeqCst)
    }

    pub fn count(&self, path: &str) -> usize {
        self.hits(path).len()
    }

    async fn serve(&self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some((method, path, range)) = read_head(&mut stream, &mut buf).await else {
                return;
            };
            let n = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(Seen {
                    method: method.clone(),
                    path: path.clone(),
                    at: Instant::now(),
                });
                seen.iter().filter(|s| s.path == path).count()
            };
            let head = method == "HEAD";
            let route = path.split('?').next().unwrap_or("").to_string();
            let keep = self
                .respond(&mut stream, &method, &route, range, n, head)
                .await;
            if !keep {
                return;
            }
        }
    }

    /// Answers one request; false closes the connection.
    async fn respond(
        &self,
        stream: &mut TcpStream,
        method: &str,
        path: &str,
        range: bool,
        nth: usize,
        head: bool,
    ) -> bool {
        match path {
            "/ok.png" | "/dup.png" | "/cached.png" => png_ok(stream, range, head).await,
            "/missing.png" => {
                write_response(
                    stream,
                    "404 Not Found",
                    &[("Content-Type", "text/html")],
                    b"<html>gone</html>".to_vec(),
                    head,
                )
                .await
            }
            "/gone.png" => write_response(stream, "410 Gone", &[], Vec::new(), head).await,
            "/forbidden.png" => {
                write_response(stream, "403 Forbidden", &[], Vec::new(), head).await
            }
            "/flaky.png" if nth <= 2 => {
                write_response(stream, "500 Internal Server Error", &[], Vec::new(), head).await
            }
            "/flaky.png" => png_ok(stream, range, head).await,
            "/always500.png" => {
                write_response(stream, "500 Internal Server Error", &[], Vec::new(), head).await
            }
            "/limited.png" if nth == 1 => {
                write_response(
                    stream,
                    "429 Too Many Requests",
                    &[("Retry-After", "1")],
                    Vec::new(),
                    head,
                )
                .await
            }
            "/limited.png" => png_ok(stream, range, head).await,
            "/head405.png" if method == "HEAD" => {
                write_response(stream, "405 Method Not Allowed", &[], Vec::new(), head).await
            }
            "/head405.png" => png_ok(stream, range, head).await,
            // Drops the connection without a word.
            "/headdrop.png" if method == "HEAD" => false,
            "/headdrop.png" => png_ok(stream, range, head).await,
            "/html.png" => {
                write_response(
                    stream,
                    "200 OK",
                    &[("Content-Type", "text/html; charset=utf-8")],
                    b"<!DOCTYPE html><html>oops</html>".to_vec(),
                    head,
                )
                .await
            }
            "/notype.png" => {
                let body = if range {
                    PNG[..16].to_vec()
                } else {
                    PNG.to_vec()
                };
                let status = if range {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                write_response(stream, status, &[], body, head).await
            }
            "/octet.png" => {
                write_response(
                    stream,
                    "200 OK",
                    &[("Content-Type", "application/octet-stream")],
                    b"this is just some text".to_vec(),
                    head,
                )
                .await
            }
            // Ignores Range and claims a 1 GiB JPEG, then streams it for as long as we read.
            "/huge.jpg" => {
                let headers = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1073741824\r\n\r\n";
                if stream.write_all(headers.as_bytes()).await.is_err() || head {
                    return !head;
                }
                let mut chunk = vec![0u8; 64 * 1024];
                chunk[..4].copy_from_slice(b"\xff\xd8\xff\xe0");
                let mut sent = 0usize;
                while sent < 1 << 30 {
                    if stream.write_all(&chunk).await.is_err() {
                        return false;
                    }
                    chunk[..4].fill(0);
                    sent += chunk.len();
                    self.huge_sent.fetch_add(chunk.len(), Ordering::SeqCst);
                }
                false
            }
            "/loop/a" => redirect(stream, "/loop/b", head).await,
            "/loop/b" => redirect(stream, "/loop/a", head).await,
            "/hang.png" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                false
            }
            "/drip.png" => {
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
                    PNG.len()
                );
                for byte in response.as_bytes().iter().chain(PNG) {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                false
            }
            p if p.starts_with("/slowchain/") => {
                // Like /chain/N, but every hop takes SLOW_HOP to answer.
                tokio::time::sleep(SLOW_HOP).await;
                let n: u32 = p["/slowchain/".len()..].parse().unwrap_or(0);
                let next = if n == 0 {
                    "/ok.png".to_string()
                } else {
                    format!("/slowchain/{}", n - 1)
                };
                redirect(stream, &next, head).await
            }
            p if p.starts_with("/chain/") => {
                // /chain/N redirects to /chain/N-1; /chain/0 to the image.
                let n: u32 = p["/chain/".len()..].parse().unwrap_or(0);
                let next = if n == 0 {
                    "/ok.png".to_string()
                } else {
                    format!("/chain/{}", n - 1)
                };
                redirect(stream, &next, head).await
            }
            _ => write_response(stream, "404 Not Found", &[], Vec::new(), head).await,
        }
    }
}

async fn png_ok(stream: &mut TcpStream, range: bool, head: bool) -> bool {
    let body: Vec<u8> = if range {
        PNG[..16].to_vec()
    } else {
        PNG.to_vec()
    };
    let status = if range {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write_response(stream, status, &[("Content-Type", "image/png")], body, head).await
}

async fn redirect(stream: &mut TcpStream, to: &str, head: bool) -> bool {
    write_response(stream, "302 Found", &[("Location", to)], Vec::new(), head).await
}

async fn write_response(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    head: bool,
) -> bool {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(&body);
    }
    stream.write_all(&bytes).await.is_ok()
}

/// Reads one request head; returns (method, path, has Range).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, String, bool)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            let mut lines = head.lines();
            let mut first = lines.next()?.split_whitespace();
            let method = first.next()?.to_string();
            let path = first.next()?.to_string();
            let range = lines.any(|l| l.to_ascii_lowercase().starts_with("range:"));
            return Some((method, path, range));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A result cache at `path` that opens and reads fine but refuses every write: triggers abort
/// each insert and delete. Works as root, unlike a read-only file or directory.
pub fn unwritable_cache(path: &std::path::Path) {
    drop(imgcheck::ResultCache::open(path).unwrap());
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER no_insert BEFORE INSERT ON url_ok BEGIN SELECT RAISE(ABORT, 'disk says no'); END;
         CREATE TRIGGER no_delete BEFORE DELETE ON url_ok BEGIN SELECT RAISE(ABORT, 'disk says no'); END;",
    )
    .unwrap();
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// A listener that accepts connections and never reads or writes a byte.
pub async fn silent_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A listener that answers anything with plain-text HTTP and closes: TLS clients choke on it.
pub async fn plaintext_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    addr
}
