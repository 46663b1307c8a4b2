//! When to try again, and how long to wait first.
//!
//! Only failures that may go away by themselves are retried: timeouts, 5xx and 429. Retrying a
//! 404 or a DNS failure within the same minute only adds load to a server that already
//! answered. Waits grow exponentially up to a cap and carry jitter, so that thousands of URLs
//! that failed together on one host do not come back together.

use std::time::{Duration, SystemTime};

use crate::outcome::Class;

/// True when a failure with this class and status may succeed on a later attempt.
pub(crate) fn is_transient(class: Class, status: Option<u16>) -> bool {
    match class {
        Class::Timeout => true,
        Class::HttpStatus => matches!(status, Some(429) | Some(500..=599)),
        _ => false,
    }
}

/// The wait before retry number `retry` (1 for the first retry): `base * 2^(retry-1)`, capped
/// at `max`, then drawn uniformly from its upper half ("equal jitter"), so waits still grow
/// while retries of many URLs spread out.
pub(crate) fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let exp = retry.saturating_sub(1).min(30);
    let full = base.saturating_mul(1u32 << exp).min(max);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date. A date in the past means
/// "now". Returns `None` for anything else, and the caller falls back to its own backoff.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timeouts_5xx_and_429_are_transient() {
        assert!(is_transient(Class::Timeout, None));
        assert!(is_transient(Class::HttpStatus, Some(429)));
        assert!(is_transient(Class::HttpStatus, Some(503)));
        assert!(!is_transient(Class::HttpStatus, Some(403)));
        assert!(!is_transient(Class::NotFound, Some(404)));
        assert!(!is_transient(Class::Dns, None));
        assert!(!is_transient(Class::Connect, None));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..100 {
            let first = backoff(1, base, max);
            assert!(first >= Duration::from_millis(50) && first <= base);
            let late = backoff(20, base, max);
            assert!(late >= max / 2 && late <= max);
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
