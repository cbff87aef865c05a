//! Repeats and comparisons: the figures a person compares between runs, their median and
//! min-max over `--repeat N` runs, and `--compare A B`, which diffs two report folders figure
//! by figure and says whether each change exceeds the run-to-run spread (as critcmp does for
//! criterion), for the uniform scenario's strategies and the flood's rows. A folder's
//! results.json is read back as `Results`, so a folder written by any version with the same
//! schema can be compared (one whose flood has no repeats, or no flood, too).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::bench::model::{
    FIGURES, FLOOD_FIGURES, Repeat, RepeatSpread, Results, RowId, SCHEMA_VERSION, repeats,
    spread_of,
};

/// Without a spread (a side has one run only), a change counts as beyond the noise past this
/// fraction: a shared machine moves single runs by about that much (and often more).
pub const SINGLE_RUN_NOISE: f64 = 0.10;

fn label(c: &Change) -> &'static str {
    if c.flood.is_some() {
        FLOOD_FIGURES
            .iter()
            .find(|f| f.0 == c.figure)
            .map_or("?", |f| f.1)
    } else {
        FIGURES
            .iter()
            .find(|f| f.0 == c.figure)
            .map_or("?", |f| f.2)
    }
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

fn show(s: &RepeatSpread) -> String {
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

/// The flood row a figure is of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodPoint {
    pub connections: u64,
    pub honor_retry_after: bool,
}

impl FloodPoint {
    /// The client, as the flood's table names it.
    fn client(self) -> &'static str {
        if self.honor_retry_after {
            "Retry-After"
        } else {
            "plain"
        }
    }
}

/// One figure of one strategy (or one flood row) in both folders.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub strategy: String,
    /// The flood row, for a figure of the flood; None for the uniform scenario's.
    pub flood: Option<FloodPoint>,
    pub figure: String,
    pub a: RepeatSpread,
    pub b: RepeatSpread,
    /// `b / a - 1` of the medians.
    pub change: f64,
    /// Beyond the run-to-run spread: the two min-max ranges do not overlap, or (with a single
    /// run on a side) the change is over [`SINGLE_RUN_NOISE`].
    pub significant: bool,
}

/// A report folder's `results.json`, read back as the results it was written from.
fn read(dir: &Path) -> anyhow::Result<Results> {
    /// The version alone, read first so that a file of another schema says so.
    #[derive(serde::Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let path = dir.join("results.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: Version = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a results.json", path.display()))?;
    anyhow::ensure!(
        v.schema_version == SCHEMA_VERSION,
        "{}: schema_version {}, but this offload reads {SCHEMA_VERSION}",
        path.display(),
        v.schema_version
    );
    serde_json::from_str(&text).with_context(|| format!("{}: unreadable", path.display()))
}

/// The repeats of a report folder's results: its `repeats`, or its runs taken one each.
fn folder_repeats(r: &Results) -> Vec<Repeat> {
    if r.repeats.is_empty() {
        repeats(&r.runs)
    } else {
        r.repeats.clone()
    }
}

/// One flood row of a report folder: the compared figures over its repeats, scaled to their
/// labels' units.
struct FloodFigures {
    strategy: RowId,
    point: FloodPoint,
    figures: BTreeMap<&'static str, RepeatSpread>,
}

/// The flood rows of a report folder's results, each figure over the row's repeats. Empty
/// when it has no flood.
fn flood_rows(r: &Results) -> Vec<FloodFigures> {
    let Some(flood) = &r.flood else {
        return Vec::new();
    };
    flood
        .rows
        .iter()
        .map(|row| FloodFigures {
            strategy: row.strategy,
            point: FloodPoint {
                connections: row.connections.into(),
                honor_retry_after: row.honor_retry_after,
            },
            figures: FLOOD_FIGURES
                .iter()
                .filter_map(|(name, _, scale)| Some((*name, spread_of(row, name)?.scaled(*scale))))
                .collect(),
        })
        .collect()
}

