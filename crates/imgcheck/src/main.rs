//! `imgcheck`: check the image URLs of many records; see `imgcheck --help` and the README.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use imgcheck::{
    Checker, InputFormat, InputOptions, OutputFormat, Progress, ResultCache, RunOptions, UrlOutcome,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const EXIT_CODES: &str = "\
Exit codes:
  0  every record is OK
  1  unexpected error, also when a check failed internally (its records are reported
     with class `internal_error`)
  2  broken records found (their lines are on the output)
  3  configuration or input error; nothing was checked
  4  --max-runtime reached; unchecked records are reported with class `unchecked`";

/// Check image URLs: HEAD, then a small ranged GET; bounded, polite, never hangs.
///
/// Reads (id, url) records and writes one line per broken record; a summary goes to stderr.
#[derive(Parser, Debug)]
#[command(name = "imgcheck", version, after_help = EXIT_CODES)]
struct Args {
    /// Input file; `-` or nothing reads stdin.
    input: Option<PathBuf>,

    /// Input layout; `auto` looks at the file extension, then the first line.
    #[arg(long, value_enum, default_value_t = InFormat::Auto)]
    input_format: InFormat,

    /// Id column: CSV header name or 1-based number, or JSON field [default: id, else the
    /// row number]
    #[arg(long)]
    id_column: Option<String>,

    /// URL column: CSV header name or 1-based number, or JSON field [default: url]
    #[arg(long)]
    url_column: Option<String>,

    /// The CSV has no header row (columns by number; defaults id=1, url=2).
    #[arg(long)]
    no_header: bool,

    /// Output format of the broken records.
    #[arg(long, value_enum, default_value_t = OutFormat::Jsonl)]
    format: OutFormat,

    /// Write broken records here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,

    /// URLs checked at once over all hosts.
    #[arg(long, default_value_t = imgcheck::DEFAULT_CONCURRENCY)]
    concurrency: usize,

    /// Requests in flight to one host:port at once.
    #[arg(long, default_value_t = imgcheck::DEFAULT_PER_HOST)]
    per_host: usize,

    /// TCP connect timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    connect_timeout: Duration,

    /// Time allowed for one attempt at a URL, all hops together: DNS, connect, answer and body
    /// of the HEAD, the GET fallback and every redirect. Each retry gets a fresh allowance;
    /// waits for a --per-host slot and backoff waits do not count.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    timeout: Duration,

    /// Retries after a timeout, 5xx or 429.
    #[arg(long, default_value_t = imgcheck::DEFAULT_MAX_RETRIES)]
    max_retries: u32,

    /// First backoff wait; doubles per retry, with jitter.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    backoff: Duration,

    /// Longest backoff wait.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    max_backoff: Duration,

    /// Longest wait honoured from a server's Retry-After.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    max_retry_after: Duration,

    /// Redirects followed at most.
    #[arg(long, default_value_t = imgcheck::DEFAULT_MAX_REDIRECTS)]
    max_redirects: usize,

    /// Stop the whole run after this long (e.g. `30m`); exit code 4.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_runtime: Option<Duration>,

    /// SQLite result cache: URLs seen OK within --cache-max-age are skipped.
    #[arg(long)]
    cache: Option<PathBuf>,

    /// How long an OK verdict in the cache stays valid.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    cache_max_age: Duration,

    /// Never show the progress bar (it only shows on a terminal anyway).
    #[arg(long)]
    no_progress: bool,

    /// User-Agent header.
    #[arg(long, default_value = imgcheck::DEFAULT_USER_AGENT)]
    user_agent: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum InFormat {
    Auto,
    Csv,
    Jsonl,
    Lines,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutFormat {
    Jsonl,
    Csv,
}

/// An error that means "your flags or input are wrong" (exit 3), not "something broke".
#[derive(Debug)]
struct ConfigError(anyhow::Error);

fn main() -> ExitCode {
    raise_open_file_limit();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                imgcheck::EXIT_CONFIG
            } else {
                imgcheck::EXIT_OK
            });
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("imgcheck: error: {e:#}");
            ExitCode::from(imgcheck::EXIT_CONFIG)
        }
        Err(Failure::Other(e)) => {
            if is_broken_pipe(&e) {
                return ExitCode::from(imgcheck::EXIT_OK);
            }
            eprintln!("imgcheck: error: {e:#}");
            ExitCode::from(imgcheck::EXIT_ERROR)
        }
    }
}

