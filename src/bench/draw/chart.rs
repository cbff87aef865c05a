//! The charts of the page, as inline SVG (no scripts, no network): throughput against the
//! limit, latency percentiles, the bystander's latency, per-second timelines and the queue's
//! backlog, with the pieces they share (headings, axes, legends, colours). [`super::html`] lays
//! them out.
//!
//! Text is placed by a conservative measure of its width ([`super::style`]): a heading too long
//! for the chart wraps, axis labels thin out or turn upright, so nothing is clipped or overlaps
//! (the page's script checks it in a browser). Each row has one colour in every chart, keyed by
//! its name, and the strategy the verdict recommends is drawn heavier.

use super::style::{ACCEPTED, colour, dashes, width, wrap};
use super::units::esc;
use std::fmt::Write as _;

use crate::bench::model::{Results, RowId, StrategyRun};
use crate::strategy::Name;

const W: f64 = 720.0;
/// The plot's height, between the heading and the labels under it.
const PLOT: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
/// Under the plot: a row of tick labels and an axis label.
const BOTTOM: f64 = 40.0;
/// The heading's margin at either side.
const MARGIN: f64 = 10.0;
/// Font sizes, in px, as the page's stylesheet sets them (`.title`, `.tick`).
const TITLE_PX: f64 = 14.0;
const TICK_PX: f64 = 11.0;
/// Space kept between tick labels along an axis, in px.
const LABEL_GAP: f64 = 8.0;

