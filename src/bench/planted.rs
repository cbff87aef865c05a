//! Planted results for the report's tests: real [`Results`] values built from chosen figures
//! the way a run builds them (the load reports recorded and built by the load generator's own
//! code), with no process behind them. Data, not a stand-in for any part.

use std::time::Duration;

use super::model::{
    AcceptPhase, AllCore, BacklogPoint, Bracket, Calibration, FloodResults, FloodRow, Machine,
    Measured, ProcessStats, QueueRun, Results, RowId, Sample, Settings, SingleThread, StrategyRun,
};
use super::run::flood;
use crate::api::Spread;
use crate::load::{Mode, Plan, Planted, Report, Stop, Target, planted};
use crate::strategy::{Helper, Name};

/// The planted load window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The planted runs' `-c`.
pub const CONNECTIONS: u32 = 100;

/// A closed-loop `/heavy` report over [`WINDOW`] with `p`'s outcomes.
pub fn heavy(p: &Planted) -> Report {
    let plan = Plan::new(
        Target::parse("http://127.0.0.1:9/heavy", false).expect("a literal address"),
        Mode::Closed {
            connections: CONNECTIONS,
            stop: Stop::Duration(WINDOW),
        },
    )
    .expect("a valid plan")
    .with_timeout(Duration::from_secs(30))
    .expect("a valid timeout");
    planted(&plan, p, WINDOW)
}

/// An open-loop report (the `/health` probe, or a kind of work of the mix) over [`WINDOW`].
pub fn open(p: &Planted) -> Report {
    let plan = Plan::new(
        Target::parse("http://127.0.0.1:9/health", false).expect("a literal address"),
        Mode::Open {
            rate: 20.0,
            connections: 4,
            stop: Stop::Duration(WINDOW),
        },
    )
    .expect("a valid plan")
    .with_timeout(Duration::from_secs(30))
    .expect("a valid timeout");
    planted(&plan, p, WINDOW)
}

/// `n` answers with `status`, each after `ms`.
pub fn answers(n: u64, status: u16, ms: f64) -> Vec<(u16, Duration)> {
    (0..n)
        .map(|_| (status, Duration::from_secs_f64(ms / 1e3)))
        .collect()
}

/// One all-core calibration reading `per_s`.
fn all_core(per_s: f64) -> AllCore {
    AllCore {
        threads: 2,
        window_s: 1.0,
        readings_per_s: vec![per_s],
        readings_runs: vec![per_s as u64],
        limit_per_s: per_s,
    }
}

/// One strategy's planted figures; [`Plant::run`] makes the run.
#[derive(Debug, Clone)]
pub struct Plant {
    pub strategy: RowId,
    pub per_s: f64,
    pub health_p99_ms: f64,
    /// The all-core calibrations before and after it, in req/s.
    pub limits: (f64, f64),
    pub heavy: Planted,
    pub queue: Option<QueueRun>,
}

impl Plant {
    /// `strategy` at `per_s`, its `/health` probe answered in `health_p99_ms` each, every
    /// `/heavy` request of the window answered 200 in 500 ms, a limit of 150 req/s that held.
    pub fn new(strategy: &str, per_s: f64, health_p99_ms: f64) -> Plant {
        Plant {
            strategy: RowId::parse(strategy).expect("a strategy or Node server"),
            per_s,
            health_p99_ms,
            limits: (150.0, 150.0),
            heavy: Planted {
                answers: answers((per_s * WINDOW.as_secs_f64()) as u64, 200, 500.0),
                ..Planted::default()
            },
            queue: None,
        }
    }

    pub fn limits(mut self, before: f64, after: f64) -> Plant {
        self.limits = (before, after);
        self
    }

    pub fn heavy(mut self, p: Planted) -> Plant {
        self.heavy = p;
        self
    }

