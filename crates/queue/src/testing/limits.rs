//! Limits: attempts (retries with a backoff, then failed), stalls (apart from attempts, with a
//! limit of their own) and the backlog (full past its cap, and a prefix of a batch stored).

use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{LEASE, NO_WAIT, Store, TestQueue, options};
use crate::{
    Claimed, Completion, EnqueueError, JobError, JobQueue, JobStatus, NewJob, QueueOptions,
    WorkerId,
};

/// A retryable error queues the job again after a backoff until its attempts are spent, then it
/// is `failed` with the last error; a non-retryable error fails it at once.
pub async fn retry_with_backoff_then_failed<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
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
}

/// Claims `id`'s next run, polling until its backoff has passed; returns the wait.
async fn claim_next<Q: JobQueue>(q: &Q) -> (Claimed, Duration) {
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

/// A job that kills every worker that runs it ends failed after `max_stalls` stalls, though it
/// has only one attempt: stalls do not spend attempts, and they have their own limit.
pub async fn poison_job_ends_failed<S: Store>(store: S, test: &str) {
    let options = QueueOptions {
        max_stalls: 3,
        ..options()
    };
    let Some(h) = TestQueue::open(store, test, options).await else {
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
}

/// With `max_backlog` 20, 64 concurrent enqueues store exactly 20 and refuse 44 as full; a
/// running job still counts, a finished one frees its slot.
pub async fn cap_rejects_exactly_the_overflow<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(
        store,
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
}

/// `enqueue_prefix` stores jobs in order up to the first that does not fit and stops there:
/// the stored jobs are a prefix, claimed in their order, and the refusal names the full depth.
pub async fn a_prefix_stops_at_the_first_job_that_does_not_fit<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(
        store,
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
}
