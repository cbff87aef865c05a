//! `offload compute` and `serve --strategy remote`: same results, failures answered fast,
//! a killed backend avoided and taken back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::gateway::{HASH_FLAGS, bad_cases, expected_hash, wait_for};
use crate::support::{Proc, count_n_for, crowd, get, metric, post_json, request};

fn compute(extra: &[&str]) -> Proc {
    let mut args = vec!["compute"];
    args.extend_from_slice(&HASH_FLAGS);
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// `POST /compute` of `work` with `n` straight to a compute service.
async fn post_compute(addr: std::net::SocketAddr, work: &str, n: u64) -> crate::support::Resp {
    request(
        addr,
        "POST",
        "/compute",
        &[("content-type", "application/json")],
        format!(r#"{{"work":"{work}","n":{n}}}"#),
    )
    .await
}

/// Sends `count n` straight to compute service `c` (filling its place behind any gateway's
/// back) and returns once it is running there; the handle gives its answer.
async fn occupy(c: &Proc, n: u64) -> tokio::task::JoinHandle<crate::support::Resp> {
    let addr = c.addr;
    let running = tokio::spawn(async move { post_compute(addr, "count", n).await });
    wait_for(c.addr, "offload_compute_in_flight", 1.0).await;
    running
}

fn gateway(backends: &[&Proc], extra: &[&str]) -> Proc {
    let urls: Vec<String> = backends
        .iter()
        .map(|b| format!("http://{}", b.addr))
        .collect();
    let urls = urls.join(",");
    let mut args = vec![
        "serve",
        "--strategy",
        "remote",
        "--compute",
        &urls,
        "--health-interval",
        "200ms",
    ];
    args.extend_from_slice(&HASH_FLAGS);
    args.extend_from_slice(extra);
    Proc::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_results_equal_the_in_process_ones() {
    let c = compute(&[]);
    let g = gateway(&[&c], &[]);
    let hash5 = expected_hash(5);
    for (work, n, want) in [
        ("count", 1_000_003, 1_000_003),
        ("primes", 2_000_000, 148_933),
        ("hash", 5, hash5),
    ] {
        for r in [
            get(g.addr, &format!("/heavy?work={work}&n={n}")).await,
            post_json(g.addr, &format!(r#"{{"work":"{work}","n":{n}}}"#)).await,
        ] {
            assert_eq!(r.status, 200, "{work}: {:?}", r.body);
            assert_eq!(
                (r.json()["result"].as_u64(), r.json()["strategy"].as_str()),
                (Some(want), Some("remote")),
                "{work}"
            );
        }
        let direct = post_compute(c.addr, work, n).await;
        assert_eq!(
            direct.json()["result"].as_u64(),
            Some(want),
            "compute {work}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_rejects_bad_input_like_the_gateway() {
    let c = compute(&[]);
    for (method, path, headers, body, status, code) in bad_cases() {
        if method != "POST" || path != "/heavy" {
            continue;
        }
        let r = request(c.addr, method, "/compute", &headers, body).await;
        assert_eq!((r.status, r.code().as_str()), (status, code));
    }
    assert_eq!(
        request(c.addr, "GET", "/compute", &[], "").await.status,
        405
    );
    assert_eq!(metric(c.addr, "offload_work_handed_off_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_answers_502_quickly_and_the_gateway_stays_healthy() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let urls = format!("http://{free}");
    let g = Proc::start(&["serve", "--strategy", "remote", "--compute", &urls]);
    for _ in 0..3 {
        let t = Instant::now();
        let r = get(g.addr, "/heavy").await;
        assert_eq!((r.status, r.code().as_str()), (502, "bad_gateway"));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "502 took {:?}",
            t.elapsed()
        );
    }
    assert_eq!(get(g.addr, "/health").await.status, 200);
}

/// At the deadline the gateway answers 504 and drops the connection; the compute service
/// sees it go and stops the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_gives_504_and_frees_the_compute_work() {
    let _serial = crate::support::exclusive().await;
    let n = count_n_for(Duration::from_secs(3));
    let c = compute(&["--threads", "1", "--max-inflight", "1"]);
    let g = gateway(&[&c], &["--timeout", "500ms"]);
    let t = Instant::now();
    let long = get(g.addr, &format!("/heavy?n={n}")).await;
    assert_eq!(
        (long.status, long.code().as_str()),
        (504, "deadline_exceeded")
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "504 came after {:?}",
        t.elapsed()
    );
    let mut freed = false;
    for _ in 0..100 {
        if metric(c.addr, "offload_compute_in_flight").await == 0.0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        freed && t.elapsed() < Duration::from_secs(2),
        "the abandoned work kept running"
    );
}

/// A compute service that admits 4 at once, 200 clients: the gateway never sends it more
/// than it can take (it never answers 503), the rest wait in the gateway, and every request
/// gets its exact result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_queues_within_the_backend_capacity() {
    let _serial = crate::support::exclusive().await;
    let n = count_n_for(Duration::from_millis(1));
    let c = compute(&["--max-inflight", "4"]);
    let g = gateway(&[&c], &[]);
    wait_for(
        g.addr,
        &format!("offload_backend_capacity{{backend=\"http://{}\"}}", c.addr),
        4.0,
    )
    .await;
    let seen = crowd(g.addr, 200, 3, move |i| n + i as u64).await;
    assert_eq!(seen.statuses, [(200, 600)].into());
    assert_eq!(seen.wrong, Vec::<String>::new());
    let overloaded = format!(
        "offload_backend_requests_total{{backend=\"http://{}\",outcome=\"overloaded\"}}",
        c.addr
    );
    assert_eq!(metric(g.addr, &overloaded).await, 0.0);
}

/// With a 0.8 s request on the backend's one place, a second one cannot finish within a 1 s
/// deadline (`Prefer: wait=1`): refused at once, with Retry-After, and never sent to the
/// backend. The others have the gateway's 10 s, so that they get their 200 on a busy machine
/// too (with 1.3 s for all, a CI run under load saw a 0.8 s request miss it: 504).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_at_once_what_cannot_meet_its_deadline() {
    let _serial = crate::support::exclusive().await;
    let long = count_n_for(Duration::from_millis(800));
    let c = compute(&["--threads", "1", "--max-inflight", "1"]);
    let g = gateway(&[&c], &["--timeout", "10s"]);
    let addr = g.addr;
    assert_eq!(get(addr, &format!("/heavy?n={long}")).await.status, 200);
    let running = tokio::spawn(async move { get(addr, &format!("/heavy?n={long}")).await });
    wait_for(c.addr, "offload_compute_in_flight", 1.0).await;
    let handed = metric(c.addr, "offload_work_handed_off_total").await;
    let t = Instant::now();
    let path = format!("/heavy?n={long}");
    let r = request(addr, "GET", &path, &[("prefer", "wait=1")], "").await;
    let took = t.elapsed();
    assert_eq!((r.status, r.code().as_str()), (503, "would_miss_deadline"));
    assert!(took < Duration::from_millis(200), "refusal took {took:?}");
    assert!(r.headers.contains_key("retry-after"));
    let done = running.await.unwrap();
    assert_eq!(
        (done.status, done.json()["result"].as_u64()),
        (200, Some(long))
    );
    assert_eq!(
        metric(c.addr, "offload_work_handed_off_total").await,
        handed,
        "the refused request reached the backend"
    );
}

/// Another client fills the backend behind the gateway's back: its 503 is retried until
/// the backend has room, and the request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_503_is_retried_while_the_deadline_allows() {
    let _serial = crate::support::exclusive().await;
    let n = count_n_for(Duration::from_millis(600));
    let c = compute(&["--threads", "1", "--max-inflight", "1"]);
    let g = gateway(&[&c], &["--timeout", "10s"]);
    let direct = occupy(&c, n).await;
    let r = get(g.addr, "/heavy?n=1234").await;
    assert_eq!((r.status, r.json()["result"].as_u64()), (200, Some(1234)));
    assert_eq!(direct.await.unwrap().status, 200);
    assert!(
        metric(
            g.addr,
            r#"offload_remote_requests_total{outcome="retried"}"#
        )
        .await
            >= 1.0
    );
}

/// Two compute services under steady load; one is killed, then started again on its port.
/// The requests in flight on it when it died are sent to the other: none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_avoided_and_taken_back() {
    let _serial = crate::support::exclusive().await;
    let a = compute(&[]);
    let b = compute(&[]);
    let b_port = b.addr.port().to_string();
    let b_label = format!(
        "offload_backend_requests_total{{backend=\"http://{}\",outcome=\"ok\"}}",
        b.addr
    );
    let b_up = format!("offload_backend_up{{backend=\"http://{}\"}}", b.addr);
    let g = gateway(&[&a, &b], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    const CLIENTS: usize = 4;
    for _ in 0..CLIENTS {
        let (stop, addr) = (stop.clone(), g.addr);
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let r = get(addr, "/heavy?n=2000000").await;
                match r.status {
                    200 => ok += 1,
                    502 => failed += 1,
                    s => panic!("unexpected status {s}: {:?}", r.body),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        metric(g.addr, &b_label).await > 0.0,
        "b took no traffic before the kill"
    );
    wait_for(b.addr, "offload_compute_in_flight", 1.0).await;
    b.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(metric(g.addr, &b_up).await, 0.0, "b still marked up");
    let before = metric(g.addr, &b_label).await;
    let _b2 = compute(&["--port", &b_port]);
    wait_for(g.addr, &b_up, 1.0).await;
    let end = Instant::now() + Duration::from_secs(5);
    while metric(g.addr, &b_label).await <= before {
        assert!(
            Instant::now() < end,
            "no traffic returned to the restarted backend"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in loops {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }
    let resent = metric(g.addr, r#"offload_remote_requests_total{outcome="resent"}"#).await;
    eprintln!("remote: {ok} ok, {failed} failed, {resent} resent after b was killed");
    assert!(ok > 20, "only {ok} requests succeeded");
    assert_eq!(failed, 0, "lost with b instead of sent to a");
}

/// With no other backend up, a request that loses its backend mid-flight answers 502 at
/// once: the gateway does not hold it for a host that may not come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_with_the_only_backend_answers_502_at_once() {
    let _serial = crate::support::exclusive().await;
    let n = count_n_for(Duration::from_secs(3));
    let c = compute(&["--threads", "1", "--max-inflight", "1"]);
    let c_addr = c.addr;
    let g = gateway(&[&c], &["--timeout", "10s"]);
    let addr = g.addr;
    let running = tokio::spawn(async move { get(addr, &format!("/heavy?n={n}")).await });
    wait_for(c_addr, "offload_compute_in_flight", 1.0).await;
    c.kill();
    let t = Instant::now();
    let r = running.await.unwrap();
    assert_eq!((r.status, r.code().as_str()), (502, "bad_gateway"));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "502 took {:?}",
        t.elapsed()
    );
}

/// The compute service runs requests in arrival order: twelve requests sent 10 ms apart,
/// each longer than that, queue up, and each ends no later than those sent two or more
/// after it (two run at once on two threads and share them, so neighbours may swap).
/// Handing all of them to rayon at once, as before, ended them in any order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compute_runs_requests_in_arrival_order() {
    let _serial = crate::support::exclusive().await;
    let n = count_n_for(Duration::from_millis(60));
    let c = compute(&["--threads", "2", "--max-inflight", "16"]);
    let t0 = Instant::now();
    let mut sent = Vec::new();
    for i in 0..12u64 {
        let addr = c.addr;
        sent.push(tokio::spawn(async move {
            let r = post_compute(addr, "count", n + i).await;
            assert_eq!(r.json()["result"].as_u64(), Some(n + i));
            t0.elapsed()
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ends = Vec::new();
    for s in sent {
        ends.push(s.await.unwrap());
    }
    let slack = Duration::from_millis(20);
    for i in 0..ends.len() {
        for j in i + 2..ends.len() {
            assert!(
                ends[i] <= ends[j] + slack,
                "request {i} ended at {:?}, after request {j} sent later ({:?}): {ends:?}",
                ends[i],
                ends[j]
            );
        }
    }
}

/// A burst before the gateway has timed any answer: it judges by the speed the compute
/// service reported on `/health`. Fifty requests of 0.1 s at once, one thread, two places,
/// a 1 s deadline: about eight fit; the rest are refused at once, not after waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_before_any_answer_is_judged_by_the_reported_speed() {
    let _serial = crate::support::exclusive().await;
    let n = count_n_for(Duration::from_millis(100));
    let c = compute(&["--threads", "1", "--max-inflight", "2"]);
    // Refusals unpaced: this is about the admission's judgement (pacing: `flood::`).
    let g = gateway(&[&c], &["--timeout", "1s", "--refusals-per-core", "0"]);
    wait_for(
        g.addr,
        &format!("offload_backend_capacity{{backend=\"http://{}\"}}", c.addr),
        2.0,
    )
    .await;
    let seen = crowd(g.addr, 50, 1, move |i| n + i as u64).await;
    assert_eq!(seen.wrong, Vec::<String>::new());
    let count = |s: u16| seen.statuses.get(&s).copied().unwrap_or(0);
    assert_eq!(
        count(200) + count(503) + count(504),
        50,
        "{:?}",
        seen.statuses
    );
    // About eight on a quiet machine; the compute service's startup calibration on a busy
    // core reports a slower speed, so as few as one may be admitted (seen: 2 of 50 under
    // `nice -n 10` beside a busy loop). The point is that the burst is judged, not queued.
    assert!(
        (1..=15).contains(&count(200)),
        "admitted {:?}",
        seen.statuses
    );
    // The calibration is a rough guess on a shared machine: a few admitted ones may still
    // run late; the point is that most of the burst is told at once.
    assert!(count(504) <= 5, "{:?}", seen.statuses);
    assert!(count(503) >= 25, "{:?}", seen.statuses);
    assert!(
        seen.slowest[&503] < Duration::from_millis(300),
        "a refusal took {:?}",
        seen.slowest[&503]
    );
}

/// Every service's `/metrics`, after a request has gone through, names each metric's HELP and
/// TYPE once (a second header would make a Prometheus scrape fail): the gateway under every
/// strategy, and the compute service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_write_each_header_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = format!("sqlite://{}", dir.path().join("q.db").display());
    let c = compute(&[]);
    let mut services = vec![("compute".to_string(), c.addr)];
    let mut procs = Vec::new();
    for strategy in ["inline", "spawn", "blocking", "pool", "queue"] {
        let p = Proc::start(&["serve", "--strategy", strategy, "--queue", &queue]);
        services.push((strategy.to_string(), p.addr));
        procs.push(p);
    }
    let r = gateway(&[&c], &[]);
    services.push(("remote".to_string(), r.addr));
    for (name, addr) in services {
        let heavy = get(addr, "/heavy?n=1000").await;
        assert!(
            heavy.status < 300 || name == "compute",
            "{name}: {}",
            heavy.status
        );
        let text = get(addr, "/metrics").await.body;
        let text = String::from_utf8_lossy(&text);
        for kind in ["# HELP ", "# TYPE "] {
            let mut seen = std::collections::HashSet::new();
            for line in text.lines().filter(|l| l.starts_with(kind)) {
                let metric = line.split_whitespace().nth(2).unwrap_or_default();
                assert!(
                    seen.insert(metric.to_string()),
                    "{name}: {kind}{metric} twice"
                );
            }
            assert!(!seen.is_empty(), "{name}: no {kind}lines");
        }
    }
}

/// A backend's own `Retry-After` reaches the client: the compute service draws it from the work
/// it has admitted (here a long request, so well above the gateway's 1 s constant), and a
/// gateway whose deadline leaves no time to retry passes that value on, not its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_retry_after_is_passed_on() {
    let _serial = crate::support::exclusive().await;
    let long = count_n_for(Duration::from_millis(4000));
    let c = compute(&["--threads", "1", "--max-inflight", "1"]);
    let g = gateway(&[&c], &["--timeout", "300ms"]);
    let busy = occupy(&c, long).await;
    // The compute service itself, asked directly, says when to come back.
    let direct = post_compute(c.addr, "count", 1000).await;
    assert_eq!(direct.status, 503);
    let backend: u64 = direct.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        backend >= 2,
        "a 4 s request ahead, yet Retry-After {backend}"
    );
    let r = get(g.addr, "/heavy?n=1000").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "overloaded"),
        "{:?}",
        r.body
    );
    let passed: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    // The backend's value a moment later (its own clock has moved on by at most a second).
    assert!(
        passed + 1 >= backend && passed <= backend && passed > 1,
        "gateway said {passed}, the backend {backend}"
    );
    assert_eq!(busy.await.unwrap().status, 200);
}
