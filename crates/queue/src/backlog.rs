//! The backlog in seconds of work: the queued jobs' predicted run time on one thread, summed
//! ([`Backlog::read`]). Divided by the threads that drain it, it is how long the queue takes
//! to empty, which is what an autoscaler needs; a count of jobs is not, since a job of a
//! millisecond and a job of a minute count the same.
//!
//! A job is predicted from its label ([`NewJob::label`](crate::NewJob::label)) by the
//! [`Handlers`] that run its type ([`Handlers::predict`]): from what runs of the type took
//! (each run teaches its type's cost, on the thread that ran it), or, before any has run, from
//! the type's stated prior ([`Job::SECS_PER_UNIT`](crate::Job::SECS_PER_UNIT), or
//! [`Handlers::prior`]). A job no prior or run can predict is counted apart, not guessed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Handlers, JobQueue, JobStatus, ListFilter, MAX_PAGE, QueueError};

/// Least weight of the newest run in a type's moving means: a plain average of the first
/// runs, then a moving mean over about this many (a backlog takes seconds to minutes to
/// drain, so its prediction wants the recent typical run, not the last few).
const RUNS: f64 = 64.0;

/// What runs of one job type took, as moving means of seconds per unit and per job, and the
/// prior per unit; each an `f64`'s bits, 0 for none. Shared by the clones of a [`Handlers`].
#[derive(Debug, Default)]
pub(crate) struct Cost {
    per_unit: AtomicU64,
    per_job: AtomicU64,
    prior: AtomicU64,
    /// Runs learned from.
    runs: AtomicU64,
}

fn load(a: &AtomicU64) -> Option<f64> {
    let v = f64::from_bits(a.load(Ordering::Relaxed));
    (v > 0.0).then_some(v)
}

/// Moves the mean in `a` towards `x` by `weight`. Two threads that learn at once may lose one's
/// step: a mean, not a count, so that costs nothing.
fn learn(a: &AtomicU64, x: f64, weight: f64) {
    let new = match load(a) {
        None => x,
        Some(old) => old + (x - old) * weight,
    };
    a.store(new.to_bits(), Ordering::Relaxed);
}

impl Cost {
    pub(crate) fn with_prior(secs_per_unit: Option<f64>) -> Cost {
        let cost = Cost::default();
        if let Some(s) = secs_per_unit {
            cost.set_prior(s);
        }
        cost
    }

    /// Sets the prior; a value that is not a positive, finite number is ignored.
    pub(crate) fn set_prior(&self, secs_per_unit: f64) {
        if secs_per_unit.is_finite() && secs_per_unit > 0.0 {
            self.prior.store(secs_per_unit.to_bits(), Ordering::Relaxed);
        }
    }

    /// Learns from a run of `units` that took `took`.
    pub(crate) fn ran(&self, units: u64, took: Duration) {
        let secs = took.as_secs_f64();
        if secs > 0.0 {
            let n = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
            let weight = (1.0 / n as f64).max(1.0 / RUNS);
            learn(&self.per_job, secs, weight);
            if units > 0 {
                learn(&self.per_unit, secs / units as f64, weight);
            }
        }
    }

    /// Seconds per unit: learned, else the prior.
    fn per_unit(&self) -> Option<f64> {
        load(&self.per_unit).or_else(|| load(&self.prior))
    }

    /// Seconds per job: learned, else the prior for one unit.
    fn per_job(&self) -> Option<f64> {
        load(&self.per_job).or_else(|| load(&self.prior))
    }
}

impl Handlers {
    /// Sets the prior of the job type registered last: the seconds one unit
    /// ([`Job::units`](crate::Job::units)) takes on one thread, until runs of the type teach
    /// a measured one. It replaces the type's [`Job::SECS_PER_UNIT`](crate::Job::SECS_PER_UNIT)
    /// for predictions (a prior measured at start, say); a value that is not a positive,
    /// finite number is ignored, as is a call before any type is registered.
    #[must_use]
    pub fn prior(self, secs_per_unit: f64) -> Handlers {
        match self.last {
            Some(name) => self.prior_of(name, secs_per_unit),
            None => self,
        }
    }

    /// As [`Handlers::prior`], for job type `name` (ignored if it has no handler here).
    #[must_use]
    pub fn prior_of(self, name: &str, secs_per_unit: f64) -> Handlers {
        if let Some(entry) = self.by_name.get(name) {
            entry.cost.set_prior(secs_per_unit);
        }
        self
    }

