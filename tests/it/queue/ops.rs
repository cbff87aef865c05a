//! Conformance tests of the queue operations, run on each backend by `conformance!`.

use std::collections::HashSet;
use std::time::Duration;

use offload::queue::latency::{MAX_LABELS, OTHER};
use offload::queue::{
    Claimed, Completion, EnqueueError, JobError, JobId, JobQueue, JobStatus, NewJob, Queue,
    QueueOptions, WorkerId,
};
use tokio::time::{Instant, sleep};

use super::{Backend, LEASE, NO_WAIT, options};

pub(super) async fn round_trip(b: Backend, test: &str) {
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

pub(super) async fn unknown_and_malformed_ids(b: Backend, test: &str) {
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

pub(super) async fn claim_is_exclusive(b: Backend, test: &str) {
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

pub(super) async fn stale_holder_is_refused(b: Backend, test: &str) {
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
    // A stall, not a failed attempt: counted apart, and the attempt given back.
    assert_eq!((v.attempts, v.stalls), (0, 1));
    let other = h.handle().await;
    let b2 = other
        .claim(&WorkerId::new(), LEASE, NO_WAIT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b2.id.clone(), b2.attempt), (id.clone(), 1));
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
        (v.status, v.attempts, v.stalls, v.result.as_deref()),
        (JobStatus::Done, 1, 1, Some("\"fresh\""))
    );
    assert_eq!(v.error, None);
    assert_eq!(
        q.counts().await.unwrap().stalls,
        1,
        "the stall is counted for metrics"
    );
    h.cleanup().await;
}

/// Claims `id`'s next run, polling until its backoff has passed; returns the wait.
async fn claim_next(q: &Queue) -> (Claimed, Duration) {
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

pub(super) async fn retry_with_backoff_then_failed(b: Backend, test: &str) {
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

/// A job that kills every worker that runs it ends failed after `max_stalls` stalls, though it
/// has only one attempt: stalls do not spend attempts, and they have their own limit.
pub(super) async fn poison_job_ends_failed(b: Backend, test: &str) {
    let options = QueueOptions {
        max_stalls: 3,
        ..options()
    };
    let Some(h) = b.open(test, options).await else {
        return;
    };
    let q = &h.queue;
    let id = q.enqueue(NewJob::new("{}").max_attempts(1)).await.unwrap();
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
    assert_eq!((runs, v.attempts, v.stalls, v.max_stalls), (3, 0, 3, 3));
    assert!(v.error.unwrap().contains("lease expired"), "error says why");
    assert_eq!(q.counts().await.unwrap().failed, 1);
    assert!(
        q.claim(&WorkerId::new(), lease, NO_WAIT)
            .await
            .unwrap()
            .is_none()
    );
    h.cleanup().await;
}

pub(super) async fn cap_rejects_exactly_the_overflow(b: Backend, test: &str) {
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

pub(super) async fn prune_after_retention(b: Backend, test: &str) {
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

/// Finished jobs past the retention leave the counts at once, before any prune deletes them
/// (the finished counters less the expired rows), and after the prune too; the counters go on
/// counting new jobs from there.
pub(super) async fn counts_drop_jobs_past_retention_before_prune(b: Backend, test: &str) {
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
    let me = &WorkerId::new();
    let finish = |ok: bool| async move {
        q.enqueue(NewJob::new("1")).await.unwrap();
        let job = q.claim(me, LEASE, NO_WAIT).await.unwrap().unwrap();
        let outcome = if ok {
            Ok("1".into())
        } else {
            Err(JobError::fatal("no"))
        };
        q.complete(&job, outcome).await.unwrap()
    };
    assert_eq!(finish(true).await, Completion::Done);
    assert_eq!(finish(true).await, Completion::Done);
    assert_eq!(finish(false).await, Completion::Failed);
    q.enqueue(NewJob::new("waiting")).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.running, c.done, c.failed), (1, 0, 2, 1));
    sleep(retention + Duration::from_millis(150)).await;
    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.queued, c.done, c.failed),
        (1, 0, 0),
        "past the retention, before a prune"
    );
    assert_eq!(q.prune().await.unwrap(), 3);
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.done, c.failed), (1, 0, 0), "after the prune");
    let job = q.claim(me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(
        q.complete(&job, Ok("2".into())).await.unwrap(),
        Completion::Done
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.running, c.done, c.failed), (0, 0, 1, 0));
    h.cleanup().await;
}

