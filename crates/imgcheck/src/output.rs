//! Writing broken records and the summary.

use std::io::{self, Write};

use serde::Serialize;

use crate::outcome::Class;
use crate::run::{RecordResult, RunReport, Summary};

/// How broken records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutputFormat {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// One line of output: a broken record with its URL's verdict.
#[derive(Debug, Serialize)]
pub struct BrokenRecord<'a> {
    /// The record's id.
    pub id: &'a str,
    /// The record's URL as given.
    pub url: &'a str,
    /// The failure class.
    pub class: Class,
    /// The last HTTP status, if any.
    pub status: Option<u16>,
    /// Where redirects ended, if anywhere.
    pub final_url: Option<&'a str>,
    /// Attempts made.
    pub attempts: u32,
    /// Milliseconds spent on the URL.
    pub elapsed_ms: u64,
    /// What went wrong, in words.
    pub detail: Option<&'a str>,
}

impl<'a> From<&'a RecordResult> for BrokenRecord<'a> {
    fn from(r: &'a RecordResult) -> Self {
        BrokenRecord {
            id: &r.record.id,
            url: &r.record.url,
            class: r.outcome.class,
            status: r.outcome.status,
            final_url: r.outcome.final_url.as_deref(),
            attempts: r.outcome.attempts,
            elapsed_ms: r.outcome.elapsed.as_millis() as u64,
            detail: r.outcome.detail.as_deref(),
        }
    }
}

/// Writes one line per broken record of `report`, in input order.
pub fn write_broken(
    out: &mut dyn Write,
    format: OutputFormat,
    report: &RunReport,
) -> io::Result<()> {
    match format {
        OutputFormat::Jsonl => {
            for r in report.broken() {
                serde_json::to_writer(&mut *out, &BrokenRecord::from(r))?;
                out.write_all(b"\n")?;
            }
        }
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            // Written by hand so that an empty report still has its header.
            w.write_record([
                "id",
                "url",
                "class",
                "status",
                "final_url",
                "attempts",
                "elapsed_ms",
                "detail",
            ])
            .map_err(io::Error::other)?;
            for r in report.broken() {
                let b = BrokenRecord::from(r);
                w.write_record([
                    b.id,
                    b.url,
                    b.class.as_str(),
                    &b.status.map(|s| s.to_string()).unwrap_or_default(),
                    b.final_url.unwrap_or(""),
                    &b.attempts.to_string(),
                    &b.elapsed_ms.to_string(),
                    b.detail.unwrap_or(""),
                ])
                .map_err(io::Error::other)?;
            }
            w.flush()?;
        }
    }
    out.flush()
}

/// Writes the human summary (several lines).
pub fn write_summary(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "imgcheck: {} records, {} distinct URLs: {} checked, {} ok, {} skipped from cache, {} unchecked",
        s.records, s.distinct_urls, s.checked, s.ok, s.skipped_from_cache, s.unchecked
    )?;
    if !s.broken.is_empty() {
        let by_class: Vec<String> = s.broken.iter().map(|(c, n)| format!("{c}={n}")).collect();
        writeln!(
            out,
            "imgcheck: broken URLs by class: {} ({} broken records)",
            by_class.join(" "),
            s.broken_records
        )?;
    }
    if s.internal_errors > 0 {
        writeln!(
            out,
            "imgcheck: error: the check of {} URLs failed unexpectedly (class internal_error)",
            s.internal_errors
        )?;
    }
    if let Some(warning) = &s.cache_warning {
        writeln!(out, "imgcheck: warning: {warning}")?;
    }
    writeln!(
        out,
        "imgcheck: elapsed {:.2}s, {:.0} URLs/s{}",
        s.elapsed.as_secs_f64(),
        s.urls_per_second(),
        if s.deadline_reached {
            " — stopped at the run deadline (--max-runtime)"
        } else {
            ""
        }
    )
}
