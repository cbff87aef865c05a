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

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Most kinds of work one model keeps apart. Each admission sums the backlog of every kind
/// named so far, so the bound keeps that sum small; kinds are named once, at start-up, and a
/// service with more than this many should group them.
pub const MAX_CLASSES: usize = 64;

/// Longest name a class may have, in bytes.
pub const MAX_CLASS_NAME: usize = 64;

/// Weight of a new measurement in the moving average: about the last ten count.
const EWMA_WEIGHT: f64 = 0.1;
/// Weight of a measurement more than twice or less than half the average: the machine's
/// speed has changed (a busy neighbour came or went), and the model
/// should follow within tens of requests, not hundreds, while one stray sample moves it by
/// less than a third.
const EWMA_WEIGHT_SHIFT: f64 = 0.3;

/// A kind of work the model keeps apart (its time per unit may differ from another's by
/// orders of magnitude), by its name: made by [`CostModel::class`], so it cannot be made up,
/// and valid in the model that made it only. A class of another model, or [`Class::NONE`],
/// is not modelled: its cost adds nothing to the backlog and its runs teach nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    /// The model that named it (0 for none).
    model: u32,
    index: u32,
}

impl Class {
    /// Work the model does not predict (it adds nothing to the backlog; the hard cap still
    /// bounds it).
    pub const NONE: Class = Class { model: 0, index: 0 };
}

/// Why [`CostModel::class`] named no class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    /// The model already keeps [`MAX_CLASSES`] kinds apart.
    #[error("the cost model already keeps {MAX_CLASSES} classes of work apart; group them")]
    Full,
    /// The name is empty or longer than [`MAX_CLASS_NAME`] bytes.
    #[error("a class name must be 1 to {MAX_CLASS_NAME} bytes long, not {0}")]
    BadName(usize),
}

/// A request's size, as the model sees it: its kind and its units of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// The kind of work ([`CostModel::class`]): the same for every request of that kind.
    pub class: Class,
    /// Units of work, in whatever unit the run time grows with (iterations, bytes, hashes).
    pub units: u64,
}

impl Cost {
    /// `units` of `class`.
    pub fn new(class: Class, units: u64) -> Cost {
        Cost { class, units }
    }
}

/// One named kind of work.
#[derive(Debug, Default)]
struct Slot {
    /// Its name, set once when it is named.
    name: OnceLock<Box<str>>,
    /// f64 bits of seconds per unit; 0 until the first measurement or prior.
    secs_per_unit: AtomicU64,
    /// Units admitted and not finished (queued or running).
    outstanding: AtomicU64,
    /// Real runs measured (saturating): the figure is a prior only while 0.
    runs: AtomicU32,
}

/// Weight of a run's error in the model's spread (see [`CostModel::spread`]): a quarter, as
/// TCP's estimate of its round trip's variation (RFC 6298), so the margin widens within a few
/// erratic runs and narrows over tens of steady ones.
const SPREAD_WEIGHT: f64 = 0.25;
/// Most a run's error counts for in the spread: one stall of a hundred times the usual time
/// must not shut admission for seconds.
const MAX_RUN_ERROR: f64 = 2.0;
/// Spreads of error the margin allows for: the errors of runs in a row go the same way when the
/// work's speed moves for a while, so a predicted wait of many runs strays about as far as one
/// run does, and the margin covers twice the mean error, not the mean alone.
const SPREADS: f64 = 2.0;
/// Most the margin scales a prediction by ([`CostModel::margin`]): however erratic the work,
/// admission keeps at least half the time it would give steady work.
pub const MAX_MARGIN: f64 = 2.0;

/// Real runs of a class that replace its figure outright rather than move it: a service's
/// first request is often a tiny one (a smoke test, a health probe of the work), whose fixed
/// costs make its time per unit thousands of times the real one; averaged in, it would keep
/// every request after it refused for dozens of runs. The second run corrects it at once.
const REPLACING_RUNS: u32 = 2;

/// Which model made a class: each model's classes are its own.
static NEXT_MODEL: AtomicU32 = AtomicU32::new(1);

