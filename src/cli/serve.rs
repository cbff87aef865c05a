//! `offload serve`: the gateway with one strategy.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{cores, parse_duration, shutdown_signal};
use crate::gateway::{self, AppState, GatewayConfig};
use crate::pool::PoolConfig;
use crate::strategy::{Name, RemoteConfig, Setup, Split, Strategy};
use crate::work::{self, HashParams, Limits};

/// Flags of `offload serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// How `/heavy` runs its work. `inline` is the anti-pattern (it stalls the server) and is
    /// there to be measured.
    #[arg(long, value_enum, default_value = "pool", env = "OFFLOAD_STRATEGY")]
    pub strategy: Name,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "OFFLOAD_BIND")]
    pub bind: IpAddr,
    /// Port to listen on (0: any free port; the address is printed on stdout).
    #[arg(long, default_value_t = 3000, env = "OFFLOAD_PORT")]
    pub port: u16,
    /// Runtime worker threads [default: cores].
    #[arg(long, env = "OFFLOAD_RUNTIME_THREADS")]
    pub runtime_threads: Option<usize>,
    /// Pool threads (`pool`) [default: cores].
    #[arg(long, env = "OFFLOAD_THREADS")]
    pub threads: Option<usize>,
    /// Chunks each request's work is split into: forces N for `pool` [default: as many as
    /// there are idle pool threads, so one when saturated]; for `spawn` [default: cores].
    #[arg(long, env = "OFFLOAD_SPLIT")]
    pub split: Option<usize>,
    /// Hard cap on requests waiting (`pool`; `remote`: in the gateway; `queue` and `auto`:
    /// for room in a full backlog); past it, 503 at once.
    /// Admission is by deadline first: a request predicted to miss its deadline gets 503 with
    /// the predicted Retry-After; this cap only bounds memory.
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUE, env = "OFFLOAD_MAX_QUEUE")]
    pub max_queue: usize,
    #[command(flatten)]
    pub sched: SchedArgs,
    #[command(flatten)]
    pub request: RequestArgs,
    /// Largest accepted query string in bytes (414 past it).
    #[arg(long, default_value_t = 2048, env = "OFFLOAD_MAX_QUERY")]
    pub max_query: usize,
    /// Compute services for `remote`, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3001",
        env = "OFFLOAD_COMPUTE"
    )]
    pub compute: Vec<hyper::Uri>,
    /// How often `remote` checks each compute service's /health. A service that has not
    /// answered within the interval (at least 1 s) is marked down, and the requests in
    /// flight on it go to another.
    #[arg(long, default_value = "1s", value_parser = parse_duration, env = "OFFLOAD_HEALTH_INTERVAL")]
    pub health_interval: Duration,
    /// How long `remote` waits for a new connection to a compute service before it marks the
    /// service down and sends the request (and those in flight there) to another. Long enough
    /// for one lost SYN to be sent again (Linux waits 1 s) at a cross-datacenter round trip.
    #[arg(long, default_value = DEFAULT_CONNECT_TIMEOUT, value_parser = parse_duration, env = "OFFLOAD_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// `queue` and `auto`: the longest predicted time to done the backlog may reach (its
    /// unfinished jobs over the rate the workers finish them), beside `--max-backlog`'s count.
    /// Past it the backlog counts as full: requests wait in its line for room, and `auto` runs
    /// work in the pool under its deadline. A cap in seconds means the same wait on any
    /// machine and for any size of job [default: none: the count alone]
    #[arg(long, value_parser = parse_duration, env = "OFFLOAD_QUEUE_MAX_WAIT")]
    pub queue_max_wait: Option<Duration>,
    /// `auto`: how long a client waits for an answer unless its `Prefer: wait=N` says
    /// otherwise. Work predicted to finish within it runs in the pool; the rest is queued.
    /// Light requests never wait behind more pool work than this.
    #[arg(long, default_value = "250ms", value_parser = parse_duration, env = "OFFLOAD_AUTO_WAIT")]
    pub auto_wait: Duration,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The token that cancel and retry need (`DELETE /jobs/{id}`, `POST /jobs/{id}/retry`,
    /// and the buttons of `/ui`), sent as `Authorization: Bearer TOKEN`: 16 to 1,024 visible
    /// ASCII characters (`openssl rand -hex 16`). Without it, changes are open on a loopback
    /// `--bind` and refused (401) on any other, with a warning at start. Reading (`/health`,
    /// `/metrics`, `/jobs`, `/ui`) is always open.
    #[arg(long, env = "OFFLOAD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<offload_axum::AdminToken>,
    /// Export spans of each request (its admission, its store calls) to this OpenTelemetry
    /// collector, over OTLP/HTTP in protobuf: `http://HOST:PORT` (`/v1/traces` is added) or a
    /// full URL [default: none: no span is made]
    #[arg(long, value_parser = crate::otel::Endpoint::parse, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<crate::otel::Endpoint>,
}

