//! offload's own work as typed jobs of the queue crate: `count`, `primes` and `hash` (and
//! `fault`, for drills), each a type holding its size, registered in [`handlers`] exactly as a
//! user registers theirs. The gateway stores a [`Work`] with [`new_job`]; `offload worker` runs
//! them with [`handlers`] on its pool.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Handlers, Job, JobContext, JobError, NewJob};
use crate::work::{JobResult, Kind, Limits, Work};

/// One job type per kind of work, named and sized as the kind: `Job::NAME` is
/// [`Kind::name`], and a job's units are its size `n`, as in its label (`count:2000000`), since
/// each kind's run time grows in proportion to it, so runs teach a time per unit that predicts
/// any size.
macro_rules! kind_jobs {
    ($($(#[$doc:meta])* $ty:ident = $kind:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $ty {
            /// The work's size, as in `/heavy?work=...&n=N`.
            pub n: u64,
        }

        impl $ty {
            /// The kind of work this job type runs.
            pub const KIND: Kind = Kind::$kind;
        }

        impl Job for $ty {
            const NAME: &'static str = Kind::$kind.name();
            type Output = JobResult;
            fn units(&self) -> u64 {
                self.n
            }
        }
    )*};
}

kind_jobs! {
    /// Counts to `n` (the seed's loop).
    Count = Count;
    /// Counts the primes below `n`.
    Primes = Primes;
    /// `n` argon2id hashes at the worker's hash cost.
    Hash = Hash;
    /// Panics when run: only a worker started with faults allowed has a handler for it.
    Fault = Fault;
}

/// The job that runs `work`, labelled with its kind and size (`count:2000000`) for the latency
/// histogram's `by_work`.
pub fn new_job(work: &Work) -> NewJob {
    let n = work.n();
    let job = match work.kind() {
        Kind::Count => NewJob::of(&Count { n }),
        Kind::Primes => NewJob::of(&Primes { n }),
        Kind::Hash => NewJob::of(&Hash { n }),
        Kind::Fault => NewJob::of(&Fault { n }),
    };
    job.expect("a struct of one number is JSON")
        .label(work.label())
}

/// The handlers of offload's work within `limits` (sizes over them fail without a retry).
pub fn handlers(limits: Limits) -> Handlers {
    let handlers = Handlers::new()
        .on_with(move |Count { n }: Count, cx: &JobContext| run(Count::KIND, n, &limits, cx))
        .on_with(move |Primes { n }: Primes, cx: &JobContext| run(Primes::KIND, n, &limits, cx))
        .on_with(move |Hash { n }: Hash, cx: &JobContext| run(Hash::KIND, n, &limits, cx));
    if limits.allow_fault {
        handlers
            .on_with(move |Fault { n }: Fault, cx: &JobContext| run(Fault::KIND, n, &limits, cx))
    } else {
        handlers
    }
}

/// The handlers of offload's work, each kind's prior its startup calibration
/// ([`Work::probe_costs`]: a run of a fixed size on one thread), for predictions of stored
/// work ([`Handlers::predict`]) before any has run here.
pub fn calibrated(limits: Limits) -> Handlers {
    let mut handlers = handlers(limits);
    for (kind, secs_per_unit) in Work::probe_costs(&limits) {
        handlers = handlers.prior_of(kind.name(), secs_per_unit);
    }
    handlers
}

/// Checks the size against the limits, then runs the whole job on this thread, stopping early
/// when the worker says so (the job was cancelled or its lease lost).
fn run(kind: Kind, n: u64, limits: &Limits, cx: &JobContext) -> Result<JobResult, JobError> {
    let work =
        Work::new(kind, n, limits).map_err(|e| JobError::fatal(format!("bad work spec: {e}")))?;
    let start = Instant::now();
    let result = work
        .run(&|| cx.stopped())
        .map_err(|stopped| JobError::retry(stopped.to_string()))?;
    Ok(JobResult {
        work: kind.name().to_owned(),
        n,
        result,
        run_us: start.elapsed().as_micros() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_work_runs_with_its_registered_handler_and_sizes_are_checked_again() {
        let limits = Limits::default();
        let h = handlers(limits);
        assert_eq!(h.names(), ["count", "hash", "primes"]);
        let job = new_job(&Work::new(Kind::Primes, 100, &limits).unwrap());
        assert_eq!(job.payload, r#"{"job":"primes","payload":{"n":100}}"#);
        assert_eq!(job.label.as_deref(), Some("primes:100"));
        let out: JobResult = serde_json::from_str(&h.run(&job.payload).unwrap()).unwrap();
        assert_eq!((out.work.as_str(), out.n, out.result), ("primes", 100, 25));
        // A size a gateway with larger limits accepted fails here, at once and for good.
        let big = format!(
            r#"{{"job":"count","payload":{{"n":{}}}}}"#,
            limits.max_count + 1
        );
        let err = h.run(&big).unwrap_err();
        assert!(
            !err.retry && err.message.contains("over the limit"),
            "{err}"
        );
        // `fault` has a handler only where faults are allowed.
        let fault = new_job(
            &Work::new(
                Kind::Fault,
                1,
                &Limits {
                    allow_fault: true,
                    ..limits
                },
            )
            .unwrap(),
        );
        assert!(
            h.run(&fault.payload)
                .unwrap_err()
                .message
                .contains("no handler")
        );
    }
}
