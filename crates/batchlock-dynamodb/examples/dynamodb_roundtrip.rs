//! Measures the DynamoDB store's costs (run by `bench/dynamodb_roundtrip.sh`, which starts moto).
//!
//! ```text
//! dynamodb_roundtrip roundtrip ENDPOINT [ITERATIONS]
//!     median (and spread) of one raw conditional PutItem through the SDK, then the medians of
//!     the two store calls of a run (try_acquire, release_and_record)
//! dynamodb_roundtrip startup ENDPOINT [--static-credentials]
//!     time from process start (BATCHLOCK_BENCH_T0_NS, set by the caller just before exec) to
//!     the first request leaving the process, with whatever AWS environment the process has
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::AttributeValue;
use batchlock::{Acquire, AcquireRequest, Holder, LeaseStore, LockKey, RunOutcome, RunRecord};
use batchlock_dynamodb::{DynamoConfig, DynamoStore, PARTITION_KEY, SORT_KEY, init_table};

const USAGE: &str = "usage: dynamodb_roundtrip roundtrip ENDPOINT [ITERATIONS] | startup ENDPOINT [--static-credentials]";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("roundtrip") => {
            let endpoint = args.get(1).ok_or(USAGE)?;
            let iterations = args.get(2).map_or(Ok(500), |n| n.parse())?;
            roundtrip(endpoint, iterations).await
        }
        Some("startup") => {
            let endpoint = args.get(1).ok_or(USAGE)?;
            startup(endpoint, args.iter().any(|a| a == "--static-credentials")).await
        }
        _ => Err(USAGE.into()),
    }
}

async fn roundtrip(endpoint: &str, iterations: usize) -> Result<(), Box<dyn std::error::Error>> {
    let table = format!("batchlock-bench-{}", std::process::id());
    let config = DynamoConfig::new(&table)
        .with_region("ap-northeast-1")
        .with_endpoint_url(endpoint)
        .with_static_credentials("test", "test");
    let store = DynamoStore::connect(config).await?;
    init_table(&store).await?;
    let client = store.client();

    // The same shape as an acquire: a conditional write of one small item.
    let put = |i: usize| {
        client
            .put_item()
            .table_name(&table)
            .item(PARTITION_KEY, AttributeValue::S("lock#bench".into()))
            .item(SORT_KEY, AttributeValue::S("lock".into()))
            .item("owner", AttributeValue::S(format!("run-{i}")))
            .item("expires_at_ms", AttributeValue::N("0".into()))
            .condition_expression("attribute_not_exists(#pk) OR #expires <= :now")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#expires", "expires_at_ms")
            .expression_attribute_values(":now", AttributeValue::N("1".into()))
            .send()
    };
    for i in 0..20 {
        put(i).await?; // warm-up: connection, credentials cache
    }
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        put(i).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    println!(
        "conditional PutItem round trip over {iterations} calls: median {:.2} ms, p90 {:.2} ms, min {:.2} ms, max {:.2} ms",
        ms(pct(0.5)),
        ms(pct(0.9)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
    );

    // The two calls `batchlock run` makes, on the same client: how many "PutItem round trips"
    // each really is on this server. Each run adds a run item, as `batchlock run` does.
    let runs = iterations.min(100);
    let (mut acquires, mut ends) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut two_calls = Vec::with_capacity(runs);
    for i in 0..runs + 10 {
        let owner = format!("bench-{i}");
        let request = AcquireRequest {
            key: LockKey::new("bench-run")?,
            owner: owner.clone(),
            holder: Holder::current(),
            ttl: Duration::from_secs(60),
        };
        let started = Instant::now();
        let Acquire::Acquired(lease) = store.try_acquire(&request).await? else {
            return Err("bench-run is held".into());
        };
        let acquired = started.elapsed();
        let run = RunRecord {
            key: lease.key.clone(),
            run_id: owner,
            token: Some(lease.token),
            holder: Holder::current(),
            command: vec!["true".into()],
            started_at_ms: 1,
            ended_at_ms: 2,
            outcome: RunOutcome::Ok,
            exit_code: Some(0),
            signal: None,
            message: None,
        };
        let started = Instant::now();
        store.release_and_record(&lease, &run).await?;
        let ended = started.elapsed();

        // For comparison, the same end as the trait's default does it: two plain calls.
        let request = AcquireRequest {
            owner: format!("bench-{i}-plain"),
            ..request
        };
        let Acquire::Acquired(lease) = store.try_acquire(&request).await? else {
            return Err("bench-run is held".into());
        };
        let run = RunRecord {
            run_id: request.owner.clone(),
            token: Some(lease.token),
            ..run
        };
        let started = Instant::now();
        store.release(&lease).await?;
        store.append_run(&run).await?;
        if i >= 10 {
            acquires.push(acquired);
            ends.push(ended);
            two_calls.push(started.elapsed());
        }
    }
    for samples in [&mut acquires, &mut ends, &mut two_calls] {
        samples.sort();
    }
    println!(
        "store calls over {runs} runs: try_acquire (UpdateItem) median {:.2} ms, release_and_record (TransactWriteItems) median {:.2} ms; the same end as two plain calls (UpdateItem, PutItem) median {:.2} ms",
        ms(acquires[runs / 2]),
        ms(ends[runs / 2]),
        ms(two_calls[runs / 2]),
    );
    Ok(())
}

/// Records when the first request is about to be sent (after credentials and signing).
#[derive(Debug, Default)]
struct FirstTransmit(Arc<Mutex<Option<Instant>>>);

impl Intercept for FirstTransmit {
    fn name(&self) -> &'static str {
        "FirstTransmit"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.lock().unwrap().get_or_insert_with(Instant::now);
        Ok(())
    }
}

