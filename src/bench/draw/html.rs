//! `index.html`: one self-contained page (no network, no scripts from elsewhere): the verdict,
//! the summary table, the reading and the charts ([`super::chart`]), laid out.

use super::units::esc;

use super::chart::{backlog, lat, percentiles, throughput, timeline};
use super::text::table;
use crate::bench::model::Results;

/// The verdict: its headline in bold, then a line per row, the row's name in bold.
fn verdict_html(r: &Results) -> String {
    let lines = super::verdict::verdict(r);
    let Some((headline, rows)) = lines.split_first() else {
        return String::new();
    };
    let items: String = rows
        .iter()
        .zip(&r.runs)
        .map(|(line, run)| {
            let name = run.measured.strategy.as_str();
            match line.strip_prefix(name) {
                Some(rest) => format!("<li><b>{}</b>{}</li>", esc(name), esc(rest)),
                None => format!("<li>{}</li>", esc(line)),
            }
        })
        .collect();
    format!(
        r#"<div class="verdict"><p><strong>{}</strong></p><ul>{items}</ul></div>"#,
        esc(headline)
    )
}

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
    let verdict = verdict_html(r);
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
p.note {{ font-size: 12px; color: #555; margin-top: -0.5em; }} p.work {{ font-size: 13px; margin: 1em 0 0.3em; }}
.flag {{ color: #b00; font-weight: 700; cursor: help; }} .verdict {{ background: #f3f7ff; border-left: 4px solid #1f77b4; padding: 0.5em 1em; }} .verdict p {{ font-size: 15px; margin: 0.3em 0 0.6em; }} .verdict ul {{ padding-left: 1.2em; margin: 0; }} .verdict li {{ margin: 0.25em 0; }}
figure {{ margin: 0.5em 0; }} .charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 1em; }} .chart {{ max-width: 100%; height: auto; }}
.title {{ font-weight: 600; font-size: 14px; }} .tick {{ font-size: 11px; fill: #555; }}
.grid {{ stroke: #e4e4e4; }} .limit {{ stroke: #000; stroke-dasharray: 6 4; }}
.key {{ display: inline-block; margin-right: 1em; }} .key::before {{ content: ""; display: inline-block; width: 12px; height: 12px; background: var(--c); margin-right: 4px; vertical-align: -1px; }}
</style></head>
<body data-charts="pending">
<h1>offload bench</h1>
<p>{cpu}, {cores} cores, {mem:.1} GiB, {os} {kernel}; offload {ver}; wall time {wall:.0} s.<br><code>{cmd}</code></p>
<h2>Verdict for this machine and this work</h2>
{verdict}
<p class="work">{head}</p>
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
// Text that leaves its chart or covers other text of the same chart, as "chart: text"
// (empty: none), for the same check. Boxes as laid out on the screen, half a pixel spared.
const glitches = [];
const said = t => JSON.stringify(t.textContent.slice(0, 50));
for (const chart of charts) {{
  const frame = chart.getBoundingClientRect();
  const texts = [...chart.querySelectorAll("text")].map(t => [t, t.getBoundingClientRect()]);
  texts.forEach(([t, b], i) => {{
    if (b.left < frame.left - 0.5 || b.right > frame.right + 0.5 || b.top < frame.top - 0.5 || b.bottom > frame.bottom + 0.5) {{
      glitches.push(chart.id + ": " + said(t) + " leaves the chart");
    }}
    for (const [u, c] of texts.slice(i + 1)) {{
      const wide = Math.min(b.right, c.right) - Math.max(b.left, c.left);
      const high = Math.min(b.bottom, c.bottom) - Math.max(b.top, c.top);
      if (wide > 0.5 && high > 0.5) glitches.push(chart.id + ": " + said(t) + " overlaps " + said(u));
    }}
  }});
}}
document.body.dataset.glitches = glitches.join("; ");
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
        head = esc(&super::limit::headline(&r.calibration, &r.settings.work)),
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

#[cfg(test)]
mod tests {
    use crate::bench::planted::{Plant, results};

    /// The page in headless Chromium, as `--dump-dom` gives it after its script ran; `None`
    /// (said loudly) without Chromium, unless `OFFLOAD_REQUIRE_CHROMIUM=1` (as in CI), which
    /// fails instead. With `OFFLOAD_PAGE_SHOT=path.png`, a screenshot of it too, and the page
    /// beside it (`path.png.html`).
    fn rendered(page: &str) -> Option<String> {
        let have = std::process::Command::new("chromium")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !have {
            assert!(
                !std::env::var("OFFLOAD_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1"),
                "OFFLOAD_REQUIRE_CHROMIUM=1 but no chromium is on PATH"
            );
            eprintln!("!!!! chromium is not installed: the page was NOT rendered !!!!");
            return None;
        }
        let dir = tempfile::tempdir().expect("a temporary folder");
        let file = dir.path().join("index.html");
        std::fs::write(&file, page).expect("the page written");
        let run = |how: &str| {
            std::process::Command::new("chromium")
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    "--window-size=1280,2400",
                    "--virtual-time-budget=3000",
                ])
                .arg(format!(
                    "--user-data-dir={}",
                    dir.path().join("profile").display()
                ))
                .arg(how)
                .arg(format!("file://{}", file.display()))
                .output()
                .expect("run chromium")
        };
        if let Ok(shot) = std::env::var("OFFLOAD_PAGE_SHOT") {
            run(&format!("--screenshot={shot}"));
            std::fs::write(format!("{shot}.html"), page).expect("the page kept");
        }
        Some(String::from_utf8_lossy(&run("--dump-dom").stdout).into_owned())
    }

    /// The verdict is one text: the page and the report's README.md give each of its lines
    /// (the headline first, in bold; each row's name in bold on the page).
    #[test]
    fn the_page_and_the_readme_give_the_same_verdict() {
        let r = results(vec![
            Plant::new("inline", 47.0, 2500.0),
            Plant::new("pool", 109.0, 0.3).limits(154.0, 90.0),
            Plant::new("auto", 85.0, 0.4),
        ]);
        let lines = crate::bench::draw::verdict::verdict(&r);
        let (page, readme) = (super::page(&r), crate::bench::draw::markdown::markdown(&r));
        use crate::bench::draw::units::esc;
        assert!(
            page.contains(&format!("<p><strong>{}</strong></p>", esc(&lines[0]))),
            "{page}"
        );
        assert!(readme.contains(&format!("## Verdict\n\n**{}**\n\n", lines[0])));
        for (line, run) in lines[1..].iter().zip(&r.runs) {
            let name = run.measured.strategy.as_str();
            let rest = line
                .strip_prefix(name)
                .expect("a row's line starts with its name");
            assert!(
                page.contains(&format!("<li><b>{name}</b>{}</li>", esc(rest))),
                "{line}"
            );
            assert!(readme.contains(&format!("\n- {line}\n")), "{line}");
        }
    }

    /// An attribute of the page's `<body>` as its script set it, unescaped.
    fn body_attribute(dom: &str, name: &str) -> Option<String> {
        dom.split_once(&format!("{name}=\""))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.replace("&quot;", "\"").replace("&amp;", "&"))
    }

    /// The run that asked for these checks, with every row a `--node` run has: rows flagged
    /// (the machine did not hold still), long names, a queue and `auto`. Every chart draws,
    /// and no text leaves its chart or covers another.
    #[test]
    fn a_noisy_run_draws_every_chart_without_clipped_or_overlapping_text() {
        let r = results(vec![
            Plant::new("inline", 47.0, 2500.0).limits(50.0, 52.0),
            Plant::new("node:inline", 20.0, 9000.0).limits(52.0, 50.0),
            Plant::new("spawn", 40.0, 300.0).limits(50.0, 33.0),
            Plant::new("node:worker", 18.0, 800.0).limits(33.0, 40.0),
            Plant::new("blocking", 100.0, 70.0).limits(40.0, 154.0),
            Plant::new("pool", 109.0, 0.3).limits(154.0, 90.0),
            Plant::new("node:piscina", 80.0, 4.0).limits(90.0, 88.0),
            Plant::new("node:piscina, nice 10", 82.0, 3.0).limits(88.0, 9.0),
            Plant::new("remote", 90.0, 2.0).limits(9.0, 201.0),
            Plant::new("node:remote", 70.0, 11.0).limits(201.0, 95.0),
            Plant::new("queue", 80.0, 0.6)
                .limits(95.0, 93.0)
                .queue(16000.0, 9992, 21000.0),
            Plant::new("node:bullmq", 60.0, 100.0).limits(93.0, 92.0),
            Plant::new("auto", 85.0, 0.4)
                .limits(92.0, 94.0)
                .queue(9000.0, 10000, 20000.0),
        ]);
        let page = super::page(&r);
        let charts = page.matches(r#"<svg class="chart""#).count();
        assert_eq!(charts, 10, "8 charts and a backlog for queue and auto");
        let Some(dom) = rendered(&page) else { return };
        assert_eq!(
            body_attribute(&dom, "data-charts"),
            Some(format!("{charts}/{charts}"))
        );
        assert_eq!(
            body_attribute(&dom, "data-glitches").as_deref(),
            Some(""),
            "text leaves its chart or covers other text (None: the check did not run)"
        );
    }
}
