//! The bench's results: what is kept (`results.json`, schema beside this file), the table
//! on the terminal and the lines that read it. The folder they are written to is `folder.rs`.

use super::units::{mib, ms};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Settings;
use super::limit::{self, Calibration};
use super::machine::Machine;
use super::scenario::StrategyRun;

/// The JSON schema of `results.json`.
pub const SCHEMA: &str = include_str!("results.schema.json");
/// Bumped when `results.json` changes shape (6: the flood repeats its rows with `--repeat`:
/// `flood.repeat`, `flood.rows[].runs`, `.spread`, `.repeats`, `flood.failures[].round`;
/// 5: `runs[].unfinished`, `runs[].queue.jobs_finished_in_window`, `auto`'s rate over the
/// load's window alone, `mix.runs[].parts[].latency_with_timeouts`, `mix.runs[].health`
/// counting every probe).
pub const SCHEMA_VERSION: u32 = 6;

/// What the table's latency columns cover, printed under it wherever it is shown.
pub const LATENCY_NOTE: &str = "p50/p99/max: the /heavy answers that arrived in the window (any status), from send to answer; timeouts and unfinished requests (still waiting when the window closed) are counted beside them, not in them. /health: every probe that fell due, one that timed out or was cut short counted at the time it had waited (a lower bound).";

/// A strategy that could not be measured, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub strategy: String,
    pub error: String,
}

/// Everything a bench run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub schema_version: u32,
    pub offload_version: String,
    pub command_line: Vec<String>,
    pub started_at_unix_s: u64,
    pub wall_s: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub calibration: Calibration,
    pub runs: Vec<StrategyRun>,
    pub failures: Vec<Failure>,
    /// Plain sentences that read the table.
    pub reading: Vec<String>,
    /// With `--repeat` above 1: each strategy's figures over its runs.
    pub repeats: Vec<super::compare::Repeat>,
    /// The mixed scenario (`--mix`), when it ran.
    pub mix: Option<super::mix::MixResults>,
    /// The flood scenario (`--flood`), when it ran.
    pub flood: Option<super::flood::FloodResults>,
    /// With `--node`: the Node servers' set-up, calibrations, checks and pairs.
    pub node: Option<super::node::NodeReport>,
}

impl Results {
    pub fn new(
        machine: Machine,
        settings: Settings,
        calibration: Calibration,
        runs: Vec<StrategyRun>,
        failures: Vec<Failure>,
        wall: Duration,
        repeats: Vec<super::compare::Repeat>,
    ) -> Results {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut r = Results {
            schema_version: SCHEMA_VERSION,
            offload_version: env!("CARGO_PKG_VERSION").to_string(),
            command_line: std::env::args().collect(),
            started_at_unix_s: (now - wall).as_secs(),
            wall_s: wall.as_secs_f64(),
            machine,
            settings,
            calibration,
            runs,
            failures,
            reading: Vec::new(),
            repeats,
            mix: None,
            flood: None,
            node: None,
        };
        r.reading = read(&r);
        r
    }
}

/// Answers that were not 2xx; for the queue, every answer but its 202s (its 503s are the cap).
pub(super) fn non_2xx(run: &StrategyRun) -> u64 {
    let q = &run.heavy.requests;
    if run.queue.is_some() {
        q.completed - q.status_2xx
    } else {
        q.non_2xx
    }
}

/// The queue's cell of the table: accepted/s while the cap did not bind, backlog, drain.
pub(super) fn queue_cell(run: &StrategyRun) -> String {
    run.queue.as_ref().map_or(String::new(), |x| {
        format!(
            "{:.0}/s, {} jobs, {:.1}s{}",
            x.accept_phase.accepted_per_s,
            x.backlog_at_stop,
            x.drain_s,
            if x.drained { "" } else { " (not drained)" }
        )
    })
}

/// The errors, timeouts, non-2xx answers and unfinished requests of a run: with the answers,
/// every request sent.
pub(super) fn outcomes(run: &StrategyRun) -> [u64; 4] {
    let q = &run.heavy.requests;
    [q.errors, q.timeouts, non_2xx(run), run.unfinished]
}

