//! `GET /ui`, the gateway's live page: one HTML file with its CSS and JavaScript
//! (`ui/index.html`, built into the binary; nothing from a CDN), and `GET /ui/state`, the JSON
//! it reads every second ([`UiState`]), built from what `/metrics` and `/health` read: the
//! request counts, the pool's stats, and the store's counts and latency histogram. The page
//! lists jobs and presses Retry and Cancel through the `/jobs` routes, so the admin token
//! guards the buttons there, not here.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use offload_axum::{Changes, Spread};

use super::AppState;
use crate::api::{UiPool, UiQueue, UiRequests, UiState};
use crate::queue::JobQueue;

/// The page: HTML, CSS and JavaScript in one file.
const PAGE: &str = include_str!("ui/index.html");

/// How long one read of the store serves every page that asks: a page polls once a second,
/// and a hundred open pages must not cost the store a hundred reads a second.
const STORE_READ_FOR: Duration = Duration::from_millis(500);

/// What `/ui/state` keeps between calls: when the gateway started, and the store's last read.
#[derive(Debug)]
pub struct UiReads {
    started: Instant,
    last: tokio::sync::Mutex<Option<(Instant, UiQueue)>>,
}

impl Default for UiReads {
    fn default() -> Self {
        UiReads {
            started: Instant::now(),
            last: tokio::sync::Mutex::new(None),
        }
    }
}

/// `GET /ui`.
pub(super) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

/// `GET /ui/state`.
pub(super) async fn state(State(app): State<AppState>) -> axum::Json<UiState> {
    let h = app.metrics.heavy();
    let queue = match app.strategy.queue() {
        Some(q) => Some(queue_now(&app.ui, q).await),
        None => None,
    };
    axum::Json(UiState {
        strategy: app.strategy.as_str().to_owned(),
        uptime_s: app.ui.started.elapsed().as_secs_f64(),
        changes: match app.config.changes {
            Changes::Open => "open",
            Changes::Token(_) => "token",
            Changes::Closed => "closed",
        }
        .to_owned(),
        requests: UiRequests {
            answered: h.answered,
            accepted: h.accepted,
            refused: h.refused,
            in_flight: h.in_flight,
        },
        pool: app.strategy.pool().map(|p| {
            let s = p.stats();
            UiPool {
                threads: s.threads,
                busy: s.busy,
                queued: s.queue_depth,
                admitted: s.submitted,
                refused: s.rejected + s.late,
                completed: s.completed,
                predicted_wait_s: p.predicted_wait().as_secs_f64(),
            }
        }),
        queue,
    })
}

/// The store's counts and times, read at most once per [`STORE_READ_FOR`] whoever asks, in one
/// call bounded by the queue's [`Reach`](crate::queue::Reach) (at once while it is out of
/// reach).
async fn queue_now(reads: &UiReads, q: &crate::strategy::QueueStrategy) -> UiQueue {
    let mut last = reads.last.lock().await;
    if let Some((at, view)) = last.as_ref()
        && at.elapsed() < STORE_READ_FOR
    {
        return view.clone();
    }
    let store = q.queue();
    let read = q.reach().call("the page's counts and times", async {
        let counts = store.counts().await?;
        let backlog =
            crate::queue::Backlog::read(store, counts.queued, |label| q.predictor().predict(label));
        Ok((counts, store.latency().await?, backlog.await?))
    });
    let view = match read.await {
        Ok((counts, latency, backlog)) => {
            let total = latency.total();
            UiQueue {
                up: true,
                counts: Some(counts),
                done_total: Some(total.count()),
                enqueue_to_done_ms: Spread::of_histogram(&total),
                backlog_seconds: Some(backlog.seconds),
            }
        }
        Err(e) => {
            crate::throttled!("ui_store_read_failed", warn, error = %e, "/ui/state: the store did not answer");
            UiQueue {
                up: false,
                counts: None,
                done_total: None,
                enqueue_to_done_ms: None,
                backlog_seconds: None,
            }
        }
    };
    *last = Some((Instant::now(), view.clone()));
    view
}