/// How a server's threads share the CPU (see [`crate::pool::priority`]); the same for `serve`
/// and `compute`.
#[derive(Debug, Clone, Args)]
pub struct SchedArgs {
    /// Niceness added to the threads that run heavy work (Linux). 0 keeps the work's fair share
    /// beside other processes; a higher one also makes it give way to every other process on
    /// the machine.
    #[arg(long, default_value_t = DEFAULT_NICE, env = "OFFLOAD_NICE", value_parser = clap::value_parser!(i32).range(0..=19))]
    pub nice: i32,
    /// Scheduling policy of the threads that run heavy work (Linux): `batch` marks them
    /// CPU-bound, so they never preempt other threads on wake-up.
    #[arg(long, value_enum, default_value_t = DEFAULT_POLICY, env = "OFFLOAD_POOL_POLICY")]
    pub pool_policy: PoolPolicy,
    /// EEVDF time slice asked for the runtime threads that answer requests (Linux 6.12+, which
    /// clamps it to 0.1-100 ms; 0: the kernel's default). A short slice lets a runtime thread
    /// woken for a light request preempt heavy work at once. Not for `inline` and
    /// `blocking`, whose runtime threads run the work.
    #[arg(long, default_value = "0.1ms", value_parser = parse_duration, env = "OFFLOAD_RUNTIME_SLICE")]
    pub runtime_slice: Duration,
    /// Niceness asked for the runtime threads (Linux; negative raises their priority over the
    /// heavy work's, which needs CAP_SYS_NICE or RLIMIT_NICE: without it they stay at 0, and
    /// the log says so). Not for `inline` and `blocking`.
    #[arg(long, default_value_t = DEFAULT_RUNTIME_NICE, env = "OFFLOAD_RUNTIME_NICE", value_parser = clap::value_parser!(i32).range(-20..=0), allow_negative_numbers = true)]
    pub runtime_nice: i32,
}

impl SchedArgs {
    pub fn priority(&self) -> crate::pool::Priority {
        crate::pool::Priority {
            nice: self.nice,
            policy: self.pool_policy.into(),
        }
    }
    /// What the runtime threads get when they run no heavy work.
    pub fn urgent(&self) -> crate::pool::priority::Urgent {
        crate::pool::priority::Urgent {
            slice: (!self.runtime_slice.is_zero()).then_some(self.runtime_slice),
            nice: self.runtime_nice,
        }
    }
}

/// The pool threads' scheduling policy by default.
pub const DEFAULT_POLICY: PoolPolicy = PoolPolicy::Normal;

/// `--pool-policy`: the pool crate's [`Policy`](crate::pool::Policy) as a flag (the crate
/// knows no clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolPolicy {
    /// `SCHED_OTHER`: the default time sharing.
    Normal,
    /// `SCHED_BATCH`: time sharing for CPU-bound threads; they never preempt on wake-up.
    Batch,
}

impl From<PoolPolicy> for crate::pool::Policy {
    fn from(p: PoolPolicy) -> Self {
        match p {
            PoolPolicy::Normal => crate::pool::Policy::Normal,
            PoolPolicy::Batch => crate::pool::Policy::Batch,
        }
    }
}
/// The runtime threads' niceness by default, where the process may raise it.
pub const DEFAULT_RUNTIME_NICE: i32 = -10;

/// Niceness of threads that run heavy work next to a server's runtime threads. At 10 the work
/// gave way to light requests (`/health` p99 0.3-1.3 ms beside a saturating load here) but
/// also to every other process: beside one busy loop per core it kept about a tenth of the CPU.
/// At 0 it keeps its fair share, and the runtime threads' short slice and raised priority
/// (`--runtime-slice`, `--runtime-nice`) keep light requests fast instead
/// (`scripts/fair-share.sh`; docs/sharing.md).
pub const DEFAULT_NICE: i32 = 0;

