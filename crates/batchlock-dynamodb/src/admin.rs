//! Setting the table up ([`init_table`]) and checking a setup ([`doctor`]).

use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, Put,
    ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
    TransactWriteItem, Update,
};
use batchlock::StoreError;
use batchlock::lease::now_millis;
use tokio::time::Instant;

use crate::error::map_code;
use crate::item::{n, names_for, s};
use crate::store::DynamoStore;
use crate::{DOCTOR_SENTINEL_PK, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};

/// How often [`init_table`] asks whether a new table is `ACTIVE`. A new on-demand table takes
/// seconds; polling this often costs nothing and lets `init` return as soon as it can.
const ACTIVE_POLL: Duration = Duration::from_millis(200);

/// A condition no item can meet: `doctor` uses it to prove write permissions without writing.
const NEVER: &str = "attribute_exists(#pk) AND attribute_not_exists(#pk)";

/// What [`init_table`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitOutcome {
    /// The table was created by this call (false: it already existed).
    pub created_table: bool,
    /// TTL was enabled by this call (false: it already was).
    pub enabled_ttl: bool,
    /// How long we waited for the table to become `ACTIVE`.
    pub waited: Duration,
}

impl fmt::Display for InitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = if self.created_table {
            "created the table"
        } else {
            "the table already existed"
        };
        let ttl = if self.enabled_ttl {
            format!("enabled TTL on `{TTL_ATTRIBUTE}`")
        } else {
            format!("TTL on `{TTL_ATTRIBUTE}` was already enabled")
        };
        write!(f, "{table}, {ttl}")
    }
}

/// Creates the table (on-demand billing, `pk`/`sk` string keys) and enables TTL on
/// [`TTL_ATTRIBUTE`]. Idempotent: on a table that is already set up it changes nothing.
///
/// An existing table with a different key schema, or with TTL on another attribute (DynamoDB
/// allows only one), is reported as [`StoreError::Setup`] rather than changed.
pub async fn init_table(store: &DynamoStore) -> Result<InitOutcome, StoreError> {
    let t = store.target();
    let create = store
        .client()
        .create_table()
        .table_name(&t.table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PARTITION_KEY))
        .attribute_definitions(attribute(SORT_KEY))
        .key_schema(key(PARTITION_KEY, KeyType::Hash))
        .key_schema(key(SORT_KEY, KeyType::Range))
        .send();
    let created_table = match store.bounded("CreateTable", create).await? {
        Ok(_) => true,
        Err(e) if code(&e) == Some("ResourceInUseException") => false,
        Err(e) => return Err(map(store, "CreateTable", e)),
    };

    let started = Instant::now();
    let table = loop {
        let call = store.client().describe_table().table_name(&t.table).send();
        let described = store
            .bounded("DescribeTable", call)
            .await?
            .map_err(|e| map(store, "DescribeTable", e))?;
        if let Some(table) = described.table {
            if table.table_status() == Some(&TableStatus::Active) {
                break table;
            }
        }
        if started.elapsed() >= store.init_wait() {
            return Err(StoreError::Setup {
                store: t.describe.clone(),
                message: format!(
                    "table `{}` did not become ACTIVE within {}s; run `batchlock init` again later",
                    t.table,
                    store.init_wait().as_secs()
                ),
            });
        }
        tokio::time::sleep(ACTIVE_POLL).await;
    };
    let waited = started.elapsed();
    if let Some(problem) = key_schema_problem(&table) {
        return Err(StoreError::Setup {
            store: t.describe.clone(),
            message: format!(
                "table `{}` exists but {problem}; use another table name or recreate it",
                t.table
            ),
        });
    }

    let enabled_ttl = match ttl_state(store).await? {
        TtlState::Enabled => false,
        TtlState::OtherAttribute(other) => {
            return Err(StoreError::Setup {
                store: t.describe.clone(),
                message: format!(
                    "TTL of table `{}` is on `{other}`, not `{TTL_ATTRIBUTE}`; DynamoDB allows one \
                     TTL attribute, so disable it there first or use another table",
                    t.table
                ),
            });
        }
        TtlState::Disabled => {
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .expect("both fields set");
            let call = store
                .client()
                .update_time_to_live()
                .table_name(&t.table)
                .time_to_live_specification(spec)
                .send();
            store
                .bounded("UpdateTimeToLive", call)
                .await?
                .map_err(|e| map(store, "UpdateTimeToLive", e))?;
            true
        }
    };
    Ok(InitOutcome {
        created_table,
        enabled_ttl,
        waited,
    })
}

