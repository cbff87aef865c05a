//! Time limits of runs ([`Handlers::timeout`](crate::Handlers::timeout)): a run over its job
//! type's limit is told to stop and fails as [`TIMED_OUT`], retried like any error. A thread
//! cannot be killed, so a handler that ignores its stop check keeps its thread: the run's
//! result is thrown away whenever it comes, and until then the run counts as *stuck*
//! ([`Handlers::stuck`](crate::Handlers::stuck)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::JobError;
use crate::job::{JobContext, Run};
use crate::worker::BoxFuture;

/// The error of a run over its time limit starts with this (`timed_out after 30s`): the job's
/// stored error, for code that tells a timeout from the handler's own errors.
pub const TIMED_OUT: &str = "timed_out";

/// How long a run told to stop at its time limit may take to return before its thread counts
/// as stuck: a handler that checks its stop every few milliseconds, as [`JobContext`] asks,
/// returns well within it, and a worker waits no longer than this past the limit to free the
/// job's slot for the next one.
pub const STOP_GRACE: Duration = Duration::from_millis(100);

/// Where a run under a limit is: on its thread, or past its grace and counted as stuck, or
/// returned (from either). The thread and the run's future race to move it on; whichever
/// moves it from stuck to returned takes the run off the gauge.
const RUNNING: u8 = 0;
const STUCK: u8 = 1;
const RETURNED: u8 = 2;

/// Where stuck runs are counted: the [`Handlers`](crate::Handlers)' own count, and the
/// worker's gauge when it has metrics.
pub(crate) struct Stuck {
    pub(crate) count: Arc<AtomicUsize>,
    pub(crate) gauge: Option<crate::metrics::Gauge>,
}