/// The summary table, one row per strategy (plain text, also used in README.md).
pub fn table(r: &Results) -> String {
    let mut t = String::new();
    // Wide enough for the longest name (`node:piscina` with --node).
    let w = r.runs.iter().map(|x| x.strategy.len()).fold(9, usize::max);
    let _ = writeln!(
        t,
        "{}; -c {} -d {:.0}s, /health probe at {}/s",
        r.calibration.headline(&r.settings.work),
        r.settings.connections,
        r.settings.duration.as_secs_f64(),
        r.settings.probe_rate
    );
    let _ = writeln!(
        t,
        "{:<w$} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8} {:>27} {:>26} {:>8} {:>6}  queue: accepted/s, backlog, drain",
        "strategy",
        "done",
        "req/s",
        "limit",
        "%limit ",
        "p50",
        "p99",
        "max",
        "err/timeout/!2xx/unfinished",
        "/health p50/p99/max",
        "RSS MiB",
        "thr",
    );
    for run in &r.runs {
        let l = &run.heavy.latency;
        let b = &run.bystander.latency_with_timeouts;
        let [errors, timeouts, non2xx, unfinished] = outcomes(run);
        let queue = queue_cell(run);
        let _ = writeln!(
            t,
            "{:<w$} {:>8} {:>8.0} {:>7.0} {:>7} {:>8} {:>8} {:>8} {:>27} {:>26} {:>8.1} {:>6}  {}",
            run.strategy,
            run.completed,
            run.completed_per_s,
            run.limit.limit_per_s,
            limit::cell(run.limit_fraction, &run.limit_flags),
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            format!("{errors}/{timeouts}/{non2xx}/{unfinished}"),
            format!("{} / {} / {}", ms(b.p50), ms(b.p99), ms(b.max)),
            mib(run.peak_rss_bytes),
            run.peak_threads,
            queue
        );
    }
    for f in &r.failures {
        let _ = writeln!(t, "{:<w$} failed: {}", f.strategy, f.error);
    }
    let _ = writeln!(t, "{LATENCY_NOTE}");
    if r.runs.iter().any(|x| !x.limit_flags.is_empty()) {
        let _ = writeln!(t, "{}", limit::MARKER_NOTE);
    }
    t
}

