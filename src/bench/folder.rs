//! The report folder: `results.json`, `timeline.csv`, a `README.md` summary and the HTML page,
//! written from the [`Results`].

use std::fmt::Write as _;
use std::path::Path;

use super::report::{Results, process_second, table};

/// Writes results.json, timeline.csv, README.md and index.html into `dir`.
///
/// # Errors
/// Any I/O error.
pub fn write(dir: &Path, r: &Results) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("results.json"), json + "\n")?;
    std::fs::write(dir.join("timeline.csv"), timeline_csv(r))?;
    std::fs::write(dir.join("README.md"), markdown(r))?;
    std::fs::write(dir.join("index.html"), super::html::page(r))?;
    Ok(())
}

/// One row per strategy and second: the heavy load, the probe, and each process's sample
/// nearest the end of that second.
fn timeline_csv(r: &Results) -> String {
    let mut s = String::from(
        "strategy,second,completed,status_2xx,timeouts,errors,p50_ms,p99_ms,health_p50_ms,health_p99_ms,cpu_percent,rss_mib,threads\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for run in &r.runs {
        let warm = r.settings.warmup.as_secs_f64();
        for sec in &run.heavy.timeline {
            let probe = run
                .bystander
                .timeline
                .iter()
                .find(|p| p.second == sec.second);
            let (cpu, rss, thr) = process_second(run, warm + sec.second as f64);
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{}",
                run.strategy,
                sec.second,
                sec.completed,
                sec.status_2xx,
                sec.timeouts,
                sec.errors,
                opt(sec.p50_ms),
                opt(sec.p99_ms),
                opt(probe.and_then(|p| p.p50_ms)),
                opt(probe.and_then(|p| p.p99_ms)),
                cpu,
                rss,
                thr
            );
        }
    }
    s
}

fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# offload bench report\n");
    let _ = writeln!(s, "- command: `{}`", r.command_line.join(" "));
    let _ = writeln!(s, "- offload {}", r.offload_version);
    let _ = writeln!(
        s,
        "- machine: {} ({} cores), {:.1} GiB memory, {} kernel {}",
        r.machine.cpu_model,
        r.machine.cores,
        r.machine.memory_bytes as f64 / (1u64 << 30) as f64,
        r.machine.os,
        r.machine.kernel
    );
    let _ = writeln!(s, "- wall time: {:.0} s\n", r.wall_s);
    let _ = writeln!(s, "## Verdict\n");
    for line in super::summary::verdict(r) {
        let _ = writeln!(s, "- {line}");
    }
    let _ = writeln!(s, "\n## Results\n");
    let _ = writeln!(s, "```\n{}```\n", table(r));
    for line in &r.reading {
        let _ = writeln!(s, "- {line}");
    }
    for line in super::compare::repeat_lines(&r.repeats) {
        let _ = writeln!(s, "- {line}");
    }
    if let Some(m) = &r.mix {
        let _ = writeln!(s, "\n## Mixed workload\n");
        let _ = writeln!(s, "```\n{}```\n", super::mix::table(m));
        for line in &m.reading {
            let _ = writeln!(s, "- {line}");
        }
    }
    if let Some(f) = &r.flood {
        let _ = writeln!(s, "\n## Flood\n");
        let _ = writeln!(s, "```\n{}```\n", super::flood::table(f));
        let _ = writeln!(s, "{}\n", super::flood::LEGEND);
        for line in &f.reading {
            let _ = writeln!(s, "- {line}");
        }
    }
    if let Some(section) = super::node::compare::text(r) {
        let _ = writeln!(
            s,
            "\n## offload beside the seed's Node servers\n\n```\n{section}```"
        );
    }
    let _ = writeln!(
        s,
        "\n%limit is work completed per second against the all-core limit: the work alone run on every core at once, calibrated before the first strategy and after each one; a strategy's limit is the mean of the calibrations before and after it (column `limit`). The time on one idle thread is shown beside it, never used as the limit. `!` marks a %limit that is not reliable."
    );
    let _ = writeln!(
        s,
        "\nLatency is measured by the client; timed-out requests are counted apart and never left out silently. The /health figures count every probe that fell due: one that timed out, was cut short by the end of the run, or could not even be sent counts at the time it had waited (a lower bound)."
    );
    let _ = writeln!(
        s,
        "`index.html` has the charts, `results.json` everything (schema: `results.schema.json` in offload's source), `timeline.csv` the per-second data."
    );
    s
}
