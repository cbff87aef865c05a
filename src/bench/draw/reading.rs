//! The sentences that read the uniform scenario's table: stalls, threads, the limit, the
//! queue's two rates, `auto`'s two parts, and the requests left unanswered. Each one carries
//! the figures it is read from.

use super::limit;
use super::units::{mib, ms};
use crate::bench::model::{QueueRun, Results, StrategyRun};
use crate::strategy::Name;

/// A few sentences that read the table for the user.
pub fn read(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let runs: Vec<&StrategyRun> = r.runs.iter().collect();
    if runs.is_empty() {
        return out;
    }
    // The run of offload's strategy that has a capability (`queue`: it stores every request's
    // work; `auto`: it routes).
    let by = |can: fn(Name) -> bool| {
        runs.iter()
            .find(|x| x.measured.strategy.offload().is_some_and(can))
            .copied()
    };
    let best_bystander = runs
        .iter()
        .map(|x| x.measured.bystander.latency_with_timeouts.p99)
        .fold(f64::INFINITY, f64::min);
    for run in &runs {
        let p99 = run.measured.bystander.latency_with_timeouts.p99;
        if super::rules::stalls(p99, best_bystander) {
            out.push(format!(
                "{} stalls light requests: /health waited {} at p99 (max {}), against {} for the best strategy.",
                run.measured.strategy,
                ms(p99),
                ms(run.measured.bystander.latency_with_timeouts.max),
                ms(best_bystander)
            ));
        }
    }
    if let Some(worst) = runs.iter().max_by_key(|x| x.measured.peak_threads) {
        let fewest = runs
            .iter()
            .map(|x| x.measured.peak_threads)
            .min()
            .unwrap_or(0);
        // Only worth a sentence when one strategy's threads clearly grow with the load.
        if worst.measured.peak_threads > 3 * fewest.max(1) && worst.measured.peak_threads >= 16 {
            out.push(format!(
                "{} used the most threads ({} at peak, {:.0} MiB), against {} for the leanest.",
                worst.measured.strategy,
                worst.measured.peak_threads,
                mib(worst.measured.peak_rss_bytes),
                fewest
            ));
        }
    }
    out.extend(limit::note(&r.calibration));
    let rows: Vec<limit::Row<'_>> = runs.iter().map(|x| limit::row(x)).collect();
    out.extend(limit::reading(&rows));
    if let Some(q) = by(Name::always_stores).and_then(|x| x.measured.queue.clone().map(|q| (x, q)))
    {
        let (run, q) = q;
        let a = &q.accept_phase;
        let refused = run
            .measured
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
            run.measured.completed_per_s,
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
    if let Some(run) = by(Name::routes)
        && let Some(q) = &run.measured.queue
    {
        out.extend(auto_rate(run, q));
    }
    for run in &runs {
        let answered = run.measured.heavy.requests.completed;
        if run.unfinished > answered {
            out.push(format!(
                "{}: {} of its {} /heavy requests were still waiting for their answer when the window closed; its p50/p99/max cover the {answered} answered.",
                run.measured.strategy, run.unfinished, run.measured.heavy.requests.sent
            ));
        }
    }
    let timeouts: Vec<String> = runs
        .iter()
        .filter(|x| x.measured.heavy.requests.timeouts + x.measured.heavy.requests.errors > 0)
        .map(|x| {
            format!(
                "{} ({} timeouts, {} errors)",
                x.measured.strategy,
                x.measured.heavy.requests.timeouts,
                x.measured.heavy.requests.errors
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
fn auto_rate(run: &StrategyRun, q: &QueueRun) -> Option<String> {
    let window = run.measured.heavy.elapsed_s;
    if window <= 0.0 {
        return None;
    }
    let answered = run
        .measured
        .completed
        .saturating_sub(q.jobs_finished_in_window);
    Some(format!(
        "{} answered {answered} requests with 200 ({:.0}/s) and its worker finished {} jobs ({:.0}/s) in the {window:.1}s load window: {:.0}/s together, its req/s. After the load its worker alone drained {} jobs in {:.1}s{}.",
        run.measured.strategy,
        answered as f64 / window,
        q.jobs_finished_in_window,
        q.jobs_finished_in_window as f64 / window,
        run.measured.completed_per_s,
        q.backlog_at_stop,
        q.drain_s,
        if q.drained {
            ""
        } else {
            " (the drain timed out)"
        }
    ))
}
