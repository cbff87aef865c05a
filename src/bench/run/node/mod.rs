//! `offload bench --node`: the seed article's five Node.js servers (`node/` in offload's
//! source, embedded in the binary) measured in the same run as offload's strategies, each
//! right after its counterpart and under the same harness (`scenario::measure`). Their
//! packages are installed with `npm ci` on first use into a cache folder outside the
//! repository; the %limit of those whose work runs in JavaScript is held against Node's own
//! loop on all cores, calibrated right before and after each of them, so a ratio shows the
//! architecture and not only the loop. `node:remote`'s work runs in `offload compute`
//! (Rust), so its limit is offload's all-core limit, like `remote`'s.
//! The pairs are read side by side in `node_compare`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
mod check;
mod install;

use check::threads_at_nice;
use install::{install, on_path, packages, version_of};

use super::calibrate::CalibrationPlan;
use super::child::{ChildSpec, ComputeSpec};
use super::procs::ChildProc;
use super::scenario;
use crate::bench::ProgressLine;
use crate::bench::model::{
    AllCore, Bracket, Check, Measured, NodeBracket, NodeReport, NodeServer, RowId, ServingThreads,
    Settings,
};
use crate::work::Work;

/// The oldest Node the servers are written for (`worker_threads`, `fetch`, piscina 5).
const MIN_NODE_MAJOR: u32 = 20;
/// How long the one checked job of node:bullmq may take to be done before the load.
const CHECK_JOB_WAIT: Duration = Duration::from_secs(30);
/// How long a private Redis may take to answer PING.
const REDIS_WAIT: Duration = Duration::from_secs(10);

/// The strategies with each seed strategy's Node row right after it (run back to back, so
/// a shared machine's slow minute falls on both of a pair alike). The priority of the work
/// threads is a choice (`pool --nice`, piscina's `niceIncrement`), so `pool` comes as two
/// pairs: both sides at nice 0 (each one's default), then both at `LOW_PRIORITY_NICE`.
///
/// # Errors
/// When none of `strategies` has a Node counterpart.
pub fn with_node(strategies: &[RowId]) -> anyhow::Result<Vec<RowId>> {
    let mut out = Vec::new();
    for &s in strategies {
        out.push(s);
        if let Some(n) = NodeServer::of(s) {
            out.push(RowId::Node(n));
        }
        if let Some(name) = s.offload() {
            let low = RowId::LowPriority(name);
            if let Some(n) = NodeServer::of(low) {
                out.extend([low, RowId::Node(n)]);
            }
        }
    }
    if out.len() == strategies.len() {
        bail!(
            "--node: none of --strategies has a Node counterpart (those are {})",
            NodeServer::ALL.map(|n| n.counterpart().as_str()).join(", ")
        );
    }
    Ok(out)
}

/// Runs `strategy`: a Node row (with `node`) between two calibrations of Node's own loop,
/// returning their bracket; any other strategy as `scenario::run`. The outer error is a
/// calibration that failed (the bench stops); the inner one, a strategy that failed.
///
/// # Errors
/// When Node's calibration fails.
pub async fn run_strategy(
    node: Option<&mut Setup>,
    strategy: RowId,
    s: &Settings,
    progress: &ProgressLine,
) -> anyhow::Result<(anyhow::Result<Measured>, Option<Bracket>)> {
    let Some(server) = strategy.node() else {
        // A queue of the run's own: its counts and enqueue-to-done times are its jobs only.
        let own = if strategy.queued() {
            s.own_queue(strategy.as_str())?
        } else {
            s.clone()
        };
        let measured = scenario::run(strategy, &own, progress).await;
        if let Some(setup) = node {
            // The Node row that follows gives its event loop what these runtime threads had.
            setup.serving = measured.as_ref().ok().and_then(|m| m.serving);
        }
        return Ok((measured, None));
    };
    let Some(setup) = node else {
        bail!("{server}: a Node row without --node");
    };
    let strategy = server;
    if !strategy.on_node_loop() {
        // Its work runs in Rust: the bench's own calibrations bracket it.
        return Ok((setup.run(strategy, s, progress).await, None));
    }
    let cores = setup.cores;
    progress.note(&format!(
        "calibrating Node's loop on all {cores} cores before {strategy}"
    ));
    let before = setup.calibrate().await?;
    let measured = setup.run(strategy, s, progress).await;
    progress.note(&format!(
        "calibrating Node's loop on all {cores} cores after {strategy}"
    ));
    let after = setup.calibrate().await?;
    setup.report.calibrations.push(NodeBracket {
        strategy,
        before: before.clone(),
        after: after.clone(),
    });
    Ok((measured, Some(Bracket::new(before, after))))
}