/// How long a `remote` gateway waits for a new connection to a compute service
/// (`--connect-timeout`).
///
/// A connection takes one round trip: well under a millisecond in a datacenter, 70-150 ms
/// between continents, 300 ms at worst. When a SYN is lost, Linux sends it again after 1 s
/// (its initial retransmission timeout). A 1 s timeout would call a healthy host down for one
/// lost packet, and marking a host down sends everything in flight on it elsewhere: on a
/// 64-core compute host that is up to 128 requests' work thrown away and redone. At 1.5 s the
/// retransmitted SYN gets through at any RTT up to 400 ms (and a burst of new connections
/// that overflows a busy host's accept queue gets its second chance too), while a host that
/// is really gone is found within 1.5 s by the connection and within 2 s by the health check.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "1500ms";

/// Requests that may wait in a pool or the remote gateway's queue, whatever their deadline:
/// a memory bound (a waiting request holds a connection and a few hundred bytes), far above
/// what deadline admission lets wait with the default work on any core count (at 30 s and
/// ~20 ms a request on 64 cores, about 96,000 would fit; the cap stops that at 65,536).
pub const DEFAULT_MAX_QUEUE: usize = 65_536;

/// Where the `queue` strategy and `offload worker` keep jobs, and the queue's bounds.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// The job queue: sqlite://PATH (one machine, no server), or redis://HOST:PORT or
    /// postgres://USER@HOST:PORT/DB (many machines).
    #[arg(
        long = "queue",
        default_value = "sqlite://offload-queue.db",
        env = "OFFLOAD_QUEUE"
    )]
    pub url: String,
    /// Unfinished jobs the queue holds; past it, a new request waits for room up to its own
    /// wait (`--timeout`, or `Prefer: wait=N`), then answers 503 with Retry-After.
    #[arg(long, default_value_t = crate::queue::DEFAULT_MAX_BACKLOG, env = "OFFLOAD_MAX_BACKLOG")]
    pub max_backlog: u64,
    /// Runs of a job before it is marked failed.
    #[arg(long, default_value_t = crate::queue::DEFAULT_MAX_ATTEMPTS, env = "OFFLOAD_MAX_ATTEMPTS")]
    pub max_attempts: u32,
    /// Times a job may be lost with its worker (killed, hung: its lease lapsed) before it is
    /// marked failed. Stalls do not spend attempts.
    #[arg(long, default_value_t = crate::queue::DEFAULT_MAX_STALLS, env = "OFFLOAD_MAX_STALLS")]
    pub max_stalls: u32,
    /// How long finished jobs (and their results) are kept.
    #[arg(long, default_value = "1h", value_parser = parse_duration, env = "OFFLOAD_RETENTION")]
    pub retention: Duration,
    /// Name of the queue (Redis key prefix, Postgres `queue` column), so several can share one
    /// server: 1 to 64 of A-Z a-z 0-9 _ - (checked before anything starts).
    #[arg(long, default_value = crate::queue::DEFAULT_QUEUE_NAME, env = "OFFLOAD_QUEUE_NAME")]
    pub queue_name: crate::queue::QueueName,
}

impl QueueArgs {
    /// Opens the queue.
    ///
    /// # Errors
    /// A bad URL, or a store that cannot be opened or reached.
    pub async fn open(&self) -> anyhow::Result<crate::queue::Queue> {
        if self.max_backlog == 0 || self.max_attempts == 0 || self.max_stalls == 0 {
            anyhow::bail!("--max-backlog, --max-attempts and --max-stalls must be at least 1");
        }
        let options = crate::queue::QueueOptions {
            max_backlog: self.max_backlog,
            max_attempts: self.max_attempts,
            max_stalls: self.max_stalls,
            retention: self.retention,
            name: self.queue_name.clone(),
            ..crate::queue::QueueOptions::default()
        };
        crate::queue::open(&self.url, options)
            .await
            .with_context(|| format!("opening the queue {}", self.url))
    }
}

/// How every serving command treats a request, the same for `serve` and `compute`.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// Deadline of a heavy request, queueing included (504 past it).
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "OFFLOAD_TIMEOUT")]
    pub timeout: Duration,
    /// How long shutdown waits for work in hand.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "OFFLOAD_GRACE")]
    pub grace: Duration,
    /// Largest accepted request body in bytes (413 past it).
    #[arg(long, default_value_t = 16 * 1024, env = "OFFLOAD_MAX_BODY")]
    pub max_body: usize,
    /// Refusals (503 for overload) a second, per core, past which each is held until its
    /// turn, so that closed-loop clients cannot spin on them; a lone refusal goes at once
    /// (0: never hold).
    #[arg(long, default_value_t = gateway::DEFAULT_REFUSALS_PER_CORE, env = "OFFLOAD_REFUSALS_PER_CORE")]
    pub refusals_per_core: u32,
    /// Longest a refusal is held.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "OFFLOAD_MAX_REFUSAL_HOLD")]
    pub max_refusal_hold: Duration,
    /// How long a request's head may take to arrive, from the accept (first request) or from
    /// its first byte (later ones); past it the connection is closed (nginx
    /// `client_header_timeout`, 60 s by default).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "OFFLOAD_HEADER_TIMEOUT")]
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (nginx
    /// `keepalive_timeout`, 75 s by default).
    #[arg(long, default_value = "75s", value_parser = parse_duration, env = "OFFLOAD_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; past it the oldest without a request in service
    /// are closed to make room, so `/health` stays reachable [default: the open-file limit,
    /// raised to its hard limit at start, less a quarter of it (64 to 4,096) for the store
    /// and other files; at most 65,536].
    #[arg(long, env = "OFFLOAD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
}

