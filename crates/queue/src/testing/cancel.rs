//! Cancel and retry: a queued job never runs, a running one loses its lease and its handler is
//! told to stop, a finished one is left as it is; a failed or cancelled job can be queued again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{LEASE, NO_WAIT, Spin, Store, TestQueue, options, spin_handlers};
use crate::worker::{self, WorkerConfig};
use crate::{
    Cancel, Completion, JobError, JobId, JobQueue, JobStatus, NewJob, QueueOptions, Retry, WorkerId,
};

/// Queued, waiting for a retry, running, done, unknown: each answered as the trait says, and
/// the counts and the backlog follow.
pub async fn cancel_ends_unfinished_jobs_only<S: Store>(store: S, test: &str) {
    // A retry falls due only after the test.
    let opts = QueueOptions {
        retry_base: Duration::from_secs(60),
        retry_max: Duration::from_secs(60),
        ..options()
    };
    let Some(h) = TestQueue::open(store, test, opts).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    // Running, then done: a job that finished is left as it is.
    let done = q.enqueue(NewJob::new("1")).await.unwrap();
    let d = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    q.complete(&d, Ok("1".into())).await.unwrap();
    assert_eq!(
        q.cancel(&done).await.unwrap(),
        Cancel::Finished(JobStatus::Done)
    );
    // Waiting for a retry.
    let retrying = q.enqueue(NewJob::new("2")).await.unwrap();
    let r = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(
        q.complete(&r, Err(JobError::retry("again"))).await.unwrap(),
        Completion::Retrying
    );
    // Queued, and running.
    let queued = q.enqueue(NewJob::new("3")).await.unwrap();
    let running = q.enqueue(NewJob::new("4")).await.unwrap();
    let run = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(run.id, queued, "oldest first");
    let (queued, running) = (running, queued);
    assert_eq!(q.counts().await.unwrap().queued, 2);
    for (id, was) in [
        (&retrying, JobStatus::Queued),
        (&queued, JobStatus::Queued),
        (&running, JobStatus::Running),
    ] {
        assert_eq!(
            q.cancel(id).await.unwrap(),
            Cancel::Cancelled { was },
            "{id}"
        );
        let v = q.get(id).await.unwrap().expect("still readable");
        assert_eq!(v.status, JobStatus::Cancelled);
        assert!(v.finished_at.is_some(), "{v:?}");
        assert_eq!(
            q.cancel(id).await.unwrap(),
            Cancel::Finished(JobStatus::Cancelled),
            "a second cancel changes nothing"
        );
    }
    // The running holder is refused from now on.
    assert!(
        !q.heartbeat(&run, LEASE).await.unwrap(),
        "its lease is gone"
    );
    assert_eq!(
        q.complete(&run, Ok("late".into())).await.unwrap(),
        Completion::Refused
    );
    assert_eq!(
        q.get(&running).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    // Nothing is left to claim, and nothing is reaped.
    assert!(q.claim(&me, LEASE, NO_WAIT).await.unwrap().is_none());
    sleep(LEASE).await;
    assert_eq!(q.reap().await.unwrap(), 0);
    let c = q.counts().await.unwrap();
    assert_eq!(
        (c.queued, c.running, c.done, c.cancelled),
        (0, 0, 1, 3),
        "{c:?}"
    );
    let unknown = JobId::random();
    assert_eq!(q.cancel(&unknown).await.unwrap(), Cancel::NotFound);
}

/// Cancelled jobs free their places in the backlog at once, and leave with the retention.
pub async fn cancelled_jobs_free_the_backlog_and_expire<S: Store>(store: S, test: &str) {
    let retention = Duration::from_millis(300);
    let opts = QueueOptions {
        max_backlog: 2,
        retention,
        ..options()
    };
    let Some(h) = TestQueue::open(store, test, opts).await else {
        return;
    };
    let q = &h.queue;
    let a = q.enqueue(NewJob::new("1")).await.unwrap();
    q.enqueue(NewJob::new("2")).await.unwrap();
    assert!(q.enqueue(NewJob::new("3")).await.is_err(), "full");
    q.cancel(&a).await.unwrap();
    q.enqueue(NewJob::new("3"))
        .await
        .expect("the cancelled job's place is free");
    sleep(retention + Duration::from_millis(150)).await;
    assert_eq!(q.counts().await.unwrap().cancelled, 0, "past its retention");
    assert_eq!(q.prune().await.unwrap(), 1);
    assert_eq!(q.get(&a).await.unwrap(), None);
}

/// A worker runs a job whose handler spins until told to stop; the job is cancelled from
/// another handle. The handler is told within about one heartbeat, the job stays `cancelled`
/// and its outcome is not stored.
pub async fn cancel_tells_a_running_handler_to_stop<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let (handlers, started, rx) = spin_handlers();
    let heartbeat = Duration::from_millis(100);
    let config = WorkerConfig {
        concurrency: 1,
        heartbeat,
        ..WorkerConfig::default()
    };
    let id = h.queue.enqueue(NewJob::of(&Spin).unwrap()).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker::run(
        h.queue.clone(),
        handlers.executor(),
        config,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the job never started");
        sleep(Duration::from_millis(5)).await;
    }
    let other = h.handle().await;
    let cancelled_at = Instant::now();
    assert_eq!(
        other.cancel(&id).await.unwrap(),
        Cancel::Cancelled {
            was: JobStatus::Running
        }
    );
    let stopped_at = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the handler returned");
    let told = stopped_at.duration_since(cancelled_at);
    assert!(
        told < heartbeat * 2 + Duration::from_millis(400),
        "told to stop {told:?} after the cancel (heartbeat {heartbeat:?})"
    );
    let _ = stop_tx.send(());
    let report = worker.await.unwrap();
    assert_eq!(
        (report.done, report.failed, report.lost, report.cancelled),
        (0, 0, 0, 1),
        "{report:?}"
    );
    let v = h.queue.get(&id).await.unwrap().unwrap();
    assert_eq!(v.status, JobStatus::Cancelled);
}

