//! The uniform scenario's table, one row per strategy, as plain text (the terminal and the
//! report's README.md), with the cells the other drawings share.

use std::fmt::Write as _;

use super::limit;
use super::units::{esc, mib, ms};
use crate::bench::model::{Results, StrategyRun};

/// What the table's latency columns cover, printed under it wherever it is shown.
pub const LATENCY_NOTE: &str = "p50/p99/max: the /heavy answers that arrived in the window (any status), from send to answer; timeouts and unfinished requests (still waiting when the window closed) are counted beside them, not in them. /health: every probe that fell due, one that timed out or was cut short counted at the time it had waited (a lower bound).";

/// Answers that were not 2xx; for the queue, every answer but its 202s (its 503s are the cap).
pub fn non_2xx(run: &StrategyRun) -> u64 {
    let q = &run.measured.heavy.requests;
    if run.measured.queue.is_some() {
        q.completed - q.status_2xx
    } else {
        q.non_2xx
    }
}

/// The queue's cell of the table: accepted/s while the cap did not bind, backlog, drain.
pub fn queue_cell(run: &StrategyRun) -> String {
    run.measured.queue.as_ref().map_or(String::new(), |x| {
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
    let q = &run.measured.heavy.requests;
    [q.errors, q.timeouts, non_2xx(run), run.unfinished]
}

/// One column of the uniform scenario's table, on the terminal and in HTML alike: its heading,
/// its width on the terminal, and its cell. A figure added to the table is added here once.
pub struct Column {
    pub head: &'static str,
    pub width: usize,
    pub cell: fn(&StrategyRun) -> String,
    /// Why the cell is not to be trusted, when it is not (its text then ends in `!`): the
    /// HTML table shows it on the mark.
    pub doubt: fn(&StrategyRun) -> Option<String>,
}

/// A cell that is always to be trusted.
fn no_doubt(_: &StrategyRun) -> Option<String> {
    None
}

/// The reasons a run's %limit is not to be trusted, as results.json names them.
fn limit_doubt(r: &StrategyRun) -> Option<String> {
    let why: Vec<String> = r
        .limit_warnings
        .iter()
        .map(|f| {
            serde_json::to_string(f)
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned()
        })
        .collect();
    (!why.is_empty()).then(|| format!("not reliable: {}", why.join(", ")))
}

/// `p50 / p99 / max` of a latency in ms.
fn three(l: &crate::load::LatencyStats) -> String {
    format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.max))
}

/// The table's columns after the strategy's name, in order; the queue's, left-aligned, last.
pub const COLUMNS: [Column; 11] = [
    Column {
        head: "done",
        width: 8,
        cell: |r| r.measured.completed.to_string(),
        doubt: no_doubt,
    },
    Column {
        head: "req/s",
        width: 8,
        cell: |r| format!("{:.0}", r.measured.completed_per_s),
        doubt: no_doubt,
    },
    Column {
        head: "limit",
        width: 7,
        cell: |r| format!("{:.0}", r.limit.limit_per_s),
        doubt: no_doubt,
    },
    Column {
        head: "%limit ",
        width: 7,
        cell: |r| limit::cell(r.limit_fraction, &r.limit_warnings),
        doubt: limit_doubt,
    },
    Column {
        head: "/heavy p50/p99/max",
        width: 26,
        cell: |r| three(&r.measured.heavy.latency),
        doubt: no_doubt,
    },
    Column {
        head: "err/timeout/!2xx/unfinished",
        width: 27,
        cell: |r| {
            let [errors, timeouts, non2xx, unfinished] = outcomes(r);
            format!("{errors}/{timeouts}/{non2xx}/{unfinished}")
        },
        doubt: no_doubt,
    },
    Column {
        head: "/health p50/p99/max",
        width: 26,
        cell: |r| three(&r.measured.bystander.latency_with_timeouts),
        doubt: no_doubt,
    },
    Column {
        head: "CPU ms/req",
        width: 10,
        cell: |r| match r.measured.completed {
            0 => "-".to_string(),
            n => format!("{:.2}", r.measured.cpu_s * 1e3 / n as f64),
        },
        doubt: no_doubt,
    },
    Column {
        head: "RSS MiB",
        width: 8,
        cell: |r| format!("{:.1}", mib(r.measured.peak_rss_bytes)),
        doubt: no_doubt,
    },
    Column {
        head: "thr",
        width: 6,
        cell: |r| r.measured.peak_threads.to_string(),
        doubt: no_doubt,
    },
    Column {
        head: "queue: accepted/s, backlog, drain",
        width: 0,
        cell: queue_cell,
        doubt: no_doubt,
    },
];

