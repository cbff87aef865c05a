//! One strategy's run as measured: its processes, its queue, its answers, and its place
//! against the all-core limit around it.

use serde::{Deserialize, Serialize};

use super::limit::{Bracket, LimitWarning};
use super::row::RowId;
use crate::api::Spread;
use crate::load::Report;

/// One reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub t: f64,
    /// User + system CPU seconds used so far.
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub threads: u64,
}

/// One process of a run, as sampled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessStats {
    pub role: String,
    pub peak_rss_bytes: u64,
    pub peak_threads: u64,
    /// CPU seconds used during the measured run.
    pub cpu_s: f64,
    pub samples: Vec<Sample>,
}

/// The queue's side of a run: accepted is not done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueRun {
    /// How fast the gateway accepts while its backlog cap does not bind.
    pub accept_phase: AcceptPhase,
    /// 202 answers during the measured phase (the cap binds there once the backlog fills).
    pub accepted: u64,
    pub accepted_per_s: f64,
    /// Jobs done when the load stopped.
    pub done_at_stop: u64,
    /// Jobs queued or running when the load stopped.
    pub backlog_at_stop: u64,
    /// Time from the end of the load until nothing was queued or running.
    pub drain_s: f64,
    /// False when the drain timeout ran out first.
    pub drained: bool,
    /// Jobs done and failed by the end of the drain.
    pub jobs_done: u64,
    pub jobs_failed: u64,
    /// Jobs finished per second while jobs were waiting (the workers' rate: from the first
    /// backlog reading above zero to the drain's end); the whole run's average if too short.
    pub completed_per_s: f64,
    /// Jobs finished (done or failed) during the heavy load's measured window, read off
    /// `backlog`: the same window as the load's answers, so the two can be added (`auto`).
    pub jobs_finished_in_window: u64,
    /// From enqueue to done, over the run's finished jobs (null when none could be read).
    pub enqueue_to_done_ms: Option<Spread>,
    /// Seconds from the start of the accept phase to the end of the heavy load; the drain
    /// follows in `backlog`.
    pub load_end_s: f64,
    /// Jobs accepted and finished so far, sampled from the start of the accept phase to the
    /// end of the drain: the gap between the two lines is the backlog.
    pub backlog: Vec<BacklogPoint>,
}

/// A burst of requests sized to fit the backlog cap, sent before the main load: what the
/// gateway accepts per second when the cap is not what answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptPhase {
    /// Requests sent (half the backlog cap, so the cap cannot bind).
    pub requests: u64,
    /// Of those, answered 202.
    pub accepted: u64,
    /// Of those, answered anything else or not at all.
    pub refused: u64,
    pub seconds: f64,
    /// `accepted / seconds`.
    pub accepted_per_s: f64,
}

/// One reading of the queue's job counts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct BacklogPoint {
    /// Seconds since the accept phase began.
    pub t: f64,
    /// Jobs in the queue that this run stored (queued, running, done or failed).
    pub accepted: u64,
    /// Of those, done or failed.
    pub finished: u64,
}

/// Everything measured of one strategy, before its limit is known (the calibration after it
/// runs once its processes are gone).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// The row: offload's strategy or the Node server (`"strategy"` in `results.json`).
    pub strategy: RowId,
    /// Requests whose 2xx answer arrived in the measured window, including those sent in
    /// the warm-up (for the queue: jobs done).
    pub completed: u64,
    /// Work completed per second (for the queue: jobs done per second while jobs were
    /// waiting, drain included; for `auto`: its 200s plus the jobs finished, both in the
    /// load's measured window).
    pub completed_per_s: f64,
    /// Highest sum of the processes' resident memory at one sampling instant.
    pub peak_rss_bytes: u64,
    /// Highest sum of the processes' threads at one sampling instant.
    pub peak_threads: u64,
    pub cpu_s: f64,
    pub heavy: Report,
    pub bystander: Report,
    pub processes: Vec<ProcessStats>,
    pub queue: Option<QueueRun>,
    /// How the gateway's threads that answer requests were scheduled, read from the kernel
    /// once the gateway was up (offload's runtime threads; a Node server's event loop). None
    /// where it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingThreads>,
}

/// How the threads that answer a gateway's requests are scheduled: offload's runtime threads
/// (`offload-rt`, the most raised of them: tokio names its blocking threads alike), or the
/// main thread (a Node server's event loop).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServingThreads {
    pub nice: i32,
    /// The EEVDF time slice, ns (the kernel's default where none was asked for; None where
    /// the kernel reports none): whole, so that two readings compare exactly.
    pub slice_ns: Option<u64>,
}

impl ServingThreads {
    /// What the kernel reports for `u`.
    pub fn of(u: crate::pool::priority::Urgent) -> ServingThreads {
        ServingThreads {
            nice: u.nice,
            slice_ns: u.slice.map(|s| s.as_nanos() as u64),
        }
    }

    /// The same scheduling, as a thread is given it.
    pub fn urgent(self) -> crate::pool::priority::Urgent {
        crate::pool::priority::Urgent {
            slice: self.slice_ns.map(std::time::Duration::from_nanos),
            nice: self.nice,
        }
    }
}

impl std::fmt::Display for ServingThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nice {}", self.nice)?;
        if let Some(ns) = self.slice_ns {
            write!(f, ", a {:.2} ms slice", ns as f64 / 1e6)?;
        }
        Ok(())
    }
}

/// Everything measured of one strategy (`Measured`, kept whole and read as `run.measured`;
/// `#[serde(flatten)]` shows its fields as the run's own in results.json),
/// against its limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyRun {
    #[serde(flatten)]
    pub measured: Measured,
    /// `/heavy` requests still waiting for their answer when the window closed (or, in an
    /// open loop, due and never sent): in none of the latency figures and none of the
    /// errors, timeouts or statuses, so counted here.
    pub unfinished: u64,
    /// completed_per_s over `limit.limit_per_s`, the mean of the all-core calibrations
    /// before and after this strategy.
    pub limit_fraction: f64,
    /// Why `limit_fraction` is not to be trusted; empty when it is.
    pub limit_warnings: Vec<LimitWarning>,
    /// The calibrations before and after this strategy, every reading kept.
    pub limit: Bracket,
}

impl StrategyRun {
    /// Puts a measured strategy against the calibrations around it.
    pub fn new(m: Measured, limit: Bracket) -> StrategyRun {
        let limit_fraction = limit.fraction(m.completed_per_s);
        StrategyRun {
            limit_warnings: limit.flags(limit_fraction),
            limit_fraction,
            limit,
            unfinished: m.heavy.requests.aborted_at_deadline + m.heavy.requests.unsent_at_deadline,
            measured: m,
        }
    }

    /// CPU % (all the strategy's processes), RSS MiB and threads over [t, t+1).
    pub fn process_second(&self, t: f64) -> (f64, f64, u64) {
        let (mut cpu, mut rss, mut thr) = (0.0, 0.0, 0);
        for p in &self.measured.processes {
            let at = |x: f64| p.samples.iter().rfind(|s| s.t <= x);
            if let (Some(a), Some(b)) = (at(t), at(t + 1.0)) {
                if b.t > a.t {
                    cpu += (b.cpu_s - a.cpu_s) / (b.t - a.t) * 100.0;
                }
                rss += super::mib(b.rss_bytes);
                thr += b.threads;
            }
        }
        (cpu, rss, thr)
    }
}
