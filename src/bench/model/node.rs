//! What `bench --node` adds to the results: the Node servers' set-up, Node's own calibrations
//! around each Node row, the checked answers, and each Node row beside its offload
//! counterpart, figure by figure, with their ratio (offload / Node).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::machine::AllCore;
use super::mib;
use super::row::{NodeServer, RowId};
use super::run::StrategyRun;

/// `results.json`'s `node`: what ran, how it was calibrated and checked, and the pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub node_version: String,
    pub npm_version: String,
    /// express, piscina, bullmq and ioredis, as installed from the lock file.
    pub packages: BTreeMap<String, String>,
    /// The cache folder the servers ran from.
    pub folder: String,
    /// Where node:bullmq's Redis ran (null without node:bullmq).
    pub redis: Option<String>,
    /// Node's own all-core calibrations, right before and after each Node row.
    pub calibrations: Vec<NodeBracket>,
    /// One `/heavy` answer (for node:bullmq, its job's stored result) per Node row, checked
    /// against offload's result for the same work before the load.
    pub checks: Vec<Check>,
    /// Each Node row beside its offload counterpart.
    pub pairs: Vec<Pair>,
}

/// Node's calibrations around one Node row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeBracket {
    pub strategy: NodeServer,
    pub before: AllCore,
    pub after: AllCore,
}

/// A Node server's answer against offload's result for the same work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub strategy: NodeServer,
    pub expected: u64,
    pub result: u64,
}

/// One seed strategy: offload's row and the Node row, figure by figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    pub offload: RowId,
    pub node: RowId,
    pub figures: Vec<Figure>,
}

/// One figure of a pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// `req/s`, `%limit`, `/health p99 ms`, `RSS MiB`, `threads`; for the queues also
    /// `accepted/s`, `done/s` and `drain s` (and `req/s` is left out: it is done/s there).
    pub figure: String,
    pub offload: f64,
    pub node: f64,
    /// offload / Node; null when Node's figure is zero.
    pub ratio: Option<f64>,
    /// A %limit of either side that is not reliable (its calibrations disagree, or it beat
    /// its limit).
    pub unreliable: bool,
    /// Which side's %limit that is: each is marked on its own.
    pub offload_unreliable: bool,
    pub node_unreliable: bool,
}

fn figure(name: &str, offload: f64, node: f64) -> Figure {
    Figure {
        figure: name.to_owned(),
        offload,
        node,
        ratio: (node != 0.0).then(|| offload / node),
        unreliable: false,
        offload_unreliable: false,
        node_unreliable: false,
    }
}

pub fn figures(o: &StrategyRun, n: &StrategyRun) -> Vec<Figure> {
    let mut f = Vec::new();
    match (&o.measured.queue, &n.measured.queue) {
        (Some(oq), Some(nq)) => {
            f.push(figure(
                "accepted/s",
                oq.accept_phase.accepted_per_s,
                nq.accept_phase.accepted_per_s,
            ));
            f.push(figure(
                "done/s",
                o.measured.completed_per_s,
                n.measured.completed_per_s,
            ));
            f.push(figure("drain s", oq.drain_s, nq.drain_s));
        }
        _ => f.push(figure(
            "req/s",
            o.measured.completed_per_s,
            n.measured.completed_per_s,
        )),
    }
    let mut limit = figure("%limit", o.limit_fraction * 100.0, n.limit_fraction * 100.0);
    limit.offload_unreliable = !o.limit_warnings.is_empty();
    limit.node_unreliable = !n.limit_warnings.is_empty();
    limit.unreliable = limit.offload_unreliable || limit.node_unreliable;
    f.push(limit);
    let p99 = |r: &StrategyRun| r.measured.bystander.latency_with_timeouts.p99;
    f.push(figure("/health p99 ms", p99(o), p99(n)));
    f.push(figure(
        "RSS MiB",
        mib(o.measured.peak_rss_bytes),
        mib(n.measured.peak_rss_bytes),
    ));
    f.push(figure(
        "threads",
        o.measured.peak_threads as f64,
        n.measured.peak_threads as f64,
    ));
    f
}

/// `report` with the pairs of `runs` filled in: every seed strategy whose two rows both ran.
pub fn with_pairs(mut report: NodeReport, runs: &[StrategyRun]) -> NodeReport {
    let by = |row: RowId| runs.iter().find(|r| r.measured.strategy == row);
    report.pairs = NodeServer::ALL
        .into_iter()
        .filter_map(|n| {
            let (o, n) = (by(n.paired())?, by(RowId::Node(n))?);
            Some(Pair {
                offload: o.measured.strategy,
                node: n.measured.strategy,
                figures: figures(o, n),
            })
        })
        .collect();
    report
}