/// A failed or a cancelled job is queued again with fresh attempts, runs, and counts where it
/// ends; any other status is left; a full backlog refuses the retry and changes nothing.
pub async fn retry_requeues_failed_and_cancelled_jobs<S: Store>(store: S, test: &str) {
    let opts = QueueOptions {
        max_backlog: 2,
        ..options()
    };
    let Some(h) = TestQueue::open(store, test, opts).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let failed = q.enqueue(NewJob::new("1").max_attempts(1)).await.unwrap();
    let f = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(
        q.complete(&f, Err(JobError::fatal("bad"))).await.unwrap(),
        Completion::Failed
    );
    let cancelled = q.enqueue(NewJob::new("2")).await.unwrap();
    q.cancel(&cancelled).await.unwrap();
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.failed, c.cancelled), (0, 1, 1), "{c:?}");
    assert_eq!(
        q.retry(&failed).await.unwrap(),
        Retry::Queued {
            was: JobStatus::Failed
        }
    );
    let v = q.get(&failed).await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.attempts, v.finished_at),
        (JobStatus::Queued, 0, None)
    );
    assert_eq!(
        q.retry(&failed).await.unwrap(),
        Retry::NotRetryable(JobStatus::Queued)
    );
    assert_eq!(
        q.retry(&cancelled).await.unwrap(),
        Retry::Queued {
            was: JobStatus::Cancelled
        }
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.failed, c.cancelled), (2, 0, 0), "{c:?}");
    // Both run again, oldest retry first, and end done.
    for id in [&failed, &cancelled] {
        let job = q
            .claim(&me, LEASE, NO_WAIT)
            .await
            .unwrap()
            .expect("queued again");
        assert_eq!((&job.id, job.attempt), (id, 1));
        assert_eq!(
            q.complete(&job, Ok("ok".into())).await.unwrap(),
            Completion::Done
        );
    }
    assert_eq!(
        q.retry(&failed).await.unwrap(),
        Retry::NotRetryable(JobStatus::Done)
    );
    // A full backlog: the retry is refused and the job stays failed.
    let again = q.enqueue(NewJob::new("3").max_attempts(1)).await.unwrap();
    let a = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    q.complete(&a, Err(JobError::fatal("bad"))).await.unwrap();
    q.enqueue(NewJob::new("4")).await.unwrap();
    q.enqueue(NewJob::new("5")).await.unwrap();
    assert!(matches!(q.retry(&again).await.unwrap(), Retry::Full(2)));
    assert_eq!(
        q.get(&again).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    assert_eq!(q.counts().await.unwrap().failed, 1);
    assert_eq!(q.retry(&JobId::random()).await.unwrap(), Retry::NotFound);
}
