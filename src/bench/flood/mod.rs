//! The flood scenario: past the machine's limit, where does its time go? The seed's load is
//! a closed loop that resends at once, so a cheap refusal comes straight back. For each of
//! `--flood-strategies` it runs the uniform scenario's harness (processes, warm-up, the
//! `/health` probe, /proc sampling, the queue's accept phase) at each `--flood` connection
//! count, plus the largest count with a client that honours `Retry-After`, and reports per
//! row the goodput (work done per second in the load window), the refusals per second and
//! the CPU the gateway spent meanwhile.

mod draw;

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::limit::{Bracket, LimitFlag};
use super::machine::CalibrationPlan;
use super::sample::Sample;
use super::scenario::StrategyRun;
use super::units::ms;
use super::{ProgressLine, Settings};
use crate::load::{MAX_CONNECTIONS, Report, RetryAfterStats};
use crate::strategy::Name;
use crate::work::Work;

pub use draw::{LEGEND, html_table, table};

/// The connection counts of the default flood: the seed's `-c 100`, and ten times that.
pub const DEFAULT_FLOOD: &str = "100,1000";

/// The strategies flooded by default: those that refuse when full (`pool`, `remote`,
/// `queue`) and the one that should not have to (`auto`). `inline`, `spawn` and `blocking`
/// never refuse: a flood only makes them slower, which the uniform scenario already shows.
pub const FLOOD_STRATEGIES: [Name; 4] = [Name::Pool, Name::Remote, Name::Queue, Name::Auto];

/// Parses `--flood`: comma-separated connection counts, each from 1 to the load generator's
/// maximum; returned sorted, without repeats.
///
/// # Errors
/// A count that is not a whole number in range, or none at all.
pub fn parse(spec: &str) -> anyhow::Result<Vec<u32>> {
    let mut counts = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let c: u32 = item
            .parse()
            .ok()
            .filter(|c| (1..=MAX_CONNECTIONS).contains(c))
            .with_context(|| {
                format!(
                    "--flood {item:?}: expected connection counts from 1 to {MAX_CONNECTIONS}, like {DEFAULT_FLOOD}, or none"
                )
            })?;
        counts.push(c);
    }
    anyhow::ensure!(
        !counts.is_empty(),
        "--flood {spec:?}: give at least one connection count, or none"
    );
    counts.sort_unstable();
    counts.dedup();
    Ok(counts)
}

/// The flood scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct FloodResults {
    /// The closed loop's connection counts (`--flood`).
    pub connections: Vec<u32>,
    /// The count at which a client that honours `Retry-After` runs too (the largest).
    pub honour_connections: u32,
    /// The machine's cores, which the gateway's CPU share is of.
    pub cores: usize,
    /// Strategy by strategy, in `--flood` order, the honouring row last.
    pub rows: Vec<FloodRow>,
    pub failures: Vec<FloodFailure>,
    /// Plain sentences that read the rows.
    pub reading: Vec<String>,
}

/// A flood row that could not be measured, and why.
#[derive(Debug, Clone, Serialize)]
pub struct FloodFailure {
    pub strategy: String,
    pub connections: u32,
    pub honor_retry_after: bool,
    pub error: String,
}

/// One strategy under one flood.
#[derive(Debug, Clone, Serialize)]
pub struct FloodRow {
    pub strategy: String,
    pub connections: u32,
    /// The client waited as each refusal's `Retry-After` asked (`offload load
    /// --honor-retry-after`).
    pub honor_retry_after: bool,
    /// The uniform scenario's run at the same `-c`, reused rather than run twice.
    pub from_uniform: bool,
    /// The measured load window, in seconds (after the warm-up).
    pub window_s: f64,
    /// Work done in the window: 2xx answers that arrived in it for synchronous strategies;
    /// for `queue` the jobs finished in it (not its 202s); for `auto` its 200s plus the jobs
    /// finished in it.
    pub goodput: u64,
    pub goodput_per_s: f64,
    /// goodput_per_s over `limit.limit_per_s` (the all-core limit around this strategy).
    pub limit_fraction: f64,
    pub limit_flags: Vec<LimitFlag>,
    pub limit: Bracket,
    /// 200 answers that arrived in the window per second, those to requests sent in the
    /// warm-up included.
    pub ok_per_s: f64,
    /// 202 answers per second (a job stored, not done).
    pub accepted_per_s: f64,
    /// Jobs finished in the window (`queue` and `auto`; null for the others).
    pub jobs_finished: Option<u64>,
    /// 503 answers, and per second.
    pub refused: u64,
    pub refused_per_s: f64,
    /// Answers neither 200, 202 nor 503 (504 and the like).
    pub other_answers: u64,
    pub timeouts: u64,
    pub errors: u64,
    /// Requests still waiting for their answer when the window closed.
    pub unfinished: u64,
    /// What the client did with `Retry-After`.
    pub retry_after: RetryAfterStats,
    /// The gateway process's CPU seconds in the window (for `pool` and `auto` this includes
    /// the work its own pool ran); null when /proc could not be sampled.
    pub gateway_cpu_s: Option<f64>,
    /// gateway_cpu_s over the machine's CPU time in the window (cores x window_s).
    pub gateway_cpu_fraction: Option<f64>,
    /// gateway_cpu_s / refused, when there were refusals: what a refusal cost at most.
    pub gateway_cpu_s_per_refusal: Option<f64>,
    /// The `/health` probe's p99 in ms, counting every probe that fell due.
    pub health_p99_ms: f64,
    /// Jobs queued or running when the load stopped (`queue` and `auto`).
    pub backlog_at_stop: Option<u64>,
    /// The heavy load's and the probe's reports (src/load/report.schema.json).
    pub heavy: Report,
    pub bystander: Report,
}

