//! The flood scenario's results: each strategy under closed loops past the machine's limit,
//! per connection count and client, with each row's repeats (`--repeat N`), their spread, and
//! the repeat the row shows (the one with the median goodput, as the uniform scenario shows
//! its run nearest the median).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::limit::{Bracket, LimitWarning};
use super::repeat::RepeatSpread;
use super::row::RowId;
use super::run::{Sample, StrategyRun};
use crate::load::{Report, RetryAfterStats};
use crate::strategy::Name;

/// The flood scenario's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodResults {
    /// The closed loop's connection counts (`--flood`).
    pub connections: Vec<u32>,
    /// The count at which a client that honours `Retry-After` runs too (the largest).
    pub honour_connections: u32,
    /// The machine's cores, which the gateway's CPU share is of.
    pub cores: usize,
    /// The rounds run (`--repeat`): each row was measured once in each. 0 in a file written
    /// before the flood had repeats.
    #[serde(default)]
    pub repeat: u32,
    /// Strategy by strategy, in `--flood` order, the honouring row last.
    pub rows: Vec<FloodRow>,
    pub failures: Vec<FloodFailure>,
    /// Plain sentences that read the rows.
    pub reading: Vec<String>,
}

/// A flood row that could not be measured, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodFailure {
    pub strategy: RowId,
    pub connections: u32,
    pub honor_retry_after: bool,
    /// The round that failed, from 1; the row's other repeats still count.
    pub round: u32,
    pub error: String,
}

/// One strategy under one flood: the figures of its repeat with the median goodput, and the
/// spread over all its repeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodRow {
    pub strategy: RowId,
    pub connections: u32,
    /// The client waited as each refusal's `Retry-After` asked (`offload load
    /// --honor-retry-after`).
    pub honor_retry_after: bool,
    /// The uniform scenario's runs at the same `-c`, reused rather than run twice (with
    /// `--repeat N`, its N runs of this strategy are this row's N repeats).
    pub from_uniform: bool,
    /// The repeats measured (`--repeat`, less those that failed). This and the next two are
    /// 0 and empty in a file written before the flood had repeats.
    #[serde(default)]
    pub runs: usize,
    /// Each figure of [`FloodRepeat`] over the repeats that have it, in the row's own units:
    /// median, min, max and every value in round order (as many as the repeats that have it).
    #[serde(default)]
    pub spread: BTreeMap<String, RepeatSpread>,
    /// Every repeat's figures, in round order.
    #[serde(default)]
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
    pub limit_warnings: Vec<LimitWarning>,
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
    /// The heavy load's and the probe's reports (crates/load/src/report.schema.json).
    pub heavy: Report,
    pub bystander: Report,
}

impl FloodRow {
    /// The flood figures of one measured run, as a row of one repeat with no spread yet
    /// (`repeat::median_of` gathers the repeats).
    pub fn new(run: &StrategyRun, honour: bool, from_uniform: bool, cores: usize) -> FloodRow {
        let h = &run.measured.heavy;
        let q = &h.requests;
        let window_s = h.elapsed_s.max(1e-9);
        let status = |code: &str| q.by_status.get(code).copied().unwrap_or(0);
        let (accepted, refused) = (status("202"), status("503"));
        let name = run.measured.strategy.offload();
        // Every 200 that arrived in the window, with those to requests the warm-up sent (past
        // -c / limit, no request sent in a short window is answered in it). Those carried
        // over are 202s for `queue`, which stores every request's work; for the others 200s
        // (`auto` answers a 202 within milliseconds, so next to none straddle the warm-up's
        // end).
        let carried = if name.is_some_and(Name::always_stores) {
            0
        } else {
            q.carried_over_2xx
        };
        let ok = status("200") + carried;
        let jobs = run
            .measured
            .queue
            .as_ref()
            .map(|x| x.jobs_finished_in_window);
        let goodput = match (name, jobs) {
            // `auto`'s pool's answers and the worker's jobs, on the same cores at the same
            // time.
            (Some(n), Some(j)) if n.routes() => ok + j,
            (_, Some(j)) => j,
            _ => ok,
        };
        let goodput_per_s = goodput as f64 / window_s;
        let limit_fraction = run.limit.fraction(goodput_per_s);
        let warmup_s = h.warmup_s;
        let gateway_cpu_s = run
            .measured
            .processes
            .iter()
            .find(|p| p.role == "gateway")
            .and_then(|p| cpu_rate(&p.samples, warmup_s, warmup_s + h.elapsed_s))
            .map(|per_s| per_s * h.elapsed_s);
        FloodRow {
            strategy: run.measured.strategy,
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
            limit_warnings: run.limit.flags(limit_fraction),
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
            health_p99_ms: run.measured.bystander.latency_with_timeouts.p99,
            backlog_at_stop: run.measured.queue.as_ref().map(|x| x.backlog_at_stop),
            heavy: h.clone(),
            bystander: run.measured.bystander.clone(),
        }
    }

