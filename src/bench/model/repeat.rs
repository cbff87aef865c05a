//! The figures a person compares between runs, and their median and min-max over
//! `--repeat N` runs. They are read off the runs themselves: a report folder's results.json
//! reads back as `Results`, so `--compare` takes them from its runs alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::mib;
use super::row::RowId;
use super::run::StrategyRun;

/// How to read one figure off one strategy's run, in its label's unit; None where the run has
/// no such figure (only a queue has an accept phase).
pub type Read = fn(&StrategyRun) -> Option<f64>;

/// The figures compared: a name, how to read it, and a label.
pub const FIGURES: [(&str, Read, &str); 8] = [
    (
        "completed_per_s",
        |r| Some(r.measured.completed_per_s),
        "req/s",
    ),
    (
        "limit_fraction",
        |r| Some(r.limit_fraction * 100.0),
        "%limit",
    ),
    (
        "heavy_p50_ms",
        |r| Some(r.measured.heavy.latency.p50),
        "/heavy p50 ms",
    ),
    (
        "heavy_p99_ms",
        |r| Some(r.measured.heavy.latency.p99),
        "/heavy p99 ms",
    ),
    (
        "health_p99_ms",
        |r| Some(r.measured.bystander.latency_with_timeouts.p99),
        "/health p99 ms",
    ),
    (
        "peak_rss_mib",
        |r| Some(mib(r.measured.peak_rss_bytes)),
        "RSS MiB",
    ),
    (
        "peak_threads",
        |r| Some(r.measured.peak_threads as f64),
        "threads",
    ),
    (
        "accepted_per_s",
        |r| {
            r.measured
                .queue
                .as_ref()
                .map(|q| q.accept_phase.accepted_per_s)
        },
        "queue accepted/s",
    ),
];

/// The figures of a flood row compared, with their name in the row and in its `spread`, a
/// label and a scale from the row's unit (a fraction) to the label's (a percent).
pub const FLOOD_FIGURES: [(&str, &str, f64); 5] = [
    ("goodput_per_s", "goodput/s", 1.0),
    ("limit_fraction", "%limit", 100.0),
    ("refused_per_s", "503/s", 1.0),
    ("gateway_cpu_fraction", "gw CPU %", 100.0),
    ("health_p99_ms", "/health p99 ms", 1.0),
];

/// One figure over the repeated runs of a strategy or a flood row: its median, min and max
/// (not to be confused with [`crate::api::Spread`], percentiles of one run's latencies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatSpread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Every run's value, in run order.
    pub values: Vec<f64>,
}

impl RepeatSpread {
    /// The median, min and max of `values`, kept in their order. `values` is not empty.
    pub fn of(values: Vec<f64>) -> RepeatSpread {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        RepeatSpread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            values,
        }
    }

    /// This spread with every value multiplied by `scale` (positive).
    pub fn scaled(&self, scale: f64) -> RepeatSpread {
        RepeatSpread {
            median: self.median * scale,
            min: self.min * scale,
            max: self.max * scale,
            values: self.values.iter().map(|v| v * scale).collect(),
        }
    }
}

/// A strategy's figures over its runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Repeat {
    pub strategy: RowId,
    pub runs: usize,
    pub figures: BTreeMap<String, RepeatSpread>,
}

/// Groups runs by strategy, in first-seen order, into the spreads of the figures every one
/// of its runs has.
pub fn repeats(runs: &[StrategyRun]) -> Vec<Repeat> {
    let mut order: Vec<RowId> = Vec::new();
    for r in runs {
        if !order.contains(&r.measured.strategy) {
            order.push(r.measured.strategy);
        }
    }
    order
        .into_iter()
        .map(|strategy| {
            let of: Vec<&StrategyRun> = runs
                .iter()
                .filter(|r| r.measured.strategy == strategy)
                .collect();
            let figures = FIGURES
                .iter()
                .filter_map(|(name, read, _)| {
                    let values: Option<Vec<f64>> = of.iter().map(|r| read(r)).collect();
                    Some((name.to_string(), RepeatSpread::of(values?)))
                })
                .collect();
            Repeat {
                strategy,
                runs: of.len(),
                figures,
            }
        })
        .collect()
}
