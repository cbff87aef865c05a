//! A service with `auto`: `POST /collatz {"below": N}` finds the start below N with the longest
//! Collatz chain, from the pool within the 250 ms budget (200), else as a job that a worker in
//! this process runs from SQLite (202). `cargo run -p offload-axum --example auto -- ADDR DB`

use axum::extract::{Json, rejection::JsonRejection};
use axum::{Router, response::Response, routing::post};
use offload_axum::{Auto, Offload, error_response};
use offload_pool::{Pool, PoolConfig};
use offload_queue::{Handlers, Job, QueueOptions, worker};

#[derive(serde::Serialize, serde::Deserialize)]
struct Collatz {
    below: u64,
}
impl Job for Collatz {
    const NAME: &'static str = "collatz";
    const SECS_PER_UNIT: Option<f64> = Some(1e-7); // a first guess, until runs are timed
    type Output = (u64, u32);
    fn units(&self) -> u64 {
        self.below // what the run time grows with
    }
}

fn longest(below: u64) -> (u64, u32) {
    let mut best = (1, 0);
    for start in 2..below {
        let (mut n, mut steps) = (start, 0);
        while n != 1 {
            n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
            steps += 1;
        }
        best = if steps > best.1 { (start, steps) } else { best };
    }
    best
}

async fn collatz(auto: Auto, job: Result<Json<Collatz>, JsonRejection>) -> Response {
    match job {
        Ok(Json(job)) => auto.run(job).await,
        Err(e) => error_response(e.status(), "invalid_job", e.body_text()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:3000".into());
    let db = std::env::args().nth(2).unwrap_or("jobs.db".into());
    let handlers = Handlers::new().on(|c: Collatz| Ok(longest(c.below)));
    let pool = std::sync::Arc::new(Pool::new(PoolConfig::default())?);
    let queue = offload_queue::open(&format!("sqlite://{db}"), QueueOptions::default()).await?;
    let offload = Offload::new(pool, queue.clone(), handlers);
    let config = worker::WorkerConfig::default().with_concurrency(1); // the pool keeps the rest
    tokio::spawn(worker::run(
        queue,
        offload.executor(),
        config,
        std::future::pending(),
    ));
    let app = Router::new().route("/collatz", post(collatz));
    let app = app.merge(offload.routes()).with_state(offload); // GET /jobs/{id}; `Auto`'s state
    offload_axum::raise_open_files(); // a connection is a file: 1,000 clients pass a soft 1,024
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Ok(axum::serve(listener, app).await?)
}
