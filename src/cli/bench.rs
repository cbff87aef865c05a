//! `offload bench`: its flags, validated into [`Settings`] (a bad flag stops it before anything
//! starts), and the command: a bench run, or `--compare A B`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::parse_duration;

use crate::bench::{RowId, Serving, Settings};
use crate::strategy::Name;
use crate::work::Work;

/// Every gateway strategy, in the order the bench runs them: the uniform scenario's default.
/// `auto` is among them: under one uniform load it runs what fits its wait budget in its pool
/// and queues the rest, and how it shares the cores between the two is worth a row of its own
/// (the mixed scenario shows what it is made for).
fn all_strategies() -> Vec<String> {
    Name::GATEWAY
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect()
}

/// The flood scenario's default strategies.
fn flood_strategies() -> Vec<String> {
    crate::bench::flood::strategies()
        .map(|n| n.as_str().to_owned())
        .collect()
}

/// Flags of `offload bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Strategies of the uniform scenario, comma-separated (any of inline, spawn, blocking,
    /// pool, remote, queue, auto; all of them by default).
    #[arg(long, value_delimiter = ',', default_values_t = all_strategies())]
    pub strategies: Vec<String>,
    /// Connections of the heavy load (closed loop, as autocannon -c).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub connections: u32,
    /// Measured duration of each strategy's load [default: 10s; 2s with --quick].
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Warm-up before measuring, not counted [default: 2s; 0.5s with --quick].
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// The heavy request's work, as kind:n (count, primes, hash).
    #[arg(long, default_value = "count:20000000")]
    pub work: String,
    /// Queue for the `queue` strategy [default: a SQLite file in the report folder].
    #[arg(long)]
    pub queue: Option<String>,
    /// A short smoke run: 2 s per strategy, short warm-up, fewer calibration runs.
    #[arg(long)]
    pub quick: bool,
    /// Report folder [default: offload-report/<date-time>].
    // `<date-time>` is for `--help`, which shows this text as is; not an HTML tag.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Requests per second of the light `/health` probe (open loop).
    #[arg(long, default_value_t = 20.0)]
    pub probe_rate: f64,
    /// Per-request timeout of the load (timeouts are counted, never hidden).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The queue's backlog cap: past it the gateway answers 503 [default: 10000; 500 with --quick].
    #[arg(long)]
    pub max_backlog: Option<u64>,
    /// How long to wait for queued jobs to finish after the load stops.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Runs of each strategy, interleaved (all strategies, then all again): the report gives
    /// each figure's median and min-max, and the table the run nearest the median. The
    /// flood's rows run as many times, in rounds, and show the same.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// The mixed scenario's work: weighted `kind:n=weight` parts; each request draws one,
    /// from a fixed seed. Runs pool, queue and auto on it (and its lightest part alone on
    /// pool) after the uniform scenario, in an open loop at half the mix's all-core limit.
    /// `none` skips it [default: count:2000000=90 and a heavy count=10 sized on this machine to
    /// take 4 x auto's wait budget over all cores (count:8200000000 on a 2-core VM); none with
    /// --quick].
    #[arg(long)]
    pub mix: Option<String>,
    /// The flood scenario's connection counts, comma-separated: after the others, each of
    /// --flood-strategies runs the closed loop at each count, and at the largest again with
    /// a client that honours Retry-After (`offload load --honor-retry-after`); per row the
    /// goodput, refusals per second and the gateway's CPU. A row at the uniform scenario's -c
    /// reuses its runs. `none` skips it [default: 100,1000; none with --quick].
    #[arg(long)]
    pub flood: Option<String>,
    /// Strategies of the flood scenario, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = flood_strategies())]
    pub flood_strategies: Vec<String>,
    /// `auto`'s wait budget (`serve --auto-wait`) [default: serve's].
    #[arg(long, value_parser = parse_duration)]
    pub auto_wait: Option<Duration>,
    /// Requests per second of the mixed scenario [default: half the mix's all-core limit].
    #[arg(long)]
    pub mix_rate: Option<f64>,
    /// Also runs the seed article's Node.js servers (node:inline, node:worker, node:piscina,
    /// node:remote, node:bullmq), each right after its offload counterpart (inline, spawn,
    /// pool, remote, queue) under the same harness, and compares each pair. Needs Node.js 20+
    /// and npm on PATH (packages installed with `npm ci` on first use into
    /// $OFFLOAD_NODE_CACHE, default ~/.cache/offload/node) and, for node:bullmq,
    /// redis-server on PATH or --queue redis://...
    #[arg(long)]
    pub node: bool,
    /// How the threads that answer requests are scheduled, alike on both sides of each
    /// `--node` pair: `raised` gives offload's runtime threads serve's defaults (a 0.1 ms time
    /// slice, nice -10 where allowed) and each Node server's event loop the same; `plain`
    /// leaves both at nice 0 on the kernel's slice.
    #[arg(long, value_enum, default_value_t = Serving::Raised)]
    pub serving: Serving,
    /// Compares two report folders instead of running: per strategy and figure (and per
    /// flood row), the change and whether it exceeds the run-to-run spread.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<PathBuf>>,
}

