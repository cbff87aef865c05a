//! CPU-heavy work on the pool: `GET /count?n=N` counts to N on a pool thread within 2 s; work
//! predicted to miss that is 503 + `Retry-After` (paced: resending at once cannot spin), work out
//! of time 504; `/health` never waits. `cargo run -p offload-pool --example axum -- 127.0.0.1:3000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use offload_pool::admission::{Class, Cost, retry_after_secs};
use offload_pool::{Pool, PoolConfig, StopCheck};

/// Counts to `n`, giving up (`None`) when the deadline passes or the client goes away.
fn count_to(n: u64, stop: StopCheck<'_>) -> Option<u64> {
    let mut i = 0;
    while i < n {
        i = std::hint::black_box(i) + 1;
        if i % (1 << 20) == 0 && stop() {
            return None;
        }
    }
    Some(i)
}

type Counting = (Arc<Pool>, Class); // the pool, and the class its model learns counting as

async fn count(State((pool, class)): State<Counting>, RawQuery(q): RawQuery) -> Response {
    let Some(n) = q.and_then(|q| q.strip_prefix("n=")?.parse().ok()) else {
        return (StatusCode::BAD_REQUEST, "expected ?n=N\n").into_response();
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let admitted = pool.submit_one(deadline, Cost::new(class, n), move |stop| count_to(n, stop));
    let retry = match admitted {
        Ok(run) => match run.await {
            Ok(Some(c)) => return format!("{c}\n").into_response(),
            _ => return (StatusCode::GATEWAY_TIMEOUT, "deadline passed\n").into_response(),
        },
        // Predicted late, or the queue at its cap: when one like it would be taken.
        Err(refused) => refused.retry_after().unwrap_or_default(), // none: shutting down
    };
    let retry_after = [(header::RETRY_AFTER, retry_after_secs(retry).to_string())];
    (StatusCode::SERVICE_UNAVAILABLE, retry_after, "busy\n").into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let pool = Arc::new(Pool::new(PoolConfig::default())?); // a thread per core, 1,024 queued
    let class = pool.model().class("count").map_err(std::io::Error::other)?; // n units each
    let app = Router::new()
        .route("/count", get(count))
        .layer(offload_axum::PaceRefusals::default())
        .route("/health", get(|| async { "ok\n" }))
        .with_state((pool, class));
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
