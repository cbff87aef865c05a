//! Claim fencing: a job has one holder at a time, every job is claimed, and a holder whose lease
//! was taken over is refused.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::sleep;

use super::{LEASE, NO_WAIT, Store, TestQueue, options};
use crate::{Completion, JobId, JobQueue, JobStatus, NewJob, WorkerId};

/// A job's life: enqueued (`queued`, no attempt yet), claimed (`running`, attempt 1, its
/// payload), heartbeated, completed (`done` with its result); a second completion is refused and
/// stores nothing; the view's JSON form; the counts.
pub async fn round_trip<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let q = &h.queue;
    let id = q
        .enqueue(NewJob::new(r#"{"n":1}"#).label("count:1"))
        .await
        .unwrap();
    let v = q.get(&id).await.unwrap().expect("stored");
    assert_eq!(
        (v.status, v.attempts, v.max_attempts, v.label.as_deref()),
        (JobStatus::Queued, 0, 3, Some("count:1"))
    );
    let page = q
        .list(crate::ListFilter {
            status: JobStatus::Queued,
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(
        page.jobs,
        std::slice::from_ref(&v),
        "a list shows what a read shows"
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
}

/// Malformed ids do not parse; an unknown id reads as `None`, not an error.
pub async fn unknown_and_malformed_ids<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    assert!(JobId::parse("not-an-id").is_err());
    assert!(JobId::parse("").is_err());
    assert!(JobId::parse(&"g".repeat(32)).is_err());
    let unknown = JobId::random();
    assert_eq!(h.queue.get(&unknown).await.unwrap(), None);
}

/// Twelve claimers on four connections race for 60 jobs: every job is claimed exactly once.
pub async fn claim_is_exclusive<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
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
}

/// Batched claims from several connections at once never hand one job to two holders (SQLite:
/// one writer at a time; Redis: one script at a time; Postgres: `FOR UPDATE SKIP LOCKED`), and
/// every job is claimed; each holder's lease token is the one stored.
pub async fn batched_claims_are_exclusive<S: Store>(store: S, test: &str) {
    const JOBS: usize = 500;
    const HANDLES: usize = 4;
    const BATCH: usize = 16;
    let Some(h) = TestQueue::open(store, test, options()).await else {
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
}

/// Claim fencing: a holder whose lease lapsed and was taken over by another is refused (its
/// heartbeat, result and release), and the new holder's result stands; the lapse is counted as a
/// stall, not an attempt.
pub async fn stale_holder_is_refused<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
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
}

/// A job's trace context reaches its run; a job without one has none; and a keyed job sent
/// again under another context is the same job, not other work.
pub async fn the_trace_context_reaches_the_run<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let q = &h.queue;
    let t = crate::TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .unwrap();
    let other = crate::TraceParent::new([7; 16], [9; 8]);
    let key = crate::JobKey::new("k1").unwrap();
    let id = q
        .enqueue(NewJob::new("1").trace(t.clone()).key(key.clone()))
        .await
        .unwrap();
    let again = q
        .enqueue(NewJob::new("1").trace(other).key(key))
        .await
        .unwrap();
    assert_eq!(again, id, "the context is not part of the work");
    q.enqueue(NewJob::new("2")).await.unwrap();
    let got = q
        .claim_batch(&WorkerId::new(), LEASE, 10, NO_WAIT)
        .await
        .unwrap();
    let traces: Vec<_> = got
        .iter()
        .map(|c| (c.payload.as_str(), c.trace.clone()))
        .collect();
    assert_eq!(traces, [("1", Some(t)), ("2", None)]);
}
