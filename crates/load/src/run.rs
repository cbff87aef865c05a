//! Running a plan: load threads (one event loop each) with one task per connection, an
//! optional progress ticker, and the merge of every connection's recorder into one [`Report`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::{Live, Shared, drive};
use super::plan::{Plan, Stop};
use super::report::{Report, build};
use super::stats::Recorder;

/// How often the progress ticker publishes: smooth enough for a bar, negligible cost.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// A snapshot of a running load, published on the `watch` channel given to [`run`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Time since the run started (warm-up included).
    pub elapsed: Duration,
    /// True while still in the warm-up.
    pub warming_up: bool,
    /// Measured requests finished so far (any outcome).
    pub finished: u64,
    /// Of those, timeouts and connection errors.
    pub failed: u64,
    /// Fraction of the measured phase done, 0.0 to 1.0 (by time or by count).
    pub fraction: f64,
    /// True once the run is over (the last message sent).
    pub done: bool,
}

/// Runs `plan` to completion and returns its report.
///
/// The connections run on `plan.threads()` threads of their own, each with a single-threaded
/// tokio event loop (wrk's layout); the caller's runtime only awaits the result and, if
/// `progress` is given, publishes a snapshot every 200 ms and a final one with `done`. So it
/// can be awaited beside other work, including another `run` (each call has its own threads,
/// connections and recorders). It always stops by itself: at the `-d` deadline (in-flight
/// requests are aborted and counted) or after exactly `-a` requests, each of which ends by
/// the per-request timeout at the latest.
///
/// # Errors
/// A load thread or its event loop could not be started, or one died (a connection task
/// panicked, which would be a bug; its panic message is printed by the thread).
pub async fn run(
    plan: &Plan,
    progress: Option<watch::Sender<Progress>>,
) -> std::io::Result<Report> {
    run_mix(plan, progress).await.map(|(total, _)| total)
}

/// [`run`], also returning one report per part of the plan's mix ([`Plan::with_mix`]), in
/// the mix's order (a plan without a mix has one part, the same as the total).
///
/// # Errors
/// As [`run`].
pub async fn run_mix(
    plan: &Plan,
    progress: Option<watch::Sender<Progress>>,
) -> std::io::Result<(Report, Vec<Report>)> {
    let parts = plan.parts();
    let connections = plan.mode().connections() as usize;
    let start = Instant::now();
    let measure_start = start + plan.warmup();
    let deadline = match plan.mode().stop() {
        Stop::Duration(d) => Some(measure_start + d),
        Stop::Count(_) => None,
    };
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        start,
        measure_start,
        deadline,
        tickets: AtomicU64::new(0),
        live: (0..connections).map(|_| Live::default()).collect(),
    });
    let started_wall = SystemTime::now() + plan.warmup();
    let ticker = progress
        .clone()
        .map(|tx| tokio::spawn(tick(shared.clone(), tx)));

    // wrk's layout: a few threads, each with its own single-threaded event loop driving its
    // share of the connections. No work stealing and no cross-thread wake-ups per request,
    // and the load never competes with the caller's own tasks for runtime threads.
    let threads = plan.threads().min(connections);
    let open_loop = plan.mode().rate().is_some();
    let urgent = plan.urgent;
    let mut results = Vec::with_capacity(threads);
    for t in 0..threads {
        let shared = shared.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("offload-load-{t}"))
            .spawn(move || {
                if urgent {
                    offload_pool::priority::Urgent::DEFAULT.apply();
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let rec = runtime.block_on(async {
                    let tasks: Vec<_> = (t..connections)
                        .step_by(threads)
                        .map(|i| tokio::spawn(drive(shared.clone(), i)))
                        .collect();
                    let mut recs: Vec<Recorder> =
                        (0..parts).map(|_| Recorder::new(open_loop)).collect();
                    for task in tasks {
                        match task.await {
                            Ok(r) => {
                                for (into, from) in recs.iter_mut().zip(&r) {
                                    into.merge(from);
                                }
                            }
                            Err(e) => std::panic::resume_unwind(e.into_panic()),
                        }
                    }
                    recs
                });
                let _ = tx.send(rec);
                Ok::<_, std::io::Error>(())
            })?;
        results.push(rx);
    }
    let mut by_part: Vec<Recorder> = (0..parts).map(|_| Recorder::new(open_loop)).collect();
    for rx in results {
        // A dropped sender means the thread failed: its runtime did not start or a
        // connection task panicked (a bug), which the thread has already reported.
        let recs = rx
            .await
            .map_err(|_| std::io::Error::other("a load thread failed"))?;
        for (into, from) in by_part.iter_mut().zip(&recs) {
            into.merge(from);
        }
    }
    let mut total = Recorder::new(open_loop);
    for r in &by_part {
        total.merge(r);
    }
    let end = Instant::now();
    if let Some(t) = ticker {
        t.abort();
    }
    let elapsed = match plan.mode().stop() {
        Stop::Duration(d) => d,
        Stop::Count(_) => end.saturating_duration_since(measure_start),
    };
    if let Some(tx) = progress {
        let mut last = snapshot(&shared);
        last.done = true;
        last.fraction = 1.0;
        tx.send_replace(last);
    }
    let reports = if plan.mix.is_empty() {
        Vec::new()
    } else {
        by_part
            .iter()
            .map(|r| build(plan, r, elapsed, started_wall))
            .collect()
    };
    Ok((build(plan, &total, elapsed, started_wall), reports))
}

fn snapshot(shared: &Shared) -> Progress {
    let now = Instant::now();
    let (mut finished, mut failed) = (0, 0);
    for live in shared.live.iter() {
        finished += live.finished.load(Ordering::Relaxed);
        failed += live.failed.load(Ordering::Relaxed);
    }
    let warming_up = now < shared.measure_start;
    let fraction = match shared.plan.mode().stop() {
        Stop::Duration(d) => {
            now.saturating_duration_since(shared.measure_start)
                .as_secs_f64()
                / d.as_secs_f64()
        }
        Stop::Count(n) => finished as f64 / n as f64,
    };
    Progress {
        elapsed: now - shared.start,
        warming_up,
        finished,
        failed,
        fraction: fraction.clamp(0.0, 1.0),
        done: false,
    }
}

async fn tick(shared: Arc<Shared>, tx: watch::Sender<Progress>) {
    let mut every = tokio::time::interval(PROGRESS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        every.tick().await;
        if tx.send(snapshot(&shared)).is_err() {
            return; // nobody is watching any more
        }
    }
}
