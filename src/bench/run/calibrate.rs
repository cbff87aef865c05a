//! What the bench knows of the machine it runs on, and how fast it runs the work: on one
//! idle thread, and on every core at once. The all-core figure is the physical limit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::bench::model::{AllCore, Machine, SingleThread, median};
use anyhow::Context;

use crate::work::Work;

impl Machine {
    /// Reads the machine from /proc (Linux); unknown fields say "unknown".
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split(':').nth(1))
            })
            .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string());
        Machine {
            cpu_model,
            cores: crate::work::cores(),
            memory_bytes: memory_kb * 1024,
            kernel,
            os: std::env::consts::OS.to_string(),
        }
    }
}

/// Why a calibration could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("could not start a calibration thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("a calibration thread panicked")]
    Panicked,
}

/// Runs `work` on the calling thread `reps` times (after one untimed run) and takes the
/// median. It runs on the caller's thread so a caller can pin it to a core.
pub fn calibrate_single_thread(work: &Work, reps: usize) -> SingleThread {
    let _ = std::hint::black_box(work.run(&|| false));
    let runs_ms: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            let _ = std::hint::black_box(work.run(&|| false));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    SingleThread {
        median_ms: median(&runs_ms),
        runs_ms,
    }
}

/// Runs `work` on `threads` OS threads at once for `window`, `reps` times, and takes the
/// median throughput. No server is involved: this is the most the work itself allows.
///
/// # Errors
/// When a thread cannot be started or panics.
pub fn calibrate_all_cores(
    work: &Work,
    threads: usize,
    reps: usize,
    window: Duration,
) -> Result<AllCore, CalibrationError> {
    let threads = threads.max(1);
    let mut readings_per_s = Vec::new();
    let mut readings_runs = Vec::new();
    for _ in 0..reps.max(1) {
        let (runs, per_s) = all_core_reading(work, threads, window)?;
        readings_runs.push(runs);
        readings_per_s.push(per_s);
    }
    Ok(AllCore {
        threads,
        window_s: window.as_secs_f64(),
        limit_per_s: median(&readings_per_s),
        readings_per_s,
        readings_runs,
    })
}

/// How the bench calibrates: readings per all-core calibration, the window of each, and the
/// timed single-thread runs. Three one-second readings take 3 s per calibration, small
/// against a 12 s strategy, and their median shrugs off one disturbed reading; --quick keeps
/// two short ones so a smoke run stays quick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CalibrationPlan {
    pub reps: usize,
    pub window: Duration,
    pub single_thread_reps: usize,
}

impl CalibrationPlan {
    pub(crate) fn new(quick: bool) -> CalibrationPlan {
        if quick {
            CalibrationPlan {
                reps: 2,
                window: Duration::from_millis(300),
                single_thread_reps: 3,
            }
        } else {
            CalibrationPlan {
                reps: 3,
                window: Duration::from_secs(1),
                single_thread_reps: 7,
            }
        }
    }

    /// One all-core calibration, off the async runtime's threads.
    pub(crate) async fn all_cores(self, work: Work, cores: usize) -> anyhow::Result<AllCore> {
        tokio::task::spawn_blocking(move || {
            calibrate_all_cores(&work, cores, self.reps, self.window)
        })
        .await
        .context("the calibration task")?
        .context("calibrating on all cores")
    }
}

/// One reading: (whole runs, runs per second) over all threads.
///
/// Each thread counts only whole runs and times them exactly: from the common start to the
/// end of its first run that ends at or past the window, so no run is cut in half and none
/// is counted outside the time it took. Its rate is runs / that time; the threads' rates
/// add up. A thread that is done keeps its core busy (uncounted, stopped as soon as all are
/// done) so the others are timed under the same contention to their end.
fn all_core_reading(
    work: &Work,
    threads: usize,
    window: Duration,
) -> Result<(u64, f64), CalibrationError> {
    // Held for writing while threads start, so they all begin together; `abort` tells them
    // to leave without running when one could not be started.
    let gate = RwLock::new(());
    let abort = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let held = gate.write().unwrap_or_else(PoisonError::into_inner);
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (gate, abort, done) = (&gate, &abort, &done);
            let spawned = std::thread::Builder::new()
                .name(format!("calibrate-{i}"))
                .spawn_scoped(s, move || {
                    drop(gate.read().unwrap_or_else(PoisonError::into_inner));
                    if abort.load(Ordering::Acquire) {
                        return (0, 0.0);
                    }
                    // Counts this thread done even if the work panicked, so no other thread
                    // waits for it forever.
                    let mark = MarkDone(done);
                    let start = Instant::now();
                    let mut runs = 0u64;
                    let end = loop {
                        let _ = std::hint::black_box(work.run(&|| false));
                        runs += 1;
                        let now = Instant::now();
                        if now >= start + window {
                            break now;
                        }
                    };
                    drop(mark);
                    let all_done = || done.load(Ordering::Acquire) >= threads;
                    while !all_done() {
                        let _ = std::hint::black_box(work.run(&all_done));
                    }
                    (runs, runs as f64 / (end - start).as_secs_f64().max(1e-9))
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    abort.store(true, Ordering::Release);
                    drop(held);
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(CalibrationError::Spawn(e));
                }
            }
        }
        drop(held);
        let mut total = (0u64, 0.0f64);
        let mut panicked = false;
        for h in handles {
            match h.join() {
                Ok((runs, per_s)) => total = (total.0 + runs, total.1 + per_s),
                Err(_) => panicked = true,
            }
        }
        if panicked {
            return Err(CalibrationError::Panicked);
        }
        Ok(total)
    })
}

/// Adds one to the count of threads done when dropped.
struct MarkDone<'a>(&'a AtomicUsize);

impl Drop for MarkDone<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}
