//! The strategies: the ways a `/heavy` request's work can run. One file each, one enum over
//! them; every strategy gives the same result for the same work.

mod auto;
mod blocking;
mod inline;
mod pool;
mod queue;
mod rayon;
mod remote;
mod spawn;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::Registry;
use crate::work::{Chunk, Stopped, Work, combine};

pub use self::pool::{PoolStrategy, Split, calibrate_priors};
pub use auto::{Auto, Routed};
pub use blocking::Blocking;
pub use inline::Inline;
pub use queue::QueueStrategy;
pub use rayon::Rayon;
pub use remote::{Backend, Remote, RemoteConfig};
pub use spawn::Spawn;

/// The strategy names, as given to `offload serve --strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Name {
    /// On the runtime's worker threads, in the handler. The anti-pattern: it stalls every
    /// other request on that thread. Built to be measured, not used.
    Inline,
    /// A fresh OS thread per chunk, per request; nothing bounds the total.
    Spawn,
    /// tokio's spawn_blocking with its defaults (up to 512 threads, unbounded queue).
    Blocking,
    /// A fixed pool of threads with a bounded queue, deadlines and cancellation.
    Pool,
    /// Forwarded over HTTP keep-alive to `offload compute` services, balanced across them.
    Remote,
    /// Stored as a durable job (202 Accepted at once); `offload worker` processes run it.
    Queue,
    /// A pool and a queue: work predicted to finish within the client's wait budget
    /// (`Prefer: wait=N`, else `--auto-wait`) runs in the pool (200), the rest is queued (202).
    Auto,
    /// The compute service's rayon pool (`offload compute`, not a gateway strategy).
    #[value(skip)]
    Rayon,
}

/// A process a strategy needs beside its gateway (the bench starts it first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// An `offload compute` service the gateway forwards to.
    Compute,
    /// An `offload worker` that runs the queued jobs.
    Worker,
}

impl Name {
    /// The gateway strategies, in the order the bench runs them by default. The bench, its
    /// report and its schema take the strategies from here: a new one is added here only.
    pub const GATEWAY: [Name; 7] = [
        Name::Inline,
        Name::Spawn,
        Name::Blocking,
        Name::Pool,
        Name::Remote,
        Name::Queue,
        Name::Auto,
    ];

    /// The gateway strategy called `s`.
    pub fn parse(s: &str) -> Option<Name> {
        Name::GATEWAY.into_iter().find(|n| n.as_str() == s)
    }

    /// The process it needs beside the gateway, if any.
    pub fn helper(self) -> Option<Helper> {
        match self {
            Name::Remote => Some(Helper::Compute),
            Name::Queue | Name::Auto => Some(Helper::Worker),
            _ => None,
        }
    }

    /// Whether the work runs inside the gateway's own process, answering with the result.
    pub fn in_process(self) -> bool {
        self.helper().is_none() && self != Name::Rayon
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Name::Inline => "inline",
            Name::Spawn => "spawn",
            Name::Blocking => "blocking",
            Name::Pool => "pool",
            Name::Remote => "remote",
            Name::Queue => "queue",
            Name::Auto => "auto",
            Name::Rayon => "rayon",
        }
    }
}

/// A finished request's result and where its time went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Done {
    pub result: u64,
    /// From the request's hand-off to the first chunk starting.
    pub wait: Duration,
    /// From the first chunk starting to the last one ending.
    pub run: Duration,
}

/// What a strategy did with a request's work.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The work ran; here is its result.
    Done(Done),
    /// The work was stored as a job (the queue strategy).
    Accepted(crate::queue::JobId),
    /// `auto` chose the pool or the queue.
    Routed(Routed),
}

/// Why a strategy produced no result.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no capacity for more work now")]
    Overloaded { retry_after_secs: u64 },
    #[error("{}", late_message(.0))]
    Late(crate::admission::Late),
    #[error("the compute service failed: {0}")]
    BadGateway(String),
    #[error("the job queue is unavailable: {0}")]
    Unavailable(String),
    #[error("no thread could be started: {0}")]
    NoThread(std::io::Error),
    #[error("the deadline passed before the work finished")]
    Expired,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the work panicked: {0}")]
    Panicked(String),
    /// The request's `Idempotency-Key` names a job stored for other work (the job's id).
    #[error("the Idempotency-Key is already used by job {0} for other work")]
    KeyReused(String),
}

/// One strategy, ready to run work.
#[derive(Debug)]
pub enum Strategy {
    Inline(Inline),
    Spawn(Spawn),
    Blocking(Blocking),
    Pool(PoolStrategy),
    Remote(Remote),
    Queue(QueueStrategy),
    Auto(Auto),
    /// The compute service's own strategy (not a gateway choice).
    Rayon(Rayon),
}

