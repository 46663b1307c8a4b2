//! [`DynamoStore`]: the lease protocol as DynamoDB conditional writes.
//!
//! Each method is one conditional `UpdateItem` (or `PutItem`) whose condition is exactly the
//! decision `batchlock`'s in-process protocol makes; DynamoDB applies the condition and the
//! write atomically, so two writers can never both see a key as free. The end of a run
//! (`release_and_record`) puts the conditional release and the run item into one
//! `TransactWriteItems`, so the common path costs one round trip. When a condition fails,
//! the item as it was comes back in the same answer (`ReturnValuesOnConditionCheckFailure =
//! ALL_OLD`); servers that do not send it get a strongly consistent read instead.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use batchlock::lease::{duration_millis, now_millis};
use batchlock::{
    Acquire, AcquireRequest, Lease, LeaseStore, LockRecord, Release, Renewal, RunRecord, StoreError,
};

use crate::config::DynamoConfig;
use crate::error::{Target, corrupt, elapsed, map_sdk_error};
use crate::item::{self, Item, n, names_for, s};
use crate::{DEFAULT_REGION, LOCK_SK, RUNS_PK_PREFIX};

/// Condition of a takeover: the key was never used, was released, or its lease expired by the
/// writer's clock — and it is not already ours (our own lease is returned unchanged instead,
/// like the in-process protocol does, so a retried acquire never issues a second token).
pub(crate) const ACQUIRE_CONDITION: &str = "attribute_not_exists(#pk) OR attribute_not_exists(#owner) OR (#expires <= :now AND #owner <> :me)";

/// Taking the lease: the token counts up from what is stored. A missing token (a new key, or a
/// lock item that TTL collected after long idleness) starts from the writer's clock in
/// milliseconds rather than from zero, so a collected item can never hand out a token that an
/// earlier holder already had.
pub(crate) const ACQUIRE_UPDATE: &str = "SET #token = if_not_exists(#token, :seed) + :one, #owner = :me, #holder = :holder, #acquired = :now, #renewed = :now, #expires = :exp, #stop = :false, #key = :key, #gc = :gc";

/// Renew and release change the item only while both owner and token still match.
pub(crate) const OWNS_CONDITION: &str = "#owner = :me AND #token = :token";
/// Renewal moves the expiry (and the garbage-collection time with it).
pub(crate) const RENEW_UPDATE: &str = "SET #renewed = :now, #expires = :exp, #gc = :gc";
/// Freeing a lock keeps the item and its token; only the owner and a stop request go.
pub(crate) const FREE_UPDATE: &str = "REMOVE #owner SET #stop = :false, #gc = :gc";
/// Force-release frees any owner, expired or not.
pub(crate) const FORCE_CONDITION: &str = "attribute_exists(#owner)";
/// A stop request is only recorded while somebody holds an unexpired lease.
pub(crate) const STOP_CONDITION: &str = "attribute_exists(#owner) AND #expires > :now";
/// Setting the stop flag.
pub(crate) const STOP_UPDATE: &str = "SET #stop = :true";
/// A run item is written once; a retry of a write that already landed changes nothing.
pub(crate) const APPEND_RUN_CONDITION: &str = "attribute_not_exists(#pk)";

/// How many times `try_acquire` re-decides when the fallback read shows that the item changed
/// between the failed write and the read (only with servers that do not return ALL_OLD).
const ACQUIRE_ROUNDS: usize = 3;

/// A [`LeaseStore`] in one DynamoDB table. Cheap to clone: clones share the HTTP client.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    target: Target,
    retention: Duration,
    init_wait: Duration,
}

