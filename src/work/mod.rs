//! The CPU-bound work a `/heavy` request asks for: a validated [`Work`] value, parsed from a
//! query string or a JSON body, that runs sequentially, split into chunks, or on rayon, with
//! the same deterministic result every way.
//!
//! Parsing never runs work: a bad spec is rejected before any CPU time is spent on it.

mod count;
mod hash;
mod primes;
mod spec;

use std::ops::Range;

use rayon::prelude::*;

pub use hash::HashParams;
pub use spec::SpecError;

/// The number of CPUs this process may use: the default for every thread count offload
/// chooses (pool threads, runtime threads, worker concurrency, calibration threads).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Which job a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The seed's loop: `n` increments the compiler cannot fold away. Result: `n`.
    Count,
    /// The number of primes below `n` (segmented sieve).
    Primes,
    /// `n` argon2id password hashes; result: a fingerprint of all of them.
    Hash,
    /// Panics when run. Parsed only when [`Limits::allow_fault`] is set (tests, fault drills).
    Fault,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Count, Kind::Primes, Kind::Hash, Kind::Fault];

    /// The kind's class in an admission model, named as the kind. A model too full to name it
    /// (one that 64 other kinds share) does not predict it.
    pub fn class(self, model: &crate::admission::CostModel) -> crate::admission::Class {
        model
            .class(self.name())
            .unwrap_or(crate::admission::Class::NONE)
    }

    /// The name used in specs, labels, job types and responses.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Count => "count",
            Kind::Primes => "primes",
            Kind::Hash => "hash",
            Kind::Fault => "fault",
        }
    }

    /// The kind of that name, as [`Kind::name`] spells it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind's place in [`Kind::ALL`], and in every table indexed by kind.
    const fn index(self) -> usize {
        self as usize
    }
}

/// Each kind's class in one admission model, named once when a strategy starts, so that a
/// request finds its class by its kind, not by a scan of the model's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classes([crate::admission::Class; Kind::ALL.len()]);

impl Classes {
    /// Names every kind's class in `model`.
    pub fn of(model: &crate::admission::CostModel) -> Classes {
        Classes(Kind::ALL.map(|kind| kind.class(model)))
    }

    /// The class of `kind`.
    pub fn get(&self, kind: Kind) -> crate::admission::Class {
        self.0[kind.index()]
    }
}

/// What a run of work returns, wherever it ran: the kind and size, the result, and the run's
/// time on its thread. `offload worker` stores it as a job's result (`GET /jobs/{id}` shows
/// it as `result`); smaller than the `/heavy` answer, since a job has no strategy of its own
/// and its wait is the job view's `started_at - enqueued_at`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobResult {
    pub work: String,
    pub n: u64,
    pub result: u64,
    /// The run on the worker's thread, in µs.
    pub run_us: u64,
}

/// Upper bounds on work sizes, so one request cannot hold a core for hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_count: u64,
    pub max_primes: u64,
    pub max_hashes: u64,
    pub hash: HashParams,
    /// Accept `work=fault` (a task that panics). Off unless asked for.
    pub allow_fault: bool,
}

/// The seed's workload: 20 million iterations.
pub const DEFAULT_COUNT: u64 = 20_000_000;
/// 2e9 iterations is a few seconds of one core: heavy, but never hours.
pub const DEFAULT_MAX_COUNT: u64 = 2_000_000_000;
/// Sieving below 1e9 takes a few seconds of one core.
pub const DEFAULT_MAX_PRIMES: u64 = 1_000_000_000;
/// At the default cost one hash takes tens of milliseconds; 256 of them a few seconds.
pub const DEFAULT_MAX_HASHES: u64 = 256;

impl Limits {
    /// The largest `n` of `kind` these limits accept; none for `fault` unless allowed.
    pub fn max_n(&self, kind: Kind) -> Option<u64> {
        match kind {
            Kind::Count => Some(self.max_count),
            Kind::Primes => Some(self.max_primes),
            Kind::Hash => Some(self.max_hashes),
            Kind::Fault => self.allow_fault.then_some(1),
        }
    }

    /// These limits, with `kind`'s bound raised to `n` where it is lower.
    pub fn raised(self, kind: Kind, n: u64) -> Limits {
        let mut out = self;
        match kind {
            Kind::Count => out.max_count = out.max_count.max(n),
            Kind::Primes => out.max_primes = out.max_primes.max(n),
            Kind::Hash => out.max_hashes = out.max_hashes.max(n),
            Kind::Fault => {}
        }
        out
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_count: DEFAULT_MAX_COUNT,
            max_primes: DEFAULT_MAX_PRIMES,
            max_hashes: DEFAULT_MAX_HASHES,
            hash: HashParams::default(),
            allow_fault: false,
        }
    }
}

