//! Reads: retention (finished jobs pruned, and gone from the counts at once) and the latency
//! histogram.

use std::time::Duration;

use tokio::time::sleep;

use super::{LEASE, NO_WAIT, Store, TestQueue, options};
use crate::latency::{MAX_LABELS, OTHER};
use crate::{Completion, JobError, JobQueue, JobStatus, NewJob, QueueOptions, WorkerId};

/// Retention: finished jobs (done and failed) are pruned after the retention and read as
/// unknown; a waiting job stays.
pub async fn prune_after_retention<S: Store>(store: S, test: &str) {
    let retention = Duration::from_millis(300);
    let Some(h) = TestQueue::open(
        store,
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
}

/// Finished jobs past the retention leave the counts at once, before any prune deletes them
/// (the finished counters less the expired rows), and after the prune too; the counters go on
/// counting new jobs from there.
pub async fn counts_drop_jobs_past_retention_before_prune<S: Store>(store: S, test: &str) {
    let retention = Duration::from_millis(300);
    let Some(h) = TestQueue::open(
        store,
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
}

/// The latency histogram counts each job done (not failed) under its label, jobs without one
/// in the total only; labels past the first `MAX_LABELS` count as `other`, also when they come
/// in one batch; destroying the queue, where the store deletes data that way (Redis, Postgres),
/// deletes the histogram.
pub async fn latency_counts_done_jobs_by_label<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
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

    if h.destroy().await {
        assert_eq!(q.latency().await.unwrap(), Default::default(), "destroyed");
    }
}