impl RequestArgs {
    /// The gateway settings these flags give, with the open-file limit raised first.
    ///
    /// # Errors
    /// A zero timeout, or a connection cap the open-file limit cannot hold.
    pub fn config(&self, limits: work::Limits, max_query: usize) -> anyhow::Result<GatewayConfig> {
        if self.timeout.is_zero() || self.header_timeout.is_zero() || self.idle_timeout.is_zero() {
            anyhow::bail!("--timeout, --header-timeout and --idle-timeout must be more than zero");
        }
        let open_files = gateway::conns::raise_open_files();
        let max = gateway::conns::ConnLimits::resolve(self.max_connections, open_files)?;
        Ok(GatewayConfig {
            limits,
            timeout: self.timeout,
            max_body: self.max_body,
            max_query,
            grace: self.grace,
            refusals_per_second: u64::from(self.refusals_per_core) * cores() as u64,
            max_refusal_hold: self.max_refusal_hold,
            conns: gateway::conns::ConnLimits {
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                max,
            },
            open_files,
            changes: offload_axum::Changes::Open,
        })
    }
}

/// Bounds on work sizes and the cost of `hash`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest `n` for `count`.
    #[arg(long, default_value_t = work::DEFAULT_MAX_COUNT, env = "OFFLOAD_MAX_COUNT")]
    pub max_count: u64,
    /// Largest `n` for `primes`.
    #[arg(long, default_value_t = work::DEFAULT_MAX_PRIMES, env = "OFFLOAD_MAX_PRIMES")]
    pub max_primes: u64,
    /// Largest `n` (number of hashes) for `hash`.
    #[arg(long, default_value_t = work::DEFAULT_MAX_HASHES, env = "OFFLOAD_MAX_HASHES")]
    pub max_hashes: u64,
    /// Memory per argon2id hash, in KiB.
    #[arg(long, default_value_t = HashParams::default().memory_kib, env = "OFFLOAD_HASH_MEMORY_KIB")]
    pub hash_memory_kib: u32,
    /// Passes per argon2id hash.
    #[arg(long, default_value_t = HashParams::default().iterations, env = "OFFLOAD_HASH_ITERATIONS")]
    pub hash_iterations: u32,
    /// Accept `work=fault`, a task that panics (for fault drills and tests).
    #[arg(long, hide = true, env = "OFFLOAD_ALLOW_FAULT")]
    pub allow_fault: bool,
}

impl LimitArgs {
    /// # Errors
    /// A message naming the setting out of range.
    pub fn to_limits(&self) -> anyhow::Result<Limits> {
        let limits = Limits {
            max_count: self.max_count,
            max_primes: self.max_primes,
            max_hashes: self.max_hashes,
            hash: HashParams {
                memory_kib: self.hash_memory_kib,
                iterations: self.hash_iterations,
            },
            allow_fault: self.allow_fault,
        };
        limits.validate().map_err(anyhow::Error::msg)?;
        Ok(limits)
    }
}

