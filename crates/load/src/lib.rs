//! The load generator: closed- and open-loop HTTP/1 load with HDR histograms, an honest
//! summary, and JSON output. It knows nothing of offload's servers.
//!
//! # Layout
//! - `plan`: [`Target`] (parsed, resolved, loopback-checked), [`Mode`], [`Stop`], [`Plan`].
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
//! # async fn demo() -> Result<(), offload_load::PlanError> {
//! use std::time::Duration;
//! use offload_load::{Mode, Plan, Stop, Target, run};
//! let target = Target::parse("http://127.0.0.1:3000/health", false)?;
//! let mode = Mode::Open { rate: 50.0, connections: 4, stop: Stop::Duration(Duration::from_secs(10)) };
//! let report = run(&Plan::new(target, mode)?, None).await.expect("load threads start");
//! println!("p99 {} ms", report.latency.p99);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod conn;
mod output;
mod plan;
mod report;
mod run;
mod stats;
mod wire;

pub use output::{draw_progress, render};
pub use plan::{
    DEFAULT_TIMEOUT, MAX_CONNECTIONS, Mode, Plan, PlanError, Stop, Target, default_threads,
};
pub use report::{
    ABORT_NOTE, LatencyStats, RETRY_NOTE, RateStats, Report, Requests, RetryAfterStats,
    SCHEMA_VERSION, Second, TIMEOUT_NOTE,
};
#[cfg(any(test, feature = "planted"))]
pub use report::{Planted, planted};
pub use run::{Progress, run, run_mix};
pub use stats::{ErrorCounts, ProtocolCounts, TimeoutCounts};
pub use wire::MAX_HEAD;

/// The JSON schema of [`Report`], as committed beside this file.
pub const REPORT_SCHEMA: &str = include_str!("report.schema.json");