/// Where node:bullmq's Redis runs.
#[derive(Debug, Clone)]
enum Redis {
    /// A `redis-server` the bench starts for the run on a free loopback port (sampled).
    Private(PathBuf),
    /// The Redis of `--queue redis://...`, which offload's queue uses too (not sampled: it
    /// is not the bench's process).
    Shared(String),
}

/// Node, its installed servers, and what the report says of them.
#[derive(Debug)]
pub struct Setup {
    node: PathBuf,
    /// The cache folder holding the servers and their `node_modules`.
    dir: PathBuf,
    redis: Option<Redis>,
    /// The work's size, and its exact result by offload's own `Work::run`.
    n: u64,
    expected: u64,
    plan: CalibrationPlan,
    cores: usize,
    /// How the runtime threads of the offload row just run were scheduled: the next Node
    /// row's event loop is given the same, so both sides of a pair answer at one priority.
    serving: Option<ServingThreads>,
    pub report: NodeReport,
}

/// Checks that Node, npm (and Redis, for node:bullmq) are there, installs the servers, and
/// computes the exact result they must give. Runs before anything else of the bench.
///
/// # Errors
/// When node or npm is missing or too old, node:bullmq has no Redis, the work is not the
/// seed's count, or the install fails: each says what to install or change.
pub fn prepare(s: &Settings, work: &Work, progress: &ProgressLine) -> anyhow::Result<Setup> {
    let (node, npm) = (on_path("node"), on_path("npm"));
    let (Some(node), Some(npm)) = (node.clone(), npm.clone()) else {
        let missing: Vec<&str> = [("node", node.is_none()), ("npm", npm.is_none())]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(n, _)| *n)
            .collect();
        bail!(
            "--node needs Node.js {MIN_NODE_MAJOR} or later and npm on PATH, and found no {}: install them (Debian/Ubuntu: `apt-get install nodejs npm`; or from https://nodejs.org), or run without --node",
            missing.join(" and no ")
        );
    };
    let node_version = version_of(&node)?;
    let major: u32 = node_version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < MIN_NODE_MAJOR {
        bail!(
            "--node needs Node.js {MIN_NODE_MAJOR} or later: {} is {node_version}",
            node.display()
        );
    }
    if work.kind() != crate::work::Kind::Count {
        bail!(
            "--node runs the seed's count loop only: use --work count:N (not {})",
            s.work
        );
    }
    let redis = if s.strategies.contains(&RowId::Node(NodeServer::Bullmq)) {
        if s.queue_url.starts_with("redis://") {
            Some(Redis::Shared(s.queue_url.clone()))
        } else if let Some(r) = on_path("redis-server") {
            Some(Redis::Private(r))
        } else {
            bail!(
                "--node: node:bullmq needs Redis: install redis-server (Debian/Ubuntu: `apt-get install redis-server`) or pass --queue redis://HOST:PORT (offload's queue then uses it too)"
            );
        }
    } else {
        None
    };
    let npm_version = version_of(&npm)?;
    let dir = install(&npm, progress)?;
    let redis_text = match &redis {
        Some(Redis::Private(p)) => {
            // `Redis server v=7.0.15 sha=...`: the version is enough.
            let v = version_of(p).unwrap_or_default();
            let v = v
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .unwrap_or("of unknown version");
            Some(format!("a redis-server {v} of the run's own, sampled"))
        }
        Some(Redis::Shared(url)) => {
            Some(format!("{url} (shared with offload's queue; not sampled)"))
        }
        None => None,
    };
    Ok(Setup {
        node,
        n: work.n(),
        expected: work.run(&|| false).context("computing the exact result")?,
        plan: CalibrationPlan::new(s.quick),
        cores: crate::work::cores(),
        serving: None,
        report: NodeReport {
            node_version,
            npm_version,
            packages: packages(),
            folder: dir.display().to_string(),
            redis: redis_text,
            calibrations: Vec::new(),
            checks: Vec::new(),
            pairs: Vec::new(),
        },
        dir,
        redis,
    })
}

