//! `offload worker`: takes jobs from the queue and runs them on a bounded pool, never on the
//! runtime's threads; renews each job's lease while it runs; stops a run over `--job-timeout`;
//! on SIGTERM stops claiming, finishes what it can within the grace period and gives the rest
//! back. With `--metrics-addr` it serves what it does at `/metrics`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::serve::{LimitArgs, QueueArgs, positive};
use super::{cores, parse_duration, shutdown_signal};
use crate::metrics::Registry;
use crate::pool::{Pool, PoolConfig, TaskError};
use crate::queue::worker::{self, BoxFuture, Executor, WorkerConfig};
use crate::queue::{Handlers, JobError, Queue, Reach, StoreMetrics, WorkerMetrics};

/// Flags of `offload worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Jobs run at once, each on its own pool thread [default: cores].
    #[arg(long, env = "OFFLOAD_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Most jobs claimed ahead of those running, so a thread that finishes one starts the next
    /// without a trip to the store. The worker claims ahead about 50 ms of work per thread (by
    /// the jobs' measured run time), at least one per thread [default: 256 per thread].
    #[arg(long, env = "OFFLOAD_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Lease per job: a job whose worker stops renewing it for this long runs again elsewhere.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "OFFLOAD_LEASE")]
    pub lease: Duration,
    /// How long SIGTERM waits for jobs in hand before giving them back.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "OFFLOAD_GRACE")]
    pub grace: Duration,
    /// Longest a job may run on its thread; past it the run is told to stop and fails as
    /// `timed_out`, retried with backoff like any error [default: none: the size limits
    /// (--max-count, ...) already bound a run, and a limit that a starved machine crosses
    /// would fail good jobs]
    #[arg(long, value_parser = parse_timeout, env = "OFFLOAD_JOB_TIMEOUT")]
    pub job_timeout: Option<Duration>,
    /// Serve the worker's metrics (Prometheus text) at `http://ADDR/metrics`: a port, on
    /// 127.0.0.1, or HOST:PORT [default: none, no metrics served]
    #[arg(long, value_parser = parse_metrics_addr, env = "OFFLOAD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Export a span of each job's run to this OpenTelemetry collector, over OTLP/HTTP in
    /// protobuf, the child of the request that stored the job: `http://HOST:PORT`
    /// (`/v1/traces` is added) or a full URL [default: none: no span is made]
    #[arg(long, value_parser = crate::otel::Endpoint::parse, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<crate::otel::Endpoint>,
    /// Niceness added to the threads that run jobs (Linux).
    #[arg(long, default_value_t = 0, env = "OFFLOAD_NICE", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub nice: i32,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub(super) fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let limits = args.limits.to_limits()?;
    let concurrency = positive("concurrency", args.concurrency, cores())?;
    let prefetch = args
        .prefetch
        .unwrap_or(concurrency * crate::queue::worker::PREFETCH_MAX_PER_THREAD);
    if args.lease < Duration::from_millis(30) {
        anyhow::bail!("--lease must be at least 30ms");
    }
    let pool = Arc::new(
        Pool::new(PoolConfig {
            threads: concurrency,
            // The loop hands over at most two jobs per thread: one running, one next.
            max_queue: 2 * concurrency,
            priority: crate::pool::Priority {
                nice: args.nice,
                policy: crate::pool::Policy::Normal,
            },
            name: "offload-job".into(),
        })
        .context("starting the job threads")?,
    );
    pool.observe(Arc::new(crate::pool_metrics::PanicLog));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("offload-rt")
        .enable_all()
        .build()
        .context("building the async runtime")?;
    runtime.block_on(async move {
        let queue = args.queue.open().await?;
        let mut config = WorkerConfig { concurrency, prefetch, grace: args.grace, ..WorkerConfig::default() }.with_lease(args.lease);
        // With metrics, the work's startup calibration gives the backlog's predictions a
        // prior until runs here teach the handlers (their clones share what they learn).
        let handlers = match args.metrics_addr {
            Some(_) => crate::queue::builtin::calibrated(limits),
            None => crate::queue::builtin::handlers(limits),
        };
        let handlers = match args.job_timeout {
            Some(limit) => handlers.default_timeout(limit),
            None => handlers,
        };
        if let Some(addr) = args.metrics_addr {
            let metrics = WorkerMetrics::new();
            let served = serve_metrics(addr, queue.clone(), metrics.clone(), handlers.clone()).await?;
            println!("offload worker: metrics at http://{served}/metrics");
            config = config.with_metrics(metrics);
        }
        println!("offload worker: running {} (queue {}, concurrency {concurrency})", config.worker_id.as_str(), args.queue.url);
        tracing::info!(worker = config.worker_id.as_str(), queue = %args.queue.url, concurrency, job_timeout = ?args.job_timeout, "worker ready");
        let report = worker::run(queue, executor(pool.clone(), handlers), config, shutdown_signal()).await;
        tracing::info!(?report, "worker stopped");
        pool.drain(Duration::from_secs(1));
        crate::otel::flush(Duration::from_secs(2));
        Ok(ExitCode::SUCCESS)
    })
}

