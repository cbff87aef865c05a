//! `offload compute`: the compute service that `serve --strategy remote` forwards to.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::cores;
use super::serve::{LimitArgs, RequestArgs, positive, run_service};
use crate::gateway::AppState;
use crate::strategy::{Rayon, Strategy};

/// Flags of `offload compute`.
#[derive(Debug, Args)]
pub struct ComputeArgs {
    /// Address to listen on (use 0.0.0.0 to take requests from other machines).
    #[arg(long, default_value = "127.0.0.1", env = "OFFLOAD_BIND")]
    pub bind: IpAddr,
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 3001, env = "OFFLOAD_PORT")]
    pub port: u16,
    /// rayon threads that run the work [default: cores].
    #[arg(long, env = "OFFLOAD_THREADS")]
    pub threads: Option<usize>,
    /// Runtime threads for HTTP [default: 1; the work runs on rayon].
    #[arg(long, env = "OFFLOAD_RUNTIME_THREADS")]
    pub runtime_threads: Option<usize>,
    /// Requests admitted at once (one per thread running, the rest waiting their turn in
    /// arrival order); past it, 503 with Retry-After at once. Reported on /health as the
    /// capacity a gateway may use [default: 2 x threads].
    #[arg(long, env = "OFFLOAD_MAX_INFLIGHT")]
    pub max_inflight: Option<usize>,
    #[command(flatten)]
    pub sched: super::serve::SchedArgs,
    #[command(flatten)]
    pub request: RequestArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub(super) fn run(args: ComputeArgs) -> anyhow::Result<ExitCode> {
    let limits = args.limits.to_limits()?;
    let threads = positive("threads", args.threads, cores())?;
    let runtime_threads = positive("runtime-threads", args.runtime_threads, 1)?;
    // Two per thread: one running, one ready to start the moment a thread frees up, so the
    // cores never idle between requests while the backlog stays bounded.
    let max_inflight = positive("max-inflight", args.max_inflight, 2 * threads)?;
    let priority = args.sched.priority();
    let urgent = Some(args.sched.urgent());
    if args.request.timeout.is_zero() {
        anyhow::bail!("--timeout must be more than zero");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("offload-rayon-{i}"))
        .start_handler(move |_| priority.apply())
        .build_global()
        .context("starting the rayon threads")?;
    let config = args.request.config(limits, 0)?;
    let addr = SocketAddr::new(args.bind, args.port);
    run_service(
        "compute",
        "rayon",
        runtime_threads,
        urgent,
        addr,
        async move || {
            // A first figure of its speed, for gateways to judge requests by until they have
            // measured it (on `/health`).
            let probe = crate::work::Work::probe_costs(&config.limits);
            let rayon = Rayon::new(threads, max_inflight, priority, probe)
                .context("starting the turn threads")?;
            let state = AppState::new(config, Strategy::Rayon(rayon));
            Ok((crate::compute::app(state.clone()), state))
        },
    )
}
