//! Past the limit: closed loops bigger than the machine, as the seed's load is. A full queue
//! holds requests until there is room (no 503, jobs finish at the drain rate), `auto` sends
//! what its full queue cannot take to the pool, and refusals that remain are paced so that a
//! client cannot spin on them.

use std::time::{Duration, Instant};

use offload::queue::{JobQueue, NewJob, QueueOptions, open};
use serde_json::Value;

use crate::support::{BusyLoop, Proc, count_n_for, exclusive, get, metric, two_cpus_and_taskset};

/// Runs `offload load --json <args> <url>` to its end and returns its report.
fn load(url: String, args: &[&str]) -> impl Future<Output = Value> + Send + 'static {
    load_on(None, url, args)
}

/// [`load`], pinned to `cpu` when one is given.
fn load_on(
    cpu: Option<usize>,
    url: String,
    args: &[&str],
) -> impl Future<Output = Value> + Send + 'static {
    let mut cmd = match cpu {
        Some(c) => {
            let mut cmd = std::process::Command::new("taskset");
            cmd.args(["-c", &c.to_string(), env!("CARGO_BIN_EXE_offload")]);
            cmd
        }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_offload")),
    };
    cmd.arg("load")
        .arg("--json")
        .arg("--no-progress")
        .args(args)
        .arg(&url);
    async move {
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("run offload load");
        assert!(
            out.status.success(),
            "offload load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("load's JSON report")
    }
}

/// Answers of one status in a load report.
fn status(report: &Value, code: &str) -> u64 {
    report["requests"]["by_status"][code].as_u64().unwrap_or(0)
}

/// The gateway's job counts (`GET /jobs`).
async fn counts(gateway: std::net::SocketAddr) -> Value {
    let r = get(gateway, "/jobs").await;
    assert_eq!(r.status, 200, "/jobs: {:?}", r.body);
    r.json()["counts"].clone()
}

async fn done(gateway: std::net::SocketAddr) -> u64 {
    counts(gateway).await["done"].as_u64().unwrap()
}

