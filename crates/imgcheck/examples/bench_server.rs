//! Benchmark server for `bench/imgcheck.sh`: many image URLs over a few loopback ports.
//!
//! Serves, on each of `--hosts` ports of 127.0.0.1:
//! * `/img/N.png`: a small PNG (206 with 16 bytes when a `Range` is sent),
//! * `/missing/N.png`: 404,
//! * `/hang/N.png`: reads the request and never answers.
//!
//! It writes the inputs for one run into `--out-dir`: `records.csv` (id,url; 20% of the
//! records repeat an earlier URL), `urls.txt` (the same URLs, one per line, for lychee) and
//! `sample.csv` (the first `--sample` records, for the one-at-a-time baseline) and
//! `answering.csv`/`answering.txt` (the same without the URLs that never answer). It prints
//! `ready` when listening, counts requests (`GET /__stats` on any port), and exits by itself
//! after `--lifetime` seconds so a forgotten server never lingers.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\0\x05\0\x01\xff\x89\x99=\x1d\0\0\0\0IEND\xaeB`\x82";

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    head: AtomicU64,
    get: AtomicU64,
}

struct Config {
    hosts: usize,
    urls: usize,
    missing_pct: usize,
    hang_pct: usize,
    dup_pct: usize,
    sample: usize,
    out_dir: PathBuf,
    lifetime: u64,
}

fn parse_args() -> Config {
    let mut c = Config {
        hosts: 5,
        urls: 50_000,
        missing_pct: 5,
        hang_pct: 1,
        dup_pct: 20,
        sample: 1_000,
        out_dir: PathBuf::from("target/bench-imgcheck"),
        lifetime: 1800,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or("");
        let number = || value.parse::<usize>().expect("a number");
        match pair[0].as_str() {
            "--hosts" => c.hosts = number(),
            "--urls" => c.urls = number(),
            "--missing-pct" => c.missing_pct = number(),
            "--hang-pct" => c.hang_pct = number(),
            "--dup-pct" => c.dup_pct = number(),
            "--sample" => c.sample = number(),
            "--out-dir" => c.out_dir = PathBuf::from(value),
            "--lifetime" => c.lifetime = number() as u64,
            other => panic!("unknown flag {other}"),
        }
    }
    c
}

fn main() {
    let config = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(serve(config));
}

async fn serve(c: Config) {
    let stats = Arc::new(Stats::default());
    let mut ports = Vec::new();
    for _ in 0..c.hosts {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let stats = stats.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stats = stats.clone();
                tokio::spawn(connection(stream, stats));
            }
        });
    }
    write_inputs(&c, &ports).unwrap();
    println!("ready ports={ports:?} out_dir={}", c.out_dir.display());
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(Duration::from_secs(c.lifetime)).await;
}

/// The URL of distinct image number `i`: ~missing_pct% 404, ~hang_pct% never answer, spread
/// evenly over the ports (kind and port come from independent bits of one hash, so that the
/// URLs that never answer do not all land on one host).
fn url(c: &Config, ports: &[u16], i: usize) -> String {
    let h = splitmix64(i as u64);
    let bucket = (h % 100) as usize;
    let port = ports[((h >> 32) % ports.len() as u64) as usize];
    let kind = if bucket < c.missing_pct {
        "missing"
    } else if bucket < c.missing_pct + c.hang_pct {
        "hang"
    } else {
        "img"
    };
    format!("http://127.0.0.1:{port}/{kind}/{i}.png")
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn write_inputs(c: &Config, ports: &[u16]) -> std::io::Result<()> {
    std::fs::create_dir_all(&c.out_dir)?;
    let mut records = Vec::new();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let dups = c.urls * c.dup_pct / 100;
    let every = c.urls.checked_div(dups).unwrap_or(usize::MAX);
    for i in 0..c.urls {
        records.push(url(c, ports, i));
        if every != usize::MAX && (i + 1) % every == 0 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            records.push(url(c, ports, (rng as usize) % (i + 1)));
        }
    }
    let mut csv = std::io::BufWriter::new(std::fs::File::create(c.out_dir.join("records.csv"))?);
    let mut txt = std::io::BufWriter::new(std::fs::File::create(c.out_dir.join("urls.txt"))?);
    let mut sample = std::io::BufWriter::new(std::fs::File::create(c.out_dir.join("sample.csv"))?);
    let mut answering =
        std::io::BufWriter::new(std::fs::File::create(c.out_dir.join("answering.csv"))?);
    let mut answering_txt =
        std::io::BufWriter::new(std::fs::File::create(c.out_dir.join("answering.txt"))?);
    writeln!(csv, "id,url")?;
    writeln!(sample, "id,url")?;
    writeln!(answering, "id,url")?;
    for (n, u) in records.iter().enumerate() {
        writeln!(csv, "{n},{u}")?;
        writeln!(txt, "{u}")?;
        if n < c.sample {
            writeln!(sample, "{n},{u}")?;
        }
        if !u.contains("/hang/") {
            writeln!(answering, "{n},{u}")?;
            writeln!(answering_txt, "{u}")?;
        }
    }
    csv.flush()?;
    txt.flush()?;
    answering.flush()?;
    answering_txt.flush()?;
    sample.flush()
}

async fn connection(mut stream: TcpStream, stats: Arc<Stats>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut first = head.split_whitespace();
        let method = first.next().unwrap_or("");
        let path = first.next().unwrap_or("");
        let is_head = method == "HEAD";
        let range = head
            .lines()
            .any(|l| l.len() > 6 && l[..6].eq_ignore_ascii_case("range:"));
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if is_head {
            stats.head.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.get.fetch_add(1, Ordering::Relaxed);
        }
        let (status, ctype, body): (&str, &str, Vec<u8>) = if path.starts_with("/img/") {
            if range {
                ("206 Partial Content", "image/png", PNG[..16].to_vec())
            } else {
                ("200 OK", "image/png", PNG.to_vec())
            }
        } else if path.starts_with("/missing/") {
            ("404 Not Found", "text/plain", b"not found".to_vec())
        } else if path.starts_with("/hang/") {
            // Never answer; wait until the client gives up and closes.
            while let Ok(n) = stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
            return;
        } else if path == "/__stats" {
            let text = format!(
                "requests={} head={} get={}\n",
                stats.requests.load(Ordering::Relaxed),
                stats.head.load(Ordering::Relaxed),
                stats.get.load(Ordering::Relaxed)
            );
            ("200 OK", "text/plain", text.into_bytes())
        } else {
            ("404 Not Found", "text/plain", Vec::new())
        };
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !is_head {
            out.extend_from_slice(&body);
        }
        if stream.write_all(&out).await.is_err() || path == "/__stats" {
            return;
        }
    }
}
