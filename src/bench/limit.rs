//! What %limit means and when not to trust it. The limit is the all-core throughput of the
//! work alone, measured before the first strategy and after each one; a strategy's limit is
//! the mean of the two calibrations around it. A strategy is flagged, and no conclusion is
//! drawn from its %limit, when those two disagree or when it beats its limit.

use serde::Serialize;

use super::machine::{AllCore, SingleThread};

/// Before/after calibrations may differ by this ratio (max/min) before a strategy's limit is
/// called unreliable: back-to-back calibrations of a quiet machine agree within a few
/// percent, so 10% means the machine changed while the strategy ran.
pub const DISAGREE_RATIO: f64 = 1.10;
/// Above this fraction of its limit a strategy is flagged: every strategy runs the same work
/// plus HTTP on top, so it cannot beat the work alone by more than noise; when it seems to,
/// the limit is wrong or the machine changed.
pub const OVER_LIMIT: f64 = 1.05;
/// The all-core limit against cores / single-thread time, beyond which the overall run gets
/// a note (either way, so a ratio of 1/1.25 or 1.25): informative, not an error.
pub const SINGLE_THREAD_RATIO: f64 = 1.25;
/// At or above this fraction of a (trusted) limit a strategy is "within 10%".
const NEAR: f64 = 0.9;
/// Below this fraction of a (trusted) limit a strategy is "well short".
const SHORT: f64 = 0.75;

/// Why one strategy's %limit is not to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitFlag {
    /// The calibrations before and after it differ by more than [`DISAGREE_RATIO`].
    CalibrationDisagrees,
    /// It completed more than [`OVER_LIMIT`] of its limit.
    OverLimit,
}

/// Why the run as a whole deserves a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunFlag {
    /// cores / single-thread time and the all-core limit differ by more than
    /// [`SINGLE_THREAD_RATIO`]: cores slow each other down (or one idle core was slow).
    SingleThreadDisagrees,
}

/// Every calibration of a run, and what they add up to.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub cores: usize,
    pub single_thread: SingleThread,
    /// cores / single-thread time: what the machine would do if every core ran as fast as
    /// one idle core. Shown beside the limit, never used as it.
    pub single_thread_limit_per_s: f64,
    /// Before the first strategy, then after each one (N strategies: N+1 calibrations).
    pub all_core: Vec<AllCore>,
    /// The median of the all-core calibrations' limits: the run's headline figure. Each
    /// strategy's %limit uses its own bracketing calibrations instead.
    pub limit_per_s: f64,
    /// The lowest and highest single reading over all calibrations.
    pub min_reading_per_s: f64,
    pub max_reading_per_s: f64,
    /// limit_per_s / single_thread_limit_per_s: how fast each core runs with all busy,
    /// against one idle core.
    pub all_core_over_single_thread: f64,
    pub flags: Vec<RunFlag>,
}

impl Calibration {
    pub fn new(cores: usize, single_thread: SingleThread, all_core: Vec<AllCore>) -> Calibration {
        let single_thread_limit_per_s = cores as f64 / (single_thread.median_ms / 1e3).max(1e-12);
        let limits: Vec<f64> = all_core.iter().map(|c| c.limit_per_s).collect();
        let limit_per_s = super::machine::median(&limits);
        let readings = all_core
            .iter()
            .flat_map(|c| c.readings_per_s.iter().copied());
        let (min, max) = readings.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        let ratio = limit_per_s / single_thread_limit_per_s.max(1e-12);
        let mut flags = Vec::new();
        if !(1.0 / SINGLE_THREAD_RATIO..=SINGLE_THREAD_RATIO).contains(&ratio) {
            flags.push(RunFlag::SingleThreadDisagrees);
        }
        Calibration {
            cores,
            single_thread,
            single_thread_limit_per_s,
            all_core,
            limit_per_s,
            min_reading_per_s: if min.is_finite() { min } else { 0.0 },
            max_reading_per_s: max,
            all_core_over_single_thread: ratio,
            flags,
        }
    }

    /// The table's first words: both figures, side by side.
    pub fn headline(&self, work: &str) -> String {
        format!(
            "work {work}: {:.2} ms on one idle thread; all-core limit {:.0} req/s on {} cores (median of {} calibration{}, readings {:.0}-{:.0})",
            self.single_thread.median_ms,
            self.limit_per_s,
            self.cores,
            self.all_core.len(),
            if self.all_core.len() == 1 { "" } else { "s" },
            self.min_reading_per_s,
            self.max_reading_per_s
        )
    }

