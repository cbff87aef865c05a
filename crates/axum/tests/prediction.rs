//! The 202's prediction against the measured finish: a service stores a backlog of jobs behind
//! a worker in its own process, and each 202 says when its job will be done
//! (`AcceptedBody::done_in_us`). At the median the prediction must be within 30% of the time
//! the job really took to finish. The jobs sleep rather than compute, so the workers' rate, and
//! the test, do not depend on how busy the machine is.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use offload_axum::{AcceptedBody, Auto, Offload};
use offload_pool::{Pool, PoolConfig};
use offload_queue::{Handlers, Job, JobId, JobQueue, JobStatus, QueueOptions, worker};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// A job that takes `ms` milliseconds of a worker's time.
#[derive(Serialize, Deserialize)]
struct Nap {
    ms: u64,
}

impl Job for Nap {
    const NAME: &'static str = "nap";
    type Output = ();
}

const NAP_MS: u64 = 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// POSTs a nap that must be stored (`respond-async, wait=0`): its 202 body, and when it came.
async fn store(router: &Router) -> (AcceptedBody, u64) {
    let req = Request::post("/nap")
        .header("content-type", "application/json")
        .header("prefer", "respond-async, wait=0")
        .body(Body::from(format!(r#"{{"ms": {NAP_MS}}}"#)))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let at = now_ms();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap();
    (serde_json::from_slice(&bytes).unwrap(), at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_predicts_when_its_job_is_done_within_30_percent_at_the_median() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let queue = offload_queue::open(&url, QueueOptions::default())
        .await
        .unwrap();
    let handlers = Handlers::new().on(|n: Nap| {
        std::thread::sleep(Duration::from_millis(n.ms));
        Ok(())
    });
    let pool = Arc::new(
        Pool::new(PoolConfig {
            threads: 1,
            ..PoolConfig::default()
        })
        .unwrap(),
    );
    let offload = Offload::new(pool, queue.clone(), handlers.clone());
    // A first guess of the nap's time in the pool, so that `wait=0` stores it.
    let class = offload.class::<Nap>();
    offload.pool().model().prior(class, NAP_MS as f64 / 1e3);
    let router = Router::new()
        .route(
            "/nap",
            post(|auto: Auto, Json(n): Json<Nap>| async move { auto.run(n).await }),
        )
        .with_state(offload.clone());
    // One worker thread in this process: about 50 naps a second.
    let config = worker::WorkerConfig {
        concurrency: 1,
        ..Default::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker::run(
        queue.clone(),
        handlers.executor(),
        config,
        async move {
            let _ = stopped.await;
        },
    ));

    // A backlog of some seconds: the clock measures the worker's rate while it drains. Before
    // that, a 202 predicts nothing rather than a guess.
    let (first, _) = store(&router).await;
    assert_eq!(first.status, JobStatus::Queued);
    assert_eq!(first.done_in_us, None, "no rate measured yet: {first:?}");
    for _ in 0..299 {
        store(&router).await;
    }
    let t = Instant::now();
    while offload.eta().rate().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "no rate after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Fifty more, behind what is left: each 202's prediction against its job's finish.
    let mut stored = Vec::new();
    for _ in 0..50 {
        stored.push(store(&router).await);
    }
    // The queue's cap in time: with about two seconds of naps queued, a service that takes
    // on at most 300 ms does not store another; the pool runs it (a late 200 beats a 503).
    let capped = offload.clone().max_queue_wait(Duration::from_millis(300));
    let capped_router = Router::new()
        .route(
            "/nap",
            post(|auto: Auto, Json(n): Json<Nap>| async move { auto.run(n).await }),
        )
        .with_state(capped);
    let req = Request::post("/nap")
        .header("content-type", "application/json")
        .header("prefer", "respond-async, wait=0")
        .body(Body::from(format!(r#"{{"ms": {NAP_MS}}}"#)))
        .unwrap();
    let resp = capped_router.oneshot(req).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "not stored past the time cap"
    );

    let mut ratios = Vec::new();
    for (body, at) in &stored {
        let id: JobId = body.id.parse().unwrap();
        let finished_at = loop {
            let job = queue.get(&id).await.unwrap().expect("a stored job");
            match job.finished_at {
                Some(f) if job.status == JobStatus::Done => break f,
                Some(_) => panic!("the nap failed: {job:?}"),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let predicted = body
            .done_in_us
            .expect("a prediction once the rate is known") as f64;
        let took = (finished_at.saturating_sub(*at) * 1000) as f64;
        ratios.push(took / predicted);
    }
    ratios.sort_by(f64::total_cmp);
    let p50 = ratios[ratios.len() / 2];
    let rate = offload.eta().rate().unwrap();
    eprintln!(
        "202 prediction: measured / predicted p50 {p50:.2} (min {:.2}, max {:.2}); rate {rate:.1} jobs/s; \
         the first of the fifty: {:?}",
        ratios[0],
        ratios[ratios.len() - 1],
        stored[0].0
    );
    assert!((0.7..=1.3).contains(&p50), "p50 {p50:.2}: {ratios:?}");
    assert!(stored[0].0.jobs_ahead > 0, "{:?}", stored[0].0);
    stop.send(()).unwrap();
    worker.await.unwrap();
}
