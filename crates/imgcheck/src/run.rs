//! Checking a batch of records: deduplicate, consult the cache, check under the global limit,
//! stop at the deadline.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::Url;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cache::{CacheError, ResultCache};
use crate::checker::Checker;
use crate::input::Record;
use crate::outcome::{Class, UrlOutcome};

/// Exit code: every record is OK.
pub const EXIT_OK: u8 = 0;
/// Exit code: an unexpected error stopped the run, or a check failed unexpectedly (its
/// records are reported with class `internal_error`). Takes precedence over every other code.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: at least one record is broken (invalid URLs included).
pub const EXIT_BROKEN: u8 = 2;
/// Exit code: bad flags or unreadable input; nothing was checked.
pub const EXIT_CONFIG: u8 = 3;
/// Exit code: the run deadline (`--max-runtime`) was reached; unchecked records are reported
/// with class `unchecked`. Takes precedence over [`EXIT_BROKEN`].
pub const EXIT_DEADLINE: u8 = 4;

/// Default for how long a cached OK verdict stays valid.
pub const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Batch-level settings for [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop checking when this much time has passed since the run started.
    pub max_runtime: Option<Duration>,
    /// A cached OK verdict younger than this skips the URL.
    pub cache_max_age: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_runtime: None,
            cache_max_age: DEFAULT_CACHE_MAX_AGE,
        }
    }
}

/// Hooks for showing progress; every method has an empty default.
pub trait Progress {
    /// Checking starts with this many distinct URLs to request.
    fn start(&mut self, _urls_to_check: usize) {}
    /// One distinct URL is done (not called for cached or invalid URLs).
    fn url_done(&mut self, _outcome: &UrlOutcome) {}
    /// Checking ended (all done, or the deadline).
    fn finish(&mut self) {}
}

impl Progress for () {}

/// One input record and the verdict on its URL.
#[derive(Debug, Clone)]
pub struct RecordResult {
    /// The input record.
    pub record: Record,
    /// The verdict, shared by all records with the same URL.
    pub outcome: Arc<UrlOutcome>,
}

/// Counts for the end-of-run summary. URL counts are over distinct URLs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Input records.
    pub records: usize,
    /// Records whose verdict is not OK (unchecked included).
    pub broken_records: usize,
    /// Distinct URLs in the input (invalid ones included).
    pub distinct_urls: usize,
    /// Distinct URLs requested in this run.
    pub checked: usize,
    /// Distinct URLs found OK in this run or in the cache.
    pub ok: usize,
    /// Distinct URLs per failure class.
    pub broken: BTreeMap<Class, usize>,
    /// Distinct URLs skipped because the cache had a fresh OK verdict.
    pub skipped_from_cache: usize,
    /// Distinct URLs not checked because the deadline came first.
    pub unchecked: usize,
    /// Wall time of the run.
    #[serde(serialize_with = "serialize_secs")]
    pub elapsed: Duration,
    /// True when the run stopped at its deadline.
    pub deadline_reached: bool,
    /// Distinct URLs whose check failed unexpectedly (class `internal_error`, also counted in
    /// `broken`).
    pub internal_errors: usize,
    /// Why this run's verdicts could not be stored in the result cache, if they could not.
    /// Only a warning: the verdicts themselves are complete, and the next run simply checks
    /// again what this one could not record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_warning: Option<String>,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Summary {
    /// Checked URLs per second of run time.
    pub fn urls_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.checked as f64 / secs
        } else {
            0.0
        }
    }

    /// The process exit code this summary calls for ([`EXIT_OK`], [`EXIT_ERROR`],
    /// [`EXIT_BROKEN`] or [`EXIT_DEADLINE`]).
    pub fn exit_code(&self) -> u8 {
        if self.internal_errors > 0 {
            EXIT_ERROR
        } else if self.deadline_reached {
            EXIT_DEADLINE
        } else if self.broken_records > 0 {
            EXIT_BROKEN
        } else {
            EXIT_OK
        }
    }
}

/// Everything a run found out.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// One entry per input record, in input order.
    pub results: Vec<RecordResult>,
    /// The counts.
    pub summary: Summary,
}

impl RunReport {
    /// The records whose verdict is not OK, in input order.
    pub fn broken(&self) -> impl Iterator<Item = &RecordResult> {
        self.results.iter().filter(|r| !r.outcome.class.is_ok())
    }
}

/// A distinct URL and the records that carry it.
struct Target {
    key: String,
    parsed: Option<Url>,
    records: Vec<usize>,
}

