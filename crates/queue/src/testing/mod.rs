//! The store trait's promises as tests (cargo feature `testing`): each promise of [`JobQueue`]
//! is an async test function here, and [`conformance_tests!`](crate::conformance_tests) runs
//! them all on one backend with one line, as apalis-core ships the tests its backends pass.
//! offload-queue runs them on SQLite, Redis and Postgres (`tests/backends`):
//!
//! ```no_run
//! use offload_queue::testing::Backend;
//!
//! // One test module, `sqlite`, with a `#[test]` per promise.
//! offload_queue::conformance_tests!(sqlite, Backend::Sqlite);
//! # fn main() {}
//! ```
//!
//! A backend of one's own implements [`Store`] (a fresh queue per test, another handle to it,
//! its data deleted at the end) and names its store in the same line.
//!
//! # Promises
//! - **Claim fencing** ([`round_trip`], [`claim_is_exclusive`], [`batched_claims_are_exclusive`],
//!   [`stale_holder_is_refused`], [`dead_worker_job_runs_again`], [`long_job_keeps_its_lease`]):
//!   a job has one holder at a time, and a holder whose lease was taken over is refused.
//! - **Stalls apart from attempts** ([`stale_holder_is_refused`], [`poison_job_ends_failed`],
//!   [`shutdown_gives_jobs_back`]): a lost lease or a job given back spends no attempt; stalls
//!   have a limit of their own.
//! - **Retries, then failed** ([`retry_with_backoff_then_failed`], [`panicking_job_is_retried`],
//!   [`timed_out_job_ends_failed`]): a run over its type's time limit is a failed attempt.
//! - **Bounded backlog** ([`cap_rejects_exactly_the_overflow`],
//!   [`a_prefix_stops_at_the_first_job_that_does_not_fit`]).
//! - **Retention** ([`prune_after_retention`], [`counts_drop_jobs_past_retention_before_prune`]).
//! - **Cancel and retry** ([`cancel_ends_unfinished_jobs_only`],
//!   [`cancelled_jobs_free_the_backlog_and_expire`], [`cancel_tells_a_running_handler_to_stop`],
//!   [`retry_requeues_failed_and_cancelled_jobs`]): a queued job never runs, a running one loses
//!   its lease and its handler is told to stop, a finished one is left as it is; a failed or
//!   cancelled job can be queued again.
//! - **Submit once** ([`a_key_stores_one_job`], [`concurrent_keyed_enqueues_store_one_job`],
//!   [`a_key_is_free_after_the_retention`]): a key stores one job, atomically, until that job
//!   leaves with its retention.
//! - **Deadlines** ([`a_job_past_its_deadline_never_runs`], [`a_run_is_stopped_at_its_deadline`]):
//!   a job past its deadline never starts, a run at its deadline is stopped, both end `expired`.
//! - **Delay and priority** ([`delays_hold_jobs_back_and_priorities_order_claims`],
//!   [`low_priority_is_claimed_within_its_handicap`]): a delayed job waits; claims take the
//!   most urgent due job first, and a low priority is a bounded handicap, not starvation.
//! - **Lists** ([`list_pages_newest_first_with_a_stable_cursor`]): a status's jobs a page at a
//!   time, newest first, with a cursor that stays valid while jobs are added.
//! - **Reads** ([`unknown_and_malformed_ids`], [`latency_counts_done_jobs_by_label`]).
//! - **All of the above at once** ([`worker_loops_drain_everything`]).
//!
//! # Servers
//! `Backend::Redis` tests use the server at `REDIS_URL`, `Backend::Postgres` the one at
//! `POSTGRES_URL`, each test on a queue of its own (`test-{test}-{8 random hex}`) whose keys or
//! rows are deleted after, also when the test fails. Without the URL a test says loudly that it
//! did not run ([`did_not_run`]) and passes; with `OFFLOAD_REQUIRE_REDIS=1` /
//! `OFFLOAD_REQUIRE_POSTGRES=1` it fails instead. A URL that cannot be reached always fails: a
//! set URL means that server was meant to be tested.
//!
//! # Layout
//! - [`Store`], [`TestQueue`]: what the tests need of a backend, and one test's queue.
//! - [`Backend`], [`Place`]: the built-in backends' store, by URL (also for tests that start
//!   processes on a queue of their own).
//! - `claims`, `limits`, `reads`, `cancel`, `lifecycle`, `loops`: the tests, by promise; the
//!   worker loop's in `loops`.