    /// A queue that accepted `accepted_per_s` while its backlog had room, with `backlog`
    /// jobs waiting at the load's end and a p50 of `e2d_p50_ms` from enqueue to done; its
    /// backlog over time read every tenth of the way to the end of the drain (every job
    /// accepted by the load's end, finished at `per_s` throughout).
    pub fn queue(mut self, accepted_per_s: f64, backlog: u64, e2d_p50_ms: f64) -> Plant {
        let jobs = (self.per_s * WINDOW.as_secs_f64()) as u64;
        let (window, total) = (WINDOW.as_secs_f64(), jobs + backlog);
        let end = window + backlog as f64 / self.per_s.max(1e-9);
        let readings = (0..=10)
            .map(|i| {
                let t = end * f64::from(i) / 10.0;
                BacklogPoint {
                    t,
                    accepted: ((total as f64 * t / window) as u64).min(total),
                    finished: ((self.per_s * t) as u64).min(total),
                }
            })
            .collect();
        self.queue = Some(QueueRun {
            accept_phase: AcceptPhase {
                requests: 5000,
                accepted: 5000,
                refused: 0,
                seconds: 5000.0 / accepted_per_s,
                accepted_per_s,
            },
            accepted: jobs,
            accepted_per_s: self.per_s,
            done_at_stop: jobs,
            backlog_at_stop: backlog,
            drain_s: backlog as f64 / self.per_s.max(1e-9),
            drained: true,
            jobs_done: jobs + backlog,
            jobs_failed: 0,
            completed_per_s: self.per_s,
            jobs_finished_in_window: jobs,
            enqueue_to_done_ms: Some(Spread {
                count: jobs + backlog,
                p50: e2d_p50_ms,
                p90: e2d_p50_ms * 1.5,
                p99: e2d_p50_ms * 2.0,
                max: e2d_p50_ms * 2.0,
            }),
            load_end_s: WINDOW.as_secs_f64(),
            backlog: readings,
        });
        self
    }

    /// For `auto`: of its completed requests, `n` were jobs its worker finished in the
    /// load's window (the rest its pool's 200s). Call after [`Plant::queue`].
    pub fn jobs_in_window(mut self, n: u64) -> Plant {
        if let Some(q) = &mut self.queue {
            q.jobs_finished_in_window = n;
        }
        self
    }

    pub fn run(self) -> StrategyRun {
        let roles: &[&str] = match self.strategy.offload().and_then(Name::helper) {
            Some(Helper::Compute) => &["compute", "gateway"],
            Some(Helper::Worker) => &["worker", "gateway"],
            None => &["gateway"],
        };
        let processes: Vec<ProcessStats> = roles
            .iter()
            .map(|role| ProcessStats {
                role: (*role).to_owned(),
                peak_rss_bytes: 10 << 20,
                peak_threads: 5,
                cpu_s: 1.0,
                samples: Vec::new(),
            })
            .collect();
        let probe = open(&Planted {
            answers: answers(200, 200, self.health_p99_ms),
            ..Planted::default()
        });
        let measured = Measured {
            strategy: self.strategy,
            completed: (self.per_s * WINDOW.as_secs_f64()) as u64,
            completed_per_s: self.per_s,
            peak_rss_bytes: processes.iter().map(|p| p.peak_rss_bytes).sum(),
            peak_threads: processes.iter().map(|p| p.peak_threads).sum(),
            cpu_s: processes.iter().map(|p| p.cpu_s).sum(),
            heavy: heavy(&self.heavy),
            bystander: probe,
            processes,
            queue: self.queue,
            serving: None,
        };
        StrategyRun::new(
            measured,
            Bracket::new(all_core(self.limits.0), all_core(self.limits.1)),
        )
    }
}