/// Checks every record and returns a verdict for each.
///
/// Each distinct URL is requested once, however many records carry it. URLs are interleaved
/// by host so that one big host cannot occupy every global slot while its per-host limit
/// makes them wait. At the deadline the checks in flight are cancelled and every URL without a
/// verdict is reported as [`Class::Unchecked`]. With a cache, fresh OK verdicts are reused and
/// this run's verdicts are stored (also after a deadline).
///
/// Errors only when the cache cannot be read, before any request is sent. Failing to store
/// the verdicts afterwards is not an error: the report is returned with
/// [`Summary::cache_warning`] set, so that the broken records still get written.
pub async fn run(
    checker: &Checker,
    records: Vec<Record>,
    options: &RunOptions,
    cache: Option<&mut ResultCache>,
    progress: &mut dyn Progress,
) -> Result<RunReport, CacheError> {
    let check = |url: Url| {
        let checker = checker.clone();
        async move { checker.check_url(&url).await }
    };
    run_with(
        checker.concurrency(),
        check,
        records,
        options,
        cache,
        progress,
    )
    .await
}

/// [`run`] with the check of one URL given as a function, so tests can make it misbehave.
async fn run_with<F, Fut>(
    concurrency: usize,
    check: F,
    records: Vec<Record>,
    options: &RunOptions,
    cache: Option<&mut ResultCache>,
    progress: &mut dyn Progress,
) -> Result<RunReport, CacheError>
where
    F: Fn(Url) -> Fut,
    Fut: Future<Output = UrlOutcome> + Send + 'static,
{
    let started = Instant::now();
    let deadline = options.max_runtime.map(|d| started + d);

    let mut targets: Vec<Target> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        let raw = record.url.trim();
        // The fragment never reaches the server: `a.png#x` and `a.png` are one request.
        let parsed = Url::parse(raw).ok().map(|mut url| {
            url.set_fragment(None);
            url
        });
        let key = parsed
            .as_ref()
            .map_or_else(|| raw.to_string(), Url::to_string);
        let t = *by_key.entry(key.clone()).or_insert_with(|| {
            targets.push(Target {
                key,
                parsed,
                records: Vec::new(),
            });
            targets.len() - 1
        });
        targets[t].records.push(i);
    }

    let mut outcomes: Vec<Option<Arc<UrlOutcome>>> = vec![None; targets.len()];
    let mut skipped_from_cache = 0;
    let now = SystemTime::now();
    let mut to_check: Vec<usize> = Vec::new();
    for (t, target) in targets.iter().enumerate() {
        let Some(url) = &target.parsed else {
            let detail = if target.key.is_empty() {
                "empty URL".to_string()
            } else {
                format!("`{}` is not an absolute URL", target.key)
            };
            outcomes[t] = Some(Arc::new(UrlOutcome::without_request(
                target.key.clone(),
                Class::InvalidUrl,
                Some(detail),
            )));
            continue;
        };
        if let Some(cache) = cache.as_deref() {
            if cache
                .fresh_ok(url.as_str(), options.cache_max_age, now)?
                .is_some()
            {
                let mut outcome = UrlOutcome::without_request(target.key.clone(), Class::Ok, None);
                outcome.from_cache = true;
                outcomes[t] = Some(Arc::new(outcome));
                skipped_from_cache += 1;
                continue;
            }
        }
        to_check.push(t);
    }

    let order = interleave_by_host(&targets, to_check);
    progress.start(order.len());
    let mut deadline_reached = false;
    {
        let jobs = order.into_iter().map(|t| {
            let url = targets[t]
                .parsed
                .clone()
                .expect("only parsed URLs are checked");
            // Spawned, so checks run on every worker thread; AbortOnDrop cancels them when the
            // deadline drops the stream.
            AbortOnDrop(t, tokio::spawn(check(url)))
        });
        let mut done = futures_util::stream::iter(jobs).buffer_unordered(concurrency);
        loop {
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, done.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        deadline_reached = true;
                        break;
                    }
                },
                None => done.next().await,
            };
            match next {
                Some((t, Ok(outcome))) => {
                    progress.url_done(&outcome);
                    outcomes[t] = Some(Arc::new(outcome));
                }
                Some((t, Err(join_error))) => {
                    // A check never panics by design; if one did, report the URL as an
                    // internal error (exit code 1) rather than lose it or blame the deadline.
                    tracing::error!(%join_error, url = %targets[t].key, "a check task failed");
                    let outcome = UrlOutcome::without_request(
                        targets[t].key.clone(),
                        Class::InternalError,
                        Some(format!(
                            "the check failed unexpectedly: {}",
                            join_message(join_error)
                        )),
                    );
                    progress.url_done(&outcome);
                    outcomes[t] = Some(Arc::new(outcome));
                }
                None => break,
            }
        }
    }
    progress.finish();

    let mut cache_warning = None;
    if let Some(cache) = cache {
        let verdicts = targets.iter().zip(&outcomes).filter_map(|(target, o)| {
            let o = o.as_ref()?;
            if o.from_cache || target.parsed.is_none() {
                return None;
            }
            Some((target.key.as_str(), o.class.is_ok(), o.final_url.as_deref()))
        });
        if let Err(e) = cache.store(verdicts, SystemTime::now()) {
            tracing::warn!(error = %e, "the result cache was not updated");
            cache_warning = Some(format!("the result cache was not updated: {e}"));
        }
    }

    let mut summary = Summary {
        records: records.len(),
        distinct_urls: targets.len(),
        skipped_from_cache,
        deadline_reached,
        cache_warning,
        ..Summary::default()
    };
    let mut results: Vec<Option<RecordResult>> = vec![None; records.len()];
    let mut records: Vec<Option<Record>> = records.into_iter().map(Some).collect();
    for (target, outcome) in targets.iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|| {
            // Only the deadline leaves a URL without a verdict; anything else is a bug.
            let (class, detail) = if deadline_reached {
                (Class::Unchecked, "the run deadline came first")
            } else {
                (Class::InternalError, "no verdict was recorded")
            };
            Arc::new(UrlOutcome::without_request(
                target.key.clone(),
                class,
                Some(detail.to_string()),
            ))
        });
        if outcome.attempts > 0 {
            summary.checked += 1;
        }
        match outcome.class {
            Class::Ok => summary.ok += 1,
            Class::Unchecked => summary.unchecked += 1,
            class => *summary.broken.entry(class).or_default() += 1,
        }
        if outcome.class == Class::InternalError {
            summary.internal_errors += 1;
        }
        if !outcome.class.is_ok() {
            summary.broken_records += target.records.len();
        }
        for &i in &target.records {
            let record = records[i]
                .take()
                .expect("each record belongs to one target");
            results[i] = Some(RecordResult {
                record,
                outcome: outcome.clone(),
            });
        }
    }
    summary.elapsed = started.elapsed();
    let results = results
        .into_iter()
        .map(|r| r.expect("every record has a result"))
        .collect();
    Ok(RunReport { results, summary })
}

