//! The charts of the page, as inline SVG (no scripts, no network): throughput against the
//! limit, latency percentiles, the bystander's latency, per-second timelines and the queue's
//! backlog, with the pieces they share (axes, frames, legends, colours). [`super::html`] lays
//! them out.

use super::units::esc;
use std::fmt::Write as _;

use crate::bench::model::{Results, RowId, StrategyRun};
use crate::strategy::Name;

const COLOURS: [&str; 6] = [
    "#d62728", "#ff7f0e", "#9467bd", "#2ca02c", "#1f77b4", "#8c564b",
];
const W: f64 = 720.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

fn colour(r: &Results, strategy: RowId) -> String {
    let i = r
        .settings
        .strategies
        .iter()
        .position(|&s| s == strategy)
        .unwrap_or(0);
    nth_colour(i)
}

/// The palette's colours first; past them, hues a golden angle apart, so any number of
/// strategies gets colours that stay apart.
fn nth_colour(i: usize) -> String {
    COLOURS.get(i).map_or_else(
        || format!("hsl({:.0}, 65%, 42%)", (i as f64 * 137.508) % 360.0),
        |c| (*c).to_string(),
    )
}

/// A y axis: linear from 0, or log10 over the data's decades.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    /// Gridline step of a linear axis.
    step: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let vals: Vec<f64> = values
            .filter(|v| v.is_finite() && (!log || *v > 0.0))
            .collect();
        let max = vals
            .iter()
            .copied()
            .fold(0.0, f64::max)
            .max(if log { 1.0 } else { 1e-9 });
        if log {
            let min = vals.iter().copied().fold(f64::INFINITY, f64::min).min(max);
            let lo = 10f64.powf(min.max(1e-3).log10().floor());
            Axis {
                log,
                lo,
                hi: 10f64.powf(max.log10().ceil()).max(lo * 10.0),
                step: 0.0,
            }
        } else {
            // Four or five gridlines at a round step (1, 2 or 5 times a power of ten).
            let raw = max / 4.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| *s >= raw)
                .unwrap_or(10.0 * mag);
            Axis {
                log,
                lo: 0.0,
                hi: (max / step).ceil() * step,
                step,
            }
        }
    }
    fn y(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        TOP + (H - TOP - BOTTOM) * (1.0 - f.clamp(0.0, 1.0))
    }
    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let mut v = self.lo;
            while v <= self.hi * 1.0001 {
                t.push(v);
                v *= 10.0;
            }
            t
        } else {
            let n = (self.hi / self.step).round() as u32;
            (0..=n).map(|i| self.step * f64::from(i)).collect()
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}", v)
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn frame(out: &mut String, id: &str, title: &str, y_label: &str, axis: &Axis) {
    let _ = write!(
        out,
        r#"<figure><svg class="chart" id="{id}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{LEFT}" y="18" class="title">{t}</text>"#,
        t = esc(title)
    );
    for t in axis.ticks() {
        let y = axis.y(t);
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{v}</text>"#,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            v = fmt_num(t)
        );
    }
    let _ = write!(
        out,
        r#"<text transform="translate(14 {y}) rotate(-90)" class="tick" text-anchor="middle">{l}</text>"#,
        y = (TOP + H - BOTTOM) / 2.0,
        l = esc(y_label)
    );
}

