//! What a person reads first: the verdict (which strategy to use on this machine for this
//! work, and why, read from the run's own figures) and the results as an HTML table that fits
//! the page.

use std::fmt::Write as _;

use super::report::Results;
use super::scenario::StrategyRun;
use crate::strategy::Name;

/// A strategy's `/health` p99 this many times the best one's (and over [`STALL_MS`]) is a
/// stall worth warning about.
const STALL_RATIO: f64 = 10.0;
/// Below this `/health` p99 no one notices, whatever the ratio.
const STALL_MS: f64 = 50.0;
/// Throughput within this fraction of the best in-process strategy's counts as keeping up.
const KEEPS_UP: f64 = 0.8;

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.2} ms")
    }
}

fn health_p99(run: &StrategyRun) -> f64 {
    run.bystander.latency_with_timeouts.p99
}

fn clean(run: &StrategyRun) -> bool {
    let q = &run.heavy.requests;
    q.errors + q.timeouts == 0 && (run.queue.is_some() || q.non_2xx == 0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// How fast a strategy went, with its %limit only where the limit held still.
fn pace(run: &StrategyRun) -> String {
    if run.limit_flags.is_empty() {
        format!(
            "{:.0}/s, {:.0}% of the all-core limit",
            run.completed_per_s,
            run.limit_fraction * 100.0
        )
    } else {
        format!("{:.0}/s (its %limit is not reliable)", run.completed_per_s)
    }
}

/// The verdict, a sentence per line: the in-process strategy to use, what `remote` and `queue`
/// cost and buy, which strategies stall light requests, and whether the machine held still.
pub fn verdict(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let in_process: Vec<&StrategyRun> = r
        .runs
        .iter()
        .filter(|x| Name::parse(&x.strategy).is_some_and(Name::in_process) && clean(x))
        .collect();
    // Throughput decides only when every in-process figure can be trusted; otherwise the
    // bystander's latency alone does (it does not depend on the machine holding still).
    let comparable = in_process.iter().all(|x| x.limit_flags.is_empty());
    let fastest = in_process
        .iter()
        .map(|x| x.completed_per_s)
        .fold(0.0, f64::max);
    let choice = in_process
        .iter()
        .filter(|x| !comparable || x.completed_per_s >= KEEPS_UP * fastest)
        .min_by(|a, b| health_p99(a).total_cmp(&health_p99(b)))
        .copied();
    let best_health = r.runs.iter().map(health_p99).fold(f64::INFINITY, f64::min);
    if let Some(c) = choice {
        out.push(format!(
            "{}: {} with /health p99 {}, {} threads and {:.0} MiB at peak. {}",
            c.strategy,
            pace(c),
            ms(health_p99(c)),
            c.peak_threads,
            mib(c.peak_rss_bytes),
            if comparable {
                "Of the in-process strategies that kept up with the fastest, it kept light requests fastest."
            } else {
                "Of the in-process strategies it kept light requests fastest (chosen by /health alone: this run's throughput figures are not comparable)."
            }
        ));
    }
    let forwards = |x: &&StrategyRun| {
        Name::parse(&x.strategy).and_then(Name::helper) == Some(crate::strategy::Helper::Compute)
    };
    if let Some(remote) = r.runs.iter().filter(forwards).find(|x| clean(x)) {
        let versus = choice.map_or(String::new(), |c| {
            // A p50 of 0: no request both began and ended inside the window.
            let p50 = if remote.heavy.latency.p50 > 0.0 && c.heavy.latency.p50 > 0.0 {
                format!(
                    ", p50 {} against {}",
                    ms(remote.heavy.latency.p50),
                    ms(c.heavy.latency.p50)
                )
            } else {
                String::new()
            };
            format!(
                " ({:.2}x {}'s{p50})",
                remote.completed_per_s / c.completed_per_s.max(1e-9),
                c.strategy,
            )
        });
        out.push(format!(
            "remote: {}{versus}, /health p99 {}; it moves the work off this box, for a network hop and a second process ({:.0} MiB, {} threads together).",
            pace(remote),
            ms(health_p99(remote)),
            mib(remote.peak_rss_bytes),
            remote.peak_threads
        ));
    }
    if let Some((run, q)) = r.runs.iter().find_map(|x| x.queue.as_ref().map(|q| (x, q))) {
        let wait = q.enqueue_to_done_ms.as_ref().map_or(String::new(), |d| {
            format!(
                "; under this load a job waited {} from enqueue to done at p50",
                ms(d.p50)
            )
        });
        out.push(format!(
            "queue, when a request may take longer than your clients wait: it accepted {:.0}/s while its backlog had room and finished {}{wait}.",
            q.accept_phase.accepted_per_s,
            pace(run)
        ));
    }
    for run in &r.runs {
        let p99 = health_p99(run);
        if p99 > STALL_MS && p99 > STALL_RATIO * best_health {
            out.push(format!(
                "Not {}: light requests waited {} at p99 beside its work, against {} for the best.",
                run.strategy,
                ms(p99),
                ms(best_health)
            ));
        }
    }
    if r.runs.iter().any(|x| !x.limit_flags.is_empty()) {
        out.push(
            "The machine's speed changed during this run (the ! marks): compare throughput only where no ! stands; the /health figures, threads and memory hold regardless."
                .to_owned(),
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The results as an HTML table: one row per strategy, numbers right-aligned, latencies
/// grouped so that the table fits a 1280-px page.
pub fn html_table(r: &Results) -> String {
    let mut t = String::from(
        r#"<table class="runs"><thead><tr><th>strategy</th><th>done</th><th>req/s</th><th>limit</th><th>%limit</th><th>/heavy p50 / p99 / max</th><th>err / timeout / !2xx</th><th>/health p50 / p99 / max</th><th>RSS MiB</th><th>threads</th><th>queue: accepted/s, backlog, drain</th></tr></thead><tbody>"#,
    );
    for run in &r.runs {
        let l = &run.heavy.latency;
        let b = &run.bystander.latency_with_timeouts;
        let q = &run.heavy.requests;
        let non2xx = super::report::non_2xx(run);
        let flag = if run.limit_flags.is_empty() {
            String::new()
        } else {
            let why: Vec<String> = run
                .limit_flags
                .iter()
                .map(|f| {
                    serde_json::to_string(f)
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned()
                })
                .collect();
            format!(
                r#" <span class="flag" title="not reliable: {}">!</span>"#,
                esc(&why.join(", "))
            )
        };
        let queue = super::report::queue_cell(run);
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}%{flag}</td><td>{} / {} / {}</td><td>{} / {} / {}</td><td>{} / {} / {}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            esc(&run.strategy),
            run.completed,
            run.completed_per_s,
            run.limit.limit_per_s,
            run.limit_fraction * 100.0,
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            q.errors,
            q.timeouts,
            non2xx,
            ms(b.p50),
            ms(b.p99),
            ms(b.max),
            mib(run.peak_rss_bytes),
            run.peak_threads,
            queue
        );
    }
    t.push_str("</tbody></table>");
    t
}

#[cfg(test)]
mod tests {
    use super::ms;

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(ms(0.26), "0.26 ms");
        assert_eq!(ms(36.4), "36 ms");
        assert_eq!(ms(8710.0), "8.71 s");
    }
}
