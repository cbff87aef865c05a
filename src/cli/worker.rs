//! `offload worker`: takes jobs from the queue and runs them on a bounded pool, never on the
//! runtime's threads; renews each job's lease while it runs; on SIGTERM stops claiming,
//! finishes what it can within the grace period and gives the rest back.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::serve::{LimitArgs, QueueArgs, positive};
use super::{cores, parse_duration, shutdown_signal};
use crate::pool::{Pool, PoolConfig, TaskError};
use crate::queue::JobError;
use crate::queue::worker::{self, BoxFuture, Executor, WorkerConfig};
use crate::work::Limits;

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
        let config = WorkerConfig { concurrency, prefetch, grace: args.grace, ..WorkerConfig::default() }.with_lease(args.lease);
        println!("offload worker: running {} (queue {}, concurrency {concurrency})", config.worker_id.as_str(), args.queue.url);
        tracing::info!(worker = config.worker_id.as_str(), queue = %args.queue.url, concurrency, "worker ready");
        let report = worker::run(queue, executor(pool.clone(), limits), config, shutdown_signal()).await;
        tracing::info!(?report, "worker stopped");
        pool.drain(Duration::from_secs(1));
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs each job with offload's built-in handlers ([`crate::queue::builtin`]), registered as a
/// user's would be, whole on one pool thread.
fn executor(pool: Arc<Pool>, limits: Limits) -> Executor {
    crate::queue::builtin::handlers(limits).executor_on(
        move |run| -> BoxFuture<Result<String, JobError>> {
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
        },
    )
}
