//! The comparison section of `offload bench --node`: each seed strategy's Node row beside
//! its offload counterpart, as figures of the same run and their ratio (offload / Node), for
//! the terminal, README.md and the HTML page. %limit is each side's against its own
//! language's loop, so that ratio shows the architecture and not the loop's speed.

use super::units::esc;
use std::fmt::Write as _;

use crate::bench::model::{
    Figure, LOW_PRIORITY_NICE, NodeReport, NodeServer, Results, RowId, Serving,
};

/// A figure's value as the table shows it; `flagged`: that side's %limit is not reliable.
fn value(f: &Figure, v: f64, flagged: bool) -> String {
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mark = if flagged { "!" } else { "" };
    match f.figure.as_str() {
        "%limit" => format!("{v:.0}%{mark}"),
        "threads" => format!("{v:.0}"),
        _ => format!("{v:.digits$}"),
    }
}

fn ratio(f: &Figure) -> String {
    // Two decimals, or three below 0.1 (a p99 of 0.77 ms against 224 ms is 0.003x, not 0).
    f.ratio.map_or("-".to_owned(), |r| {
        if r < 0.1 {
            format!("{r:.3}x")
        } else {
            format!("{r:.2}x")
        }
    })
}

/// The sentences above the pairs: what ran, Node's own limit against offload's, the checks.
fn preamble(r: &Results, n: &NodeReport) -> Vec<String> {
    let packages: Vec<String> = n.packages.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut out = vec![format!(
        "Node {} ({}), from {}; node:bullmq's Redis: {}.",
        n.node_version,
        packages.join(", "),
        n.folder,
        n.redis.as_deref().unwrap_or("not used")
    )];
    let limits: Vec<f64> = n
        .calibrations
        .iter()
        .flat_map(|c| [c.before.limit_per_s, c.after.limit_per_s])
        .collect();
    let readings = n.calibrations.iter().flat_map(|c| {
        c.before
            .readings_per_s
            .iter()
            .chain(&c.after.readings_per_s)
    });
    let (lo, hi) = readings.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    });
    if !limits.is_empty() {
        let node_limit = crate::bench::model::median(&limits);
        out.push(format!(
            "The loop alone on all {} cores (no server): Node's {:.0} req/s (median of {} calibrations, readings {:.0}-{:.0}), offload's {:.0} req/s: offload's loop runs {:.2}x Node's. Node rows' limit and %limit are against Node's own loop, calibrated right before and after each, except node:remote's: its work runs in offload compute, so its limit is offload's, as remote's is.",
            r.calibration.cores,
            node_limit,
            limits.len(),
            lo,
            hi,
            r.calibration.limit_per_s,
            r.calibration.limit_per_s / node_limit.max(1e-9)
        ));
    }
    if n.pairs.iter().any(|p| p.node.nice().is_some()) {
        out.push(format!(
            "Priority: both sides of each pair run their work threads at the same niceness. offload's pool and piscina both default to nice 0; the priority of the work is a choice, so pool and piscina are paired twice: at nice 0, and with both at nice {LOW_PRIORITY_NICE} (pool --nice {LOW_PRIORITY_NICE}, piscina's niceIncrement {LOW_PRIORITY_NICE}, checked on its threads)."
        ));
    }
    let serving: Vec<String> = r
        .runs
        .iter()
        .filter(|run| run.measured.strategy.node().is_some())
        .filter_map(|run| {
            let s = run.measured.serving?;
            Some(format!("{} {s}", run.measured.strategy.as_str()))
        })
        .collect();
    if !serving.is_empty() {
        out.push(format!(
            "Serving threads (--serving {}): each Node server's event loop was given the scheduling of its counterpart's runtime threads and checked from the kernel, so both sides of a pair answer requests at one priority: {}.",
            match r.settings.serving {
                Serving::Raised => "raised: offload serve's defaults, a 0.1 ms slice and nice -10 where allowed, except for inline, whose runtime threads run the work",
                Serving::Plain => "plain: nice 0 and the kernel's slice",
            },
            serving.join("; ")
        ));
    }
    if !n.checks.is_empty() {
        let names: Vec<&str> = n.checks.iter().map(|c| c.strategy.as_str()).collect();
        out.push(format!(
            "Checked before each load: {} answered {} for {} (for node:bullmq, its job's stored result), offload's exact result.",
            names.join(", "),
            n.checks[0].expected,
            r.settings.work
        ));
    }
    out
}

