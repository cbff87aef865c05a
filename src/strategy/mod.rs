//! The strategies: the ways a `/heavy` request's work can run. One file each, one enum over
//! them; every strategy gives the same result for the same work.
//!
//! Each file declares what is known of its strategy without running it (its `ABOUT`: name,
//! helper process, whether it routes or runs on the runtime's threads, whether the bench
//! floods and mixes it, the verdict's advice), and [`Setup`] builds it from `serve`'s flags.
//! The gateway, `serve` and the bench ask [`Name`] and [`Strategy`] for these instead of
//! matching on names, so a new strategy is its file plus its variants and arms in this
//! module (`Name`, `Name::GATEWAY`, `Name::about`, `Strategy`, `Strategy::build`).

mod auto;
mod blocking;
mod inline;
mod pool;
mod queue;
mod rayon;
mod remote;
mod setup;
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
pub use setup::Setup;
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
}

/// A process a strategy needs beside its gateway (the bench starts it first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// An `offload compute` service the gateway forwards to.
    Compute,
    /// An `offload worker` that runs the queued jobs.
    Worker,
}

/// What a strategy declares of itself, in its own file: what the gateway, `serve` and the
/// bench ask of it instead of matching on its name.
#[derive(Debug)]
pub struct About {
    /// Its name: on the command line, in answers, in `/health` and in `results.json`.
    pub name: &'static str,
    /// The process it needs beside the gateway, if any.
    pub helper: Option<Helper>,
    /// Whether it chooses per request between running the work in its pool (200) and
    /// storing it as a job (202).
    pub routes: bool,
    /// Whether its work runs on the runtime's own threads (or its blocking threads, which
    /// share their start hook), which must then not outrank other processes.
    pub on_runtime: bool,
    /// Whether the bench floods it by default: it refuses when full, or should not have to.
    pub in_flood: bool,
    /// Whether the bench compares it on the mix.
    pub in_mix: bool,
    /// When to use it, in one line: the verdict's advice, whatever a run measured.
    pub advice: &'static str,
}

impl About {
    /// Whether it stores work as durable jobs that `offload worker` runs (answering 202 with
    /// the job's `Location`), and so has a `/jobs` to read and change.
    pub fn stores_jobs(&self) -> bool {
        self.helper == Some(Helper::Worker)
    }

    /// Whether it stores every request's work as a job: every answer is a 202.
    pub fn always_stores(&self) -> bool {
        self.stores_jobs() && !self.routes
    }

    /// What it makes of the client's preferences. A strategy that stores jobs honours
    /// `respond-async`, and applies `wait` itself: `auto` takes it as its budget, the queue
    /// as the bound on a request's wait for room in a full backlog (it answers at once while
    /// the backlog has room). A synchronous strategy answers by `wait` at the latest (504 at
    /// the end; pool and remote answer 503 sooner when they predict they would miss it).
    pub fn applied(&self, prefer: &offload_axum::Prefer) -> Applied {
        if self.stores_jobs() {
            Applied {
                header: offload_axum::Prefer::applied(prefer.wait, prefer.respond_async),
                answer_within: None,
            }
        } else {
            Applied {
                header: offload_axum::Prefer::applied(prefer.wait, false),
                answer_within: prefer.wait,
            }
        }
    }
}

impl Name {
    /// The gateway strategies, in the order the bench runs them by default. The bench, its
    /// report and its schema take the strategies from here, and the charts' colours follow
    /// this order.
    pub const GATEWAY: [Name; 7] = [
        Name::Inline,
        Name::Spawn,
        Name::Blocking,
        Name::Pool,
        Name::Remote,
        Name::Queue,
        Name::Auto,
    ];

    /// Its place in [`Name::GATEWAY`].
    pub fn index(self) -> usize {
        Name::GATEWAY
            .iter()
            .position(|&n| n == self)
            .expect("every strategy is in GATEWAY")
    }

    /// The gateway strategy called `s`.
    pub fn parse(s: &str) -> Option<Name> {
        Name::GATEWAY.into_iter().find(|n| n.as_str() == s)
    }

