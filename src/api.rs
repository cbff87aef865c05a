//! What crosses a process, typed once: the answers of the gateway and the compute service,
//! the result a worker stores, the error body, `/health`, the queue's job counts, and the
//! "listening on" line a child process prints. Each side of a boundary uses the same type, so
//! a field renamed on one side fails to compile on the other instead of failing at run time.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::queue::{Counts as JobCounts, JobStatus};

/// The `200` answer of `/heavy` (every synchronous strategy) and of a compute service's
/// `/compute`: the result, and where the time went on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeavyAnswer {
    /// The strategy that ran it (`rayon` from a compute service).
    pub strategy: String,
    /// The kind of work (`count`, `primes`, `hash`).
    pub work: String,
    pub n: u64,
    pub result: u64,
    /// From the hand-off to the first chunk starting, in µs.
    pub wait_us: u64,
    /// From the first chunk starting to the last one ending, in µs.
    pub run_us: u64,
    /// `auto` only: the predicted time to finish (wait plus run) that sent it to the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_us: Option<u64>,
}

/// The `202` answer of the queue strategy and of `auto` for queued work: offload-axum's
/// [`AcceptedBody`](offload_axum::AcceptedBody) (the job's id, status and URL, its predicted
/// time to done, the jobs ahead, and for `auto` the pool's predicted finish that did not fit
/// the budget), with the strategy and the work. The same URL is in `Location`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// `queue` (also when `auto` chose it).
    #[serde(default)]
    pub strategy: String,
    #[serde(flatten)]
    pub job: offload_axum::AcceptedBody,
    pub work: String,
    pub n: u64,
}

/// What `offload worker` stores as a job's result, shown as `result` by `GET /jobs/{id}`.
pub use crate::work::JobResult;

/// `GET /jobs/{id}`: the queue's view of a job, with its result as JSON (a [`JobResult`] for
/// jobs run by `offload worker`); the same body offload-axum's jobs route answers.
pub use offload_axum::JobBody as Job;

/// `GET /jobs`: the queue's jobs by state and, with `?latency=N`, enqueue-to-done times;
/// percentiles of a set of durations. The same types as offload-axum's jobs routes answer.
pub use offload_axum::{JobsSummary, Spread};

/// Every error answer: `{"error": {"code": ..., "message": ...}}`, the same shape (and types)
/// as a service embedding offload-axum answers.
pub use offload_axum::{ErrorBody, ErrorDetail};

/// `GET /health` of a gateway or a compute service. Always `status` and `strategy`; the rest
/// where it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub strategy: String,
    /// Threads that run work (pool, compute service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Requests a compute service admits at once: what a `remote` gateway sends it at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
    /// A compute service's startup calibration: seconds per unit, by kind of work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secs_per_unit: Option<BTreeMap<String, f64>>,
    /// How long a request arriving now would wait before starting (pool, remote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_wait_s: Option<f64>,
}

impl Health {
    /// `ok` for `strategy`, nothing else filled in.
    pub fn ok(strategy: &str) -> Health {
        Health {
            status: "ok".to_owned(),
            strategy: strategy.to_owned(),
            threads: None,
            capacity: None,
            secs_per_unit: None,
            predicted_wait_s: None,
        }
    }
}

/// `GET /ui/state`: what the gateway's live page (`/ui`) shows, read from live state at each
/// call. Totals only grow; the page turns them into rates between two reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UiState {
    /// The strategy's name.
    pub strategy: String,
    /// Seconds since the gateway started.
    pub uptime_s: f64,
    /// Who may press the page's buttons: `open`, `token` (with `Authorization: Bearer`) or
    /// `closed` (reachable from other hosts with no admin token).
    pub changes: String,
    /// `/heavy`'s answers.
    pub requests: UiRequests,
    /// The pool, for `pool` and `auto`.
    pub pool: Option<UiPool>,
    /// The job queue, for `queue` and `auto`.
    pub queue: Option<UiQueue>,
}

/// `/heavy`'s answers since start ([`UiState::requests`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiRequests {
    /// 200s: work that ran and answered its result.
    pub answered: u64,
    /// 202s: work stored as a job.
    pub accepted: u64,
    /// 503s: refused (full, late, store out of reach).
    pub refused: u64,
    /// Being worked on now.
    pub in_flight: u64,
}