    /// A sentence when one idle core's speed misleads about the whole machine.
    pub fn note(&self) -> Option<String> {
        self.flags.contains(&RunFlag::SingleThreadDisagrees).then(|| {
            format!(
                "All cores at once ran the work at {:.2}x one idle core's speed each: {} cores x {:.2} ms on one idle thread would say {:.0} req/s, the all-core limit is {:.0} req/s{}. %limit uses the all-core figure.",
                self.all_core_over_single_thread,
                self.cores,
                self.single_thread.median_ms,
                self.single_thread_limit_per_s,
                self.limit_per_s,
                // Faster than one idle core is not physics: the one-thread runs were slowed.
                if self.all_core_over_single_thread > 1.0 {
                    " (above 1x: the one-thread runs were slowed, likely by something else running then)"
                } else {
                    ""
                }
            )
        })
    }
}

/// The two calibrations around one strategy.
#[derive(Debug, Clone, Serialize)]
pub struct Bracket {
    pub before: AllCore,
    pub after: AllCore,
    /// The mean of the two limits: the strategy ran between them, so neither alone is its
    /// machine; when they differ by much the strategy is flagged instead.
    pub limit_per_s: f64,
    /// max / min of the two limits (1 when they agree).
    pub disagreement: f64,
}

impl Bracket {
    pub fn new(before: AllCore, after: AllCore) -> Bracket {
        let (a, b) = (before.limit_per_s, after.limit_per_s);
        Bracket {
            limit_per_s: (a + b) / 2.0,
            disagreement: a.max(b) / a.min(b).max(1e-12),
            before,
            after,
        }
    }

    /// completed / this limit.
    pub fn fraction(&self, completed_per_s: f64) -> f64 {
        completed_per_s / self.limit_per_s.max(1e-12)
    }

    /// What makes a strategy's %limit untrustworthy, for its `fraction`.
    pub fn flags(&self, fraction: f64) -> Vec<LimitFlag> {
        let mut flags = Vec::new();
        if self.disagreement > DISAGREE_RATIO {
            flags.push(LimitFlag::CalibrationDisagrees);
        }
        if fraction > OVER_LIMIT {
            flags.push(LimitFlag::OverLimit);
        }
        flags
    }
}

/// One strategy's figures, as the reading needs them.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub strategy: &'a str,
    pub fraction: f64,
    pub bracket: &'a Bracket,
    pub flags: &'a [LimitFlag],
}

/// The sentences about the limit: a plain warning per flagged strategy, then "within 10%"
/// and "well short" over the strategies whose %limit can be trusted.
pub fn reading(rows: &[Row<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        if r.flags.contains(&LimitFlag::CalibrationDisagrees) {
            out.push(format!(
                "{}: calibrations before and after differ by {:.0}% ({:.0} vs {:.0} req/s); its %limit is not reliable.",
                r.strategy,
                (r.bracket.disagreement - 1.0) * 100.0,
                r.bracket.before.limit_per_s,
                r.bracket.after.limit_per_s
            ));
        }
        if r.flags.contains(&LimitFlag::OverLimit) {
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
pub fn cell(fraction: f64, flags: &[LimitFlag]) -> String {
    format!(
        "{:.0}%{}",
        fraction * 100.0,
        if flags.is_empty() { " " } else { "!" }
    )
}

/// The line under the table explaining the `!` marker, when any row has it.
pub const MARKER_NOTE: &str = "! %limit not reliable: the all-core calibrations before and after that strategy differ by more than 10%, or it measured over 105% of its limit (see below).";

#[cfg(test)]
mod tests {
    use super::*;

    fn all_core(per_s: f64) -> AllCore {
        AllCore {
            threads: 2,
            window_s: 1.0,
            readings_per_s: vec![per_s; 3],
            readings_runs: vec![per_s as u64; 3],
            limit_per_s: per_s,
        }
    }

    fn row<'a>(name: &'a str, b: &'a Bracket, frac: f64, flags: &'a [LimitFlag]) -> Row<'a> {
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
        assert_eq!(flags, vec![LimitFlag::CalibrationDisagrees]);
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
        assert_eq!(flags, vec![LimitFlag::OverLimit]);
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
        let note = c.note().unwrap();
        assert!(
            note.starts_with("All cores at once ran the work at 0.56x"),
            "{note}"
        );
        assert!(!note.contains("above 1x"), "{note}");
        let slow_single = Calibration::new(2, single.clone(), vec![all_core(600.0)]);
        assert!(slow_single.note().unwrap().contains("above 1x"));
        let quiet = Calibration::new(2, single, vec![all_core(390.0)]);
        assert!(quiet.flags.is_empty() && quiet.note().is_none());
        assert_eq!(
            quiet.headline("count:1"),
            "work count:1: 5.00 ms on one idle thread; all-core limit 390 req/s on 2 cores (median of 1 calibration, readings 390-390)"
        );
    }
}
