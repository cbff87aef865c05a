//! An axum service with a CPU-heavy handler on the pool: `GET /count?n=N` counts to N on a
//! pool thread, or answers 503 with `Retry-After` when the pool predicts a miss of the 2 s
//! deadline, held to offload-axum's refusal schedule so that clients that resend at once cannot
//! spin; `/health` never waits behind the work.
//! `cargo run -p offload-pool --example axum -- 127.0.0.1:3000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use offload_pool::admission::{Cost, retry_after_secs};
use offload_pool::{Pool, PoolConfig, StopCheck, SubmitError};

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

async fn count(State(pool): State<Arc<Pool>>, RawQuery(q): RawQuery) -> Response {
    let Some(n) = q.and_then(|q| q.strip_prefix("n=")?.parse().ok()) else {
        return (StatusCode::BAD_REQUEST, "expected ?n=N\n").into_response();
    };
    // Class 0 of the cost model, n units; one chunk (`max_split` 1), learned as it runs.
    let (cost, deadline) = (
        Cost { class: 0, units: n },
        Instant::now() + Duration::from_secs(2),
    );
    let split = |_| vec![(n, move |stop: StopCheck<'_>| count_to(n, stop))];
    let (retry, why) = match pool.submit_work(deadline, cost, 1, split) {
        Ok(mut handles) => match handles.remove(0).await {
            Ok(Some(c)) => return format!("{c}\n").into_response(),
            _ => (Duration::ZERO, "deadline passed".to_string()),
        },
        Err(SubmitError::Late(late)) => (late.retry_after, "busy".to_string()),
        Err(e) => (Duration::ZERO, e.to_string()),
    };
    let retry_after = [(header::RETRY_AFTER, retry_after_secs(retry).to_string())];
    (
        StatusCode::SERVICE_UNAVAILABLE,
        retry_after,
        format!("{why}\n"),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // One thread per core, a queue capped at 1,024 requests.
    let pool = Arc::new(Pool::new(PoolConfig::default())?);
    let app = Router::new()
        .route("/count", get(count))
        .layer(offload_axum::PaceRefusals::default())
        .route("/health", get(|| async { "ok\n" }))
        .with_state(pool);
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
