//! Human output: autocannon-style tables plus a summary in which every failure has a line,
//! and the terminal progress bar.

use std::fmt::Write as _;
use std::io::Write as _;

use tokio::sync::watch;

use super::report::{LatencyStats, RateStats, Report};
use super::run::Progress;

/// Width of the progress bar in cells.
const BAR_WIDTH: usize = 30;

fn latency_row(out: &mut String, name: &str, s: &LatencyStats) {
    let _ = writeln!(
        out,
        "  {name:<15}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>9.3}{:>10.3}{:>9}",
        s.p2_5, s.p50, s.p97_5, s.p99, s.p99_9, s.avg, s.stdev, s.max, s.count
    );
}

fn rate_row(out: &mut String, name: &str, s: &RateStats) {
    let _ = writeln!(
        out,
        "  {name:<15}{:>11.1}{:>11.1}{:>11.1}{:>11.1}{:>11.1}{:>11.1}{:>11.1}",
        s.p1, s.p2_5, s.p50, s.p97_5, s.avg, s.stdev, s.min
    );
}

/// Formats `bytes` with a decimal (SI) unit: kB = 1000 bytes, as autocannon prints them.
fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Renders the report as text tables and a summary.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let how = match (r.duration_s, r.amount) {
        (Some(d), _) => format!("{d}s"),
        (None, Some(n)) => format!("{n} requests"),
        (None, None) => String::new(),
    };
    let _ = writeln!(out, "{} {} @ {} ({how})", r.method, r.mode, r.url);
    match r.rate {
        Some(rate) => {
            let _ = writeln!(
                out,
                "{} connections, open loop at {rate} req/s",
                r.connections
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{} connections on {} threads, closed loop",
                r.connections, r.threads
            );
        }
    }
    if r.warmup_s > 0.0 {
        let _ = writeln!(out, "warm-up {}s not counted", r.warmup_s);
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "  {:<15}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}{:>9}",
        "Latency (ms)", "2.5%", "50%", "97.5%", "99%", "99.9%", "Avg", "Stdev", "Max", "count"
    );
    latency_row(&mut out, "completed", &r.latency);
    if r.rate.is_some() {
        latency_row(&mut out, "uncorrected", &r.latency_uncorrected);
    }
    latency_row(&mut out, "with timeouts", &r.latency_with_timeouts);
    latency_row(&mut out, "first byte", &r.first_byte);
    out.push('\n');
    let _ = writeln!(
        out,
        "  {:<15}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
        "Per second", "1%", "2.5%", "50%", "97.5%", "Avg", "Stdev", "Min"
    );
    rate_row(&mut out, "Req/Sec", &r.requests_per_s);
    rate_row(&mut out, "Bytes/Sec", &r.bytes_per_s);
    out.push('\n');
    let q = &r.requests;
    let _ = writeln!(
        out,
        "{} requests sent: {} completed ({} 2xx, {} non-2xx), {} timeouts, {} connection errors, \
         {} aborted at deadline; {} due but never sent",
        q.sent,
        q.completed,
        q.status_2xx,
        q.non_2xx,
        q.timeouts,
        q.errors,
        q.aborted_at_deadline,
        q.unsent_at_deadline
    );
    let statuses: Vec<String> = q
        .by_status
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    let _ = writeln!(
        out,
        "  by status: {}",
        if statuses.is_empty() {
            "none".into()
        } else {
            statuses.join(", ")
        }
    );
    let t = &q.timeouts_by_stage;
    let _ = writeln!(
        out,
        "  timeouts: {} with no response, {} mid-head, {} mid-body (the body never ended)",
        t.no_response, t.head_incomplete, t.body_incomplete
    );
    let e = &r.errors;
    // The kinds by their JSON names, so the text and `--json` say the same thing.
    let kinds: Vec<String> = e
        .protocol_by_kind
        .named()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{n} {name}"))
        .collect();
    let kinds = if kinds.is_empty() {
        String::new()
    } else {
        format!(" ({})", kinds.join(", "))
    };
    let _ = writeln!(
        out,
        "  connection errors: {} connect, {} closed/reset, {} protocol{kinds}, {} other",
        e.connect, e.closed, e.protocol, e.other
    );
    let _ = writeln!(
        out,
        "  connections: {} opened ({} reopened after a break or timeout)",
        r.connections_opened, r.reconnects
    );
    let _ = writeln!(
        out,
        "{} completed in {:.2}s ({:.1} req/s), {} read",
        q.completed,
        r.elapsed_s,
        q.throughput,
        human_bytes(r.bytes_read as f64)
    );
    let ra = &r.retry_after;
    if ra.asked > 0 || ra.honoured {
        let mut line = format!(
            "Retry-After: {} answers (503/429) asked to wait ({} unparseable); ",
            ra.asked, ra.unparseable
        );
        if ra.honoured {
            let _ = write!(
                line,
                "honoured: waited {:.1}s in total ({:.0}% of the connections' time)",
                ra.waited_s,
                ra.waited_fraction * 100.0
            );
            if r.rate.is_some() {
                let _ = write!(
                    line,
                    ", {} requests due during a wait skipped (not sent)",
                    ra.skipped
                );
            }
        } else {
            line.push_str("not honoured: the next request went at once (--honor-retry-after)");
        }
        let _ = writeln!(out, "{line}");
    }
    if q.carried_over_2xx > 0 {
        let _ = writeln!(
            out,
            "{:.1} 2xx/s answered in the measured phase, counting {} sent during the warm-up",
            q.answered_2xx_per_s, q.carried_over_2xx
        );
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// Draws a one-line progress bar on stderr until the run reports `done`, then clears it.
pub async fn draw_progress(mut rx: watch::Receiver<Progress>) {
    let mut err = std::io::stderr();
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        if p.done {
            break;
        }
        let filled = ((p.fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
        let phase = if p.warming_up { "warm-up " } else { "" };
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {:>3.0}% {phase}{:.1}s  {} done  {} failed",
            "#".repeat(filled),
            ".".repeat(BAR_WIDTH - filled),
            p.fraction * 100.0,
            p.elapsed.as_secs_f64(),
            p.finished,
            p.failed
        );
        let _ = err.flush();
    }
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(999.0), "999.0 B");
        assert_eq!(human_bytes(1_500_000.0), "1.5 MB");
    }
}