fn legend(out: &mut String, r: &Results, names: &[RowId]) {
    let _ = write!(out, r#"<figcaption>"#);
    for &n in names {
        let _ = write!(
            out,
            r#"<span class="key" style="--c:{}">{}</span> "#,
            colour(r, n),
            esc(&n)
        );
    }
    let _ = write!(out, "</figcaption></figure>");
}

/// Bars of completed/s per strategy (queue: accepted/s beside it); over each bar, its own
/// limit (the mean of the all-core calibrations before and after it) as a dashed line.
pub(crate) fn throughput(out: &mut String, r: &Results) {
    let axis = Axis::new(
        r.runs
            .iter()
            .flat_map(|x| [x.measured.completed_per_s, x.limit.limit_per_s]),
        false,
    );
    frame(
        out,
        "chart-throughput",
        "Work completed per second, against the all-core limit around each strategy",
        "req/s",
        &axis,
    );
    let n = r.runs.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    for (i, run) in r.runs.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.2;
        let y = axis.y(run.measured.completed_per_s);
        let flagged = if run.limit_warnings.is_empty() {
            ""
        } else {
            " (not reliable)"
        };
        let _ = write!(
            out,
            r#"<rect class="mark" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{s}: {v:.0} req/s ({p:.0}% of {l:.0} req/s, the mean of {b:.0} before and {a:.0} after){flagged}</title></rect><text x="{tx:.1}" y="{ly}" class="tick" text-anchor="middle">{s}</text><text x="{tx:.1}" y="{vy:.1}" class="tick" text-anchor="middle">{cell}</text>"#,
            w = slot * 0.6,
            h = H - BOTTOM - y,
            c = colour(r, run.measured.strategy),
            s = esc(&run.measured.strategy),
            v = run.measured.completed_per_s,
            p = run.limit_fraction * 100.0,
            l = run.limit.limit_per_s,
            b = run.limit.before.limit_per_s,
            a = run.limit.after.limit_per_s,
            cell = esc(super::limit::cell(run.limit_fraction, &run.limit_warnings).trim_end()),
            tx = x + slot * 0.3,
            ly = H - BOTTOM + 16.0,
            vy = y.min(axis.y(run.limit.limit_per_s)) - 4.0
        );
        let limit_y = axis.y(run.limit.limit_per_s);
        let _ = write!(
            out,
            r#"<line x1="{x1:.1}" x2="{x2:.1}" y1="{limit_y:.1}" y2="{limit_y:.1}" class="limit"><title>{s}: all-core limit {l:.0} req/s</title></line>"#,
            x1 = x - slot * 0.1,
            x2 = x + slot * 0.7,
            s = esc(&run.measured.strategy),
            l = run.limit.limit_per_s,
        );
    }
    let c = &r.calibration;
    let _ = write!(
        out,
        r#"<text x="{x2}" y="{y}" class="tick" text-anchor="end">dashed: all-core limit, {lo:.0}-{hi:.0}/s over the run</text></svg>"#,
        x2 = W - RIGHT,
        y = TOP - 3.0,
        lo = c.min_reading_per_s,
        hi = c.max_reading_per_s,
    );
    let names: Vec<RowId> = r.runs.iter().map(|x| x.measured.strategy).collect();
    legend(out, r, &names);
}

/// Lines through the latency percentiles of each strategy, log scale.
pub(crate) fn percentiles(
    out: &mut String,
    r: &Results,
    id: &str,
    title: &str,
    pick: fn(&StrategyRun) -> [f64; 6],
) {
    let labels = ["p2.5", "p50", "p97.5", "p99", "p99.9", "max"];
    let axis = Axis::new(r.runs.iter().flat_map(|x| pick(x).into_iter()), true);
    frame(out, id, title, "ms (log)", &axis);
    let step = (W - LEFT - RIGHT) / (labels.len() - 1) as f64;
    for (i, l) in labels.iter().enumerate() {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{l}</text>"#,
            x = LEFT + step * i as f64,
            y = H - BOTTOM + 16.0
        );
    }
    let series: Vec<(&StrategyRun, Vec<Option<f64>>)> = r
        .runs
        .iter()
        .map(|x| (x, pick(x).map(Some).to_vec()))
        .collect();
    lines_and_legend(out, r, &axis, step, &series);
}

/// One polyline per strategy (points at x = LEFT + step * index; gaps skipped), closes the
/// chart and adds its legend.
fn lines_and_legend(
    out: &mut String,
    r: &Results,
    axis: &Axis,
    step: f64,
    series: &[(&StrategyRun, Vec<Option<f64>>)],
) {
    for (run, vals) in series {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.map(|v| format!("{:.1},{:.1}", LEFT + step * i as f64, axis.y(v)))
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="mark" fill="none" stroke="{c}" stroke-width="2" points="{p}"><title>{s}</title></polyline>"#,
            c = colour(r, run.measured.strategy),
            p = pts.join(" "),
            s = esc(&run.measured.strategy)
        );
    }
    let _ = write!(out, "</svg>");
    let names: Vec<RowId> = r.runs.iter().map(|x| x.measured.strategy).collect();
    legend(out, r, &names);
}

