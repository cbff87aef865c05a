//! What a person reads first: the verdict. Its first line says which strategy to use for this
//! work on this machine and how far the run's rates can be trusted (the doubt first, when there
//! is any); then one line per row says what that strategy did, in figures, and when to use it.
//! The page, the report's README.md and the terminal all print these lines.

use super::units::{mib, ms_words as ms};

use super::rules::{KEEPS_UP, stalls};
use crate::bench::model::{DISAGREE_RATIO, LimitWarning, OVER_LIMIT, Results, RowId, StrategyRun};
use crate::strategy::{Helper, Name};

fn health_p99(run: &StrategyRun) -> f64 {
    run.measured.bystander.latency_with_timeouts.p99
}

/// No errors, timeouts or (but for a queue, whose 503s are its cap) non-2xx answers.
/// Unfinished requests do not count against a run: a closed loop always has its last
/// request per connection in flight when the window closes.
fn clean(run: &StrategyRun) -> bool {
    let q = &run.measured.heavy.requests;
    q.errors + q.timeouts == 0 && (run.measured.queue.is_some() || q.non_2xx == 0)
}

/// Whether a row's rate can be set beside the others': no `!` on it.
fn comparable(run: &StrategyRun) -> bool {
    run.limit_warnings.is_empty()
}

fn in_process(run: &StrategyRun) -> bool {
    run.measured
        .strategy
        .offload()
        .is_some_and(Name::in_process)
}

/// How the rows stand, by the verdict's rules (see [`verdict`]).
struct Standing<'a> {
    /// The fastest clean in-process row whose rate is comparable: it sets the bar.
    fastest: Option<&'a StrategyRun>,
    /// [`KEEPS_UP`] of the fastest's rate.
    bar: f64,
    choice: Option<&'a StrategyRun>,
    /// The lowest `/health` p99 of any row.
    best_health: f64,
}

