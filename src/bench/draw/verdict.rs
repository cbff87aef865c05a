//! What a person reads first: the verdict (which strategy to use on this machine for this
//! work, and why, read from the run's own figures) and the results as an HTML table that fits
//! the page.

use super::units::{mib, ms_words as ms};

use super::limit::names;
use super::rules::{KEEPS_UP, stalls};
use crate::bench::model::{LimitWarning, Results, StrategyRun};
use crate::strategy::Name;

fn health_p99(run: &StrategyRun) -> f64 {
    run.measured.bystander.latency_with_timeouts.p99
}

/// No errors, timeouts or (but for the queue, whose 503s are its cap) non-2xx answers.
/// Unfinished requests do not count against a run: a closed loop always has its last
/// request per connection in flight when the window closes.
fn clean(run: &StrategyRun) -> bool {
    let q = &run.measured.heavy.requests;
    q.errors + q.timeouts == 0 && (run.measured.queue.is_some() || q.non_2xx == 0)
}

/// How fast a strategy went, with its %limit only where the limit held still.
fn pace(run: &StrategyRun) -> String {
    if run.limit_warnings.is_empty() {
        format!(
            "{:.0}/s, {:.0}% of the all-core limit",
            run.measured.completed_per_s,
            run.limit_fraction * 100.0
        )
    } else {
        format!(
            "{:.0}/s (its %limit is not reliable)",
            run.measured.completed_per_s
        )
    }
}

/// Why a row's throughput is not compared, in figures.
fn why_flagged(run: &StrategyRun) -> String {
    let mut why = Vec::new();
    if run
        .limit_warnings
        .contains(&LimitWarning::CalibrationDisagrees)
    {
        why.push(format!(
            "the calibrations before and after it differ by {:.0}% ({:.0} vs {:.0} req/s)",
            (run.limit.disagreement - 1.0) * 100.0,
            run.limit.before.limit_per_s,
            run.limit.after.limit_per_s
        ));
    }
    if run.limit_warnings.contains(&LimitWarning::OverLimit) {
        why.push(format!(
            "it measured {:.0}% of its limit",
            run.limit_fraction * 100.0
        ));
    }
    why.join(", and ")
}