    /// The predicted run time on one thread of a job with `label`: for `NAME:UNITS` (offload's
    /// gateway labels its work so, `count:2000000`), the units times the type's seconds per
    /// unit; for a bare `NAME` ([`NewJob::of`](crate::NewJob::of) labels so), the type's mean
    /// run time per job. Learned from the runs of these handlers (and their clones), else the
    /// type's prior. `None` for a type with no handler here, or neither runs nor a prior.
    pub fn predict(&self, label: &str) -> Option<Duration> {
        let (name, units) = match label.split_once(':') {
            Some((name, units)) => (name, Some(units.parse::<u64>().ok()?)),
            None => (label, None),
        };
        let cost = &self.by_name.get(name)?.cost;
        let secs = match units {
            Some(units) => cost.per_unit()? * units as f64,
            None => cost.per_job()?,
        };
        Duration::try_from_secs_f64(secs).ok()
    }
}

/// The queued jobs' predicted work: see the [module](self).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// Predicted run time of the queued jobs on one thread, summed, in seconds.
    pub seconds: f64,
    /// Jobs queued (due or not).
    pub queued: u64,
    /// Of those, jobs that nothing predicts (no label, or a type with neither runs nor a
    /// prior): not in `seconds`.
    pub unpredicted: u64,
    /// Jobs whose labels were read: all of them up to [`MAX_PAGE`]; past that, the
    /// [`MAX_PAGE`] newest, and the sums scaled to `queued` (a bounded read, however deep the
    /// backlog).
    pub read: u64,
}

impl Backlog {
    /// Reads the backlog of `queue`, given that `queued` jobs are queued
    /// ([`Counts::queued`](crate::Counts::queued), read just before), predicting each job
    /// with `predict` (usually [`Handlers::predict`]): one list read of at most [`MAX_PAGE`]
    /// jobs.
    ///
    /// # Errors
    /// The store's.
    pub async fn read<Q: JobQueue>(
        queue: &Q,
        queued: u64,
        predict: impl Fn(&str) -> Option<Duration>,
    ) -> Result<Backlog, QueueError> {
        if queued == 0 {
            return Ok(Backlog::default());
        }
        let page = queue
            .list(ListFilter {
                status: JobStatus::Queued,
                limit: MAX_PAGE,
                after: None,
            })
            .await?;
        let (mut seconds, mut unpredicted) = (0.0, 0u64);
        for job in &page.jobs {
            match job.label.as_deref().and_then(&predict) {
                Some(d) => seconds += d.as_secs_f64(),
                None => unpredicted += 1,
            }
        }
        let read = page.jobs.len() as u64;
        // Jobs may have left between the count and the list: the sums stand for what was read.
        let (queued, scale) = if read < queued && read == MAX_PAGE as u64 {
            (queued, queued as f64 / read as f64)
        } else {
            (read, 1.0)
        };
        Ok(Backlog {
            seconds: seconds * scale,
            queued,
            unpredicted: (unpredicted as f64 * scale).round() as u64,
            read,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::Job;

    #[derive(Serialize, Deserialize)]
    struct Sized(u64);
    impl Job for Sized {
        const NAME: &'static str = "sized";
        type Output = ();
        const SECS_PER_UNIT: Option<f64> = Some(0.001);
        fn units(&self) -> u64 {
            self.0
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Plain;
    impl Job for Plain {
        const NAME: &'static str = "plain";
        type Output = ();
    }

    #[test]
    fn predictions_start_from_the_prior_and_follow_the_runs() {
        let h = Handlers::new()
            .on(|job: Sized| {
                std::thread::sleep(Duration::from_micros(job.0 * 100));
                Ok(())
            })
            .on(|_: Plain| Ok(()));
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
        assert_eq!(ms(h.predict("sized:30")), Some(30.0), "the type's prior");
        assert_eq!(h.predict("plain"), None, "no prior, no run");
        assert_eq!(h.predict("sized:x"), None);
        assert_eq!(h.predict("other:3"), None, "no handler");
        let h = h.prior(2e-6);
        assert!(
            h.predict("plain:1000").unwrap().as_micros() == 2_000,
            "a prior set later"
        );
        // A run teaches its type: 100 µs a unit.
        h.run(r#"{"job":"sized","payload":40}"#).unwrap();
        let per_40 = ms(h.predict("sized:40")).unwrap();
        assert!((4.0..20.0).contains(&per_40), "{per_40} ms for 40 units");
        let per_job = ms(h.predict("sized")).unwrap();
        assert!((4.0..20.0).contains(&per_job), "{per_job} ms a job");
    }
}