impl Strategy {
    pub fn name(&self) -> Name {
        match self {
            Strategy::Inline(_) => Name::Inline,
            Strategy::Spawn(_) => Name::Spawn,
            Strategy::Blocking(_) => Name::Blocking,
            Strategy::Pool(_) => Name::Pool,
            Strategy::Remote(_) => Name::Remote,
            Strategy::Queue(_) => Name::Queue,
            Strategy::Auto(_) => Name::Auto,
            Strategy::Rayon(_) => Name::Rayon,
        }
    }

    /// Runs `work`, giving up at `deadline`; the queue strategy stores it as a job instead,
    /// and `auto` chooses by the client's preferences. `submit` (the request's
    /// `Idempotency-Key` and `Job-Deadline`) applies to a job stored: synchronous strategies
    /// store nothing, so they have nothing to find by a key.
    ///
    /// # Errors
    /// [`ExecError`] when the work could not run or finish, or the job could not be stored.
    pub async fn run(
        &self,
        work: Work,
        deadline: Instant,
        prefer: &offload_axum::Prefer,
        submit: &offload_axum::Submit,
    ) -> Result<Outcome, ExecError> {
        let done = match self {
            Strategy::Inline(s) => s.run(work, deadline),
            Strategy::Spawn(s) => s.run(work, deadline).await,
            Strategy::Blocking(s) => s.run(work, deadline).await,
            // A client's own wait is a hard bound: work predicted not to finish by then is
            // refused at once even when a thread is idle, rather than run to a 504.
            Strategy::Pool(s) if prefer.wait.is_some() => {
                let budget = crate::pool::Budget {
                    end: deadline,
                    start_now: false,
                };
                s.run_within(work, budget, deadline).await.map(|(d, _)| d)
            }
            Strategy::Pool(s) => s.run(work, deadline).await,
            Strategy::Remote(s) => s.run(work, deadline).await,
            Strategy::Rayon(s) => s.run(work, deadline).await,
            // `wait` bounds the wait for room in a full backlog, not the store's own answer.
            Strategy::Queue(q) => {
                let room_by = prefer
                    .wait
                    .map_or(deadline, |w| deadline.min(Instant::now() + w));
                return q
                    .enqueue(work, room_by, submit)
                    .await
                    .map(Outcome::Accepted);
            }
            Strategy::Auto(a) => {
                return a
                    .run(work, deadline, prefer, submit)
                    .await
                    .map(Outcome::Routed);
            }
        };
        done.map(Outcome::Done)
    }

    /// The job queue behind `queue` and `auto`.
    pub fn queue(&self) -> Option<&QueueStrategy> {
        match self {
            Strategy::Queue(q) => Some(q),
            Strategy::Auto(a) => Some(a.queue()),
            _ => None,
        }
    }

    /// The pool behind `pool` and `auto`.
    pub fn pool(&self) -> Option<&crate::pool::Pool> {
        match self {
            Strategy::Pool(p) => Some(p.pool()),
            Strategy::Auto(a) => Some(a.pool().pool()),
            _ => None,
        }
    }

    /// Registers the strategy's metrics: the pool's, the compute service's, the gateway's
    /// sending to compute services, the job queue's.
    pub fn register(&self, registry: &mut Registry) {
        match self {
            Strategy::Pool(p) => p.register(registry),
            Strategy::Remote(r) => r.register(registry),
            Strategy::Auto(a) => a.register(registry),
            Strategy::Rayon(r) => r.register(registry),
            _ => {}
        }
        if let Some(q) = self.queue() {
            q.register(registry);
        }
    }

    /// Sets the gauges read from live state, before a scrape (the queue's, which ask its
    /// store, are [`QueueStrategy::refresh_metrics`]).
    pub fn refresh_metrics(&self) {
        match self {
            Strategy::Pool(p) => p.refresh_metrics(),
            Strategy::Remote(r) => r.refresh_metrics(),
            Strategy::Auto(a) => a.pool().refresh_metrics(),
            Strategy::Rayon(r) => r.refresh_metrics(),
            _ => {}
        }
    }

    /// Adds what `/health` says of the strategy's capacity: a compute service's `capacity`
    /// (requests it admits at once) and `threads`, which a remote gateway sizes its sending
    /// by; a pool's threads and predicted wait.
    pub fn describe_capacity(&self, body: &mut crate::api::Health) {
        match self {
            Strategy::Rayon(r) => {
                body.capacity = Some(r.max_inflight());
                body.threads = Some(r.threads());
                body.secs_per_unit = Some(
                    r.probe()
                        .iter()
                        .map(|(k, v)| (k.name().to_string(), *v))
                        .collect(),
                );
            }
            Strategy::Pool(p) => {
                body.threads = Some(p.pool().threads());
                body.predicted_wait_s = Some(p.pool().predicted_wait().as_secs_f64());
            }
            Strategy::Auto(a) => {
                body.threads = Some(a.pool().pool().threads());
                body.predicted_wait_s = Some(a.pool().pool().predicted_wait().as_secs_f64());
            }
            Strategy::Remote(r) => {
                body.predicted_wait_s = Some(r.predicted_wait().as_secs_f64());
            }
            _ => {}
        }
    }