/// A few sentences that read the table for the user.
fn read(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let runs: Vec<&StrategyRun> = r.runs.iter().collect();
    if runs.is_empty() {
        return out;
    }
    let by = |name: &str| runs.iter().find(|x| x.strategy == name).copied();
    let best_bystander = runs
        .iter()
        .map(|x| x.bystander.latency_with_timeouts.p99)
        .fold(f64::INFINITY, f64::min);
    for run in &runs {
        let p99 = run.bystander.latency_with_timeouts.p99;
        if super::rules::stalls(p99, best_bystander) {
            out.push(format!(
                "{} stalls light requests: /health waited {} at p99 (max {}), against {} for the best strategy.",
                run.strategy,
                ms(p99),
                ms(run.bystander.latency_with_timeouts.max),
                ms(best_bystander)
            ));
        }
    }
    if let Some(worst) = runs.iter().max_by_key(|x| x.peak_threads) {
        let fewest = runs.iter().map(|x| x.peak_threads).min().unwrap_or(0);
        // Only worth a sentence when one strategy's threads clearly grow with the load.
        if worst.peak_threads > 3 * fewest.max(1) && worst.peak_threads >= 16 {
            out.push(format!(
                "{} used the most threads ({} at peak, {:.0} MiB), against {} for the leanest.",
                worst.strategy,
                worst.peak_threads,
                mib(worst.peak_rss_bytes),
                fewest
            ));
        }
    }
    out.extend(r.calibration.note());
    let rows: Vec<limit::Row<'_>> = runs.iter().map(|x| x.limit_row()).collect();
    out.extend(limit::reading(&rows));
    if let Some(q) = by("queue").and_then(|x| x.queue.clone().map(|q| (x, q))) {
        let (run, q) = q;
        let a = &q.accept_phase;
        let refused = run
            .heavy
            .requests
            .by_status
            .get("503")
            .copied()
            .unwrap_or(0);
        let rest = if refused > 0 {
            format!(
                "; {refused} requests got 503 ({:.0}/s)",
                refused as f64 / r.settings.duration.as_secs_f64().max(1e-9)
            )
        } else {
            "; none got 503".to_string()
        };
        out.push(format!(
            "queue accepted {:.0} requests/s while its backlog had room ({} of {} requests answered 202 in {:.2}s, the worker running beside it); under the main load it answered {:.0}/s with 202{rest}.",
            a.accepted_per_s, a.accepted, a.requests, a.seconds, q.accepted_per_s
        ));
        out.push(format!(
            "queue completed {:.0} jobs/s while jobs were waiting; {} jobs were waiting when the load stopped and took {:.1}s to drain{}.{}",
            run.completed_per_s,
            q.backlog_at_stop,
            q.drain_s,
            if q.drained { "" } else { " (the drain timed out)" },
            q.enqueue_to_done_ms.as_ref().map_or(String::new(), |d| format!(
                " From enqueue to done a job took {} at p50, {} at p99 (max {}).",
                ms(d.p50),
                ms(d.p99),
                ms(d.max)
            ))
        ));
        if refused > 0 {
            out.push(format!(
                "The queue's backlog cap ({}) filled up, and {refused} requests were refused with 503: their wait for room ran out, or the line ahead of them was predicted to take longer than it.",
                r.settings.max_backlog
            ));
        }
    }
    if let Some(run) = by(crate::strategy::Name::Auto.as_str())
        && let Some(q) = &run.queue
    {
        out.extend(auto_rate(run, q));
    }
    for run in &runs {
        let answered = run.heavy.requests.completed;
        if run.unfinished > answered {
            out.push(format!(
                "{}: {} of its {} /heavy requests were still waiting for their answer when the window closed; its p50/p99/max cover the {answered} answered.",
                run.strategy, run.unfinished, run.heavy.requests.sent
            ));
        }
    }
    let timeouts: Vec<String> = runs
        .iter()
        .filter(|x| x.heavy.requests.timeouts + x.heavy.requests.errors > 0)
        .map(|x| {
            format!(
                "{} ({} timeouts, {} errors)",
                x.strategy, x.heavy.requests.timeouts, x.heavy.requests.errors
            )
        })
        .collect();
    if !timeouts.is_empty() {
        out.push(format!(
            "Requests lost to timeouts or errors, counted above: {}.",
            timeouts.join(", ")
        ));
    }
    out
}

/// `auto`'s req/s in its two parts, and the drain after them: its pool's 200s and its worker's
/// jobs, both in the load's window (their sum is its req/s), then the worker alone.
fn auto_rate(run: &StrategyRun, q: &super::scenario::QueueRun) -> Option<String> {
    let window = run.heavy.elapsed_s;
    if window <= 0.0 {
        return None;
    }
    let answered = run.completed.saturating_sub(q.jobs_finished_in_window);
    Some(format!(
        "{} answered {answered} requests with 200 ({:.0}/s) and its worker finished {} jobs ({:.0}/s) in the {window:.1}s load window: {:.0}/s together, its req/s. After the load its worker alone drained {} jobs in {:.1}s{}.",
        run.strategy,
        answered as f64 / window,
        q.jobs_finished_in_window,
        q.jobs_finished_in_window as f64 / window,
        run.completed_per_s,
        q.backlog_at_stop,
        q.drain_s,
        if q.drained {
            ""
        } else {
            " (the drain timed out)"
        }
    ))
}

/// CPU % (all the strategy's processes), RSS MiB and threads over [t, t+1).
pub(super) fn process_second(run: &StrategyRun, t: f64) -> (f64, f64, u64) {
    let (mut cpu, mut rss, mut thr) = (0.0, 0.0, 0);
    for p in &run.processes {
        let at = |x: f64| p.samples.iter().rfind(|s| s.t <= x);
        if let (Some(a), Some(b)) = (at(t), at(t + 1.0)) {
            if b.t > a.t {
                cpu += (b.cpu_s - a.cpu_s) / (b.t - a.t) * 100.0;
            }
            rss += mib(b.rss_bytes);
            thr += b.threads;
        }
    }
    (cpu, rss, thr)
}

/// `YYYYMMDD-HHMMSS` in UTC, for report folder names.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
