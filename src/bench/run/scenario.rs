//! One strategy's run: start its processes, load `/heavy` while probing `/health`, sample
//! the processes, follow the queue's jobs until they are done, stop everything.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::child::{ChildSpec, ComputeSpec, QueueSpec, ServeSpec, WorkerSpec};
use super::procs::ChildProc;
use super::sample;
use crate::bench::model::{
    AcceptPhase, BacklogPoint, Measured, ProcessStats, QueueRun, RowId, Sample, Serving, Settings,
};
use crate::bench::{ProgressLine, http_get};
use crate::load::{self, Mode, Plan, Progress, Report, Stop, Target};
use crate::strategy::{Helper, Name};
use anyhow::{Context, bail};

/// How often processes are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How long a child may take between printing its address and answering `/health`.
const HEALTH_WAIT: Duration = Duration::from_secs(10);

/// How often the job counts are read for the backlog chart.
const BACKLOG_EVERY: Duration = Duration::from_millis(250);

use crate::api::Spread;

/// `?latency=N` asks the gateway for enqueue-to-done times; offload's gateway reads them from
/// its histogram whatever N, Node's servers over their N most recent finished jobs.
const LATENCY_SAMPLE: usize = 100_000;

/// Enqueue-to-done times of the run's finished jobs (the run has a queue of its own), as the
/// gateway reports them.
async fn enqueue_to_done(gateway: SocketAddr) -> Option<Spread> {
    match jobs_summary(gateway, &format!("/jobs?latency={LATENCY_SAMPLE}")).await {
        Ok(j) => j.enqueue_to_done_ms,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the job times");
            None
        }
    }
}

/// The light `/health` probe beside a load: open loop at `--probe-rate` on 4 connections for
/// the load's duration, urgent (see `load --urgent`), no warm-up of its own.
///
/// # Errors
/// When the plan is not valid (a rate or timeout out of range).
pub(crate) fn probe_plan(gateway: SocketAddr, s: &Settings) -> anyhow::Result<Plan> {
    Ok(Plan::new(
        Target::parse(&format!("http://{gateway}/health"), false)?,
        Mode::Open {
            rate: s.probe_rate,
            connections: 4,
            stop: Stop::Duration(s.duration),
        },
    )?
    .with_urgent(true)
    .with_timeout(s.timeout)?)
}

/// Runs one strategy end to end. Children are stopped when this returns or is dropped.
///
/// # Errors
/// When a process does not start or get ready, or the load cannot be planned.
pub async fn run(row: RowId, s: &Settings, progress: &ProgressLine) -> anyhow::Result<Measured> {
    let Some(strategy) = row.strategy() else {
        bail!("{row} is not one of offload's strategies");
    };
    let procs = start_at(strategy, row.nice(), s).await?;
    let queued = strategy.helper() == Some(Helper::Worker);
    measure(row, procs, queued, s, progress).await
}

