//! Admission by deadline: accept a request unless it cannot finish before its deadline,
//! predicted from the work already admitted and the measured time per unit of each kind of
//! work. No HTTP in it: the pool uses it, and so can any other queue of slots (offload's
//! remote strategy uses it for its gateway queue).
//!
//! The model counts *slot time*: how long one unit of work holds one slot (a pool thread, or
//! one request's place at a compute service), measured on the slots themselves while they are
//! as busy as they are. So the prediction needs no idea of core counts or turbo: 16 threads
//! on 2 cores measure eight times the time per unit, and divided by 16 slots give the right
//! wait. A queue length in requests is a guess that is right on one machine only; a wait in
//! seconds is right on any.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Kinds of work the model keeps apart (their time per unit may differ by orders of
/// magnitude). A class is a plain index the caller chooses, below this (say 0 for resizing
/// images, 1 for hashing passwords); a cost of a class at or above it is not modelled (it
/// adds nothing to the backlog). Four, since the model sums every class on each admission.
pub const CLASSES: usize = 4;

/// Weight of a new measurement in the moving average: about the last ten count.
const EWMA_WEIGHT: f64 = 0.1;
/// Weight of a measurement more than twice or less than half the average: the machine's
/// speed has changed (a busy neighbour came or went), and the model should follow within
/// tens of requests, not hundreds, while one stray sample moves it by less than a third.
const EWMA_WEIGHT_SHIFT: f64 = 0.3;

/// A request's size, as the model sees it: its kind and its units of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Index of the kind of work, below [`CLASSES`]: the caller's choice, the same for
    /// every request of that kind.
    pub class: usize,
    /// Units of work, in whatever unit the run time grows with (iterations, bytes, hashes).
    pub units: u64,
}

/// Measured slot time per unit, per class, and the units admitted and not yet finished.
#[derive(Debug, Default)]
pub struct CostModel {
    /// f64 bits of seconds per unit; 0 until the first measurement.
    secs_per_unit: [AtomicU64; CLASSES],
    /// Units admitted and not finished (queued or running).
    outstanding: [AtomicU64; CLASSES],
    /// Whether a class's figure comes from real runs (not only a prior).
    measured: [AtomicBool; CLASSES],
}

impl CostModel {
    /// Records that `units` of `class` held a slot for `took`.
    pub fn observe(&self, class: usize, units: u64, took: Duration) {
        if units == 0 || class >= CLASSES {
            return;
        }
        let sample = took.as_secs_f64() / units as f64;
        let cell = &self.secs_per_unit[class];
        // A lost update between two racing threads costs one sample; no lock is worth that.
        let old = f64::from_bits(cell.load(Relaxed));
        // The first real run replaces a prior outright.
        let new = if old == 0.0 || !self.measured[class].swap(true, Relaxed) {
            sample
        } else {
            let weight = if (0.5..=2.0).contains(&(sample / old)) {
                EWMA_WEIGHT
            } else {
                EWMA_WEIGHT_SHIFT
            };
            old + weight * (sample - old)
        };
        cell.store(new.to_bits(), Relaxed);
    }

    /// A first guess for `class` (a startup calibration), used until the first real run.
    pub fn prior(&self, class: usize, secs_per_unit: f64) {
        if class >= CLASSES || self.measured[class].load(Relaxed) {
            return;
        }
        if !(secs_per_unit.is_finite() && secs_per_unit > 0.0) {
            return;
        }
        let bits = secs_per_unit.to_bits();
        let _ = self.secs_per_unit[class].compare_exchange(0, bits, Relaxed, Relaxed);
    }

    /// Seconds per unit of `class`, once measured.
    pub fn secs_per_unit(&self, class: usize) -> Option<f64> {
        let v = f64::from_bits(self.secs_per_unit.get(class)?.load(Relaxed));
        (v > 0.0).then_some(v)
    }

    /// Predicted slot time of `cost` (zero while its class is unmeasured: a model that knows
    /// nothing admits, and the hard cap still bounds the queue).
    pub fn estimate(&self, cost: Cost) -> Duration {
        let s = self.secs_per_unit(cost.class).unwrap_or(0.0) * cost.units as f64;
        Duration::from_secs_f64(s.min(1e6))
    }

    /// Slot time of everything admitted and not finished.
    pub fn backlog(&self) -> Duration {
        (0..CLASSES)
            .map(|c| {
                self.estimate(Cost {
                    class: c,
                    units: self.outstanding[c].load(Relaxed),
                })
            })
            .sum()
    }

    /// Counts `cost` as admitted until [`CostModel::finish`].
    pub fn admit(&self, cost: Cost) {
        if let Some(o) = self.outstanding.get(cost.class) {
            o.fetch_add(cost.units, Relaxed);
        }
    }

    /// Counts `cost` as finished (done, failed, expired or abandoned).
    pub fn finish(&self, cost: Cost) {
        if let Some(o) = self.outstanding.get(cost.class) {
            let _ = o.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(cost.units)));
        }
    }

    /// Units admitted and not finished, per class.
    pub fn outstanding(&self) -> [u64; CLASSES] {
        std::array::from_fn(|c| self.outstanding[c].load(Relaxed))
    }
}