impl FloodRow {
    /// The flood figures of one measured run.
    fn new(run: &StrategyRun, honour: bool, from_uniform: bool, cores: usize) -> FloodRow {
        let h = &run.heavy;
        let q = &h.requests;
        let window_s = h.elapsed_s.max(1e-9);
        let status = |code: &str| q.by_status.get(code).copied().unwrap_or(0);
        let (accepted, refused) = (status("202"), status("503"));
        let name = Name::parse(&run.strategy);
        // Every 200 that arrived in the window, with those to requests the warm-up sent (past
        // -c / limit, no request sent in a short window is answered in it). Those carried
        // over are 202s for `queue`; for the others 200s (`auto` answers a 202 within
        // milliseconds, so next to none straddle the warm-up's end).
        let carried = if name == Some(Name::Queue) {
            0
        } else {
            q.carried_over_2xx
        };
        let ok = status("200") + carried;
        let jobs = run.queue.as_ref().map(|x| x.jobs_finished_in_window);
        let goodput = match (name, jobs) {
            // The pool's answers and the worker's jobs, on the same cores at the same time.
            (Some(Name::Auto), Some(j)) => ok + j,
            (_, Some(j)) => j,
            _ => ok,
        };
        let goodput_per_s = goodput as f64 / window_s;
        let limit_fraction = run.limit.fraction(goodput_per_s);
        let warmup_s = h.warmup_s;
        let gateway_cpu_s = run
            .processes
            .iter()
            .find(|p| p.role == "gateway")
            .and_then(|p| cpu_rate(&p.samples, warmup_s, warmup_s + h.elapsed_s))
            .map(|per_s| per_s * h.elapsed_s);
        FloodRow {
            strategy: run.strategy.clone(),
            connections: h.connections,
            honor_retry_after: honour,
            from_uniform,
            window_s: h.elapsed_s,
            goodput,
            goodput_per_s,
            limit_fraction,
            limit_flags: run.limit.flags(limit_fraction),
            limit: run.limit.clone(),
            ok_per_s: ok as f64 / window_s,
            accepted_per_s: accepted as f64 / window_s,
            jobs_finished: jobs,
            refused,
            refused_per_s: refused as f64 / window_s,
            other_answers: q.completed - status("200") - accepted - refused,
            timeouts: q.timeouts,
            errors: q.errors,
            unfinished: q.aborted_at_deadline,
            retry_after: h.retry_after.clone(),
            gateway_cpu_fraction: gateway_cpu_s.map(|c| c / (window_s * cores.max(1) as f64)),
            gateway_cpu_s_per_refusal: gateway_cpu_s
                .filter(|_| refused > 0)
                .map(|c| c / refused as f64),
            gateway_cpu_s,
            health_p99_ms: run.bystander.latency_with_timeouts.p99,
            backlog_at_stop: run.queue.as_ref().map(|x| x.backlog_at_stop),
            heavy: h.clone(),
            bystander: run.bystander.clone(),
        }
    }

    /// `plain`, or `Retry-After` for the client that honours it.
    pub(super) fn client(&self) -> &'static str {
        if self.honor_retry_after {
            "Retry-After"
        } else {
            "plain"
        }
    }
}