impl Stuck {
    /// Adds one; answers the count after.
    fn add(&self) -> usize {
        if let Some(g) = &self.gauge {
            g.inc();
        }
        self.count.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Takes one off; answers the count after.
    fn sub(&self) -> usize {
        if let Some(g) = &self.gauge {
            g.dec();
        }
        self.count.fetch_sub(1, Ordering::AcqRel) - 1
    }
}

/// One run under a limit, shared by its thread and its future.
struct Watch {
    state: AtomicU8,
    stuck: Stuck,
    job: &'static str,
}

/// Marks the run returned when its thread leaves the handler (also by a panic), and takes it
/// off the gauge if it was stuck.
struct Returned {
    watch: Arc<Watch>,
    began: Instant,
}

impl Drop for Returned {
    fn drop(&mut self) {
        let w = &self.watch;
        if w.state.swap(RETURNED, Ordering::AcqRel) == STUCK {
            let left = w.stuck.sub();
            tracing::info!(
                job = w.job,
                ran = ?self.began.elapsed(),
                stuck = left,
                "a stuck run returned; its result is discarded"
            );
        }
    }
}

/// Hands `run` to `spawn` and answers its outcome, or [`TIMED_OUT`] once it has run for
/// `limit` on its thread. The limit counts from the moment the run starts on its thread, not
/// from the call: a run that waits in a pool's queue for a thread (one job ahead per thread,
/// as the worker hands them over) does not spend its time waiting. At the limit the run is
/// told to stop through `cx`, and given [`STOP_GRACE`] to return; either way the outcome is
/// [`TIMED_OUT`], and a run still on its thread after the grace counts in `stuck` until it
/// returns.
pub(crate) fn limited<S>(
    run: Run,
    spawn: &S,
    cx: JobContext,
    limit: Duration,
    job: &'static str,
    stuck: Stuck,
) -> BoxFuture<Result<String, JobError>>
where
    S: Fn(Run) -> BoxFuture<Result<String, JobError>>,
{
    let watch = Arc::new(Watch {
        state: AtomicU8::new(RUNNING),
        stuck,
        job,
    });
    let (started_tx, started) = oneshot::channel::<Instant>();
    let on_thread = Arc::clone(&watch);
    let mut running = spawn(Box::new(move || {
        let began = Instant::now();
        let _ = started_tx.send(began);
        let _returned = Returned {
            watch: on_thread,
            began,
        };
        run()
    }));
    Box::pin(async move {
        let began = tokio::select! {
            out = &mut running => return out,
            began = started => match began {
                Ok(began) => began,
                // Dropped unrun (a pool shutting down): its outcome says why.
                Err(_) => return running.await,
            },
        };
        let deadline = tokio::time::Instant::from_std(began + limit);
        tokio::select! {
            out = &mut running => return out,
            () = tokio::time::sleep_until(deadline) => {}
        }
        cx.stop();
        if tokio::time::timeout(STOP_GRACE, &mut running)
            .await
            .is_err()
        {
            // Counted before it is marked, so that a return in between never takes the gauge
            // below zero; undone if the run returned first.
            let now = watch.stuck.add();
            let marked = watch
                .state
                .compare_exchange(RUNNING, STUCK, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if marked {
                crate::log::throttled!(
                    "job_stuck",
                    warn,
                    job,
                    timeout = ?limit,
                    stuck = now,
                    "a run past its timeout ignores its stop check: its thread is stuck until it returns"
                );
            } else {
                watch.stuck.sub();
            }
        }
        Err(JobError::retry(format!("{TIMED_OUT} after {limit:?}")))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::{Handlers, Job, NewJob};

    /// A job whose handler sleeps `ms` in steps of 1 ms, returning early when told to stop
    /// if `heeds` is set.
    #[derive(Serialize, Deserialize)]
    struct Nap {
        ms: u64,
        heeds: bool,
    }
    impl Job for Nap {
        const NAME: &'static str = "nap";
        type Output = String;
    }

    /// As [`Nap`], another type.
    #[derive(Serialize, Deserialize)]
    struct Doze {
        ms: u64,
    }
    impl Job for Doze {
        const NAME: &'static str = "doze";
        type Output = String;
    }

    fn sleep_for(ms: u64, cx: Option<&JobContext>) -> Result<String, JobError> {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            if cx.is_some_and(JobContext::stopped) {
                return Err(JobError::fatal("stopped"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok("rested".to_owned())
    }

    fn nap(job: Nap, cx: &JobContext) -> Result<String, JobError> {
        sleep_for(job.ms, job.heeds.then_some(cx))
    }

    fn doze(job: Doze, cx: &JobContext) -> Result<String, JobError> {
        sleep_for(job.ms, Some(cx))
    }

    fn payload<J: Job>(job: &J) -> String {
        NewJob::of(job).unwrap().payload
    }

    fn assert_timed_out(out: Result<String, JobError>) {
        let err = out.expect_err("the run is over its time limit");
        assert!(err.retry, "a timeout is retried: {err:?}");
        assert!(err.message.starts_with("timed_out"), "{err:?}");
    }

    #[tokio::test]
    async fn a_run_that_heeds_its_stop_times_out_and_is_not_stuck() {
        let h = Handlers::new()
            .on_with(nap)
            .timeout(Duration::from_millis(50));
        let exec = h.clone().executor();
        let begun = Instant::now();
        let out = exec(payload(&Nap {
            ms: 10_000,
            heeds: true,
        }))
        .await;
        let took = begun.elapsed();
        assert_timed_out(out);
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(h.stuck(), 0, "it returned within the grace");
    }

    #[tokio::test]
    async fn a_run_that_ignores_its_stop_is_stuck_until_it_returns() {
        let h = Handlers::new()
            .on_with(nap)
            .timeout(Duration::from_millis(50));
        let exec = h.clone().executor();
        let begun = Instant::now();
        let out = exec(payload(&Nap {
            ms: 600,
            heeds: false,
        }))
        .await;
        let took = begun.elapsed();
        assert_timed_out(out);
        assert!(
            took < Duration::from_millis(450),
            "answered at the limit and its grace, not when the run returned: {took:?}"
        );
        assert_eq!(h.stuck(), 1, "its thread is stuck (a clone sees the gauge)");
        while h.stuck() > 0 {
            assert!(begun.elapsed() < Duration::from_secs(5), "never returned");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            begun.elapsed() >= Duration::from_millis(600),
            "off the gauge only once it returned"
        );
    }

    #[tokio::test]
    async fn a_types_own_limit_overrides_the_default_and_none_means_none() {
        let ms = |ms| Duration::from_millis(ms);
        let h = Handlers::new()
            .on_with(nap)
            .timeout(ms(5_000))
            .on_with(doze)
            .default_timeout(ms(50));
        assert_eq!(h.timeout_of("nap"), Some(ms(5_000)));
        assert_eq!(h.timeout_of("doze"), Some(ms(50)), "the default");
        assert_eq!(h.timeout_of("other"), None, "no handler");
        let exec = h.clone().executor();
        let nap_job = payload(&Nap {
            ms: 150,
            heeds: true,
        });
        assert_eq!(exec(nap_job.clone()).await.unwrap(), "\"rested\"");
        assert_timed_out(exec(payload(&Doze { ms: 150 })).await);

        // No limit set: none.
        let h = Handlers::new().on_with(nap).on_with(doze);
        assert_eq!((h.timeout_of("nap"), h.timeout_of("doze")), (None, None));
        assert_eq!(h.executor()(nap_job).await.unwrap(), "\"rested\"");

        // `timeout` sets the type registered last; before any, the default. A type
        // registered again loses its own.
        let h = Handlers::new()
            .timeout(ms(7))
            .on_with(nap)
            .timeout(ms(9))
            .on_with(doze);
        assert_eq!(
            (h.timeout_of("nap"), h.timeout_of("doze")),
            (Some(ms(9)), Some(ms(7)))
        );
        let h = h.on_with(nap);
        assert_eq!(h.timeout_of("nap"), Some(ms(7)));
    }

    #[tokio::test]
    async fn the_limit_counts_the_run_not_its_wait_for_a_thread() {
        // One thread: the second job waits for the first (150 ms), then runs 150 ms: 300 ms
        // after it was handed over, under a limit of 250 ms that it never exceeds on its thread.
        let (tx, rx) = std::sync::mpsc::channel::<(Run, oneshot::Sender<_>)>();
        std::thread::spawn(move || {
            for (run, reply) in rx {
                let _ = reply.send(run());
            }
        });
        let tx = std::sync::Mutex::new(tx);
        let h = Handlers::new()
            .on_with(doze)
            .timeout(Duration::from_millis(250));
        let exec = h.executor_on(move |run| {
            let (reply, out) = oneshot::channel();
            tx.lock().unwrap().send((run, reply)).unwrap();
            Box::pin(async move { out.await.unwrap() })
        });
        let job = payload(&Doze { ms: 150 });
        let (first, second) = tokio::join!(exec(job.clone()), exec(job));
        assert_eq!(first.unwrap(), "\"rested\"");
        assert_eq!(second.unwrap(), "\"rested\"");
    }

    #[tokio::test]
    async fn a_run_dropped_by_the_worker_is_told_to_stop_and_never_counted_stuck() {
        let told = Arc::new(AtomicBool::new(false));
        let h = Handlers::new()
            .on_with({
                let told = told.clone();
                move |_: Doze, cx: &JobContext| {
                    while !cx.stopped() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    told.store(true, Ordering::SeqCst);
                    Ok("stopped".to_owned())
                }
            })
            .timeout(Duration::from_secs(60));
        let exec = h.clone().executor();
        let out = tokio::time::timeout(Duration::from_millis(50), exec(payload(&Doze { ms: 0 })));
        assert!(out.await.is_err(), "still running when dropped");
        let begun = Instant::now();
        while !told.load(Ordering::SeqCst) {
            assert!(
                begun.elapsed() < Duration::from_secs(5),
                "never told to stop"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(h.stuck(), 0);
    }
}