    /// `plain`, or `Retry-After` for the client that honours it.
    pub fn client(&self) -> &'static str {
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

/// The figures kept of each repeat and spread over them, by their name in [`FloodRepeat`]
/// and in a row's `spread`, in the row's own units (fractions, not percents).
pub const FIGURES: [&str; 8] = [
    "goodput_per_s",
    "limit_fraction",
    "refused_per_s",
    "gateway_cpu_fraction",
    "health_p99_ms",
    "gateway_cpu_s_per_refusal",
    "waited_fraction",
    "retry_after_asked",
];

/// One repeat of a flood row: the figures a person compares between repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloodRepeat {
    /// The round it ran in, from 1 (a round that failed leaves a gap).
    pub round: u32,
    pub goodput_per_s: f64,
    pub limit_fraction: f64,
    pub refused_per_s: f64,
    /// Null when /proc could not be sampled.
    pub gateway_cpu_fraction: Option<f64>,
    /// Null when nothing was refused.
    pub gateway_cpu_s_per_refusal: Option<f64>,
    pub health_p99_ms: f64,
    /// The share of the client's time spent waiting as `Retry-After` asked.
    pub waited_fraction: f64,
    /// Answers that carried a `Retry-After`.
    pub retry_after_asked: u64,
}

impl FloodRepeat {
    /// The figures of `row`, measured in `round`.
    pub fn of(round: u32, row: &FloodRow) -> FloodRepeat {
        FloodRepeat {
            round,
            goodput_per_s: row.goodput_per_s,
            limit_fraction: row.limit_fraction,
            refused_per_s: row.refused_per_s,
            gateway_cpu_fraction: row.gateway_cpu_fraction,
            gateway_cpu_s_per_refusal: row.gateway_cpu_s_per_refusal,
            health_p99_ms: row.health_p99_ms,
            waited_fraction: row.retry_after.waited_fraction,
            retry_after_asked: row.retry_after.asked,
        }
    }

    /// The figure named `name` (one of [`FIGURES`]), if this repeat has it.
    pub fn figure(&self, name: &str) -> Option<f64> {
        match name {
            "goodput_per_s" => Some(self.goodput_per_s),
            "limit_fraction" => Some(self.limit_fraction),
            "refused_per_s" => Some(self.refused_per_s),
            "gateway_cpu_fraction" => self.gateway_cpu_fraction,
            "health_p99_ms" => Some(self.health_p99_ms),
            "gateway_cpu_s_per_refusal" => self.gateway_cpu_s_per_refusal,
            "waited_fraction" => Some(self.waited_fraction),
            "retry_after_asked" => Some(self.retry_after_asked as f64),
            _ => None,
        }
    }
}

/// The row of one flood point from its repeats `(round, row)` in round order: the repeat
/// with the median goodput (the lower middle of an even count, as `nearest_median` picks the
/// uniform scenario's runs), carrying every repeat's figures and each figure's spread over the
/// repeats that have it. None when no repeat was measured.
pub fn median_of(repeats: Vec<(u32, FloodRow)>) -> Option<FloodRow> {
    let kept: Vec<FloodRepeat> = repeats
        .iter()
        .map(|(round, row)| FloodRepeat::of(*round, row))
        .collect();
    let spread: BTreeMap<String, RepeatSpread> = FIGURES
        .iter()
        .filter_map(|name| {
            let values: Vec<f64> = kept.iter().filter_map(|x| x.figure(name)).collect();
            (!values.is_empty()).then(|| (name.to_string(), RepeatSpread::of(values)))
        })
        .collect();
    let mut rows: Vec<FloodRow> = repeats.into_iter().map(|(_, row)| row).collect();
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| a.goodput_per_s.total_cmp(&b.goodput_per_s));
    let mut row = rows.swap_remove((rows.len() - 1) / 2);
    row.runs = kept.len();
    row.spread = spread;
    row.repeats = kept;
    Some(row)
}

/// A figure of `row` over its repeats: its spread, or for a row built without one (or read
/// from a file written before the flood had repeats) its own value alone.
pub fn spread_of(row: &FloodRow, name: &str) -> Option<RepeatSpread> {
    match row.spread.get(name) {
        Some(s) => Some(s.clone()),
        None if row.repeats.is_empty() => {
            let v = FloodRepeat::of(1, row).figure(name)?;
            Some(RepeatSpread::of(vec![v]))
        }
        None => None,
    }
}

