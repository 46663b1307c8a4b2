//! The subcommands: option resolution and output formatting over the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use batchlock::config::{ConfigFile, ConflictMode, JobConfig, StoreLocation};
use batchlock::supervisor::{
    self, ConflictPolicy, DEFAULT_LEASE, DEFAULT_WAIT_TIMEOUT, LeaseTiming, RunSpec, exit,
};
use batchlock::{
    Holder, LeaseStore, LockKey, LockRecord, RunOutcome, RunRecord, lease::now_millis,
};

use crate::UsageError;
use crate::cli::{Cli, Command, OnConflict, RunArgs};

pub async fn run(cli: Cli) -> Result<u8> {
    let config = load_config(cli.config.as_deref())?;
    let location = store_location(cli.store.as_deref(), &config)?;
    let t = cli.store_timeout;
    match cli.command {
        Command::Run(args) => run_job(args, &config, &location, t).await,
        Command::Status { key, json } => status(&*open(&location, t).await?, key, json).await,
        Command::Stop { key } => stop(&*open(&location, t).await?, &key).await,
        Command::Release { key, force } => release(&*open(&location, t).await?, &key, force).await,
        Command::History { key, limit, json } => {
            history(&*open(&location, t).await?, key, limit, json).await
        }
        Command::Init => init(&location, t).await,
        Command::Doctor => doctor(&location, t).await,
    }
}

fn load_config(explicit: Option<&std::path::Path>) -> Result<ConfigFile> {
    if let Some(path) = explicit {
        return Ok(ConfigFile::load(path)?);
    }
    let local = PathBuf::from("batchlock.toml");
    if local.is_file() {
        return Ok(ConfigFile::load(&local)?);
    }
    Ok(ConfigFile::default())
}

/// `--store`/`BATCHLOCK_STORE`, then `BATCH_LOCK_TABLE`, then the config file, then SQLite.
fn store_location(flag: Option<&str>, config: &ConfigFile) -> Result<StoreLocation> {
    if let Some(url) = flag.filter(|s| !s.is_empty()) {
        return Ok(url.parse()?);
    }
    if let Some(table) = std::env::var(batchlock_dynamodb::TABLE_ENV)
        .ok()
        .filter(|t| !t.is_empty())
    {
        return format!("dynamodb:{table}")
            .parse()
            .with_context(|| format!("reading {}", batchlock_dynamodb::TABLE_ENV));
    }
    if let Some(url) = &config.store {
        return Ok(url.parse()?);
    }
    Ok(StoreLocation::Sqlite(batchlock::sqlite::default_path()))
}

async fn connect_dynamodb(
    table: &str,
    store_timeout: Duration,
) -> Result<batchlock_dynamodb::DynamoStore> {
    let mut config = batchlock_dynamodb::DynamoConfig::new(table);
    // One store call, retries included, must fit in --store-timeout.
    config.operation_timeout = store_timeout;
    config.attempt_timeout = config.attempt_timeout.min(store_timeout);
    config.connect_timeout = config.connect_timeout.min(store_timeout);
    batchlock_dynamodb::DynamoStore::connect(config)
        .await
        .context("connecting to the lock table")
}

async fn open(location: &StoreLocation, store_timeout: Duration) -> Result<Arc<dyn LeaseStore>> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Arc::new(
            batchlock::SqliteStore::open_with_busy_timeout(path, store_timeout)
                .context("opening the lock store")?,
        )),
        // A store private to one process excludes nothing between `batchlock` processes.
        StoreLocation::Memory => Err(UsageError(
            "store memory: only exists inside one process, so it cannot exclude other runs; use sqlite:PATH or dynamodb:TABLE".into(),
        )
        .into()),
        StoreLocation::DynamoDb(table) => {
            Ok(Arc::new(connect_dynamodb(table, store_timeout).await?))
        }
    }
}

async fn init(location: &StoreLocation, store_timeout: Duration) -> Result<u8> {
    match location {
        StoreLocation::DynamoDb(table) => {
            let store = connect_dynamodb(table, store_timeout).await?;
            let outcome = batchlock_dynamodb::init_table(&store)
                .await
                .with_context(|| format!("initialising table `{table}`"))?;
            println!("{}: {outcome}", store.describe());
        }
        other => {
            let store = open(other, store_timeout).await?;
            println!("{} is ready", store.describe());
        }
    }
    Ok(exit::OK)
}