    /// What the strategy declares of itself (its file's `ABOUT`).
    pub fn about(self) -> &'static About {
        match self {
            Name::Inline => &inline::ABOUT,
            Name::Spawn => &spawn::ABOUT,
            Name::Blocking => &blocking::ABOUT,
            Name::Pool => &pool::ABOUT,
            Name::Remote => &remote::ABOUT,
            Name::Queue => &queue::ABOUT,
            Name::Auto => &auto::ABOUT,
        }
    }

    /// The process it needs beside the gateway, if any.
    pub fn helper(self) -> Option<Helper> {
        self.about().helper
    }

    /// Whether the work runs inside the gateway's own process, answering with the result.
    pub fn in_process(self) -> bool {
        self.helper().is_none()
    }

    /// Whether it stores work as durable jobs that `offload worker` runs (answering 202 with
    /// the job's `Location`), and so has a `/jobs` to read and change.
    pub fn stores_jobs(self) -> bool {
        self.about().stores_jobs()
    }

    /// Whether it chooses per request between its pool (200) and the job store (202), so it
    /// can answer either way.
    pub fn routes(self) -> bool {
        self.about().routes
    }

    /// Whether it stores every request's work as a job: every answer is a 202.
    pub fn always_stores(self) -> bool {
        self.about().always_stores()
    }

    /// Whether its work runs on the runtime's own threads (or its blocking threads).
    pub fn on_runtime(self) -> bool {
        self.about().on_runtime
    }

    /// Whether the bench floods it by default.
    pub fn in_flood(self) -> bool {
        self.about().in_flood
    }

    /// Whether the bench compares it on the mix.
    pub fn in_mix(self) -> bool {
        self.about().in_mix
    }

    /// When to use it, in one line (the verdict's advice).
    pub fn advice(self) -> &'static str {
        self.about().advice
    }

    pub fn as_str(self) -> &'static str {
        self.about().name
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

impl Outcome {
    /// The strategy its answer names (`"strategy"`): `strategy` itself for work it ran,
    /// `queue` for a job stored, and where `auto` sent the work.
    pub fn answered_by(&self, strategy: &Strategy) -> &'static str {
        match self {
            Outcome::Done(_) => strategy.as_str(),
            Outcome::Accepted(_) => queue::ABOUT.name,
            Outcome::Routed(r) => r.by(),
        }
    }
}

/// What a strategy makes of a request's `Prefer` header.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The `Preference-Applied` its answer carries.
    pub header: Option<String>,
    /// The wait its answer comes within at the latest, when it bounds the deadline: a
    /// synchronous strategy's `wait` (504 at its end).
    pub answer_within: Option<Duration>,
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
    /// The gateway strategy it is; `None` for the compute service's own.
    pub fn name(&self) -> Option<Name> {
        match self {
            Strategy::Inline(_) => Some(Name::Inline),
            Strategy::Spawn(_) => Some(Name::Spawn),
            Strategy::Blocking(_) => Some(Name::Blocking),
            Strategy::Pool(_) => Some(Name::Pool),
            Strategy::Remote(_) => Some(Name::Remote),
            Strategy::Queue(_) => Some(Name::Queue),
            Strategy::Auto(_) => Some(Name::Auto),
            Strategy::Rayon(_) => None,
        }
    }

    /// What it declares of itself: a gateway strategy's [`Name::about`], or the compute
    /// service's own.
    pub fn about(&self) -> &'static About {
        self.name().map_or(&rayon::ABOUT, Name::about)
    }

    /// Its name, in answers and in `/health` (`rayon` for the compute service's).
    pub fn as_str(&self) -> &'static str {
        self.about().name
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The capabilities each strategy declares, by name: what the gateway, `serve` and the
    /// bench used to match on.
    #[test]
    fn each_strategy_declares_what_callers_ask_of_it() {
        let with = |can: fn(Name) -> bool| -> Vec<&str> {
            Name::GATEWAY
                .into_iter()
                .filter(|&n| can(n))
                .map(Name::as_str)
                .collect()
        };
        assert_eq!(with(Name::stores_jobs), ["queue", "auto"]);
        assert_eq!(with(Name::routes), ["auto"]);
        assert_eq!(with(Name::always_stores), ["queue"]);
        assert_eq!(with(Name::on_runtime), ["inline", "blocking"]);
        assert_eq!(
            with(Name::in_process),
            ["inline", "spawn", "blocking", "pool"]
        );
        assert_eq!(with(Name::in_flood), ["pool", "remote", "queue", "auto"]);
        assert_eq!(with(Name::in_mix), ["pool", "queue", "auto"]);
        for (i, n) in Name::GATEWAY.into_iter().enumerate() {
            assert_eq!(n.index(), i);
            assert_eq!(Name::parse(n.as_str()), Some(n));
            // `serve --strategy` spells it as its file declares.
            let flag = clap::ValueEnum::to_possible_value(&n).unwrap();
            assert_eq!(flag.get_name(), n.as_str());
        }
        assert_eq!(Name::parse("rayon"), None);
        assert_eq!(rayon::ABOUT.name, "rayon");
    }

    /// A synchronous strategy answers by `wait` and never applies `respond-async`; one that
    /// stores jobs applies both itself.
    #[test]
    fn prefer_is_applied_by_what_the_strategy_does() {
        let prefer = offload_axum::Prefer {
            wait: Some(Duration::from_secs(3)),
            respond_async: true,
        };
        let pool = Name::Pool.about().applied(&prefer);
        assert_eq!(pool.header.as_deref(), Some("wait=3"));
        assert_eq!(pool.answer_within, Some(Duration::from_secs(3)));
        for n in [Name::Queue, Name::Auto] {
            let a = n.about().applied(&prefer);
            assert_eq!(a.header.as_deref(), Some("respond-async, wait=3"));
            assert_eq!(a.answer_within, None);
        }
        assert_eq!(rayon::ABOUT.applied(&prefer), pool);
    }
}
