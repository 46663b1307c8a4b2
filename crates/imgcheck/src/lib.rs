//! Check many image URLs fast, bounded and politely.
//!
//! Built to replace a nightly batch that checked article images one at a time without
//! timeouts and ran for 15 hours. The checker:
//!
//! * asks `HEAD` first and falls back to a `GET` for the first 16 bytes
//!   (`Range: bytes=0-15`) when a server rejects `HEAD` or sends no useful `Content-Type`,
//!   and never reads more than a capped number of bytes of a body;
//! * accepts a URL only when the final status is 2xx and the answer is an image
//!   (`image/*`, or image magic bytes behind a missing or generic type);
//! * bounds everything: global and per-host concurrency, a connect timeout and one deadline
//!   per attempt covering all its hops (`HEAD`, `GET` fallback, redirects),
//!   capped retries for transient failures only, capped `Retry-After`, and a run deadline;
//! * requests each distinct URL once, however many records carry it, and can skip URLs a
//!   [`ResultCache`] saw OK recently.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use imgcheck::{Checker, Record, RunOptions};
//!
//! let checker = Checker::builder().concurrency(64).per_host(8).build()?;
//! let records = vec![Record::new("article-1", "https://example.com/a.png")];
//! let report = imgcheck::run(&checker, records, &RunOptions::default(), None, &mut ()).await?;
//! for broken in report.broken() {
//!     println!("{} {} {}", broken.record.id, broken.record.url, broken.outcome.class);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod cache;
mod checker;
mod input;
mod outcome;
mod output;
mod resolve;
mod retry;
mod run;
mod sniff;

pub use cache::{CacheError, ResultCache};
pub use checker::{
    BuildError, Checker, CheckerBuilder, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX,
    DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_REDIRECTS,
    DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRY_AFTER, DEFAULT_PER_HOST, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_USER_AGENT,
};
pub use input::{InputError, InputFormat, InputOptions, Record, read_records};
pub use outcome::{Class, UrlOutcome};
pub use output::{BrokenRecord, OutputFormat, write_broken, write_summary};
pub use reqwest::Url;
pub use resolve::ResolveError;
pub use run::{
    DEFAULT_CACHE_MAX_AGE, EXIT_BROKEN, EXIT_CONFIG, EXIT_DEADLINE, EXIT_ERROR, EXIT_OK, Progress,
    RecordResult, RunOptions, RunReport, Summary, run,
};
pub use sniff::{SNIFF_LEN, looks_like_image};