impl DynamoStore {
    /// Builds a client for `config.table`. Sends no request: use [`crate::doctor`] to check
    /// that the table is reachable and set up.
    ///
    /// The region comes from the config, else the AWS region chain (`AWS_REGION`, the
    /// profile, then EC2 instance metadata), else [`DEFAULT_REGION`]. Every call is bounded
    /// by the connect, attempt and operation timeouts and by `max_attempts`, so no call can
    /// outlive a renewal deadline. Outside AWS, set `AWS_EC2_METADATA_DISABLED=true` so that
    /// the region and credential chains never wait for an instance metadata service that is
    /// not there.
    pub async fn connect(config: DynamoConfig) -> Result<Self, StoreError> {
        let pending = Target {
            describe: format!("dynamodb table `{}`", config.table),
            table: config.table.clone(),
            region: config.region.clone().unwrap_or_default(),
            operation_timeout: config.operation_timeout,
        };
        config
            .validate_table()
            .map_err(|message| StoreError::Setup {
                store: pending.describe.clone(),
                message,
            })?;

        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.attempt_timeout)
            .operation_attempt_timeout(config.attempt_timeout)
            .operation_timeout(config.operation_timeout)
            .build();
        let retries = RetryConfig::standard()
            .with_max_attempts(config.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(1));
        let region = RegionProviderChain::first_try(config.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new(DEFAULT_REGION));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(timeouts)
            .retry_config(retries);
        if let Some(url) = &config.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &config.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "batchlock-static",
            ));
        }
        // Loading only reads the environment and profile files, except that the region chain
        // may ask instance metadata; bound it like any other call.
        let sdk_config = tokio::time::timeout(config.operation_timeout * 2, loader.load())
            .await
            .map_err(|_| StoreError::Timeout {
                store: pending.describe.clone(),
                after: config.operation_timeout * 2,
            })?;
        let region = sdk_config
            .region()
            .map_or_else(|| DEFAULT_REGION.to_owned(), |r| r.to_string());
        let endpoint = config
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok())
            .or_else(|| sdk_config.endpoint_url().map(str::to_owned))
            .filter(|e| !e.is_empty());
        let describe = match &endpoint {
            Some(url) => format!("dynamodb table `{}` in {region} at {url}", config.table),
            None => format!("dynamodb table `{}` in {region}", config.table),
        };
        Ok(Self {
            client: Client::new(&sdk_config),
            target: Target {
                describe,
                table: config.table,
                region,
                operation_timeout: config.operation_timeout,
            },
            retention: config.retention,
            init_wait: config.init_wait,
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.target.table
    }

    /// The region the client talks to.
    pub fn region(&self) -> &str {
        &self.target.region
    }

    /// The underlying SDK client, for tools that read the table directly (and for benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    pub(crate) fn init_wait(&self) -> Duration {
        self.init_wait
    }

    /// Runs one SDK call under the operation timeout. The SDK enforces the same limit; this
    /// outer bound (with a little slack) also covers anything the SDK does not time, such as
    /// a credential provider that hangs, so that a renewal can never silently outlive its lease.
    pub(crate) async fn bounded<T, E>(
        &self,
        action: &str,
        call: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<Result<T, SdkError<E>>, StoreError> {
        let limit = self.target.operation_timeout + Duration::from_millis(500);
        tokio::time::timeout(limit, call).await.map_err(|_| {
            tracing::warn!(action, table = %self.target.table, "DynamoDB call timed out");
            elapsed(&self.target)
        })
    }

    fn map<E>(&self, action: &str, err: SdkError<E>) -> StoreError
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        map_sdk_error(&self.target, action, err)
    }

    /// Seconds since the epoch at which an item last touched at `last_use_ms` may be deleted.
    fn gc_at(&self, last_use_ms: u64) -> u64 {
        (last_use_ms / 1000).saturating_add(self.retention.as_secs())
    }

    fn decode(&self, item: &Item) -> Result<LockRecord, StoreError> {
        item::decode_lock(item).map_err(|m| corrupt(&self.target, m))
    }

    /// An `UpdateItem` of the lock item of `key` with `update` under `condition`; values are
    /// given, attribute names are derived from the expressions.
    fn update(
        &self,
        key: &str,
        update: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> UpdateItemFluentBuilder {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.target.table)
            .set_key(Some(item::lock_key(key)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names_for(&[update, condition])));
        for (name, value) in values {
            req = req.expression_attribute_values(name, value);
        }
        req
    }

    /// Sends a conditional update. `Ok(Ok(attributes))` when it was applied, `Ok(Err(old))`
    /// when the condition failed (`old` is the item as it was, if the server returned it).
    async fn conditional(
        &self,
        req: UpdateItemFluentBuilder,
    ) -> Result<Result<Option<Item>, Option<Item>>, StoreError> {
        match self.bounded("UpdateItem", req.send()).await? {
            Ok(out) => Ok(Ok(out.attributes)),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                match e.into_err() {
                    UpdateItemError::ConditionalCheckFailedException(c) => Ok(Err(c.item)),
                    _ => unreachable!("matched above"),
                }
            }
            Err(e) => Err(self.map("UpdateItem", e)),
        }
    }

    /// The lock record as it was when a condition failed: from the failure itself, else from a
    /// strongly consistent read.
    async fn old_record(
        &self,
        key: &str,
        old: Option<Item>,
    ) -> Result<Option<LockRecord>, StoreError> {
        match old {
            Some(item) if !item.is_empty() => Ok(Some(self.decode(&item)?)),
            _ => self.get(key).await,
        }
    }
}

