//! A bench run's validated settings, as `results.json` keeps them.

use std::time::Duration;

use super::mix::MixPart;
use super::row::RowId;
use super::sizes::MaxSizes;

/// Validated settings of a bench run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// The uniform scenario's rows, in the order they run (with `--node`, each Node server
    /// right after its counterpart).
    pub strategies: Vec<RowId>,
    pub connections: u32,
    #[serde(with = "secs")]
    pub duration: Duration,
    #[serde(with = "secs")]
    pub warmup: Duration,
    pub work: String,
    /// The query string of the heavy request.
    pub work_query: String,
    pub queue_url: String,
    /// A queue name of this run's own, so a shared Redis holds nothing of earlier runs. Each
    /// strategy run, mix row and flood row takes its own queue under it (`Settings::own_queue`).
    pub queue_name: crate::queue::QueueName,
    pub probe_rate: f64,
    #[serde(with = "secs")]
    pub timeout: Duration,
    pub max_backlog: u64,
    #[serde(with = "secs")]
    pub drain_timeout: Duration,
    /// The largest size of each kind of work the servers and workers are started with, so
    /// the chosen work (and the mix's) is accepted.
    pub max_sizes: MaxSizes,
    pub quick: bool,
    /// Runs of each strategy.
    pub repeat: u32,
    /// The mixed scenario's kinds of work (empty: no mixed scenario).
    pub mix: Vec<MixPart>,
    /// No `--mix` was given: the default mix runs, its heavy part sized on this machine
    /// before the run (`mix::sized_default`).
    #[serde(skip)]
    pub mix_default: bool,
    /// The mixed scenario's rate, when given (`--mix-rate`).
    pub mix_rate: Option<f64>,
    /// `auto`'s wait budget, when given (`--auto-wait`).
    #[serde(with = "opt_secs")]
    pub auto_wait: Option<Duration>,
    /// `--node`: the seed's Node servers run too (their rows are in `strategies`).
    pub node: bool,
    /// How the threads that answer requests are scheduled, on offload's side and, with
    /// `--node`, on Node's (`--serving`). A file written before 2026-12-08 has none: its
    /// runs had the default.
    #[serde(default)]
    pub serving: Serving,
    /// The flood scenario's closed-loop connection counts, ascending (empty: no flood).
    pub flood: Vec<u32>,
    /// The strategies the flood scenario runs.
    pub flood_strategies: Vec<RowId>,
    /// Whether the heavy load honours `Retry-After`: set per row by the flood scenario on
    /// its own copy, never a setting of the whole run (so not in results.json).
    #[serde(skip)]
    pub honor_retry_after: bool,
}

/// How the threads that answer requests are scheduled in a run: offload's runtime threads and,
/// with `--node`, each Node server's event loop, alike on both sides of a pair.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Serving {
    /// `offload serve`'s defaults (a 0.1 ms time slice and nice -10, where the bench may raise
    /// it), and the same given to each Node server's event loop.
    #[default]
    Raised,
    /// The kernel's defaults on both sides: offload's runtime threads at nice 0 on the
    /// kernel's slice (`serve --runtime-nice 0 --runtime-slice 0`), Node's loop untouched.
    Plain,
}

impl Serving {
    /// What offload's runtime threads and each Node server's event loop get.
    pub fn urgent(self) -> crate::pool::priority::Urgent {
        match self {
            Serving::Raised => crate::pool::priority::Urgent::DEFAULT,
            Serving::Plain => crate::pool::priority::Urgent {
                slice: None,
                nice: 0,
            },
        }
    }
}

/// An optional duration as seconds (null for none), as `results.json` writes it.
mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A duration as seconds, as `results.json` writes it.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
