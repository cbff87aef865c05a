//! The figures a person compares between runs, and their median and min-max over
//! `--repeat N` runs. They are read from the runs' JSON, so a report folder written by any
//! version with the same schema can be compared.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The figures compared, with their JSON path inside one strategy's run, a label and a scale.
pub const FIGURES: [(&str, &[&str], &str, f64); 8] = [
    ("completed_per_s", &["completed_per_s"], "req/s", 1.0),
    ("limit_fraction", &["limit_fraction"], "%limit", 100.0),
    (
        "heavy_p50_ms",
        &["heavy", "latency", "p50"],
        "/heavy p50 ms",
        1.0,
    ),
    (
        "heavy_p99_ms",
        &["heavy", "latency", "p99"],
        "/heavy p99 ms",
        1.0,
    ),
    (
        "health_p99_ms",
        &["bystander", "latency_with_timeouts", "p99"],
        "/health p99 ms",
        1.0,
    ),
    (
        "peak_rss_mib",
        &["peak_rss_bytes"],
        "RSS MiB",
        1.0 / 1_048_576.0,
    ),
    ("peak_threads", &["peak_threads"], "threads", 1.0),
    (
        "accepted_per_s",
        &["queue", "accept_phase", "accepted_per_s"],
        "queue accepted/s",
        1.0,
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
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Repeat {
    pub strategy: String,
    pub runs: usize,
    pub figures: BTreeMap<String, RepeatSpread>,
}

/// The figures of one run (as its JSON), by name; those it does not have are left out.
fn figures_of(run: &Value) -> BTreeMap<&'static str, f64> {
    FIGURES
        .iter()
        .filter_map(|(name, path, _, scale)| {
            let v = path.iter().try_fold(run, |v, k| v.get(k))?.as_f64()?;
            Some((*name, v * scale))
        })
        .collect()
}

/// Groups runs (as JSON) by strategy, in first-seen order, into their spreads.
pub fn repeats(runs: &[Value]) -> Vec<Repeat> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<BTreeMap<&'static str, f64>>> = BTreeMap::new();
    for run in runs {
        let Some(name) = run["strategy"].as_str() else {
            continue;
        };
        if !by.contains_key(name) {
            order.push(name.to_owned());
        }
        by.entry(name.to_owned()).or_default().push(figures_of(run));
    }
    order
        .into_iter()
        .map(|strategy| {
            let rows = &by[&strategy];
            let figures = FIGURES
                .iter()
                .filter_map(|(name, ..)| {
                    let vals: Vec<f64> = rows.iter().filter_map(|r| r.get(name).copied()).collect();
                    (vals.len() == rows.len()).then(|| (name.to_string(), RepeatSpread::of(vals)))
                })
                .collect();
            Repeat {
                runs: rows.len(),
                strategy,
                figures,
            }
        })
        .collect()
}
