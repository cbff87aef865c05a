//! The bench's data: one model of a run, which the running side fills in and every drawing
//! (terminal, README.md, HTML, CSV, `--compare`) reads. Nothing here runs a process or draws:
//! a module of this folder imports only this folder (and the crate's own types).
//!
//! # Layout
//! - `row`: what a row is (`RowId`: offload's strategies, Node's servers, the mix's baseline);
//! - `settings`, `sizes`: the run's validated settings, and the work sizes its servers accept;
//! - `machine`, `limit`: the machine, its calibrations and the limit each row is held to;
//! - `run`: one row as measured (`Measured`) and against its limit (`StrategyRun`);
//! - `repeat`: the figures compared between runs and their spread over `--repeat N`;
//! - `mix`, `flood`, `node`: the other scenarios and the Node pairs.

mod flood;
mod limit;
mod machine;
mod mix;
mod node;
mod repeat;
mod row;
mod run;
mod settings;
mod sizes;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use flood::{
    FloodFailure, FloodResults, FloodRow, median_of, over_repeats, reusable, spread_of,
};
pub use limit::{Bracket, Calibration, DISAGREE_RATIO, LimitWarning, OVER_LIMIT, RunFlag};
pub use machine::{AllCore, Machine, SingleThread, median};
pub use mix::{MixPart, MixResults, MixRun, PartRun};
#[cfg(test)]
pub use node::figures;
pub use node::{Check, Figure, NodeBracket, NodeReport, with_pairs};
pub use repeat::{FIGURES, FLOOD_FIGURES, Repeat, RepeatSpread, repeats};
pub use row::{LOW_PRIORITY_NICE, NodeServer, RowId};
pub use run::{
    AcceptPhase, BacklogPoint, Measured, ProcessStats, QueueRun, Sample, ServingThreads,
    StrategyRun,
};
pub use settings::{Serving, Settings};
pub use sizes::MaxSizes;

/// The JSON schema of `results.json`.
pub const SCHEMA: &str = include_str!("../results.schema.json");
/// Bumped when `results.json` changes shape (7: `runs[].limit_flags` and `flood.rows[].limit_flags` are
/// `limit_warnings`, what makes a %limit unreliable, and `settings.limit_flags` (server flags as
/// strings) is `settings.max_sizes`; 6: the flood repeats its rows with `--repeat`:
/// `flood.repeat`, `flood.rows[].runs`, `.spread`, `.repeats`, `flood.failures[].round`;
/// 5: `runs[].unfinished`, `runs[].queue.jobs_finished_in_window`, `auto`'s rate over the
/// load's window alone, `mix.runs[].parts[].latency_with_timeouts`, `mix.runs[].health`
/// counting every probe).
pub const SCHEMA_VERSION: u32 = 7;

/// Bytes as MiB: the one conversion, for the figures the model keeps in MiB (the Node pairs,
/// a run's per-second memory) and for every drawing.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// A strategy that could not be measured, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub strategy: RowId,
    pub error: String,
}

/// Everything a bench run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    pub offload_version: String,
    pub command_line: Vec<String>,
    pub started_at_unix_s: u64,
    pub wall_s: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub calibration: Calibration,
    pub runs: Vec<StrategyRun>,
    pub failures: Vec<Failure>,
    /// Plain sentences that read the table (`draw::reading`, filled in by the bench).
    pub reading: Vec<String>,
    /// With `--repeat` above 1: each strategy's figures over its runs.
    pub repeats: Vec<Repeat>,
    /// The mixed scenario (`--mix`), when it ran.
    pub mix: Option<MixResults>,
    /// The flood scenario (`--flood`), when it ran.
    pub flood: Option<FloodResults>,
    /// With `--node`: the Node servers' set-up, calibrations, checks and pairs.
    pub node: Option<NodeReport>,
}

