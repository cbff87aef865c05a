//! How %limit is shown and read: the table's headline and cell, and the sentences about the
//! limit (a warning per unreliable row, then "within 10%" and "well short" over the others).

use crate::bench::model::{Bracket, Calibration, LimitWarning, Results, RunFlag, StrategyRun};

/// At or above this fraction of a (trusted) limit a strategy is "within 10%".
const NEAR: f64 = 0.9;
/// Below this fraction of a (trusted) limit a strategy is "well short".
const SHORT: f64 = 0.75;

/// The lowest and highest all-core calibration of the run, each the median of its readings:
/// the one range the table's headline, the verdict and the throughput chart give (a
/// strategy's limit is the mean of two of these, so this is the range its limit moved in).
pub fn calibration_range(c: &Calibration) -> (f64, f64) {
    let limits = c.all_core.iter().map(|x| x.limit_per_s);
    let lo = limits.clone().fold(f64::INFINITY, f64::min);
    let hi = limits.fold(0.0, f64::max);
    (if lo.is_finite() { lo } else { 0.0 }, hi)
}

/// The table's first words: both figures, side by side, and the calibrations' range beside
/// the range of their single readings (wider: a reading is one second of one calibration), so
/// neither is mistaken for the other.
pub fn headline(c: &Calibration, work: &str) -> String {
    let (lo, hi) = calibration_range(c);
    let n = c.all_core.len();
    format!(
        "work {work}: {:.2} ms on one idle thread; all-core limit {:.0} req/s on {} cores (median of {n} calibration{}, {lo:.0}-{hi:.0} req/s; single readings {:.0}-{:.0})",
        c.single_thread.median_ms,
        c.limit_per_s,
        c.cores,
        if n == 1 { "" } else { "s" },
        c.min_reading_per_s,
        c.max_reading_per_s
    )
}

/// A sentence when one idle core's speed misleads about the whole machine.
pub fn note(c: &Calibration) -> Option<String> {
    c.flags.contains(&RunFlag::SingleThreadDisagrees).then(|| {
        format!(
            "All cores at once ran the work at {:.2}x one idle core's speed each: {} cores x {:.2} ms on one idle thread would say {:.0} req/s, the all-core limit is {:.0} req/s{}. %limit uses the all-core figure.",
            c.all_core_over_single_thread,
            c.cores,
            c.single_thread.median_ms,
            c.single_thread_limit_per_s,
            c.limit_per_s,
            // Faster than one idle core is not physics: the one-thread runs were slowed.
            if c.all_core_over_single_thread > 1.0 {
                " (above 1x: the one-thread runs were slowed, likely by something else running then)"
            } else {
                ""
            }
        )
    })
}

/// One strategy's figures, as the reading needs them.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub strategy: &'a str,
    pub fraction: f64,
    pub bracket: &'a Bracket,
    pub flags: &'a [LimitWarning],
}

/// A run's figures for the reading of the limit.
pub fn row(run: &StrategyRun) -> Row<'_> {
    Row {
        strategy: run.measured.strategy.as_str(),
        fraction: run.limit_fraction,
        bracket: &run.limit,
        flags: &run.limit_warnings,
    }
}

/// The sentences about the limit: a plain warning per flagged strategy, then "within 10%"
/// and "well short" over the strategies whose %limit can be trusted.
pub fn reading(rows: &[Row<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        if r.flags.contains(&LimitWarning::CalibrationDisagrees) {
            out.push(format!(
                "{}: calibrations before and after differ by {:.0}% ({:.0} vs {:.0} req/s); its %limit is not reliable.",
                r.strategy,
                (r.bracket.disagreement - 1.0) * 100.0,
                r.bracket.before.limit_per_s,
                r.bracket.after.limit_per_s
            ));
        }
        if r.flags.contains(&LimitWarning::OverLimit) {
            out.push(format!(
                "{} measured {:.0}% of the all-core limit ({:.0} req/s): the limit is wrong or the machine changed; no conclusion drawn.",
                r.strategy,
                r.fraction * 100.0,
                r.bracket.limit_per_s
            ));
        }
    }
    let trusted: Vec<&Row<'_>> = rows.iter().filter(|r| r.flags.is_empty()).collect();
    let near: Vec<String> = trusted
        .iter()
        .filter(|r| r.fraction >= NEAR)
        .map(|r| format!("{} ({:.0}%)", r.strategy, r.fraction * 100.0))
        .collect();
    let short: Vec<String> = trusted
        .iter()
        .filter(|r| r.fraction < SHORT)
        .map(|r| format!("{} ({:.0}%)", r.strategy, r.fraction * 100.0))
        .collect();
    if !near.is_empty() {
        out.push(format!(
            "Within 10% of the physical limit (all-core, measured around each): {}.",
            near.join(", ")
        ));
    }
    if !short.is_empty() {
        out.push(format!("Well short of the limit: {}.", short.join(", ")));
    }
    out
}