/// Why a request was refused: it would not finish by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    /// The predicted wait before it could start.
    pub wait: Duration,
    /// When a request like it would fit again, as the backlog drains.
    pub retry_after: Duration,
    /// Its predicted wait plus its own run.
    pub finish: Duration,
}

/// The deadline rule. `wait` is the predicted wait before the request starts, `run` its own
/// predicted run time, `remaining` the time left to its deadline. A request that would start
/// at once is always taken (there is nothing to predict from but itself, and its own deadline
/// still stops it); otherwise it must be predicted to finish within [`ADMIT_SHARE`] of the
/// time left.
///
/// ```
/// use std::time::Duration;
/// use offload_pool::admission::judge;
///
/// let ms = Duration::from_millis;
/// assert!(judge(ms(500), ms(400), ms(1_000)).is_ok());
/// let late = judge(ms(2_000), ms(500), ms(1_000)).unwrap_err();
/// // 2.5 s predicted against 0.9 s of room: the backlog must drain by 1.6 s first.
/// assert_eq!(late.retry_after, ms(1_600));
/// ```
///
/// # Errors
/// [`Late`] with the predicted wait and a retry time when it would not finish in time.
pub fn judge(wait: Duration, run: Duration, remaining: Duration) -> Result<(), Late> {
    let room = remaining.mul_f64(ADMIT_SHARE);
    if wait.is_zero() || wait + run <= room {
        return Ok(());
    }
    // The backlog ahead drains at the rate it is predicted to; once `wait + run - room` of it
    // has gone, a request like this one fits.
    Err(Late {
        wait,
        retry_after: (wait + run).saturating_sub(room),
        finish: wait + run,
    })
}

/// The share of a request's remaining time that its predicted finish may take. Under a closed
/// loop the queue is kept full, so every request admitted is one at the edge, predicted to
/// finish just inside its deadline: with no headroom, the part of the prediction's error that
/// falls late becomes misses (504s, the whole run's CPU spent for nothing; 1-5% of admitted
/// requests in a 2 s deadline on a 2-core VM). A tenth of the time kept back costs a tenth of
/// the queue's depth, not throughput: the threads are as busy with 1.8 s of backlog as with 2.
pub const ADMIT_SHARE: f64 = 0.9;

/// The budget rule of `auto`: the request must be predicted to *finish* within `budget`,
/// waiting included, even when it would start at once (a request that cannot is stored as a
/// job instead, so there is no reason to take it on faith).
///
/// # Errors
/// [`Late`] with the predicted wait when the predicted finish is past the budget.
pub fn fits(wait: Duration, run: Duration, budget: Duration) -> Result<(), Late> {
    if wait + run <= budget {
        return Ok(());
    }
    Err(Late {
        wait,
        retry_after: (wait + run).saturating_sub(budget),
        finish: wait + run,
    })
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1, at most an hour.
pub fn retry_after_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn the_model_learns_time_per_unit_and_sums_the_backlog() {
        let m = CostModel::default();
        let c = Cost {
            class: 0,
            units: 1_000,
        };
        assert_eq!(m.estimate(c), Duration::ZERO, "unmeasured: admit");
        m.prior(0, 5e-6);
        assert_eq!(m.estimate(c), MS(5), "a prior stands in");
        m.observe(0, 1_000, MS(10));
        assert_eq!(m.estimate(c), MS(10));
        m.admit(c);
        m.admit(Cost {
            class: 0,
            units: 3_000,
        });
        m.admit(Cost { class: 1, units: 5 }); // unmeasured class: adds nothing yet
        assert_eq!(m.backlog(), MS(40));
        m.finish(c);
        assert_eq!(m.backlog(), MS(30));
        // The average moves toward new measurements, a tenth at a time...
        m.observe(0, 1_000, MS(20));
        assert!((m.secs_per_unit(0).unwrap() - 11e-6).abs() < 1e-9);
        // ...and faster when one is off by more than twice: 11 + 0.3 * (44 - 11).
        m.observe(0, 1_000, MS(44));
        assert!((m.secs_per_unit(0).unwrap() - 20.9e-6).abs() < 1e-9);
    }

    #[test]
    fn judge_takes_what_fits_and_refuses_the_rest_with_a_retry_time() {
        assert_eq!(judge(Duration::ZERO, MS(50_000), MS(1_000)), Ok(()));
        assert_eq!(judge(MS(500), MS(400), MS(1_000)), Ok(()));
        // A tenth of the remaining time is kept back (ADMIT_SHARE).
        assert!(judge(MS(500), MS(450), MS(1_000)).is_err());
        let late = judge(MS(2_000), MS(500), MS(1_000)).unwrap_err();
        assert_eq!(late.wait, MS(2_000));
        assert_eq!(late.retry_after, MS(1_600));
        assert_eq!(retry_after_secs(late.retry_after), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn fits_counts_the_run_even_when_nothing_waits() {
        assert_eq!(fits(Duration::ZERO, MS(900), MS(1_000)), Ok(()));
        assert!(fits(Duration::ZERO, MS(1_100), MS(1_000)).is_err());
        assert!(fits(MS(600), MS(500), MS(1_000)).is_err());
        assert!(fits(Duration::ZERO, MS(1), Duration::ZERO).is_err());
    }
}