/// CPU seconds per second of one process between `from` and `to` (seconds since sampling
/// began), from the first reading at or after `from` to the last at or before `to` (plus a
/// hair: the sampler's last tick may land just past the load's end). None when the readings
/// span less than a fifth of a second.
fn cpu_rate(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let a = samples.iter().find(|s| s.t >= from - 0.01)?;
    let b = samples.iter().rfind(|s| s.t <= to + 0.05)?;
    let span = b.t - a.t;
    (span >= 0.2).then(|| ((b.cpu_s - a.cpu_s) / span).max(0.0))
}

/// The flood's rows of one strategy, in the order they run: each count, then the largest
/// with the honouring client.
fn row_plan(counts: &[u32]) -> Vec<(u32, bool)> {
    let top = counts.iter().copied().max().unwrap_or(1);
    counts
        .iter()
        .map(|c| (*c, false))
        .chain([(top, true)])
        .collect()
}

/// Runs the flood on `s.flood_strategies`. Rows at the uniform scenario's `-c` reuse its
/// run of that strategy when there is exactly one (no `--repeat`). The all-core limit is
/// calibrated before the first strategy and after each one's rows.
///
/// # Errors
/// A calibration that cannot run; a row that fails is reported in its place and the rest
/// still run.
pub async fn run(
    s: &Settings,
    work: Work,
    cores: usize,
    uniform: &[StrategyRun],
    progress: &ProgressLine,
) -> anyhow::Result<FloodResults> {
    let plan = CalibrationPlan::new(s.quick);
    let calibrate = |label: String| {
        progress.note(&format!("flood: calibrating on all {cores} cores {label}"));
        plan.all_cores(work, cores)
    };
    let mut before = calibrate("before it".into()).await?;
    let rows_of = row_plan(&s.flood);
    let n = rows_of.len() * s.flood_strategies.len();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut i = 0;
    for strategy in &s.flood_strategies {
        let reusable: Vec<&StrategyRun> =
            uniform.iter().filter(|r| &r.strategy == strategy).collect();
        // (connections, honour, measured here or reused)
        let mut got: Vec<(u32, bool, Result<super::scenario::Measured, &StrategyRun>)> = Vec::new();
        for &(c, honour) in &rows_of {
            i += 1;
            let label = format!("[{i}/{n}] {strategy} -c {c}{}", honour_label(honour));
            if let (false, true, [run]) = (honour, c == s.connections, reusable.as_slice()) {
                progress.done(&format!(
                    "flood: {label}: the uniform scenario's run, reused"
                ));
                got.push((c, honour, Err(*run)));
                continue;
            }
            progress.note(&format!("flood: {label}: starting"));
            match one(s, strategy, c, honour, progress).await {
                Ok(m) => got.push((c, honour, Ok(m))),
                Err(e) => {
                    progress.done(&format!("flood: {label}: failed: {e:#}"));
                    failures.push(FloodFailure {
                        strategy: strategy.clone(),
                        connections: c,
                        honor_retry_after: honour,
                        error: format!("{e:#}"),
                    });
                }
            }
        }
        let bracket = if got.iter().any(|(_, _, m)| m.is_ok()) {
            let after = calibrate(format!("after {strategy}")).await?;
            let b = Bracket::new(before, after.clone());
            before = after;
            Some(b)
        } else {
            None
        };
        for (c, honour, m) in got {
            let row = match m {
                Ok(m) => {
                    let b = bracket.clone().expect("calibrated after a measured row");
                    FloodRow::new(&StrategyRun::new(m, b), honour, false, cores)
                }
                Err(run) => FloodRow::new(run, false, true, cores),
            };
            progress.done(&format!(
                "flood: {strategy} -c {c}{}: {}",
                honour_label(honour),
                brief(&row)
            ));
            rows.push(row);
        }
    }
    let reading = reading(&rows, &s.flood);
    Ok(FloodResults {
        connections: s.flood.clone(),
        honour_connections: s.flood.iter().copied().max().unwrap_or(0),
        cores,
        rows,
        failures,
        reading,
    })
}

fn honour_label(honour: bool) -> &'static str {
    if honour {
        ", honouring Retry-After"
    } else {
        ""
    }
}

/// One row in a line, for the progress output.
fn brief(r: &FloodRow) -> String {
    format!(
        "goodput {:.1}/s ({:.0}% of the limit), 503 {:.0}/s, gateway CPU {}, /health p99 {}",
        r.goodput_per_s,
        r.limit_fraction * 100.0,
        r.refused_per_s,
        cpu_cell(r),
        ms(r.health_p99_ms)
    )
}

