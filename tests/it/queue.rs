//! Queue conformance suite: one set of tests, each run on SQLite (temp dir) and on Redis at
//! `REDIS_URL` (a unique key prefix per test, deleted after). Without `REDIS_URL` the Redis runs
//! say loudly that they did not run; with `OFFLOAD_REQUIRE_REDIS=1` they fail instead. A
//! `REDIS_URL` that cannot be reached always fails: a set URL means Redis was meant to be tested.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use offload::queue::worker::{self, Executor, WorkerConfig};
use offload::queue::{
    Completion, EnqueueError, JobError, JobId, JobQueue, JobStatus, NewJob, Queue, QueueOptions,
    WorkerId, open,
};
use tokio::time::{Instant, sleep};

/// Short leases keep the suite fast; still far above a claim's round trip.
const LEASE: Duration = Duration::from_millis(300);
/// Nothing blocks in these tests: a claim that finds nothing must answer quickly.
const NO_WAIT: Duration = Duration::ZERO;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Redis,
}

/// One queue under test; `handle` opens another connection to it, as another process would.
struct Harness {
    url: String,
    options: QueueOptions,
    queue: Queue,
    _dir: Option<tempfile::TempDir>,
}

fn options() -> QueueOptions {
    QueueOptions {
        retry_base: Duration::from_millis(40),
        retry_max: Duration::from_millis(200),
        ..QueueOptions::default()
    }
}

fn redis_url(test: &str) -> Option<String> {
    let required = std::env::var("OFFLOAD_REQUIRE_REDIS").is_ok_and(|v| v == "1");
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if required => panic!("OFFLOAD_REQUIRE_REDIS=1 but REDIS_URL is not set ({test})"),
        _ => {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "!!!! REDIS_URL is not set: Redis queue test `{test}` DID NOT RUN !!!!"
            );
            None
        }
    }
}

impl Backend {
    async fn open(self, test: &str, options: QueueOptions) -> Option<Harness> {
        let (url, dir, options) = match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("q.db").display());
                (url, Some(dir), options)
            }
            Backend::Redis => {
                let url = redis_url(test)?;
                let name = format!("test-{test}-{}", &JobId::random().as_str()[..8]);
                (url, None, QueueOptions { name, ..options })
            }
        };
        let queue = match open(&url, options.clone()).await {
            Ok(q) => q,
            Err(e) => panic!("cannot open {url}: {e}"),
        };
        Some(Harness {
            url,
            options,
            queue,
            _dir: dir,
        })
    }
}

impl Harness {
    async fn handle(&self) -> Queue {
        open(&self.url, self.options.clone())
            .await
            .expect("second handle")
    }

    async fn cleanup(self) {
        if let Queue::Redis(q) = &self.queue {
            q.destroy().await.expect("delete test keys");
        }
    }
}

/// Runs a conformance test on both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Sqlite, stringify!($name)).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Redis, stringify!($name)).await })*
        }
    };
}

conformance!(
    round_trip,
    unknown_and_malformed_ids,
    claim_is_exclusive,
    stale_holder_is_refused,
    dead_worker_job_runs_again,
    retry_with_backoff_then_failed,
    poison_job_ends_failed,
    cap_rejects_exactly_the_overflow,
    prune_after_retention,
    shutdown_gives_jobs_back,
    worker_loops_drain_everything,
);

