//! The uniform scenario's table, one row per strategy, as plain text (the terminal and the
//! report's README.md), with the cells the other drawings share.

use std::fmt::Write as _;

use super::limit;
use super::units::{mib, ms};
use crate::bench::model::{Results, StrategyRun};

/// What the table's latency columns cover, printed under it wherever it is shown.
pub const LATENCY_NOTE: &str = "p50/p99/max: the /heavy answers that arrived in the window (any status), from send to answer; timeouts and unfinished requests (still waiting when the window closed) are counted beside them, not in them. /health: every probe that fell due, one that timed out or was cut short counted at the time it had waited (a lower bound).";

/// Answers that were not 2xx; for the queue, every answer but its 202s (its 503s are the cap).
pub fn non_2xx(run: &StrategyRun) -> u64 {
    let q = &run.heavy.requests;
    if run.queue.is_some() {
        q.completed - q.status_2xx
    } else {
        q.non_2xx
    }
}

/// The queue's cell of the table: accepted/s while the cap did not bind, backlog, drain.
pub fn queue_cell(run: &StrategyRun) -> String {
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
pub fn outcomes(run: &StrategyRun) -> [u64; 4] {
    let q = &run.heavy.requests;
    [q.errors, q.timeouts, non_2xx(run), run.unfinished]
}

/// The summary table, one row per strategy (plain text, also used in README.md).
pub fn table(r: &Results) -> String {
    let mut t = String::new();
    // Wide enough for the longest name (`node:piscina` with --node).
    let w = r.runs.iter().map(|x| x.strategy.as_str().len()).fold(9, usize::max);
    let _ = writeln!(
        t,
        "{}; -c {} -d {:.0}s, /health probe at {}/s",
        limit::headline(&r.calibration, &r.settings.work),
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
            limit::cell(run.limit_fraction, &run.limit_warnings),
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
    if r.runs.iter().any(|x| !x.limit_warnings.is_empty()) {
        let _ = writeln!(t, "{}", limit::MARKER_NOTE);
    }
    t
}