/// The section for the terminal and README.md; None without `--node`.
pub fn text(r: &Results) -> Option<String> {
    let n = r.node.as_ref()?;
    let mut t = String::from(
        "offload beside the seed's Node servers, measured in this run (ratio: offload / Node):\n",
    );
    for line in preamble(r, n) {
        let _ = writeln!(t, "- {line}");
    }
    // Wide enough for the longest pair (`pool, nice 10 / node:piscina, nice 10`).
    let w = n
        .pairs
        .iter()
        .map(|p| p.offload.as_str().len() + 3 + p.node.as_str().len())
        .fold(24, usize::max);
    let _ = writeln!(
        t,
        "{:<w$} {:<15} {:>10} {:>10} {:>8}",
        "pair", "figure", "offload", "Node", "ratio"
    );
    for p in &n.pairs {
        for (i, f) in p.figures.iter().enumerate() {
            let label = if i == 0 {
                format!("{} / {}", p.offload, p.node)
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "{label:<w$} {:<15} {:>10} {:>10} {:>8}",
                f.figure,
                value(f, f.offload, f.offload_unreliable),
                value(f, f.node, f.node_unreliable),
                ratio(f)
            );
        }
    }
    let missing: Vec<String> = NodeServer::ALL
        .into_iter()
        .filter(|&nn| {
            r.settings.strategies.contains(&RowId::Node(nn))
                && !n.pairs.iter().any(|p| p.node == RowId::Node(nn))
        })
        .map(|nn| format!("{} / {nn}", nn.paired()))
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            t,
            "Not compared (a row of the pair failed, see the table): {}.",
            missing.join(", ")
        );
    }
    if n.pairs
        .iter()
        .any(|p| p.figures.iter().any(|f| f.unreliable))
    {
        let _ = writeln!(
            t,
            "! a %limit of the pair is not reliable (see the table's marks): compare its ratio with care."
        );
    }
    let _ = writeln!(
        t,
        "Below 1x, offload's figure is the lower: better for /health p99, RSS, threads and drain; worse for the rates."
    );
    Some(t)
}

/// The section for the HTML page; empty without `--node`.
pub fn html(r: &Results) -> String {
    let Some(n) = r.node.as_ref() else {
        return String::new();
    };
    let mut h = String::from(r#"<h2 id="node">offload beside the seed's Node servers</h2><ul>"#);
    for line in preamble(r, n) {
        let _ = write!(h, "<li>{}</li>", esc(&line));
    }
    h.push_str(r#"</ul><table class="runs node-pairs"><thead><tr><th>pair</th><th>figure</th><th>offload</th><th>Node</th><th>offload / Node</th></tr></thead><tbody>"#);
    for p in &n.pairs {
        for (i, f) in p.figures.iter().enumerate() {
            let label = if i == 0 {
                esc(&format!("{} / {}", p.offload, p.node))
            } else {
                String::new()
            };
            let _ = write!(
                h,
                "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.figure),
                esc(&value(f, f.offload, f.offload_unreliable)),
                esc(&value(f, f.node, f.node_unreliable)),
                esc(&ratio(f))
            );
        }
    }
    h.push_str("</tbody></table><p>Ratios are offload's figure over Node's, from the same run and load. Below 1x, offload's figure is the lower: better for /health p99, RSS, threads and drain; worse for the rates. A ! marks a %limit that is not reliable.</p>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::planted::Plant;

    #[test]
    fn only_the_side_whose_limit_is_not_reliable_is_marked() {
        // Against a limit of 150 req/s that held: 100 req/s is 67%; 200 req/s beats the
        // limit (over 105% of it) and is flagged.
        let offload = Plant::new("pool", 100.0, 1.0).run();
        let node = Plant::new("node:piscina", 200.0, 1.0).run();
        assert!(offload.limit_warnings.is_empty() && !node.limit_warnings.is_empty());
        let f = crate::bench::model::figures(&offload, &node);
        let limit = f
            .iter()
            .find(|f| f.figure == "%limit")
            .expect("a %limit figure");
        assert!(limit.unreliable && limit.node_unreliable && !limit.offload_unreliable);
        assert_eq!(value(limit, limit.offload, limit.offload_unreliable), "67%");
        assert_eq!(value(limit, limit.node, limit.node_unreliable), "133%!");
    }
}
