//! Queue throughput harness: enqueue/s (64 concurrent tasks), drain jobs/s (worker loops, no-op
//! jobs) and idle pickup latency, on SQLite (temp file) and, with `REDIS_URL` set, on Redis.
//!
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example queue_bench -- [JOBS]`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offload::queue::worker::{self, Executor, WorkerConfig};
use offload::queue::{JobId, JobQueue, NewJob, Queue, QueueOptions, open};
use tokio::sync::Notify;

/// Concurrent producers, as in the reference measurement.
const PRODUCERS: usize = 64;
/// Worker loops in the drain run, each with its own connection (as separate processes would).
const WORKERS: usize = 4;
/// Jobs in flight per worker loop.
const CONCURRENCY: usize = 8;
/// Pickup samples: enough for a stable p99 within a few seconds.
const PICKUPS: usize = 200;

#[tokio::main]
async fn main() {
    let jobs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    bench("sqlite", &sqlite, jobs).await;
    match std::env::var("REDIS_URL") {
        Ok(url) => bench("redis", &url, jobs).await,
        Err(_) => eprintln!("REDIS_URL is not set: Redis not measured"),
    }
}

fn options() -> QueueOptions {
    let name = format!("bench-{}", &JobId::random().as_str()[..8]);
    QueueOptions {
        max_backlog: 10_000_000,
        name: name.parse().expect("a valid queue name"),
        ..QueueOptions::default()
    }
}

async fn bench(backend: &str, url: &str, jobs: u64) {
    let options = options();
    let queue = open(url, options.clone()).await.expect("open the queue");

    let start = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS as u64)
        .map(|p| {
            let q = queue.clone();
            tokio::spawn(async move {
                for i in (p..jobs).step_by(PRODUCERS) {
                    q.enqueue(NewJob::new(i.to_string()))
                        .await
                        .expect("enqueue");
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{backend:6} enqueue: {jobs} jobs in {secs:.2} s = {:.0}/s",
        jobs as f64 / secs
    );

    let ran = Arc::new(AtomicU64::new(0));
    let all_ran = Arc::new(Notify::new());
    let exec: Executor = {
        let (ran, all_ran) = (Arc::clone(&ran), Arc::clone(&all_ran));
        Arc::new(move |_| {
            if ran.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                all_ran.notify_waiters();
            }
            Box::pin(async { Ok("null".to_owned()) })
        })
    };
    let start = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..WORKERS {
        let q = open(url, options.clone()).await.expect("worker handle");
        let all_ran = Arc::clone(&all_ran);
        let ran = Arc::clone(&ran);
        let config = WorkerConfig {
            concurrency: CONCURRENCY,
            ..WorkerConfig::default()
        };
        loops.push(tokio::spawn(worker::run(
            q,
            Arc::clone(&exec),
            config,
            async move {
                let wait = all_ran.notified();
                if ran.load(Ordering::Relaxed) < jobs {
                    wait.await;
                }
            },
        )));
    }
    let mut done = 0;
    for l in loops {
        done += l.await.unwrap().done;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{backend:6} drain:   {done} jobs in {secs:.2} s = {:.0} jobs/s ({WORKERS} loops x {CONCURRENCY})",
        done as f64 / secs
    );
    pickup(backend, &queue, url, &options).await;
    if let Queue::Redis(q) = &queue {
        q.destroy().await.expect("delete bench keys");
    }
}

/// Enqueues one job at a time into an idle worker and measures enqueue-to-start latency.
async fn pickup(backend: &str, queue: &Queue, url: &str, options: &QueueOptions) {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let exec: Executor = {
        let (sent, seen) = (Arc::clone(&sent), Arc::clone(&seen));
        Arc::new(move |payload: String| {
            let now = Instant::now();
            if let Some(t) = sent.lock().unwrap().get(&payload) {
                seen.lock().unwrap().push(now - *t);
            }
            Box::pin(async { Ok("null".to_owned()) })
        })
    };
    let q = open(url, options.clone()).await.expect("worker handle");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = WorkerConfig {
        concurrency: 1,
        ..WorkerConfig::default()
    };
    let w = tokio::spawn(worker::run(q, exec, config, async {
        let _ = stop_rx.await;
    }));
    for i in 0..PICKUPS {
        // Idle gaps of 20-220 ms: the poller is at various points of its backoff.
        let gap = 20 + u64::from(JobId::random().as_str().as_bytes()[0]) % 200;
        tokio::time::sleep(Duration::from_millis(gap)).await;
        sent.lock().unwrap().insert(i.to_string(), Instant::now());
        queue
            .enqueue(NewJob::new(i.to_string()))
            .await
            .expect("enqueue");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(());
    w.await.unwrap();
    let mut v = seen.lock().unwrap().clone();
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!(
        "{backend:6} pickup:  {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        v.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3
    );
}
