//! `GET /jobs/{id}`: a stored job's status, attempts, times, and its result (as JSON) or
//! error. With `Prefer: wait=N` it long-polls: it answers as soon as the job is done or
//! failed, or after N seconds (at most [`MAX_LONG_POLL`]) with its state then.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use offload_queue::{JobId, JobQueue, JobStatus, JobView};
use serde::{Deserialize, Serialize};

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

/// What `GET /jobs/{id}` answers: the queue's view of a job, with its result as JSON (not as a
/// string holding JSON). Times are unix milliseconds. Deserialize it to read the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobBody {
    /// The job's id.
    pub id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Runs started, not counting those lost with their worker.
    pub attempts: u32,
    /// Runs allowed before the job fails.
    pub max_attempts: u32,
    /// Runs lost with their worker (the lease lapsed).
    pub stalls: u32,
    /// Stalls allowed before the job fails.
    pub max_stalls: u32,
    /// The handler's output once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The error once failed, or the last error while a retry is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the job was accepted.
    pub enqueued_at: u64,
    /// When its latest run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When it reached `done` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

impl From<JobView> for JobBody {
    fn from(v: JobView) -> JobBody {
        // The stored result is the handler's JSON text: handed out as JSON, not as a string.
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

/// The route's handler. The id is the path's last segment rather than a `Path` parameter: a
/// nest with parameters of its own (`/t/{tenant}`) adds them to the route's, under names this
/// handler cannot know.
pub(crate) async fn job(
    State(offload): State<Offload>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Error> {
    let id = uri.path().rsplit('/').next().unwrap_or_default();
    let shown = || id.chars().take(64).collect::<String>();
    let prefer = Prefer::parse(headers.get_all("prefer").iter().map(|v| v.as_bytes()))?;
    let id = JobId::parse(id).map_err(|_| Error::BadJobId(shown()))?;
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
