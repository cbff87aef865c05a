//! `offload load`: its flags (clap derive), their translation into a validated [`Plan`], and
//! the command itself. Also the duration parser every command's flags use.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use clap::Args;

use crate::load::{
    Mode, Plan, PlanError, Progress, Stop, Target, draw_progress, render, run as run_load,
};

/// Closed-loop run length when neither `-d` nor `-a` is given: autocannon's default.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Load an HTTP endpoint and report latency, throughput and every failure.
///
/// Closed loop by default (like autocannon and wrk); `-R` switches to an open loop whose
/// latencies are corrected for coordinated omission (like wrk2).
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Target URL, http:// only (e.g. http://127.0.0.1:3000/health). Must be a loopback
    /// address unless --allow-remote is given.
    #[arg(value_name = "URL")]
    pub url: String,

    /// Connections kept open (keep-alive); each has one request in flight at a time.
    #[arg(short = 'c', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Measure for this long: seconds, or with a unit (500ms, 10s, 2m). Default 10 s in a
    /// closed loop when -a is not given; required (or -a) with -R.
    #[arg(short = 'd', long, value_parser = parse_duration, allow_negative_numbers = true,
          conflicts_with = "amount")]
    pub duration: Option<Duration>,

    /// Stop after exactly this many requests (warm-up not counted).
    #[arg(short = 'a', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub amount: Option<u64>,

    /// Open loop: this many requests per second in total, spread over the connections;
    /// latency is measured from each request's scheduled send time.
    #[arg(short = 'R', long, value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: Option<f64>,

    /// Send load for this long first without counting it (same units as -d).
    #[arg(long, default_value = "0", value_parser = parse_duration, allow_negative_numbers = true)]
    pub warmup: Duration,

    /// Per-request timeout (same units as -d); a request with no complete answer by then
    /// counts as a timeout and its connection is reopened.
    #[arg(short = 't', long, default_value = "10", value_parser = parse_duration,
          allow_negative_numbers = true)]
    pub timeout: Duration,

    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,

    /// Request header, 'name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Request body, sent as is with a Content-Length.
    #[arg(short = 'b', long)]
    pub body: Option<String>,

    /// Threads to spread the connections over, each with its own event loop (like wrk's -t).
    /// 0: one per core.
    #[arg(short = 'w', long, default_value_t = 0)]
    pub threads: usize,

    /// Honour Retry-After: after a 503 or 429 answer with a Retry-After header (seconds or
    /// an HTTP-date), that connection sends nothing for that long (capped at the end of a -d
    /// run), then resumes. Closed loop: its next request waits. Open loop (-R): its requests
    /// that fall due during the wait are not sent and are counted as skipped, never dropped
    /// silently. Without it the answers that asked are still counted, and the next request
    /// goes at once (as autocannon and wrk do).
    #[arg(long)]
    pub honor_retry_after: bool,

    /// Run the load's threads on a short time slice and, where allowed, at nice -10: for a
    /// light probe beside a saturating load on the same machine, so that it measures the
    /// server's delay rather than its own wait for a core (`offload bench` does this for its
    /// /health probe).
    #[arg(long)]
    pub urgent: bool,

    /// Print the report as JSON (schema: crates/load/src/report.schema.json) instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Allow a target that is not a loopback address.
    #[arg(long)]
    pub allow_remote: bool,

    /// Never draw the progress bar (it is drawn only when stdout and stderr are terminals).
    #[arg(long)]
    pub no_progress: bool,
}

impl TryFrom<&LoadArgs> for Plan {
    type Error = PlanError;

    fn try_from(args: &LoadArgs) -> Result<Self, PlanError> {
        let stop = match (args.duration, args.amount) {
            (Some(d), _) => Stop::Duration(d),
            (None, Some(n)) => Stop::Count(n),
            (None, None) if args.rate.is_some() => {
                return Err(PlanError::Invalid(
                    "a rate (-R) needs a duration (-d) or an amount (-a)".into(),
                ));
            }
            (None, None) => Stop::Duration(DEFAULT_DURATION),
        };
        let connections = args.connections;
        let mode = match args.rate {
            Some(rate) => Mode::Open {
                rate,
                connections,
                stop,
            },
            None => Mode::Closed { connections, stop },
        };
        let target = Target::parse(&args.url, args.allow_remote)?;
        let mut plan = Plan::new(target, mode)?
            .with_method(&args.method)?
            .with_warmup(args.warmup)
            .with_timeout(args.timeout)?
            .with_honor_retry_after(args.honor_retry_after)
            .with_urgent(args.urgent);
        if args.threads > 0 {
            plan = plan.with_threads(args.threads);
        }
        for header in &args.headers {
            plan = plan.with_header(header)?;
        }
        if let Some(body) = &args.body {
            plan = plan.with_body(body.clone());
        }
        Ok(plan)
    }
}

/// Parses a duration: a bare number is seconds (`10`, `1.5`, as autocannon's `-d`); anything
/// else goes to `humantime` (`500ms`, `1.5s`, `2m`, `1h 30m`, `100us`). Refuses negatives.
/// The one duration syntax of every offload command.
///
/// # Errors
/// A message for clap to show when the value is neither.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("a duration cannot be negative; got {text:?}"));
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("expected seconds or a duration like 500ms, 10s, 2m, 1h; got {text:?} ({e})")
    })
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected requests per second; got {text:?}"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("the rate must be above 0; got {text:?}"));
    }
    Ok(value)
}

/// `offload load`: validates the flags, runs the plan (on one load thread per core unless
/// `-w` says otherwise), and prints tables (or JSON with `--json`) to stdout.
///
/// # Errors
/// An invalid plan (bad URL, remote target, bad header...), threads that cannot start, or
/// an output error other than a closed pipe.
pub(super) fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::try_from(&args)?;
    // The load runs on its own threads (see `run`); this runtime only waits and draws.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let show_progress =
        !args.no_progress && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let addr = plan.target().addr();
    let report = runtime.block_on(async {
        // Nothing listening is a mistake in the command, not a measurement: say so at once
        // rather than after a run of connect errors.
        match tokio::time::timeout(plan.timeout(), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(anyhow::anyhow!("cannot connect to {addr}: {e}")),
            Err(_) => {
                return Err(anyhow::anyhow!(
                    "cannot connect to {addr}: no answer within {:?} (-t)",
                    plan.timeout()
                ));
            }
        }
        let report = if show_progress {
            let (tx, rx) = tokio::sync::watch::channel(Progress::default());
            let bar = tokio::spawn(draw_progress(rx));
            let report = run_load(&plan, Some(tx)).await;
            let _ = bar.await;
            report
        } else {
            run_load(&plan, None).await
        };
        report.context("cannot start the load threads")
    })?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report).context("cannot serialise the report")?;
        s.push('\n');
        s
    } else {
        render(&report)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A reader that went away (`| head`) is not a failure of the run.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the report")
        }
        _ if report.connections_opened == 0 && report.requests.sent > 0 => {
            // The target went away after the first connect: the report above is all errors.
            eprintln!(
                "offload: nothing answered at {addr}: every connect failed ({} connect errors)",
                report.errors.connect
            );
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0.1ms").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("-1s").is_err() && parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-5").unwrap_err().contains("negative"));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn rates_must_be_positive() {
        assert_eq!(parse_rate("500").unwrap(), 500.0);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("inf").is_err());
    }
}
