//! The worker loop's promises: a dead worker's job runs again, shutdown gives jobs back
//! unspent, a long job keeps its lease by heartbeats, a panicking job is retried, a job over
//! its time limit is retried and then fails, and loops on several connections drain a queue
//! with exactly one result per job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

use super::{LEASE, NO_WAIT, Store, TestQueue, options};
use crate::worker::{self, Executor, WorkerConfig};
use crate::{
    Completion, Handlers, Job, JobContext, JobError, JobQueue, JobStatus, NewJob, TIMED_OUT,
    WorkerId,
};

/// The loop's settings in these tests: short polls, waits and reaps, and the tests' lease.
fn test_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        poll_min: Duration::from_millis(2),
        poll_max: Duration::from_millis(20),
        block: Duration::from_millis(100),
        reap_every: Duration::from_millis(100),
        grace: Duration::from_secs(2),
        ..WorkerConfig::default()
    }
    .with_lease(LEASE)
}

/// An executor that answers `{"echo": payload}`.
fn echo() -> Executor {
    Arc::new(|payload| Box::pin(async move { Ok(format!("{{\"echo\":{payload}}}")) }))
}

/// Runs a worker loop until `until` says stop (checked every 10 ms) or 10 s pass.
async fn run_worker_until<Q, F, Fut>(
    q: Q,
    exec: Executor,
    config: WorkerConfig,
    until: F,
) -> worker::WorkerReport
where
    Q: JobQueue + Clone,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    let stop = async move {
        while !until().await && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
    };
    worker::run(q, exec, config, stop).await
}

/// A worker that claimed a job and died: after its lease the loop's reaper queues the job again,
/// the loop runs it once (a stall, one attempt), and the dead holder's late result is refused.
pub async fn dead_worker_job_runs_again<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let id = h.queue.enqueue(NewJob::new("7")).await.unwrap();
    // A worker claims the job and dies without a word.
    let dead = h.handle().await;
    let taken = dead
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    drop(dead);
    let q = h.queue.clone();
    let jid = id.clone();
    let report = run_worker_until(h.handle().await, echo(), test_config(), move || {
        let (q, jid) = (q.clone(), jid.clone());
        async move { q.get(&jid).await.unwrap().unwrap().status == JobStatus::Done }
    })
    .await;
    assert_eq!(report.done, 1);
    let v = h.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.attempts, v.stalls, v.result.as_deref()),
        (JobStatus::Done, 1, 1, Some("{\"echo\":7}"))
    );
    assert_eq!(
        h.queue.complete(&taken, Ok("late".into())).await.unwrap(),
        Completion::Refused
    );
}

/// Shutdown waits its grace for a running job, then gives it back: queued, its attempt not
/// counted, and the next claim is its first attempt.
pub async fn shutdown_gives_jobs_back<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let id = h.queue.enqueue(NewJob::new("{}")).await.unwrap();
    let slow: Executor = Arc::new(|_| {
        Box::pin(async {
            sleep(Duration::from_secs(30)).await;
            Ok("late".to_owned())
        })
    });
    let q = h.queue.clone();
    let jid = id.clone();
    let config = WorkerConfig {
        grace: Duration::from_millis(200),
        ..test_config()
    };
    let stop = async move {
        while q.get(&jid).await.unwrap().unwrap().status != JobStatus::Running {
            sleep(Duration::from_millis(5)).await;
        }
    };
    let started = Instant::now();
    let report = worker::run(h.handle().await, slow, config, stop).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown is bounded by the grace"
    );
    assert_eq!(report.released, 1);
    let v = h.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.attempts),
        (JobStatus::Queued, 0),
        "given back, attempt not counted"
    );
    let again = h
        .queue
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id, again.attempt), (id, 1));
}

/// All of the above at once: three loops on three connections drain 300 jobs, a tenth of them
/// failing their first run; each job is done exactly once with its own result.
pub async fn worker_loops_drain_everything<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    const JOBS: usize = 300;
    let mut ids = HashMap::new();
    for i in 0..JOBS {
        ids.insert(
            h.queue.enqueue(NewJob::new(i.to_string())).await.unwrap(),
            i,
        );
    }
    // Every tenth job fails its first run, to mix retries in.
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let exec: Executor = {
        let runs = Arc::clone(&runs);
        Arc::new(move |payload: String| {
            let runs = Arc::clone(&runs);
            Box::pin(async move {
                let n = {
                    let mut runs = runs.lock().unwrap();
                    let n = runs.entry(payload.clone()).or_default();
                    *n += 1;
                    *n
                };
                let i: usize = payload.parse().unwrap();
                if i.is_multiple_of(10) && n == 1 {
                    return Err(JobError::retry("first run fails"));
                }
                sleep(Duration::from_millis(1)).await;
                Ok(format!("{{\"square\":{}}}", i * i))
            })
        })
    };
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (q, counter) = (h.handle().await, h.queue.clone());
        let exec = Arc::clone(&exec);
        // A long lease: this test is about throughput and exactly-once results, and a loaded
        // machine must not turn a late heartbeat into a second run.
        let config = test_config().with_lease(Duration::from_secs(5));
        workers.push(tokio::spawn(run_worker_until(q, exec, config, move || {
            let counter = counter.clone();
            async move { counter.counts().await.unwrap().done == JOBS as u64 }
        })));
    }
    let mut done = 0;
    for w in workers {
        let r = w.await.unwrap();
        assert_eq!(r.lost, 0);
        done += r.done;
    }
    assert_eq!(done, JOBS as u64, "each job completed exactly once");
    for (id, i) in &ids {
        let v = h.queue.get(id).await.unwrap().unwrap();
        assert_eq!(v.status, JobStatus::Done, "job {i}");
        assert_eq!(v.result, Some(format!("{{\"square\":{}}}", i * i)));
        assert_eq!(v.attempts, if i % 10 == 0 { 2 } else { 1 });
    }
    let c = h.queue.counts().await.unwrap();
    assert_eq!(
        (c.queued, c.running, c.done, c.failed),
        (0, 0, JOBS as u64, 0)
    );
}

