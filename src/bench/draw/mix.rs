//! The mixed scenario's tables (terminal and HTML) and the reading of its three goals.

use std::collections::BTreeMap;

use super::units::esc;
use crate::bench::model::{MixResults, MixRun, PartRun, RowId};
use crate::strategy::Name;

pub fn brief(r: &MixRun) -> String {
    r.parts
        .iter()
        .map(|p| {
            format!(
                "{} p99 {:.1} ms ({})",
                p.work,
                p.latency.p99,
                statuses(&p.answered)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `200 x80, 202 x9`.
pub fn statuses(answered: &BTreeMap<String, u64>) -> String {
    answered
        .iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One strategy on the mix: its processes on a queue of their own, the open-loop mix with
/// the `/health` probe beside it, then the jobs followed until drained.
pub fn reading(runs: &[MixRun], light: &str) -> Vec<String> {
    let find = |row: RowId| runs.iter().find(|r| r.strategy == row);
    // The run of offload's strategy that has a capability (`auto`: it routes; `queue`: it
    // stores every request's work).
    let by = |can: fn(Name) -> bool| runs.iter().find(|r| r.strategy.offload().is_some_and(can));
    let part = |r: &MixRun, work: &str| r.parts.iter().find(|p| p.work == work).cloned();
    let mut out = Vec::new();
    if let (Some(auto), Some(alone)) = (by(Name::routes), find(RowId::LightAlone))
        && let (Some(a), Some(b)) = (part(auto, light), part(alone, light))
    {
        let (pa, pb) = (a.latency_with_timeouts.p99, b.latency_with_timeouts.p99);
        let ratio = pa / pb.max(1e-9);
        out.push(format!(
            "light ({light}) p99: auto {pa:.1} ms, alone {pb:.1} ms: {ratio:.2}x ({} the 1.5x goal), over the answers and the requests timed out or unfinished, each of those at the time it had waited (auto {} of {}, alone {} of {}){}",
            if ratio <= 1.5 { "within" } else { "OUTSIDE" },
            unanswered(&a),
            a.latency_with_timeouts.count,
            unanswered(&b),
            b.latency_with_timeouts.count,
            match (count(&a, "error"), count(&b, "error")) {
                (0, 0) => String::new(),
                (x, y) => format!("; connection errors, in neither: auto {x}, alone {y}"),
            }
        ));
    }
    if let (Some(auto), Some(queue)) = (by(Name::routes), by(Name::always_stores)) {
        for q in queue.parts.iter().filter(|p| p.work != light) {
            let Some(a) = part(auto, &q.work) else {
                continue;
            };
            let ratio = a.jobs_done_per_s / q.jobs_done_per_s.max(1e-9);
            let p99 = |p: &PartRun| p.enqueue_to_done_ms.as_ref().map_or(f64::NAN, |s| s.p99);
            out.push(format!(
                "heavy ({}) jobs done: auto {} ({:.2}/s, enqueue-to-done p99 {:.0} ms), queue {} ({:.2}/s, p99 {:.0} ms): {ratio:.2}x ({} 5% of queue's)",
                q.work,
                a.jobs_done,
                a.jobs_done_per_s,
                p99(&a),
                q.jobs_done,
                q.jobs_done_per_s,
                p99(q),
                if (ratio - 1.0).abs() <= 0.05 { "within" } else { "NOT within" }
            ));
        }
        let refused = |r: &MixRun| -> u64 {
            r.parts
                .iter()
                .flat_map(|p| p.answered.iter())
                .filter(|(k, _)| k.as_str() == "503" || k.as_str() == "504")
                .map(|(_, v)| v)
                .sum()
        };
        out.push(format!(
            "503/504 answers: auto {}, queue {}",
            refused(auto),
            refused(queue)
        ));
    }
    out
}

/// A part's count under `key` of `answered` (0 when absent).
fn count(p: &PartRun, key: &str) -> u64 {
    p.answered.get(key).copied().unwrap_or(0)
}

/// Requests of a part in its `latency_with_timeouts` but not answered: timed out or unfinished.
fn unanswered(p: &PartRun) -> u64 {
    count(p, "timeout") + count(p, "unfinished")
}

/// What the mix table's latencies cover, printed under it.
pub const LATENCY_NOTE: &str = "p50/p99/max: the answers of that kind (any status), from the intended send; those under timeout, error and unfinished (still waiting, or due and never sent, when the load stopped) are counted in answered, not in them. /health p99: every probe that fell due, one that timed out or was cut short at the time it had waited.";

/// The enqueue-to-done p99 of a part's jobs, or `-` without jobs.
fn e2d_p99(p: &PartRun) -> String {
    p.enqueue_to_done_ms
        .as_ref()
        .map_or("-".to_string(), |s| super::units::ms(s.p99))
}

/// The mix's table, as printed and in the README of the report folder.
pub fn table(m: &MixResults) -> String {
    let mut out = format!(
        "mix {} (seed {}): open loop at {:.1} req/s = {:.0}% of its all-core limit {:.1} req/s\n",
        m.spec,
        m.seed,
        m.rate,
        m.load_fraction * 100.0,
        m.limit_per_s
    );
    out.push_str(&format!(
        "{:<18} {:<18} {:>6} {:>9} {:>9} {:>9}  {:<30} {:>6} {:>8} {:>10}  {}\n",
        "strategy",
        "work",
        "sent",
        "p50",
        "p99",
        "max",
        "answered",
        "jobs",
        "jobs/s",
        "e2d p99",
        "/health p99"
    ));
    for r in &m.runs {
        for (i, p) in r.parts.iter().enumerate() {
            let e2d = e2d_p99(p);
            out.push_str(&format!(
                "{:<18} {:<18} {:>6} {:>9} {:>9} {:>9}  {:<30} {:>6} {:>8.2} {:>10}  {}\n",
                if i == 0 { r.strategy.as_str() } else { "" },
                p.work,
                p.sent,
                super::units::ms(p.latency.p50),
                super::units::ms(p.latency.p99),
                super::units::ms(p.latency.max),
                statuses(&p.answered),
                p.jobs_done,
                p.jobs_done_per_s,
                e2d,
                if i == 0 {
                    super::units::ms(r.health.p99)
                } else {
                    String::new()
                }
            ));
        }
    }
    out.push_str(LATENCY_NOTE);
    out.push('\n');
    out
}

/// The mix's table as HTML, for the report page.
pub fn html_table(m: &MixResults) -> String {
    let mut rows = String::new();
    for r in &m.runs {
        for (i, p) in r.parts.iter().enumerate() {
            let e2d = e2d_p99(p);
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>\n",
                if i == 0 { esc(&r.strategy) } else { String::new() },
                esc(&p.work),
                p.sent,
                super::units::ms(p.latency.p50),
                super::units::ms(p.latency.p99),
                esc(&statuses(&p.answered)),
                p.jobs_done,
                p.jobs_done_per_s,
                e2d,
                if i == 0 { super::units::ms(r.health.p99) } else { String::new() },
            ));
        }
    }
    let reading: String = m
        .reading
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    format!(
        "<h2>Mixed workload</h2>\n<p>{} (seed {}), open loop at {:.1} req/s = {:.0}% of its all-core limit of {:.1} req/s. Per kind of work: how it was answered, the answers' latency, and for jobs (202) when they were done.</p>\n<table class=\"mix\"><thead><tr><th>strategy</th><th>work</th><th>sent</th><th>p50</th><th>p99</th><th>answered</th><th>jobs done</th><th>jobs/s</th><th>enqueue-to-done p99</th><th>/health p99</th></tr></thead><tbody>\n{rows}</tbody></table>\n<p class=\"note\">{}</p>\n<ul>{reading}</ul>\n",
        esc(&m.spec),
        m.seed,
        m.rate,
        m.load_fraction * 100.0,
        m.limit_per_s,
        esc(LATENCY_NOTE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The light goal is read over every light request, so a strategy that leaves some
    /// unanswered (here auto: 5 of 65, still waiting after 900 ms) cannot meet it on the
    /// answers alone, and the table counts them.
    #[test]
    fn the_light_goal_counts_the_requests_left_unanswered() {
        use crate::bench::model::MixPart;
        use crate::bench::planted::{answers, open};
        use crate::load::Planted;
        use std::time::Duration;
        let light = MixPart {
            work: "count:2000000".into(),
            query: "work=count&n=2000000".into(),
            weight: 90,
            units: 1,
            sample: None,
        };
        let row = |strategy: RowId, p: &Planted| MixRun {
            strategy,
            rate: 7.0,
            parts: vec![PartRun::new(&light, &open(p), None, 10.0)],
            health: open(&Planted {
                answers: answers(200, 200, 1.0),
                ..Planted::default()
            })
            .latency_with_timeouts,
            drain_s: None,
            drained: true,
        };
        let auto = row(
            RowId::parse("auto").unwrap(),
            &Planted {
                answers: answers(60, 200, 10.0),
                unfinished: 5,
                cut_after: Duration::from_millis(900),
                ..Planted::default()
            },
        );
        let alone = row(
            RowId::LightAlone,
            &Planted {
                answers: answers(66, 200, 10.0),
                ..Planted::default()
            },
        );
        // On the answers alone auto is as fast as the light work alone.
        assert_eq!(auto.parts[0].latency.p99, alone.parts[0].latency.p99);
        let runs = vec![auto, alone];
        let said = reading(&runs, "count:2000000");
        assert_eq!(said.len(), 1, "{said:#?}");
        assert!(
            said[0].starts_with("light (count:2000000) p99: auto 90")
                && said[0].contains("OUTSIDE the 1.5x goal"),
            "{said:#?}"
        );
        assert!(
            said[0].ends_with("(auto 5 of 65, alone 0 of 66)"),
            "{said:#?}"
        );
        let m = MixResults {
            spec: "count:2000000=90".into(),
            seed: crate::bench::mix::MIX_SEED,
            rate: 7.0,
            limit_per_s: 14.0,
            load_fraction: 0.5,
            runs,
            reading: said,
        };
        let t = table(&m);
        assert!(t.contains("200 x60, unfinished x5"), "{t}");
        assert!(t.contains(LATENCY_NOTE), "{t}");
        assert!(html_table(&m).contains("unfinished x5"));
    }
}