/// The summary table, one row per strategy (plain text, also used in README.md).
pub fn table(r: &Results) -> String {
    let mut t = String::new();
    // Wide enough for the longest name (`node:piscina` with --node).
    let w = r
        .runs
        .iter()
        .map(|x| x.measured.strategy.as_str().len())
        .fold(9, usize::max);
    let _ = writeln!(
        t,
        "{}; -c {} -d {:.0}s, /health probe at {}/s",
        limit::headline(&r.calibration, &r.settings.work),
        r.settings.connections,
        r.settings.duration.as_secs_f64(),
        r.settings.probe_rate
    );
    let line = |name: &str, cells: Vec<String>| {
        let mut l = format!("{name:<w$}");
        for (c, text) in COLUMNS.iter().zip(cells) {
            if c.width == 0 {
                let _ = write!(l, "  {text}");
            } else {
                let _ = write!(l, " {text:>width$}", width = c.width);
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(
        t,
        "{}",
        line(
            "strategy",
            COLUMNS.iter().map(|c| c.head.to_string()).collect()
        )
    );
    for run in &r.runs {
        let _ = writeln!(
            t,
            "{}",
            line(
                run.measured.strategy.as_str(),
                COLUMNS.iter().map(|c| (c.cell)(run)).collect()
            )
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

/// The results as an HTML table: the same columns as [`table`], numbers right-aligned, a
/// `%limit` that is not reliable marked with its reasons.
pub fn html_table(r: &Results) -> String {
    let mut t = String::from(r#"<table class="runs"><thead><tr><th>strategy</th>"#);
    for c in &COLUMNS {
        let _ = write!(t, "<th>{}</th>", esc(c.head.trim()));
    }
    t.push_str("</tr></thead><tbody>");
    for run in &r.runs {
        let _ = write!(t, "<tr><td>{}</td>", esc(&run.measured.strategy));
        for c in &COLUMNS {
            let mut cell = esc((c.cell)(run).trim());
            if let Some(why) = (c.doubt)(run) {
                cell = format!(
                    r#"{}<span class="flag" title="{}">!</span>"#,
                    cell.trim_end_matches('!'),
                    esc(&why)
                );
            }
            let _ = write!(t, "<td>{cell}</td>");
        }
        t.push_str("</tr>");
    }
    let _ = write!(
        t,
        r#"</tbody></table><p class="note">{}</p>"#,
        esc(LATENCY_NOTE)
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::planted::{Plant, results};

    /// A %limit not to be trusted is marked `!` on the terminal and, in HTML, with its reason
    /// on the mark; a trusted one is not marked.
    #[test]
    fn a_doubtful_limit_is_marked_in_both_tables() {
        // Against a limit of 150 req/s: 100 req/s is 67%, 200 req/s over 105% of it.
        let r = results(vec![
            Plant::new("pool", 100.0, 1.0),
            Plant::new("blocking", 200.0, 1.0),
        ]);
        let text = table(&r);
        let row = |name: &str| text.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(row("pool").contains(" 67% "), "{text}");
        assert!(row("blocking").contains(" 133%!"), "{text}");
        let html = html_table(&r);
        assert!(html.contains("<td>67%</td>"), "{html}");
        assert!(
            html.contains(
                r#"<td>133%<span class="flag" title="not reliable: over_limit">!</span></td>"#
            ),
            "{html}"
        );
        assert_eq!(html.matches(r#"class="flag""#).count(), 1, "{html}");
    }
}