async fn startup(
    endpoint: &str,
    static_credentials: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let main_started = Instant::now();
    // How long ago the process was started, by the caller's clock (exec + loading).
    let before_main = std::env::var("BATCHLOCK_BENCH_T0_NS")
        .ok()
        .and_then(|t0| t0.parse::<u128>().ok())
        .map(|t0| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            Duration::from_nanos(now.saturating_sub(t0) as u64)
        })
        .unwrap_or_default();

    // Region and credentials from the environment (none, in the benchmark), endpoint given.
    let mut config = DynamoConfig::new("batchlock-startup").with_endpoint_url(endpoint);
    if static_credentials {
        config = config.with_static_credentials("test", "test");
    }
    let store = DynamoStore::connect(config).await?;
    let connected = main_started.elapsed();

    let first = FirstTransmit::default();
    let sent_at = Arc::clone(&first.0);
    let client = aws_sdk_dynamodb::Client::from_conf(
        store
            .client()
            .config()
            .to_builder()
            .interceptor(first)
            .build(),
    );
    let result = client
        .get_item()
        .table_name(store.table())
        .key(PARTITION_KEY, AttributeValue::S("lock#startup".into()))
        .key(SORT_KEY, AttributeValue::S("lock".into()))
        .send()
        .await;
    let answered = main_started.elapsed();
    let sent = *sent_at.lock().unwrap();
    let outcome = match &result {
        Ok(_) => "item read".to_owned(),
        Err(e) => {
            let text = aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string();
            text.chars().take(160).collect()
        }
    };
    println!(
        "region {} | exec to main {:.1} ms | connect (config load) {:.1} ms | first request sent: {} | first call returned {:.1} ms after main | {}",
        store.region(),
        ms(before_main),
        ms(connected),
        sent.map_or("never".to_owned(), |t| format!(
            "{:.1} ms after main ({:.1} ms after process start)",
            ms(t - main_started),
            ms(t - main_started + before_main)
        )),
        ms(answered),
        outcome,
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