/// The settings of a planted run.
fn settings(runs: &[StrategyRun]) -> Settings {
    Settings {
        strategies: runs.iter().map(|r| r.measured.strategy).collect(),
        connections: CONNECTIONS,
        duration: WINDOW,
        warmup: Duration::from_secs(2),
        work: "count:20000000".into(),
        work_query: "work=count&n=20000000".into(),
        queue_url: "sqlite:///tmp/planted/queue.db".into(),
        queue_name: crate::queue::QueueName::new("planted").expect("a valid name"),
        probe_rate: 20.0,
        timeout: Duration::from_secs(30),
        max_backlog: 10_000,
        drain_timeout: Duration::from_secs(300),
        max_sizes: crate::bench::MaxSizes::default(),
        quick: false,
        repeat: 1,
        mix: Vec::new(),
        mix_default: false,
        mix_rate: None,
        auto_wait: None,
        node: false,
        serving: crate::bench::model::Serving::Raised,
        flood: Vec::new(),
        flood_strategies: Vec::new(),
        honor_retry_after: false,
    }
}

/// A whole run of `plants`, in order, with its calibrations and reading.
pub fn results(plants: Vec<Plant>) -> Results {
    let runs: Vec<StrategyRun> = plants.into_iter().map(Plant::run).collect();
    let mut calibrations: Vec<AllCore> = runs
        .first()
        .map(|r| r.limit.before.clone())
        .into_iter()
        .collect();
    calibrations.extend(runs.iter().map(|r| r.limit.after.clone()));
    let machine = Machine {
        cpu_model: "planted".into(),
        cores: 2,
        memory_bytes: 4 << 30,
        kernel: "6.0".into(),
        os: "linux".into(),
    };
    let single = SingleThread {
        runs_ms: vec![13.0],
        median_ms: 13.0,
    };
    let mut r = Results::new(
        machine,
        settings(&runs),
        Calibration::new(2, single, calibrations),
        runs,
        Vec::new(),
        Duration::from_secs(120),
        Vec::new(),
    );
    r.reading = super::draw::reading::read(&r);
    r
}

/// One repeat of a planted flood row: `/heavy` answered 200 at `goodput_per_s` and 503 at
/// `refused_per_s` over the window (each refusal carrying a `Retry-After`), the `/health`
/// probe answered in `health_p99_ms`, the gateway using `gateway_cpu` of the machine's two
/// cores, a limit of 150 req/s that held.
#[derive(Debug, Clone, Copy)]
pub struct FloodPlant {
    pub goodput_per_s: f64,
    pub refused_per_s: f64,
    pub health_p99_ms: f64,
    pub gateway_cpu: f64,
}

impl FloodPlant {
    /// This repeat as `strategy`'s flood row at `connections`, its client honouring
    /// `Retry-After` when `honour`.
    pub fn row(self, strategy: &str, connections: u32, honour: bool) -> FloodRow {
        let window = WINDOW.as_secs_f64();
        let refused = (self.refused_per_s * window) as u64;
        let mut outcomes = answers((self.goodput_per_s * window) as u64, 200, 500.0);
        outcomes.extend(answers(refused, 503, 1.0));
        let mut run = Plant::new(strategy, self.goodput_per_s, self.health_p99_ms)
            .heavy(Planted {
                answers: outcomes,
                ..Planted::default()
            })
            .run();
        run.measured.heavy.connections = connections;
        run.measured.heavy.retry_after.honoured = honour;
        run.measured.heavy.retry_after.asked = refused;
        let at = |t: f64, cpu_s: f64| Sample {
            t,
            cpu_s,
            rss_bytes: 10 << 20,
            threads: 5,
        };
        if let Some(gateway) = run
            .measured
            .processes
            .iter_mut()
            .find(|p| p.role == "gateway")
        {
            gateway.samples = vec![at(0.0, 0.0), at(window, self.gateway_cpu * 2.0 * window)];
        }
        FloodRow::new(&run, honour, false, 2)
    }
}

/// A planted flood at `counts` over `repeat` rounds, each row given as its repeats in round
/// order, gathered as a run gathers them.
pub fn flood(counts: &[u32], repeat: u32, rows: Vec<Vec<FloodRow>>) -> FloodResults {
    let measured = rows
        .into_iter()
        .map(|repeats| (1..).zip(repeats).collect())
        .collect();
    flood::gather(counts, repeat, 2, measured, Vec::new())
}