pub(super) fn positive(name: &str, v: Option<usize>, default: usize) -> anyhow::Result<usize> {
    match v {
        Some(0) => anyhow::bail!("--{name} must be at least 1"),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

pub(super) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let limits = args.limits.to_limits()?;
    let runtime_threads = positive("runtime-threads", args.runtime_threads, cores())?;
    let threads = positive("threads", args.threads, cores())?;
    let split = positive("split", args.split, threads)?;
    let pool_split = match args.split {
        Some(k) => Split::Fixed(k),
        None => Split::Adaptive(threads),
    };
    if args.max_queue == 0 {
        anyhow::bail!("--max-queue must be at least 1");
    }
    if args.request.timeout.is_zero()
        || args.health_interval.is_zero()
        || args.connect_timeout.is_zero()
    {
        anyhow::bail!("--timeout, --health-interval and --connect-timeout must be more than zero");
    }
    let mut config = args.request.config(limits, args.max_query)?;
    config.changes = gateway::job_changes(args.bind, args.admin_token.clone());
    // Only a strategy that stores jobs has anything to change (`/jobs`).
    if args.strategy.stores_jobs() && config.changes == offload_axum::Changes::Closed {
        tracing::warn!(
            bind = %args.bind,
            "reachable from other hosts with no admin token: reading is open to anyone who can \
             connect (/health, /metrics, /jobs, /ui); cancel and retry answer 401 until a token \
             is given (--admin-token or OFFLOAD_ADMIN_TOKEN)"
        );
    }
    let config_limits = config.limits;
    let name = args.strategy.as_str();
    let addr = SocketAddr::new(args.bind, args.port);
    let pool = PoolConfig {
        threads,
        max_queue: args.max_queue,
        priority: args.sched.priority(),
        name: "offload-pool".into(),
    };
    // A strategy whose work runs on the runtime's own threads (or its blocking threads, which
    // share their start hook) must not have them outrank other processes.
    let urgent = (!args.strategy.on_runtime()).then(|| args.sched.urgent());
    run_service(
        "serve",
        name,
        runtime_threads,
        urgent,
        addr,
        async move || {
            // Only a strategy that stores jobs opens the store.
            let store = if args.strategy.stores_jobs() {
                Some(args.queue.open().await?)
            } else {
                None
            };
            let setup = Setup {
                split,
                pool,
                pool_split,
                limits: config_limits,
                cores: cores(),
                max_queue: args.max_queue,
                store,
                queue_max_wait: args.queue_max_wait,
                auto_wait: args.auto_wait,
                remote: RemoteConfig {
                    backends: args.compute,
                    health_interval: args.health_interval,
                    connect_timeout: args.connect_timeout,
                    max_queue: args.max_queue,
                },
            };
            let strategy = Strategy::build(args.strategy, setup)?;
            let state = AppState::new(config, strategy);
            Ok((gateway::app(state.clone()), state))
        },
    )
}

/// Set once the kernel refused to raise a runtime thread's priority (logged once).
static NICE_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Builds the runtime, binds, prints where it listens (the first line on stdout, which the
/// bench and the tests read), and serves until Ctrl-C or SIGTERM. `build` runs inside the
/// runtime, so strategies may start tasks.
pub(super) fn run_service(
    role: &str,
    strategy: &str,
    runtime_threads: usize,
    urgent: Option<crate::pool::priority::Urgent>,
    addr: SocketAddr,
    build: impl AsyncFnOnce() -> anyhow::Result<(axum::Router, AppState)>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_threads)
        .thread_name("offload-rt")
        .on_thread_start(move || {
            if let Some(u) = urgent
                && !u.apply()
                && !NICE_REFUSED.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!(
                    nice = u.nice,
                    "the runtime threads stay at the process's niceness (raising it needs \
                     CAP_SYS_NICE or RLIMIT_NICE); their short time slice still applies"
                );
            }
        })
        .enable_all()
        .build()
        .context("building the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        let (router, state) = build().await?;
        let line = crate::api::Listening {
            role: role.to_string(),
            addr: local,
            strategy: strategy.to_string(),
        };
        println!("{line}");
        tracing::info!(%local, strategy, runtime_threads, "{role} ready");
        let c = state.config.conns;
        tracing::info!(
            open_files = state.config.open_files,
            max_connections = c.max,
            header_timeout = ?c.header_timeout,
            idle_timeout = ?c.idle_timeout,
            "connection limits"
        );
        gateway::serve(listener, router, &state, shutdown_signal())
            .await
            .context("serving")?;
        tracing::info!("{role} stopped");
        crate::otel::flush(Duration::from_secs(2));
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn a_short_admin_token_is_refused_before_anything_starts() {
        let parsed = Cli::try_parse_from(["offload", "serve", "--admin-token", "short"]);
        assert!(parsed.is_err());
        let parsed = Cli::try_parse_from(["offload", "serve", "--admin-token", "0123456789abcdef"]);
        assert!(parsed.is_ok());
    }

    #[test]
    fn the_connect_timeout_defaults_to_one_and_a_half_seconds() {
        let Command::Serve(args) = Cli::parse_from(["offload", "serve"]).command else {
            panic!("not serve");
        };
        assert_eq!(args.connect_timeout, Duration::from_millis(1500));
    }
}
