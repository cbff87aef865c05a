//! Repeats and comparisons: the figures a person compares between runs, their median and
//! min-max over `--repeat N` runs, and `--compare A B`, which diffs two report folders figure
//! by figure and says whether each change exceeds the run-to-run spread (as critcmp does for
//! criterion). Both read the figures from the runs' JSON, so a report folder written by any
//! version with the same schema can be compared.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

/// Without a spread (a side has one run only), a change counts as beyond the noise past this
/// fraction: a shared machine moves single runs by about that much (and often more).
pub const SINGLE_RUN_NOISE: f64 = 0.10;

/// The figures compared, with their JSON path inside one strategy's run, a label and a scale.
const FIGURES: [(&str, &[&str], &str, f64); 8] = [
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

/// One figure over the repeated runs of a strategy.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Every run's value, in run order.
    pub values: Vec<f64>,
}

impl Spread {
    /// The median, min and max of `values`, kept in their order. `values` is not empty.
    pub fn of(values: Vec<f64>) -> Spread {
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            values,
        }
    }
}

/// A strategy's figures over its runs.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Repeat {
    pub strategy: String,
    pub runs: usize,
    pub figures: BTreeMap<String, Spread>,
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
                    (vals.len() == rows.len()).then(|| (name.to_string(), Spread::of(vals)))
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

fn label(name: &str) -> &'static str {
    FIGURES.iter().find(|f| f.0 == name).map_or("?", |f| f.2)
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn show(s: &Spread) -> String {
    if s.values.len() > 1 {
        format!("{} ({}-{})", num(s.median), num(s.min), num(s.max))
    } else {
        num(s.median)
    }
}

/// The repeats as lines for the terminal and the Markdown summary.
pub fn repeat_lines(reps: &[Repeat]) -> Vec<String> {
    reps.iter()
        .map(|r| {
            let figs: Vec<String> = FIGURES
                .iter()
                .filter_map(|f| Some(format!("{} {}", f.2, show(r.figures.get(f.0)?))))
                .collect();
            format!(
                "{}: median (min-max) over {} runs: {}",
                r.strategy,
                r.runs,
                figs.join(", ")
            )
        })
        .collect()
}

/// One figure of one strategy in both folders.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub strategy: String,
    pub figure: String,
    pub a: Spread,
    pub b: Spread,
    /// `b / a - 1` of the medians.
    pub change: f64,
    /// Beyond the run-to-run spread: the two min-max ranges do not overlap, or (with a single
    /// run on a side) the change is over [`SINGLE_RUN_NOISE`].
    pub significant: bool,
}

/// The repeats of a report folder: its `repeats`, or its runs taken one each.
fn folder_repeats(dir: &Path) -> anyhow::Result<Vec<Repeat>> {
    let path = dir.join("results.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    if let Some(reps) = v
        .get("repeats")
        .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
    {
        return serde_json::from_value(reps.clone())
            .with_context(|| format!("{}: unreadable repeats", path.display()));
    }
    let runs = v["runs"]
        .as_array()
        .with_context(|| format!("{}: no runs", path.display()))?;
    Ok(repeats(runs))
}

/// Every figure both folders have, strategy by strategy.
///
/// # Errors
/// When a folder has no readable `results.json`.
pub fn compare(a: &Path, b: &Path) -> anyhow::Result<Vec<Change>> {
    let (ra, rb) = (folder_repeats(a)?, folder_repeats(b)?);
    let mut out = Vec::new();
    for x in &ra {
        let Some(y) = rb.iter().find(|y| y.strategy == x.strategy) else {
            continue;
        };
        for name in FIGURES.iter().map(|f| f.0) {
            let (Some(sa), Some(sb)) = (x.figures.get(name), y.figures.get(name)) else {
                continue;
            };
            let change = if sa.median == 0.0 {
                if sb.median == 0.0 { 0.0 } else { f64::INFINITY }
            } else {
                sb.median / sa.median - 1.0
            };
            let spread_known = sa.values.len() > 1 && sb.values.len() > 1;
            let significant = if spread_known {
                sb.min > sa.max || sb.max < sa.min
            } else {
                change.abs() > SINGLE_RUN_NOISE
            };
            out.push(Change {
                strategy: x.strategy.clone(),
                figure: name.to_owned(),
                a: sa.clone(),
                b: sb.clone(),
                change,
                significant,
            });
        }
    }
    Ok(out)
}

/// The comparison as a table, with a closing line that counts the changes beyond the spread.
pub fn render(a: &Path, b: &Path, changes: &[Change]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "A: {}\nB: {}", a.display(), b.display());
    let _ = writeln!(
        t,
        "{:<9} {:<17} {:>22} {:>22} {:>8}  beyond the spread?",
        "strategy", "figure", "A median (min-max)", "B median (min-max)", "change"
    );
    for c in changes {
        let why = match (c.significant, c.a.values.len() > 1 && c.b.values.len() > 1) {
            (true, true) => "yes: the ranges do not overlap",
            (true, false) => "yes: over 10% (single runs, no spread known)",
            (false, true) => "no",
            (false, false) => "no (single runs: within 10%)",
        };
        let _ = writeln!(
            t,
            "{:<9} {:<17} {:>22} {:>22} {:>+7.0}%  {why}",
            c.strategy,
            label(&c.figure),
            show(&c.a),
            show(&c.b),
            c.change * 100.0
        );
    }
    let n = changes.iter().filter(|c| c.significant).count();
    if n == 0 {
        let _ = writeln!(t, "no figure changed beyond the run-to-run spread");
    } else {
        let _ = writeln!(t, "{n} figure(s) changed beyond the run-to-run spread");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_take_the_median_and_the_range() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.values, vec![3.0, 1.0, 2.0]);
        assert_eq!(Spread::of(vec![1.0, 4.0]).median, 2.5);
    }

    #[test]
    fn repeats_group_runs_by_strategy() {
        let run = |s: &str, rps: f64| serde_json::json!({"strategy": s, "completed_per_s": rps, "peak_threads": 5});
        let reps = repeats(&[run("pool", 100.0), run("inline", 50.0), run("pool", 120.0)]);
        assert_eq!(reps.len(), 2);
        assert_eq!((reps[0].strategy.as_str(), reps[0].runs), ("pool", 2));
        assert_eq!(
            reps[0].figures["completed_per_s"].values,
            vec![100.0, 120.0]
        );
        assert!(!reps[0].figures.contains_key("health_p99_ms"));
    }
}