impl<'a> Standing<'a> {
    fn of(r: &'a Results) -> Standing<'a> {
        let candidates: Vec<&StrategyRun> = r
            .runs
            .iter()
            .filter(|x| in_process(x) && clean(x))
            .collect();
        let fastest = candidates
            .iter()
            .copied()
            .filter(|x| comparable(x))
            .max_by(|a, b| {
                a.measured
                    .completed_per_s
                    .total_cmp(&b.measured.completed_per_s)
            });
        let bar = fastest.map_or(0.0, |f| KEEPS_UP * f.measured.completed_per_s);
        let choice = candidates
            .iter()
            .copied()
            .filter(|x| !comparable(x) || x.measured.completed_per_s >= bar)
            .min_by(|a, b| health_p99(a).total_cmp(&health_p99(b)));
        Standing {
            fastest,
            bar,
            choice,
            best_health: r.runs.iter().map(health_p99).fold(f64::INFINITY, f64::min),
        }
    }

    /// A comparable clean in-process row under the bar.
    fn fell_behind(&self, run: &StrategyRun) -> bool {
        in_process(run) && clean(run) && comparable(run) && run.measured.completed_per_s < self.bar
    }

    fn is_choice(&self, run: &StrategyRun) -> bool {
        self.choice.is_some_and(|c| std::ptr::eq(c, run))
    }
}

/// The strategy the verdict recommends, for the charts to mark.
pub fn choice(r: &Results) -> Option<RowId> {
    Standing::of(r).choice.map(|c| c.measured.strategy)
}

/// Why a row's rate is not comparable, in figures.
fn why_not_comparable(run: &StrategyRun) -> String {
    let mut why = Vec::new();
    if run
        .limit_warnings
        .contains(&LimitWarning::CalibrationDisagrees)
    {
        why.push(format!(
            "the calibrations before and after it differ by {:.0}%, more than {:.0}% ({:.0} vs {:.0} req/s)",
            (run.limit.disagreement - 1.0) * 100.0,
            (DISAGREE_RATIO - 1.0) * 100.0,
            run.limit.before.limit_per_s,
            run.limit.after.limit_per_s
        ));
    }
    if run.limit_warnings.contains(&LimitWarning::OverLimit) {
        why.push(format!(
            "it measured {:.0}% of its limit ({:.0} req/s), over the {:.0}% the work alone allows",
            run.limit_fraction * 100.0,
            run.limit.limit_per_s,
            OVER_LIMIT * 100.0
        ));
    }
    why.join(", and ")
}

/// A row's rate, with its share of the limit only where the rate is comparable.
fn rate(run: &StrategyRun) -> String {
    if comparable(run) {
        format!(
            "{:.0}/s ({:.0}% of the all-core limit)",
            run.measured.completed_per_s,
            run.limit_fraction * 100.0
        )
    } else {
        format!("{:.0}/s", run.measured.completed_per_s)
    }
}

/// What a row did, in figures: its rate (for `auto` and a queue, what it answered at once and
/// what it queued), `/health`, and what its processes took.
fn figures(run: &StrategyRun, s: &Standing<'_>) -> String {
    let m = &run.measured;
    let health = format!("/health p99 {}", ms(health_p99(run)));
    let cost = if m.processes.len() > 1 {
        format!(
            "{} processes, {:.0} MiB and {} threads together",
            m.processes.len(),
            mib(m.peak_rss_bytes),
            m.peak_threads
        )
    } else {
        format!(
            "{} threads and {:.0} MiB at peak",
            m.peak_threads,
            mib(m.peak_rss_bytes)
        )
    };
    match &m.queue {
        Some(q) if m.strategy.offload().is_some_and(Name::routes) => {
            let status = |k: &str| m.heavy.requests.by_status.get(k).copied().unwrap_or(0);
            let wait = q.enqueue_to_done_ms.as_ref().map_or(String::new(), |d| {
                format!(" ({} from enqueue to done at p50)", ms(d.p50))
            });
            // The same split as the reading's: the pool's 200s and the worker's jobs, both in
            // the load's window, add up to its rate.
            format!(
                "{} answered at once from its pool (200) and {} jobs finished by its worker in the load window, {} in all; {} requests queued (202){wait}; {health}, {cost}",
                m.completed.saturating_sub(q.jobs_finished_in_window),
                q.jobs_finished_in_window,
                rate(run),
                status("202"),
            )
        }
        Some(q) => {
            let wait = q.enqueue_to_done_ms.as_ref().map_or(String::new(), |d| {
                format!(", {} from enqueue to done at p50", ms(d.p50))
            });
            format!(
                "accepted {:.0}/s while its backlog had room and finished {}; {} jobs waiting when the load stopped{wait}; {health}, {cost}",
                q.accept_phase.accepted_per_s,
                rate(run),
                q.backlog_at_stop,
            )
        }
        None => {
            let beside = match s.choice {
                Some(c)
                    if m.strategy.offload().and_then(Name::helper) == Some(Helper::Compute)
                        && comparable(run)
                        && comparable(c) =>
                {
                    format!(
                        ", {:.2}x {}'s",
                        m.completed_per_s / c.measured.completed_per_s.max(1e-9),
                        c.measured.strategy
                    )
                }
                _ => String::new(),
            };
            format!("{}{beside}, {health}, {cost}", rate(run))
        }
    }
}

/// Where a row stands against the others: failed requests, a rate not comparable (said here
/// once, and nowhere else), behind the fastest comparable, or stalling light requests.
fn standing(run: &StrategyRun, s: &Standing<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if !clean(run) {
        let [e, t, n, _] = super::text::outcomes(run);
        out.push(format!(
            "Requests failed ({e} errors, {t} timeouts, {n} non-2xx){}.",
            if in_process(run) {
                ": left out of the choice"
            } else {
                ""
            }
        ));
    }
    if !comparable(run) {
        out.push(format!(
            "Its rate is not comparable: {}.",
            why_not_comparable(run)
        ));
    }
    if let Some(f) = s.fastest {
        if std::ptr::eq(f, run) {
            out.push("The fastest comparable in-process strategy.".to_owned());
        } else if s.fell_behind(run) {
            out.push(format!(
                "Behind: {:.0}% of {}'s {:.0}/s, the fastest comparable (under {:.0}% is behind).",
                run.measured.completed_per_s / f.measured.completed_per_s.max(1e-9) * 100.0,
                f.measured.strategy,
                f.measured.completed_per_s,
                KEEPS_UP * 100.0
            ));
        }
    }
    let p99 = health_p99(run);
    if stalls(p99, s.best_health) {
        out.push(format!(
            "It stalls light requests (the best row: {}).",
            ms(s.best_health)
        ));
    }
    out
}

/// When to use a row's strategy, whatever this run measured.
fn when(row: RowId) -> &'static str {
    match row {
        RowId::Offload(n) => n.advice(),
        RowId::Node(_) => "The seed's Node server: read beside its offload counterpart below.",
        RowId::LowPriority(_) => {
            "Its work threads at nice 10: the service's other work goes first."
        }
        RowId::LightAlone => "The mix's lightest part alone: a baseline, not a choice.",
    }
}