/// One flood row: the strategy's processes on a queue of their own (the embedded SQLite
/// queue: a file of its own, not drained, as only the window counts; a shared Redis or
/// Postgres queue is drained as usual, so nothing is left in it), the closed loop at `c`.
async fn one(
    s: &Settings,
    strategy: &str,
    c: u32,
    honour: bool,
    progress: &ProgressLine,
) -> anyhow::Result<super::scenario::Measured> {
    let slug = format!("{strategy}-c{c}{}", if honour { "-ra" } else { "" });
    let mut own = s.own_queue(&format!("flood-{slug}"))?;
    own.connections = c;
    own.honor_retry_after = honour;
    let file = own
        .queue_url
        .strip_prefix("sqlite://")
        .map(std::path::PathBuf::from);
    if file.is_some() {
        own.drain_timeout = Duration::ZERO;
    }
    let measured = super::scenario::run(strategy, &own, progress).await;
    if let Some(file) = &file {
        super::remove_queue_file(file);
    }
    measured
}

/// The sentences that read the rows: per strategy, the flood against the smallest count,
/// then what honouring `Retry-After` changed.
fn reading(rows: &[FloodRow], counts: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(&low), Some(&top)) = (counts.first(), counts.last()) else {
        return out;
    };
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.strategy.as_str()) {
            names.push(&r.strategy);
        }
    }
    for name in names {
        let find = |c: u32, honour: bool| {
            rows.iter()
                .find(|r| r.strategy == name && r.connections == c && r.honor_retry_after == honour)
        };
        let (base, flood, honoured) = (find(low, false), find(top, false), find(top, true));
        if let (Some(b), Some(f)) = (base, flood)
            && low != top
        {
            out.push(format!(
                "{name}: at -c {top} goodput was {:.1}/s ({:.2}x its {:.1}/s at -c {low}), with {:.0} refusals/s; its gateway used {} of the machine{}.",
                f.goodput_per_s,
                f.goodput_per_s / b.goodput_per_s.max(1e-9),
                b.goodput_per_s,
                f.refused_per_s,
                cpu_cell(f),
                f.gateway_cpu_s_per_refusal.map_or(String::new(), |c| format!(
                    " ({} of its CPU per refusal at most)",
                    ms(c * 1000.0)
                ))
            ));
        }
        if let (Some(f), Some(h)) = (flood, honoured)
            && f.refused + h.refused + h.retry_after.asked == 0
        {
            out.push(format!(
                "{name} refused nothing at -c {top}, so a client that honours Retry-After had nothing to wait for (goodput {:.1}/s against {:.1}/s).",
                h.goodput_per_s, f.goodput_per_s
            ));
        } else if let (Some(f), Some(h)) = (flood, honoured) {
            out.push(format!(
                "{name} at -c {top} with a client that honours Retry-After: {:.0} refusals/s instead of {:.0}, goodput {:.1}/s instead of {:.1}/s; the client waited {:.0}% of its time, as {} answers asked.",
                h.refused_per_s,
                f.refused_per_s,
                h.goodput_per_s,
                f.goodput_per_s,
                h.retry_after.waited_fraction * 100.0,
                h.retry_after.asked
            ));
        }
    }
    out
}

/// The gateway's CPU share of the machine, or `-` when it could not be sampled.
fn cpu_cell(r: &FloodRow) -> String {
    r.gateway_cpu_fraction
        .map_or("-".into(), |f| format!("{:.0}%", f * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_counts_parse_sorted_and_in_range() {
        assert_eq!(parse(DEFAULT_FLOOD).unwrap(), [100, 1000]);
        assert_eq!(parse(" 1000, 50,50 ").unwrap(), [50, 1000]);
        for bad in ["", "0", "x", "100,-1", "20000", "1.5"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            row_plan(&[50, 200]),
            [(50, false), (200, false), (200, true)]
        );
    }

    #[test]
    fn cpu_is_a_rate_over_the_readings_inside_the_window() {
        let s = |t: f64, cpu_s: f64| Sample {
            t,
            cpu_s,
            rss_bytes: 0,
            threads: 1,
        };
        let samples = [
            s(0.0, 0.0),
            s(0.5, 0.1),
            s(1.0, 0.6),
            s(2.0, 1.6),
            s(2.5, 5.0),
        ];
        // From 0.5 s to 2.0 s: 1.5 CPU seconds in 1.5 s, the drain after it left out.
        assert_eq!(cpu_rate(&samples, 0.5, 2.0), Some(1.0));
        assert_eq!(cpu_rate(&samples, 2.4, 2.5), None);
    }
}
