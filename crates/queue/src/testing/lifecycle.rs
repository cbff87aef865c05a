//! Submit once and deadlines: a key stores one job however often (and however concurrently) it
//! is sent, and gives way after the job's retention; a job past its deadline never starts, and a
//! run still going at its deadline is stopped and ends `expired`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{LEASE, NO_WAIT, Spin, Store, TestQueue, options, spin_handlers};
use crate::worker::{self, WorkerConfig};
use crate::{
    Completion, EnqueueError, JobError, JobKey, JobQueue, JobStatus, NewJob, QueueOptions, Retry,
    WorkerId,
};

fn key(k: &str) -> JobKey {
    JobKey::new(k).expect("a valid key")
}

/// Unix ms now, as the jobs' deadlines are written.
fn now_ms() -> u64 {
    crate::types::now_ms()
}

/// The same key and payload answer the same job, queued, running or done, and take no second
/// place in the backlog (not even when it is full); another payload under the key is refused
/// and stores nothing; the same payload without a key is a job of its own.
pub async fn a_key_stores_one_job<S: Store>(store: S, test: &str) {
    let opts = QueueOptions {
        max_backlog: 2,
        ..options()
    };
    let Some(h) = TestQueue::open(store, test, opts).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let first = q
        .enqueue(NewJob::new("1").key(key("order-1")))
        .await
        .unwrap();
    assert_eq!(
        q.enqueue(NewJob::new("1").key(key("order-1")))
            .await
            .unwrap(),
        first
    );
    match q.enqueue(NewJob::new("2").key(key("order-1"))).await {
        Err(EnqueueError::KeyReused(id)) => assert_eq!(id, first),
        other => panic!("another payload under the key: {other:?}"),
    }
    let c = q.counts().await.unwrap();
    assert_eq!(c.queued, 1, "one job stored: {c:?}");
    let plain = q.enqueue(NewJob::new("1")).await.unwrap();
    assert_ne!(plain, first, "without a key, a job of its own");
    // The backlog is full: a repeat of a stored key still answers its job.
    assert!(matches!(
        q.enqueue(NewJob::new("3").key(key("order-2"))).await,
        Err(EnqueueError::Full(2))
    ));
    assert_eq!(
        q.enqueue(NewJob::new("1").key(key("order-1")))
            .await
            .unwrap(),
        first
    );
    // Running, then done: still the same job, now with its result.
    let run = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(run.id, first);
    assert_eq!(
        q.enqueue(NewJob::new("1").key(key("order-1")))
            .await
            .unwrap(),
        first
    );
    q.complete(&run, Ok("42".into())).await.unwrap();
    assert_eq!(
        q.enqueue(NewJob::new("1").key(key("order-1")))
            .await
            .unwrap(),
        first
    );
    let v = q.get(&first).await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.result.as_deref()),
        (JobStatus::Done, Some("42"))
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.done), (1, 1), "{c:?}");
}

