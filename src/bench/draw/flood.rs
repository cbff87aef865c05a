//! The flood's drawing: its table as text (the terminal and the report folder's README) and
//! as HTML, and what the columns mean. Reads only [`FloodResults`].

use super::units::{esc, ms};
use crate::bench::model::{FloodFailure, FloodResults, FloodRow};

/// `cell`, followed by the lowest and highest of the row's repeats of figure `name` (scaled
/// to the cell's unit) when it has more than one: `352.3 (340-361)`.
fn with_range(cell: String, r: &FloodRow, name: &str, scale: f64) -> String {
    match r.spread.get(name) {
        Some(s) if s.values.len() > 1 => {
            let (lo, hi) = (s.min * scale, s.max * scale);
            // Whole numbers from 10 up keep the column narrow; below, a decimal tells them apart.
            let digits = if hi.abs() >= 10.0 { 0 } else { 1 };
            format!("{cell} ({lo:.digits$}-{hi:.digits$})")
        }
        _ => cell,
    }
}

/// The cells of one row, shared by the text and HTML tables.
fn cells(r: &FloodRow) -> [String; 14] {
    let queued = r.jobs_finished.is_some();
    [
        r.strategy.to_string(),
        r.connections.to_string(),
        format!("{}{}", r.client(), if r.from_uniform { "*" } else { "" }),
        with_range(format!("{:.1}", r.goodput_per_s), r, "goodput_per_s", 1.0),
        with_range(
            super::limit::cell(r.limit_fraction, &r.limit_warnings),
            r,
            "limit_fraction",
            100.0,
        ),
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

/// The text table's least column widths: wider cells (a range beside goodput/s and %limit)
/// widen their column.
const WIDTHS: [usize; 14] = [9, 5, 12, 9, 7, 7, 7, 7, 6, 10, 11, 10, 17, 6];

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
pub const LEGEND: &str = "client: plain resends at once, as autocannon does; Retry-After waits as each refusal's Retry-After asks (offload load --honor-retry-after). goodput/s: work done per second in the load window (2xx for pool and remote; jobs finished in the window for queue, not its 202s; 200s plus jobs finished for auto), against the all-core limit calibrated around the strategy. 200/s, 202/s, 503/s: answers per second by status. gw CPU: the gateway process's CPU during the window as a share of the whole machine; CPU ms/503: that CPU over the refusals, an upper bound on what one refusal cost (for pool and auto it includes the work their own pool ran). /health p99: the light probe beside the flood. unfinished: requests still waiting for an answer when the window closed. waited: the share of the connections' time spent waiting as asked. With --repeat N, each row is measured N times in rounds (a row reused from the uniform scenario takes its N runs) and shows its repeat with the median goodput; the range in brackets beside goodput/s and %limit is the lowest and highest of its repeats, and results.json keeps each repeat's figures (rows[].repeats) and their spread (rows[].spread).";

/// The line under the table saying what the ranges are, when a row has more than one repeat.
fn range_note(f: &FloodResults) -> Option<String> {
    if !f.rows.iter().any(|r| r.runs > 1) {
        return None;
    }
    let fewer = f.rows.iter().any(|r| r.runs < f.repeat as usize);
    Some(format!(
        "(min-max) beside goodput/s and %limit: the lowest and highest of the row's {} repeats{}; the row shows its repeat with the median goodput",
        f.repeat,
        if fewer {
            " (fewer where a repeat failed)"
        } else {
            ""
        }
    ))
}

/// A failed repeat in words: `pool -c 1000, round 2 of 3 failed: ...`.
fn failure_line(f: &FloodResults, x: &FloodFailure) -> String {
    format!(
        "{} -c {}{}{} failed: {}",
        x.strategy,
        x.connections,
        honour_label(x.honor_retry_after),
        round_label(x.round, f.repeat),
        x.error
    )
}

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
    let cells: Vec<[String; 14]> = f.rows.iter().map(cells).collect();
    let mut widths = WIDTHS;
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
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
    for row in &cells {
        out.push_str(&line(row));
    }
    for x in &f.failures {
        out.push_str(&failure_line(f, x));
        out.push('\n');
    }
    if f.rows.iter().any(|r| r.from_uniform) {
        out.push_str(uniform_note(f));
        out.push('\n');
    }
    if let Some(note) = range_note(f) {
        out.push_str(&note);
        out.push('\n');
    }
    if f.rows.iter().any(|r| !r.limit_warnings.is_empty()) {
        out.push_str(super::limit::MARKER_NOTE);
        out.push('\n');
    }
    out
}

/// The flood's table as HTML, for the report page.
pub fn html_table(f: &FloodResults) -> String {
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
            "<tr><td>{}</td><td>{}</td><td colspan=\"12\">failed{}: {}</td></tr>\n",
            esc(&x.strategy),
            x.connections,
            round_label(x.round, f.repeat),
            esc(&x.error)
        ));
    }
    let mut notes = String::new();
    if f.rows.iter().any(|r| r.from_uniform) {
        notes.push_str(&format!(" {}.", esc(uniform_note(f))));
    }
    if let Some(note) = range_note(f) {
        notes.push_str(&format!(" {}.", esc(&note)));
    }
    let reading: String = f
        .reading
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    format!(
        "<h2>Flood</h2>\n<p>{}.{notes}</p>\n<table class=\"mix\"><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>\n<p>{}</p>\n<ul>{reading}</ul>\n",
        esc(&headline(f)),
        esc(LEGEND),
    )
}

