//! Redis's own tests: what the store trait does not say, but the Redis backend must do.
// In a build with Redis alone, `Queue` has one variant, and the `let Queue::Redis(..) = ..
// else` below cannot fail.
#![allow(irrefutable_let_patterns)]

use std::time::Duration;

use offload_queue::testing::{Backend, LEASE, NO_WAIT, TestQueue, options};
use offload_queue::{Completion, JobQueue, NewJob, Queue, QueueName, QueueOptions, WorkerId, open};
use tokio::time::sleep;

/// A server restart without persistence (or deleted keys) loses the consumer group;
/// the queue recreates it instead of failing every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreates_a_lost_group() {
    let Some(h) = TestQueue::open(Backend::Redis, "lost_group", options()).await else {
        return;
    };
    let Queue::Redis(q) = &h.queue else {
        unreachable!()
    };
    q.destroy().await.unwrap();
    let id = h.queue.enqueue(NewJob::new("1")).await.unwrap();
    let me = WorkerId::new();
    let job = h
        .queue
        .claim(&me, LEASE, NO_WAIT)
        .await
        .unwrap()
        .expect("job after recovery");
    assert_eq!(job.id, id);
    q.destroy().await.unwrap();
    // And again after a second loss, with a blocking wait.
    assert!(
        h.queue
            .claim(&me, LEASE, Duration::from_millis(50))
            .await
            .unwrap()
            .is_none()
    );
}

/// An entry read by a worker that died before its claim script ran (the gap in the
/// blocking-read path) is delivered again by the reaper, without counting an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivers_an_entry_read_but_never_started() {
    let Some(h) = TestQueue::open(Backend::Redis, "read_not_started", options()).await else {
        return;
    };
    let id = h.queue.enqueue(NewJob::new("1")).await.unwrap();
    let client = ::redis::Client::open(h.place().url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("{{{}}}:stream", h.place().name());
    let read: ::redis::Value = ::redis::cmd("XREADGROUP")
        .arg(&[
            "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", &stream, ">",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_ne!(read, ::redis::Value::Nil, "the ghost read the entry");
    let me = WorkerId::new();
    assert!(h.queue.claim(&me, LEASE, NO_WAIT).await.unwrap().is_none());
    sleep(LEASE + Duration::from_millis(100)).await;
    assert_eq!(h.queue.reap().await.unwrap(), 1);
    let job = h
        .queue
        .claim(&me, LEASE, NO_WAIT)
        .await
        .unwrap()
        .expect("delivered again");
    assert_eq!((job.id, job.attempt), (id, 1));
}

/// `destroy` deletes its queue's keys and no other queue's, also those of a queue
/// whose name begins with its name (`…` and `…-b`, both holding waiting and done jobs and a
/// latency histogram). (A name with glob characters, the way one queue's `SCAN MATCH` pattern
/// once matched another's keys, cannot be made: see `offload_queue::QueueName`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_other_queues_alone() {
    let Some(place) = Backend::Redis.place("destroy_alone") else {
        return;
    };
    let url = place.url();
    let a_name = place.name().clone();
    let b_name = QueueName::new(format!("{a_name}-b")).unwrap();
    let open_named = |name: &QueueName| {
        let options = QueueOptions {
            name: name.clone(),
            ..options()
        };
        open(url, options)
    };
    let (a, b) = (
        open_named(&a_name).await.unwrap(),
        open_named(&b_name).await.unwrap(),
    );
    let me = WorkerId::new();
    let mut b_jobs = Vec::new();
    for q in [&a, &b] {
        for _ in 0..3 {
            let id = q.enqueue(NewJob::new("1").label("count:1")).await.unwrap();
            if std::ptr::eq(q, &b) {
                b_jobs.push(id);
            }
        }
        for _ in 0..2 {
            let job = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
            assert_eq!(
                q.complete(&job, Ok("1".into())).await.unwrap(),
                Completion::Done
            );
        }
    }
    let client = ::redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = async |name: &QueueName| {
        let pattern = format!("{{{name}}}*");
        let mut found = std::collections::BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            found.extend(batch);
            if next == 0 {
                return found;
            }
            cursor = next;
        }
    };
    let b_before = keys(&b_name).await;
    // The stream, the done zset, the histogram, its labels and one hash per job at least.
    assert!(b_before.len() >= 7, "{b_before:?}");
    assert!(!keys(&a_name).await.is_empty());
    let Queue::Redis(ra) = &a else { unreachable!() };
    ra.destroy().await.unwrap();
    assert_eq!(keys(&a_name).await.len(), 0, "a's keys are gone");
    assert_eq!(keys(&b_name).await, b_before, "b's keys are all there");
    let c = b.counts().await.unwrap();
    assert_eq!((c.queued, c.done), (1, 2));
    assert_eq!(b.latency().await.unwrap().by_label["count:1"].count(), 2);
    for id in &b_jobs {
        assert!(b.get(id).await.unwrap().is_some(), "b's job {id}");
    }
    let Queue::Redis(rb) = &b else { unreachable!() };
    rb.destroy().await.unwrap();
    assert_eq!(keys(&b_name).await.len(), 0);
}