/// Measured slot time per unit, per named class, and the units admitted and not yet finished.
#[derive(Debug)]
pub struct CostModel {
    id: u32,
    slots: Box<[Slot]>,
    /// Held while a class is named, so that one name is never named twice. Readers take no
    /// lock: `named` is raised after a slot's name is in place, so a reader that sees the
    /// count sees the names below it.
    naming: Mutex<()>,
    named: AtomicUsize,
    /// f64 bits of the spread: the moving mean of runs' relative errors.
    spread: AtomicU64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            id: NEXT_MODEL.fetch_add(1, Relaxed),
            slots: (0..MAX_CLASSES).map(|_| Slot::default()).collect(),
            naming: Mutex::new(()),
            named: AtomicUsize::new(0),
            spread: AtomicU64::new(0),
        }
    }
}

impl CostModel {
    /// The class of work named `name`, named now if it is new: the same name is always the
    /// same class, and two names are never one. Name a kind once (at start-up) and keep the
    /// [`Class`]; looking a name up is a scan of the names so far.
    ///
    /// Code that shares a pool shares its names: work of your own that you name as a job type
    /// that offload-axum runs in the same pool is taken to be that work, and teaches the same
    /// figure. Give other work another name.
    ///
    /// # Errors
    /// [`ClassError::BadName`] for an empty name or one over [`MAX_CLASS_NAME`] bytes;
    /// [`ClassError::Full`] when [`MAX_CLASSES`] are named already.
    pub fn class(&self, name: &str) -> Result<Class, ClassError> {
        if name.is_empty() || name.len() > MAX_CLASS_NAME {
            return Err(ClassError::BadName(name.len()));
        }
        if let Some(class) = self.find(name) {
            return Ok(class);
        }
        let _naming = self.naming.lock().expect("cost model naming");
        if let Some(class) = self.find(name) {
            return Ok(class);
        }
        let index = self.named.load(Acquire);
        let slot = self.slots.get(index).ok_or(ClassError::Full)?;
        let _ = slot.name.set(name.into());
        self.named.store(index + 1, Release);
        Ok(self.at(index))
    }

    /// The class named `name`, if it is named: a scan of the names, without a lock.
    pub fn find(&self, name: &str) -> Option<Class> {
        let named = self.named.load(Acquire);
        let index = self.slots[..named]
            .iter()
            .position(|s| s.name.get().is_some_and(|n| **n == *name))?;
        Some(self.at(index))
    }

    fn at(&self, index: usize) -> Class {
        Class {
            model: self.id,
            index: index as u32,
        }
    }

    /// The name of `class`, if this model named it.
    pub fn name(&self, class: Class) -> Option<&str> {
        Some(self.slot(class)?.name.get()?)
    }

    /// Every class named so far, in the order they were named.
    pub fn classes(&self) -> Vec<(Class, &str)> {
        let named = self.named.load(Acquire);
        (0..named)
            .filter_map(|i| Some((self.at(i), &**self.slots[i].name.get()?)))
            .collect()
    }

    /// The class's figures, if this model named it.
    fn slot(&self, class: Class) -> Option<&Slot> {
        if class.model != self.id {
            return None;
        }
        self.slots.get(class.index as usize)
    }

