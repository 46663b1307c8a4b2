//! Checking one URL: `HEAD`, then a small ranged `GET`, redirects, retries, timeouts.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, LOCATION, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::outcome::{Class, UrlOutcome};
use crate::resolve::{CachingResolver, ResolveError};
use crate::retry::{backoff, is_transient, parse_retry_after};
use crate::sniff::{SNIFF_LEN, content_type_essence, is_generic_content_type, looks_like_image};

/// URLs checked at the same time, over all hosts.
pub const DEFAULT_CONCURRENCY: usize = 128;
/// Requests in flight to one host (`host:port`) at a time: polite to a single origin server,
/// while many CDN hosts still fill the global limit.
pub const DEFAULT_PER_HOST: usize = 16;
/// Time allowed to establish a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for one attempt at a URL: DNS, connect, answer and body of the `HEAD`, the
/// `GET` fallback and every redirect, all together. Each retry gets a fresh allowance; waits
/// for a per-host slot and backoff waits between attempts do not count.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Retries after a transient failure (timeout, 5xx, 429); 2 means at most 3 attempts.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// First backoff wait; it doubles with each retry.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest backoff wait between two attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Longest wait a server may ask for with `Retry-After`; a longer request is cut to this.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Redirects followed before giving up with [`Class::TooManyRedirects`].
pub const DEFAULT_MAX_REDIRECTS: usize = 10;
/// Bytes of a `GET` body read at most. Small bodies (a server that honours `Range`, an error
/// page) are read to the end so the connection can be reused; a server that ignores `Range`
/// and streams a large file is cut off here and its connection dropped.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// The `User-Agent` sent with every request.
pub const DEFAULT_USER_AGENT: &str = concat!("imgcheck/", env!("CARGO_PKG_VERSION"));

/// How long an idle keep-alive connection is kept. Long enough for the next URL of a host in
/// a host-interleaved run, short enough that a run over thousands of hosts does not pile up
/// idle sockets (and file descriptors) for hosts it will not visit again.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `Accept` header of a browser loading an `<img>`.
const IMAGE_ACCEPT: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";

/// The `Range` asked for on `GET`: just enough bytes to recognise an image.
const SNIFF_RANGE: &str = "bytes=0-15";

/// A checker could not be built from the given settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A limit that must allow at least one request was set to zero.
    #[error("`{name}` must be at least 1, got 0: a zero limit would never check anything")]
    ZeroLimit {
        /// The setting's name.
        name: &'static str,
    },
    /// A timeout was set to zero.
    #[error("`{name}` must be longer than zero: every request would time out at once")]
    ZeroTimeout {
        /// The setting's name.
        name: &'static str,
    },
    /// The HTTP client could not be created (TLS set-up failed).
    #[error("cannot create the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Settings for a [`Checker`]; every field starts at its `DEFAULT_*` constant.
#[derive(Debug, Clone)]
pub struct CheckerBuilder {
    concurrency: usize,
    per_host: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    max_retry_after: Duration,
    max_redirects: usize,
    max_body_bytes: usize,
    user_agent: String,
}

impl Default for CheckerBuilder {
    fn default() -> Self {
        CheckerBuilder {
            concurrency: DEFAULT_CONCURRENCY,
            per_host: DEFAULT_PER_HOST,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            user_agent: DEFAULT_USER_AGENT.to_string(),
        }
    }
}

impl CheckerBuilder {
    /// Settings at their defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// URLs checked at once over all hosts ([`DEFAULT_CONCURRENCY`]).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Requests in flight to one `host:port` at once ([`DEFAULT_PER_HOST`]).
    pub fn per_host(mut self, n: usize) -> Self {
        self.per_host = n;
        self
    }