async fn doctor(location: &StoreLocation, store_timeout: Duration) -> Result<u8> {
    match location {
        StoreLocation::DynamoDb(table) => {
            let store = connect_dynamodb(table, store_timeout).await?;
            let report = batchlock_dynamodb::doctor(&store).await;
            print!("{report}");
            Ok(if report.is_healthy() {
                exit::OK
            } else {
                exit::STORE
            })
        }
        other => {
            // For SQLite, opening creates and checks the schema; a list proves it reads.
            let store = open(other, store_timeout).await?;
            let locks = store.list().await?;
            println!("ok   {} ({} lock records)", store.describe(), locks.len());
            Ok(exit::OK)
        }
    }
}

async fn run_job(
    args: RunArgs,
    config: &ConfigFile,
    location: &StoreLocation,
    store_timeout: Duration,
) -> Result<u8> {
    let job = match &args.job {
        Some(name) => config.job(name)?,
        None => JobConfig::default(),
    };
    let key = match (&args.key, &job.key) {
        (Some(k), _) => LockKey::new(k.clone())?,
        (None, Some(k)) => k.clone(),
        (None, None) => {
            return Err(UsageError(
                "no lock key: pass --key KEY or a job name from the config file".into(),
            )
            .into());
        }
    };
    let command = if !args.command.is_empty() {
        args.command.clone()
    } else if let Some(cmd) = job.command.clone().filter(|c| !c.is_empty()) {
        cmd.into_iter().map(Into::into).collect()
    } else {
        return Err(UsageError(
            "missing command after `--`: batchlock run --key KEY -- CMD ARGS...".into(),
        )
        .into());
    };
    let lease = args
        .lease
        .or(job.lease.map(|d| d.0))
        .unwrap_or(DEFAULT_LEASE);
    let mut timing = LeaseTiming::new(lease);
    if let Some(g) = args.kill_grace.or(job.kill_grace.map(|d| d.0)) {
        timing.kill_grace = g;
    }
    if let Some(s) = args.clock_skew.or(job.clock_skew.map(|d| d.0)) {
        timing.clock_skew = s;
    }
    timing.validate()?;
    let timeout = args.timeout.or(job.timeout.map(|d| d.0));
    if timeout.is_none() && (args.require_timeout || config.require_timeout) {
        return Err(UsageError(format!(
            "job `{key}` has no maximum runtime, and one is required: pass --timeout DURATION or set `timeout` for the job"
        ))
        .into());
    }
    let mode = match args.on_conflict {
        Some(OnConflict::Skip) => ConflictMode::Skip,
        Some(OnConflict::Fail) => ConflictMode::Fail,
        Some(OnConflict::Wait) => ConflictMode::Wait,
        None => job.on_conflict.unwrap_or(ConflictMode::Skip),
    };
    let conflict = match mode {
        ConflictMode::Skip => ConflictPolicy::Skip,
        ConflictMode::Fail => ConflictPolicy::Fail,
        ConflictMode::Wait => ConflictPolicy::Wait(
            args.wait_timeout
                .or(job.wait_timeout.map(|d| d.0))
                .unwrap_or(DEFAULT_WAIT_TIMEOUT),
        ),
    };
    // On ECS this adds the task ARN, cluster and family; elsewhere it returns at once.
    let mut holder = batchlock_dynamodb::ecs_holder().await;
    if let Some(name) = &args.job {
        holder.details.insert("job".into(), name.clone());
    }
    let store = open(location, store_timeout).await?;
    let spec = RunSpec {
        key,
        command,
        timing,
        timeout,
        conflict,
        conflict_exit_code: args.conflict_exit_code.or(job.conflict_exit_code),
        holder,
        store_timeout,
        on_lost: args.on_lost.clone().or(job.on_lost.clone()),
    };
    let report = supervisor::run(store, spec).await?;
    Ok(report.exit_code)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn ago(ms: u64, now: u64) -> String {
    format!("{}s ago", now.saturating_sub(ms) / 1000)
}

fn state(rec: &LockRecord, now: u64) -> &'static str {
    match (rec.owner.is_some(), rec.is_held_at(now), rec.stop_requested) {
        (false, _, _) => "free",
        (true, false, _) => "expired",
        (true, true, true) => "stopping",
        (true, true, false) => "held",
    }
}

