//! An axum service with a CPU-heavy handler on the pool. `GET /count?n=N` counts to N on a
//! pool thread, or answers 503 with `Retry-After` at once when the pool predicts it would
//! miss its deadline; `/health` answers from the runtime, never behind the work.
//! `cargo run -p offload-pool --example axum -- 127.0.0.1:3000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use offload_pool::admission::{Cost, retry_after_secs};
use offload_pool::{Pool, PoolConfig, StopCheck, SubmitError};

/// How long a client waits for an answer: work predicted to finish later is refused.
const DEADLINE: Duration = Duration::from_secs(2);
/// The cost model's class for counting (the only kind of work here).
const COUNT: usize = 0;

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
    let Some(n) = q
        .as_deref()
        .and_then(|q| q.strip_prefix("n=")?.parse().ok())
    else {
        return (StatusCode::BAD_REQUEST, "expected ?n=N\n").into_response();
    };
    let (cost, deadline) = (
        Cost {
            class: COUNT,
            units: n,
        },
        Instant::now() + DEADLINE,
    );
    // One chunk of all n units (`max_split` 1); the pool learns the time per unit as it runs.
    let split = |_| vec![(n, move |stop: StopCheck<'_>| count_to(n, stop))];
    let handle = match pool.submit_work(deadline, cost, 1, split) {
        Ok(mut handles) => handles.remove(0),
        Err(SubmitError::Late(late)) => return unavailable(late.retry_after, "busy"),
        Err(e) => return unavailable(Duration::ZERO, &e.to_string()),
    };
    match handle.await {
        Ok(Some(c)) => format!("{c}\n").into_response(),
        _ => unavailable(Duration::ZERO, "deadline passed"),
    }
}

/// 503 with `Retry-After` in whole seconds (at least 1).
fn unavailable(retry_after: Duration, why: &str) -> Response {
    let headers = [(
        header::RETRY_AFTER,
        retry_after_secs(retry_after).to_string(),
    )];
    (StatusCode::SERVICE_UNAVAILABLE, headers, format!("{why}\n")).into_response()
}

fn app(pool: Arc<Pool>) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(pool)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // One thread per core, a queue capped at 1,024 requests.
    let pool = Arc::new(Pool::new(PoolConfig::default())?);
    let addr = std::env::args().nth(1);
    let listener =
        tokio::net::TcpListener::bind(addr.as_deref().unwrap_or("127.0.0.1:3000")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(pool)).await
}