fn attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("both fields set")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("both fields set")
}

fn code<E: ProvideErrorMetadata>(e: &SdkError<E>) -> Option<&str> {
    match e {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

fn map<E>(store: &DynamoStore, action: &str, e: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    crate::error::map_sdk_error(store.target(), action, e)
}

/// What is wrong with the key schema, if anything.
fn key_schema_problem(table: &TableDescription) -> Option<String> {
    let key_of = |kt: KeyType| {
        table
            .key_schema()
            .iter()
            .find(|k| *k.key_type() == kt)
            .map(|k| k.attribute_name().to_owned())
    };
    let type_of = |name: &str| {
        table
            .attribute_definitions()
            .iter()
            .find(|a| a.attribute_name() == name)
            .map(|a| a.attribute_type().clone())
    };
    let hash = key_of(KeyType::Hash);
    let range = key_of(KeyType::Range);
    if hash.as_deref() != Some(PARTITION_KEY) || range.as_deref() != Some(SORT_KEY) {
        return Some(format!(
            "its key is {} / {}, not `{PARTITION_KEY}` (partition) / `{SORT_KEY}` (sort)",
            hash.as_deref().unwrap_or("-"),
            range.as_deref().unwrap_or("-")
        ));
    }
    for name in [PARTITION_KEY, SORT_KEY] {
        if type_of(name) != Some(ScalarAttributeType::S) {
            return Some(format!("its key attribute `{name}` is not a String (S)"));
        }
    }
    None
}

enum TtlState {
    Enabled,
    OtherAttribute(String),
    Disabled,
}

async fn ttl_state(store: &DynamoStore) -> Result<TtlState, StoreError> {
    let t = store.target();
    let call = store
        .client()
        .describe_time_to_live()
        .table_name(&t.table)
        .send();
    let out = store
        .bounded("DescribeTimeToLive", call)
        .await?
        .map_err(|e| map(store, "DescribeTimeToLive", e))?;
    let desc = out.time_to_live_description;
    let status = desc.as_ref().and_then(|d| d.time_to_live_status().cloned());
    let attribute = desc
        .as_ref()
        .and_then(|d| d.attribute_name())
        .map(str::to_owned);
    Ok(match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => match attribute {
            Some(a) if a == TTL_ATTRIBUTE => TtlState::Enabled,
            Some(a) => TtlState::OtherAttribute(a),
            None => TtlState::Disabled,
        },
        _ => TtlState::Disabled,
    })
}

/// The outcome of one [`doctor`] check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckStatus {
    /// Fine.
    Ok,
    /// Something must be fixed; the check's `fix` says how.
    Problem,
    /// Not checked because an earlier check failed (for example: no table, no TTL to check).
    Skipped,
}

/// One line of a [`DoctorReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Check {
    /// Short name, such as `table exists` or `dynamodb:UpdateItem`.
    pub name: String,
    /// The verdict.
    pub status: CheckStatus,
    /// What we saw.
    pub detail: String,
    /// What to do about a problem.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn problem(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Problem,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn skipped(name: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: CheckStatus::Skipped,
            detail: why.into(),
            fix: None,
        }
    }
}

/// Everything [`doctor`] checked, in order. `Display` prints one line per check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DoctorReport {
    /// The store checked (table, region, endpoint).
    pub store: String,
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// Whether every check passed (none has a problem; skipped checks follow from a problem).
    pub fn is_healthy(&self) -> bool {
        self.checks.iter().all(|c| c.status == CheckStatus::Ok)
    }

    /// The check called `name`, if it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The checks that found a problem.
    pub fn problems(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Problem)
    }
}

impl fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.store)?;
        for c in &self.checks {
            let mark = match c.status {
                CheckStatus::Ok => "ok     ",
                CheckStatus::Problem => "PROBLEM",
                CheckStatus::Skipped => "skipped",
            };
            write!(f, "  {mark} {}: {}", c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                write!(f, "\n          fix: {fix}")?;
            }
            writeln!(f)?;
        }
        let problems = self.problems().count();
        if problems == 0 {
            write!(f, "all checks passed")
        } else {
            write!(f, "{problems} problem(s) found")
        }
    }
}