/// The pool now and its totals ([`UiState::pool`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UiPool {
    pub threads: usize,
    /// Threads running a task now.
    pub busy: usize,
    /// Requests waiting now.
    pub queued: usize,
    /// Tasks admitted since start (a request split across threads is several).
    pub admitted: u64,
    /// Requests refused since start: the queue at its cap, or predicted to miss their
    /// deadline.
    pub refused: u64,
    /// Tasks that ran to the end.
    pub completed: u64,
    /// Predicted wait of a request arriving now, in seconds.
    pub predicted_wait_s: f64,
}

/// The job queue now ([`UiState::queue`]). While the store is out of reach, `up` is false and
/// what it would say is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UiQueue {
    /// The store answered.
    pub up: bool,
    /// Jobs by state (finished ones until their retention ends).
    pub counts: Option<JobCounts>,
    /// Jobs done since the queue was created, by every worker (the store's latency
    /// histogram's count): its rate is the done rate.
    pub done_total: Option<u64>,
    /// Enqueue-to-done times of every job done ([`Spread`]).
    pub enqueue_to_done_ms: Option<Spread>,
    /// The queued jobs' predicted run time on one thread, summed; `null` until the gateway
    /// publishes it.
    pub backlog_seconds: Option<f64>,
}

/// The line a serving process prints on stdout once it listens, which the bench and the
/// tests read to find it: `offload {role}: listening on http://{addr} (strategy {strategy})`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    /// `serve` or `compute`.
    pub role: String,
    pub addr: SocketAddr,
    pub strategy: String,
}

impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "offload {}: listening on http://{} (strategy {})",
            self.role, self.addr, self.strategy
        )
    }
}