/// A validated job: its kind, its size `n` (within the limits) and, for `hash`, its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    kind: Kind,
    n: u64,
    hash: HashParams,
}

/// Returned when a stop check asked a running job to give up (deadline passed, client gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the work was stopped before it finished")]
pub struct Stopped;

/// A slice of a job's units, to run on one thread; results of all chunks [`combine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    work: Work,
    range: Range<u64>,
}

impl Work {
    /// The default work of `GET /heavy`: count to 20,000,000.
    pub fn default_count() -> Work {
        Work {
            kind: Kind::Count,
            n: DEFAULT_COUNT,
            hash: HashParams::default(),
        }
    }

    /// Builds a work value, checking `n` against `limits`.
    ///
    /// # Errors
    /// [`SpecError`] when `n` is zero, over its bound, or the kind is not allowed.
    pub fn new(kind: Kind, n: u64, limits: &Limits) -> Result<Work, SpecError> {
        spec::validate(kind, n, limits)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The job's size in units (iterations, numbers sieved, hashes).
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Runs the whole job on this thread.
    ///
    /// # Errors
    /// [`Stopped`] when `stop` returned true during the run.
    pub fn run(&self, stop: &dyn Fn() -> bool) -> Result<u64, Stopped> {
        self.chunk(0..self.n).run(stop)
    }

    /// Runs the job on rayon's global pool; the result equals [`Work::run`]'s.
    ///
    /// # Errors
    /// [`Stopped`] when `stop` returned true during the run.
    pub fn run_parallel(&self, stop: &(dyn Fn() -> bool + Sync)) -> Result<u64, Stopped> {
        // A few chunks per thread, so threads that finish early take more.
        let k = rayon::current_num_threads().max(1) * 4;
        let parts: Vec<u64> = self
            .chunks(k)
            .into_par_iter()
            .map(|c| c.run(stop))
            .collect::<Result<_, _>>()?;
        Ok(combine(&parts))
    }

    /// Splits the job into at most `k` chunks of near-equal size (fewer when `n < k`).
    pub fn chunks(&self, k: usize) -> Vec<Chunk> {
        let k = (k.max(1) as u64).min(self.n.max(1));
        let (base, extra) = (self.n / k, self.n % k);
        let mut start = 0;
        (0..k)
            .map(|i| {
                let len = base + u64::from(i < extra);
                let c = self.chunk(start..start + len);
                start += len;
                c
            })
            .collect()
    }

    /// Times a small instance of each kind (within `limits`) on the calling thread: seconds
    /// per unit, one idle thread's speed. A first figure for admission and for the queue's
    /// backlog until real runs are measured; takes a few tens of milliseconds (one `hash` is
    /// most of it). Each is timed by the thread's own CPU time, the best of three for the
    /// cheap kinds, so that a start on a busy machine (or the first run's cold caches) does
    /// not leave every prediction too high.
    pub fn probe_costs(limits: &Limits) -> Vec<(Kind, f64)> {
        let mut out = Vec::new();
        for (kind, n, runs) in [
            (Kind::Count, 2_000_000, 3),
            (Kind::Primes, 1_000_000, 3),
            (Kind::Hash, 1, 1),
        ] {
            // A limit below the probe's size: that kind learns from real runs only.
            let Ok(work) = Work::new(kind, n, limits) else {
                continue;
            };
            let best = (0..runs)
                .filter_map(|_| {
                    let t = thread_cpu_time();
                    std::hint::black_box(work.run(&|| false)).ok()?;
                    Some(thread_cpu_time().saturating_sub(t))
                })
                .min();
            if let Some(best) = best {
                out.push((kind, best.as_secs_f64().max(1e-9) / n as f64));
            }
        }
        out
    }

    /// The request's size in the model whose classes are `classes`.
    pub fn cost(&self, classes: &Classes) -> crate::admission::Cost {
        crate::admission::Cost::new(classes.get(self.kind), self.n)
    }

    /// The work's label, `kind:n` (`count:2000000`): how the queue's latency histogram, the
    /// bench's rows and `--work` name it.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind.name(), self.n)
    }

    /// The work as a `/heavy` query string, the form [`Work::from_query`] reads back.
    pub fn query(&self) -> String {
        format!("work={}&n={}", self.kind.name(), self.n)
    }

