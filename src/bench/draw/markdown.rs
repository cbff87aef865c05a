//! The report folder's `README.md`: the command, the machine, the verdict, every table and
//! its reading, and what the figures mean.

use std::fmt::Write as _;

use super::text::table;
use crate::bench::model::Results;

/// The report as Markdown.
pub fn markdown(r: &Results) -> String {
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
    let verdict = super::verdict::verdict(r);
    if let Some((headline, rows)) = verdict.split_first() {
        let _ = writeln!(s, "**{headline}**\n");
        for line in rows {
            let _ = writeln!(s, "- {line}");
        }
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