mod backend;
mod cancel;
mod claims;
mod lifecycle;
mod limits;
mod loops;
mod metrics;
mod reads;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{JobQueue, QueueOptions};

pub use self::backend::{Backend, Place, did_not_run, queue_name, server_url};
pub use self::cancel::{
    cancel_ends_unfinished_jobs_only, cancel_tells_a_running_handler_to_stop,
    cancelled_jobs_free_the_backlog_and_expire, retry_requeues_failed_and_cancelled_jobs,
};
pub use self::claims::{
    batched_claims_are_exclusive, claim_is_exclusive, round_trip, stale_holder_is_refused,
    the_trace_context_reaches_the_run, unknown_and_malformed_ids,
};
pub use self::lifecycle::{
    a_job_past_its_deadline_never_runs, a_key_is_free_after_the_retention, a_key_stores_one_job,
    a_run_is_stopped_at_its_deadline, concurrent_keyed_enqueues_store_one_job,
    delays_hold_jobs_back_and_priorities_order_claims,
    list_pages_newest_first_with_a_stable_cursor, low_priority_is_claimed_within_its_handicap,
};
pub use self::limits::{
    a_prefix_stops_at_the_first_job_that_does_not_fit, cap_rejects_exactly_the_overflow,
    poison_job_ends_failed, retry_with_backoff_then_failed,
};
pub use self::loops::{
    dead_worker_job_runs_again, long_job_keeps_its_lease, panicking_job_is_retried,
    shutdown_gives_jobs_back, timed_out_job_ends_failed, worker_loops_drain_everything,
};
pub use self::metrics::{samples, worker_metrics_count_every_job};
pub use self::reads::{
    counts_drop_jobs_past_retention_before_prune, latency_counts_done_jobs_by_label,
    prune_after_retention,
};

/// A job whose handler ([`spin_handlers`]) spins until it is told to stop.
#[derive(serde::Serialize, serde::Deserialize)]
struct Spin;
impl crate::Job for Spin {
    const NAME: &'static str = "spin";
    type Output = ();
}

/// Handlers that run [`Spin`]: a run notes that it started, spins until its stop check turns
/// true (10 s at most), sends the time it saw it, and fails with a retryable error.
fn spin_handlers() -> (
    crate::Handlers,
    Arc<AtomicBool>,
    std::sync::mpsc::Receiver<tokio::time::Instant>,
) {
    let started = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let handlers = crate::Handlers::new().on_with({
        let started = Arc::clone(&started);
        move |_: Spin, cx: &crate::JobContext| {
            started.store(true, Ordering::SeqCst);
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while !cx.stopped() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = tx.send(tokio::time::Instant::now());
            Err(crate::JobError::retry("stopped"))
        }
    });
    (handlers, started, rx)
}

/// The lease the tests take: short, so that they are quick, and still far above a claim's round
/// trip.
pub const LEASE: Duration = Duration::from_millis(300);
/// The wait of the tests' claims: none, since a claim that finds nothing must answer at once.
pub const NO_WAIT: Duration = Duration::ZERO;

/// The tests' queue options: the defaults with quick retries (40 ms, at most 200 ms), so that a
/// job's three attempts fit in a test.
pub fn options() -> QueueOptions {
    QueueOptions {
        retry_base: Duration::from_millis(40),
        retry_max: Duration::from_millis(200),
        ..QueueOptions::default()
    }
}