/// The line under the table for the rows marked `*`.
fn uniform_note(f: &FloodResults) -> &'static str {
    if f.repeat > 1 {
        "* the uniform scenario's runs at the same -c, reused as the row's repeats"
    } else {
        "* the uniform scenario's run at the same -c, reused"
    }
}

pub fn round_label(round: u32, rounds: u32) -> String {
    if rounds > 1 {
        format!(", round {round} of {rounds}")
    } else {
        String::new()
    }
}

pub fn honour_label(honour: bool) -> &'static str {
    if honour {
        ", honouring Retry-After"
    } else {
        ""
    }
}

/// One row in a line, for the progress output.
pub fn brief(r: &FloodRow) -> String {
    format!(
        "goodput {:.1}/s ({:.0}% of the limit), 503 {:.0}/s, gateway CPU {}, /health p99 {}",
        r.goodput_per_s,
        r.limit_fraction * 100.0,
        r.refused_per_s,
        cpu_cell(r),
        ms(r.health_p99_ms)
    )
}

/// One flood row: the strategy's processes on a queue of their own (the embedded SQLite
/// queue: a file of its own, not drained, as only the window counts; a shared Redis or
/// Postgres queue is drained as usual, so nothing is left in it), the closed loop at `c`.
pub fn per_s(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The gateway's CPU share of the machine, or `-` when it could not be sampled.
/// A share of the machine as a whole percent, or `-` when it could not be sampled.
pub fn percent(fraction: Option<f64>) -> String {
    fraction.map_or("-".into(), |f| format!("{:.0}%", f * 100.0))
}

fn cpu_cell(r: &FloodRow) -> String {
    percent(r.gateway_cpu_fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::planted::{self, FloodPlant, Plant};

    /// pool at -c 100 and -c 1000 and -c 1000 honouring Retry-After, `repeats` rounds; at
    /// -c 1000 goodputs of 90, 110 and 100/s against a limit of 150/s.
    fn flood(repeats: usize) -> FloodResults {
        let row = |c: u32, honour: bool, goodputs: [f64; 3]| -> Vec<FloodRow> {
            goodputs[..repeats]
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
        };
        planted::flood(
            &[100, 1000],
            repeats as u32,
            vec![
                row(100, false, [50.0, 52.0, 48.0]),
                row(1000, false, [90.0, 110.0, 100.0]),
                row(1000, true, [120.0, 118.0, 121.0]),
            ],
        )
    }

    /// Where the column under `header` ends in the table's header line.
    fn column_end(table: &str, header: &str) -> usize {
        let head = table.lines().nth(1).unwrap();
        head.find(header).unwrap() + header.len()
    }

    #[test]
    fn the_table_shows_the_range_of_the_repeats_in_aligned_columns() {
        let f = flood(3);
        let text = table(&f);
        let row = text
            .lines()
            .find(|l| l.starts_with("pool") && l.contains(" 1000 plain "))
            .unwrap();
        // 100/150 = 67% of the limit, its repeats from 60% to 73%.
        for (cell, header) in [("100.0 (90-110)", "goodput/s"), ("67%  (60-73)", "%limit ")] {
            let at = row.find(cell).unwrap_or_else(|| panic!("{cell}: {text}"));
            assert_eq!(at + cell.len(), column_end(&text, header), "{text}");
        }
        // Every row's cells end where their headers do.
        for line in text.lines().skip(2).take(3) {
            assert_eq!(
                line.find(" 1.00ms").unwrap() + 7,
                column_end(&text, "/health p99"),
                "{text}"
            );
        }
        let note = "(min-max) beside goodput/s and %limit: the lowest and highest of the row's 3 repeats; the row shows its repeat with the median goodput";
        assert!(text.contains(note), "{text}");
        assert!(LEGEND.contains("With --repeat N"));

        let html = html_table(&f);
        assert!(html.contains("<td>100.0 (90-110)</td>"), "{html}");
        assert!(html.contains(&esc(note)), "{html}");

        let mut results = planted::results(vec![Plant::new("pool", 50.0, 1.0)]);
        results.flood = Some(f);
        let dir = tempfile::tempdir().unwrap();
        crate::bench::folder::write(dir.path(), &results).unwrap();
        let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
        assert!(readme.contains(row), "{readme}");
        assert!(readme.contains(note), "{readme}");
    }

    #[test]
    fn one_repeat_keeps_the_table_as_it_was() {
        let text = table(&flood(1));
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "strategy     -c client       goodput/s %limit    200/s   202/s   503/s gw CPU CPU ms/503 /health p99 unfinished err/timeout/other waited"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("pool       1000 plain             90.0    60%     90.0 ")),
            "{text}"
        );
        assert!(!text.contains("(min-max)"), "{text}");
    }

    #[test]
    fn a_few_refusals_a_second_are_not_read_as_none() {
        assert_eq!(per_s(0.0), "0");
        assert_eq!(per_s(0.3), "0.3");
        assert_eq!(per_s(9.94), "9.9");
        assert_eq!(per_s(30.4), "30");
    }
}