async fn round_trip(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    let q = &h.queue;
    let id = q.enqueue(NewJob::new(r#"{"n":1}"#)).await.unwrap();
    let v = q.get(&id).await.unwrap().expect("stored");
    assert_eq!(
        (v.status, v.attempts, v.max_attempts),
        (JobStatus::Queued, 0, 3)
    );
    assert!(v.enqueued_at > 0 && v.started_at.is_none() && v.result.is_none());

    let job = q
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(
        (&job.id, job.payload.as_str(), job.attempt),
        (&id, r#"{"n":1}"#, 1)
    );
    let v = q.get(&id).await.unwrap().unwrap();
    assert_eq!((v.status, v.attempts), (JobStatus::Running, 1));
    assert!(v.started_at.is_some());
    assert!(q.heartbeat(&job, LEASE).await.unwrap());

    let done = q.complete(&job, Ok(r#"{"r":42}"#.into())).await.unwrap();
    assert_eq!(done, Completion::Done);
    let v = q.get(&id).await.unwrap().unwrap();
    assert_eq!(v.status, JobStatus::Done);
    assert_eq!(v.result.as_deref(), Some(r#"{"r":42}"#));
    assert!(v.finished_at.unwrap() >= v.started_at.unwrap());
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["status"], "done");
    assert_eq!(json["id"], id.as_str());
    // Completing twice does not store a second result.
    assert_eq!(
        q.complete(&job, Ok("other".into())).await.unwrap(),
        Completion::Refused
    );
    assert_eq!(
        q.get(&id).await.unwrap().unwrap().result.as_deref(),
        Some(r#"{"r":42}"#)
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.running, c.done, c.failed), (0, 0, 1, 0));
    h.cleanup().await;
}

async fn unknown_and_malformed_ids(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    assert!(JobId::parse("not-an-id").is_err());
    assert!(JobId::parse("").is_err());
    assert!(JobId::parse(&"g".repeat(32)).is_err());
    let unknown = JobId::random();
    assert_eq!(h.queue.get(&unknown).await.unwrap(), None);
    h.cleanup().await;
}

async fn claim_is_exclusive(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    const JOBS: usize = 60;
    for i in 0..JOBS {
        h.queue.enqueue(NewJob::new(i.to_string())).await.unwrap();
    }
    // Four handles (connections) with three claimers each, all racing.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let q = h.handle().await;
        for _ in 0..3 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                let me = WorkerId::new();
                let mut got = Vec::new();
                while let Some(job) = q
                    .claim(&me, Duration::from_secs(30), NO_WAIT)
                    .await
                    .unwrap()
                {
                    got.push(job.id);
                }
                got
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed exactly once");
    assert_eq!(unique.len(), JOBS);
    assert_eq!(h.queue.counts().await.unwrap().running, JOBS as u64);
    h.cleanup().await;
}

async fn stale_holder_is_refused(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    let q = &h.queue;
    let id = q.enqueue(NewJob::new("{}")).await.unwrap();
    let a = q
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    sleep(LEASE + Duration::from_millis(100)).await;
    assert_eq!(q.reap().await.unwrap(), 1);
    let v = q.get(&id).await.unwrap().unwrap();
    assert_eq!(v.status, JobStatus::Queued);
    assert!(v.error.unwrap().contains("lease expired"));
    let other = h.handle().await;
    let b2 = other
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b2.id.clone(), b2.attempt), (id.clone(), 2));
    // The first holder wakes up: its heartbeat and its result are refused.
    assert!(!q.heartbeat(&a, LEASE).await.unwrap());
    assert_eq!(
        q.complete(&a, Ok("\"stale\"".into())).await.unwrap(),
        Completion::Refused
    );
    assert!(!q.release(&a).await.unwrap());
    assert_eq!(
        other.complete(&b2, Ok("\"fresh\"".into())).await.unwrap(),
        Completion::Done
    );
    let v = q.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.attempts, v.result.as_deref()),
        (JobStatus::Done, 2, Some("\"fresh\""))
    );
    assert_eq!(v.error, None);
    h.cleanup().await;
}

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

fn echo() -> Executor {
    Arc::new(|payload| Box::pin(async move { Ok(format!("{{\"echo\":{payload}}}")) }))
}

/// Runs a worker loop until `until` says stop (checked every 10 ms) or 10 s pass.
async fn run_worker_until<F, Fut>(q: Queue, exec: Executor, until: F) -> worker::WorkerReport
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    let stop = async move {
        while !until().await && Instant::now() < deadline {
            sleep(Duration::from_millis(10)).await;
        }
    };
    worker::run(q, exec, test_config(), stop).await
}

async fn dead_worker_job_runs_again(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
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
    let report = run_worker_until(h.handle().await, echo(), move || {
        let (q, jid) = (q.clone(), jid.clone());
        async move { q.get(&jid).await.unwrap().unwrap().status == JobStatus::Done }
    })
    .await;
    assert_eq!(report.done, 1);
    let v = h.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.attempts, v.result.as_deref()),
        (JobStatus::Done, 2, Some("{\"echo\":7}"))
    );
    assert_eq!(
        h.queue.complete(&taken, Ok("late".into())).await.unwrap(),
        Completion::Refused
    );
    h.cleanup().await;
}

/// Claims `id`'s next run, polling until its backoff has passed; returns the wait.
async fn claim_next(q: &Queue) -> (offload::queue::Claimed, Duration) {
    let start = Instant::now();
    loop {
        if let Some(job) = q.claim(&WorkerId::new(), LEASE, NO_WAIT).await.unwrap() {
            return (job, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "retry never became due"
        );
        sleep(Duration::from_millis(2)).await;
    }
}

async fn retry_with_backoff_then_failed(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    let q = &h.queue;
    let id = q.enqueue(NewJob::new("{}")).await.unwrap();
    let mut waits = Vec::new();
    let mut job = q
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    for attempt in 1..=3u32 {
        assert_eq!(job.attempt, attempt);
        let outcome = q
            .complete(&job, Err(JobError::retry(format!("boom {attempt}"))))
            .await;
        let v = q.get(&id).await.unwrap().unwrap();
        assert_eq!(v.attempts, attempt);
        assert_eq!(v.error.as_deref(), Some(format!("boom {attempt}").as_str()));
        if attempt < 3 {
            assert_eq!(outcome.unwrap(), Completion::Retrying);
            assert_eq!(v.status, JobStatus::Queued);
            let (next, waited) = claim_next(q).await;
            waits.push(waited);
            job = next;
        } else {
            assert_eq!(outcome.unwrap(), Completion::Failed);
            assert_eq!(v.status, JobStatus::Failed);
            assert!(v.finished_at.is_some());
        }
    }
    // Backoff: at least half the exponential delay (40 ms, then 80 ms) before each retry.
    assert!(waits[0] >= Duration::from_millis(15), "{waits:?}");
    assert!(waits[1] >= Duration::from_millis(35), "{waits:?}");
    assert!(
        q.claim(&WorkerId::new(), LEASE, NO_WAIT)
            .await
            .unwrap()
            .is_none()
    );

    // A non-retryable error fails at once, attempts left or not.
    let id = q.enqueue(NewJob::new("{}")).await.unwrap();
    let job = q
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    let done = q
        .complete(&job, Err(JobError::fatal("bad payload")))
        .await
        .unwrap();
    assert_eq!(done, Completion::Failed);
    let v = q.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.attempts, v.error.as_deref()),
        (JobStatus::Failed, 1, Some("bad payload"))
    );
    assert_eq!(q.counts().await.unwrap().failed, 2);
    h.cleanup().await;
}