    /// Records that `units` of `class` held a slot for `took`.
    pub fn observe(&self, class: Class, units: u64, took: Duration) {
        let Some(slot) = self.slot(class) else {
            return;
        };
        if units == 0 {
            return;
        }
        let sample = took.as_secs_f64() / units as f64;
        let cell = &slot.secs_per_unit;
        // A lost update between two racing threads costs one sample; no lock is worth that.
        let old = f64::from_bits(cell.load(Relaxed));
        // The first real runs replace a prior, and each other, outright (see REPLACING_RUNS).
        let runs = slot
            .runs
            .fetch_update(Relaxed, Relaxed, |r| Some(r.saturating_add(1)))
            .unwrap_or(u32::MAX);
        let new = if old == 0.0 || runs < REPLACING_RUNS {
            sample
        } else {
            let error = ((sample - old).abs() / old).min(MAX_RUN_ERROR);
            let spread = f64::from_bits(self.spread.load(Relaxed));
            self.spread.store(
                (spread + SPREAD_WEIGHT * (error - spread)).to_bits(),
                Relaxed,
            );
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
    pub fn prior(&self, class: Class, secs_per_unit: f64) {
        let Some(slot) = self.slot(class) else {
            return;
        };
        if slot.runs.load(Relaxed) > 0 || !(secs_per_unit.is_finite() && secs_per_unit > 0.0) {
            return;
        }
        let bits = secs_per_unit.to_bits();
        let _ = slot
            .secs_per_unit
            .compare_exchange(0, bits, Relaxed, Relaxed);
    }

    /// Seconds per unit of `class`, once measured or guessed.
    pub fn secs_per_unit(&self, class: Class) -> Option<f64> {
        let v = f64::from_bits(self.slot(class)?.secs_per_unit.load(Relaxed));
        (v > 0.0).then_some(v)
    }

    /// Whether `class`'s figure comes from real runs, not only a prior.
    pub fn measured(&self, class: Class) -> bool {
        self.slot(class).is_some_and(|s| s.runs.load(Relaxed) > 0)
    }

    /// How far runs stray from the model's figures: the moving mean of each run's relative
    /// error against its class's time per unit before the run (0.02 for steady work; 0.5 when
    /// runs of one size take anything from half to one and a half times the mean). One figure
    /// for all classes: an erratic kind widens the margin for all.
    pub fn spread(&self) -> f64 {
        f64::from_bits(self.spread.load(Relaxed))
    }

    /// What deadline admission scales a prediction by before it judges it: `1 + 2 × spread`,
    /// at most [`MAX_MARGIN`]. As TCP's retransmission timeout is its mean round trip plus a
    /// multiple of its variation, a request is admitted when its predicted finish *with the
    /// error the runs have shown* fits: steady work keeps nearly all of [`ADMIT_SHARE`], and
    /// work whose runs stray is admitted with room for them to, rather than missing its
    /// deadline after its whole run.
    pub fn margin(&self) -> f64 {
        (1.0 + SPREADS * self.spread()).min(MAX_MARGIN)
    }

    /// Predicted slot time of `cost` (zero while its class is unmeasured: a model that knows
    /// nothing admits, and the hard cap still bounds the queue).
    pub fn estimate(&self, cost: Cost) -> Duration {
        let s = self.secs_per_unit(cost.class).unwrap_or(0.0) * cost.units as f64;
        Duration::from_secs_f64(s.min(1e6))
    }

    /// Slot time of everything admitted and not finished.
    pub fn backlog(&self) -> Duration {
        let named = self.named.load(Acquire);
        let secs: f64 = self.slots[..named]
            .iter()
            .map(|s| {
                let per_unit = f64::from_bits(s.secs_per_unit.load(Relaxed));
                per_unit * s.outstanding.load(Relaxed) as f64
            })
            .sum();
        Duration::from_secs_f64(secs.min(1e6))
    }

    /// Counts `cost` as admitted until [`CostModel::finish`].
    pub fn admit(&self, cost: Cost) {
        if let Some(s) = self.slot(cost.class) {
            s.outstanding.fetch_add(cost.units, Relaxed);
        }
    }

    /// Counts `cost` as finished (done, failed, expired or abandoned).
    pub fn finish(&self, cost: Cost) {
        if let Some(s) = self.slot(cost.class) {
            let _ = s
                .outstanding
                .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(cost.units)));
        }
    }