/// A `--metrics-addr`: a port (on loopback) or an address with a port.
fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse()
        .map_err(|_| format!("expected a port (on 127.0.0.1) or HOST:PORT, not {text:?}"))
}

/// What the worker's `/metrics` shows: the worker's own series, the store's (jobs by state,
/// the backlog in seconds, predicted by `predict`) and the log events by kind.
#[derive(Clone)]
struct MetricsState {
    registry: Arc<Registry>,
    store: StoreMetrics,
    reach: Reach,
    queue: Queue,
    predict: Handlers,
}

/// Binds `addr` and serves `/metrics` on this runtime until the process ends; answers the
/// address bound (a port of 0 picks one).
async fn serve_metrics(
    addr: SocketAddr,
    queue: Queue,
    metrics: WorkerMetrics,
    predict: Handlers,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics address {addr}"))?;
    let bound = listener.local_addr()?;
    let store = StoreMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    store.register(&mut registry);
    crate::logs::register(&mut registry);
    crate::otel::register(&mut registry);
    let state = MetricsState {
        registry: Arc::new(registry),
        store,
        reach: Reach::new(queue.clone()).with_wait(Duration::from_secs(2)),
        queue,
        predict,
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_text))
        .fallback(|uri: axum::http::Uri| async move {
            crate::gateway::ApiError::NotFound(uri.path().chars().take(128).collect())
        })
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok(bound)
}

async fn metrics_text(
    axum::extract::State(s): axum::extract::State<MetricsState>,
) -> impl axum::response::IntoResponse {
    if let Err(e) = s.store.refresh(&s.reach, &s.queue, &s.predict).await {
        crate::throttled!("worker_metrics_store_failed", warn, error = %e, "could not read the queue for /metrics");
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::encode(&s.registry),
    )
}

/// A `--job-timeout`: a duration above zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let limit = parse_duration(text)?;
    if limit.is_zero() {
        return Err("a job timeout must be above 0 (leave the flag out for none)".to_owned());
    }
    Ok(limit)
}

/// Runs each job with `handlers` (offload's built-in ones, [`crate::queue::builtin`],
/// registered as a user's would be), whole on one pool thread.
fn executor(pool: Arc<Pool>, handlers: Handlers) -> Executor {
    handlers.executor_on(move |run| -> BoxFuture<Result<String, JobError>> {
        let handle = pool.submit(None, move |_stop| run());
        Box::pin(async move {
            match handle.map_err(|e| JobError::retry(e.to_string()))?.await {
                Ok(outcome) => outcome,
                Err(TaskError::Panicked(msg)) => {
                    Err(JobError::retry(format!("the work panicked: {msg}")))
                }
                Err(e) => Err(JobError::retry(e.to_string())),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<WorkerArgs, clap::Error> {
        let argv = ["offload", "worker"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Worker(args) => Ok(args),
            other => panic!("not worker: {other:?}"),
        }
    }

    #[test]
    fn the_job_timeout_is_none_by_default_and_refuses_what_is_no_duration() {
        assert_eq!(parse(&[]).unwrap().job_timeout, None);
        let args = parse(&["--job-timeout", "90s"]).unwrap();
        assert_eq!(args.job_timeout, Some(Duration::from_secs(90)));
        for (bad, says) in [
            ("nonsense", "expected seconds or a duration"),
            ("0", "above 0"),
        ] {
            let err = parse(&["--job-timeout", bad]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
            assert_eq!(err.exit_code(), 2, "a usage error");
            let text = err.to_string();
            assert!(
                text.contains("--job-timeout") && text.contains(bad) && text.contains(says),
                "{text}"
            );
        }
    }
}