/// The harness every strategy gets, offload's and the Node servers' alike, once its
/// processes run (the gateway last): readiness, warm-up and load with the `/health` probe,
/// sampling of every process, and for a queue (`queued`) the accept phase and the drain.
/// The processes are stopped when this returns or is dropped.
///
/// # Errors
/// When a process does not get ready, or the load cannot be planned.
pub(crate) async fn measure(
    strategy: RowId,
    procs: Vec<ChildProc>,
    queued: bool,
    s: &Settings,
    progress: &ProgressLine,
) -> anyhow::Result<Measured> {
    let gateway = procs.last().expect("a gateway").addr();
    for p in procs.iter().filter(|p| p.addr.is_some()) {
        wait_healthy(p.addr(), &p.role).await?;
    }
    let serving = sample::serving_threads(procs.last().expect("a gateway").pid());
    let heavy_plan = Plan::new(
        Target::parse(&format!("http://{gateway}/heavy?{}", s.work_query), false)?,
        Mode::Closed {
            connections: s.connections,
            stop: Stop::Duration(s.duration),
        },
    )?
    .with_warmup(s.warmup)
    .with_timeout(s.timeout)?
    .with_honor_retry_after(s.honor_retry_after);
    let probe_plan = probe_plan(gateway, s)?.with_warmup(s.warmup);

    // The queue first takes a burst that fits its cap, and its counts are followed from then on.
    let follow = if queued {
        let c = job_counts(gateway).await?;
        let base = (c.queued + c.running + c.done + c.failed, c.done + c.failed);
        let since = Instant::now();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let follower = tokio::spawn(follow_backlog(gateway, since, base, done_rx));
        let accept = accept_phase(gateway, s).await?;
        Some((since, accept, follower, done_tx))
    } else {
        None
    };

    let since = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample::run(
        procs.iter().map(ChildProc::pid).collect(),
        SAMPLE_EVERY,
        since,
        stop_rx,
    ));
    let (ptx, prx) = tokio::sync::watch::channel(Progress::default());
    let shown = progress.follow(strategy.as_str(), prx);
    let (heavy, bystander) = tokio::join!(
        load::run(&heavy_plan, Some(ptx)),
        load::run(&probe_plan, None)
    );
    // The load's end on the sampler's clock: `auto`'s CPU is read over the load's window.
    let load_end = since.elapsed().as_secs_f64();
    let heavy = heavy.context("the heavy load")?;
    let bystander = bystander.context("the /health probe")?;
    let _ = shown.await;

    let queue = match follow {
        Some((began, accept, follower, done_tx)) => {
            let load_end_s = began.elapsed().as_secs_f64();
            let mut q = follow_queue(gateway, &heavy, s, progress, accept).await?;
            let _ = done_tx.send(true);
            q.backlog = follower.await.context("the backlog follower")?;
            q.load_end_s = load_end_s;
            q.jobs_finished_in_window =
                jobs_finished_between(&q.backlog, load_end_s - heavy.elapsed_s, load_end_s);
            if let Some(rate) = busy_rate(&q.backlog) {
                q.completed_per_s = rate;
            }
            Some(q)
        }
        None => None,
    };
    let _ = stop_tx.send(true);
    let samples = sampler.await.context("the sampler")?;
    let warmup_s = s.warmup.as_secs_f64();
    // The CPU is read over the window its `completed` counts: `auto`'s over the load (its
    // 200s and the jobs finished then; its drain is the worker alone), the queue's through
    // the drain (every job done), the rest's over the load, after which nothing runs.
    let cpu_until = match strategy.offload().is_some_and(Name::routes) {
        true => load_end,
        false => f64::INFINITY,
    };
    let processes: Vec<ProcessStats> = procs
        .iter()
        .zip(samples)
        .map(|(p, v)| process_stats(&p.role, v, warmup_s, cpu_until))
        .collect();
    for p in procs.into_iter().rev() {
        p.stop(Duration::from_secs(5));
    }

    let (completed, completed_per_s) = match &queue {
        // `auto` answers some requests from its pool (200) and queues the rest: both are
        // work done on the same cores, so both are counted over one window, the load's (its
        // 200s, those to requests the warm-up sent included, and the jobs finished then).
        // The drain after it is the worker alone, reported apart in the reading.
        Some(q) if strategy.offload().is_some_and(Name::routes) => {
            let answered = heavy.requests.by_status.get("200").copied().unwrap_or(0)
                + heavy.requests.carried_over_2xx;
            let done = answered + q.jobs_finished_in_window;
            (done, done as f64 / heavy.elapsed_s.max(1e-9))
        }
        Some(q) => (q.jobs_done, q.completed_per_s),
        // Every 2xx that arrived in the window, including those sent in the warm-up: the
        // load's own status_2xx leaves out about one latency's worth (0.5 s of a 10 s window
        // at -c 100 here), which would put every strategy ~5% under the limit.
        None => (
            heavy.requests.status_2xx + heavy.requests.carried_over_2xx,
            heavy.requests.answered_2xx_per_s,
        ),
    };
    let (peak_rss_bytes, peak_threads) = combined_peaks(&processes);
    Ok(Measured {
        strategy,
        completed,
        completed_per_s,
        peak_rss_bytes,
        peak_threads,
        cpu_s: processes.iter().map(|p| p.cpu_s).sum(),
        heavy,
        bystander,
        processes,
        queue,
        serving,
    })
}

