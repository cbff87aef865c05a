//! The worker's metrics ([`WorkerMetrics`]) against what it did: every job claimed, done,
//! failed, timed out and cancelled counted exactly, by job type, with the run times, the
//! busy and stuck threads, the batches and the lease renewals.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

use super::{Store, TestQueue, options, spin_handlers};
use crate::worker::{self, WorkerConfig};
use crate::{Cancel, Job, JobContext, JobError, JobQueue, JobStatus, NewJob, WorkerMetrics};

#[derive(Serialize, Deserialize)]
struct Add(u64, u64);
impl Job for Add {
    const NAME: &'static str = "add";
    type Output = u64;
}

/// Fails at once, for good.
#[derive(Serialize, Deserialize)]
struct Bad;
impl Job for Bad {
    const NAME: &'static str = "bad";
    type Output = ();
}

/// Runs past its time limit, ignoring its stop check for `ms`: its thread is stuck meanwhile.
#[derive(Serialize, Deserialize)]
struct Stubborn {
    ms: u64,
}
impl Job for Stubborn {
    const NAME: &'static str = "stubborn";
    type Output = ();
}

/// The registry's samples ([`samples`]).
pub(crate) fn scrape(registry: &Registry) -> HashMap<String, f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    samples(&text)
}

/// The samples of a Prometheus text, by name and labels as the text writes them
/// (`offload_worker_jobs_ended_total{job="add",outcome="done"}`); comments and lines whose
/// value is not a number are left out.
pub fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// A worker with metrics runs 20 jobs that succeed, 5 that fail for good, one over its time
/// limit that ignores its stop check (its thread counts as stuck until it returns), and one
/// that is cancelled while it runs. Every counter matches, by type.
pub async fn worker_metrics_count_every_job<S: Store>(store: S, test: &str) {
    let Some(h) = TestQueue::open(store, test, options()).await else {
        return;
    };
    let (spin, spinning, _stopped) = spin_handlers();
    let stubborn_left = Arc::new(AtomicBool::new(false));
    let handlers = spin
        .on(|Add(a, b): Add| Ok(a + b))
        .on(|_: Bad| Err(JobError::fatal("bad on purpose")))
        .on_with({
            let left = Arc::clone(&stubborn_left);
            move |job: Stubborn, _: &JobContext| {
                std::thread::sleep(Duration::from_millis(job.ms));
                left.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .timeout(Duration::from_millis(50));
    let metrics = WorkerMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let q = &h.queue;
    for i in 0..20 {
        q.enqueue(NewJob::of(&Add(i, 1)).unwrap()).await.unwrap();
    }
    for _ in 0..5 {
        q.enqueue(NewJob::of(&Bad).unwrap()).await.unwrap();
    }
    let stubborn = q
        .enqueue(NewJob::of(&Stubborn { ms: 1_500 }).unwrap().max_attempts(1))
        .await
        .unwrap();
    let spun = q.enqueue(NewJob::of(&super::Spin).unwrap()).await.unwrap();
    let config = WorkerConfig {
        concurrency: 3,
        heartbeat: Duration::from_millis(100),
        block: Duration::from_millis(100),
        ..WorkerConfig::default()
    }
    .with_metrics(metrics.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker::run(
        h.handle().await,
        handlers.clone().executor(),
        config,
        async move {
            let _ = stop_rx.await;
        },
    ));

    // While it runs: three threads; the stubborn run stuck past its limit.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut saw_stuck, mut threads) = (false, 0.0_f64);
    while !(saw_stuck && spinning.load(Ordering::SeqCst)) {
        assert!(
            Instant::now() < deadline,
            "the stubborn run or the spin never showed"
        );
        let now = scrape(&registry);
        threads = threads.max(now["offload_worker_threads"]);
        saw_stuck |= now["offload_worker_threads_stuck"] == 1.0;
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(threads, 3.0);
    assert!(
        !stubborn_left.load(Ordering::SeqCst),
        "counted stuck while it ran"
    );
    assert!(matches!(
        q.cancel(&spun).await.unwrap(),
        Cancel::Cancelled { .. }
    ));
    loop {
        let c = q.counts().await.unwrap();
        if (c.done, c.failed, c.cancelled) == (20, 6, 1)
            && stubborn_left.load(Ordering::SeqCst)
            && scrape(&registry)["offload_worker_jobs_in_hand"] == 0.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "not all ended: {c:?}");
        sleep(Duration::from_millis(20)).await;
    }
    // The stuck run returned, and the cancelled one stopped: no thread is stuck or busy (their
    // guards drop as the handlers return).
    let back = Instant::now() + Duration::from_secs(5);
    loop {
        let now = scrape(&registry);
        if now["offload_worker_threads_stuck"] == 0.0 && now["offload_worker_threads_busy"] == 0.0 {
            break;
        }
        assert!(
            Instant::now() < back,
            "the threads never fell idle: {now:?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    let report = worker.await.unwrap();
    assert_eq!(
        (
            report.done,
            report.failed,
            report.cancelled,
            report.timed_out,
            report.lost
        ),
        (20, 6, 1, 1, 0),
        "{report:?}"
    );
    assert_eq!(
        q.get(&stubborn).await.unwrap().unwrap().status,
        JobStatus::Failed
    );

    let m = scrape(&registry);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in {m:#?}"))
    };
    let ended = |job: &str, outcome: &str| {
        get(&format!(
            "offload_worker_jobs_ended_total{{job=\"{job}\",outcome=\"{outcome}\"}}"
        ))
    };
    for (job, n) in [
        ("add", 20.0),
        ("bad", 5.0),
        ("stubborn", 1.0),
        ("spin", 1.0),
    ] {
        assert_eq!(
            get(&format!(
                "offload_worker_jobs_claimed_total{{job=\"{job}\"}}"
            )),
            n,
            "{job}"
        );
        assert_eq!(
            get(&format!(
                "offload_worker_run_seconds_count{{job=\"{job}\"}}"
            )),
            n,
            "{job}"
        );
    }
    assert_eq!(ended("add", "done"), 20.0);
    assert_eq!(ended("bad", "failed"), 5.0);
    assert_eq!(ended("stubborn", "failed"), 1.0);
    assert_eq!(ended("spin", "cancelled"), 1.0);
    for (job, outcome) in [
        ("add", "failed"),
        ("add", "lost"),
        ("spin", "lost"),
        ("bad", "retried"),
    ] {
        assert_eq!(ended(job, outcome), 0.0, "{job} {outcome}");
    }
    assert_eq!(
        get("offload_worker_runs_timed_out_total{job=\"stubborn\"}"),
        1.0
    );
    assert_eq!(get("offload_worker_runs_timed_out_total{job=\"add\"}"), 0.0);
    // The stubborn run's time is its whole time on the thread, past its limit.
    assert!(get("offload_worker_run_seconds_sum{job=\"stubborn\"}") >= 1.5);
    for gauge in ["threads", "threads_busy", "threads_stuck", "jobs_in_hand"] {
        assert_eq!(
            get(&format!("offload_worker_{gauge}")),
            0.0,
            "{gauge} after the stop"
        );
    }
    assert_eq!(
        get("offload_worker_claim_batch_size_count"),
        report.claims as f64
    );
    assert_eq!(
        get("offload_worker_claim_batch_size_sum"),
        27.0,
        "every job claimed once"
    );
    assert_eq!(
        get("offload_worker_complete_batch_size_count"),
        report.completions as f64
    );
    assert_eq!(
        get("offload_worker_complete_batch_size_sum"),
        26.0,
        "every outcome stored once; the cancelled run's is not"
    );
    assert!(get("offload_worker_lease_renewals_total{result=\"renewed\"}") >= 1.0);
    assert_eq!(
        get("offload_worker_lease_renewals_total{result=\"refused\"}"),
        1.0
    );
    for op in [
        "claim",
        "complete",
        "heartbeat",
        "release",
        "get",
        "reap",
        "prune",
    ] {
        assert_eq!(
            get(&format!("offload_worker_store_errors_total{{op=\"{op}\"}}")),
            0.0,
            "{op}"
        );
    }
}
