//! A service with `auto`: `POST /collatz {"below": N}` finds the start below N with the longest
//! Collatz chain. Work predicted to answer within the 250 ms budget answers 200 from the pool;
//! the rest answers 202 with a `Location`, and a worker in this process runs it from the
//! SQLite queue. `cargo run -p offload-axum --example auto -- 127.0.0.1:3000 jobs.db`

use std::sync::Arc;

use axum::{Json, Router, response::Response, routing::post};
use offload_axum::{Auto, Offload};
use offload_pool::{Pool, PoolConfig};
use offload_queue::{Handlers, Job, QueueOptions, worker};
use serde::{Deserialize, Serialize};

/// The job: which start below `below` has the longest Collatz chain, and its length in steps
/// (the first such start; 1 and 0 below 3).
#[derive(Serialize, Deserialize)]
struct Collatz {
    below: u64,
}

impl Job for Collatz {
    const NAME: &'static str = "collatz";
    type Output = (u64, u32);
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

async fn collatz(auto: Auto, Json(job): Json<Collatz>) -> Response {
    let units = job.below; // what the run time grows with
    auto.run(job, units).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:3000".into());
    let db = std::env::args().nth(2).unwrap_or("jobs.db".into());
    let handlers = Handlers::new().on(|c: Collatz| Ok(longest(c.below)));
    let pool = Arc::new(Pool::new(PoolConfig::default())?);
    let queue = offload_queue::open(&format!("sqlite://{db}"), QueueOptions::default()).await?;
    // One thread for the stored jobs (tokio's blocking threads), so the pool keeps the rest.
    let config = worker::WorkerConfig {
        concurrency: 1,
        ..Default::default()
    };
    let (executor, shutdown) = (handlers.clone().executor(), std::future::pending());
    tokio::spawn(worker::run(queue.clone(), executor, config, shutdown));
    let offload = Offload::new(pool, queue, handlers);
    let app = Router::new()
        .route("/collatz", post(collatz))
        .layer(offload.layer())
        .merge(offload.routes());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
