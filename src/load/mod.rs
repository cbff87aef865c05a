//! The load generator: closed- and open-loop HTTP/1 load with HDR histograms, an honest
//! summary, and JSON output. It knows nothing of offload's servers.
//!
//! # Layout
//! - `plan`: [`Target`] (parsed, resolved, loopback-checked), [`Mode`], [`Stop`], [`Plan`].
//! - `args`: [`LoadArgs`], the `offload load` flags, and `Plan::try_from(&LoadArgs)`.
//! - `conn`: one task per connection: keep-alive, pacing, timing, reconnects.
//! - `wire`: the HTTP/1.1 client connection (request encoded once, answers parsed in place
//!   with `httparse`); chosen over hyper's client for CPU per request, see its header.
//! - `stats`: the per-connection recorder (histograms, counters, timeline) and its merge.
//! - `run`: [`run`], which drives a plan on load threads of its own, and [`Progress`].
//! - `report`: [`Report`], the serialisable result (schema in `report.schema.json`).
//! - `output`: the text tables and the progress bar.
//!
//! # Use from code
//! ```no_run
//! # async fn demo() -> Result<(), offload::load::PlanError> {
//! use std::time::Duration;
//! use offload::load::{Mode, Plan, Stop, Target, run};
//! let target = Target::parse("http://127.0.0.1:3000/health", false)?;
//! let mode = Mode::Open { rate: 50.0, connections: 4, stop: Stop::Duration(Duration::from_secs(10)) };
//! let report = run(&Plan::new(target, mode)?, None).await.expect("load threads start");
//! println!("p99 {} ms", report.latency.p99);
//! # Ok(()) }
//! ```

mod args;
mod conn;
mod output;
mod plan;
mod report;
mod run;
mod stats;
mod wire;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;

pub use args::{DEFAULT_DURATION, LoadArgs, parse_duration};
pub use output::{draw_progress, render};
pub use plan::{
    DEFAULT_TIMEOUT, MAX_CONNECTIONS, Mode, Plan, PlanError, Stop, Target, default_threads,
};
pub use report::{
    ABORT_NOTE, LatencyStats, RateStats, Report, Requests, SCHEMA_VERSION, Second, TIMEOUT_NOTE,
};
pub use run::{Progress, run};
pub use stats::ErrorCounts;

/// The JSON schema of [`Report`], as committed beside this file.
pub const REPORT_SCHEMA: &str = include_str!("report.schema.json");

/// `offload load`: validates the flags, runs the plan (on one load thread per core unless
/// `-w` says otherwise), and prints tables (or JSON with `--json`) to stdout.
///
/// # Errors
/// An invalid plan (bad URL, remote target, bad header...), threads that cannot start, or
/// an output error other than a closed pipe.
pub fn run_cli(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::try_from(&args)?;
    // The load runs on its own threads (see `run`); this runtime only waits and draws.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let show_progress =
        !args.no_progress && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let report = runtime
        .block_on(async {
            if show_progress {
                let (tx, rx) = tokio::sync::watch::channel(Progress::default());
                let bar = tokio::spawn(draw_progress(rx));
                let report = run(&plan, Some(tx)).await;
                let _ = bar.await;
                report
            } else {
                run(&plan, None).await
            }
        })
        .context("cannot start the load threads")?;
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
        _ => Ok(ExitCode::SUCCESS),
    }
}