/// CPU time (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: a rate ratio on two cores, run alone by .ci/run (cargo test --test it -- --ignored --test-threads 1)"]
async fn a_full_queue_paces_a_closed_loop_to_the_drain_rate() {
    let test = "a_full_queue_paces_a_closed_loop_to_the_drain_rate";
    let _x = exclusive().await;
    // Jobs long enough that the gateway's and the load generator's own work per request (a
    // debug build here) stays small beside the work.
    let n = count_n_for(Duration::from_millis(20));
    let job = NewJob::of(&offload::queue::builtin::Count { n }).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The rate at which a worker drains a stored backlog with nothing else running, before
    // and after the load, so a drift of the machine's speed shows on both sides.
    let drain_alone = async |file: &str| -> f64 {
        let url = format!("sqlite://{}", dir.path().join(file).display());
        let q = open(&url, QueueOptions::default()).await.unwrap();
        let stored = 600;
        for _ in 0..stored {
            q.enqueue(job.clone()).await.unwrap();
        }
        let gateway = Proc::start(&["serve", "--strategy", "queue", "--queue", &url]);
        let _worker = Proc::start_worker(&["--queue", &url]);
        let mut marks = Vec::new();
        let end = Instant::now() + Duration::from_secs(120);
        for goal in [stored / 10, stored * 9 / 10] {
            while done(gateway.addr).await < goal {
                assert!(
                    Instant::now() < end,
                    "{test}: the stored backlog did not drain"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            marks.push((Instant::now(), done(gateway.addr).await));
        }
        (marks[1].1 - marks[0].1) as f64 / (marks[1].0 - marks[0].0).as_secs_f64()
    };
    let before = drain_alone("before.db").await;

    // A closed loop of 200 against a backlog capped at 50.
    let url = format!("sqlite://{}", dir.path().join("flood.db").display());
    let gateway = Proc::start(&[
        "serve",
        "--strategy",
        "queue",
        "--queue",
        &url,
        "--max-backlog",
        "50",
    ]);
    let worker = Proc::start_worker(&["--queue", &url]);
    let target = format!("http://{}/heavy?work=count&n={n}", gateway.addr);
    let run = tokio::spawn(load(
        target,
        &["-c", "200", "-d", "8", "--warmup", "2", "-t", "30"],
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (t1, d1) = (Instant::now(), done(gateway.addr).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (t2, d2) = (Instant::now(), done(gateway.addr).await);
    let report = run.await.unwrap();
    let during = (d2 - d1) as f64 / (t2 - t1).as_secs_f64();
    let waited = metric(gateway.addr, "offload_queue_line_total{outcome=\"stored\"}").await;
    drop((worker, gateway));
    let after = drain_alone("after.db").await;
    let alone_rate = (before + after) / 2.0;
    let r = &report["requests"];
    eprintln!(
        "{test}: drain alone {before:.0} and {after:.0} jobs/s; during the load {during:.0} \
         jobs/s ({:.2}x their mean); statuses {}; errors {}, timeouts {}; {waited} requests waited for room",
        during / alone_rate,
        r["by_status"],
        r["errors"],
        r["timeouts"]
    );
    assert!(status(&report, "202") > 0, "{test}: {report}");
    assert_eq!(
        r["completed"].as_u64(),
        Some(status(&report, "202")),
        "{test}: every answer is a 202: {}",
        r["by_status"]
    );
    assert_eq!(r["timeouts"], 0, "{test}");
    assert_eq!(r["errors"], 0, "{test}");
    assert!(waited > 0.0, "{test}: the backlog never filled");
    // 0.83-0.98 in the runs of 2026-12-08 (a debug gateway and load generator share the two
    // cores with the worker); before the line, the worker kept about two thirds of its rate.
    assert!(
        during >= 0.8 * alone_rate,
        "{test}: jobs finished at {during:.0}/s during the load, under 0.8 of the {alone_rate:.0}/s \
         a worker drains a stored backlog"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_at_a_thousand_connections_never_refuses_and_does_what_the_pool_does() {
    let test = "auto_at_a_thousand_connections_never_refuses_and_does_what_the_pool_does";
    let _x = exclusive().await;
    let n = count_n_for(Duration::from_millis(5));
    let args = ["-c", "1000", "-d", "5", "-t", "20"];

    // `pool` alone, before and after `auto`, so a drift of the machine's speed shows in both.
    let pool_alone = async || {
        let pool = Proc::start(&["serve", "--strategy", "pool"]);
        let url = format!("http://{}/heavy?work=count&n={n}", pool.addr);
        status(&load(url, &args).await, "200")
    };
    let before = pool_alone().await;

    let dir = tempfile::tempdir().unwrap();
    let queue = format!("sqlite://{}", dir.path().join("q.db").display());
    let auto = Proc::start(&[
        "serve",
        "--strategy",
        "auto",
        "--queue",
        &queue,
        "--max-backlog",
        "100",
    ]);
    let worker = Proc::start_worker(&["--queue", &queue, "--nice", "19"]);
    let url = format!("http://{}/heavy?work=count&n={n}", auto.addr);
    let report = load(url, &args).await;
    // The jobs it stored finish after the load; each is a result its client will read.
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let c = counts(auto.addr).await;
        if c["queued"] == 0 && c["running"] == 0 {
            break;
        }
        assert!(Instant::now() < end, "{test}: the queue did not drain: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let jobs = done(auto.addr).await.min(status(&report, "202"));
    let results = status(&report, "200") + jobs;
    let over = metric(auto.addr, "offload_auto_over_budget_total").await;
    drop((worker, auto));
    let after = pool_alone().await;
    let alone = (before + after) / 2;
    eprintln!(
        "{test}: pool alone {before} and {after} x 200; auto {} x 200 + {jobs} jobs done = \
         {results} ({}); {over} past the budget because the queue was full",
        status(&report, "200"),
        report["requests"]["by_status"],
    );
    assert_eq!(status(&report, "503"), 0, "{test}: {}", report["requests"]);
    assert!(over > 0.0, "{test}: the backlog never filled");
    // Equal work on both sides; two runs of the same set-up on this kind of VM differ by up to
    // a tenth (1506-1788 results for auto, 1661-1764 for pool alone, in six runs), so the
    // check allows that much rather than flip on the machine's noise.
    assert!(
        results as f64 >= 0.9 * alone as f64,
        "{test}: auto gave {results} results, pool alone {alone} (mean of two runs)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_cannot_spin_on_refusals() {
    let test = "a_closed_loop_cannot_spin_on_refusals";
    let _x = exclusive().await;
    let r = refusals_to_a_closed_loop(test).await;
    assert!(
        r.per_conn < 10.0,
        "{test}: {:.1} refusals/s per connection",
        r.per_conn
    );
}

/// The timing group's half of [`a_closed_loop_cannot_spin_on_refusals`]: what pacing saves in
/// CPU. A loop that spins on refusals makes a gateway answer tens of thousands of 503s a second
/// (19,000/s seen from the pool example before it paced), half of this 2-core machine or more;
/// paced to about one a second per connection, answering 200 connections takes a few percent.
/// The bound is ten percent: room for a busy machine, five times under a spinning loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: a CPU share, run alone by .ci/run (cargo test --test it -- --ignored --test-threads 1)"]
async fn refusing_a_closed_loop_takes_little_cpu() {
    let test = "refusing_a_closed_loop_takes_little_cpu";
    let _x = exclusive().await;
    let r = refusals_to_a_closed_loop(test).await;
    assert!(
        r.share < 0.10,
        "{test}: refusing took {:.1}% of the CPU",
        r.share * 100.0
    );
}

/// What 200 connections in a closed loop that never wait get from `pool` when nothing can
/// finish in their wait: refusals per second per connection, and the gateway's share of the
/// machine's CPU over 4 s of the run.
struct Refusals {
    per_conn: f64,
    share: f64,
}

async fn refusals_to_a_closed_loop(test: &str) -> Refusals {
    // `Prefer: wait=0` on `pool`: no work can finish in no time, so every request is refused
    // without running anything.
    let gateway = Proc::start(&["serve", "--strategy", "pool"]);
    let url = format!("http://{}/heavy", gateway.addr);
    let (c, secs) = (200u32, 5.0);
    let run = tokio::spawn(load(
        url,
        &[
            "-c",
            &c.to_string(),
            "-d",
            "5",
            "--warmup",
            "2",
            "-H",
            "prefer: wait=0",
        ],
    ));
    // The gateway's CPU over 4 s of the measured run, as a share of the machine.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let cpu0 = cpu_seconds(gateway.pid());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let cpu = cpu_seconds(gateway.pid()) - cpu0;
    let report = run.await.unwrap();
    let refused = status(&report, "503");
    let per_conn = refused as f64 / secs / f64::from(c);
    let share = cpu / (4.0 * cores());
    eprintln!(
        "{test}: {refused} refusals in {secs} s from {c} connections: {per_conn:.2}/s per \
         connection; the gateway used {cpu:.3} CPU-s in 4 s, {:.2}% of the machine",
        share * 100.0
    );
    let r =
        crate::support::request(gateway.addr, "GET", "/heavy", &[("prefer", "wait=0")], "").await;
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"), "{:?}", r.headers);
    assert_eq!(
        report["requests"]["completed"].as_u64(),
        Some(refused),
        "{test}: every answer is a 503: {}",
        report["requests"]
    );
    assert!(refused > 0, "{test}");
    Refusals { per_conn, share }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_a_fair_share_beside_a_busy_neighbour() {
    let test = "the_pool_keeps_a_fair_share_beside_a_busy_neighbour";
    let _x = exclusive().await;
    if !two_cpus_and_taskset(test) {
        return;
    }
    // One pool thread and the gateway on CPU 1, with its default scheduling; the load on CPU 0.
    let gateway = Proc::start(&["serve", "--strategy", "pool", "--threads", "1"]);
    let pin = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &gateway.pid().to_string()])
        .output()
        .unwrap();
    assert!(pin.status.success(), "{pin:?}");
    let n = count_n_for(Duration::from_millis(20));
    let url = format!("http://{}/heavy?work=count&n={n}", gateway.addr);
    let args = ["-c", "2", "-d", "4", "--warmup", "1"];
    let ok = |r: &Value| status(r, "200") as f64 / 4.0;
    let alone = ok(&load_on(Some(0), url.clone(), &args).await);
    let busy = BusyLoop::on(1);
    let beside = ok(&load_on(Some(0), url, &args).await);
    drop(busy);
    let share = beside / alone;
    eprintln!(
        "{test}: alone on CPU 1 {alone:.1} req/s; beside a busy loop {beside:.1} req/s: \
         {:.0}% of what it had",
        share * 100.0
    );
    assert!(alone > 0.0, "{test}");
    assert!(
        share >= 1.0 / 3.0,
        "{test}: the pool kept {:.0}% of its core beside a busy loop",
        share * 100.0
    );
}