/// Starts the strategy's processes, the gateway's pool at its default priority; the gateway
/// is always last.
pub(crate) async fn start(name: Name, s: &Settings) -> anyhow::Result<Vec<ChildProc>> {
    start_at(name, None, s).await
}

/// Starts the strategy's processes, the gateway's pool threads at niceness `nice` when given;
/// the gateway is always last.
async fn start_at(name: Name, nice: Option<i32>, s: &Settings) -> anyhow::Result<Vec<ChildProc>> {
    let mut procs = Vec::new();
    // No --max-queue here (nor --max-inflight for the compute service): the servers' own
    // defaults admit by deadline and suit any core count, and the bench measures them as a
    // user would run them.
    let mut serve = ServeSpec {
        strategy: name,
        port: 0,
        timeout: s.timeout,
        sizes: s.max_sizes,
        compute: None,
        queue: None,
        max_backlog: None,
        auto_wait: None,
        nice,
        // Serve's own defaults are `raised`: given only when the run asks for another.
        urgent: (s.serving != Serving::Raised).then(|| s.serving.urgent()),
    };
    match name.helper() {
        Some(Helper::Compute) => {
            let compute = ChildProc::start(&ChildSpec::Compute(ComputeSpec {
                port: 0,
                sizes: s.max_sizes,
                max_inflight: None,
            }))?;
            serve.compute = Some(compute.addr());
            procs.push(compute);
        }
        Some(Helper::Worker) => {
            // The run's own queue name, so a shared Redis or Postgres holds this run's jobs
            // apart from anyone else's (and from earlier runs').
            let queue = QueueSpec {
                url: s.queue_url.clone(),
                name: s.queue_name.clone(),
            };
            let auto = name.routes();
            if auto {
                serve.auto_wait = s.auto_wait;
            }
            procs.push(ChildProc::start(&ChildSpec::Worker(WorkerSpec {
                queue: queue.clone(),
                sizes: s.max_sizes,
                // Beside `auto`'s pool on the same cores, the queued (heavy) work yields to
                // the requests a client waits for: the pool runs at niceness 10.
                nice: auto.then_some(19),
            }))?);
            serve.queue = Some(queue);
            serve.max_backlog = Some(s.max_backlog);
        }
        None => {}
    }
    procs.push(ChildProc::start(&ChildSpec::Serve(serve))?);
    Ok(procs)
}