/// A y axis: linear from 0, or log10 over the data's decades, drawn from `top` down.
struct Axis {
    log: bool,
    /// Where the plot begins, under the chart's heading ([`frame`] sets it).
    top: f64,
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
        let max = vals.iter().copied().fold(0.0, f64::max);
        // Nothing above zero (no samples): an axis to 1, not five gridlines all reading 0.
        let max = if log || max <= 0.0 { max.max(1.0) } else { max };
        if log {
            let min = vals.iter().copied().fold(f64::INFINITY, f64::min).min(max);
            let lo = 10f64.powf(min.max(1e-3).log10().floor());
            Axis {
                log,
                top: 0.0,
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
                top: 0.0,
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
        self.top + PLOT * (1.0 - f.clamp(0.0, 1.0))
    }
    /// The plot's lower edge.
    fn bottom(&self) -> f64 {
        self.top + PLOT
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

/// Opens a chart: its heading (the title, wrapped to the width, and a note under it in small
/// type), which sets where the plot begins, its y axis, and the room under it (`below`).
fn frame(
    out: &mut String,
    id: &str,
    title: &str,
    note: Option<&str>,
    y_label: &str,
    axis: &mut Axis,
    below: f64,
) {
    let fits = |px: f64, bold: bool| {
        let per_char = width("m", px, bold);
        ((W - 2.0 * MARGIN) / per_char).floor() as usize
    };
    let title_lines = wrap(title, fits(TITLE_PX, true));
    let note_lines = note.map_or(Vec::new(), |n| wrap(n, fits(TICK_PX, false)));
    let mut y = 4.0;
    let mut heading = String::new();
    for l in &title_lines {
        y += TITLE_PX * 1.3;
        let _ = write!(
            heading,
            r#"<text x="{MARGIN}" y="{y:.1}" class="title">{}</text>"#,
            esc(l)
        );
    }
    for l in &note_lines {
        y += TICK_PX * 1.35;
        let _ = write!(
            heading,
            r#"<text x="{MARGIN}" y="{y:.1}" class="tick">{}</text>"#,
            esc(l)
        );
    }
    // Room for a bar's label over the top gridline.
    axis.top = y + 2.0 * TICK_PX;
    let h = axis.bottom() + below;
    let _ = write!(
        out,
        r#"<figure><svg class="chart" id="{id}" viewBox="0 0 {W} {h:.0}" width="{W}" height="{h:.0}" role="img" aria-label="{t}">{heading}"#,
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
        r#"<text transform="translate(14 {y:.1}) rotate(-90)" class="tick" text-anchor="middle">{l}</text>"#,
        y = axis.top + PLOT / 2.0,
        l = esc(y_label)
    );
}

/// Labels along the x axis, under the plot, at `xs`: every one where they fit side by side,
/// else every second, third... one, so that none covers the next.
fn x_labels(out: &mut String, axis: &Axis, xs: &[(f64, String)]) {
    let step = match xs {
        [(a, _), (b, _), ..] => (b - a).abs(),
        _ => W,
    };
    let widest = xs
        .iter()
        .map(|(_, l)| width(l, TICK_PX, false))
        .fold(0.0, f64::max);
    let every = ((widest + LABEL_GAP) / step.max(1e-9)).ceil().max(1.0) as usize;
    for (x, l) in xs.iter().step_by(every) {
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" class="tick" text-anchor="middle">{l}</text>"#,
            y = axis.bottom() + 20.0,
            l = esc(l)
        );
    }
}

/// The axis label under the x labels.
fn x_title(out: &mut String, axis: &Axis, text: &str) {
    let _ = write!(
        out,
        r#"<text x="{x}" y="{y:.1}" class="tick" text-anchor="middle">{t}</text>"#,
        x = (LEFT + W - RIGHT) / 2.0,
        y = axis.bottom() + BOTTOM - 6.0,
        t = esc(text)
    );
}

/// The chart's key, one entry per row in its colour; the recommended row in bold, said so.
fn legend(out: &mut String, rows: &[RowId], recommended: Option<RowId>) {
    let _ = write!(out, r#"<figcaption>"#);
    for &n in rows {
        if Some(n) == recommended {
            let _ = write!(
                out,
                r#"<span class="key" style="--c:{}"><b>{}</b> (recommended)</span> "#,
                colour(n),
                esc(&n)
            );
        } else {
            let _ = write!(
                out,
                r#"<span class="key" style="--c:{}">{}</span> "#,
                colour(n),
                esc(&n)
            );
        }
    }
    let _ = write!(out, "</figcaption></figure>");
}

/// Bars of completed/s per strategy (queue: accepted/s beside it); over each bar, its own
/// limit (the mean of the all-core calibrations before and after it) as a dashed line. The
/// names stand upright under the bars when they do not fit side by side.
pub(crate) fn throughput(out: &mut String, r: &Results) {
    let recommended = super::verdict::choice(r);
    let mut axis = Axis::new(
        r.runs
            .iter()
            .flat_map(|x| [x.measured.completed_per_s, x.limit.limit_per_s]),
        false,
    );
    let n = r.runs.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    let name_width = |run: &StrategyRun| {
        let row = run.measured.strategy;
        width(row.as_str(), TICK_PX, Some(row) == recommended)
    };
    let widest = r.runs.iter().map(name_width).fold(0.0, f64::max);
    let upright = widest + LABEL_GAP > slot;
    let below = if upright { widest + 16.0 } else { BOTTOM };
    let (lo, hi) = super::limit::calibration_range(&r.calibration);
    frame(
        out,
        "chart-throughput",
        "Work completed per second, against the all-core limit around each strategy",
        Some(&format!(
            "Dashed: a strategy's limit, the mean of the all-core calibrations before and after it (calibrations {lo:.0}-{hi:.0} req/s over the run)."
        )),
        "req/s",
        &mut axis,
        below,
    );
    for (i, run) in r.runs.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.2;
        let y = axis.y(run.measured.completed_per_s);
        let row = run.measured.strategy;
        let flagged = if run.limit_warnings.is_empty() {
            ""
        } else {
            " (not comparable)"
        };
        let (outline, weight) = if Some(row) == recommended {
            (
                r##" stroke="#000" stroke-width="2""##,
                r#" font-weight="700""#,
            )
        } else {
            ("", "")
        };
        let cx = x + slot * 0.3;
        let name = if upright {
            format!(
                r#"<text transform="translate({tx:.1} {ty:.1}) rotate(-90)" class="tick" text-anchor="end" dominant-baseline="middle"{weight}>{s}</text>"#,
                tx = cx,
                ty = axis.bottom() + 8.0,
                s = esc(&row)
            )
        } else {
            format!(
                r#"<text x="{cx:.1}" y="{ty:.1}" class="tick" text-anchor="middle"{weight}>{s}</text>"#,
                ty = axis.bottom() + 20.0,
                s = esc(&row)
            )
        };
        let _ = write!(
            out,
            r#"<rect class="mark" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"{outline}><title>{s}: {v:.0} req/s ({p:.0}% of {l:.0} req/s, the mean of {b:.0} before and {a:.0} after){flagged}</title></rect>{name}<text x="{cx:.1}" y="{vy:.1}" class="tick" text-anchor="middle">{cell}</text>"#,
            w = slot * 0.6,
            h = axis.bottom() - y,
            c = colour(row),
            s = esc(&row),
            v = run.measured.completed_per_s,
            p = run.limit_fraction * 100.0,
            l = run.limit.limit_per_s,
            b = run.limit.before.limit_per_s,
            a = run.limit.after.limit_per_s,
            cell = esc(super::limit::cell(run.limit_fraction, &run.limit_warnings).trim_end()),
            vy = y.min(axis.y(run.limit.limit_per_s)) - 4.0
        );
        let limit_y = axis.y(run.limit.limit_per_s);
        let _ = write!(
            out,
            r#"<line x1="{x1:.1}" x2="{x2:.1}" y1="{limit_y:.1}" y2="{limit_y:.1}" class="limit"><title>{s}: all-core limit {l:.0} req/s</title></line>"#,
            x1 = x - slot * 0.1,
            x2 = x + slot * 0.7,
            s = esc(&row),
            l = run.limit.limit_per_s,
        );
    }
    let _ = write!(out, "</svg>");
    let names: Vec<RowId> = r.runs.iter().map(|x| x.measured.strategy).collect();
    legend(out, &names, recommended);
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
    let mut axis = Axis::new(r.runs.iter().flat_map(|x| pick(x).into_iter()), true);
    frame(out, id, title, None, "ms (log)", &mut axis, BOTTOM);
    let step = (W - LEFT - RIGHT) / (labels.len() - 1) as f64;
    let xs: Vec<(f64, String)> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (LEFT + step * i as f64, (*l).to_owned()))
        .collect();
    x_labels(out, &axis, &xs);
    let series: Vec<(&StrategyRun, Vec<Option<f64>>)> = r
        .runs
        .iter()
        .map(|x| (x, pick(x).map(Some).to_vec()))
        .collect();
    lines_and_legend(out, r, &axis, step, &series);
}

/// One polyline per strategy (points at x = LEFT + step * index; gaps skipped), the
/// recommended one heavier and over the rest; closes the chart and adds its legend.
fn lines_and_legend(
    out: &mut String,
    r: &Results,
    axis: &Axis,
    step: f64,
    series: &[(&StrategyRun, Vec<Option<f64>>)],
) {
    let recommended = super::verdict::choice(r);
    let (chosen, others): (Vec<_>, Vec<_>) = series
        .iter()
        .partition(|(run, _)| Some(run.measured.strategy) == recommended);
    for (run, vals) in others.into_iter().chain(chosen) {
        let row = run.measured.strategy;
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                v.map(|v| format!("{:.1},{:.1}", LEFT + step * i as f64, axis.y(v)))
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="mark" fill="none" stroke="{c}" stroke-width="{w}"{d} points="{p}"><title>{s}</title></polyline>"#,
            c = colour(row),
            w = if Some(row) == recommended { 4 } else { 2 },
            d = dashes(row),
            p = pts.join(" "),
            s = esc(&row)
        );
    }
    let _ = write!(out, "</svg>");
    let names: Vec<RowId> = r.runs.iter().map(|x| x.measured.strategy).collect();
    legend(out, &names, recommended);
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
    let mut axis = Axis::new(
        series.iter().flat_map(|(_, v)| v.iter().flatten().copied()),
        log,
    );
    frame(out, id, title, None, y_label, &mut axis, BOTTOM);
    let secs = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let step = (W - LEFT - RIGHT) / (secs - 1) as f64;
    let xs: Vec<(f64, String)> = (0..secs)
        .map(|s| (LEFT + step * s as f64, s.to_string()))
        .collect();
    x_labels(out, &axis, &xs);
    x_title(out, &axis, "second of the measured run");
    lines_and_legend(out, r, &axis, step, &series);
}