    /// Stops intake and waits up to `grace` for work in hand to finish.
    pub fn drain(&self, grace: Duration) {
        let pool = match self {
            Strategy::Pool(p) => p,
            Strategy::Auto(a) => a.pool(),
            _ => return,
        };
        if !pool.pool().drain(grace) {
            tracing::warn!(?grace, "pool threads still busy after the grace period");
        }
    }
}

fn late_message(late: &crate::admission::Late) -> String {
    format!(
        "the work ahead would take {:.2} s; this request would not finish before its deadline",
        late.wait.as_secs_f64()
    )
}

impl From<crate::pool::TaskError> for ExecError {
    fn from(e: crate::pool::TaskError) -> ExecError {
        use crate::pool::TaskError;
        match e {
            TaskError::Expired | TaskError::Stopped => ExecError::Expired,
            TaskError::Panicked(msg) => ExecError::Panicked(msg),
        }
    }
}

impl From<crate::pool::SubmitError> for ExecError {
    fn from(e: crate::pool::SubmitError) -> ExecError {
        use crate::pool::SubmitError;
        match e {
            // The pool's predicted wait: when the work ahead has drained.
            SubmitError::Full { retry_after, .. } => ExecError::Overloaded {
                retry_after_secs: crate::admission::retry_after_secs(retry_after),
            },
            SubmitError::Late(late) => ExecError::Late(late),
            SubmitError::ShuttingDown => ExecError::ShuttingDown,
        }
    }
}

impl ExecError {
    /// The queue's store failed or is out of reach (503 `queue_unavailable`).
    pub fn unavailable(e: crate::queue::QueueError) -> ExecError {
        ExecError::Unavailable(e.to_string())
    }

    /// Whether this is a 503 for overload (full, late, store out of reach, no thread): what a
    /// closed-loop client would send straight back, so the gateway paces it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ExecError::Overloaded { .. }
                | ExecError::Late(_)
                | ExecError::Unavailable(_)
                | ExecError::NoThread(_)
        )
    }

    /// The `Retry-After` seconds of a 503, when this error is one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ExecError::Overloaded { retry_after_secs } => Some(*retry_after_secs),
            ExecError::Late(late) => Some(crate::admission::retry_after_secs(late.retry_after)),
            ExecError::Unavailable(_) | ExecError::NoThread(_) | ExecError::ShuttingDown => {
                Some(RETRY_AFTER_SECS)
            }
            _ => None,
        }
    }
}

/// Seconds a client is asked to wait after a 503: long enough for a few heavy requests to
/// finish and free their places.
pub const RETRY_AFTER_SECS: u64 = 1;

/// What one chunk reports back: its result and when it ran.
type ChunkOutcome = (Result<u64, Stopped>, Instant, Instant);

/// Runs a chunk on the calling thread and times it.
fn run_chunk(chunk: &Chunk, stop: &dyn Fn() -> bool) -> ChunkOutcome {
    let start = Instant::now();
    let r = chunk.run(stop);
    (r, start, Instant::now())
}

/// Folds chunk outcomes into a [`Done`]; any stopped chunk means the deadline passed (the
/// other reason to stop, a gone client, leaves nobody to answer).
fn finish(handed_off: Instant, outcomes: &[ChunkOutcome]) -> Result<Done, ExecError> {
    let mut parts = Vec::with_capacity(outcomes.len());
    for (r, _, _) in outcomes {
        parts.push(r.map_err(|Stopped| ExecError::Expired)?);
    }
    let first = outcomes.iter().map(|o| o.1).min().unwrap_or(handed_off);
    let last = outcomes.iter().map(|o| o.2).max().unwrap_or(first);
    Ok(Done {
        result: combine(&parts),
        wait: first.saturating_duration_since(handed_off),
        run: last - first,
    })
}

/// Set when the request that owns some threads goes away (its future is dropped), so the
/// threads' stop check sees it and they give up early.
#[derive(Debug, Clone, Default)]
struct Cancel(Arc<AtomicBool>);

impl Cancel {
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// A guard that sets the flag when dropped: on return, on error and on cancellation.
    fn guard(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.0.store(true, Ordering::Relaxed);
    }
}

/// The stop check of threads owned by a request: its deadline passed or it was dropped.
fn stop_check(cancel: Cancel, deadline: Instant) -> impl Fn() -> bool + Send + Sync + 'static {
    move || cancel.is_set() || Instant::now() >= deadline
}