/// Of 100 enqueues under one key sent at once from four handles (as four processes would),
/// every one answers the same job, and one job is stored.
pub async fn concurrent_keyed_enqueues_store_one_job<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let mut handles = vec![h.queue.clone()];
    for _ in 0..3 {
        handles.push(h.handle().await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(100));
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..100 {
        let (q, start) = (handles[i % handles.len()].clone(), Arc::clone(&start));
        sends.spawn(async move {
            start.wait().await;
            q.enqueue(NewJob::new(r#"{"n":1}"#).key(key("once")))
                .await
                .expect("stored or found")
        });
    }
    let ids: Vec<_> = sends.join_all().await;
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id for all: {ids:?}"
    );
    let c = h.queue.counts().await.unwrap();
    assert_eq!(c.queued, 1, "one job stored: {c:?}");
}

/// A key names its job while the job is within its retention; after that the key is free, for
/// the same payload or another.
pub async fn a_key_is_free_after_the_retention<S: Store>(store: S, test: &str) {
    let retention = Duration::from_millis(300);
    let opts = QueueOptions {
        retention,
        ..options()
    };
    let Some(h) = TestQueue::open(store, test, opts).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let first = q.enqueue(NewJob::new("1").key(key("k"))).await.unwrap();
    let run = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    q.complete(&run, Ok("1".into())).await.unwrap();
    sleep(retention + Duration::from_millis(150)).await;
    assert_eq!(q.get(&first).await.unwrap(), None, "past its retention");
    let second = q.enqueue(NewJob::new("2").key(key("k"))).await.unwrap();
    assert_ne!(second, first);
    assert_eq!(
        q.enqueue(NewJob::new("2").key(key("k"))).await.unwrap(),
        second
    );
    assert_eq!(q.counts().await.unwrap().queued, 1);
}

/// A job not started by its deadline ends `expired` without running, out of the backlog; a
/// run that fails after its deadline ends the job `expired` rather than retrying it; an
/// expired job can be retried, without its deadline.
pub async fn a_job_past_its_deadline_never_runs<S: Store>(store: S, test: &str) {
    let opts = QueueOptions {
        max_backlog: 3,
        ..options()
    };
    let Some(h) = TestQueue::open(store, test, opts).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let mut late = NewJob::new("late");
    late.expires_at = Some(now_ms() - 1);
    let late = q.enqueue(late).await.unwrap();
    let soon = q
        .enqueue(NewJob::new("soon").expires_in(Duration::from_millis(200)))
        .await
        .unwrap();
    let plain = q.enqueue(NewJob::new("plain")).await.unwrap();
    // The claim passes over the late job; the reaper (run by every worker) ends it.
    let first = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(first.id, soon, "the late job is not started");
    assert!(first.expires_at.is_some());
    q.reap().await.unwrap();
    let v = q.get(&late).await.unwrap().unwrap();
    assert_eq!((v.status, v.attempts), (JobStatus::Expired, 0), "{v:?}");
    assert!(
        v.error.as_deref().unwrap_or("").starts_with("expired"),
        "{v:?}"
    );
    assert!(v.finished_at.is_some() && v.expires_at.is_some(), "{v:?}");
    // The running job fails after its deadline: expired, not retried.
    sleep(Duration::from_millis(250)).await;
    assert_eq!(
        q.complete(&first, Err(JobError::retry("stopped")))
            .await
            .unwrap(),
        Completion::Expired
    );
    assert_eq!(
        q.get(&soon).await.unwrap().unwrap().status,
        JobStatus::Expired
    );
    let c = q.counts().await.unwrap();
    assert_eq!((c.queued, c.running, c.expired), (1, 0, 2), "{c:?}");
    // Their places are free.
    q.enqueue(NewJob::new("a")).await.unwrap();
    q.enqueue(NewJob::new("b")).await.unwrap();
    // A retry queues it again without its deadline, and it runs.
    assert!(matches!(q.retry(&late).await.unwrap(), Retry::Full(3)));
    let p = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(p.id, plain);
    q.complete(&p, Ok("1".into())).await.unwrap();
    assert_eq!(
        q.retry(&late).await.unwrap(),
        Retry::Queued {
            was: JobStatus::Expired
        }
    );
    let v = q.get(&late).await.unwrap().unwrap();
    assert_eq!((v.status, v.expires_at), (JobStatus::Queued, None), "{v:?}");
    assert_eq!(q.counts().await.unwrap().expired, 1);
}

/// A worker runs a job whose handler spins until told to stop, with a deadline 300 ms out: the
/// handler is told at the deadline, and the job ends `expired`.
pub async fn a_run_is_stopped_at_its_deadline<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let (handlers, started, rx) = spin_handlers();
    let within = Duration::from_millis(300);
    let queued_at = Instant::now();
    let id = h
        .queue
        .enqueue(NewJob::of(&Spin).unwrap().expires_in(within))
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker::run(
        h.queue.clone(),
        handlers.executor(),
        WorkerConfig::default().with_concurrency(1),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let stopped_at = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the handler returned");
    assert!(started.load(Ordering::SeqCst));
    let told = stopped_at.duration_since(queued_at);
    assert!(
        told >= within - Duration::from_millis(20) && told < within + Duration::from_millis(700),
        "told to stop {told:?} after it was queued, with a deadline {within:?} out"
    );
    // The outcome is stored by the worker's completer.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let v = h.queue.get(&id).await.unwrap().unwrap();
        if v.status == JobStatus::Expired {
            break;
        }
        assert!(Instant::now() < end, "never ended expired: {v:?}");
        sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    let report = worker.await.unwrap();
    assert_eq!((report.done, report.expired), (0, 1), "{report:?}");
}

/// Every page of `status`, following the cursors: the ids in order.
async fn all_pages<Q: JobQueue>(q: &Q, status: JobStatus, limit: usize) -> Vec<crate::JobId> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = q
            .list(crate::ListFilter {
                status,
                limit,
                after,
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= limit);
        ids.extend(page.jobs.iter().map(|v| v.id.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => return ids,
        }
    }
}

/// Failed jobs are listed newest first, with their errors and attempts, a page at a time; a
/// cursor stays valid while more jobs fail; queued and running jobs are listed likewise, and a
/// cursor survives being written out and read back.
pub async fn list_pages_newest_first_with_a_stable_cursor<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let mut failed = Vec::new();
    for i in 0..5 {
        let id = q
            .enqueue(NewJob::new(i.to_string()).max_attempts(1))
            .await
            .unwrap();
        let run = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
        q.complete(&run, Err(JobError::fatal(format!("bad {i}"))))
            .await
            .unwrap();
        failed.push(id);
        // Apart in time: the newest is the one that failed last.
        sleep(Duration::from_millis(3)).await;
    }
    let filter = |after| crate::ListFilter {
        status: JobStatus::Failed,
        limit: 2,
        after,
    };
    let first = q.list(filter(None)).await.unwrap();
    let ids: Vec<_> = first.jobs.iter().map(|v| v.id.clone()).collect();
    assert_eq!(ids, [failed[4].clone(), failed[3].clone()]);
    let v = &first.jobs[0];
    assert_eq!(
        (v.error.as_deref(), v.attempts, v.finished_at.is_some()),
        (Some("bad 4"), 1, true)
    );
    // Another failure after the first page: it is newer, so the pages after are unchanged.
    let late = q
        .enqueue(NewJob::new("late").max_attempts(1))
        .await
        .unwrap();
    let run = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    q.complete(&run, Err(JobError::fatal("late")))
        .await
        .unwrap();
    let next = first.next.expect("more pages");
    let next = crate::Cursor::parse(&next.to_string()).expect("a cursor reads back");
    let second = q.list(filter(Some(next))).await.unwrap();
    let ids: Vec<_> = second.jobs.iter().map(|v| v.id.clone()).collect();
    assert_eq!(ids, [failed[2].clone(), failed[1].clone()]);
    let third = q.list(filter(second.next)).await.unwrap();
    assert_eq!(third.jobs.len(), 1);
    assert_eq!(third.jobs[0].id, failed[0]);
    assert_eq!(third.next, None, "the oldest reached");
    let all = all_pages(q, JobStatus::Failed, 4).await;
    assert_eq!(all.len(), 6);
    assert_eq!(all[0], late);
    // Queued, newest first; one of them running.
    let mut queued = Vec::new();
    for i in 0..4 {
        queued.push(q.enqueue(NewJob::new(format!("q{i}"))).await.unwrap());
    }
    let run = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
    assert_eq!(run.id, queued[0]);
    let listed = all_pages(q, JobStatus::Queued, 2).await;
    assert_eq!(
        listed,
        [queued[3].clone(), queued[2].clone(), queued[1].clone()]
    );
    assert_eq!(
        all_pages(q, JobStatus::Running, 2).await,
        [queued[0].clone()]
    );
    assert!(all_pages(q, JobStatus::Done, 2).await.is_empty());
    assert_eq!(all_pages(q, JobStatus::Cancelled, 1000).await.len(), 0);
}