fn lease_of(rec: &LockRecord, owner: &str) -> Lease {
    Lease {
        key: rec.key.clone(),
        owner: owner.to_owned(),
        token: rec.token,
        expires_at_ms: rec.expires_at_ms,
    }
}

#[async_trait]
impl LeaseStore for DynamoStore {
    fn describe(&self) -> String {
        self.target.describe.clone()
    }

    async fn try_acquire(&self, request: &AcquireRequest) -> Result<Acquire, StoreError> {
        let key = request.key.as_str();
        let holder = serde_json::to_string(&request.holder)
            .map_err(|e| corrupt(&self.target, format!("cannot encode holder: {e}")))?;
        for _ in 0..ACQUIRE_ROUNDS {
            let now = now_millis();
            let expires = now.saturating_add(duration_millis(request.ttl));
            let req = self
                .update(
                    key,
                    ACQUIRE_UPDATE,
                    ACQUIRE_CONDITION,
                    vec![
                        (":seed", n(now)),
                        (":one", n(1)),
                        (":me", s(request.owner.clone())),
                        (":holder", s(holder.clone())),
                        (":now", n(now)),
                        (":exp", n(expires)),
                        (":false", AttributeValue::Bool(false)),
                        (":key", s(key)),
                        (":gc", n(self.gc_at(expires))),
                    ],
                )
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            match self.conditional(req).await? {
                Ok(Some(new)) => {
                    let rec = self.decode(&new)?;
                    return Ok(Acquire::Acquired(lease_of(&rec, &request.owner)));
                }
                Ok(None) => {
                    return Err(corrupt(
                        &self.target,
                        format!("UpdateItem on `{key}` returned no attributes for ALL_NEW"),
                    ));
                }
                // The server told us the item that failed the condition: at that instant it
                // was either ours or held by someone else, which is the whole decision.
                Err(Some(old)) if !old.is_empty() => {
                    let rec = self.decode(&old)?;
                    if rec.owner.as_deref() == Some(request.owner.as_str()) {
                        return Ok(Acquire::Acquired(lease_of(&rec, &request.owner)));
                    }
                    return Ok(Acquire::Held(rec));
                }
                // No ALL_OLD: read the item. It may have changed since the write failed, so
                // decide again from what we read, and write again if it is free now.
                Err(_) => match self.get(key).await? {
                    Some(rec) if rec.owner.as_deref() == Some(request.owner.as_str()) => {
                        return Ok(Acquire::Acquired(lease_of(&rec, &request.owner)));
                    }
                    Some(rec) if rec.is_held_at(now_millis()) => return Ok(Acquire::Held(rec)),
                    _ => continue,
                },
            }
        }
        Err(StoreError::Unavailable {
            store: self.describe(),
            message: format!(
                "the lock item of `{key}` changed under {ACQUIRE_ROUNDS} acquire attempts in a row; try again"
            ),
        })
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewal, StoreError> {
        let now = now_millis();
        let expires = now.saturating_add(duration_millis(ttl));
        let req = self
            .update(
                &lease.key,
                RENEW_UPDATE,
                OWNS_CONDITION,
                vec![
                    (":me", s(lease.owner.clone())),
                    (":token", n(lease.token.0)),
                    (":now", n(now)),
                    (":exp", n(expires)),
                    (":gc", n(self.gc_at(expires))),
                ],
            )
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match self.conditional(req).await? {
            Ok(new) => {
                let stop_requested = match new {
                    Some(item) => self.decode(&item)?.stop_requested,
                    None => false,
                };
                Ok(Renewal::Renewed {
                    expires_at_ms: expires,
                    stop_requested,
                })
            }
            Err(old) => Ok(Renewal::Lost(self.old_record(&lease.key, old).await?)),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<Release, StoreError> {
        let req = self
            .update(
                &lease.key,
                FREE_UPDATE,
                OWNS_CONDITION,
                vec![
                    (":me", s(lease.owner.clone())),
                    (":token", n(lease.token.0)),
                    (":false", AttributeValue::Bool(false)),
                    (":gc", n(self.gc_at(now_millis()))),
                ],
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match self.conditional(req).await? {
            Ok(_) => Ok(Release::Released),
            Err(old) => Ok(Release::NotHeld(self.old_record(&lease.key, old).await?)),
        }
    }

    /// The end of every run in one round trip: a `TransactWriteItems` of the conditional
    /// release (the same update and condition as [`release`](Self::release)) and the `Put` of
    /// the run item. DynamoDB applies both or neither. If the transaction is cancelled (the
    /// lease is no longer ours, the run item already exists because an earlier attempt landed,
    /// a conflicting write, a policy that denies writes inside transactions), nothing was
    /// written, and the two plain calls decide and record instead: the run is always recorded.
    async fn release_and_record(
        &self,
        lease: &Lease,
        run: &RunRecord,
    ) -> Result<Release, StoreError> {
        let release = Update::builder()
            .table_name(&self.target.table)
            .set_key(Some(item::lock_key(&lease.key)))
            .update_expression(FREE_UPDATE)
            .condition_expression(OWNS_CONDITION)
            .set_expression_attribute_names(Some(names_for(&[FREE_UPDATE, OWNS_CONDITION])))
            .expression_attribute_values(":me", s(lease.owner.clone()))
            .expression_attribute_values(":token", n(lease.token.0))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":gc", n(self.gc_at(now_millis())))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| corrupt(&self.target, format!("cannot build the release: {e}")))?;
        let record = item::run_item(run, self.gc_at(run.ended_at_ms.max(now_millis())))
            .map_err(|m| corrupt(&self.target, m))?;
        let put = Put::builder()
            .table_name(&self.target.table)
            .set_item(Some(record))
            .condition_expression(APPEND_RUN_CONDITION)
            .set_expression_attribute_names(Some(names_for(&[APPEND_RUN_CONDITION])))
            .build()
            .map_err(|e| corrupt(&self.target, format!("cannot build the run item: {e}")))?;
        let call = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(release).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send();
        let reasons = match self.bounded("TransactWriteItems", call).await? {
            Ok(_) => return Ok(Release::Released),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    TransactWriteItemsError::TransactionCanceledException(_)
                ) =>
            {
                match e.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => {
                        c.cancellation_reasons.unwrap_or_default()
                    }
                    _ => unreachable!("matched above"),
                }
            }
            // Permissions for a transaction are those of its parts, but a policy may deny them
            // inside transactions only (`dynamodb:EnclosingOperation`). The plain calls then
            // still work, or fail naming the exact action to grant.
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("AccessDeniedException") => {
                tracing::warn!(
                    table = %self.target.table,
                    "TransactWriteItems was denied; releasing and recording with two calls \
                     (run `batchlock doctor`)"
                );
                Vec::new()
            }
            Err(e) => return Err(self.map("TransactWriteItems", e)),
        };
        let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
        tracing::debug!(
            key = lease.key,
            ?codes,
            "release transaction cancelled; falling back"
        );
        let released = match reasons.into_iter().next() {
            // The release's condition failed: the lease is not ours. The item as it was came
            // back in the cancellation reason (ALL_OLD), else read it.
            Some(reason) if reason.code() == Some("ConditionalCheckFailed") => {
                Release::NotHeld(self.old_record(&lease.key, reason.item).await?)
            }
            // Cancelled for another reason: nothing was written, so release on its own.
            _ => self.release(lease).await?,
        };
        self.append_run(run).await?;
        Ok(released)
    }