pub(crate) async fn wait_healthy(addr: SocketAddr, role: &str) -> anyhow::Result<()> {
    let end = Instant::now() + HEALTH_WAIT;
    loop {
        if matches!(http_get(addr, "/health").await, Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("{role} at {addr} did not answer /health within {HEALTH_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long the bench asks `/jobs` again while it answers 503: the gateway answers 503 at once
/// while it deems the store out of reach (after one read took over its 2 s store timeout,
/// under a flood on a loaded machine, say) and looks again every 0.5 s; a reading a few
/// seconds late serves the bench better than a failed run.
const JOBS_UNAVAILABLE_WAIT: Duration = Duration::from_secs(10);

/// The gateway's `GET /jobs` (with `path`'s query), typed; a 503 is asked again for up to
/// [`JOBS_UNAVAILABLE_WAIT`].
pub(crate) async fn jobs_summary(
    gateway: SocketAddr,
    path: &str,
) -> anyhow::Result<crate::api::JobsSummary> {
    let end = Instant::now() + JOBS_UNAVAILABLE_WAIT;
    let body = loop {
        match http_get(gateway, path).await? {
            (200, body) => break body,
            (503, _) if Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (status, _) => bail!("{path} answered {status}"),
        }
    };
    serde_json::from_slice(&body).with_context(|| format!("{path}: not a job summary"))
}

/// Jobs by state, from the gateway's `GET /jobs`.
pub(crate) async fn job_counts(gateway: SocketAddr) -> anyhow::Result<crate::api::JobCounts> {
    Ok(jobs_summary(gateway, "/jobs").await?.counts)
}

/// Sends half the backlog cap as fast as `-c` connections allow, before the main load: the
/// cap cannot bind, so this is the gateway's own accept rate (with a worker draining beside it).
async fn accept_phase(gateway: SocketAddr, s: &Settings) -> anyhow::Result<AcceptPhase> {
    let requests = (s.max_backlog / 2).max(1);
    let plan = Plan::new(
        Target::parse(&format!("http://{gateway}/heavy?{}", s.work_query), false)?,
        Mode::Closed {
            connections: s
                .connections
                .min(u32::try_from(requests).unwrap_or(u32::MAX)),
            stop: Stop::Count(requests),
        },
    )?
    .with_timeout(s.timeout)?;
    let r = load::run(&plan, None).await.context("the accept phase")?;
    let accepted = r.requests.by_status.get("202").copied().unwrap_or(0);
    Ok(AcceptPhase {
        requests,
        accepted,
        refused: requests.saturating_sub(accepted),
        seconds: r.elapsed_s,
        accepted_per_s: accepted as f64 / r.elapsed_s.max(1e-9),
    })
}

/// Reads the job counts every [`BACKLOG_EVERY`] until told to stop, less `base` (the counts
/// before the run: jobs of earlier runs are not this run's).
async fn follow_backlog(
    gateway: SocketAddr,
    since: Instant,
    (a0, f0): (u64, u64),
    mut done: tokio::sync::watch::Receiver<bool>,
) -> Vec<BacklogPoint> {
    let mut points = Vec::new();
    let mut tick = tokio::time::interval(BACKLOG_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => {}
        }
        if let Ok(c) = job_counts(gateway).await {
            let (all, finished) = (c.queued + c.running + c.done + c.failed, c.done + c.failed);
            points.push(BacklogPoint {
                t: since.elapsed().as_secs_f64(),
                accepted: all.saturating_sub(a0),
                finished: finished.saturating_sub(f0),
            });
        }
        if *done.borrow() {
            return points;
        }
    }
}

/// Jobs finished per second while jobs were waiting (from the first reading with a backlog to
/// the last): the workers' own rate, without the start-up before the first job or the idle tail.
fn busy_rate(points: &[BacklogPoint]) -> Option<f64> {
    let waiting = |p: &&BacklogPoint| p.accepted > p.finished;
    let first = points.iter().find(waiting)?;
    let last = points.iter().rev().find(waiting)?;
    // The reading after the last one with a backlog is when it reached zero, if there is one.
    let end = points
        .iter()
        .find(|p| p.t > last.t)
        .filter(|p| p.accepted == p.finished)
        .unwrap_or(last);
    let span = end.t - first.t;
    (span >= 0.5).then(|| (end.finished - first.finished) as f64 / span)
}

/// Jobs finished (done or failed) between `from` and `to` seconds, read off the cumulative
/// counts sampled every [`BACKLOG_EVERY`], each end interpolated between the readings around it.
pub(crate) fn jobs_finished_between(points: &[BacklogPoint], from: f64, to: f64) -> u64 {
    let at = |t: f64| -> f64 {
        let Some(first) = points.first() else {
            return 0.0;
        };
        if t <= first.t {
            return first.finished as f64;
        }
        for w in points.windows(2) {
            let (a, b) = (w[0], w[1]);
            if t <= b.t {
                let f = (t - a.t) / (b.t - a.t).max(1e-9);
                return a.finished as f64 + f * (b.finished as f64 - a.finished as f64);
            }
        }
        points.last().map_or(0.0, |p| p.finished as f64)
    };
    (at(to) - at(from)).max(0.0).round() as u64
}

/// After the load: waits until no job is queued or running (or the drain timeout).
async fn follow_queue(
    gateway: SocketAddr,
    heavy: &Report,
    s: &Settings,
    progress: &ProgressLine,
    accept_phase: AcceptPhase,
) -> anyhow::Result<QueueRun> {
    let stopped = Instant::now();
    let at_stop = job_counts(gateway).await?;
    let left = |c: &crate::api::JobCounts| c.queued + c.running;
    let mut counts = at_stop;
    while left(&counts) > 0 && stopped.elapsed() < s.drain_timeout {
        progress.live(&format!(
            "queue: draining, {} jobs left, {:.1}s",
            left(&counts),
            stopped.elapsed().as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        counts = job_counts(gateway).await?;
    }
    let drained = left(&counts) == 0;
    let drain_s = stopped.elapsed().as_secs_f64();
    let accepted = heavy.requests.by_status.get("202").copied().unwrap_or(0);
    Ok(QueueRun {
        completed_per_s: counts.done as f64
            / (accept_phase.seconds + heavy.elapsed_s + s.warmup.as_secs_f64() + drain_s).max(1e-9),
        accept_phase,
        accepted,
        accepted_per_s: accepted as f64 / heavy.elapsed_s.max(1e-9),
        done_at_stop: at_stop.done,
        backlog_at_stop: left(&at_stop),
        drain_s,
        drained,
        jobs_done: counts.done,
        jobs_failed: counts.failed,
        jobs_finished_in_window: 0,
        enqueue_to_done_ms: enqueue_to_done(gateway).await,
        load_end_s: 0.0,
        backlog: Vec::new(),
    })
}

/// A process's peaks over the whole run, and its CPU seconds between `warmup_s` and `until`
/// (seconds on the sampler's clock).
fn process_stats(role: &str, samples: Vec<Sample>, warmup_s: f64, until: f64) -> ProcessStats {
    let measured: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.t >= warmup_s && x.t <= until)
        .collect();
    let cpu_s = match (measured.first(), measured.last()) {
        (Some(a), Some(b)) => b.cpu_s - a.cpu_s,
        _ => 0.0,
    };
    ProcessStats {
        role: role.to_string(),
        peak_rss_bytes: samples.iter().map(|x| x.rss_bytes).max().unwrap_or(0),
        peak_threads: samples.iter().map(|x| x.threads).max().unwrap_or(0),
        cpu_s,
        samples,
    }
}

/// Peaks of the processes' sums, taken sample by sample (all are sampled on the same tick).
fn combined_peaks(ps: &[ProcessStats]) -> (u64, u64) {
    let ticks = ps.iter().map(|p| p.samples.len()).max().unwrap_or(0);
    let mut peaks = (0, 0);
    for i in 0..ticks {
        let rss = ps
            .iter()
            .filter_map(|p| p.samples.get(i))
            .map(|x| x.rss_bytes)
            .sum();
        let thr = ps
            .iter()
            .filter_map(|p| p.samples.get(i))
            .map(|x| x.threads)
            .sum();
        peaks = (peaks.0.max(rss), peaks.1.max(thr));
    }
    peaks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_in_a_window_are_interpolated_from_the_readings() {
        let p = |t: f64, finished: u64| BacklogPoint {
            t,
            accepted: 1000,
            finished,
        };
        let points = [p(0.0, 0), p(1.0, 100), p(2.0, 300), p(3.0, 300)];
        assert_eq!(jobs_finished_between(&points, 0.5, 1.5), 150);
        assert_eq!(jobs_finished_between(&points, 1.0, 9.0), 200);
        assert_eq!(jobs_finished_between(&[], 0.0, 1.0), 0);
    }
}