/// Orders targets round-robin over hosts: a, b, c, a, b, c, ...
fn interleave_by_host(targets: &[Target], indices: Vec<usize>) -> Vec<usize> {
    let mut queues: Vec<VecDeque<usize>> = Vec::new();
    let mut by_host: HashMap<String, usize> = HashMap::new();
    for t in indices {
        let url = targets[t].parsed.as_ref();
        let host = url.map_or(String::new(), |u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        });
        let q = *by_host.entry(host).or_insert_with(|| {
            queues.push(VecDeque::new());
            queues.len() - 1
        });
        queues[q].push_back(t);
    }
    let mut order = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        for q in &mut queues {
            if let Some(t) = q.pop_front() {
                order.push(t);
            }
        }
    }
    order
}

/// The panic message of a failed task, or the join error itself.
fn join_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("it panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("it panicked: {s}")
    } else {
        "it panicked".to_string()
    }
}

/// The spawned check of target `.0`, aborted when its handle is dropped. Yields the target
/// with the task's result, so a failed task can still be matched to its URL.
struct AbortOnDrop<T>(usize, JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.1.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = (usize, Result<T, tokio::task::JoinError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let t = self.0;
        Pin::new(&mut self.1).poll(cx).map(|r| (t, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_alternates_hosts() {
        let targets: Vec<Target> = ["http://a/1", "http://a/2", "http://a/3", "http://b/1"]
            .iter()
            .map(|u| Target {
                key: u.to_string(),
                parsed: Url::parse(u).ok(),
                records: vec![],
            })
            .collect();
        assert_eq!(
            interleave_by_host(&targets, vec![0, 1, 2, 3]),
            vec![0, 3, 1, 2]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicked_check_is_an_unexpected_error() {
        let check = |url: Url| async move {
            assert!(!url.path().contains("boom"), "the check blew up");
            let mut outcome = UrlOutcome::without_request(url.to_string(), Class::Ok, None);
            outcome.attempts = 1;
            outcome
        };
        let records = vec![
            Record::new("1", "http://a.test/ok.png"),
            Record::new("2", "http://a.test/boom.png"),
            Record::new("3", "http://a.test/boom.png"),
        ];
        let report = run_with(2, check, records, &RunOptions::default(), None, &mut ())
            .await
            .unwrap();
        let s = &report.summary;
        assert_eq!(s.exit_code(), EXIT_ERROR, "{s:?}");
        assert_eq!((s.ok, s.unchecked, s.broken_records), (1, 0, 2), "{s:?}");
        for r in &report.results[1..] {
            assert_eq!(r.outcome.class.as_str(), "internal_error", "{r:?}");
            let detail = r.outcome.detail.as_deref().unwrap_or("");
            assert!(detail.contains("the check blew up"), "{detail}");
        }
    }

    #[test]
    fn exit_code_prefers_error_then_deadline_then_broken() {
        let mut s = Summary {
            broken_records: 1,
            ..Summary::default()
        };
        assert_eq!(s.exit_code(), EXIT_BROKEN);
        s.deadline_reached = true;
        assert_eq!(s.exit_code(), EXIT_DEADLINE);
        s.internal_errors = 1;
        assert_eq!(s.exit_code(), EXIT_ERROR);
        assert_eq!(Summary::default().exit_code(), EXIT_OK);
    }
}