/// Names of the checks, for callers that look one up.
pub mod checks {
    /// The endpoint answered with our credentials.
    pub const REACHABLE: &str = "reachable";
    /// The table exists and is `ACTIVE`.
    pub const TABLE: &str = "table exists";
    /// `pk` / `sk` string keys.
    pub const KEY_SCHEMA: &str = "key schema";
    /// TTL enabled on `gc_at`.
    pub const TTL: &str = "ttl";
    /// `UpdateItem` and `PutItem` allowed inside `TransactWriteItems` (the end of every run).
    pub const TRANSACTIONS: &str = "transactions";
}

/// Checks that the store can work: the endpoint answers, the table exists with the right key
/// schema, TTL collects garbage on the right attribute, and every action the store calls is
/// allowed, on its own and inside the transaction that ends every run (exercised on a sentinel
/// key with a condition that always fails, so nothing is written). Never fails: every failure
/// is a line of the report with a fix.
pub async fn doctor(store: &DynamoStore) -> DoctorReport {
    let t = store.target().clone();
    let mut checks = Vec::new();
    let report = |checks| DoctorReport {
        store: t.describe.clone(),
        checks,
    };

    let call = store.client().describe_table().table_name(&t.table).send();
    let described = match store.bounded("DescribeTable", call).await {
        Err(timeout) => {
            checks.push(Check::problem(
                checks::REACHABLE,
                timeout.to_string(),
                "check network access to the endpoint, AWS_ENDPOINT_URL and AWS_REGION; outside \
                 AWS set AWS_EC2_METADATA_DISABLED=true",
            ));
            return report(checks);
        }
        Ok(result) => result,
    };
    let table = match described {
        Ok(out) => {
            checks.push(Check::ok(checks::REACHABLE, "DescribeTable answered"));
            out.table
        }
        Err(e) if code(&e) == Some("ResourceNotFoundException") => {
            checks.push(Check::ok(checks::REACHABLE, "DescribeTable answered"));
            checks.push(Check::problem(
                checks::TABLE,
                format!("table `{}` not found in {}", t.table, t.region),
                "run `batchlock init` to create it, or set AWS_REGION if it lives in another region",
            ));
            for name in [checks::KEY_SCHEMA, checks::TTL] {
                checks.push(Check::skipped(name, "no table"));
            }
            return report(checks);
        }
        Err(e) if code(&e) == Some("AccessDeniedException") => {
            checks.push(Check::ok(checks::REACHABLE, "the endpoint answered"));
            checks.push(Check::problem(
                "dynamodb:DescribeTable",
                "denied",
                "grant dynamodb:DescribeTable (only doctor and init need it)",
            ));
            for name in [checks::TABLE, checks::KEY_SCHEMA, checks::TTL] {
                checks.push(Check::skipped(name, "cannot describe the table"));
            }
            None
        }
        Err(e) => {
            let err = map(store, "DescribeTable", e);
            let fix = match err {
                StoreError::PermissionDenied { .. } => {
                    "provide credentials: AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an IAM role"
                }
                _ => {
                    "check network access to the endpoint, AWS_ENDPOINT_URL and AWS_REGION; outside \
                     AWS set AWS_EC2_METADATA_DISABLED=true"
                }
            };
            checks.push(Check::problem(checks::REACHABLE, err.to_string(), fix));
            return report(checks);
        }
    };

    if let Some(table) = &table {
        match table.table_status() {
            Some(TableStatus::Active) => checks.push(Check::ok(
                checks::TABLE,
                format!("table `{}` is ACTIVE in {}", t.table, t.region),
            )),
            other => checks.push(Check::problem(
                checks::TABLE,
                format!("table `{}` is {:?}", t.table, other),
                "wait until it is ACTIVE (a new table takes seconds), then run doctor again",
            )),
        }
        match key_schema_problem(table) {
            None => checks.push(Check::ok(
                checks::KEY_SCHEMA,
                format!("`{PARTITION_KEY}` (S, partition) / `{SORT_KEY}` (S, sort)"),
            )),
            Some(problem) => checks.push(Check::problem(
                checks::KEY_SCHEMA,
                problem,
                "batchlock needs its own table: pick another name and run `batchlock init`",
            )),
        }
        checks.push(match ttl_state(store).await {
            Ok(TtlState::Enabled) => Check::ok(
                checks::TTL,
                format!("enabled on `{TTL_ATTRIBUTE}` (old runs and idle locks are collected)"),
            ),
            Ok(TtlState::Disabled) => Check::problem(
                checks::TTL,
                "TTL is not enabled: run history and idle locks are never deleted",
                format!(
                    "run `batchlock init` (it enables TTL on `{TTL_ATTRIBUTE}`), or `aws dynamodb \
                     update-time-to-live --table-name {} --time-to-live-specification \
                     Enabled=true,AttributeName={TTL_ATTRIBUTE}`",
                    t.table
                ),
            ),
            Ok(TtlState::OtherAttribute(other)) => Check::problem(
                checks::TTL,
                format!("TTL is enabled on `{other}`, not `{TTL_ATTRIBUTE}`"),
                "use a table of its own for batchlock",
            ),
            Err(e) => Check::problem(
                checks::TTL,
                e.to_string(),
                "grant dynamodb:DescribeTimeToLive (only doctor and init need it)",
            ),
        });
    }

    checks.extend(permission_checks(store).await);
    report(checks)
}