/// A queue's story over time: jobs accepted against jobs finished (the gap is the backlog),
/// from the accept phase through the load to the end of the drain, on a time axis in seconds.
/// One chart per queue row (offload's `queue` and `auto`, and `node:bullmq` with `--node`):
/// accepted in grey, finished in the row's colour.
pub(crate) fn backlog(out: &mut String, run: &StrategyRun) {
    let Some(q) = &run.measured.queue else { return };
    let row = run.measured.strategy;
    let pts = &q.backlog;
    let mut axis = Axis::new(pts.iter().map(|p| p.accepted as f64), false);
    // The plain id is `queue`'s, the strategy that stores every request's work.
    let id = if row.offload().is_some_and(Name::always_stores) {
        "chart-queue-backlog".to_owned()
    } else {
        format!(
            "chart-queue-backlog-{}",
            row.as_str().replace([':', ',', ' '], "-")
        )
    };
    frame(
        out,
        &id,
        &format!("{row}: jobs accepted and jobs finished, cumulative (the gap is the backlog)"),
        None,
        "jobs",
        &mut axis,
        BOTTOM,
    );
    let t_max = pts.last().map_or(1.0, |p| p.t).max(q.load_end_s).max(1e-3);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * (t / t_max);
    let axis_step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|s| t_max / s <= 10.0)
        .unwrap_or(300.0);
    let mut xs = Vec::new();
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        xs.push((x(t), format!("{t:.0}")));
        t += axis_step;
    }
    x_labels(out, &axis, &xs);
    x_title(out, &axis, "seconds since the accept phase began");
    let line = |pick: fn(&crate::bench::model::BacklogPoint) -> u64| -> String {
        pts.iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t), axis.y(pick(p) as f64)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let end = x(q.load_end_s);
    // The marker's label right of its line, or left of it where the drain is short.
    let said = "load stops, drain";
    let (tx, anchor) = if end + 4.0 + width(said, TICK_PX, false) <= W - RIGHT {
        (end + 4.0, "start")
    } else {
        (end - 4.0, "end")
    };
    let _ = write!(
        out,
        r##"<line x1="{end:.1}" x2="{end:.1}" y1="{top:.1}" y2="{bottom:.1}" class="limit"><title>the load stopped; the drain follows</title></line><text x="{tx:.1}" y="{ty:.1}" class="tick" text-anchor="{anchor}">{said}</text><polyline class="mark" fill="none" stroke="{ACCEPTED}" stroke-width="2" points="{a}"><title>accepted (202)</title></polyline><polyline class="mark" fill="none" stroke="{c}" stroke-width="2" points="{f}"><title>finished (done or failed)</title></polyline></svg>"##,
        top = axis.top,
        bottom = axis.bottom(),
        ty = axis.top + 12.0,
        a = line(|p| p.accepted),
        c = colour(row),
        f = line(|p| p.finished),
    );
    let _ = write!(
        out,
        r##"<figcaption><span style="color:{ACCEPTED}">&#9632;</span> accepted (202) &nbsp; <span style="color:{c}">&#9632;</span> finished &nbsp; {:.0} jobs/s finished while jobs waited; accepted {:.0}/s while the backlog had room</figcaption></figure>"##,
        run.measured.completed_per_s,
        q.accept_phase.accepted_per_s,
        c = colour(row),
    );
}

pub(crate) fn lat(l: &crate::load::LatencyStats) -> [f64; 6] {
    [l.p2_5, l.p50, l.p97_5, l.p99, l.p99_9, l.max]
}
