//! How to reach the table: name, region, endpoint, credentials and the time limits of every call.

use std::fmt;
use std::time::Duration;

/// The environment variable that names the table (read by [`DynamoConfig::from_env`]).
pub const TABLE_ENV: &str = "BATCH_LOCK_TABLE";

/// The region used when neither the config nor the AWS region chain (`AWS_REGION`, the
/// profile, instance metadata) names one.
pub const DEFAULT_REGION: &str = "ap-northeast-1";

/// How long to wait for a TCP + TLS connection. Short, because a supervisor must still have
/// time to retry (and, failing that, stop its job) before the lease it renews can lapse.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one HTTP attempt may take, from sending to the end of the response.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one store call may take in all, retries and credential loading included. Keep it
/// well below the renew interval: a renewal that hangs longer than the lease would otherwise
/// "succeed" after the lease has already been taken over.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts per call (the first try plus one retry). More attempts would not fit in
/// [`DEFAULT_OPERATION_TIMEOUT`]; the supervisor retries renewals itself within its deadline.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;

/// How long run history and idle lock items are kept before DynamoDB's TTL may delete them.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long [`crate::init_table`] waits for a new table to become `ACTIVE`.
pub(crate) const DEFAULT_INIT_WAIT: Duration = Duration::from_secs(120);

/// Everything needed to open a [`crate::DynamoStore`].
///
/// Start from [`DynamoConfig::new`] (or [`DynamoConfig::from_env`]) and adjust with the
/// `with_*` methods; every field has a safe default.
#[derive(Clone)]
#[non_exhaustive]
pub struct DynamoConfig {
    /// The table holding lock and run items.
    pub table: String,
    /// The region; `None` uses the AWS region chain, then [`DEFAULT_REGION`].
    pub region: Option<String>,
    /// A custom endpoint (DynamoDB Local, moto, a VPC endpoint). `None` uses `AWS_ENDPOINT_URL`
    /// / `AWS_ENDPOINT_URL_DYNAMODB` if set, else the region's public endpoint.
    pub endpoint_url: Option<String>,
    /// Fixed credentials (access key id, secret); `None` uses the AWS credential chain.
    /// Tests use this so that they never pick up a developer's real credentials.
    pub static_credentials: Option<(String, String)>,
    /// See [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`DEFAULT_ATTEMPT_TIMEOUT`].
    pub attempt_timeout: Duration,
    /// See [`DEFAULT_OPERATION_TIMEOUT`].
    pub operation_timeout: Duration,
    /// See [`DEFAULT_MAX_ATTEMPTS`]; at least 1.
    pub max_attempts: u32,
    /// See [`DEFAULT_RETENTION`]. Items become deletable this long after their last use
    /// (a held lease: after its expiry), never earlier.
    pub retention: Duration,
    /// How long [`crate::init_table`] waits for a new table to become `ACTIVE`.
    pub init_wait: Duration,
}

impl DynamoConfig {
    /// The defaults for `table`.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            region: None,
            endpoint_url: None,
            static_credentials: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retention: DEFAULT_RETENTION,
            init_wait: DEFAULT_INIT_WAIT,
        }
    }

    /// The defaults for the table named by `BATCH_LOCK_TABLE`, or `None` if it is unset or
    /// empty. Region, endpoint and credentials come from the usual AWS variables.
    pub fn from_env() -> Option<Self> {
        std::env::var(TABLE_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Self::new)
    }

    /// Uses `region` instead of the region chain.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends requests to `url` (for example `http://127.0.0.1:8000`).
    pub fn with_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses fixed credentials instead of the credential chain.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.static_credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// Sets the connect, per-attempt and per-call time limits.
    pub fn with_timeouts(
        mut self,
        connect: Duration,
        attempt: Duration,
        operation: Duration,
    ) -> Self {
        self.connect_timeout = connect;
        self.attempt_timeout = attempt;
        self.operation_timeout = operation;
        self
    }

    /// Sets the number of attempts per call (clamped to at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets how long history and idle locks are kept.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Checks the table name against DynamoDB's rules, so that a typo fails at start-up with
    /// a clear message instead of as a `ValidationException` on the first renewal.
    pub(crate) fn validate_table(&self) -> Result<(), String> {
        let t = &self.table;
        let ok_len = (3..=255).contains(&t.len());
        let ok_chars = t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok_len && ok_chars {
            Ok(())
        } else {
            Err(format!(
                "table name `{t}` is invalid: use 3 to 255 characters of letters, digits and `_ - .` (set {TABLE_ENV})"
            ))
        }
    }
}

// Hand-written so that a secret access key never reaches a log line.
impl fmt::Debug for DynamoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoConfig")
            .field("table", &self.table)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "static_credentials",
                &self
                    .static_credentials
                    .as_ref()
                    .map(|(id, _)| (id, "<redacted>")),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("retention", &self.retention)
            .field("init_wait", &self.init_wait)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_checked() {
        assert!(DynamoConfig::new("batchlock").validate_table().is_ok());
        assert!(DynamoConfig::new("a.b-c_d").validate_table().is_ok());
        let err = DynamoConfig::new("no").validate_table().unwrap_err();
        assert!(err.contains("BATCH_LOCK_TABLE"), "{err}");
        assert!(DynamoConfig::new("has space").validate_table().is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = DynamoConfig::new("t").with_static_credentials("AKIDEXAMPLE", "s3cr3t");
        let shown = format!("{c:?}");
        assert!(
            shown.contains("AKIDEXAMPLE") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn defaults_fit_inside_each_other() {
        let c = DynamoConfig::new("t");
        assert!(c.connect_timeout <= c.attempt_timeout);
        assert!(c.attempt_timeout * c.max_attempts <= c.operation_timeout);
    }
}
