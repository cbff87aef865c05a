//! The flood scenario: past the machine's limit, where does its time go? The seed's load is
//! a closed loop that resends at once, so a cheap refusal comes straight back. For each of
//! `--flood-strategies` it runs the uniform scenario's harness (processes, warm-up, the
//! `/health` probe, /proc sampling, the queue's accept phase) at each `--flood` connection
//! count, plus the largest count with a client that honours `Retry-After`, and reports per
//! row the goodput (work done per second in the load window), the refusals per second and
//! the CPU the gateway spent meanwhile. With `--repeat N` every row runs N times, in rounds,
//! and shows its repeat with the median goodput beside the spread of all of them.

mod draw;
mod repeat;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::compare::Spread;
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
pub use repeat::FloodRepeat;
use repeat::{median_of, over_repeats, reusable};

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
    /// The rounds run (`--repeat`): each row was measured once in each.
    pub repeat: u32,
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
    /// The round that failed, from 1; the row's other repeats still count.
    pub round: u32,
    pub error: String,
}

/// One strategy under one flood: the figures of its repeat with the median goodput, and the
/// spread over all its repeats.
#[derive(Debug, Clone, Serialize)]
pub struct FloodRow {
    pub strategy: String,
    pub connections: u32,
    /// The client waited as each refusal's `Retry-After` asked (`offload load
    /// --honor-retry-after`).
    pub honor_retry_after: bool,
    /// The uniform scenario's runs at the same `-c`, reused rather than run twice (with
    /// `--repeat N`, its N runs of this strategy are this row's N repeats).
    pub from_uniform: bool,
    /// The repeats measured (`--repeat`, less those that failed).
    pub runs: usize,
    /// Each figure of [`FloodRepeat`] over the repeats that have it, in the row's own units:
    /// median, min, max and every value in round order (as many as the repeats that have it).
    pub spread: BTreeMap<String, Spread>,
    /// Every repeat's figures, in round order.
    pub repeats: Vec<FloodRepeat>,
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
    /// The flood figures of one measured run, as a row of one repeat with no spread yet
    /// (`repeat::median_of` gathers the repeats).
    pub(super) fn new(
        run: &StrategyRun,
        honour: bool,
        from_uniform: bool,
        cores: usize,
    ) -> FloodRow {
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
            runs: 1,
            spread: BTreeMap::new(),
            repeats: Vec::new(),
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

/// Runs the flood on `s.flood_strategies`, `s.repeat` rounds of every row. Rows at the
/// uniform scenario's `-c` reuse its runs of that strategy when it has one per round (its
/// round r is the row's round r). The all-core limit is calibrated before the first strategy
/// and after each one's rows in each round.
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
    let rounds = s.repeat.max(1);
    let n = rows_of.len() * s.flood_strategies.len() * rounds as usize;
    // Each row's repeats (round, row), strategy by strategy, each in `rows_of` order.
    let mut measured: Vec<Vec<(u32, FloodRow)>> =
        vec![Vec::new(); rows_of.len() * s.flood_strategies.len()];
    let mut failures = Vec::new();
    let mut i = 0;
    // Interleaved as the uniform scenario's strategies are: every row once, then every row
    // again, so a slow minute of a shared machine falls on all rows alike.
    for round in 1..=rounds {
        for (k, strategy) in s.flood_strategies.iter().enumerate() {
            let reused = reusable(uniform, strategy, rounds);
            // (row index, connections, honour, measured here or reused)
            let mut got: Vec<(
                usize,
                u32,
                bool,
                Result<super::scenario::Measured, &StrategyRun>,
            )> = Vec::new();
            for (j, &(c, honour)) in rows_of.iter().enumerate() {
                i += 1;
                let label = format!(
                    "[{i}/{n}] {strategy} -c {c}{}{}",
                    honour_label(honour),
                    round_label(round, rounds)
                );
                if let (false, true, Some(runs)) = (honour, c == s.connections, &reused) {
                    progress.done(&format!(
                        "flood: {label}: the uniform scenario's run, reused"
                    ));
                    got.push((j, c, honour, Err(runs[round as usize - 1])));
                    continue;
                }
                progress.note(&format!("flood: {label}: starting"));
                match one(s, strategy, c, honour, progress).await {
                    Ok(m) => got.push((j, c, honour, Ok(m))),
                    Err(e) => {
                        progress.done(&format!("flood: {label}: failed: {e:#}"));
                        failures.push(FloodFailure {
                            strategy: strategy.clone(),
                            connections: c,
                            honor_retry_after: honour,
                            round,
                            error: format!("{e:#}"),
                        });
                    }
                }
            }
            let bracket = if got.iter().any(|(.., m)| m.is_ok()) {
                let after = calibrate(format!("after {strategy}")).await?;
                let b = Bracket::new(before, after.clone());
                before = after;
                Some(b)
            } else {
                None
            };
            for (j, c, honour, m) in got {
                let row = match m {
                    Ok(m) => {
                        let b = bracket.clone().expect("calibrated after a measured row");
                        FloodRow::new(&StrategyRun::new(m, b), honour, false, cores)
                    }
                    Err(run) => FloodRow::new(run, false, true, cores),
                };
                progress.done(&format!(
                    "flood: {strategy} -c {c}{}{}: {}",
                    honour_label(honour),
                    round_label(round, rounds),
                    brief(&row)
                ));
                measured[k * rows_of.len() + j].push((round, row));
            }
        }
    }
    Ok(gather(&s.flood, rounds, cores, measured, failures))
}

/// The flood's results from each row's repeats `(round, row)`, in the order the rows ran:
/// each row shows its repeat with the median goodput, with the spread of them all.
pub(super) fn gather(
    counts: &[u32],
    repeat: u32,
    cores: usize,
    measured: Vec<Vec<(u32, FloodRow)>>,
    failures: Vec<FloodFailure>,
) -> FloodResults {
    let rows: Vec<FloodRow> = measured.into_iter().filter_map(median_of).collect();
    FloodResults {
        connections: counts.to_vec(),
        honour_connections: counts.iter().copied().max().unwrap_or(0),
        cores,
        repeat,
        reading: reading(&rows, counts, repeat),
        rows,
        failures,
    }
}

/// `, round r of N` with `--repeat`, nothing without.
fn round_label(round: u32, rounds: u32) -> String {
    if rounds > 1 {
        format!(", round {round} of {rounds}")
    } else {
        String::new()
    }
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

/// A rate for a sentence: whole numbers from 10 up, one decimal below (3 refusals in a 10 s
/// window are 0.3/s, not 0).
fn per_s(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The sentences that read the rows: per strategy, the flood against the smallest count,
/// then what honouring `Retry-After` changed. With `--repeat`, each figure is the median of
/// the row's repeats, said once in a first sentence, and "refused nothing" holds for every
/// repeat.
fn reading(rows: &[FloodRow], counts: &[u32], repeat: u32) -> Vec<String> {
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
    let median = |r: &FloodRow, name: &str| over_repeats(r, name, |s| s.median);
    let most = |r: &FloodRow, name: &str| over_repeats(r, name, |s| s.max);
    for name in names {
        let find = |c: u32, honour: bool| {
            rows.iter()
                .find(|r| r.strategy == name && r.connections == c && r.honor_retry_after == honour)
        };
        let (base, flood, honoured) = (find(low, false), find(top, false), find(top, true));
        if let (Some(b), Some(f)) = (base, flood)
            && low != top
        {
            let goodput = median(f, "goodput_per_s").unwrap_or(0.0);
            let base_goodput = median(b, "goodput_per_s").unwrap_or(0.0);
            out.push(format!(
                "{name}: at -c {top} goodput was {goodput:.1}/s ({:.2}x its {base_goodput:.1}/s at -c {low}), with {} refusals/s; its gateway used {} of the machine{}.",
                goodput / base_goodput.max(1e-9),
                per_s(median(f, "refused_per_s").unwrap_or(0.0)),
                percent(median(f, "gateway_cpu_fraction")),
                median(f, "gateway_cpu_s_per_refusal").map_or(String::new(), |c| format!(
                    " ({} of its CPU per refusal at most)",
                    ms(c * 1000.0)
                ))
            ));
        }
        let Some((f, h)) = flood.zip(honoured) else {
            continue;
        };
        let (f_goodput, h_goodput) = (
            median(f, "goodput_per_s").unwrap_or(0.0),
            median(h, "goodput_per_s").unwrap_or(0.0),
        );
        let refused_none = [
            most(f, "refused_per_s"),
            most(h, "refused_per_s"),
            most(h, "retry_after_asked"),
        ]
        .iter()
        .all(|v| v.unwrap_or(0.0) == 0.0);
        if refused_none {
            out.push(format!(
                "{name} refused nothing at -c {top}, so a client that honours Retry-After had nothing to wait for (goodput {h_goodput:.1}/s against {f_goodput:.1}/s).",
            ));
        } else {
            out.push(format!(
                "{name} at -c {top} with a client that honours Retry-After: {} refusals/s instead of {}, goodput {h_goodput:.1}/s instead of {f_goodput:.1}/s; the client waited {:.0}% of its time, as {:.0} answers asked.",
                per_s(median(h, "refused_per_s").unwrap_or(0.0)),
                per_s(median(f, "refused_per_s").unwrap_or(0.0)),
                median(h, "waited_fraction").unwrap_or(0.0) * 100.0,
                median(h, "retry_after_asked").unwrap_or(0.0)
            ));
        }
    }
    if repeat > 1 && !out.is_empty() {
        let fewer = rows.iter().any(|r| r.runs < repeat as usize);
        out.insert(
            0,
            format!(
                "Each figure below is the median of {repeat} repeats of its row{}.",
                if fewer {
                    " (of fewer where a repeat failed)"
                } else {
                    ""
                }
            ),
        );
    }
    out
}

/// A share of the machine as a whole percent, or `-` when it could not be sampled.
fn percent(fraction: Option<f64>) -> String {
    fraction.map_or("-".into(), |f| format!("{:.0}%", f * 100.0))
}

/// The gateway's CPU share of the machine, or `-` when it could not be sampled.
fn cpu_cell(r: &FloodRow) -> String {
    percent(r.gateway_cpu_fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::planted::{self, FloodPlant};

    #[test]
    fn a_few_refusals_a_second_are_not_read_as_none() {
        assert_eq!(per_s(0.0), "0");
        assert_eq!(per_s(0.3), "0.3");
        assert_eq!(per_s(9.94), "9.9");
        assert_eq!(per_s(30.4), "30");
    }

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

    /// pool's rows at -c 100, -c 1000 and -c 1000 honouring Retry-After, each repeat given as
    /// (goodput/s, refused/s, gateway CPU); the row at -c 1000 picks the repeat of 100/s, which
    /// refused 40/s, while its repeats' median refusals are 30/s.
    fn pool_rows(repeats: usize) -> Vec<Vec<FloodRow>> {
        let plant = |(goodput_per_s, refused_per_s, gateway_cpu): (f64, f64, f64)| FloodPlant {
            goodput_per_s,
            refused_per_s,
            health_p99_ms: 1.0,
            gateway_cpu,
        };
        let row = |c: u32, honour: bool, figures: [(f64, f64, f64); 3]| -> Vec<FloodRow> {
            figures[..repeats]
                .iter()
                .map(|f| plant(*f).row("pool", c, honour))
                .collect()
        };
        vec![
            row(
                100,
                false,
                [(50.0, 0.0, 0.3), (52.0, 0.0, 0.3), (48.0, 0.0, 0.3)],
            ),
            row(
                1000,
                false,
                [(100.0, 40.0, 0.4), (90.0, 30.0, 0.5), (110.0, 20.0, 0.6)],
            ),
            row(
                1000,
                true,
                [(120.0, 10.0, 0.4), (120.0, 10.0, 0.4), (120.0, 10.0, 0.4)],
            ),
        ]
    }

    #[test]
    fn the_reading_quotes_the_medians_of_the_repeats_and_says_so_once() {
        let f = planted::flood(&[100, 1000], 3, pool_rows(3));
        assert_eq!(
            f.reading[0],
            "Each figure below is the median of 3 repeats of its row."
        );
        assert_eq!(
            f.reading.iter().filter(|l| l.contains("median")).count(),
            1,
            "{:#?}",
            f.reading
        );
        // The medians (100/s, 30 refusals/s, 50% CPU), not the figures of the repeat shown
        // (100/s, 40 refusals/s, 40% CPU).
        assert!(
            f.reading[1].starts_with(
                "pool: at -c 1000 goodput was 100.0/s (2.00x its 50.0/s at -c 100), with 30 refusals/s; its gateway used 50% of the machine"
            ),
            "{:#?}",
            f.reading
        );
        assert!(
            f.reading[2].starts_with(
                "pool at -c 1000 with a client that honours Retry-After: 10 refusals/s instead of 30, goodput 120.0/s instead of 100.0/s;"
            ),
            "{:#?}",
            f.reading
        );
        // One repeat only: the figures of the one run, and no word of a median.
        let once = planted::flood(&[100, 1000], 1, pool_rows(1));
        assert_eq!(once.reading.len(), 2, "{:#?}", once.reading);
        assert!(
            once.reading[0].starts_with(
                "pool: at -c 1000 goodput was 100.0/s (2.00x its 50.0/s at -c 100), with 40 refusals/s; its gateway used 40% of the machine"
            ),
            "{:#?}",
            once.reading
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