/// The verdict, a sentence per line, each read from the run's figures. The rules (also in
/// the README, "How the verdict is read"):
/// 1. Candidates are the in-process strategies without errors, timeouts or non-2xx answers;
///    the others are named as left out.
/// 2. Of the candidates whose %limit has no `!`, the fastest sets the bar; those at
///    [`KEEPS_UP`](super::rules::KEEPS_UP) of it or more keep up. A candidate with a `!` is left out of that
///    comparison (a sentence says why, in figures) and judged by `/health` alone.
/// 3. Of those that kept up and those not compared, the lowest `/health` p99 is the choice.
/// 4. `remote` and `queue` are put beside it in figures; a throughput ratio only where
///    neither row has a `!`.
/// 5. A strategy whose `/health` p99 is over [`STALL_MS`](super::rules::STALL_MS) and [`STALL_RATIO`](super::rules::STALL_RATIO) times the best
///    stalls light requests.
/// 6. The machine is said not to have held still only when more than half of the rows have
///    a `!`; fewer are named as exceptions, the rest's throughput standing.
pub fn verdict(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let in_process: Vec<&StrategyRun> = r
        .runs
        .iter()
        .filter(|x| x.measured.strategy.offload().is_some_and(Name::in_process))
        .collect();
    let (candidates, unclean): (Vec<&StrategyRun>, Vec<&StrategyRun>) =
        in_process.iter().partition(|x| clean(x));
    let (compared, uncompared): (Vec<&StrategyRun>, Vec<&StrategyRun>) =
        candidates.iter().partition(|x| x.limit_warnings.is_empty());
    let fastest = compared.iter().copied().max_by(|a, b| {
        a.measured
            .completed_per_s
            .total_cmp(&b.measured.completed_per_s)
    });
    let bar = fastest.map_or(0.0, |f| KEEPS_UP * f.measured.completed_per_s);
    let (kept_up, fell_short): (Vec<&StrategyRun>, Vec<&StrategyRun>) = compared
        .iter()
        .partition(|x| x.measured.completed_per_s >= bar);
    let choice = kept_up
        .iter()
        .chain(&uncompared)
        .copied()
        .min_by(|a, b| health_p99(a).total_cmp(&health_p99(b)));
    let best_health = r.runs.iter().map(health_p99).fold(f64::INFINITY, f64::min);
    if let Some(c) = choice {
        let basis = match fastest {
            None => "Chosen by /health alone: no in-process strategy's throughput could be compared (each has a !).".to_owned(),
            Some(f) => format!(
                "Of the in-process strategies that kept up (at least {:.0}% of the fastest, {}'s {:.0}/s){}, it kept light requests fastest{}.",
                KEEPS_UP * 100.0,
                f.measured.strategy,
                f.measured.completed_per_s,
                if uncompared.is_empty() { "" } else { " and those whose throughput is not compared" },
                if c.limit_warnings.is_empty() { "" } else { "; its own throughput is not compared" },
            ),
        };
        out.push(format!(
            "{}: {} with /health p99 {}, {} threads and {:.0} MiB at peak. {basis}",
            c.measured.strategy,
            pace(c),
            ms(health_p99(c)),
            c.measured.peak_threads,
            mib(c.measured.peak_rss_bytes),
        ));
        if fastest.is_some() {
            for x in &uncompared {
                out.push(format!(
                    "{}'s throughput ({:.0}/s) is left out of the comparison, and it was judged by /health alone: {}.",
                    x.measured.strategy,
                    x.measured.completed_per_s,
                    why_flagged(x)
                ));
            }
        }
        if !fell_short.is_empty() {
            let short: Vec<String> = fell_short
                .iter()
                .map(|x| {
                    format!(
                        "{} ({:.0}/s, {:.0}%)",
                        x.measured.strategy,
                        x.measured.completed_per_s,
                        x.measured.completed_per_s
                            / fastest.map_or(1.0, |f| f.measured.completed_per_s.max(1e-9))
                            * 100.0
                    )
                })
                .collect();
            out.push(format!(
                "Below {:.0}% of the fastest: {}.",
                KEEPS_UP * 100.0,
                short.join(", ")
            ));
        }
    }
    if !unclean.is_empty() {
        let left: Vec<String> = unclean
            .iter()
            .map(|x| {
                let [e, t, n, _] = super::text::outcomes(x);
                format!(
                    "{} ({e} errors, {t} timeouts, {n} non-2xx)",
                    x.measured.strategy
                )
            })
            .collect();
        out.push(format!(
            "Not considered, for requests that failed: {}.",
            left.join(", ")
        ));
    }
    let forwards = |x: &&StrategyRun| {
        x.measured.strategy.offload().and_then(Name::helper)
            == Some(crate::strategy::Helper::Compute)
    };
    if let Some(remote) = r.runs.iter().filter(forwards).find(|x| clean(x)) {
        let versus = choice.map_or(String::new(), |c| {
            let flagged: Vec<&StrategyRun> = [remote, c]
                .into_iter()
                .filter(|x| !x.limit_warnings.is_empty())
                .collect();
            if !flagged.is_empty() {
                return format!(
                    " (throughput not compared with {}'s: {} has a !)",
                    c.measured.strategy,
                    names(&flagged)
                );
            }
            // A p50 of 0: no request both began and ended inside the window.
            let p50 =
                if remote.measured.heavy.latency.p50 > 0.0 && c.measured.heavy.latency.p50 > 0.0 {
                    format!(
                        ", p50 {} against {}",
                        ms(remote.measured.heavy.latency.p50),
                        ms(c.measured.heavy.latency.p50)
                    )
                } else {
                    String::new()
                };
            format!(
                " ({:.2}x {}'s{p50})",
                remote.measured.completed_per_s / c.measured.completed_per_s.max(1e-9),
                c.measured.strategy,
            )
        });
        let roles: Vec<&str> = remote
            .measured
            .processes
            .iter()
            .map(|p| p.role.as_str())
            .collect();
        out.push(format!(
            "{}: {}{versus}, /health p99 {}; its {} processes ({}) took {:.0} MiB and {} threads together.",
            remote.measured.strategy,
            pace(remote),
            ms(health_p99(remote)),
            roles.len(),
            roles.join(", "),
            mib(remote.measured.peak_rss_bytes),
            remote.measured.peak_threads
        ));
    }
    if let Some((run, q)) = r
        .runs
        .iter()
        .find_map(|x| x.measured.queue.as_ref().map(|q| (x, q)))
    {
        let wait = q.enqueue_to_done_ms.as_ref().map_or(String::new(), |d| {
            format!(
                "; under this load a job waited {} from enqueue to done at p50",
                ms(d.p50)
            )
        });
        out.push(format!(
            "{}: it accepted {:.0}/s while its backlog had room and finished {}; {} jobs were waiting when the load stopped{wait}.",
            run.measured.strategy,
            q.accept_phase.accepted_per_s,
            pace(run),
            q.backlog_at_stop
        ));
    }
    for run in &r.runs {
        let p99 = health_p99(run);
        if stalls(p99, best_health) {
            out.push(format!(
                "Not {}: light requests waited {} at p99 beside its work, against {} for the best.",
                run.measured.strategy,
                ms(p99),
                ms(best_health)
            ));
        }
    }
    out.extend(super::limit::stillness(r));
    out
}

