//! The bench's children from this same executable (`serve`, `compute`, `worker`) as typed
//! specs, and the one place a spec becomes a command line ([`ChildSpec::args`]), checked
//! against the real flags by a test, so a renamed flag fails a unit test and not a bench run.

use std::net::SocketAddr;
use std::time::Duration;

use crate::bench::model::MaxSizes;
use crate::queue::QueueName;
use crate::strategy::Name;

/// A queue: where it is and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// `sqlite://PATH`, `redis://...` or `postgres://...`.
    pub url: String,
    pub name: QueueName,
}

/// `offload serve`: the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSpec {
    pub strategy: Name,
    /// 0: any free port (the child prints the one it got).
    pub port: u16,
    /// A heavy request's deadline.
    pub timeout: Duration,
    pub sizes: MaxSizes,
    /// `remote`: the compute service.
    pub compute: Option<SocketAddr>,
    /// `queue`, `auto`: the queue jobs go to.
    pub queue: Option<QueueSpec>,
    /// Unfinished jobs the queue holds (none: the gateway's default).
    pub max_backlog: Option<u64>,
    /// `auto`'s wait budget (none: the gateway's default).
    pub auto_wait: Option<Duration>,
    /// Niceness of the pool's threads (none: the gateway's default, 0).
    pub nice: Option<i32>,
    /// What the runtime threads that answer requests get (none: the gateway's defaults).
    pub urgent: Option<crate::pool::priority::Urgent>,
}

/// `offload compute`: the service `remote` forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeSpec {
    /// 0: any free port (the child prints the one it got).
    pub port: u16,
    pub sizes: MaxSizes,
    /// Requests admitted at once (none: the service's default, 2 per thread).
    pub max_inflight: Option<usize>,
}

/// `offload worker`: runs the queue's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    pub queue: QueueSpec,
    pub sizes: MaxSizes,
    /// Niceness of the threads that run jobs (none: the worker's default, 0).
    pub nice: Option<i32>,
}

/// One child of the bench: this executable with a subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildSpec {
    Serve(ServeSpec),
    Compute(ComputeSpec),
    Worker(WorkerSpec),
}

impl ChildSpec {
    /// The child's role, as the bench's report and logs name it.
    pub fn role(&self) -> &'static str {
        match self {
            ChildSpec::Serve(_) => "gateway",
            ChildSpec::Compute(_) => "compute",
            ChildSpec::Worker(_) => "worker",
        }
    }

    /// Whether the child listens (and prints its address); a worker does not.
    pub fn listens(&self) -> bool {
        !matches!(self, ChildSpec::Worker(_))
    }

    /// The command line after the executable's name: the one place a spec becomes flags.
    pub fn args(&self) -> Vec<String> {
        let mut a = Args::default();
        match self {
            ChildSpec::Serve(s) => {
                a.push("serve");
                a.flag("--strategy", s.strategy.as_str());
                a.flag("--port", s.port);
                a.flag("--timeout", duration(s.timeout));
                a.sizes(s.sizes);
                if let Some(addr) = s.compute {
                    a.flag("--compute", format!("http://{addr}"));
                }
                if let Some(q) = &s.queue {
                    a.queue(q);
                }
                if let Some(n) = s.max_backlog {
                    a.flag("--max-backlog", n);
                }
                if let Some(w) = s.auto_wait {
                    a.flag("--auto-wait", duration(w));
                }
                if let Some(n) = s.nice {
                    a.flag("--nice", n);
                }
                if let Some(u) = s.urgent {
                    a.flag("--runtime-nice", u.nice);
                    a.flag("--runtime-slice", duration(u.slice.unwrap_or_default()));
                }
            }
            ChildSpec::Compute(c) => {
                a.push("compute");
                a.flag("--port", c.port);
                a.sizes(c.sizes);
                if let Some(n) = c.max_inflight {
                    a.flag("--max-inflight", n);
                }
            }
            ChildSpec::Worker(w) => {
                a.push("worker");
                a.queue(&w.queue);
                a.sizes(w.sizes);
                if let Some(n) = w.nice {
                    a.flag("--nice", n);
                }
            }
        }
        a.0
    }
}

/// A command line being written.
#[derive(Default)]
struct Args(Vec<String>);

impl Args {
    fn push(&mut self, word: &str) {
        self.0.push(word.to_owned());
    }

    fn flag(&mut self, name: &str, value: impl ToString) {
        self.0.extend([name.to_owned(), value.to_string()]);
    }

    fn sizes(&mut self, s: MaxSizes) {
        self.flag("--max-count", s.count);
        self.flag("--max-primes", s.primes);
        self.flag("--max-hashes", s.hashes);
    }

    fn queue(&mut self, q: &QueueSpec) {
        self.flag("--queue", &q.url);
        self.flag("--queue-name", q.name.as_str());
    }
}