/// Figure `figure` of `strategy` (at flood row `flood`) from A's spread to B's.
fn judge(
    strategy: &str,
    flood: Option<FloodPoint>,
    figure: &str,
    sa: &RepeatSpread,
    sb: &RepeatSpread,
) -> Change {
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
    Change {
        strategy: strategy.to_owned(),
        flood,
        figure: figure.to_owned(),
        a: sa.clone(),
        b: sb.clone(),
        change,
        significant,
    }
}

/// Every figure both folders have, strategy by strategy, then flood row by flood row (paired
/// by strategy, connection count and client).
///
/// # Errors
/// When a folder's `results.json` cannot be read, is of another schema version, or does not
/// parse as results.
pub fn compare(a: &Path, b: &Path) -> anyhow::Result<Vec<Change>> {
    let (va, vb) = (read(a)?, read(b)?);
    let (ra, rb) = (folder_repeats(&va), folder_repeats(&vb));
    let mut out = Vec::new();
    for x in &ra {
        let Some(y) = rb.iter().find(|y| y.strategy == x.strategy) else {
            continue;
        };
        for name in FIGURES.iter().map(|f| f.0) {
            if let (Some(sa), Some(sb)) = (x.figures.get(name), y.figures.get(name)) {
                out.push(judge(x.strategy.as_str(), None, name, sa, sb));
            }
        }
    }
    let fb = flood_rows(&vb);
    for x in flood_rows(&va) {
        let Some(y) = fb
            .iter()
            .find(|y| y.strategy == x.strategy && y.point == x.point)
        else {
            continue;
        };
        for (name, ..) in FLOOD_FIGURES {
            if let (Some(sa), Some(sb)) = (x.figures.get(name), y.figures.get(name)) {
                out.push(judge(x.strategy.as_str(), Some(x.point), name, sa, sb));
            }
        }
    }
    Ok(out)
}

/// Why a change is, or is not, beyond the spread.
fn why(c: &Change) -> &'static str {
    match (c.significant, c.a.values.len() > 1 && c.b.values.len() > 1) {
        (true, true) => "yes: the ranges do not overlap",
        (true, false) => "yes: over 10% (single runs, no spread known)",
        (false, true) => "no",
        (false, false) => "no (single runs: within 10%)",
    }
}

