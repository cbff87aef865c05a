//! A flood row over its repeats (`--repeat N`): the figures kept of each repeat, their
//! spread, and the repeat the row shows (the one with the median goodput, as the uniform
//! scenario shows its run nearest the median).

use std::collections::BTreeMap;

use serde::Serialize;

use super::FloodRow;
use crate::bench::compare::Spread;
use crate::bench::scenario::StrategyRun;

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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    let spread: BTreeMap<String, Spread> = FIGURES
        .iter()
        .filter_map(|name| {
            let values: Vec<f64> = kept.iter().filter_map(|x| x.figure(name)).collect();
            (!values.is_empty()).then(|| (name.to_string(), Spread::of(values)))
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

/// A figure of `row` over its repeats, read by `pick` (the median, the max) from its spread;
/// for a row built without one, its own value.
pub fn over_repeats(row: &FloodRow, name: &str, pick: fn(&Spread) -> f64) -> Option<f64> {
    match row.spread.get(name) {
        Some(s) => Some(pick(s)),
        None if row.repeats.is_empty() => FloodRepeat::of(1, row).figure(name),
        None => None,
    }
}

/// The uniform scenario's runs of `strategy` that the flood row at its `-c` takes as its
/// repeats, one per round, in run order: all of them when there is one per round. When one
/// of them failed, None: the row is measured by the flood itself, as it is without
/// `--repeat` when the one run failed.
pub fn reusable<'a>(
    uniform: &'a [StrategyRun],
    strategy: &str,
    rounds: u32,
) -> Option<Vec<&'a StrategyRun>> {
    let runs: Vec<&StrategyRun> = uniform.iter().filter(|r| r.strategy == strategy).collect();
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
        let pool: Vec<f64> = reusable(&uniform, "pool", 2)
            .unwrap()
            .iter()
            .map(|r| r.completed_per_s)
            .collect();
        assert_eq!(pool, [90.0, 110.0]);
        assert_eq!(reusable(&uniform, "inline", 1).unwrap().len(), 1);
        // One of pool's three runs failed: the flood measures the row itself.
        assert!(reusable(&uniform, "pool", 3).is_none());
        assert!(reusable(&uniform, "queue", 1).is_none());
    }
}