/// A delayed job is not claimed before its time; due jobs are claimed most urgent first, in
/// the order stored within one priority.
pub async fn delays_hold_jobs_back_and_priorities_order_claims<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let delay = Duration::from_millis(300);
    let later = q.enqueue(NewJob::new("later").delay(delay)).await.unwrap();
    let stored = Instant::now();
    let first = q.enqueue(NewJob::new("first")).await.unwrap();
    let low = q.enqueue(NewJob::new("low").priority(5)).await.unwrap();
    let second = q.enqueue(NewJob::new("second")).await.unwrap();
    assert_eq!(q.get(&low).await.unwrap().unwrap().priority, 5);
    for want in [&first, &second, &low] {
        let job = q
            .claim(&me, LEASE, NO_WAIT)
            .await
            .unwrap()
            .expect("a due job");
        assert_eq!(&job.id, want);
        q.complete(&job, Ok("1".into())).await.unwrap();
    }
    // Only the delayed job is left, and it is not due yet.
    if stored.elapsed() < delay - Duration::from_millis(50) {
        assert!(q.claim(&me, LEASE, NO_WAIT).await.unwrap().is_none());
    }
    // A claim may come back empty when the job falls due (Redis: its blocking read ends
    // then); the worker loop claims again at once, as this does.
    let job = loop {
        if let Some(job) = q
            .claim(&me, LEASE, Duration::from_millis(500))
            .await
            .unwrap()
        {
            break job;
        }
        assert!(stored.elapsed() < Duration::from_secs(5), "never due");
    };
    assert_eq!(job.id, later);
    assert!(
        stored.elapsed() >= delay - Duration::from_millis(5),
        "{:?}",
        stored.elapsed()
    );
}

/// Low priority is not starved: under a stream of urgent jobs that keeps the one worker busy
/// (each claim finds an urgent job waiting), a job of priority 1 waits behind the urgent jobs
/// that became due within [`PRIORITY_STEP`](crate::PRIORITY_STEP) of it, and is claimed before
/// any that became due later: here within 0.9 to 2.5 s of being stored.
pub async fn low_priority_is_claimed_within_its_handicap<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let q = &h.queue;
    let me = WorkerId::new();
    let low = q.enqueue(NewJob::new("low").priority(1)).await.unwrap();
    let stored = Instant::now();
    let mut urgent = 0;
    let claimed_after = loop {
        q.enqueue(NewJob::new("urgent")).await.unwrap();
        urgent += 1;
        let job = q
            .claim(&me, LEASE, NO_WAIT)
            .await
            .unwrap()
            .expect("a due job");
        q.complete(&job, Ok("1".into())).await.unwrap();
        if job.id == low {
            break stored.elapsed();
        }
        assert!(stored.elapsed() < Duration::from_secs(5), "starved");
        sleep(Duration::from_millis(20)).await;
    };
    assert!(
        claimed_after >= Duration::from_millis(900) && claimed_after < Duration::from_millis(2500),
        "claimed {claimed_after:?} after it was stored, behind {urgent} urgent jobs"
    );
}