/// A job that runs for three leases keeps its lease by the loop's heartbeats: a rival that reaps
/// and claims all along never takes it.
pub async fn long_job_keeps_its_lease<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let id = h.queue.enqueue(NewJob::new("{}")).await.unwrap();
    // Runs for three leases; only heartbeats keep it from being taken back.
    let slow: Executor = Arc::new(|_| {
        Box::pin(async {
            sleep(LEASE * 3).await;
            Ok("\"slow\"".to_owned())
        })
    });
    let q = h.queue.clone();
    let jid = id.clone();
    let worker = tokio::spawn(run_worker_until(
        h.handle().await,
        slow,
        test_config(),
        move || {
            let (q, jid) = (q.clone(), jid.clone());
            async move { q.get(&jid).await.unwrap().unwrap().status == JobStatus::Done }
        },
    ));
    while h.queue.get(&id).await.unwrap().unwrap().status != JobStatus::Running {
        sleep(Duration::from_millis(5)).await;
    }
    // Once the job runs, a rival keeps reaping and claiming for longer than the job takes.
    let rival = h.handle().await;
    let me = WorkerId::new();
    let mut stolen = 0;
    for _ in 0..50 {
        rival.reap().await.unwrap();
        if rival.claim(&me, LEASE, NO_WAIT).await.unwrap().is_some() {
            stolen += 1;
        }
        sleep(Duration::from_millis(25)).await;
    }
    let report = worker.await.unwrap();
    assert_eq!(stolen, 0, "a heartbeated job is never taken back");
    assert_eq!((report.done, report.lost), (1, 0));
    let v = h.queue.get(&id).await.unwrap().unwrap();
    assert_eq!((v.status, v.attempts), (JobStatus::Done, 1));
}

/// A job whose run panics is retried (the loop survives), and its second run's result stands.
pub async fn panicking_job_is_retried<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let id = h.queue.enqueue(NewJob::new("{}")).await.unwrap();
    let runs = Arc::new(Mutex::new(0u32));
    let exec: Executor = {
        let runs = Arc::clone(&runs);
        Arc::new(move |_| {
            let runs = Arc::clone(&runs);
            Box::pin(async move {
                let n = {
                    let mut runs = runs.lock().unwrap();
                    *runs += 1;
                    *runs
                };
                assert!(n > 1, "the first run panics");
                Ok("\"second\"".to_owned())
            })
        })
    };
    let q = h.queue.clone();
    let jid = id.clone();
    let report = run_worker_until(h.handle().await, exec, test_config(), move || {
        let (q, jid) = (q.clone(), jid.clone());
        async move { q.get(&jid).await.unwrap().unwrap().status == JobStatus::Done }
    })
    .await;
    assert_eq!(
        (report.retried, report.done),
        (1, 1),
        "the worker survives the panic"
    );
    let v = h.queue.get(&id).await.unwrap().unwrap();
    assert_eq!((v.attempts, v.result.as_deref()), (2, Some("\"second\"")));
}

/// A job whose handler works until it is told to stop (10 s at most).
#[derive(Serialize, Deserialize)]
struct Endless;
impl Job for Endless {
    const NAME: &'static str = "endless";
    type Output = ();
}

/// A job whose every run goes past its type's time limit: each run is stopped at the limit and
/// counts as a failed attempt, retried with backoff, and once its attempts are spent the job
/// ends `failed` with a `timed_out` error. The handler heeds its stop, so no run is stuck.
pub async fn timed_out_job_ends_failed<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let limit = Duration::from_millis(50);
    let runs = Arc::new(AtomicU32::new(0));
    let handlers = Handlers::new()
        .on_with({
            let runs = Arc::clone(&runs);
            move |_: Endless, cx: &JobContext| {
                runs.fetch_add(1, Ordering::SeqCst);
                let end = std::time::Instant::now() + Duration::from_secs(10);
                while !cx.stopped() && std::time::Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            }
        })
        .timeout(limit);
    let id = h
        .queue
        .enqueue(NewJob::of(&Endless).unwrap())
        .await
        .unwrap();
    let q = h.queue.clone();
    let jid = id.clone();
    let started = Instant::now();
    let report = run_worker_until(
        h.handle().await,
        handlers.clone().executor(),
        test_config(),
        move || {
            let (q, jid) = (q.clone(), jid.clone());
            async move { q.get(&jid).await.unwrap().unwrap().status == JobStatus::Failed }
        },
    )
    .await;
    let v = h.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(v.status, JobStatus::Failed, "{v:?}");
    assert_eq!((v.attempts, v.max_attempts), (3, 3), "{v:?}");
    let error = v.error.unwrap_or_default();
    assert!(error.starts_with(TIMED_OUT), "stored error: {error:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "one run per attempt");
    assert_eq!((report.retried, report.failed, report.done), (2, 1, 0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "each run stopped at its limit: {:?}",
        started.elapsed()
    );
    assert_eq!(
        handlers.stuck(),
        0,
        "a run that heeds its stop is not stuck"
    );
}