/// A backend under test, as the tests see it: where one test's queue goes, how to open it
/// (again, for another handle, as another process would) and how to delete its data.
/// [`Backend`] is the built-in backends' store; a backend of one's own implements this for its
/// queue type and runs the suite with [`conformance_tests!`](crate::conformance_tests).
///
/// ```no_run
/// use offload_queue::testing::Store;
/// use offload_queue::{QueueOptions, SqliteQueue};
///
/// /// Each test's queue a SQLite file of its own, opened as `SqliteQueue` itself.
/// struct Files;
///
/// impl Store for Files {
///     type Queue = SqliteQueue;
///     // The directory goes when dropped, and the file with it.
///     type Place = tempfile::TempDir;
///
///     fn place(&self, _test: &str) -> Option<tempfile::TempDir> {
///         Some(tempfile::tempdir().expect("a temporary directory"))
///     }
///
///     async fn open(&self, dir: &tempfile::TempDir, options: QueueOptions) -> SqliteQueue {
///         let file = dir.path().join("jobs.db");
///         SqliteQueue::open(&file, options).await.expect("open the test queue")
///     }
/// }
///
/// offload_queue::conformance_tests!(files, Files);
/// # fn main() {}
/// ```
pub trait Store: Send + Sync + Sized + 'static {
    /// The queue under test.
    type Queue: JobQueue + Clone;
    /// One test's queue: where it lives, of that test's own (a name, a temporary file), empty.
    /// Dropping it deletes the queue's data, also when the test panicked.
    type Place: Send + Sync + 'static;

    /// A place for a queue of `test`'s own, or `None` when this store cannot be tested here and
    /// is not required to be: then the store has said so loudly ([`did_not_run`]).
    ///
    /// # Panics
    /// When the store is required here but not configured.
    fn place(&self, test: &str) -> Option<Self::Place>;

    /// Opens a handle to the queue at `place` with `options` (the place decides the name).
    ///
    /// # Panics
    /// When the queue cannot be opened: a store meant to be tested fails the test.
    fn open(
        &self,
        place: &Self::Place,
        options: QueueOptions,
    ) -> impl Future<Output = Self::Queue> + Send;

    /// Deletes what `queue` stored (jobs, counters, histograms) now, as dropping its place does
    /// at the end; `false` if this store deletes nothing this way (SQLite's file goes with its
    /// place), and then the tests do not check what such a deletion leaves.
    ///
    /// # Panics
    /// When the deletion fails.
    fn destroy(&self, _queue: &Self::Queue) -> impl Future<Output = bool> + Send {
        async { false }
    }
}

/// One test's queue: a handle to it, more on demand, and its place, which deletes the queue's
/// data when this is dropped.
pub struct TestQueue<S: Store> {
    /// The first handle.
    pub queue: S::Queue,
    store: S,
    options: QueueOptions,
    // Last: dropped after the handle, it deletes the data.
    place: S::Place,
}

impl<S: Store> fmt::Debug for TestQueue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestQueue")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<S: Store> TestQueue<S> {
    /// A fresh queue of `test`'s own on `store`, opened with `options`; `None` when the store
    /// cannot be tested here ([`Store::place`]), and the test should return.
    ///
    /// # Panics
    /// As [`Store::place`] and [`Store::open`].
    pub async fn open(store: S, test: &str, options: QueueOptions) -> Option<TestQueue<S>> {
        let place = store.place(test)?;
        let queue = store.open(&place, options.clone()).await;
        Some(TestQueue {
            queue,
            store,
            options,
            place,
        })
    }

    /// Another handle to the same queue (another connection, as another process would open).
    ///
    /// # Panics
    /// As [`Store::open`].
    pub async fn handle(&self) -> S::Queue {
        self.store.open(&self.place, self.options.clone()).await
    }

    /// Deletes the queue's data now ([`Store::destroy`]).
    ///
    /// # Panics
    /// As [`Store::destroy`].
    pub async fn destroy(&self) -> bool {
        self.store.destroy(&self.queue).await
    }

    /// Where the queue lives.
    pub fn place(&self) -> &S::Place {
        &self.place
    }
}

