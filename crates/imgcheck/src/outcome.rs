//! What checking one URL found out, in a form a batch can act on.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The verdict for one URL.
///
/// Every failure gets its own class because the fix differs: a `not_found` image must be
/// replaced in the article, a `timeout` or `dns` failure may be the network's fault and is
/// worth another look tomorrow, a `not_image` URL points at an error page that answers 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Class {
    /// The final answer was 2xx (206 included) and the body is an image.
    Ok,
    /// 404 or 410: the image is gone.
    NotFound,
    /// Any other unsuccessful HTTP status (403, 429 after all retries, 5xx, ...).
    ///
    /// S3 answers 403, not 404, for a missing key when the caller may not list the bucket:
    /// look at `status` before concluding the image exists.
    HttpStatus,
    /// A successful answer whose content is not an image (an HTML error page, for example).
    NotImage,
    /// The host name could not be resolved.
    Dns,
    /// The TCP connection could not be established (refused, unreachable).
    Connect,
    /// The TLS handshake failed (bad certificate, not TLS at all, ...).
    Tls,
    /// Connecting or answering took longer than the configured timeouts.
    Timeout,
    /// More redirects than the configured limit.
    TooManyRedirects,
    /// A redirect led back to a URL already visited for this check.
    RedirectLoop,
    /// The connection broke or the server's answer was not valid HTTP.
    Protocol,
    /// The input did not hold a usable `http`/`https` URL.
    InvalidUrl,
    /// The run's deadline (`--max-runtime`) came before this URL was checked.
    Unchecked,
    /// The check itself failed unexpectedly (a bug: its task panicked), so nothing is known
    /// about the URL. The run's exit code is then [`crate::EXIT_ERROR`].
    InternalError,
}

impl Class {
    /// Every class, in report order.
    pub const ALL: [Class; 14] = [
        Class::Ok,
        Class::NotFound,
        Class::HttpStatus,
        Class::NotImage,
        Class::Dns,
        Class::Connect,
        Class::Tls,
        Class::Timeout,
        Class::TooManyRedirects,
        Class::RedirectLoop,
        Class::Protocol,
        Class::InvalidUrl,
        Class::Unchecked,
        Class::InternalError,
    ];

    /// The stable snake_case name used in output files and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::NotFound => "not_found",
            Class::HttpStatus => "http_status",
            Class::NotImage => "not_image",
            Class::Dns => "dns",
            Class::Connect => "connect",
            Class::Tls => "tls",
            Class::Timeout => "timeout",
            Class::TooManyRedirects => "too_many_redirects",
            Class::RedirectLoop => "redirect_loop",
            Class::Protocol => "protocol",
            Class::InvalidUrl => "invalid_url",
            Class::Unchecked => "unchecked",
            Class::InternalError => "internal_error",
        }
    }

    /// True only for [`Class::Ok`].
    pub fn is_ok(self) -> bool {
        self == Class::Ok
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of checking one distinct URL, shared by every record that carries the URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlOutcome {
    /// The URL as it was checked (normalised by the URL parser), or the raw input text when
    /// it did not parse.
    pub url: String,
    /// The verdict.
    pub class: Class,
    /// The last HTTP status seen, if any answer came back.
    pub status: Option<u16>,
    /// Where the redirects ended, if any answer came back.
    pub final_url: Option<String>,
    /// How many attempts were made (1 plus the retries); 0 when no request was sent.
    pub attempts: u32,
    /// Time spent on this URL, backoff waits included.
    #[serde(serialize_with = "serialize_millis")]
    pub elapsed: Duration,
    /// A short human explanation of a failure (the transport error, the content type, ...).
    pub detail: Option<String>,
    /// True when the verdict came from the result cache instead of a request.
    pub from_cache: bool,
}

impl UrlOutcome {
    /// An outcome decided without sending anything (invalid URL, deadline, cache).
    pub(crate) fn without_request(url: String, class: Class, detail: Option<String>) -> Self {
        UrlOutcome {
            url,
            class,
            status: None,
            final_url: None,
            attempts: 0,
            elapsed: Duration::ZERO,
            detail,
            from_cache: false,
        }
    }
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_stable_snake_case() {
        for class in Class::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
    }
}