/// The verdict's first line: how far the rates can be trusted, and what to use.
fn headline(r: &Results, s: &Standing<'_>) -> String {
    let sure = super::limit::stillness(r);
    let doubt = r.runs.iter().any(|x| !comparable(x));
    let advice = match (s.choice, s.fastest) {
        (Some(c), Some(f)) if std::ptr::eq(c, f) => format!(
            "Use {} for this work on this machine: the fastest comparable in-process strategy ({:.0}/s), it also kept light requests fastest (/health p99 {}) of those not behind it.",
            c.measured.strategy,
            c.measured.completed_per_s,
            ms(health_p99(c)),
        ),
        (Some(c), Some(f)) => format!(
            "Use {} for this work on this machine: of the in-process strategies not behind the fastest comparable one ({}, {:.0}/s), it kept light requests fastest (/health p99 {}).",
            c.measured.strategy,
            f.measured.strategy,
            f.measured.completed_per_s,
            ms(health_p99(c)),
        ),
        (Some(c), None) => format!(
            "Use {} for this work on this machine: it kept light requests fastest (/health p99 {}) of the in-process strategies; with no in-process rate comparable, /health alone decided.",
            c.measured.strategy,
            ms(health_p99(c)),
        ),
        (None, _) => format!(
            "No in-process strategy answered every request in this run ({} rows): read each line below.",
            r.runs.len()
        ),
    };
    if doubt {
        format!("{sure} {advice}")
    } else {
        format!("{advice} {sure}")
    }
}