/// The %limit cell of the table: the figure, with `!` when it is not to be trusted.
pub fn cell(fraction: f64, flags: &[LimitWarning]) -> String {
    format!(
        "{:.0}%{}",
        fraction * 100.0,
        if flags.is_empty() { " " } else { "!" }
    )
}

/// The line under the table explaining the `!` marker, when any row has it.
pub const MARKER_NOTE: &str = "! %limit not reliable: the all-core calibrations before and after that strategy differ by more than 10%, or it measured over 105% of its limit (see below).";

/// How far the run's rates can be trusted, in one sentence, from the `!`s: the machine held
/// still when no row has one; when more than half do, the run as a whole is in doubt; a few are
/// exceptions, the rest standing. The rows are not named: each flagged row's own line says why.
pub fn stillness(r: &Results) -> String {
    let k = r
        .runs
        .iter()
        .filter(|x| !x.limit_warnings.is_empty())
        .count();
    let n = r.runs.len();
    let (lo, hi) = calibration_range(&r.calibration);
    let range = format!("calibrations {lo:.0}-{hi:.0} req/s");
    if k == 0 {
        format!("The machine held still ({range}), so the rates compare.")
    } else if 2 * k > n {
        format!(
            "The machine did not hold still ({range}; {k} of {n} rows in doubt): read the rates as rough."
        )
    } else {
        format!(
            "The machine held still but for {k} of {n} rows ({range}): the other rates compare."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::model::{AllCore, SingleThread};

    fn all_core(per_s: f64) -> AllCore {
        AllCore {
            threads: 2,
            window_s: 1.0,
            readings_per_s: vec![per_s; 3],
            readings_runs: vec![per_s as u64; 3],
            limit_per_s: per_s,
        }
    }

    fn row<'a>(name: &'a str, b: &'a Bracket, frac: f64, flags: &'a [LimitWarning]) -> Row<'a> {
        Row {
            strategy: name,
            fraction: frac,
            bracket: b,
            flags,
        }
    }

    #[test]
    fn disagreeing_calibrations_are_flagged_and_not_concluded_on() {
        let b = Bracket::new(all_core(400.0), all_core(300.0));
        assert_eq!(b.limit_per_s, 350.0);
        let frac = b.fraction(340.0);
        let flags = b.flags(frac);
        assert_eq!(flags, vec![LimitWarning::CalibrationDisagrees]);
        let lines = reading(&[row("pool", &b, frac, &flags)]);
        assert_eq!(
            lines,
            vec![
                "pool: calibrations before and after differ by 33% (400 vs 300 req/s); its %limit is not reliable."
            ]
        );
        assert_eq!(cell(frac, &flags), "97%!");
    }

    #[test]
    fn over_the_limit_is_flagged_and_not_concluded_on() {
        let b = Bracket::new(all_core(300.0), all_core(310.0));
        let frac = b.fraction(1.10 * 305.0);
        let flags = b.flags(frac);
        assert_eq!(flags, vec![LimitWarning::OverLimit]);
        let lines = reading(&[row("inline", &b, frac, &flags)]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("inline measured 110% of the all-core limit (305 req/s)"),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains("Within 10%")));
    }

    #[test]
    fn agreeing_calibrations_give_the_usual_conclusions() {
        let b = Bracket::new(all_core(300.0), all_core(320.0));
        let (near, short) = (b.fraction(300.0), b.fraction(150.0));
        assert!(b.flags(near).is_empty() && b.flags(short).is_empty());
        let lines = reading(&[row("pool", &b, near, &[]), row("queue", &b, short, &[])]);
        assert_eq!(
            lines,
            vec![
                "Within 10% of the physical limit (all-core, measured around each): pool (97%).",
                "Well short of the limit: queue (48%).",
            ]
        );
        assert_eq!(cell(near, &[]), "97% ");
    }

    #[test]
    fn a_slow_all_core_machine_gets_a_note() {
        let single = SingleThread {
            runs_ms: vec![5.0; 3],
            median_ms: 5.0,
        };
        // 2 cores at 5 ms would do 400/s; all cores at once did 220/s.
        let c = Calibration::new(2, single.clone(), vec![all_core(220.0), all_core(230.0)]);
        assert_eq!(c.single_thread_limit_per_s, 400.0);
        assert_eq!(c.flags, vec![RunFlag::SingleThreadDisagrees]);
        let said = note(&c).unwrap();
        assert!(
            said.starts_with("All cores at once ran the work at 0.56x"),
            "{said}"
        );
        assert!(!said.contains("above 1x"), "{said}");
        let slow_single = Calibration::new(2, single.clone(), vec![all_core(600.0)]);
        assert!(note(&slow_single).unwrap().contains("above 1x"));
        let quiet = Calibration::new(2, single, vec![all_core(390.0)]);
        assert!(quiet.flags.is_empty() && note(&quiet).is_none());
        assert_eq!(
            headline(&quiet, "count:1"),
            "work count:1: 5.00 ms on one idle thread; all-core limit 390 req/s on 2 cores (median of 1 calibration, 390-390 req/s; single readings 390-390)"
        );
    }
}