/// Runs one test on a runtime of its own, multi-threaded with two workers, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` does. The macros' tests call
/// this rather than carry tokio's attribute, so that a crate that runs them needs none of
/// tokio's features.
///
/// # Panics
/// If the runtime cannot be built, and when the test panics.
pub fn run<F: Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the test")
        .block_on(test)
}

/// Runs the whole suite on one store: `conformance_tests!(module, store)` makes a module
/// `module` with a `#[test]` per promise (its name the test function's), each on a runtime of its
/// own ([`testing::run`](crate::testing::run)) with a [`Store`](crate::testing::Store) made by
/// the expression `store`, evaluated in the module, which sees the caller's imports.
///
/// ```no_run
/// use offload_queue::testing::Backend;
///
/// offload_queue::conformance_tests!(sqlite, Backend::Sqlite);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $store:expr $(,)?) => {
        $crate::__store_tests!(@suite $module, $store, [
            round_trip,
            unknown_and_malformed_ids,
            claim_is_exclusive,
            batched_claims_are_exclusive,
            stale_holder_is_refused,
            retry_with_backoff_then_failed,
            poison_job_ends_failed,
            cap_rejects_exactly_the_overflow,
            a_prefix_stops_at_the_first_job_that_does_not_fit,
            prune_after_retention,
            latency_counts_done_jobs_by_label,
            counts_drop_jobs_past_retention_before_prune,
            dead_worker_job_runs_again,
            shutdown_gives_jobs_back,
            long_job_keeps_its_lease,
            panicking_job_is_retried,
            timed_out_job_ends_failed,
            worker_loops_drain_everything,
            cancel_ends_unfinished_jobs_only,
            cancelled_jobs_free_the_backlog_and_expire,
            cancel_tells_a_running_handler_to_stop,
            retry_requeues_failed_and_cancelled_jobs,
            a_key_stores_one_job,
            concurrent_keyed_enqueues_store_one_job,
            a_key_is_free_after_the_retention,
            a_job_past_its_deadline_never_runs,
            a_run_is_stopped_at_its_deadline,
            list_pages_newest_first_with_a_stable_cursor,
            delays_hold_jobs_back_and_priorities_order_claims,
            low_priority_is_claimed_within_its_handicap,
            worker_metrics_count_every_job,
            the_trace_context_reaches_the_run,
        ]);
    };
}

/// Runs tests of one's own on several stores: `store_tests!(m1 = store1, m2 = store2; t1, t2)`
/// makes a module per store (`m1`, `m2`), each with a `#[test]` per test function (`t1`, `t2`:
/// `async fn(store, test: &str)` beside the macro, given the store and the test's name), each
/// on a runtime of its own ([`testing::run`](crate::testing::run)). The store expressions are
/// evaluated in the modules, which see the caller's imports.
///
/// ```no_run
/// use offload_queue::testing::Backend;
///
/// // A test of processes on a queue of its own, deleted after.
/// async fn survives_a_restart(store: Backend, test: &str) {
///     let Some(place) = store.place(test) else { return };
///     let args = ["--queue", place.url(), "--queue-name", place.name().as_str()];
///     // Start processes with `args`, restart them...
/// #   drop(args);
/// }
///
/// offload_queue::store_tests!(sqlite = Backend::Sqlite; survives_a_restart);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_tests {
    ($($module:ident = $store:expr),+ ; $($test:ident),+ $(,)?) => {
        $crate::__store_tests!(@stores [$($test),+] $($module = $store),+);
    };
}

/// The modules [`conformance_tests!`] and [`store_tests!`] make.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_tests {
    (@stores $tests:tt $($module:ident = $store:expr),+) => {
        $($crate::__store_tests!(@own $module, $store, $tests);)+
    };
    (@suite $module:ident, $store:expr, [$($test:ident),+ $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $test() {
                    $crate::testing::run($crate::testing::$test($store, stringify!($test)))
                }
            )+
        }
    };
    (@own $module:ident, $store:expr, [$($test:ident),+ $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $test() {
                    $crate::testing::run(super::$test($store, stringify!($test)))
                }
            )+
        }
    };
}
