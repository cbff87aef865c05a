//! The machine a report came from, and its calibrations: how fast it ran the work on one
//! idle thread and on every core at once (the all-core figure is the physical limit).

use serde::{Deserialize, Serialize};

/// The machine a report came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os: String,
}

/// The work's time on one idle thread: what one core does alone, shown beside the limit and
/// never used as it (one idle core's speed is not the machine's: turbo, SMT siblings and
/// neighbours all slow cores down once every core is busy).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SingleThread {
    /// Every timed run, in milliseconds, in the order taken.
    pub runs_ms: Vec<f64>,
    /// Their median.
    pub median_ms: f64,
}

/// One all-core calibration: the work run on every core at once, several times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AllCore {
    /// Threads run at once (one per core).
    pub threads: usize,
    /// The time window of each reading, in seconds.
    pub window_s: f64,
    /// Each reading's throughput in runs of the work per second, in the order taken.
    pub readings_per_s: Vec<f64>,
    /// Whole runs counted in each reading (over all threads).
    pub readings_runs: Vec<u64>,
    /// The readings' median: the most requests per second the machine completed just then.
    pub limit_per_s: f64,
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
