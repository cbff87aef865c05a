//! What a row of the report is: one of offload's strategies, one of the seed's Node servers,
//! or the mix's baseline. Rows are compared and looked up by this type, never by their names;
//! the name is how a row is shown and how `results.json` spells it (`"pool"`, `"node:piscina"`).

use serde::{Deserialize, Serialize};

use crate::strategy::Name;

/// The niceness of the work threads in the pair that runs at a lower priority (`pool --nice`,
/// piscina's `niceIncrement`): the value offload's pool ran at until 2026-12-03.
pub const LOW_PRIORITY_NICE: i32 = 10;

/// One of the seed's Node servers (`bench --node`), each the counterpart of one of offload's
/// strategies. Written and read by its row's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub enum NodeServer {
    /// The count in Express's handler, on the event loop.
    Inline,
    /// A `Worker` per request.
    Worker,
    /// A piscina pool, threads = cores.
    Piscina,
    /// The same piscina pool with its threads at `LOW_PRIORITY_NICE` (`niceIncrement`),
    /// beside `pool` at the same niceness: the other side of a choice of priority.
    PiscinaNice,
    /// An Express gateway to `offload compute`.
    Remote,
    /// BullMQ on Redis, a worker process per core.
    Bullmq,
}

impl NodeServer {
    /// Every server, in the order of their offload counterparts.
    pub const ALL: [NodeServer; 6] = [
        NodeServer::Inline,
        NodeServer::Worker,
        NodeServer::Piscina,
        NodeServer::PiscinaNice,
        NodeServer::Remote,
        NodeServer::Bullmq,
    ];

    /// The row's name (`node:piscina`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeServer::Inline => "node:inline",
            NodeServer::Worker => "node:worker",
            NodeServer::Piscina => "node:piscina",
            NodeServer::PiscinaNice => "node:piscina, nice 10",
            NodeServer::Remote => "node:remote",
            NodeServer::Bullmq => "node:bullmq",
        }
    }

    /// The server's file under `node/`.
    pub fn file(self) -> &'static str {
        match self {
            NodeServer::Inline => "inline.js",
            NodeServer::Worker => "worker.js",
            NodeServer::Piscina | NodeServer::PiscinaNice => "piscina.js",
            NodeServer::Remote => "remote.js",
            NodeServer::Bullmq => "bullmq.js",
        }
    }

    /// The name its answers carry (`"strategy"` in a `/heavy` answer).
    pub fn answers_as(self) -> &'static str {
        match self {
            NodeServer::PiscinaNice => NodeServer::Piscina.as_str(),
            other => other.as_str(),
        }
    }

    /// The niceness its work threads add, when not the default 0 (piscina's `niceIncrement`).
    pub fn nice_increment(self) -> Option<i32> {
        (self == NodeServer::PiscinaNice).then_some(LOW_PRIORITY_NICE)
    }

    /// The row of offload's it is paired with.
    pub fn paired(self) -> RowId {
        match self {
            NodeServer::PiscinaNice => RowId::LowPriority(Name::Pool),
            other => RowId::Offload(other.counterpart()),
        }
    }

    /// offload's strategy it is paired with.
    pub fn counterpart(self) -> Name {
        match self {
            NodeServer::Inline => Name::Inline,
            NodeServer::Worker => Name::Spawn,
            NodeServer::Piscina | NodeServer::PiscinaNice => Name::Pool,
            NodeServer::Remote => Name::Remote,
            NodeServer::Bullmq => Name::Queue,
        }
    }

    /// The Node server paired with the row `row`, if there is one.
    pub fn of(row: RowId) -> Option<NodeServer> {
        NodeServer::ALL.into_iter().find(|n| n.paired() == row)
    }

    /// Whether its work runs on Node's loop, so that its limit is Node's own loop calibrated
    /// around it: every server but `node:remote`, whose work runs in `offload compute`.
    pub fn on_node_loop(self) -> bool {
        self != NodeServer::Remote
    }
}

/// A row of the report. Written and read by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum RowId {
    /// One of offload's gateway strategies.
    Offload(Name),
    /// One of the seed's Node servers.
    Node(NodeServer),
    /// One of offload's strategies with its work threads at `LOW_PRIORITY_NICE` (`--nice`),
    /// beside `node:piscina, nice 10` with `bench --node`.
    LowPriority(Name),
    /// The mix's baseline: its lightest part alone, at its share of the rate, on `pool`.
    LightAlone,
}