/// The comparison as a table (the flood's rows in a second one), with a closing line that
/// counts the changes beyond the spread.
pub fn render(a: &Path, b: &Path, changes: &[Change]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "A: {}\nB: {}", a.display(), b.display());
    let _ = writeln!(
        t,
        "{:<9} {:<17} {:>22} {:>22} {:>8}  beyond the spread?",
        "strategy", "figure", "A median (min-max)", "B median (min-max)", "change"
    );
    for c in changes.iter().filter(|c| c.flood.is_none()) {
        let _ = writeln!(
            t,
            "{:<9} {:<17} {:>22} {:>22} {:>+7.0}%  {}",
            c.strategy,
            label(c),
            show(&c.a),
            show(&c.b),
            c.change * 100.0,
            why(c)
        );
    }
    if changes.iter().any(|c| c.flood.is_some()) {
        let _ = writeln!(
            t,
            "\nflood:\n{:<9} {:>5} {:<11} {:<15} {:>22} {:>22} {:>8}  beyond the spread?",
            "strategy",
            "-c",
            "client",
            "figure",
            "A median (min-max)",
            "B median (min-max)",
            "change"
        );
    }
    for c in changes {
        let Some(p) = c.flood else {
            continue;
        };
        let _ = writeln!(
            t,
            "{:<9} {:>5} {:<11} {:<15} {:>22} {:>22} {:>+7.0}%  {}",
            c.strategy,
            p.connections,
            p.client(),
            label(c),
            show(&c.a),
            show(&c.b),
            c.change * 100.0,
            why(c)
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
    use serde_json::Value;

    use super::*;
    use crate::bench::model::FloodRow;
    use crate::bench::planted::{self, FloodPlant, Plant};

    /// pool's flood row at `c` over three rounds, with these goodputs and 20 refusals/s.
    fn flood_row(c: u32, honour: bool, goodputs: [f64; 3]) -> Vec<FloodRow> {
        goodputs
            .iter()
            .map(|g| {
                FloodPlant {
                    goodput_per_s: *g,
                    refused_per_s: 20.0,
                    health_p99_ms: 1.0,
                    gateway_cpu: 0.5,
                }
                .row("pool", c, honour)
            })
            .collect()
    }

    /// A run of pool at 50/s with a flood of `rows` at `counts`, three rounds.
    fn results(counts: &[u32], rows: Vec<Vec<FloodRow>>) -> Results {
        let mut r = planted::results(vec![Plant::new("pool", 50.0, 1.0)]);
        r.flood = Some(planted::flood(counts, 3, rows));
        r
    }

    /// A report folder holding `json` as its results.json.
    fn folder(json: &Value) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("results.json"), json.to_string()).unwrap();
        dir
    }

    /// Run A's results: pool at -c 100, -c 1000 (90-110/s) and -c 1000 honouring Retry-After.
    fn run_a() -> Value {
        let rows = vec![
            flood_row(100, false, [50.0, 52.0, 48.0]),
            flood_row(1000, false, [90.0, 110.0, 100.0]),
            flood_row(1000, true, [120.0, 118.0, 121.0]),
        ];
        serde_json::to_value(results(&[100, 1000], rows)).unwrap()
    }

    /// Run B's results: no -c 100; at -c 1000 plain 140-160/s, the honouring client as in A.
    fn run_b() -> Value {
        let rows = vec![
            flood_row(1000, false, [140.0, 160.0, 150.0]),
            flood_row(1000, true, [121.0, 119.0, 122.0]),
        ];
        serde_json::to_value(results(&[1000], rows)).unwrap()
    }

    fn flood_change<'a>(changes: &'a [Change], honour: bool, figure: &str) -> &'a Change {
        changes
            .iter()
            .find(|c| c.flood.is_some_and(|p| p.honor_retry_after == honour) && c.figure == figure)
            .unwrap_or_else(|| panic!("no flood {figure} (honour {honour}): {changes:#?}"))
    }

    #[test]
    fn compare_pairs_flood_rows_and_reports_a_change_beyond_the_spread() {
        let (a, b) = (folder(&run_a()), folder(&run_b()));
        let changes = compare(a.path(), b.path()).unwrap();
        // The uniform scenario's figures still come first.
        assert!(changes[0].flood.is_none() && changes[0].strategy == "pool");
        // Paired by strategy, -c and client: -c 100 is in A only, so it is left out.
        let points: Vec<(u64, bool)> = changes
            .iter()
            .filter_map(|c| c.flood.map(|p| (p.connections, p.honor_retry_after)))
            .collect();
        assert_eq!(points, [[(1000, false); 5], [(1000, true); 5]].concat());
        let plain = flood_change(&changes, false, "goodput_per_s");
        assert_eq!((plain.a.median, plain.b.median), (100.0, 150.0));
        assert!((plain.change - 0.5).abs() < 1e-9);
        assert!(plain.significant);
        // The honouring client is held against its own row: ranges 118-121 and 119-122.
        let honour = flood_change(&changes, true, "goodput_per_s");
        assert_eq!((honour.a.median, honour.b.median), (120.0, 121.0));
        assert!(!honour.significant);
        // %limit in percent, as the table shows it.
        let limit = flood_change(&changes, false, "limit_fraction");
        assert!((limit.a.median - 100.0 / 1.5).abs() < 1e-9, "{limit:?}");

        let text = render(a.path(), b.path(), &changes);
        assert!(
            text.contains("\nflood:\nstrategy     -c client      figure"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("pool       1000 plain       goodput/s"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.ends_with("+50%  yes: the ranges do not overlap"),
            "{text}"
        );
        assert!(line.contains(" 100 (90.0-110) "), "{text}");
        assert!(text.contains("figure(s) changed beyond the run-to-run spread"));
    }

    #[test]
    fn an_older_results_json_without_flood_repeats_still_compares() {
        let a = folder(&run_a());
        // B as written before the flood had repeats: each row one run, no spread.
        let mut old = run_b();
        old["flood"].as_object_mut().unwrap().remove("repeat");
        for row in old["flood"]["rows"].as_array_mut().unwrap() {
            let row = row.as_object_mut().unwrap();
            for key in ["runs", "spread", "repeats"] {
                row.remove(key);
            }
        }
        let b = folder(&old);
        let changes = compare(a.path(), b.path()).unwrap();
        let plain = flood_change(&changes, false, "goodput_per_s");
        // Run B's row is its repeat with the median goodput, 150/s.
        assert_eq!(plain.b.values, [150.0]);
        assert!(plain.significant);
        let text = render(a.path(), b.path(), &changes);
        assert!(
            text.lines()
                .any(|l| l.starts_with("pool       1000 plain       goodput/s")
                    && l.ends_with("yes: over 10% (single runs, no spread known)")),
            "{text}"
        );
        // And older still: no flood at all (null, or no key).
        let mut null = run_b();
        null["flood"] = Value::Null;
        let mut absent = run_b();
        absent.as_object_mut().unwrap().remove("flood");
        for older in [null, absent] {
            let b = folder(&older);
            let changes = compare(a.path(), b.path()).unwrap();
            assert!(!changes.is_empty());
            assert!(changes.iter().all(|c| c.flood.is_none()), "{changes:#?}");
            assert!(!render(a.path(), b.path(), &changes).contains("flood:"));
        }
    }

    #[test]
    fn the_compared_flood_figures_are_in_every_row_and_its_spread() {
        let row = &run_a()["flood"]["rows"][1];
        for (name, ..) in FLOOD_FIGURES {
            assert!(row[name].is_number(), "{name}: {row}");
            assert!(row["spread"][name]["median"].is_number(), "{name}: {row}");
        }
    }

    #[test]
    fn spreads_take_the_median_and_the_range() {
        let s = RepeatSpread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.values, vec![3.0, 1.0, 2.0]);
        assert_eq!(RepeatSpread::of(vec![1.0, 4.0]).median, 2.5);
    }

    #[test]
    fn repeats_group_runs_by_strategy() {
        let run = |s: &str, rps: f64| Plant::new(s, rps, 1.0).run();
        let reps = repeats(&[run("pool", 100.0), run("inline", 50.0), run("pool", 120.0)]);
        assert_eq!(reps.len(), 2);
        assert_eq!((reps[0].strategy.as_str(), reps[0].runs), ("pool", 2));
        assert_eq!(
            reps[0].figures["completed_per_s"].values,
            vec![100.0, 120.0]
        );
        assert!(!reps[0].figures.contains_key("accepted_per_s"));
    }

    /// The whole text of two comparisons, as it read when results.json was walked untyped.
    #[test]
    fn the_comparison_reads_as_it_did() {
        let (a, b) = (folder(&run_a()), folder(&run_b()));
        let changes = compare(a.path(), b.path()).unwrap();
        assert_eq!(
            render(Path::new("A"), Path::new("B"), &changes),
            GOLDEN_FLOOD
        );
        // A queue's figures too, single runs taken one each.
        let run = |pool: f64, queue: f64, accepted: f64| {
            let r = planted::results(vec![
                Plant::new("pool", pool, 1.0),
                Plant::new("queue", queue, 2.0).queue(accepted, 100, 50.0),
            ]);
            folder(&serde_json::to_value(r).unwrap())
        };
        let (a, b) = (run(50.0, 40.0, 200.0), run(60.0, 41.0, 150.0));
        let changes = compare(a.path(), b.path()).unwrap();
        assert_eq!(
            render(Path::new("A"), Path::new("B"), &changes),
            GOLDEN_QUEUE
        );
    }

    #[test]
    fn a_results_json_of_another_schema_or_shape_is_an_error_naming_it() {
        let a = folder(&run_a());
        let mut older = run_b();
        older["schema_version"] = 6.into();
        let b = folder(&older);
        let e = format!("{:#}", compare(a.path(), b.path()).unwrap_err());
        assert!(e.contains("results.json: schema_version 6"), "{e}");
        assert!(e.contains(&b.path().display().to_string()), "{e}");
        let mut broken = run_b();
        broken.as_object_mut().unwrap().remove("runs");
        let b = folder(&broken);
        let e = format!("{:#}", compare(a.path(), b.path()).unwrap_err());
        assert!(e.contains(&b.path().display().to_string()), "{e}");
        assert!(e.contains("missing field `runs`"), "{e}");
    }

    /// The text of `the_comparison_reads_as_it_did`.
    const GOLDEN_FLOOD: &str = "\
A: A
B: B
strategy  figure                A median (min-max)     B median (min-max)   change  beyond the spread?
pool      req/s                               50.0                   50.0      +0%  no (single runs: within 10%)
pool      %limit                              33.3                   33.3      +0%  no (single runs: within 10%)
pool      /heavy p50 ms                        500                    500      +0%  no (single runs: within 10%)
pool      /heavy p99 ms                        500                    500      +0%  no (single runs: within 10%)
pool      /health p99 ms                      1.00                   1.00      +0%  no (single runs: within 10%)
pool      RSS MiB                             10.0                   10.0      +0%  no (single runs: within 10%)
pool      threads                             5.00                   5.00      +0%  no (single runs: within 10%)

flood:
strategy     -c client      figure              A median (min-max)     B median (min-max)   change  beyond the spread?
pool       1000 plain       goodput/s               100 (90.0-110)          150 (140-160)     +50%  yes: the ranges do not overlap
pool       1000 plain       %limit                66.7 (60.0-73.3)         100 (93.3-107)     +50%  yes: the ranges do not overlap
pool       1000 plain       503/s                 20.0 (20.0-20.0)       20.0 (20.0-20.0)      +0%  no
pool       1000 plain       gw CPU %              50.0 (50.0-50.0)       50.0 (50.0-50.0)      +0%  no
pool       1000 plain       /health p99 ms        1.00 (1.00-1.00)       1.00 (1.00-1.00)      +0%  no
pool       1000 Retry-After goodput/s                120 (118-121)          121 (119-122)      +1%  no
pool       1000 Retry-After %limit                80.0 (78.7-80.7)       80.7 (79.3-81.3)      +1%  no
pool       1000 Retry-After 503/s                 20.0 (20.0-20.0)       20.0 (20.0-20.0)      +0%  no
pool       1000 Retry-After gw CPU %              50.0 (50.0-50.0)       50.0 (50.0-50.0)      +0%  no
pool       1000 Retry-After /health p99 ms        1.00 (1.00-1.00)       1.00 (1.00-1.00)      +0%  no
2 figure(s) changed beyond the run-to-run spread
";
    /// The text of `the_comparison_reads_as_it_did`.
    const GOLDEN_QUEUE: &str = "\
A: A
B: B
strategy  figure                A median (min-max)     B median (min-max)   change  beyond the spread?
pool      req/s                               50.0                   60.0     +20%  yes: over 10% (single runs, no spread known)
pool      %limit                              33.3                   40.0     +20%  yes: over 10% (single runs, no spread known)
pool      /heavy p50 ms                        500                    500      +0%  no (single runs: within 10%)
pool      /heavy p99 ms                        500                    500      +0%  no (single runs: within 10%)
pool      /health p99 ms                      1.00                   1.00      +0%  no (single runs: within 10%)
pool      RSS MiB                             10.0                   10.0      +0%  no (single runs: within 10%)
pool      threads                             5.00                   5.00      +0%  no (single runs: within 10%)
queue     req/s                               40.0                   41.0      +2%  no (single runs: within 10%)
queue     %limit                              26.7                   27.3      +2%  no (single runs: within 10%)
queue     /heavy p50 ms                        500                    500      +0%  no (single runs: within 10%)
queue     /heavy p99 ms                        500                    500      +0%  no (single runs: within 10%)
queue     /health p99 ms                      2.00                   2.00      +0%  no (single runs: within 10%)
queue     RSS MiB                             20.0                   20.0      +0%  no (single runs: within 10%)
queue     threads                             10.0                   10.0      +0%  no (single runs: within 10%)
queue     queue accepted/s                     200                    150     -25%  yes: over 10% (single runs, no spread known)
3 figure(s) changed beyond the run-to-run spread
";
}
