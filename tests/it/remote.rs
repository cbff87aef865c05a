//! `offload compute` and `serve --strategy remote`: same results, failures answered fast,
//! a killed backend avoided and taken back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::gateway::{HASH_FLAGS, bad_cases, expected_hash, wait_for};
use crate::support::{Proc, count_n_for, get, metric, post_json, request};

fn compute(extra: &[&str]) -> Proc {
    let mut args = vec!["compute"];
    args.extend_from_slice(&HASH_FLAGS);
    args.extend_from_slice(extra);
    Proc::start(&args)
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
        let direct = request(
            c.addr,
            "POST",
            "/compute",
            &[("content-type", "application/json")],
            format!(r#"{{"work":"{work}","n":{n}}}"#),
        )
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_503_passes_through_and_deadline_gives_504() {
    let _serial = crate::support::exclusive().await;
    let n = count_n_for(Duration::from_secs(3));
    let c = compute(&["--threads", "1", "--max-inflight", "1"]);
    let g = gateway(&[&c], &["--timeout", "500ms"]);
    let addr = g.addr;
    let t = Instant::now();
    let long = tokio::spawn(async move { get(addr, &format!("/heavy?n={n}")).await });
    wait_for(c.addr, "offload_compute_in_flight", 1.0).await;
    let r = get(g.addr, "/heavy?n=1000").await;
    assert_eq!((r.status, r.code().as_str()), (503, "overloaded"));
    assert_eq!(r.headers["retry-after"], "1");
    let long = long.await.unwrap();
    assert_eq!(
        (long.status, long.code().as_str()),
        (504, "deadline_exceeded")
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "504 came after {:?}",
        t.elapsed()
    );
    // The compute service saw the gateway go away and stopped the work.
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

/// Two compute services under steady load; one is killed, then started again on its port.
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
    assert!(ok > 20, "only {ok} requests succeeded");
    assert!(
        failed as usize <= CLIENTS,
        "{failed} failed: more than the {CLIENTS} that could be in flight on b"
    );
}