/// One line per strategy over the seconds of the measured phase.
pub(crate) fn timeline(
    out: &mut String,
    r: &Results,
    id: &str,
    title: &str,
    y_label: &str,
    log: bool,
    pick: fn(&StrategyRun) -> Vec<Option<f64>>,
) {
    let series: Vec<(&StrategyRun, Vec<Option<f64>>)> =
        r.runs.iter().map(|x| (x, pick(x))).collect();
    let axis = Axis::new(
        series.iter().flat_map(|(_, v)| v.iter().flatten().copied()),
        log,
    );
    frame(out, id, title, y_label, &axis);
    let secs = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let step = (W - LEFT - RIGHT) / (secs - 1) as f64;
    for s in 0..secs {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{s}</text>"#,
            x = LEFT + step * s as f64,
            y = H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" class="tick" text-anchor="middle">second of the measured run</text>"#,
        x = (LEFT + W - RIGHT) / 2.0,
        y = H - 6.0
    );
    lines_and_legend(out, r, &axis, step, &series);
}

/// A queue's story over time: jobs accepted against jobs finished (the gap is the backlog),
/// from the accept phase through the load to the end of the drain, on a time axis in seconds.
/// One chart per queue row (offload's `queue`, and `node:bullmq` with `--node`).
pub(crate) fn backlog(out: &mut String, run: &StrategyRun) {
    let Some(q) = &run.measured.queue else { return };
    let pts = &q.backlog;
    let axis = Axis::new(pts.iter().map(|p| p.accepted as f64), false);
    let id = if run.measured.strategy.is(Name::Queue) {
        "chart-queue-backlog".to_owned()
    } else {
        format!(
            "chart-queue-backlog-{}",
            run.measured.strategy.as_str().replace(':', "-")
        )
    };
    frame(
        out,
        &id,
        &format!(
            "{}: jobs accepted and jobs finished, cumulative (the gap is the backlog)",
            run.measured.strategy
        ),
        "jobs",
        &axis,
    );
    let t_max = pts.last().map_or(1.0, |p| p.t).max(q.load_end_s).max(1e-3);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * (t / t_max);
    let axis_step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|s| t_max / s <= 10.0)
        .unwrap_or(300.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{t:.0}</text>"#,
            x = x(t),
            y = H - BOTTOM + 16.0
        );
        t += axis_step;
    }
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y}" class="tick" text-anchor="middle">seconds since the accept phase began</text>"#,
        x = (LEFT + W - RIGHT) / 2.0,
        y = H - 6.0
    );
    let line = |pick: fn(&crate::bench::model::BacklogPoint) -> u64| -> String {
        pts.iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t), axis.y(pick(p) as f64)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let end = x(q.load_end_s);
    let _ = write!(
        out,
        r##"<line x1="{end:.1}" x2="{end:.1}" y1="{top}" y2="{bottom}" class="limit"><title>the load stopped; the drain follows</title></line><text x="{tx:.1}" y="{ty}" class="tick">load stops, drain</text><polyline class="mark" fill="none" stroke="#1f77b4" stroke-width="2" points="{a}"><title>accepted (202)</title></polyline><polyline class="mark" fill="none" stroke="#2ca02c" stroke-width="2" points="{f}"><title>finished (done or failed)</title></polyline></svg>"##,
        top = TOP,
        bottom = H - BOTTOM,
        tx = end + 4.0,
        ty = TOP + 12.0,
        a = line(|p| p.accepted),
        f = line(|p| p.finished),
    );
    let _ = write!(
        out,
        r##"<figcaption><span style="color:#1f77b4">&#9632;</span> accepted (202) &nbsp; <span style="color:#2ca02c">&#9632;</span> finished &nbsp; {:.0} jobs/s finished while jobs waited; accepted {:.0}/s while the backlog had room</figcaption></figure>"##,
        run.measured.completed_per_s, q.accept_phase.accepted_per_s
    );
}

pub(crate) fn lat(l: &crate::load::LatencyStats) -> [f64; 6] {
    [l.p2_5, l.p50, l.p97_5, l.p99, l.p99_9, l.max]
}

#[cfg(test)]
mod tests {
    use super::nth_colour;

    #[test]
    fn colours_do_not_run_out() {
        let all: Vec<String> = (0..12).map(nth_colour).collect();
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), 12, "{all:?}");
        assert_eq!(all[0], "#d62728");
        assert!(all[7].starts_with("hsl("));
    }
}