    async fn get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let call = self
            .client
            .get_item()
            .table_name(&self.target.table)
            .set_key(Some(item::lock_key(key)))
            .consistent_read(true)
            .send();
        let out = self
            .bounded("GetItem", call)
            .await?
            .map_err(|e| self.map("GetItem", e))?;
        out.item.as_ref().map(|i| self.decode(i)).transpose()
    }

    async fn list(&self) -> Result<Vec<LockRecord>, StoreError> {
        let filter = "#sk = :lock";
        let items = self.scan_all(filter, vec![(":lock", s(LOCK_SK))]).await?;
        let mut records = items
            .iter()
            .map(|i| self.decode(i))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(records)
    }

    async fn force_release(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let req = self
            .update(
                key,
                FREE_UPDATE,
                FORCE_CONDITION,
                vec![
                    (":false", AttributeValue::Bool(false)),
                    (":gc", n(self.gc_at(now_millis()))),
                ],
            )
            .return_values(ReturnValue::AllOld);
        match self.conditional(req).await? {
            Ok(Some(old)) => Ok(Some(self.decode(&old)?)),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    async fn request_stop(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let req = self
            .update(
                key,
                STOP_UPDATE,
                STOP_CONDITION,
                vec![
                    (":true", AttributeValue::Bool(true)),
                    (":now", n(now_millis())),
                ],
            )
            .return_values(ReturnValue::AllNew);
        match self.conditional(req).await? {
            Ok(Some(new)) => Ok(Some(self.decode(&new)?)),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    async fn append_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let record = item::run_item(run, self.gc_at(run.ended_at_ms.max(now_millis())))
            .map_err(|m| corrupt(&self.target, m))?;
        let call = self
            .client
            .put_item()
            .table_name(&self.target.table)
            .set_item(Some(record))
            .condition_expression(APPEND_RUN_CONDITION)
            .set_expression_attribute_names(Some(names_for(&[APPEND_RUN_CONDITION])))
            .send();
        match self.bounded("PutItem", call).await? {
            Ok(_) => Ok(()),
            // Same key, end time and run id: this exact run is already recorded (our earlier
            // attempt landed but its answer was lost).
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(())
            }
            Err(e) => Err(self.map("PutItem", e)),
        }
    }

    async fn list_runs(
        &self,
        key: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let decode = |i: &Item| item::decode_run(i).map_err(|m| corrupt(&self.target, m));
        match key {
            Some(key) => {
                // One partition, read newest first: cost grows with `limit`, not with history.
                let mut runs = Vec::new();
                let mut start = None;
                loop {
                    let page = (limit - runs.len()).min(1000) as i32;
                    let call = self
                        .client
                        .query()
                        .table_name(&self.target.table)
                        .key_condition_expression("#pk = :pk")
                        .set_expression_attribute_names(Some(names_for(&["#pk = :pk"])))
                        .expression_attribute_values(":pk", s(item::runs_pk(key)))
                        .scan_index_forward(false)
                        .consistent_read(true)
                        .limit(page)
                        .set_exclusive_start_key(start)
                        .send();
                    let out = self
                        .bounded("Query", call)
                        .await?
                        .map_err(|e| self.map("Query", e))?;
                    for i in out.items() {
                        runs.push(decode(i)?);
                    }
                    start = out.last_evaluated_key;
                    if start.is_none() || runs.len() >= limit {
                        break;
                    }
                }
                runs.truncate(limit);
                Ok(runs)
            }
            None => {
                // Across keys there is no index to read in time order: scan the run items and
                // sort. Fine for the small tables batch locks use; see docs/dynamodb.md.
                let items = self
                    .scan_all(
                        "begins_with(#pk, :runs)",
                        vec![(":runs", s(RUNS_PK_PREFIX))],
                    )
                    .await?;
                let mut runs = items.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
                runs.sort_by(|a, b| (b.ended_at_ms, &b.run_id).cmp(&(a.ended_at_ms, &a.run_id)));
                runs.truncate(limit);
                Ok(runs)
            }
        }
    }
}

impl DynamoStore {
    /// Every item matching `filter`, with strongly consistent reads, page by page.
    async fn scan_all(
        &self,
        filter: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(&self.target.table)
                .filter_expression(filter)
                .set_expression_attribute_names(Some(names_for(&[filter])))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            for (name, value) in &values {
                req = req.expression_attribute_values(*name, value.clone());
            }
            let out = self
                .bounded("Scan", req.send())
                .await?
                .map_err(|e| self.map("Scan", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr;

    #[test]
    fn every_write_is_conditional_on_the_documented_expressions() {
        // The documentation quotes these; a change here must change docs/dynamodb.md too.
        assert!(ACQUIRE_CONDITION.contains("#expires <= :now"));
        assert!(ACQUIRE_UPDATE.contains("if_not_exists(#token, :seed) + :one"));
        assert_eq!(OWNS_CONDITION, "#owner = :me AND #token = :token");
        assert!(FREE_UPDATE.starts_with("REMOVE #owner"));
        for expr in [
            ACQUIRE_CONDITION,
            ACQUIRE_UPDATE,
            OWNS_CONDITION,
            RENEW_UPDATE,
            FREE_UPDATE,
            FORCE_CONDITION,
            STOP_CONDITION,
            STOP_UPDATE,
            APPEND_RUN_CONDITION,
        ] {
            assert!(!names_for(&[expr]).is_empty(), "{expr}");
            // `owner` is a reserved word: it may only appear as the placeholder `#owner`.
            let bare = expr
                .match_indices(attr::OWNER)
                .any(|(i, _)| i == 0 || expr.as_bytes()[i - 1] != b'#');
            assert!(!bare, "{expr}");
        }
    }
}
