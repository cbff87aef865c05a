//! `GET /jobs/{id}`: a stored job's status, attempts, times, and its result (as JSON) or
//! error. With `Prefer: wait=N` it long-polls: it answers as soon as the job is done or
//! failed, or after N seconds (at most [`MAX_LONG_POLL`]) with its state then.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use offload_queue::{JobId, JobQueue, JobStatus, JobView};
use serde::Serialize;

use crate::auto::set_applied;
use crate::{Error, Offload, Prefer};

/// The longest long-poll: `Prefer: wait` above it is cut to it (a held connection costs a
/// little, and proxies commonly close idle ones after a minute).
pub const MAX_LONG_POLL: Duration = Duration::from_secs(60);

/// Long-polls that may wait at once; past it `GET /jobs/{id}` answers with the state now, so
/// the store is never polled by an unbounded crowd (`wait` is a preference).
pub const MAX_LONG_POLLS: usize = 1_024;

/// A long-poll reads the job again after this, then twice as long each time up to
/// [`POLL_MAX`]: a job that ends is answered within about 50 ms, and a thousand long-polls cost
/// the store at most 20,000 reads a second.
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(50);

/// What `GET /jobs/{id}` answers.
#[derive(Debug, Serialize)]
struct JobBody {
    id: String,
    status: JobStatus,
    attempts: u32,
    max_attempts: u32,
    stalls: u32,
    max_stalls: u32,
    /// The handler's output, as JSON (not as a string holding JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Unix milliseconds.
    enqueued_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<u64>,
}

impl From<JobView> for JobBody {
    fn from(v: JobView) -> JobBody {
        let result = v
            .result
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        JobBody {
            id: v.id.to_string(),
            status: v.status,
            attempts: v.attempts,
            max_attempts: v.max_attempts,
            stalls: v.stalls,
            max_stalls: v.max_stalls,
            result,
            error: v.error,
            enqueued_at: v.enqueued_at,
            started_at: v.started_at,
            finished_at: v.finished_at,
        }
    }
}

fn finished(v: &JobView) -> bool {
    matches!(v.status, JobStatus::Done | JobStatus::Failed)
}

pub(crate) async fn job(
    State(offload): State<Offload>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let shown = || id.chars().take(64).collect::<String>();
    let prefer = Prefer::parse(headers.get_all("prefer").iter().map(|v| v.as_bytes()))?;
    let id = JobId::parse(&id).map_err(|_| Error::BadJobId(shown()))?;
    let inner = &offload.inner;
    let read = async || match inner.queue.get(&id).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Error::JobNotFound(id.to_string())),
        Err(e) => Err(Error::Unavailable(e.to_string())),
    };
    let mut view = read().await?;
    let mut applied = None;
    if let Some(wait) = prefer.wait.map(|w| w.min(MAX_LONG_POLL))
        && !finished(&view)
        && let Ok(_permit) = inner.long_polls.clone().try_acquire_owned()
    {
        applied = Prefer::applied(Some(wait), false);
        let end = tokio::time::Instant::now() + wait;
        let mut pause = POLL_FIRST;
        while !finished(&view) {
            let now = tokio::time::Instant::now();
            if now >= end {
                break;
            }
            tokio::time::sleep_until((now + pause).min(end)).await;
            pause = (pause * 2).min(POLL_MAX);
            view = read().await?;
        }
    }
    let mut resp = axum::Json(JobBody::from(view)).into_response();
    set_applied(&mut resp, applied);
    Ok(resp)
}
