//! `index.html`: one self-contained page (no network, no scripts from elsewhere): the verdict,
//! the summary table, the reading and the charts ([`super::chart`]), laid out.

use super::units::esc;

use super::chart::{backlog, lat, percentiles, throughput, timeline};
use super::text::table;
use crate::bench::model::Results;

/// The whole page.
pub fn page(r: &Results) -> String {
    let mut body = String::new();
    throughput(&mut body, r);
    percentiles(
        &mut body,
        r,
        "chart-latency",
        "Latency of /heavy by percentile",
        |x| lat(&x.measured.heavy.latency),
    );
    percentiles(
        &mut body,
        r,
        "chart-bystander",
        "Latency of the /health bystander by percentile (open loop)",
        |x| lat(&x.measured.bystander.latency_with_timeouts),
    );
    timeline(
        &mut body,
        r,
        "chart-timeline-rate",
        "/heavy answers with a 2xx status per second (for the queue: 202 Accepted)",
        "req/s",
        false,
        |x| {
            x.measured
                .heavy
                .timeline
                .iter()
                .map(|s| Some(s.status_2xx as f64 / s.span_s.max(1e-9)))
                .collect()
        },
    );
    timeline(
        &mut body,
        r,
        "chart-timeline-health",
        "/health p99 per second",
        "ms (log)",
        true,
        |x| {
            x.measured
                .bystander
                .timeline
                .iter()
                .map(|s| s.p99_ms)
                .collect()
        },
    );
    timeline(
        &mut body,
        r,
        "chart-timeline-threads",
        "Threads of the strategy's processes per second",
        "threads",
        false,
        |x| {
            (0..x.measured.heavy.timeline.len())
                .map(|s| Some(x.process_second(x.measured.heavy.warmup_s + s as f64).2 as f64))
                .collect()
        },
    );
    timeline(
        &mut body,
        r,
        "chart-timeline-cpu",
        "CPU of the strategy's processes per second (gateway, compute service, worker: summed)",
        "% of one core",
        false,
        |x| {
            (0..x.measured.heavy.timeline.len())
                .map(|s| Some(x.process_second(x.measured.heavy.warmup_s + s as f64).0))
                .collect()
        },
    );
    timeline(
        &mut body,
        r,
        "chart-timeline-memory",
        "Memory (RSS) of the strategy's processes per second, summed",
        "MiB",
        false,
        |x| {
            (0..x.measured.heavy.timeline.len())
                .map(|s| Some(x.process_second(x.measured.heavy.warmup_s + s as f64).1))
                .collect()
        },
    );
    for run in r.runs.iter().filter(|x| x.measured.queue.is_some()) {
        backlog(&mut body, run);
    }
    let reading: String = r
        .reading
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    let verdict: String = super::verdict::verdict(r)
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>offload bench: {work}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }}
table.runs {{ border-collapse: collapse; width: 100%; font-size: 12px; margin: 0.5em 0 1em; }}
table.runs th, table.runs td {{ padding: 3px 6px; text-align: right; border-bottom: 1px solid #e4e4e4; }}
table.mix {{ border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1em; }} table.mix th, table.mix td {{ padding: 3px 6px; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }} table.mix td:nth-child(-n+2), table.mix th:nth-child(-n+2) {{ text-align: left; }}
table.runs th {{ font-weight: 600; vertical-align: bottom; }} table.runs td {{ white-space: nowrap; }} table.runs td:first-child, table.runs th:first-child {{ text-align: left; }}
p.note {{ font-size: 12px; color: #555; margin-top: -0.5em; }}
.flag {{ color: #b00; font-weight: 700; cursor: help; }} .verdict {{ background: #f3f7ff; border-left: 4px solid #1f77b4; padding: 0.5em 1em 0.5em 2em; }}
figure {{ margin: 0.5em 0; }} .charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1em; }} .chart {{ max-width: 100%; height: auto; }}
.title {{ font-weight: 600; font-size: 14px; }} .tick {{ font-size: 11px; fill: #555; }}
.grid {{ stroke: #e4e4e4; }} .limit {{ stroke: #000; stroke-dasharray: 6 4; }}
.key {{ display: inline-block; margin-right: 1em; }} .key::before {{ content: ""; display: inline-block; width: 12px; height: 12px; background: var(--c); margin-right: 4px; vertical-align: -1px; }}
</style></head>
<body data-charts="pending">
<h1>offload bench</h1>
<p>{cpu}, {cores} cores, {mem:.1} GiB, {os} {kernel}; offload {ver}; wall time {wall:.0} s.<br><code>{cmd}</code></p>
<h2>Verdict for this machine and this work</h2>
<ul class="verdict">{verdict}</ul>
{html_table}
<ul>{reading}</ul>
{mix}
{flood}
{node}
<details><summary>The table as printed on the terminal</summary><pre>{table}</pre></details>
<div class="charts">{body}</div>
<p>Latency is measured by the client from each request's send (the /health probe: from its scheduled send, correcting coordinated omission). Every /heavy request sent is in the table: answered, failed, timed out, or unfinished when the window closed; the /heavy latencies cover the answers only. The /health figures count every probe that fell due: one that timed out, was cut short by the end of the run, or could not even be sent counts at the time it had waited (a lower bound).</p>
<script>
// Marks the page once every chart has drawn marks, so a headless browser can check it.
const charts = document.querySelectorAll("svg.chart");
const drawn = [...charts].filter(c => c.querySelector(".mark") && c.getBBox().width > 0).length;
document.body.dataset.charts = drawn + "/" + charts.length;
// How far the page is wider than the window (0: nothing is cut off), for the same check.
const root = document.documentElement;
document.body.dataset.overflow = String(Math.max(0, root.scrollWidth - root.clientWidth));
</script>
</body></html>
"#,
        work = esc(&r.settings.work),
        cpu = esc(&r.machine.cpu_model),
        cores = r.machine.cores,
        mem = r.machine.memory_bytes as f64 / (1u64 << 30) as f64,
        os = esc(&r.machine.os),
        kernel = esc(&r.machine.kernel),
        ver = esc(&r.offload_version),
        wall = r.wall_s,
        cmd = esc(&r.command_line.join(" ")),
        table = esc(&table(r)),
        html_table = super::text::html_table(r),
        mix = r
            .mix
            .as_ref()
            .map(super::mix::html_table)
            .unwrap_or_default(),
        flood = r
            .flood
            .as_ref()
            .map(super::flood::html_table)
            .unwrap_or_default(),
        node = super::node::html(r),
    )
}