async fn status(store: &dyn LeaseStore, key: Option<String>, json: bool) -> Result<u8> {
    let records = match &key {
        Some(k) => store
            .get(LockKey::new(k.clone())?.as_str())
            .await?
            .into_iter()
            .collect(),
        None => store.list().await?,
    };
    let now = now_millis();
    if json {
        let items: Vec<_> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "key": r.key,
                    "state": state(r, now),
                    "token": r.token.0,
                    "run_id": r.owner,
                    "holder": r.holder,
                    "acquired_at": r.owner.as_ref().map(|_| rfc3339(r.acquired_at_ms)),
                    "renewed_at": r.owner.as_ref().map(|_| rfc3339(r.renewed_at_ms)),
                    "expires_at": r.owner.as_ref().map(|_| rfc3339(r.expires_at_ms)),
                    "expires_in_ms": r.is_held_at(now).then(|| r.expires_at_ms - now),
                    "stop_requested": r.stop_requested,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(exit::OK);
    }
    if records.is_empty() {
        match key {
            Some(k) => println!("{k}: free (never used) in {}", store.describe()),
            None => println!("no locks in {}", store.describe()),
        }
        return Ok(exit::OK);
    }
    println!(
        "{:<28} {:<8} {:>6}  {:<32} {:<21} {:<10} {:<10}",
        "KEY", "STATE", "TOKEN", "HOLDER", "SINCE", "HEARTBEAT", "EXPIRES IN"
    );
    for r in &records {
        let held = r.owner.is_some();
        let holder = r
            .holder
            .as_ref()
            .filter(|_| held)
            .map_or("-".into(), ToString::to_string);
        println!(
            "{:<28} {:<8} {:>6}  {:<32} {:<21} {:<10} {:<10}",
            r.key,
            state(r, now),
            r.token.0,
            holder,
            if held {
                rfc3339(r.acquired_at_ms)
            } else {
                "-".into()
            },
            if held {
                ago(r.renewed_at_ms, now)
            } else {
                "-".into()
            },
            if r.is_held_at(now) {
                format!("{}s", (r.expires_at_ms - now).div_ceil(1000))
            } else {
                "-".into()
            },
        );
    }
    Ok(exit::OK)
}

async fn stop(store: &dyn LeaseStore, key: &str) -> Result<u8> {
    let key = LockKey::new(key)?;
    match store.request_stop(key.as_str()).await? {
        Some(rec) => {
            let heartbeat = rec.expires_at_ms.saturating_sub(rec.renewed_at_ms) / 3;
            println!(
                "asked {} (run {}) to stop `{key}`; it terminates the command at its next heartbeat, within about {}s",
                rec.holder
                    .as_ref()
                    .map_or("the holder".into(), ToString::to_string),
                rec.owner.as_deref().unwrap_or("?"),
                heartbeat.div_ceil(1000)
            );
            Ok(exit::OK)
        }
        None => {
            println!("`{key}` is not held; nothing to stop");
            Ok(1)
        }
    }
}

async fn release(store: &dyn LeaseStore, key: &str, force: bool) -> Result<u8> {
    let key = LockKey::new(key)?;
    if !force {
        return Err(UsageError(format!(
            "`release` frees `{key}` even while its holder runs, so it needs --force; to end a run gracefully use `batchlock stop {key}`"
        ))
        .into());
    }
    let operator = Holder::current();
    let previous = store.force_release(key.as_str()).await?;
    let message = match &previous {
        Some(rec) => format!(
            "force-released by {operator}; previous holder {} (run {}, token {})",
            rec.holder
                .as_ref()
                .map_or("unknown".into(), ToString::to_string),
            rec.owner.as_deref().unwrap_or("?"),
            rec.token
        ),
        None => format!("force-release by {operator}: lock was not held"),
    };
    let now = now_millis();
    store
        .append_run(&RunRecord {
            key: key.to_string(),
            run_id: format!("force-release-{now}"),
            token: previous.as_ref().map(|r| r.token),
            holder: operator,
            command: vec![],
            started_at_ms: now,
            ended_at_ms: now,
            outcome: RunOutcome::ForceReleased,
            exit_code: None,
            signal: None,
            message: Some(message.clone()),
        })
        .await
        .context("recording the force-release in the history")?;
    println!("{message}");
    Ok(exit::OK)
}

async fn history(
    store: &dyn LeaseStore,
    key: Option<String>,
    limit: usize,
    json: bool,
) -> Result<u8> {
    let key = key.map(LockKey::new).transpose()?;
    let runs = store
        .list_runs(key.as_ref().map(LockKey::as_str), limit)
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        println!("no runs recorded in {}", store.describe());
        return Ok(exit::OK);
    }
    println!(
        "{:<21} {:<24} {:<14} {:>5} {:>9}  {:<32} MESSAGE",
        "STARTED", "KEY", "OUTCOME", "EXIT", "DURATION", "HOLDER"
    );
    for r in &runs {
        let exit = match (r.exit_code, r.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("sig{s}"),
            _ => "-".into(),
        };
        let secs = r.ended_at_ms.saturating_sub(r.started_at_ms) as f64 / 1000.0;
        println!(
            "{:<21} {:<24} {:<14} {:>5} {:>8.1}s  {:<32} {}",
            rfc3339(r.started_at_ms),
            r.key,
            r.outcome.as_str(),
            exit,
            secs,
            r.holder.to_string(),
            r.message.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}
