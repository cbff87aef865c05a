//! The flood's drawing: its table as text (the terminal and the report folder's README) and
//! as HTML, and what the columns mean. Reads only [`FloodResults`].

use super::{FloodResults, FloodRow, cpu_cell, honour_label};
use crate::bench::units::ms;

/// The cells of one row, shared by the text and HTML tables.
fn cells(r: &FloodRow) -> [String; 14] {
    let queued = r.jobs_finished.is_some();
    [
        r.strategy.clone(),
        r.connections.to_string(),
        format!("{}{}", r.client(), if r.from_uniform { "*" } else { "" }),
        format!("{:.1}", r.goodput_per_s),
        crate::bench::limit::cell(r.limit_fraction, &r.limit_flags),
        format!("{:.1}", r.ok_per_s),
        if queued {
            format!("{:.0}", r.accepted_per_s)
        } else {
            "-".into()
        },
        format!("{:.0}", r.refused_per_s),
        cpu_cell(r),
        r.gateway_cpu_s_per_refusal
            .map_or("-".into(), |c| format!("{:.3}", c * 1000.0)),
        ms(r.health_p99_ms),
        r.unfinished.to_string(),
        format!("{}/{}/{}", r.errors, r.timeouts, r.other_answers),
        if r.honor_retry_after {
            format!("{:.0}%", r.retry_after.waited_fraction * 100.0)
        } else {
            "-".into()
        },
    ]
}

const HEADERS: [&str; 14] = [
    "strategy",
    "-c",
    "client",
    "goodput/s",
    "%limit ",
    "200/s",
    "202/s",
    "503/s",
    "gw CPU",
    "CPU ms/503",
    "/health p99",
    "unfinished",
    "err/timeout/other",
    "waited",
];

/// What the flood's columns mean, under its table in the report folder's README and page.
pub const LEGEND: &str = "client: plain resends at once, as autocannon does; Retry-After waits as each refusal's Retry-After asks (offload load --honor-retry-after). goodput/s: work done per second in the load window (2xx for pool and remote; jobs finished in the window for queue, not its 202s; 200s plus jobs finished for auto), against the all-core limit calibrated around the strategy. 200/s, 202/s, 503/s: answers per second by status. gw CPU: the gateway process's CPU during the window as a share of the whole machine; CPU ms/503: that CPU over the refusals, an upper bound on what one refusal cost (for pool and auto it includes the work their own pool ran). /health p99: the light probe beside the flood. unfinished: requests still waiting for an answer when the window closed. waited: the share of the connections' time spent waiting as asked.";

/// The first line of the flood's table and section.
fn headline(f: &FloodResults) -> String {
    format!(
        "flood: closed loop at -c {} on each strategy, and at -c {} with a client that honours Retry-After; goodput is work done per second in the window (queue: jobs finished in it, not 202s; auto: 200s plus jobs finished); gw CPU is the gateway process's share of all {} cores",
        f.connections
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        f.honour_connections,
        f.cores
    )
}

/// The flood's table, as printed and in the README of the report folder.
pub fn table(f: &FloodResults) -> String {
    let widths = [9, 5, 12, 9, 7, 7, 7, 7, 6, 10, 11, 10, 17, 6];
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 || i == 2 {
                s.push_str(&format!("{c:<w$} "));
            } else {
                s.push_str(&format!("{c:>w$} "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = headline(f) + "\n";
    out.push_str(&line(&HEADERS.map(String::from)));
    for r in &f.rows {
        out.push_str(&line(&cells(r)));
    }
    for x in &f.failures {
        out.push_str(&format!(
            "{} -c {}{} failed: {}\n",
            x.strategy,
            x.connections,
            honour_label(x.honor_retry_after),
            x.error
        ));
    }
    if f.rows.iter().any(|r| r.from_uniform) {
        out.push_str("* the uniform scenario's run at the same -c, reused\n");
    }
    if f.rows.iter().any(|r| !r.limit_flags.is_empty()) {
        out.push_str(crate::bench::limit::MARKER_NOTE);
        out.push('\n');
    }
    out
}

/// The flood's table as HTML, for the report page.
pub fn html_table(f: &FloodResults) -> String {
    let esc = crate::bench::units::esc;
    let head: String = HEADERS
        .iter()
        .map(|h| format!("<th>{}</th>", esc(h.trim())))
        .collect();
    let mut rows = String::new();
    for r in &f.rows {
        let tds: String = cells(r)
            .iter()
            .map(|c| format!("<td>{}</td>", esc(c)))
            .collect();
        rows.push_str(&format!("<tr>{tds}</tr>\n"));
    }
    for x in &f.failures {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td colspan=\"12\">failed: {}</td></tr>\n",
            esc(&x.strategy),
            x.connections,
            esc(&x.error)
        ));
    }
    let reading: String = f
        .reading
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    format!(
        "<h2>Flood</h2>\n<p>{}.{}</p>\n<table class=\"mix\"><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>\n<p>{}</p>\n<ul>{reading}</ul>\n",
        esc(&headline(f)),
        if f.rows.iter().any(|r| r.from_uniform) {
            " * the uniform scenario's run at the same -c, reused."
        } else {
            ""
        },
        esc(LEGEND),
    )
}