/// A figure of `row` over its repeats, read by `pick` (the median, the max) from its
/// [`spread_of`].
pub fn over_repeats(row: &FloodRow, name: &str, pick: fn(&RepeatSpread) -> f64) -> Option<f64> {
    spread_of(row, name).map(|s| pick(&s))
}

/// The uniform scenario's runs of `strategy` that the flood row at its `-c` takes as its
/// repeats, one per round, in run order: all of them when there is one per round. When one
/// of them failed, None: the row is measured by the flood itself, as it is without
/// `--repeat` when the one run failed.
pub fn reusable(
    uniform: &[StrategyRun],
    strategy: RowId,
    rounds: u32,
) -> Option<Vec<&StrategyRun>> {
    let runs: Vec<&StrategyRun> = uniform
        .iter()
        .filter(|r| r.measured.strategy == strategy)
        .collect();
    (runs.len() == rounds as usize).then_some(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::planted::{FloodPlant, Plant};

    /// A repeat of `pool`'s row at -c 1000.
    fn repeat(goodput_per_s: f64, refused_per_s: f64, health_p99_ms: f64, cpu: f64) -> FloodRow {
        FloodPlant {
            goodput_per_s,
            refused_per_s,
            health_p99_ms,
            gateway_cpu: cpu,
        }
        .row("pool", 1000, false)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_row_of_three_repeats_shows_the_median_one_and_their_spread() {
        let row = median_of(vec![
            (1, repeat(90.0, 40.0, 4.0, 0.40)),
            (2, repeat(110.0, 20.0, 1.0, 0.50)),
            (3, repeat(100.0, 30.0, 2.0, 0.45)),
        ])
        .unwrap();
        // The row is the repeat of round 3, the median goodput, with its own figures.
        assert_eq!(row.goodput_per_s, 100.0);
        assert_eq!(row.refused_per_s, 30.0);
        assert_eq!(row.health_p99_ms, 2.0);
        assert_eq!(row.runs, 3);
        let rounds: Vec<u32> = row.repeats.iter().map(|r| r.round).collect();
        assert_eq!(rounds, [1, 2, 3]);
        let s = |name: &str| {
            let s = &row.spread[name];
            (s.median, s.min, s.max, s.values.len())
        };
        assert_eq!(s("goodput_per_s"), (100.0, 90.0, 110.0, 3));
        assert_eq!(row.spread["goodput_per_s"].values, [90.0, 110.0, 100.0]);
        assert_eq!(s("refused_per_s"), (30.0, 20.0, 40.0, 3));
        // The probe's p99 comes from a latency histogram of three significant digits.
        let (median, min, max, n) = s("health_p99_ms");
        assert_eq!((median, min, n), (2.0, 1.0, 3));
        assert!((max - 4.0).abs() < 0.01, "{max}");
        let limit = &row.spread["limit_fraction"];
        assert!(close(limit.median, 100.0 / 150.0) && close(limit.max, 110.0 / 150.0));
        let cpu = &row.spread["gateway_cpu_fraction"];
        assert!(close(cpu.median, 0.45) && close(cpu.min, 0.40) && close(cpu.max, 0.50));
    }

    #[test]
    fn an_even_count_shows_the_lower_middle_and_a_missing_figure_counts_fewer() {
        let mut unsampled = repeat(120.0, 10.0, 1.0, 0.5);
        unsampled.gateway_cpu_fraction = None;
        let row = median_of(vec![(1, repeat(80.0, 10.0, 1.0, 0.4)), (3, unsampled)]).unwrap();
        assert_eq!(row.goodput_per_s, 80.0);
        assert_eq!(row.spread["goodput_per_s"].median, 100.0);
        assert_eq!(row.spread["gateway_cpu_fraction"].values.len(), 1);
        assert_eq!(row.repeats[1].round, 3);
        assert!(median_of(Vec::new()).is_none());
    }

    #[test]
    fn the_uniform_runs_are_reused_only_when_there_is_one_per_round() {
        let uniform: Vec<StrategyRun> = [("pool", 90.0), ("inline", 9.0), ("pool", 110.0)]
            .iter()
            .map(|(s, per_s)| Plant::new(s, *per_s, 1.0).run())
            .collect();
        let row = |s: &str| RowId::parse(s).unwrap();
        let pool: Vec<f64> = reusable(&uniform, row("pool"), 2)
            .unwrap()
            .iter()
            .map(|r| r.measured.completed_per_s)
            .collect();
        assert_eq!(pool, [90.0, 110.0]);
        assert_eq!(reusable(&uniform, row("inline"), 1).unwrap().len(), 1);
        // One of pool's three runs failed: the flood measures the row itself.
        assert!(reusable(&uniform, row("pool"), 3).is_none());
        assert!(reusable(&uniform, row("queue"), 1).is_none());
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