#[cfg(test)]
mod tests {
    use super::super::rules::STALL_MS;
    use super::*;
    use crate::bench::planted::{Plant, results};

    /// The verdict of `plants`, each of its sentences checked to carry a figure.
    fn read(plants: Vec<Plant>) -> Vec<String> {
        let v = verdict(&results(plants));
        for line in &v {
            assert!(
                line.bytes().any(|b| b.is_ascii_digit()),
                "a sentence without a figure: {line}"
            );
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
        let choice = &v[0];
        assert!(
            choice.starts_with("pool: 96/s, 64% of the all-core limit with /health p99 1.00 ms"),
            "{v:#?}"
        );
        assert!(
            choice.contains(
                "at least 80% of the fastest, blocking's 120/s), it kept light requests fastest."
            ),
            "{v:#?}"
        );
        assert_eq!(
            line(&v, "Below 80%"),
            "Below 80% of the fastest: spawn (95/s, 79%)."
        );
        // Nothing flagged: nothing said of the machine.
        assert!(!v.iter().any(|l| l.contains("a !")), "{v:#?}");
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
        assert_eq!(
            line(&v, "Not "),
            "Not inline: light requests waited 3.00 s at p99 beside its work, against 1.00 ms for the best."
        );
        assert_eq!(
            v.iter().filter(|l| l.starts_with("Not ")).count(),
            1,
            "{v:#?}"
        );
    }

    #[test]
    fn one_flagged_row_is_left_out_of_throughput_and_the_machine_is_not_blamed() {
        // pool's calibrations differ by 13%, every other row's by 2%: throughput is still
        // compared over the others (spawn falls short of blocking), pool by /health alone.
        let v = read(vec![
            Plant::new("inline", 100.0, 3000.0).limits(100.0, 102.0),
            Plant::new("spawn", 70.0, 30.0).limits(102.0, 100.0),
            Plant::new("blocking", 100.0, 20.0).limits(100.0, 101.0),
            Plant::new("pool", 60.0, 1.0).limits(101.0, 114.13),
        ]);
        assert!(
            v[0].starts_with("pool: 60/s (its %limit is not reliable) with /health p99 1.00 ms"),
            "{v:#?}"
        );
        assert!(
            v[0].contains("blocking's 100/s) and those whose throughput is not compared, it kept light requests fastest; its own throughput is not compared."),
            "{v:#?}"
        );
        assert_eq!(
            line(&v, "pool's throughput"),
            "pool's throughput (60/s) is left out of the comparison, and it was judged by /health alone: the calibrations before and after it differ by 13% (101 vs 114 req/s)."
        );
        assert_eq!(
            line(&v, "Below"),
            "Below 80% of the fastest: spawn (70/s, 70%)."
        );
        assert_eq!(
            line(&v, "1 of 4"),
            "1 of 4 rows has a ! (pool); the calibrations around the other 3 agreed within 10%, and their throughput stands."
        );
        assert!(
            !v.iter()
                .any(|l| l.contains("did not hold still") || l.contains("changed")),
            "{v:#?}"
        );
    }

    #[test]
    fn most_rows_flagged_say_the_machine_did_not_hold_still() {
        let v = read(vec![
            Plant::new("spawn", 90.0, 30.0).limits(100.0, 130.0),
            Plant::new("blocking", 120.0, 20.0).limits(130.0, 100.0),
            Plant::new("pool", 95.0, 1.0).limits(100.0, 101.0),
            Plant::new("remote", 200.0, 2.0).limits(101.0, 100.0),
        ]);
        assert_eq!(
            line(&v, "The machine"),
            "The machine's speed did not hold still during this run: 3 of 4 rows have a ! (calibrations before and after differ by more than 10% around spawn, blocking; over 105% of the limit: remote), and its all-core calibrations ranged 100-130 req/s. Compare throughput only where no ! stands; the /health figures, threads and memory hold regardless."
        );
        // pool is the only in-process row compared: it sets the bar and is chosen.
        assert!(
            v[0].starts_with("pool: 95/s, 95% of the all-core limit"),
            "{v:#?}"
        );
        assert!(
            line(&v, "remote:").contains("(throughput not compared with pool's: remote has a !)"),
            "{v:#?}"
        );
    }

    #[test]
    fn every_in_process_row_flagged_chooses_by_health_alone() {
        let v = read(vec![
            Plant::new("blocking", 120.0, 20.0).limits(100.0, 130.0),
            Plant::new("pool", 95.0, 1.0).limits(130.0, 100.0),
        ]);
        assert!(
            v[0].starts_with("pool: ") && v[0].ends_with("Chosen by /health alone: no in-process strategy's throughput could be compared (each has a !)."),
            "{v:#?}"
        );
        assert!(
            line(&v, "The machine").contains("2 of 2 rows have a !"),
            "{v:#?}"
        );
    }

    #[test]
    fn remote_queue_and_failed_rows_are_read_from_their_figures() {
        let failing = crate::load::Planted {
            answers: crate::bench::planted::answers(990, 200, 500.0),
            timeouts: 5,
            ..crate::load::Planted::default()
        };
        let v = read(vec![
            Plant::new("blocking", 100.0, 20.0).heavy(failing),
            Plant::new("pool", 100.0, 1.0),
            Plant::new("remote", 90.0, 2.0),
            Plant::new("queue", 80.0, 0.5).queue(5000.0, 1000, 2000.0),
        ]);
        assert_eq!(
            line(&v, "Not considered"),
            "Not considered, for requests that failed: blocking (0 errors, 5 timeouts, 0 non-2xx)."
        );
        assert_eq!(
            line(&v, "remote:"),
            "remote: 90/s, 60% of the all-core limit (0.90x pool's, p50 500 ms against 500 ms), /health p99 2.00 ms; its 2 processes (compute, gateway) took 20 MiB and 10 threads together."
        );
        assert_eq!(
            line(&v, "queue:"),
            "queue: it accepted 5000/s while its backlog had room and finished 80/s, 53% of the all-core limit; 1000 jobs were waiting when the load stopped; under this load a job waited 2.00 s from enqueue to done at p50."
        );
    }
}