impl Listening {
    /// Reads a line printed by [`Listening`]'s `Display`; `None` for any other line.
    pub fn parse(line: &str) -> Option<Listening> {
        let rest = line.trim_end().strip_prefix("offload ")?;
        let (role, rest) = rest.split_once(": listening on http://")?;
        let (addr, rest) = rest.split_once(' ')?;
        let strategy = rest.strip_prefix("(strategy ")?.strip_suffix(')')?;
        Some(Listening {
            role: role.to_owned(),
            addr: addr.parse().ok()?,
            strategy: strategy.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// Serialises, parses back, and checks the JSON against the wire form written out by hand,
    /// so a renamed field fails here and not in another process.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(v: &T, wire: &str) {
        let text = serde_json::to_string(v).unwrap();
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, v);
        let expected: serde_json::Value = serde_json::from_str(wire).unwrap();
        assert_eq!(serde_json::to_value(v).unwrap(), expected, "{text}");
        let parsed: T = serde_json::from_str(wire).unwrap();
        assert_eq!(&parsed, v);
    }

    #[test]
    fn answers_round_trip() {
        round_trip(
            &HeavyAnswer {
                strategy: "pool".into(),
                work: "count".into(),
                n: 20_000_000,
                result: 20_000_000,
                wait_us: 156,
                run_us: 3131,
                predicted_us: None,
            },
            r#"{"n":20000000,"result":20000000,"run_us":3131,"strategy":"pool","wait_us":156,"work":"count"}"#,
        );
        round_trip(
            &HeavyAnswer {
                strategy: "pool".into(),
                work: "count".into(),
                n: 2_000_000,
                result: 2_000_000,
                wait_us: 3,
                run_us: 1200,
                predicted_us: Some(1100),
            },
            r#"{"n":2000000,"result":2000000,"run_us":1200,"strategy":"pool","wait_us":3,"work":"count","predicted_us":1100}"#,
        );
        round_trip(
            &Accepted {
                strategy: "queue".into(),
                job: offload_axum::AcceptedBody {
                    id: "0123456789abcdef0123456789abcdef".into(),
                    status: JobStatus::Queued,
                    status_url: "/jobs/0123456789abcdef0123456789abcdef".into(),
                    done_in_us: Some(31_000_000),
                    jobs_ahead: 9_876,
                    pool_finish_us: Some(2_500_000),
                },
                work: "count".into(),
                n: 5,
            },
            r#"{"strategy":"queue","id":"0123456789abcdef0123456789abcdef","status":"queued","status_url":"/jobs/0123456789abcdef0123456789abcdef","done_in_us":31000000,"jobs_ahead":9876,"pool_finish_us":2500000,"work":"count","n":5}"#,
        );
        round_trip(
            &JobResult {
                work: "primes".into(),
                n: 100,
                result: 25,
                run_us: 7,
            },
            r#"{"work":"primes","n":100,"result":25,"run_us":7}"#,
        );
        round_trip(
            &ErrorBody {
                error: ErrorDetail {
                    code: "invalid_n".into(),
                    message: "bad".into(),
                },
            },
            r#"{"error":{"code":"invalid_n","message":"bad"}}"#,
        );
    }

    #[test]
    fn a_202_of_another_server_reads_with_what_it_says() {
        // The Node seed's BullMQ server answers the job's id, status, URL and work only.
        let a: Accepted = serde_json::from_str(
            r#"{"id":"663a85f6333750c292da46a3c39def42","status":"queued","status_url":"/jobs/663a85f6333750c292da46a3c39def42","work":"count","n":2000000}"#,
        )
        .unwrap();
        assert_eq!(a.job.status_url, "/jobs/663a85f6333750c292da46a3c39def42");
        assert_eq!(
            (a.job.jobs_ahead, a.job.done_in_us, a.job.pool_finish_us),
            (0, None, None)
        );
        assert_eq!(
            (a.work.as_str(), a.n, a.strategy.as_str()),
            ("count", 2_000_000, "")
        );
    }

    #[test]
    fn jobs_and_health_round_trip() {
        round_trip(
            &Job {
                id: "ab".into(),
                status: JobStatus::Done,
                attempts: 1,
                max_attempts: 3,
                stalls: 2,
                max_stalls: 10,
                result: Some(
                    serde_json::json!({"work": "count", "n": 1, "result": 1, "run_us": 0}),
                ),
                error: None,
                enqueued_at: 10,
                started_at: Some(11),
                finished_at: Some(12),
                expires_at: None,
                priority: 0,
                label: Some("count:1".into()),
            },
            r#"{"id":"ab","status":"done","attempts":1,"max_attempts":3,"stalls":2,"max_stalls":10,
                "result":{"work":"count","n":1,"result":1,"run_us":0},"enqueued_at":10,"started_at":11,"finished_at":12,"label":"count:1"}"#,
        );
        round_trip(
            &JobsSummary {
                counts: JobCounts {
                    queued: 1,
                    running: 2,
                    done: 3,
                    failed: 4,
                    cancelled: 6,
                    expired: 7,
                    stalls: 5,
                },
                enqueue_to_done_ms: Spread::of(vec![3.0, 1.0, 2.0]),
                by_work: [("count:5".to_owned(), Spread::of(vec![1.0]).unwrap())].into(),
            },
            r#"{"counts":{"queued":1,"running":2,"done":3,"failed":4,"cancelled":6,"expired":7,"stalls":5},
                "enqueue_to_done_ms":{"count":3,"p50":2.0,"p90":3.0,"p99":3.0,"max":3.0},
                "by_work":{"count:5":{"count":1,"p50":1.0,"p90":1.0,"p99":1.0,"max":1.0}}}"#,
        );
        let mut compute = Health::ok("rayon");
        compute.threads = Some(2);
        compute.capacity = Some(4);
        compute.secs_per_unit = Some([("count".to_owned(), 7e-10)].into());
        round_trip(
            &compute,
            r#"{"status":"ok","strategy":"rayon","threads":2,"capacity":4,"secs_per_unit":{"count":7e-10}}"#,
        );
        round_trip(
            &Health::ok("inline"),
            r#"{"status":"ok","strategy":"inline"}"#,
        );
    }

    #[test]
    fn the_listening_line_round_trips() {
        let l = Listening {
            role: "serve".into(),
            addr: "127.0.0.1:3000".parse().unwrap(),
            strategy: "pool".into(),
        };
        let line = l.to_string();
        assert_eq!(
            line,
            "offload serve: listening on http://127.0.0.1:3000 (strategy pool)"
        );
        assert_eq!(Listening::parse(&line), Some(l));
        assert_eq!(Listening::parse("offload worker: running w1"), None);
    }
}