enum Failure {
    Config(anyhow::Error),
    Other(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e.0)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

fn config<T, E: Into<anyhow::Error>>(r: Result<T, E>, what: &str) -> Result<T, ConfigError> {
    r.map_err(|e| ConfigError(Into::<anyhow::Error>::into(e).context(what.to_string())))
}

/// Raises the soft open-file limit to the hard one. Every check in flight holds a socket and
/// idle keep-alive connections hold more, so the usual soft limit of 1024 can run out at high
/// `--concurrency` over many hosts, and each `EMFILE` would be misreported as a broken image.
/// Not fatal when it fails.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn run(args: Args) -> Result<ExitCode, Failure> {
    let options = InputOptions {
        format: match args.input_format {
            InFormat::Auto => InputFormat::Auto,
            InFormat::Csv => InputFormat::Csv,
            InFormat::Jsonl => InputFormat::Jsonl,
            InFormat::Lines => InputFormat::Lines,
        },
        id_column: args.id_column.clone(),
        url_column: args.url_column.clone(),
        no_header: args.no_header,
    };
    let records = match args.input.as_deref() {
        None => config(
            imgcheck::read_records(io::stdin().lock(), None, &options),
            "reading stdin",
        )?,
        Some(p) if p.as_os_str() == "-" => config(
            imgcheck::read_records(io::stdin().lock(), None, &options),
            "reading stdin",
        )?,
        Some(path) => {
            let file = config(
                File::open(path),
                &format!("opening input `{}`", path.display()),
            )?;
            config(
                imgcheck::read_records(file, Some(path), &options),
                &format!("reading input `{}`", path.display()),
            )?
        }
    };
    let checker = config(
        Checker::builder()
            .concurrency(args.concurrency)
            .per_host(args.per_host)
            .connect_timeout(args.connect_timeout)
            .request_timeout(args.timeout)
            .max_retries(args.max_retries)
            .backoff(args.backoff, args.max_backoff)
            .max_retry_after(args.max_retry_after)
            .max_redirects(args.max_redirects)
            .user_agent(args.user_agent.clone())
            .build(),
        "checking the settings",
    )?;
    let mut cache = match &args.cache {
        Some(path) => Some(config(ResultCache::open(path), "opening the result cache")?),
        None => None,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(config(
            File::create(path),
            &format!("creating output `{}`", path.display()),
        )?)),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let run_options = RunOptions {
        max_runtime: args.max_runtime,
        cache_max_age: args.cache_max_age,
    };
    let mut progress = Bar::new(!args.no_progress && io::stderr().is_terminal());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(imgcheck::run(
            &checker,
            records,
            &run_options,
            cache.as_mut(),
            &mut progress,
        ))
        .context("reading the result cache")?;
    // Cancelled checks may still hold sockets; do not wait for them.
    runtime.shutdown_background();

    let format = match args.format {
        OutFormat::Jsonl => OutputFormat::Jsonl,
        OutFormat::Csv => OutputFormat::Csv,
    };
    imgcheck::write_broken(&mut out, format, &report).context("writing the broken records")?;
    imgcheck::write_summary(&mut io::stderr().lock(), &report.summary)
        .context("writing the summary")?;
    Ok(ExitCode::from(report.summary.exit_code()))
}

/// The progress bar, drawn on stderr only when it is a terminal.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(show: bool) -> Self {
        Bar(show.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} URLs, {elapsed} elapsed, eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }))
    }
}

impl Progress for Bar {
    fn start(&mut self, urls_to_check: usize) {
        if let Some(bar) = &self.0 {
            bar.set_length(urls_to_check as u64);
        }
    }

    fn url_done(&mut self, _outcome: &UrlOutcome) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}
