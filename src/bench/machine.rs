//! What the bench knows of the machine it runs on, and the calibration of the work's
//! single-thread time, from which the physical limit follows: cores / single-thread time.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::work::Work;

/// The machine a report came from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os: String,
}

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
            cores: crate::cli::cores(),
            memory_bytes: memory_kb * 1024,
            kernel,
            os: std::env::consts::OS.to_string(),
        }
    }
}

/// The work's single-thread time and the limit it implies.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// Every timed run, in milliseconds.
    pub runs_ms: Vec<f64>,
    /// Their median.
    pub single_thread_ms: f64,
    /// cores / single-thread time: the most requests per second the machine can complete.
    pub limit_per_s: f64,
}

/// Runs `work` on this thread `reps` times (after one untimed run) and takes the median.
pub fn calibrate(work: &Work, reps: usize, cores: usize) -> Calibration {
    let _ = work.run(&|| false);
    let mut runs: Vec<Duration> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            let _ = std::hint::black_box(work.run(&|| false));
            t.elapsed()
        })
        .collect();
    let runs_ms: Vec<f64> = runs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    runs.sort();
    let median = runs[runs.len() / 2].as_secs_f64().max(1e-9);
    Calibration {
        runs_ms,
        single_thread_ms: median * 1e3,
        limit_per_s: cores as f64 / median,
    }
}
