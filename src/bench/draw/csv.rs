//! `timeline.csv`: per strategy and second, the heavy load, the probe and the processes.

use std::fmt::Write as _;

use crate::bench::model::Results;

/// One row per strategy and second: the heavy load, the probe, and each process's sample
/// nearest the end of that second. `unfinished` is the requests still waiting when the window
/// closed, on the strategy's last second (0 on the others), so the columns add up to every
/// request sent.
pub fn timeline_csv(r: &Results) -> String {
    let mut s = String::from(
        "strategy,second,completed,status_2xx,timeouts,errors,unfinished,p50_ms,p99_ms,health_p50_ms,health_p99_ms,cpu_percent,rss_mib,threads\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for run in &r.runs {
        let warm = r.settings.warmup.as_secs_f64();
        let last = run.measured.heavy.timeline.len().saturating_sub(1);
        for (i, sec) in run.measured.heavy.timeline.iter().enumerate() {
            let probe = run
                .measured
                .bystander
                .timeline
                .iter()
                .find(|p| p.second == sec.second);
            let (cpu, rss, thr) = run.process_second(warm + sec.second as f64);
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{}",
                run.measured.strategy,
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