    /// TCP connect timeout ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time allowed for one attempt, all hops together: `HEAD`, the `GET` fallback and every
    /// redirect, DNS, connect and body reading included ([`DEFAULT_REQUEST_TIMEOUT`]). Waits for
    /// a per-host slot do not count; each retry gets a fresh allowance.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Retries after transient failures ([`DEFAULT_MAX_RETRIES`]).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// First backoff wait and the cap on any backoff wait.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Cap on a server's `Retry-After` ([`DEFAULT_MAX_RETRY_AFTER`]).
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Redirects followed at most ([`DEFAULT_MAX_REDIRECTS`]).
    pub fn max_redirects(mut self, n: usize) -> Self {
        self.max_redirects = n;
        self
    }

    /// Bytes of a `GET` body read at most ([`DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// The `User-Agent` header ([`DEFAULT_USER_AGENT`]).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// Checks the settings and creates the HTTP client.
    pub fn build(self) -> Result<Checker, BuildError> {
        for (name, value) in [
            ("concurrency", self.concurrency),
            ("per_host", self.per_host),
            ("max_body_bytes", self.max_body_bytes),
        ] {
            if value == 0 {
                return Err(BuildError::ZeroLimit { name });
            }
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(BuildError::ZeroTimeout { name });
            }
        }
        // Ask like a browser's <img> does: servers that negotiate formats then answer with
        // what an article page would really get.
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static(IMAGE_ACCEPT),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            // Redirects are followed by hand: each hop needs the per-host limit of its own
            // host, loops must be told apart from long chains, and the final URL is reported.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(self.connect_timeout)
            // No per-request `.timeout()`: one deadline per attempt covers all its hops.
            .pool_max_idle_per_host(self.per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(self.user_agent.clone())
            .dns_resolver(Arc::new(CachingResolver::default()))
            .tcp_nodelay(true)
            .build()
            .map_err(BuildError::Client)?;
        Ok(Checker {
            inner: Arc::new(Inner {
                client,
                config: self,
                hosts: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// Checks image URLs; cheap to clone, and clones share connections and per-host limits.
///
/// Build it with [`Checker::builder`]. [`Checker::check_url`] checks a single URL;
/// [`crate::run`] checks a whole batch of records with deduplication, the global concurrency
/// limit, a deadline and the result cache.
#[derive(Clone)]
pub struct Checker {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    config: CheckerBuilder,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A response worth judging (not a redirect).
struct Answer {
    status: StatusCode,
    content_type: String,
    final_url: Url,
    retry_after: Option<Duration>,
    prefix: Vec<u8>,
}

/// The verdict of one attempt.
struct Verdict {
    class: Class,
    status: Option<u16>,
    final_url: Option<Url>,
    detail: Option<String>,
    retry_after: Option<Duration>,
}

impl Verdict {
    fn failed(class: Class, final_url: &Url, detail: impl Into<String>) -> Self {
        Verdict {
            class,
            status: None,
            final_url: Some(final_url.clone()),
            detail: Some(detail.into()),
            retry_after: None,
        }
    }

    fn from_answer(a: &Answer, class: Class, detail: Option<String>) -> Self {
        Verdict {
            class,
            status: Some(a.status.as_u16()),
            final_url: Some(a.final_url.clone()),
            detail,
            retry_after: a.retry_after,
        }
    }
}

enum Hop {
    Redirect(StatusCode, String),
    Answer(Answer),
    Failed(Class, String),
}

impl Checker {
    /// Settings at their defaults; see [`CheckerBuilder`].
    pub fn builder() -> CheckerBuilder {
        CheckerBuilder::new()
    }

    /// The global concurrency limit this checker was built with.
    pub fn concurrency(&self) -> usize {
        self.inner.config.concurrency
    }

    /// Checks one URL, with retries, and returns its verdict. Never fails and never hangs:
    /// every attempt (all its hops) is bounded by the request timeout, every wait by the
    /// backoff caps.
    pub async fn check_url(&self, url: &Url) -> UrlOutcome {
        let started = Instant::now();
        let config = &self.inner.config;
        if let Err(reason) = check_scheme(url) {
            return UrlOutcome::without_request(url.to_string(), Class::InvalidUrl, Some(reason));
        }
        let mut skip_head = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let verdict = self.attempt(url, &mut skip_head).await;
            if !is_transient(verdict.class, verdict.status) || attempts > config.max_retries {
                return UrlOutcome {
                    url: url.to_string(),
                    class: verdict.class,
                    status: verdict.status,
                    final_url: verdict.final_url.map(String::from),
                    attempts,
                    elapsed: started.elapsed(),
                    detail: verdict.detail,
                    from_cache: false,
                };
            }
            let wait = match verdict.retry_after {
                Some(asked) => asked.min(config.max_retry_after),
                None => backoff(attempts, config.backoff_base, config.backoff_max),
            };
            tracing::debug!(%url, class = %verdict.class, ?wait, "transient failure, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: `HEAD`, and `GET` when `HEAD` was rejected or could not tell. Every hop
    /// of both shares one deadline, `request_timeout` from now (pushed back by the time spent
    /// waiting for per-host slots, which is our own politeness, not the server's slowness).
    async fn attempt(&self, url: &Url, skip_head: &mut bool) -> Verdict {
        let mut deadline = Instant::now() + self.inner.config.request_timeout;
        if !*skip_head {
            match self.fetch(url, Method::HEAD, &mut deadline).await {
                Ok(a) if a.status.is_success() => {
                    if a.content_type.starts_with("image/") {
                        return Verdict::from_answer(&a, Class::Ok, None);
                    }
                    if !is_generic_content_type(&a.content_type) {
                        return not_image(&a);
                    }
                    // No or a generic content type: only the first bytes can tell.
                }
                // Back off before asking again, rather than hitting a busy server with GET.
                Ok(a) if matches!(a.status.as_u16(), 429 | 503) => return judge_status(&a),
                Ok(_) => *skip_head = true,
                // A dropped connection is a common way to reject HEAD.
                Err(v) if v.class == Class::Protocol => *skip_head = true,
                // DNS, connect, TLS, timeouts and redirect trouble would hit GET alike; a
                // timeout in particular would double the time spent on a dead server.
                Err(v) => return v,
            }
        }
        match self.fetch(url, Method::GET, &mut deadline).await {
            Ok(a) if a.status.is_success() => {
                if a.content_type.starts_with("image/") {
                    Verdict::from_answer(&a, Class::Ok, None)
                } else if is_generic_content_type(&a.content_type) {
                    if looks_like_image(&a.prefix) {
                        Verdict::from_answer(&a, Class::Ok, None)
                    } else {
                        not_image(&a)
                    }
                } else {
                    not_image(&a)
                }
            }
            Ok(a) => judge_status(&a),
            Err(v) => v,
        }
    }

    /// Sends `method` to `start` and follows redirects, all before `deadline`.
    async fn fetch(
        &self,
        start: &Url,
        method: Method,
        deadline: &mut Instant,
    ) -> Result<Answer, Verdict> {
        let mut current = start.clone();
        let mut visited = HashSet::from([start.clone()]);
        let mut redirects = 0;
        loop {
            match self.hop(&current, &method, deadline).await {
                Hop::Answer(a) => return Ok(a),
                Hop::Failed(class, detail) => return Err(Verdict::failed(class, &current, detail)),
                Hop::Redirect(status, location) => {
                    let with_status = |mut v: Verdict| {
                        v.status = Some(status.as_u16());
                        v
                    };
                    let next = match current.join(&location) {
                        Ok(next) => next,
                        Err(e) => {
                            let detail = format!("bad Location `{location}`: {e}");
                            return Err(with_status(Verdict::failed(
                                Class::Protocol,
                                &current,
                                detail,
                            )));
                        }
                    };
                    if let Err(reason) = check_scheme(&next) {
                        let detail = format!("redirect to `{next}`: {reason}");
                        return Err(with_status(Verdict::failed(
                            Class::InvalidUrl,
                            &next,
                            detail,
                        )));
                    }
                    if !visited.insert(next.clone()) {
                        let detail = format!("redirect from `{current}` back to `{next}`");
                        return Err(with_status(Verdict::failed(
                            Class::RedirectLoop,
                            &next,
                            detail,
                        )));
                    }
                    redirects += 1;
                    if redirects > self.inner.config.max_redirects {
                        let detail =
                            format!("more than {} redirects", self.inner.config.max_redirects);
                        return Err(with_status(Verdict::failed(
                            Class::TooManyRedirects,
                            &next,
                            detail,
                        )));
                    }
                    current = next;
                }
            }
        }
    }

    /// One request to one URL, under its host's limit and before the attempt's `deadline`.
    /// The wait for the host's slot moves the deadline back by as long as it took.
    async fn hop(&self, url: &Url, method: &Method, deadline: &mut Instant) -> Hop {
        let config = &self.inner.config;
        let waiting = Instant::now();
        let _permit = self.host_permit(url).await;
        *deadline += waiting.elapsed();
        let is_get = method == Method::GET;
        let exchange = async {
            let mut request = self.inner.client.request(method.clone(), url.clone());
            if is_get {
                request = request.header(RANGE, SNIFF_RANGE);
            }
            let mut response = request.send().await.map_err(classify)?;
            let status = response.status();
            let header = |name: reqwest::header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                    .map(str::to_string)
            };
            let location = header(LOCATION);
            let content_type = content_type_essence(&header(CONTENT_TYPE).unwrap_or_default());
            let retry_after =
                header(RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()));
            let mut prefix = Vec::new();
            if is_get {
                let read = read_prefix(&mut response, config.max_body_bytes, &mut prefix).await;
                // Only a successful answer's bytes matter; an error page may break off.
                if let Err(e) = read {
                    if status.is_success() && prefix.len() < SNIFF_LEN {
                        return Err(classify(e));
                    }
                }
            }
            if status.is_redirection() {
                if let Some(location) = location {
                    return Ok(Hop::Redirect(status, location));
                }
            }
            Ok::<_, (Class, String)>(Hop::Answer(Answer {
                status,
                content_type,
                final_url: url.clone(),
                retry_after,
                prefix,
            }))
        };
        match tokio::time::timeout_at(*deadline, exchange).await {
            Ok(Ok(hop)) => hop,
            Ok(Err((class, detail))) => Hop::Failed(class, detail),
            Err(_) => Hop::Failed(
                Class::Timeout,
                format!(
                    "no complete answer within {} (one attempt, redirects and GET fallback included)",
                    humantime::format_duration(config.request_timeout)
                ),
            ),
        }
    }

    async fn host_permit(&self, url: &Url) -> Option<OwnedSemaphorePermit> {
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or(""),
            url.port_or_known_default().unwrap_or(0)
        );
        let semaphore = {
            let mut hosts = self.inner.hosts.lock().unwrap_or_else(|e| e.into_inner());
            hosts
                .entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.config.per_host)))
                .clone()
        };
        semaphore.acquire_owned().await.ok()
    }
}

/// Reads the body until it ends or `max` bytes were read, keeping the first [`SNIFF_LEN`].
async fn read_prefix(
    response: &mut reqwest::Response,
    max: usize,
    prefix: &mut Vec<u8>,
) -> Result<(), reqwest::Error> {
    let mut seen = 0;
    while let Some(chunk) = response.chunk().await? {
        let wanted = SNIFF_LEN.saturating_sub(prefix.len()).min(chunk.len());
        prefix.extend_from_slice(&chunk[..wanted]);
        seen += chunk.len();
        if seen >= max {
            break;
        }
    }
    Ok(())
}

fn check_scheme(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported scheme `{}`", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".to_string());
    }
    Ok(())
}

fn not_image(a: &Answer) -> Verdict {
    let detail = if a.content_type.is_empty() {
        "no Content-Type and the first bytes are not an image".to_string()
    } else if is_generic_content_type(&a.content_type) {
        format!(
            "Content-Type `{}` and the first bytes are not an image",
            a.content_type
        )
    } else {
        format!("Content-Type `{}`", a.content_type)
    };
    Verdict::from_answer(a, Class::NotImage, Some(detail))
}

fn judge_status(a: &Answer) -> Verdict {
    let class = match a.status.as_u16() {
        404 | 410 => Class::NotFound,
        _ => Class::HttpStatus,
    };
    Verdict::from_answer(a, class, Some(format!("HTTP {}", a.status)))
}

/// Maps a transport error to its class, by the types in its source chain, never by the
/// top-level message: that one names the URL, and a URL may contain any word.
///
/// Our resolver's [`ResolveError`] marks DNS failures, rustls' error type TLS failures (they
/// happen inside reqwest's connector, so they must be told apart before the generic connect
/// failures), `io::ErrorKind::TimedOut` or reqwest's own flag timeouts.
fn classify(err: reqwest::Error) -> (Class, String) {
    let detail = error_chain(&err);
    let class = if chain_has::<ResolveError>(&err) {
        Class::Dns
    } else if err.is_timeout() || chain_has_io_kind(&err, &[std::io::ErrorKind::TimedOut]) {
        Class::Timeout
    } else if chain_has::<rustls::Error>(&err) || sources_mention_tls(&err) {
        Class::Tls
    } else if err.is_connect()
        || chain_has_io_kind(
            &err,
            &[
                std::io::ErrorKind::ConnectionRefused,
                std::io::ErrorKind::HostUnreachable,
                std::io::ErrorKind::NetworkUnreachable,
                std::io::ErrorKind::AddrNotAvailable,
            ],
        )
    {
        Class::Connect
    } else {
        Class::Protocol
    };
    (class, detail)
}

/// The fallback for a TLS error that a layer in between turned into text: the messages of
/// the *sources* only (the top-level message names the URL), with the URL cut out anyway.
fn sources_mention_tls(err: &reqwest::Error) -> bool {
    let url = err.url().map(Url::as_str).unwrap_or("");
    let Some(source) = err.source() else {
        return false;
    };
    walk(source, &mut |e| {
        let mut text = e.to_string();
        if !url.is_empty() {
            text = text.replace(url, "");
        }
        let text = text.to_ascii_lowercase();
        text.contains("certificate") || text.contains("tls handshake")
    })
}

/// Walks the source chain, looking inside `io::Error`s too: their `source()` skips the error
/// they wrap, which is exactly where rustls puts its own.
fn walk(
    err: &(dyn StdError + 'static),
    visit: &mut dyn FnMut(&(dyn StdError + 'static)) -> bool,
) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if visit(e) {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if walk(inner, visit) {
                return true;
            }
        }
        current = e.source();
    }
    false
}

fn chain_has<T: StdError + 'static>(err: &reqwest::Error) -> bool {
    walk(err, &mut |e| e.is::<T>())
}

fn chain_has_io_kind(err: &reqwest::Error, kinds: &[std::io::ErrorKind]) -> bool {
    walk(err, &mut |e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| kinds.contains(&io.kind()))
    })
}

fn error_chain(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    walk(err, &mut |e| {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        false
    });
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused() {
        assert!(matches!(
            Checker::builder().concurrency(0).build(),
            Err(BuildError::ZeroLimit {
                name: "concurrency"
            })
        ));
        assert!(matches!(
            Checker::builder().request_timeout(Duration::ZERO).build(),
            Err(BuildError::ZeroTimeout { .. })
        ));
    }

    #[test]
    fn only_http_and_https_with_a_host() {
        assert!(check_scheme(&Url::parse("https://a.example/x.png").unwrap()).is_ok());
        assert!(check_scheme(&Url::parse("ftp://a.example/x.png").unwrap()).is_err());
        assert!(check_scheme(&Url::parse("data:image/png;base64,AAAA").unwrap()).is_err());
    }
}