/// The verdict: the first line is the headline (how sure the run is, and what to use); then
/// one line per row, in the rows' order, each starting with the row's name. The rules (also in
/// docs/bench.md, "How the verdict is read"):
/// 1. Candidates are the in-process strategies without errors, timeouts or non-2xx answers.
/// 2. A row with a `!` (its calibrations disagree, or it beat its limit) is not comparable:
///    its own line says so once, with why, and no line calls it faster or slower.
/// 3. Of the comparable candidates, the fastest sets the bar; those at [`KEEPS_UP`] of it or
///    more kept up, the others are behind.
/// 4. Of the candidates that kept up or are not comparable, the lowest `/health` p99 is the
///    choice (by `/health` alone when no candidate is comparable).
/// 5. A row whose `/health` p99 is over [`STALL_MS`](super::rules::STALL_MS) and
///    [`STALL_RATIO`](super::rules::STALL_RATIO) times the best stalls light requests.
/// 6. The machine did not hold still when more than half of the rows have a `!`; that comes
///    first, before the advice.
pub fn verdict(r: &Results) -> Vec<String> {
    let s = Standing::of(r);
    let mut out = vec![headline(r, &s)];
    for run in &r.runs {
        let mut line = format!(
            "{}{}: {}.",
            run.measured.strategy,
            if s.is_choice(run) {
                " (recommended)"
            } else {
                ""
            },
            figures(run, &s)
        );
        for said in standing(run, &s) {
            line.push(' ');
            line.push_str(&said);
        }
        line.push(' ');
        line.push_str(when(run.measured.strategy));
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::rules::STALL_MS;
    use super::*;
    use crate::bench::planted::{Plant, answers, results};

    /// The verdict of `plants`, checked for what every verdict must be: a headline, then one
    /// line per row in the rows' order; a figure in every line; "not comparable" said once
    /// of each row with a `!` (in its own line) and never of any other; no flagged row called
    /// behind; "fastest" only ever of the comparable rows or of `/health`.
    fn read(plants: Vec<Plant>) -> Vec<String> {
        let r = results(plants);
        let v = verdict(&r);
        assert_eq!(v.len(), r.runs.len() + 1, "{v:#?}");
        for line in &v {
            assert!(
                line.bytes().any(|b| b.is_ascii_digit()),
                "a sentence without a figure: {line}"
            );
            let unqualified = line
                .match_indices("fastest")
                .filter(|(at, _)| {
                    let after = &line[at + "fastest".len()..];
                    !after.starts_with(" comparable") && !line[..*at].ends_with("light requests ")
                })
                .count();
            assert_eq!(unqualified, 0, "\"fastest\" of what? {line}");
        }
        assert!(!v[0].contains("not comparable"), "{v:#?}");
        for (line, run) in v[1..].iter().zip(&r.runs) {
            let name = run.measured.strategy.as_str();
            assert!(line.starts_with(name), "{name}'s line is {line}");
            let flagged = !run.limit_warnings.is_empty();
            assert_eq!(
                line.matches("not comparable").count(),
                usize::from(flagged),
                "{line}"
            );
            assert!(!(flagged && line.contains("Behind")), "{line}");
        }
        v
    }

    fn line<'a>(v: &'a [String], start: &str) -> &'a str {
        v.iter()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in {v:#?}"))
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(ms(0.26), "0.26 ms");
        assert_eq!(ms(36.4), "36 ms");
        assert_eq!(ms(8710.0), "8.71 s");
    }

    #[test]
    fn the_choice_is_the_fastest_health_among_those_that_kept_up() {
        // spawn keeps /health fastest but finished under 80% of blocking's 120/s; pool, at
        // exactly 80%, kept up and beats blocking on /health.
        let v = read(vec![
            Plant::new("inline", 110.0, 3000.0),
            Plant::new("spawn", 95.0, 0.5),
            Plant::new("blocking", 120.0, 40.0),
            Plant::new("pool", 96.0, 1.0),
        ]);
        // Nothing flagged: the advice first, then that the machine held still.
        assert_eq!(
            v[0],
            "Use pool for this work on this machine: of the in-process strategies not behind the fastest comparable one (blocking, 120/s), it kept light requests fastest (/health p99 1.00 ms). The machine held still (calibrations 150-150 req/s), so the rates compare."
        );
        assert!(
            line(&v, "pool (recommended): 96/s (64% of the all-core limit), /health p99 1.00 ms, 5 threads and 10 MiB at peak.").contains("Threads and a queue with bounds"),
            "{v:#?}"
        );
        assert!(
            line(&v, "spawn: ").contains(
                "Behind: 79% of blocking's 120/s, the fastest comparable (under 80% is behind)."
            ),
            "{v:#?}"
        );
        assert!(
            line(&v, "blocking: ").contains("The fastest comparable in-process strategy."),
            "{v:#?}"
        );
        assert_eq!(v.iter().filter(|l| l.contains("Behind")).count(), 1);
    }

    #[test]
    fn a_stall_is_named_past_stall_ms_and_ten_times_the_best() {
        assert!(stalls(STALL_MS + 1.0, 1.0));
        assert!(
            !stalls(STALL_MS - 1.0, 0.1),
            "under STALL_MS: no one notices"
        );
        assert!(!stalls(80.0, 10.0), "8x the best is not a stall");
        let v = read(vec![
            Plant::new("inline", 100.0, 3000.0),
            Plant::new("spawn", 100.0, 45.0),
            Plant::new("pool", 100.0, 1.0),
        ]);
        assert!(
            line(&v, "inline: ").contains(
                "/health p99 3.00 s, 5 threads and 10 MiB at peak. It stalls light requests (the best row: 1.00 ms). Never in a service"
            ),
            "{v:#?}"
        );
        assert_eq!(
            v.iter().filter(|l| l.contains("stalls")).count(),
            1,
            "{v:#?}"
        );
        // All three at 100/s: pool is the fastest comparable (the last of equals) and chosen.
        assert!(
            v[0].starts_with("Use pool for this work on this machine: the fastest comparable in-process strategy (100/s), it also kept light requests fastest (/health p99 1.00 ms) of those not behind it."),
            "{v:#?}"
        );
    }

    #[test]
    fn one_flagged_row_is_said_once_and_the_others_compare() {
        // pool's calibrations differ by 13%, every other row's by 2%: throughput is still
        // compared over the others (spawn falls behind blocking), pool by /health alone.
        let v = read(vec![
            Plant::new("inline", 100.0, 3000.0).limits(100.0, 102.0),
            Plant::new("spawn", 70.0, 30.0).limits(102.0, 100.0),
            Plant::new("blocking", 100.0, 20.0).limits(100.0, 101.0),
            Plant::new("pool", 60.0, 1.0).limits(101.0, 114.13),
        ]);
        // The doubt first, without naming the row: its own line says why.
        assert_eq!(
            v[0],
            "The machine held still but for 1 of 4 rows (calibrations 100-114 req/s): the other rates compare. Use pool for this work on this machine: of the in-process strategies not behind the fastest comparable one (blocking, 100/s), it kept light requests fastest (/health p99 1.00 ms)."
        );
        assert!(
            line(&v, "pool (recommended): 60/s, /health p99 1.00 ms").contains(
                "Its rate is not comparable: the calibrations before and after it differ by 13%, more than 10% (101 vs 114 req/s)."
            ),
            "{v:#?}"
        );
        assert!(
            line(&v, "spawn: ").contains("Behind: 70% of blocking's 100/s"),
            "{v:#?}"
        );
    }

    #[test]
    fn noise_comes_first_and_a_flagged_faster_row_is_never_outranked() {
        // The report that asked for this: pool did 109/s but its calibrations moved; inline's
        // 47/s is the fastest comparable rate, and must not read as faster than pool's.
        let v = read(vec![
            Plant::new("inline", 47.0, 2500.0).limits(50.0, 52.0),
            Plant::new("spawn", 40.0, 30.0).limits(52.0, 33.0),
            Plant::new("blocking", 100.0, 20.0).limits(33.0, 154.0),
            Plant::new("pool", 109.0, 0.3).limits(154.0, 90.0),
            Plant::new("auto", 85.0, 0.4).limits(90.0, 88.0),
        ]);
        assert!(
            v[0].starts_with(
                "The machine did not hold still (calibrations 33-154 req/s; 3 of 5 rows in doubt): read the rates as rough. Use pool for this work on this machine:"
            ),
            "{v:#?}"
        );
        for l in &v {
            assert!(!l.contains("slower") && !l.contains("faster"), "{l}");
        }
        assert!(
            line(&v, "inline: ").contains("The fastest comparable in-process strategy."),
            "{v:#?}"
        );
        // auto's rate compares (its calibrations agreed), but it is not in-process: no
        // in-process ranking names it.
        assert!(
            !line(&v, "auto: ").contains("Behind") && !line(&v, "auto: ").contains("fastest"),
            "{v:#?}"
        );
    }

    #[test]
    fn every_in_process_row_flagged_chooses_by_health_alone() {
        let v = read(vec![
            Plant::new("blocking", 120.0, 20.0).limits(100.0, 130.0),
            Plant::new("pool", 95.0, 1.0).limits(130.0, 100.0),
        ]);
        assert_eq!(
            v[0],
            "The machine did not hold still (calibrations 100-130 req/s; 2 of 2 rows in doubt): read the rates as rough. Use pool for this work on this machine: it kept light requests fastest (/health p99 1.00 ms) of the in-process strategies; with no in-process rate comparable, /health alone decided."
        );
    }

    #[test]
    fn auto_has_its_line_from_its_own_figures() {
        let mut split = answers(600, 200, 300.0);
        split.extend(answers(400, 202, 1.0));
        let v = read(vec![
            Plant::new("pool", 100.0, 1.0),
            Plant::new("queue", 80.0, 0.5).queue(5000.0, 1000, 2000.0),
            Plant::new("auto", 100.0, 0.8)
                .heavy(crate::load::Planted {
                    answers: split,
                    ..crate::load::Planted::default()
                })
                .queue(4000.0, 300, 900.0)
                .jobs_in_window(400),
        ]);
        assert_eq!(
            line(&v, "auto: "),
            "auto: 600 answered at once from its pool (200) and 400 jobs finished by its worker in the load window, 100/s (67% of the all-core limit) in all; 400 requests queued (202) (900 ms from enqueue to done at p50); /health p99 0.80 ms, 2 processes, 20 MiB and 10 threads together. When clients differ in how long they can wait: what is predicted to finish within the wait answers from the pool, the rest is queued (202)."
        );
    }

    #[test]
    fn remote_queue_and_failed_rows_are_read_from_their_figures() {
        let failing = crate::load::Planted {
            answers: answers(990, 200, 500.0),
            timeouts: 5,
            ..crate::load::Planted::default()
        };
        let v = read(vec![
            Plant::new("blocking", 100.0, 20.0).heavy(failing),
            Plant::new("pool", 100.0, 1.0),
            Plant::new("remote", 90.0, 2.0),
            Plant::new("queue", 80.0, 0.5).queue(5000.0, 1000, 2000.0),
        ]);
        assert!(
            line(&v, "blocking: ").contains(
                "Requests failed (0 errors, 5 timeouts, 0 non-2xx): left out of the choice."
            ),
            "{v:#?}"
        );
        assert!(
            line(&v, "remote: ").starts_with(
                "remote: 90/s (60% of the all-core limit), 0.90x pool's, /health p99 2.00 ms, 2 processes, 20 MiB and 10 threads together."
            ),
            "{v:#?}"
        );
        assert!(
            line(&v, "queue: ").starts_with(
                "queue: accepted 5000/s while its backlog had room and finished 80/s (53% of the all-core limit); 1000 jobs waiting when the load stopped, 2.00 s from enqueue to done at p50; /health p99 0.50 ms"
            ),
            "{v:#?}"
        );
    }
}