/// The latency histogram counts each job done (not failed) under its label, jobs without one
/// in the total only; labels past the first `MAX_LABELS` count as `other`, also when they come
/// in one batch; destroying the queue (Redis, Postgres) deletes the histogram.
pub(super) async fn latency_counts_done_jobs_by_label(b: Backend, test: &str) {
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let mut enqueued = Vec::new();
    for label in ["count:1", "count:1", "count:1", "primes:5", "primes:5", ""] {
        enqueued.push(q.enqueue(NewJob::new("{}").label(label)).await.unwrap());
    }
    let doomed = q
        .enqueue(NewJob::new("{}").label("count:1").max_attempts(1))
        .await
        .unwrap();
    const WAITED: Duration = Duration::from_millis(40);
    sleep(WAITED).await;
    let jobs = q.claim_batch(&me, LEASE, 100, NO_WAIT).await.unwrap();
    assert_eq!(jobs.len(), 7);
    let outcomes = jobs
        .into_iter()
        .map(|job| {
            let outcome = if job.id == doomed {
                Err(JobError::fatal("no"))
            } else {
                Ok("1".to_owned())
            };
            (job, outcome)
        })
        .collect();
    q.complete_batch(outcomes).await.unwrap();
    let l = q.latency().await.unwrap();
    let count = |label: &str| l.by_label.get(label).map_or(0, |h| h.count());
    assert_eq!(
        (count("count:1"), count("primes:5"), count("")),
        (3, 2, 1),
        "{l:?}"
    );
    let all = l.total();
    assert_eq!(all.count(), 6, "the failed job is not counted");
    let p50 = all.quantile(0.5).unwrap();
    assert!(
        p50 >= WAITED.as_millis() as f64 * 0.95 && p50 <= all.max_ms() as f64,
        "p50 {p50} ms, max {} ms",
        all.max_ms()
    );
    assert!(all.max_ms() < 10_000, "max {} ms", all.max_ms());

    // Two labels are kept; a batch of 40 more: the first 30 (in label order) fill the 32, the
    // other 10 count as `other`.
    let (many, kept) = (40, MAX_LABELS - 2);
    for i in 0..many {
        q.enqueue(NewJob::new("{}").label(format!("w:{i:02}")))
            .await
            .unwrap();
    }
    let jobs = q.claim_batch(&me, LEASE, 100, NO_WAIT).await.unwrap();
    assert_eq!(jobs.len(), many);
    q.complete_batch(jobs.into_iter().map(|j| (j, Ok("1".to_owned()))).collect())
        .await
        .unwrap();
    let l = q.latency().await.unwrap();
    let labels: Vec<&String> = l
        .by_label
        .keys()
        .filter(|k| !k.is_empty() && *k != OTHER)
        .collect();
    assert_eq!(labels.len(), MAX_LABELS, "{labels:?}");
    assert_eq!(
        l.by_label.get(OTHER).map(|h| h.count()),
        Some((many - kept) as u64)
    );
    assert_eq!(l.total().count(), 6 + many as u64);
    // A label already kept still counts under its own name.
    q.enqueue(NewJob::new("{}").label("w:00")).await.unwrap();
    let job = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    q.complete(&job, Ok("1".into())).await.unwrap();
    let l = q.latency().await.unwrap();
    assert_eq!(l.by_label["w:00"].count(), 2);
    assert_eq!(
        q.counts().await.unwrap().done,
        6 + many as u64 + 1,
        "done jobs"
    );

    match &h.queue {
        Queue::Redis(r) => r.destroy().await.unwrap(),
        Queue::Postgres(p) => p.destroy().await.unwrap(),
        Queue::Sqlite(_) => {}
    }
    if !matches!(h.queue, Queue::Sqlite(_)) {
        assert_eq!(q.latency().await.unwrap(), Default::default(), "destroyed");
    }
    h.cleanup().await;
}