    fn chunk(&self, range: Range<u64>) -> Chunk {
        Chunk { work: *self, range }
    }
}

impl Chunk {
    /// The chunk's units of work.
    pub fn units(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Runs this chunk on the calling thread, checking `stop` now and then (every few
    /// milliseconds of work), so a deadline or a gone client can cut it short.
    ///
    /// # Errors
    /// [`Stopped`] when `stop` returned true.
    pub fn run(&self, stop: &dyn Fn() -> bool) -> Result<u64, Stopped> {
        if stop() {
            return Err(Stopped);
        }
        match self.work.kind {
            Kind::Count => count::run(self.range.clone(), stop),
            Kind::Primes => primes::count_in(self.range.clone(), stop),
            Kind::Hash => hash::run(self.range.clone(), self.work.hash, stop),
            Kind::Fault => panic!("work=fault: a task that panics, on purpose"),
        }
    }
}

/// Combines chunk results into the job's result. Every kind's partial results add up
/// (hash fingerprints with wrapping), so the order of chunks does not matter.
pub fn combine(parts: &[u64]) -> u64 {
    parts.iter().fold(0u64, |a, b| a.wrapping_add(*b))
}

/// The calling thread's CPU time (what the probes are timed by: not the time a busy machine
/// gave to other threads).
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; the clock exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(kind: Kind, n: u64) -> Work {
        Work::new(kind, n, &Limits::default()).unwrap()
    }

    #[test]
    fn count_gives_n_every_way() {
        let w = work(Kind::Count, 1_000_003);
        assert_eq!(w.run(&|| false), Ok(1_000_003));
        assert_eq!(w.run_parallel(&|| false).unwrap(), 1_000_003);
        let parts: Vec<u64> = w
            .chunks(8)
            .iter()
            .map(|c| c.run(&|| false).unwrap())
            .collect();
        assert_eq!(parts.len(), 8);
        assert_eq!(combine(&parts), 1_000_003);
    }

    #[test]
    fn primes_match_known_counts_every_way() {
        for (n, pi) in [
            (2, 0),
            (3, 1),
            (10, 4),
            (100, 25),
            (1_000_000, 78_498),
            (2_000_000, 148_933),
        ] {
            let w = work(Kind::Primes, n);
            assert_eq!(w.run(&|| false), Ok(pi), "pi below {n}");
            assert_eq!(
                w.run_parallel(&|| false).unwrap(),
                pi,
                "parallel pi below {n}"
            );
            let parts: Vec<u64> = w
                .chunks(7)
                .iter()
                .map(|c| c.run(&|| false).unwrap())
                .collect();
            assert_eq!(combine(&parts), pi, "chunked pi below {n}");
        }
    }

    #[test]
    fn hash_is_deterministic_every_way() {
        let limits = Limits {
            hash: HashParams {
                memory_kib: 64,
                iterations: 1,
            },
            ..Limits::default()
        };
        let w = Work::new(Kind::Hash, 5, &limits).unwrap();
        let seq = w.run(&|| false).unwrap();
        assert_ne!(seq, 0);
        assert_eq!(w.run_parallel(&|| false).unwrap(), seq);
        let parts: Vec<u64> = w
            .chunks(3)
            .iter()
            .map(|c| c.run(&|| false).unwrap())
            .collect();
        assert_eq!(combine(&parts), seq);
        let other = Work::new(Kind::Hash, 4, &limits).unwrap();
        assert_ne!(other.run(&|| false).unwrap(), seq);
    }

    #[test]
    fn every_kind_is_spelled_once_and_indexed_in_order() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("sleep"), None);
        let model = crate::admission::CostModel::default();
        let classes = Classes::of(&model);
        for kind in Kind::ALL {
            assert_eq!(classes.get(kind), kind.class(&model));
            assert_eq!(model.name(classes.get(kind)), Some(kind.name()));
        }
    }

    #[test]
    fn chunks_cover_the_range_exactly() {
        let w = work(Kind::Count, 10);
        let c = w.chunks(4);
        let lens: Vec<u64> = c.iter().map(|c| c.range.end - c.range.start).collect();
        assert_eq!(lens, vec![3, 3, 2, 2]);
        assert_eq!(w.chunks(64).len(), 10);
    }

    #[test]
    fn stop_cuts_a_run_short() {
        let w = work(Kind::Count, DEFAULT_MAX_COUNT);
        assert_eq!(w.run(&|| true), Err(Stopped));
        let w = work(Kind::Primes, 100_000_000);
        assert_eq!(w.run(&|| true), Err(Stopped));
    }
}
