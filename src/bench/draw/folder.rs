//! The report folder: `results.json`, `timeline.csv`, a `README.md` summary and the HTML page,
//! written from the [`Results`].

use std::fmt::Write as _;
use std::path::Path;

use super::text::table;
use crate::bench::model::Results;

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
/// nearest the end of that second. `unfinished` is the requests still waiting when the window
/// closed, on the strategy's last second (0 on the others), so the columns add up to every
/// request sent.
fn timeline_csv(r: &Results) -> String {
    let mut s = String::from(
        "strategy,second,completed,status_2xx,timeouts,errors,unfinished,p50_ms,p99_ms,health_p50_ms,health_p99_ms,cpu_percent,rss_mib,threads\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for run in &r.runs {
        let warm = r.settings.warmup.as_secs_f64();
        let last = run.heavy.timeline.len().saturating_sub(1);
        for (i, sec) in run.heavy.timeline.iter().enumerate() {
            let probe = run
                .bystander
                .timeline
                .iter()
                .find(|p| p.second == sec.second);
            let (cpu, rss, thr) = run.process_second(warm + sec.second as f64);
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{}",
                run.strategy,
                sec.second,
                sec.completed,
                sec.status_2xx,
                sec.timeouts,
                sec.errors,
                if i == last { run.unfinished } else { 0 },
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
    for line in super::verdict::verdict(r) {
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
    if let Some(section) = super::node::text(r) {
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
        "\nLatency is measured by the client. Every /heavy request sent is in the table: answered (in the latency columns, by status), failed, timed out, or unfinished when the window closed (err/timeout/!2xx/unfinished); the latency columns cover the answers only. The /health figures count every probe that fell due: one that timed out, was cut short by the end of the run, or could not even be sent counts at the time it had waited (a lower bound)."
    );
    let _ = writeln!(
        s,
        "`index.html` has the charts, `results.json` everything (schema: `results.schema.json` in offload's source), `timeline.csv` the per-second data."
    );
    s
}

#[cfg(test)]
mod tests {
    use crate::bench::planted::{Plant, answers, results};
    use crate::load::Planted;

    /// A row where most requests never finished (as `node:worker` did) shows them in every
    /// output, beside its errors, timeouts and non-2xx answers.
    #[test]
    fn a_planted_run_with_unfinished_requests_shows_them_everywhere() {
        let stuck = Planted {
            answers: answers(5, 200, 4000.0),
            unfinished: 95,
            cut_after: std::time::Duration::from_secs(6),
            ..Planted::default()
        };
        let r = results(vec![
            Plant::new("pool", 100.0, 1.0),
            Plant::new("spawn", 0.5, 2.0).heavy(stuck),
        ]);
        let dir = tempfile::tempdir().unwrap();
        super::write(dir.path(), &r).unwrap();
        let file = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();

        let table = super::table(&r);
        let row = table.lines().find(|l| l.starts_with("spawn")).unwrap();
        assert!(row.contains(" 0/0/0/95 "), "{table}");
        assert!(table.contains("err/timeout/!2xx/unfinished"), "{table}");
        assert!(table.contains(super::super::text::LATENCY_NOTE), "{table}");
        let said = "spawn: 95 of its 100 /heavy requests were still waiting for their answer when the window closed; its p50/p99/max cover the 5 answered.";
        assert!(r.reading.iter().any(|l| l == said), "{:#?}", r.reading);

        let readme = file("README.md");
        assert!(readme.contains(row), "{readme}");
        assert!(readme.contains(said), "{readme}");

        let html = file("index.html");
        assert!(
            html.contains("<th>err/timeout/!2xx/unfinished</th>"),
            "{html}"
        );
        assert!(html.contains("<td>0/0/0/95</td>"), "{html}");
        assert!(html.contains(&super::super::units::esc(said)), "{html}");

        let json: serde_json::Value = serde_json::from_str(&file("results.json")).unwrap();
        let spawn = &json["runs"][1];
        assert_eq!(spawn["strategy"], "spawn");
        assert_eq!(spawn["unfinished"], 95);
        assert_eq!(spawn["heavy"]["requests"]["completed"], 5);
        assert_eq!(json["schema_version"], crate::bench::model::SCHEMA_VERSION);

        // The CSV's columns add up to every request sent: the unfinished on the last second.
        let csv = file("timeline.csv");
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let rows: Vec<Vec<&str>> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|c| c[0] == "spawn")
            .collect();
        let sum = |name: &str| -> u64 {
            rows.iter()
                .map(|c| c[col(name)].parse::<u64>().unwrap())
                .sum()
        };
        assert_eq!(
            sum("completed") + sum("timeouts") + sum("errors") + sum("unfinished"),
            100
        );
        assert_eq!(rows.last().unwrap()[col("unfinished")], "95");
    }
}
