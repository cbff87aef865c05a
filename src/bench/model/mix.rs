//! The mixed scenario's results: weighted kinds of work sent together, per strategy and per
//! kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::row::RowId;
use crate::api::Spread;
use crate::load::{self, LatencyStats};
use crate::work::Work;

/// One kind of work in the mix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixPart {
    /// `kind:n`.
    pub work: String,
    /// `work=kind&n=N`.
    pub query: String,
    pub weight: u32,
    /// Units of work of one request, for the limit.
    #[serde(skip)]
    pub units: u64,
    #[serde(skip)]
    pub sample: Option<Work>,
}

/// The mixed scenario's settings and results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixResults {
    /// The `--mix` spec.
    pub spec: String,
    pub seed: u64,
    /// Requests per second sent (open loop).
    pub rate: f64,
    /// The mix's all-core limit in requests per second it was sent at a share of.
    pub limit_per_s: f64,
    pub load_fraction: f64,
    pub runs: Vec<MixRun>,
    /// The goals, read off the runs: plain sentences.
    pub reading: Vec<String>,
}

/// One strategy on the mix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixRun {
    /// `pool`, `queue`, `auto`, or the light part alone.
    pub strategy: RowId,
    pub rate: f64,
    pub parts: Vec<PartRun>,
    /// The `/health` probe's latency meanwhile, in ms, over every probe that fell due: one
    /// that timed out or was cut short at the time it had waited (a lower bound).
    pub health: LatencyStats,
    /// From the end of the load until no job was queued or running (null: no jobs).
    pub drain_s: Option<f64>,
    /// Whether the drain finished within `--drain-timeout`.
    pub drained: bool,
}

/// One kind of work of the mix under one strategy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartRun {
    pub work: String,
    pub weight: u32,
    pub sent: u64,
    /// Answers by status, plus `timeout`, `error` and `unfinished` (still waiting, or not
    /// sent, when the load stopped).
    pub answered: BTreeMap<String, u64>,
    /// Latency of the answers (200, 202 or an error status), in ms, from the intended send
    /// time: the requests under `timeout`, `error` and `unfinished` are not in it.
    pub latency: LatencyStats,
    /// Every request of this kind that fell due: the answers, each timeout at the time it was
    /// given up on, each unfinished request at the time it had waited (a lower bound). The
    /// goal on the light requests is read from this, so leaving them unanswered cannot meet it.
    pub latency_with_timeouts: LatencyStats,
    /// Of this kind, jobs done and stored (answered 202).
    pub jobs_done: u64,
    /// Jobs done per second, from the start of the load to the end of the drain.
    pub jobs_done_per_s: f64,
    /// Enqueue to done of this kind's jobs, in ms.
    pub enqueue_to_done_ms: Option<Spread>,
}

impl PartRun {
    /// One kind of work's figures from its load report `r`, its jobs' enqueue-to-done
    /// `spread`, over `span` seconds from the load's start to the drain's end.
    pub fn new(p: &MixPart, r: &load::Report, spread: Option<Spread>, span: f64) -> PartRun {
        let mut answered: BTreeMap<String, u64> = r.requests.by_status.clone();
        if r.requests.timeouts > 0 {
            answered.insert("timeout".into(), r.requests.timeouts);
        }
        if r.requests.errors > 0 {
            answered.insert("error".into(), r.requests.errors);
        }
        // Still waiting when the load stopped (or never sent, its connection busy).
        let unfinished = r.requests.aborted_at_deadline + r.requests.unsent_at_deadline;
        if unfinished > 0 {
            answered.insert("unfinished".into(), unfinished);
        }
        let jobs_done = spread.as_ref().map_or(0, |s| s.count);
        PartRun {
            work: p.work.clone(),
            weight: p.weight,
            sent: r.requests.sent,
            answered,
            latency: r.latency.clone(),
            latency_with_timeouts: r.latency_with_timeouts.clone(),
            jobs_done,
            jobs_done_per_s: jobs_done as f64 / span.max(1e-9),
            enqueue_to_done_ms: spread,
        }
    }
}