impl Results {
    pub fn new(
        machine: Machine,
        settings: Settings,
        calibration: Calibration,
        runs: Vec<StrategyRun>,
        failures: Vec<Failure>,
        wall: Duration,
        repeats: Vec<Repeat>,
    ) -> Results {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Results {
            schema_version: SCHEMA_VERSION,
            offload_version: env!("CARGO_PKG_VERSION").to_string(),
            command_line: std::env::args().collect(),
            started_at_unix_s: (now - wall).as_secs(),
            wall_s: wall.as_secs_f64(),
            machine,
            settings,
            calibration,
            runs,
            failures,
            reading: Vec::new(),
            repeats,
            mix: None,
            flood: None,
            node: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::bench::planted::{self, FloodPlant, Plant};
    use crate::load::Planted;
    use crate::strategy::Name;

    /// A planted run with some of everything results.json holds: a queue, a Node pair, the
    /// serving threads, repeats, a failure, the mix, the flood and the Node servers' set-up.
    fn everything() -> Results {
        let mut r = planted::results(vec![
            Plant::new("pool", 50.0, 1.0),
            Plant::new("queue", 40.0, 2.0).queue(200.0, 100, 50.0),
            Plant::new("node:piscina", 45.0, 3.0).limits(150.0, 170.0),
        ]);
        r.runs[0].measured.serving = Some(ServingThreads {
            nice: -10,
            slice_ns: Some(100_000),
        });
        r.settings.serving = Serving::Plain;
        r.settings.auto_wait = Some(Duration::from_millis(250));
        r.repeats = repeats(&r.runs);
        r.failures.push(Failure {
            strategy: RowId::LowPriority(Name::Pool),
            error: "planted".into(),
        });
        let row = |goodput_per_s| {
            FloodPlant {
                goodput_per_s,
                refused_per_s: 20.0,
                health_p99_ms: 1.0,
                gateway_cpu: 0.5,
            }
            .row("pool", 1000, false)
        };
        r.flood = Some(planted::flood(
            &[1000],
            2,
            vec![vec![row(90.0), row(110.0)]],
        ));
        let part = MixPart {
            work: "count:1000".into(),
            query: "work=count&n=1000".into(),
            weight: 1,
            units: 0,
            sample: None,
        };
        let report = planted::open(&Planted {
            answers: planted::answers(100, 200, 2.0),
            ..Planted::default()
        });
        r.mix = Some(MixResults {
            spec: part.work.clone(),
            seed: 1,
            rate: 20.0,
            limit_per_s: 150.0,
            load_fraction: 0.5,
            runs: vec![MixRun {
                strategy: RowId::LightAlone,
                rate: 10.0,
                parts: vec![PartRun::new(&part, &report, None, 10.0)],
                health: report.latency_with_timeouts.clone(),
                drain_s: None,
                drained: true,
            }],
            reading: vec!["planted".into()],
        });
        r.settings.mix = vec![part];
        let setup = NodeReport {
            node_version: "v22.0.0".into(),
            npm_version: "10.0.0".into(),
            packages: BTreeMap::from([("piscina".into(), "4.0.0".into())]),
            folder: "/tmp/planted".into(),
            redis: None,
            calibrations: vec![NodeBracket {
                strategy: NodeServer::Piscina,
                before: r.runs[2].limit.before.clone(),
                after: r.runs[2].limit.after.clone(),
            }],
            checks: vec![Check {
                strategy: NodeServer::Piscina,
                expected: 1,
                result: 1,
            }],
            pairs: Vec::new(),
        };
        r.node = Some(with_pairs(setup, &r.runs));
        r
    }

    #[test]
    fn a_results_json_reads_back_as_results_and_writes_the_same() {
        let json = serde_json::to_string_pretty(&everything()).unwrap();
        let back: Results = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), json);
        assert_eq!(back.node.map(|n| n.pairs.len()), Some(1));
    }

    #[test]
    fn a_results_json_from_before_the_serving_threads_reads() {
        let mut v = serde_json::to_value(everything()).unwrap();
        v["settings"].as_object_mut().unwrap().remove("serving");
        for run in v["runs"].as_array_mut().unwrap() {
            run.as_object_mut().unwrap().remove("serving");
        }
        let r: Results = serde_json::from_value(v).unwrap();
        assert_eq!(r.settings.serving, Serving::Raised);
        assert!(r.runs.iter().all(|r| r.measured.serving.is_none()));
    }
}