/// A duration as the children's flags read it back exactly (`1s 500ms`), with no float in
/// between.
fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::work::{self, Kind};

    fn parse(spec: &ChildSpec) -> Command {
        let argv = std::iter::once("offload".to_owned()).chain(spec.args());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{:?} does not parse: {e}", spec.args()),
        }
    }

    fn sizes() -> MaxSizes {
        MaxSizes::default().raised(Kind::Count, 5_000_000_000)
    }

    fn queue() -> QueueSpec {
        QueueSpec {
            url: "sqlite:///tmp/bench/queue-x.db".into(),
            name: QueueName::new("offload-bench-1-queue").unwrap(),
        }
    }

    #[test]
    fn a_gateway_spec_reads_back_as_the_same_flags() {
        let spec = ServeSpec {
            strategy: Name::parse("auto").unwrap(),
            port: 0,
            timeout: Duration::from_millis(1500),
            sizes: sizes(),
            compute: Some(SocketAddr::from(([127, 0, 0, 1], 4321))),
            queue: Some(queue()),
            max_backlog: Some(500),
            auto_wait: Some(Duration::from_micros(250_500)),
            nice: Some(10),
            urgent: Some(crate::pool::priority::Urgent {
                slice: None,
                nice: 0,
            }),
        };
        let Command::Serve(a) = parse(&ChildSpec::Serve(spec.clone())) else {
            panic!("not serve");
        };
        assert_eq!(a.strategy, spec.strategy);
        assert_eq!(a.port, spec.port);
        assert_eq!(a.request.timeout, spec.timeout);
        assert_eq!(a.limits.to_limits().unwrap(), spec.sizes.limits());
        let compute: Vec<String> = a.compute.iter().map(ToString::to_string).collect();
        assert_eq!(compute, ["http://127.0.0.1:4321/"]);
        assert_eq!(a.queue.url, queue().url);
        assert_eq!(a.queue.queue_name, queue().name);
        assert_eq!(Some(a.queue.max_backlog), spec.max_backlog);
        assert_eq!(Some(a.auto_wait), spec.auto_wait);
        assert_eq!(Some(a.sched.nice), spec.nice);
        assert_eq!(Some(a.sched.urgent()), spec.urgent);
        // What the spec leaves out stays the gateway's default.
        let plain = ServeSpec {
            compute: None,
            queue: None,
            max_backlog: None,
            auto_wait: None,
            nice: None,
            urgent: None,
            ..spec
        };
        let Command::Serve(a) = parse(&ChildSpec::Serve(plain)) else {
            panic!("not serve");
        };
        assert_eq!(a.queue.max_backlog, crate::queue::DEFAULT_MAX_BACKLOG);
        assert_eq!(a.sched.nice, 0);
        assert_eq!(a.sched.urgent(), crate::pool::priority::Urgent::DEFAULT);
    }

    #[test]
    fn a_compute_spec_reads_back_as_the_same_flags() {
        let spec = ComputeSpec {
            port: 0,
            sizes: MaxSizes::default().raised(Kind::Hash, 1000),
            max_inflight: Some(64),
        };
        let Command::Compute(a) = parse(&ChildSpec::Compute(spec.clone())) else {
            panic!("not compute");
        };
        assert_eq!(a.port, spec.port);
        assert_eq!(a.limits.to_limits().unwrap(), spec.sizes.limits());
        assert_eq!(a.max_inflight, spec.max_inflight);
        let spec = ComputeSpec {
            max_inflight: None,
            ..spec
        };
        let Command::Compute(a) = parse(&ChildSpec::Compute(spec)) else {
            panic!("not compute");
        };
        assert_eq!(a.max_inflight, None);
    }

    #[test]
    fn a_worker_spec_reads_back_as_the_same_flags() {
        let spec = WorkerSpec {
            queue: queue(),
            sizes: MaxSizes::default().raised(Kind::Primes, 2_000_000_000),
            nice: Some(19),
        };
        let Command::Worker(a) = parse(&ChildSpec::Worker(spec.clone())) else {
            panic!("not worker");
        };
        assert_eq!(a.queue.url, spec.queue.url);
        assert_eq!(a.queue.queue_name, spec.queue.name);
        assert_eq!(a.limits.to_limits().unwrap(), spec.sizes.limits());
        assert_eq!(Some(a.nice), spec.nice);
    }

    #[test]
    fn roles_and_listening() {
        let w = ChildSpec::Worker(WorkerSpec {
            queue: queue(),
            sizes: MaxSizes::default(),
            nice: None,
        });
        let c = ChildSpec::Compute(ComputeSpec {
            port: 0,
            sizes: MaxSizes::default(),
            max_inflight: None,
        });
        assert_eq!((w.role(), w.listens()), ("worker", false));
        assert_eq!((c.role(), c.listens()), ("compute", true));
    }

    #[test]
    fn sizes_keep_the_largest_bound_of_each_kind() {
        let d = MaxSizes::default();
        let a = d
            .raised(Kind::Count, 5)
            .raised(Kind::Count, work::DEFAULT_MAX_COUNT + 9);
        let b = d
            .raised(Kind::Count, work::DEFAULT_MAX_COUNT + 7)
            .raised(Kind::Primes, work::DEFAULT_MAX_PRIMES + 3);
        assert_eq!(
            a.max(b),
            MaxSizes {
                count: work::DEFAULT_MAX_COUNT + 9,
                primes: work::DEFAULT_MAX_PRIMES + 3,
                hashes: work::DEFAULT_MAX_HASHES,
            }
        );
        assert_eq!(d.raised(Kind::Fault, u64::MAX), d);
    }
}