impl RowId {
    /// The row's name, as shown and as `results.json` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RowId::Offload(n) => n.as_str(),
            RowId::Node(n) => n.as_str(),
            RowId::LowPriority(Name::Pool) => "pool, nice 10",
            RowId::LowPriority(_) => "a strategy at nice 10",
            RowId::LightAlone => "pool, light alone",
        }
    }

    /// The row called `s` (a gateway strategy or a Node server; the mix's baseline is never
    /// asked for by name).
    pub fn parse(s: &str) -> Option<RowId> {
        Name::parse(s).map(RowId::Offload).or_else(|| {
            NodeServer::ALL
                .into_iter()
                .find(|n| n.as_str() == s)
                .map(RowId::Node)
        })
    }

    /// offload's strategy of this row, if it is one.
    pub fn offload(self) -> Option<Name> {
        match self {
            RowId::Offload(n) => Some(n),
            _ => None,
        }
    }

    /// The Node server of this row, if it is one.
    pub fn node(self) -> Option<NodeServer> {
        match self {
            RowId::Node(n) => Some(n),
            _ => None,
        }
    }

    /// offload's strategy that runs this row, at whatever priority.
    pub fn strategy(self) -> Option<Name> {
        match self {
            RowId::Offload(n) | RowId::LowPriority(n) => Some(n),
            _ => None,
        }
    }

    /// The niceness this row's work threads are started with, when not the default.
    pub fn nice(self) -> Option<i32> {
        match self {
            RowId::LowPriority(_) => Some(LOW_PRIORITY_NICE),
            RowId::Node(n) => n.nice_increment(),
            _ => None,
        }
    }

    /// Whether this row's work goes through a queue (offload's `queue` and `auto`, BullMQ).
    pub fn queued(self) -> bool {
        match self {
            RowId::Offload(n) | RowId::LowPriority(n) => {
                n.helper() == Some(crate::strategy::Helper::Worker)
            }
            RowId::Node(n) => n == NodeServer::Bullmq,
            RowId::LightAlone => false,
        }
    }
}

impl std::fmt::Display for NodeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for RowId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for RowId {
    type Error = String;

    /// The row named `s`: `parse`'s rows, and those never asked for by name (the pool at
    /// nice 10, the mix's baseline), as `results.json` is read back.
    fn try_from(s: String) -> Result<RowId, String> {
        RowId::parse(&s)
            .or_else(|| {
                [RowId::LowPriority(Name::Pool), RowId::LightAlone]
                    .into_iter()
                    .find(|r| r.as_str() == s)
            })
            .ok_or_else(|| format!("no row is called {s:?}"))
    }
}

impl TryFrom<String> for NodeServer {
    type Error = String;

    fn try_from(s: String) -> Result<NodeServer, String> {
        NodeServer::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| format!("no Node server is called {s:?}"))
    }
}

impl Serialize for RowId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for NodeServer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_found_by_its_name_and_only_by_it() {
        for n in Name::GATEWAY {
            assert_eq!(RowId::parse(n.as_str()), Some(RowId::Offload(n)));
        }
        for n in NodeServer::ALL {
            assert_eq!(RowId::parse(n.as_str()), Some(RowId::Node(n)));
            assert_eq!(NodeServer::of(n.paired()), Some(n));
        }
        // The pool pair at the lower priority: both sides at nice 10, each named for it.
        assert_eq!(
            NodeServer::PiscinaNice.paired(),
            RowId::LowPriority(Name::Pool)
        );
        assert_eq!(RowId::LowPriority(Name::Pool).nice(), Some(10));
        assert_eq!(RowId::Node(NodeServer::PiscinaNice).nice(), Some(10));
        assert_eq!(RowId::Offload(Name::Pool).nice(), None);
        assert_eq!(NodeServer::PiscinaNice.answers_as(), "node:piscina");
        assert_eq!(RowId::parse("node:nothing"), None);
        assert_eq!(RowId::parse("rayon"), None);
        assert_eq!(
            serde_json::to_string(&RowId::Node(NodeServer::Piscina)).unwrap(),
            "\"node:piscina\""
        );
        // Every row reads back from its name, those never asked for by name too.
        let rows = Name::GATEWAY
            .map(RowId::Offload)
            .into_iter()
            .chain(NodeServer::ALL.map(RowId::Node))
            .chain([RowId::LowPriority(Name::Pool), RowId::LightAlone]);
        for row in rows {
            let json = serde_json::to_string(&row).unwrap();
            assert_eq!(serde_json::from_str::<RowId>(&json).unwrap(), row, "{json}");
        }
        for n in NodeServer::ALL {
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(serde_json::from_str::<NodeServer>(&json).unwrap(), n);
        }
        assert!(serde_json::from_str::<RowId>("\"rayon\"").is_err());
    }
}
