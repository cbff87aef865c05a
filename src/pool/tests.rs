//! The pool's promises, each checked against real threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::*;

fn pool(threads: usize, max_queue: usize) -> Pool {
    Pool::new(PoolConfig {
        threads,
        max_queue,
        nice: 0,
        name: "test-pool".into(),
    })
    .unwrap()
}

/// Occupies the pool's one thread until the returned barrier is passed.
fn block(p: &Pool) -> (Arc<Barrier>, Handle<()>) {
    let gate = Arc::new(Barrier::new(2));
    let g = gate.clone();
    let started = Arc::new(Barrier::new(2));
    let s = started.clone();
    let h = p
        .submit(None, move |_| {
            s.wait();
            g.wait();
        })
        .unwrap();
    started.wait();
    (gate, h)
}

#[tokio::test]
async fn runs_tasks_and_returns_values() {
    let p = pool(2, 16);
    let hs = p
        .submit_all(
            None,
            (0..8u64).map(|i| move |_: StopCheck<'_>| i * i).collect(),
        )
        .unwrap();
    let mut out = Vec::new();
    for h in hs {
        out.push(h.await.unwrap());
    }
    assert_eq!(out, vec![0, 1, 4, 9, 16, 25, 36, 49]);
    assert_eq!(p.stats().completed, 8);
}

#[tokio::test]
async fn full_queue_rejects_at_once_and_batches_are_all_or_nothing() {
    let p = pool(1, 2);
    let (gate, running) = block(&p);
    let _a = p.submit(None, |_| ()).unwrap();
    let batch = p.submit_all(None, vec![|_: StopCheck<'_>| (), |_: StopCheck<'_>| ()]);
    assert_eq!(batch.unwrap_err(), SubmitError::Full(1));
    let _b = p.submit(None, |_| ()).unwrap();
    assert_eq!(p.submit(None, |_| ()).unwrap_err(), SubmitError::Full(2));
    assert_eq!(p.stats().queue_depth, 2);
    assert_eq!(p.stats().rejected, 2);
    gate.wait();
    running.await.unwrap();
}

#[tokio::test]
async fn expired_task_never_runs() {
    let p = pool(1, 4);
    let ran = Arc::new(AtomicUsize::new(0));
    let (gate, running) = block(&p);
    let r = ran.clone();
    let h = p
        .submit(
            Some(Instant::now() + Duration::from_millis(20)),
            move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    gate.wait();
    running.await.unwrap();
    assert_eq!(h.await, Err(TaskError::Expired));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let s = p.stats();
    assert_eq!((s.expired, s.started), (1, 1));
}

#[tokio::test]
async fn dropped_handle_means_the_task_never_runs() {
    let p = pool(1, 4);
    let ran = Arc::new(AtomicUsize::new(0));
    let (gate, running) = block(&p);
    let r = ran.clone();
    let h = p
        .submit(None, move |_| r.fetch_add(1, Ordering::SeqCst))
        .unwrap();
    drop(h);
    gate.wait();
    running.await.unwrap();
    p.submit(None, |_| ()).unwrap().await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(p.stats().cancelled, 1);
}

#[tokio::test]
async fn running_task_sees_its_deadline_through_the_stop_check() {
    let p = pool(1, 4);
    let h = p
        .submit(Some(Instant::now() + Duration::from_millis(30)), |stop| {
            let start = Instant::now();
            while !stop() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "stop check never fired"
                );
                std::hint::spin_loop();
            }
            start.elapsed()
        })
        .unwrap();
    assert!(h.await.unwrap() < Duration::from_secs(5));
}

#[tokio::test]
async fn panic_is_reported_and_the_thread_survives() {
    let p = pool(1, 4);
    let h = p.submit(None, |_| -> u32 { panic!("boom") }).unwrap();
    assert_eq!(h.await, Err(TaskError::Panicked("boom".into())));
    assert_eq!(p.submit(None, |_| 7u32).unwrap().await, Ok(7));
    assert_eq!(p.stats().panicked, 1);
    assert_eq!(p.threads(), 1);
}

#[tokio::test]
async fn drain_finishes_queued_work_and_refuses_new() {
    let p = pool(1, 8);
    let hs = p
        .submit_all(
            None,
            (0..4)
                .map(|_| |_: StopCheck<'_>| std::thread::sleep(Duration::from_millis(10)))
                .collect(),
        )
        .unwrap();
    assert!(p.drain(Duration::from_secs(5)));
    assert_eq!(
        p.submit(None, |_| ()).unwrap_err(),
        SubmitError::ShuttingDown
    );
    for h in hs {
        h.await.unwrap();
    }
    assert_eq!(p.stats().completed, 4);
}