/// A free loopback port (for a program that cannot be told port 0: Redis).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until Redis at `addr` answers PING.
async fn redis_ready(addr: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let end = Instant::now() + REDIS_WAIT;
    loop {
        let ping = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(b"PING\r\n").await?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await?;
            anyhow::Ok(&buf == b"+PONG\r\n")
        };
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(1), ping).await {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("the run's redis-server at {addr} did not answer PING within {REDIS_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Setup {
    /// `node <file> <args>` in the servers' folder, as a child of the bench.
    fn start_node(
        &self,
        role: &str,
        file: &str,
        args: &[String],
        env: &[(&str, String)],
        wait_listen: bool,
    ) -> anyhow::Result<ChildProc> {
        let mut cmd = Command::new(&self.node);
        cmd.arg(self.dir.join(file))
            .args(args)
            .current_dir(&self.dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        ChildProc::start_program(role, &mut cmd, wait_listen)
    }

    /// Starts a Node row's processes (the gateway last), checks one answer against the
    /// exact result, and measures it under offload's harness.
    ///
    /// # Errors
    /// When a process does not start, an answer is not exact, or the load fails.
    async fn run(
        &mut self,
        strategy: NodeServer,
        s: &Settings,
        progress: &ProgressLine,
    ) -> anyhow::Result<Measured> {
        let file = strategy.file();
        let max_count = crate::work::DEFAULT_MAX_COUNT.max(self.n);
        let mut gateway_args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--max-count".into(),
            max_count.to_string(),
        ];
        let mut env: Vec<(&str, String)> = Vec::new();
        if let Some(n) = strategy.nice_increment() {
            env.push(("OFFLOAD_NICE_INCREMENT", n.to_string()));
        }
        let mut procs = Vec::new();
        match strategy {
            NodeServer::Remote => {
                // The seed's gateway forwards every request at once and its Rust service
                // had no admission limit: this compute service admits as many as the load
                // has connections, where its default (2 per thread) would refuse most.
                let compute = ChildProc::start(&ChildSpec::Compute(ComputeSpec {
                    port: 0,
                    sizes: s.max_sizes,
                    max_inflight: Some((s.connections as usize).max(2 * self.cores)),
                }))?;
                gateway_args.extend(["--compute".into(), format!("http://{}", compute.addr())]);
                gateway_args.extend([
                    "--timeout-ms".into(),
                    s.timeout.as_millis().max(1).to_string(),
                ]);
                procs.push(compute);
            }
            NodeServer::Bullmq => {
                let url = match self.redis.clone() {
                    Some(Redis::Shared(url)) => url,
                    Some(Redis::Private(server)) => {
                        let port = free_port()?;
                        let mut cmd = Command::new(server);
                        cmd.args([
                            "--port",
                            &port.to_string(),
                            "--bind",
                            "127.0.0.1",
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                        ]);
                        let redis = ChildProc::start_program("redis", &mut cmd, false)?;
                        redis_ready(SocketAddr::from(([127, 0, 0, 1], port))).await?;
                        procs.push(redis);
                        format!("redis://127.0.0.1:{port}")
                    }
                    None => bail!("node:bullmq has no Redis"),
                };
                env.push(("REDIS_URL", url));
                env.push(("OFFLOAD_QUEUE_NAME", format!("{}-node", s.queue_name)));
                // One worker process per core: a BullMQ worker runs its job's loop on its
                // event loop, so CPU-bound jobs scale by processes (BullMQ's own advice),
                // as offload's worker runs one job per core on its threads.
                for _ in 0..self.cores {
                    procs.push(self.start_node("worker", "bullmq-worker.js", &[], &env, false)?);
                }
                gateway_args.extend(["--max-backlog".into(), s.max_backlog.to_string()]);
            }
            _ => {}
        }
        procs.push(self.start_node("gateway", file, &gateway_args, &env, true)?);
        let gateway = procs.last().expect("a gateway").addr();
        for p in procs.iter().filter(|p| p.addr.is_some()) {
            scenario::wait_healthy(p.addr(), &p.role).await?;
        }
        let pid = procs.last().expect("a gateway").pid();
        self.serve_alike(strategy, pid)?;
        let result = self.check(strategy, gateway, s).await?;
        if let Some(n) = strategy.nice_increment() {
            // piscina leaves a thread at its niceness when it cannot load @napi-rs/nice: the
            // pair would then compare priorities again, so the bench checks. The check's one
            // request ran a task on every thread, and each thread set its niceness first.
            let niced = threads_at_nice(pid, n);
            if niced < self.cores {
                bail!(
                    "{strategy}: {niced} of piscina's {} threads run at nice {n} (is @napi-rs/nice installed?)",
                    self.cores
                );
            }
        }
        self.report.checks.push(Check {
            strategy,
            expected: self.expected,
            result,
        });
        scenario::measure(
            RowId::Node(strategy),
            procs,
            strategy == NodeServer::Bullmq,
            s,
            progress,
        )
        .await
    }

    /// Gives the event loop of the Node gateway `pid` (its main thread) the scheduling of its
    /// offload counterpart's runtime threads, and checks it from the kernel: the threads that
    /// answer requests then run at one priority on both sides of the pair.
    ///
    /// # Errors
    /// When the counterpart's was not read, or the loop could not be given it (a raised
    /// priority needs `CAP_SYS_NICE`, as offload's does).
    fn serve_alike(&self, strategy: NodeServer, pid: u32) -> anyhow::Result<()> {
        let Some(want) = self.serving else {
            bail!(
                "{strategy}: how its offload counterpart's runtime threads were scheduled was not read, so the pair cannot be made fair (is /proc there?)"
            );
        };
        want.urgent().apply_to(pid);
        let got = super::sample::serving_threads(pid);
        if got != Some(want) {
            bail!(
                "{strategy}: its event loop runs at {} where its offload counterpart's runtime threads ran at {want}; raising a thread's priority needs CAP_SYS_NICE (run as root, or with --serving plain)",
                got.map_or("an unknown priority".to_owned(), |g| g.to_string())
            );
        }
        Ok(())
    }

    /// Node's all-core limit now: the count loop alone on one worker thread per core.
    ///
    /// # Errors
    /// When the calibration script fails or prints something else.
    async fn calibrate(&self) -> anyhow::Result<AllCore> {
        let n = self.n;
        let mut cmd = Command::new(&self.node);
        cmd.arg(self.dir.join("calibrate.js"))
            .args([
                n.to_string(),
                self.cores.to_string(),
                self.plan.reps.to_string(),
                self.plan.window.as_millis().max(1).to_string(),
            ])
            .current_dir(&self.dir);
        // A short-lived child that ends by itself within a few windows: no parent-death
        // signal is needed (it runs on a blocking thread, which may outlive no one).
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .context("the Node calibration task")?
            .context("running node calibrate.js")?;
        if !out.status.success() {
            bail!(
                "Node's calibration failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        #[derive(serde::Deserialize)]
        struct Printed {
            threads: usize,
            window_s: f64,
            readings_per_s: Vec<f64>,
            readings_runs: Vec<u64>,
        }
        let p: Printed = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "Node's calibration printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        Ok(AllCore {
            threads: p.threads,
            window_s: p.window_s,
            limit_per_s: crate::bench::model::median(&p.readings_per_s),
            readings_per_s: p.readings_per_s,
            readings_runs: p.readings_runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_row_runs_right_after_its_counterpart() {
        let s = |v: &[&str]| {
            v.iter()
                .map(|x| RowId::parse(x).unwrap())
                .collect::<Vec<_>>()
        };
        let mut pairs = s(&["inline", "node:inline", "blocking", "pool", "node:piscina"]);
        pairs.extend([
            RowId::LowPriority(crate::strategy::Name::Pool),
            RowId::Node(NodeServer::PiscinaNice),
        ]);
        pairs.extend(s(&["queue", "node:bullmq"]));
        assert_eq!(
            with_node(&s(&["inline", "blocking", "pool", "queue"])).unwrap(),
            pairs
        );
        let e = with_node(&s(&["blocking"])).unwrap_err().to_string();
        assert!(
            e.contains("none of --strategies has a Node counterpart"),
            "{e}"
        );
        assert!(NodeServer::Piscina.on_node_loop() && !NodeServer::Remote.on_node_loop());
    }
}