/// Batched claims from several connections at once never hand one job to two holders (SQLite:
/// one writer at a time; Redis: one script at a time; Postgres: `FOR UPDATE SKIP LOCKED`), and
/// every job is claimed; each holder's lease token is the one stored.
pub(super) async fn batched_claims_are_exclusive(b: Backend, test: &str) {
    const JOBS: usize = 500;
    const HANDLES: usize = 4;
    const BATCH: usize = 16;
    let Some(h) = b.open(test, options()).await else {
        return;
    };
    for i in 0..JOBS {
        h.queue.enqueue(NewJob::new(i.to_string())).await.unwrap();
    }
    let mut claimers = tokio::task::JoinSet::new();
    for _ in 0..HANDLES {
        let q = h.handle().await;
        claimers.spawn(async move {
            let me = WorkerId::new();
            let mut got = Vec::new();
            loop {
                // A long lease: nothing may expire (and be handed out again) during the test.
                let batch = q
                    .claim_batch(&me, Duration::from_secs(60), BATCH, NO_WAIT)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                assert!(batch.len() <= BATCH);
                got.extend(batch);
            }
        });
    }
    let mut ids = HashSet::new();
    let mut all = Vec::new();
    let mut per_handle = Vec::new();
    while let Some(got) = claimers.join_next().await {
        let got = got.unwrap();
        per_handle.push(got.len());
        for job in got {
            assert!(ids.insert(job.id.clone()), "{:?} claimed twice", job.id);
            all.push(job);
        }
    }
    assert_eq!(
        (all.len(), ids.len()),
        (JOBS, JOBS),
        "per handle: {per_handle:?}"
    );
    let c = h.queue.counts().await.unwrap();
    assert_eq!((c.queued, c.running), (0, JOBS as u64));
    // Each holder's (id, lease token) is the one stored: a second claim of a job would have
    // replaced its token, and the first holder's heartbeat and completion would be refused.
    for job in &all {
        assert!(
            h.queue.heartbeat(job, LEASE * 100).await.unwrap(),
            "{:?}",
            job.id
        );
    }
    let done = h
        .queue
        .complete_batch(all.iter().map(|j| (j.clone(), Ok("1".into()))).collect())
        .await
        .unwrap();
    assert!(done.iter().all(|c| *c == Completion::Done), "{done:?}");
    assert_eq!(h.queue.counts().await.unwrap().done, JOBS as u64);
    h.cleanup().await;
}

/// `enqueue_prefix` stores jobs in order up to the first that does not fit and stops there:
/// the stored jobs are a prefix, claimed in their order, and the refusal names the full depth.
pub(super) async fn a_prefix_stops_at_the_first_job_that_does_not_fit(b: Backend, test: &str) {
    let Some(h) = b
        .open(
            test,
            QueueOptions {
                max_backlog: 3,
                ..options()
            },
        )
        .await
    else {
        return;
    };
    h.queue.enqueue(NewJob::new("first")).await.unwrap();
    let jobs = ["a", "b", "c", "d"].map(NewJob::new).to_vec();
    let (ids, refused) = h.queue.enqueue_prefix(jobs).await;
    assert_eq!(ids.len(), 2, "two places were free");
    assert!(
        matches!(refused, Some(EnqueueError::Full(3))),
        "{refused:?}"
    );
    // An empty call and a call that all fits answer with nothing refused.
    assert!(matches!(h.queue.enqueue_prefix(Vec::new()).await, (v, None) if v.is_empty()));
    let worker = WorkerId::new();
    let mut order = Vec::new();
    for _ in 0..3 {
        let job = h
            .queue
            .claim(&worker, LEASE, NO_WAIT)
            .await
            .unwrap()
            .unwrap();
        h.queue.complete(&job, Ok("1".into())).await.unwrap();
        order.push(job.payload);
    }
    assert_eq!(order, ["first", "a", "b"]);
    for (id, payload) in ids.iter().zip(["a", "b"]) {
        let view = h.queue.get(id).await.unwrap().expect("stored");
        assert_eq!(view.status, JobStatus::Done, "{payload}");
    }
    let (ids, refused) = h
        .queue
        .enqueue_prefix(["c", "d"].map(NewJob::new).to_vec())
        .await;
    assert_eq!((ids.len(), refused.is_none()), (2, true), "{refused:?}");
    h.cleanup().await;
}