/// Exercises each action the store calls on the sentinel key. Conditional writes use a
/// condition that can never hold, so a `ConditionalCheckFailedException` proves the action is
/// allowed without writing anything.
async fn permission_checks(store: &DynamoStore) -> Vec<Check> {
    let t = store.target();
    let sentinel = || {
        std::collections::HashMap::from([
            (PARTITION_KEY.to_owned(), s(DOCTOR_SENTINEL_PK)),
            (SORT_KEY.to_owned(), s("doctor")),
        ])
    };
    let names = || Some(names_for(&[NEVER]));
    let mut results = Vec::new();

    let get = store
        .client()
        .get_item()
        .table_name(&t.table)
        .set_key(Some(sentinel()))
        .consistent_read(true)
        .send();
    results.push(verdict(
        store,
        "GetItem",
        store.bounded("GetItem", get).await,
    ));

    let mut item = sentinel();
    item.insert(TTL_ATTRIBUTE.to_owned(), n(now_millis() / 1000));
    let put = store
        .client()
        .put_item()
        .table_name(&t.table)
        .set_item(Some(item))
        .condition_expression(NEVER)
        .set_expression_attribute_names(names())
        .send();
    results.push(verdict(
        store,
        "PutItem",
        store.bounded("PutItem", put).await,
    ));

    let update = store
        .client()
        .update_item()
        .table_name(&t.table)
        .set_key(Some(sentinel()))
        .update_expression("SET #gc = :gc")
        .condition_expression(NEVER)
        .set_expression_attribute_names(Some(names_for(&["SET #gc = :gc", NEVER])))
        .expression_attribute_values(":gc", n(now_millis() / 1000))
        .send();
    results.push(verdict(
        store,
        "UpdateItem",
        store.bounded("UpdateItem", update).await,
    ));

    let query = store
        .client()
        .query()
        .table_name(&t.table)
        .key_condition_expression("#pk = :pk")
        .set_expression_attribute_names(Some(names_for(&["#pk = :pk"])))
        .expression_attribute_values(":pk", AttributeValue::S(DOCTOR_SENTINEL_PK.to_owned()))
        .limit(1)
        .send();
    results.push(verdict(store, "Query", store.bounded("Query", query).await));

    let scan = store.client().scan().table_name(&t.table).limit(1).send();
    results.push(verdict(store, "Scan", store.bounded("Scan", scan).await));
    results.push(transaction_check(store).await);
    results
}