async fn poison_job_ends_failed(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    let q = &h.queue;
    let id = q.enqueue(NewJob::new("{}").max_attempts(2)).await.unwrap();
    let lease = Duration::from_millis(200);
    let mut runs = 0;
    let start = Instant::now();
    // The job kills its worker every time: claimed, never heartbeated, never completed.
    while q.get(&id).await.unwrap().unwrap().status != JobStatus::Failed {
        assert!(start.elapsed() < Duration::from_secs(5), "poison job loops");
        if q.claim(&WorkerId::new(), lease, NO_WAIT)
            .await
            .unwrap()
            .is_some()
        {
            runs += 1;
        }
        sleep(Duration::from_millis(50)).await;
        q.reap().await.unwrap();
    }
    let v = q.get(&id).await.unwrap().unwrap();
    assert_eq!((runs, v.attempts), (2, 2));
    assert!(v.error.unwrap().contains("lease expired"), "error says why");
    assert!(
        q.claim(&WorkerId::new(), lease, NO_WAIT)
            .await
            .unwrap()
            .is_none()
    );
    h.cleanup().await;
}

async fn cap_rejects_exactly_the_overflow(b: Backend, test: &str) {
    let Some(h) = b
        .open(
            test,
            QueueOptions {
                max_backlog: 20,
                ..options()
            },
        )
        .await
    else {
        return;
    };
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let q = h.queue.clone();
            tokio::spawn(async move { q.enqueue(NewJob::new(i.to_string())).await })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(EnqueueError::Full(depth)) => {
                assert_eq!(depth, 20);
                full += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, full), (20, 44));
    assert_eq!(h.queue.counts().await.unwrap().queued, 20);
    // A running job still counts; a finished one frees its slot.
    let job = h
        .queue
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        h.queue.enqueue(NewJob::new("x")).await,
        Err(EnqueueError::Full(_))
    ));
    h.queue.complete(&job, Ok("1".into())).await.unwrap();
    h.queue.enqueue(NewJob::new("x")).await.unwrap();
    assert!(matches!(
        h.queue.enqueue(NewJob::new("y")).await,
        Err(EnqueueError::Full(_))
    ));
    h.cleanup().await;
}

async fn prune_after_retention(b: Backend, test: &str) {
    let retention = Duration::from_millis(300);
    let Some(h) = b
        .open(
            test,
            QueueOptions {
                retention,
                ..options()
            },
        )
        .await
    else {
        return;
    };
    let q = &h.queue;
    let (done, failed, waiting) = (
        q.enqueue(NewJob::new("1")).await.unwrap(),
        q.enqueue(NewJob::new("2").max_attempts(1)).await.unwrap(),
        q.enqueue(NewJob::new("3")).await.unwrap(),
    );
    let me = WorkerId::new();
    let a = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    let b2 = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    q.complete(&a, Ok("1".into())).await.unwrap();
    q.complete(&b2, Err(JobError::retry("no"))).await.unwrap();
    assert!(q.get(&done).await.unwrap().is_some());
    assert_eq!(q.prune().await.unwrap(), 0, "nothing is old yet");
    sleep(retention + Duration::from_millis(150)).await;
    assert_eq!(q.prune().await.unwrap(), 2);
    assert_eq!(q.get(&done).await.unwrap(), None);
    assert_eq!(q.get(&failed).await.unwrap(), None);
    assert_eq!(
        q.get(&waiting).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.done, c.failed), (1, 0, 0));
    h.cleanup().await;
}

async fn shutdown_gives_jobs_back(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
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
    h.cleanup().await;
}

async fn worker_loops_drain_everything(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
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
                if i % 10 == 0 && n == 1 {
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
        workers.push(tokio::spawn(run_worker_until(q, exec, move || {
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
    h.cleanup().await;
}