impl BenchArgs {
    fn settings(&self, out: &std::path::Path) -> anyhow::Result<(Settings, Work)> {
        for s in &self.strategies {
            if Name::parse(s).is_none() {
                bail!(
                    "--strategies: unknown strategy {s:?}: expected some of {}",
                    all_strategies().join(",")
                );
            }
        }
        if self.strategies.is_empty() {
            bail!("--strategies: give at least one");
        }
        for s in &self.flood_strategies {
            if Name::parse(s).is_none() {
                bail!(
                    "--flood-strategies: unknown strategy {s:?}: expected some of {}",
                    all_strategies().join(",")
                );
            }
        }
        let flood = match self.flood.as_deref() {
            Some("none") => Vec::new(),
            Some(spec) => crate::bench::flood::parse(spec)?,
            None if self.quick => Vec::new(),
            None => crate::bench::flood::parse(crate::bench::flood::DEFAULT_FLOOD)?,
        };
        if !flood.is_empty() && self.flood_strategies.is_empty() {
            bail!("--flood-strategies: give at least one, or --flood none");
        }
        if self.connections == 0 {
            bail!("-c must be at least 1");
        }
        if !(self.probe_rate > 0.0 && self.probe_rate.is_finite()) {
            bail!("--probe-rate must be more than zero");
        }
        let duration = self.duration.unwrap_or(if self.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        });
        let warmup = self.warmup.unwrap_or(if self.quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        });
        if duration.is_zero() || self.timeout.is_zero() {
            bail!("-d and --timeout must be more than zero");
        }
        let (work, mut max_sizes) = crate::bench::parse_work(&self.work)?;
        let mix_default = self.mix.is_none() && !self.quick;
        let spec = match self.mix.as_deref() {
            Some("none") => None,
            Some(spec) => Some(spec),
            None if self.quick => None,
            None => Some(crate::bench::mix::DEFAULT_MIX),
        };
        let mix = match spec {
            Some(spec) => {
                let (parts, sizes) = crate::bench::mix::parse(spec, crate::bench::parse_work)?;
                // The largest size bound of each kind, for the uniform work and the mix alike.
                max_sizes = max_sizes.max(sizes);
                parts
            }
            None => Vec::new(),
        };
        if let Some(r) = self.mix_rate
            && !(r > 0.0 && r.is_finite())
        {
            bail!("--mix-rate must be more than zero");
        }
        // Checked above: every name is one of offload's strategies.
        let rows = |names: &[String]| -> Vec<RowId> {
            names
                .iter()
                .filter_map(|s| Name::parse(s))
                .map(RowId::Offload)
                .collect()
        };
        let strategies = if self.node {
            crate::bench::with_node(&rows(&self.strategies))?
        } else {
            rows(&self.strategies)
        };
        let queue_url = match &self.queue {
            Some(q) => q.clone(),
            None => format!("sqlite://{}", out.join("queue.db").display()),
        };
        Ok((
            Settings {
                strategies,
                connections: self.connections,
                duration,
                warmup,
                work: work.label(),
                work_query: work.query(),
                queue_url,
                queue_name: crate::queue::QueueName::new(format!(
                    "offload-bench-{}-{}",
                    crate::bench::timestamp(),
                    std::process::id()
                ))?,
                probe_rate: self.probe_rate,
                timeout: self.timeout,
                max_backlog: self
                    .max_backlog
                    .unwrap_or(if self.quick { 500 } else { 10_000 }),
                drain_timeout: self.drain_timeout,
                max_sizes,
                quick: self.quick,
                repeat: self.repeat,
                mix,
                mix_default,
                mix_rate: self.mix_rate,
                auto_wait: self.auto_wait,
                node: self.node,
                serving: self.serving,
                flood,
                flood_strategies: rows(&self.flood_strategies),
                honor_retry_after: false,
            },
            work,
        ))
    }
}

/// Runs `offload bench`.
///
/// # Errors
/// Bad flags, a report folder that cannot be written, or a runtime that cannot start.
pub(super) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(dirs) = &args.compare {
        print!("{}", crate::bench::compare_folders(&dirs[0], &dirs[1])?);
        return Ok(ExitCode::SUCCESS);
    }
    let out = args.out.clone().unwrap_or_else(crate::bench::default_out);
    let (settings, work) = args.settings(&out)?;
    crate::bench::run(settings, work, out)
}