/// The end of a run sends its `UpdateItem` and `PutItem` in one `TransactWriteItems`. IAM has
/// no action of that name (a transaction needs the actions of its parts), but a policy can
/// deny the parts inside transactions (`dynamodb:EnclosingOperation`). Both parts use the
/// never-true condition on two sentinel items, so a cancelled transaction proves it allowed.
async fn transaction_check(store: &DynamoStore) -> Check {
    let t = store.target();
    let sentinel = |sk: &str| {
        std::collections::HashMap::from([
            (PARTITION_KEY.to_owned(), s(DOCTOR_SENTINEL_PK)),
            (SORT_KEY.to_owned(), s(sk)),
        ])
    };
    let gc = n(now_millis() / 1000);
    let update = Update::builder()
        .table_name(&t.table)
        .set_key(Some(sentinel("doctor")))
        .update_expression("SET #gc = :gc")
        .condition_expression(NEVER)
        .set_expression_attribute_names(Some(names_for(&["SET #gc = :gc", NEVER])))
        .expression_attribute_values(":gc", gc.clone())
        .build()
        .expect("key, table and expression set");
    let mut item = sentinel("doctor-run");
    item.insert(TTL_ATTRIBUTE.to_owned(), gc);
    let put = Put::builder()
        .table_name(&t.table)
        .set_item(Some(item))
        .condition_expression(NEVER)
        .set_expression_attribute_names(Some(names_for(&[NEVER])))
        .build()
        .expect("item and table set");
    let call = store
        .client()
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().update(update).build())
        .transact_items(TransactWriteItem::builder().put(put).build())
        .send();
    let result = store.bounded("TransactWriteItems", call).await;
    match result {
        Ok(Err(e)) if code(&e) == Some("TransactionCanceledException") => Check::ok(
            checks::TRANSACTIONS,
            "UpdateItem + PutItem allowed in TransactWriteItems (sentinel conditions failed as \
             intended; nothing written)",
        ),
        Ok(Err(e)) if code(&e) == Some("AccessDeniedException") => Check::problem(
            checks::TRANSACTIONS,
            "UpdateItem + PutItem denied inside TransactWriteItems: each run's end takes two \
             calls instead of one",
            format!(
                "allow dynamodb:UpdateItem and dynamodb:PutItem on table `{}` also when \
                 dynamodb:EnclosingOperation is TransactWriteItems",
                t.table
            ),
        ),
        other => {
            let mut check = verdict(store, "TransactWriteItems", other);
            check.name = checks::TRANSACTIONS.to_owned();
            check
        }
    }
}

fn verdict<T, E>(
    store: &DynamoStore,
    action: &str,
    result: Result<Result<T, SdkError<E>>, StoreError>,
) -> Check
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let name = format!("dynamodb:{action}");
    match result {
        Ok(Ok(_)) => Check::ok(name, "allowed"),
        Ok(Err(e)) if code(&e) == Some("ConditionalCheckFailedException") => Check::ok(
            name,
            "allowed (sentinel condition failed as intended; nothing written)",
        ),
        Ok(Err(e)) if code(&e) == Some("AccessDeniedException") => Check::problem(
            name.clone(),
            "denied",
            format!("grant {name} on table `{}`", store.table()),
        ),
        Ok(Err(e)) => {
            let err = match code(&e).map(str::to_owned) {
                Some(c) => map_code(store.target(), action, &c, e.message().unwrap_or("")),
                None => map(store, action, e),
            };
            Check::problem(
                name,
                err.to_string(),
                "see the message; then run doctor again",
            )
        }
        Err(timeout) => Check::problem(
            name,
            timeout.to_string(),
            "check network access to the endpoint",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(statuses: &[CheckStatus]) -> DoctorReport {
        DoctorReport {
            store: "dynamodb table `t` in ap-northeast-1".into(),
            checks: statuses
                .iter()
                .enumerate()
                .map(|(i, st)| Check {
                    name: format!("c{i}"),
                    status: st.clone(),
                    detail: "d".into(),
                    fix: (*st == CheckStatus::Problem).then(|| "do this".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn report_is_healthy_only_without_problems() {
        assert!(report(&[CheckStatus::Ok, CheckStatus::Ok]).is_healthy());
        let bad = report(&[CheckStatus::Ok, CheckStatus::Problem, CheckStatus::Skipped]);
        assert!(!bad.is_healthy());
        let text = bad.to_string();
        assert!(text.contains("PROBLEM c1: d"), "{text}");
        assert!(text.contains("fix: do this"), "{text}");
        assert!(text.ends_with("1 problem(s) found"), "{text}");
    }

    #[test]
    fn init_outcome_says_what_changed() {
        let o = InitOutcome {
            created_table: false,
            enabled_ttl: false,
            waited: Duration::ZERO,
        };
        assert_eq!(
            o.to_string(),
            "the table already existed, TTL on `gc_at` was already enabled"
        );
    }
}
