//! What %limit means and when not to trust it. The limit is the all-core throughput of the
//! work alone, measured before the first strategy and after each one; a strategy's limit is
//! the mean of the two calibrations around it. A strategy is flagged, and no conclusion is
//! drawn from its %limit, when those two disagree or when it beats its limit.

use serde::{Deserialize, Serialize};

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

/// Why one strategy's %limit is not to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitWarning {
    /// The calibrations before and after it differ by more than `DISAGREE_RATIO`.
    CalibrationDisagrees,
    /// It completed more than `OVER_LIMIT` of its limit.
    OverLimit,
}

/// Why the run as a whole deserves a note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunFlag {
    /// cores / single-thread time and the all-core limit differ by more than
    /// `SINGLE_THREAD_RATIO`: cores slow each other down (or one idle core was slow).
    SingleThreadDisagrees,
}

/// Every calibration of a run, and what they add up to.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// The two calibrations around one strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub fn flags(&self, fraction: f64) -> Vec<LimitWarning> {
        let mut flags = Vec::new();
        if self.disagreement > DISAGREE_RATIO {
            flags.push(LimitWarning::CalibrationDisagrees);
        }
        if fraction > OVER_LIMIT {
            flags.push(LimitWarning::OverLimit);
        }
        flags
    }
}