    /// Units admitted and not finished, of `class`.
    pub fn outstanding(&self, class: Class) -> u64 {
        self.slot(class).map_or(0, |s| s.outstanding.load(Relaxed))
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
        let count = m.class("count").unwrap();
        let hash = m.class("hash").unwrap();
        let c = Cost::new(count, 1_000);
        assert_eq!(m.estimate(c), Duration::ZERO, "unmeasured: admit");
        m.prior(count, 5e-6);
        assert_eq!(m.estimate(c), MS(5), "a prior stands in");
        assert!(!m.measured(count));
        // A tiny first run, whose fixed costs make it 1 ms a unit, replaces the prior...
        m.observe(count, 1, MS(1));
        assert_eq!(m.estimate(c), MS(1_000));
        assert!(m.measured(count));
        // ...and the second run replaces it in turn.
        m.observe(count, 1_000, MS(10));
        assert_eq!(m.estimate(c), MS(10));
        m.admit(c);
        m.admit(Cost::new(count, 3_000));
        m.admit(Cost::new(hash, 5)); // unmeasured class: adds nothing yet
        assert_eq!(m.backlog(), MS(40));
        m.finish(c);
        assert_eq!(m.backlog(), MS(30));
        assert_eq!(m.outstanding(count), 3_000);
        // The average moves toward new measurements, a tenth at a time...
        m.observe(count, 1_000, MS(20));
        assert!((m.secs_per_unit(count).unwrap() - 11e-6).abs() < 1e-9);
        // ...and faster when one is off by more than twice: 11 + 0.3 * (44 - 11).
        m.observe(count, 1_000, MS(44));
        assert!((m.secs_per_unit(count).unwrap() - 20.9e-6).abs() < 1e-9);
    }

    #[test]
    fn the_margin_follows_how_far_runs_stray() {
        let m = CostModel::default();
        let count = m.class("count").unwrap();
        assert_eq!(m.margin(), 1.0, "no runs: no error seen");
        // Steady runs: the margin stays near 1.
        for _ in 0..50 {
            m.observe(count, 1_000, MS(10));
        }
        assert!(m.margin() < 1.01, "{}", m.margin());
        // Runs of one size that take 100 or 470 ms in turn (a loop whose speed depends on the
        // core's mood): the error is tens of percent, and so is the margin.
        for i in 0..50 {
            m.observe(count, 1_000, MS(if i % 2 == 0 { 100 } else { 470 }));
        }
        let erratic = m.margin();
        assert!((1.3..=MAX_MARGIN).contains(&erratic), "{erratic}");
        // One huge stall counts for at most twice the estimate, and the margin is capped.
        m.observe(count, 1_000, Duration::from_secs(100));
        assert!(m.margin() <= MAX_MARGIN);
        // Steady again: it narrows within tens of runs, as the estimate comes back from the
        // stall (a 100-fold run moves it by 0.3 of the way, as a change of speed would).
        for _ in 0..80 {
            m.observe(count, 1_000, MS(200));
        }
        assert!(m.margin() < 1.05, "{}", m.margin());
    }

    #[test]
    fn classes_are_named_checked_and_bounded() {
        let m = CostModel::default();
        let a = m.class("resize").unwrap();
        assert_eq!(m.class("resize").unwrap(), a, "one name, one class");
        let b = m.class("hash").unwrap();
        assert_ne!(a, b, "two names, two classes");
        assert_eq!(m.name(b), Some("hash"));
        assert_eq!(m.find("hash"), Some(b));
        assert_eq!(m.find("resize "), None);
        assert_eq!(m.class(""), Err(ClassError::BadName(0)));
        assert_eq!(m.class(&"x".repeat(65)), Err(ClassError::BadName(65)));
        // A class is its model's: another model's, or NONE, is not modelled there.
        let other = CostModel::default();
        let foreign = other.class("resize").unwrap();
        assert_ne!(foreign, a);
        other.observe(foreign, 1, MS(1));
        m.observe(foreign, 1, MS(1));
        m.admit(Cost::new(foreign, 1_000));
        m.admit(Cost::new(Class::NONE, 1_000));
        assert_eq!(m.secs_per_unit(a), None);
        assert_eq!(m.backlog(), Duration::ZERO);
        assert_eq!(m.name(foreign), None);
        assert_eq!(other.secs_per_unit(foreign), Some(1e-3));
        // The bound: 64 names, then an error, not a silent share.
        for i in 2..MAX_CLASSES {
            m.class(&format!("kind{i}")).unwrap();
        }
        assert_eq!(m.class("one too many"), Err(ClassError::Full));
        assert_eq!(m.class("hash"), Ok(b), "a named class is still found");
        assert_eq!(m.classes().len(), MAX_CLASSES);
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
