//! `offload load` against a real axum server on 127.0.0.1:0: exact counts, failures counted
//! where they belong, open-loop pacing, coordinated-omission correction, and the CLI.

pub mod hostile;
pub mod schema;

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Output;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use offload::load::{Mode, Plan, Progress, Report, Stop, Target, run};

/// A response body that fails on its first poll: hyper then drops the connection mid-response.
struct BrokenBody;

impl hyper::body::Body for BrokenBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other("dropped on purpose"))))
    }
}

/// Starts the test server: `/ok` (200), `/fail` (500), `/slow/{ms}` (200 after a sleep),
/// `/drop` (drops the connection), `/close` (answers, then closes: no keep-alive), `POST /echo` (200 only for the JSON body the tests send),
/// `/busy` (503 with `Retry-After: 1`).
async fn server() -> SocketAddr {
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .route(
            "/slow/{ms}",
            get(|Path(ms): Path<u64>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                "slow"
            }),
        )
        .route("/drop", get(|| async { Body::new(BrokenBody) }))
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("retry-after", "1")],
                    "busy",
                )
            }),
        )
        .route(
            "/close",
            get(|| async { ([("connection", "close")], "bye") }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let json = headers
                    .get("content-type")
                    .is_some_and(|v| v == "application/json");
                if json && body == r#"{"work":"count","n":1000}"# {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn plan(addr: SocketAddr, path: &str, mode: Mode) -> Plan {
    let target = Target::parse(&format!("http://{addr}{path}"), false).unwrap();
    Plan::new(target, mode).unwrap()
}

fn closed(connections: u32, stop: Stop) -> Mode {
    Mode::Closed { connections, stop }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The counts in a report always add up.
fn assert_consistent(r: &Report) {
    let q = &r.requests;
    assert_eq!(
        q.sent,
        q.completed + q.timeouts + q.errors + q.aborted_at_deadline,
        "{q:?}"
    );
    assert_eq!(q.completed, q.status_2xx + q.non_2xx, "{q:?}");
    assert_eq!(
        q.errors,
        r.errors.connect + r.errors.closed + r.errors.protocol + r.errors.other
    );
    let kinds: u64 = r.errors.protocol_by_kind.named().iter().map(|k| k.1).sum();
    assert_eq!(r.errors.protocol, kinds);
    let t = &q.timeouts_by_stage;
    assert_eq!(
        q.timeouts,
        t.no_response + t.head_incomplete + t.body_incomplete
    );
    assert_eq!(q.completed, q.by_status.values().sum::<u64>());
    assert_eq!(r.latency.count, q.completed);
    assert_eq!(
        r.latency_with_timeouts.count,
        q.completed + q.timeouts + q.aborted_at_deadline + q.unsent_at_deadline
    );
    let timeline: u64 = r.timeline.iter().map(|s| s.completed).sum();
    assert_eq!(timeline, q.completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_mode_sends_exactly_the_amount() {
    let addr = server().await;
    let r = run(&plan(addr, "/ok", closed(8, Stop::Count(1000))), None)
        .await
        .unwrap();
    assert_consistent(&r);
    assert_eq!(r.requests.sent, 1000);
    assert_eq!(r.requests.status_2xx, 1000);
    assert_eq!(r.requests.by_status["200"], 1000);
    assert_eq!(r.connections_opened, 8, "keep-alive: one connection each");
    assert_eq!(r.reconnects, 0);
    // "ok" body plus a small head: bytes are counted, not guessed.
    assert!(r.bytes_read > 1000 * 40, "{}", r.bytes_read);

    let open = Mode::Open {
        rate: 1000.0,
        connections: 4,
        stop: Stop::Count(300),
    };
    let r = run(&plan(addr, "/ok", open), None).await.unwrap();
    assert_consistent(&r);
    assert_eq!(r.requests.sent, 300);
    assert_eq!(r.requests.status_2xx, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_requests_are_not_counted() {
    let addr = server().await;
    let p = plan(addr, "/ok", closed(4, Stop::Count(200))).with_warmup(secs(0.3));
    let started = Instant::now();
    let r = run(&p, None).await.unwrap();
    assert!(started.elapsed() >= secs(0.3));
    assert_consistent(&r);
    assert_eq!(r.requests.sent, 200);
    assert_eq!(r.warmup_s, 0.3);
}

/// Answers that arrive in the window to requests the warm-up sent are the server's work
/// done in the window: counted apart, never in the latencies, and in the 2xx rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_warmup_requests_count_in_the_answer_rate_only() {
    let addr = server().await;
    // Each of 4 connections: sent at 0 s, answered at 0.3 s, inside the window (0.2-1.3 s).
    let p = plan(addr, "/slow/300", closed(4, Stop::Duration(secs(1.1)))).with_warmup(secs(0.2));
    let r = run(&p, None).await.unwrap();
    assert_consistent(&r);
    let q = &r.requests;
    assert_eq!(q.carried_over_2xx, 4, "{q:?}");
    assert!(q.status_2xx >= 8, "{q:?}");
    assert_eq!(
        r.latency.count, q.completed,
        "carried answers are not in the latencies"
    );
    let want = (q.status_2xx + q.carried_over_2xx) as f64 / r.elapsed_s;
    assert!((q.answered_2xx_per_s - want).abs() < 1e-9, "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_2xx_are_counted_by_status() {
    let addr = server().await;
    let r = run(&plan(addr, "/fail", closed(4, Stop::Count(200))), None)
        .await
        .unwrap();
    assert_consistent(&r);
    assert_eq!(r.requests.completed, 200);
    assert_eq!(r.requests.non_2xx, 200);
    assert_eq!(r.requests.status_2xx, 0);
    assert_eq!(r.requests.by_status["500"], 200);
    assert_eq!(r.requests.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_counted_and_shown_at_the_timeout() {
    let addr = server().await;
    let p = plan(addr, "/slow/3000", closed(2, Stop::Count(4)))
        .with_timeout(secs(0.2))
        .unwrap();
    let started = Instant::now();
    let r = run(&p, None).await.unwrap();
    assert!(
        started.elapsed() < secs(2.5),
        "timeouts must not wait for the server"
    );
    assert_consistent(&r);
    assert_eq!(r.requests.timeouts, 4);
    assert_eq!(
        r.requests.timeouts_by_stage.no_response, 4,
        "the slow handler sends nothing before its answer"
    );
    assert_eq!(r.requests.completed, 0);
    assert_eq!(r.requests.errors, 0);
    assert_eq!(r.latency.count, 0);
    assert_eq!(r.latency_with_timeouts.count, 4);
    assert!(
        r.latency_with_timeouts.min >= 200.0,
        "{:?}",
        r.latency_with_timeouts
    );
    // A connection with a request in flight cannot be reused: each timeout reopens one.
    assert_eq!(r.connections_opened, 4);
    assert_eq!(r.timeline.iter().map(|s| s.timeouts).sum::<u64>(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_errors_and_reopened() {
    let addr = server().await;
    let r = run(&plan(addr, "/drop", closed(2, Stop::Count(50))), None)
        .await
        .unwrap();
    assert_consistent(&r);
    assert_eq!(r.requests.sent, 50);
    assert_eq!(r.errors.closed, 50, "{:?}", r.errors);
    assert_eq!(r.requests.completed, 0);
    assert_eq!(r.connections_opened, 50);
    assert_eq!(r.reconnects, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_after_each_answer_is_not_an_error() {
    let addr = server().await;
    let r = run(&plan(addr, "/close", closed(2, Stop::Count(40))), None)
        .await
        .unwrap();
    assert_consistent(&r);
    assert_eq!(r.requests.status_2xx, 40, "{:?} {:?}", r.requests, r.errors);
    assert_eq!(r.requests.errors, 0);
    assert_eq!(r.connections_opened, 40, "one connection per answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_connect_errors() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(&plan(addr, "/", closed(2, Stop::Count(20))), None)
        .await
        .unwrap();
    assert_consistent(&r);
    assert_eq!(r.errors.connect, 20);
    assert_eq!(r.requests.sent, 20);
    assert_eq!(r.connections_opened, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_holds_its_rate() {
    let addr = server().await;
    let open = Mode::Open {
        rate: 200.0,
        connections: 10,
        stop: Stop::Duration(secs(2.0)),
    };
    let r = run(&plan(addr, "/ok", open), None).await.unwrap();
    assert_consistent(&r);
    let done = r.requests.completed as f64;
    assert!(
        (done - 400.0).abs() <= 400.0 * 0.05,
        "completed {done} of 400 scheduled"
    );
    assert_eq!(r.timeline.len(), 2);
    for s in &r.timeline {
        assert!((s.completed as f64 - 200.0).abs() <= 20.0, "{s:?}");
    }
    assert!(
        (r.requests.throughput - 200.0).abs() <= 10.0,
        "{}",
        r.requests.throughput
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_shows_in_corrected_latency() {
    let addr = server().await;
    // One connection, 40 req/s scheduled, 50 ms per answer: at most 20/s get through, so the
    // schedule falls ever further behind. wrk-style closed-loop figures would say 50 ms.
    let open = Mode::Open {
        rate: 40.0,
        connections: 1,
        stop: Stop::Duration(secs(2.0)),
    };
    let r = run(&plan(addr, "/slow/50", open), None).await.unwrap();
    assert_consistent(&r);
    let (fixed, raw) = (&r.latency, &r.latency_uncorrected);
    assert!(raw.p50 >= 50.0 && raw.p50 < 150.0, "uncorrected {raw:?}");
    assert!(fixed.p99 > 500.0, "corrected {fixed:?}");
    assert!(
        fixed.max > 4.0 * raw.max,
        "corrected {fixed:?} vs uncorrected {raw:?}"
    );
    assert!(
        r.requests.completed < 60,
        "the server cannot do 40/s: {:?}",
        r.requests
    );
    // The per-second p99 climbs as the backlog grows.
    let p99: Vec<f64> = r.timeline.iter().filter_map(|s| s.p99_ms).collect();
    assert!(p99.last() > p99.first(), "{p99:?}");
}

/// A server that does not answer within the run: an open loop still counts every request
/// that fell due, and the view with timeouts shows how long they had waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_counts_requests_a_stalled_server_never_saw() {
    let addr = server().await;
    let open = Mode::Open {
        rate: 20.0,
        connections: 2,
        stop: Stop::Duration(secs(1.0)),
    };
    let r = run(&plan(addr, "/slow/5000", open), None).await.unwrap();
    assert_consistent(&r);
    let q = &r.requests;
    assert_eq!((q.completed, q.aborted_at_deadline), (0, 2), "{q:?}");
    assert!((16..=19).contains(&q.unsent_at_deadline), "{q:?}");
    let w = &r.latency_with_timeouts;
    assert!(w.max >= 900.0 && w.p50 >= 300.0, "{w:?}");
    assert_eq!(r.latency.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_aborts_in_flight_requests() {
    let addr = server().await;
    let p = plan(addr, "/slow/5000", closed(3, Stop::Duration(secs(0.5))));
    let started = Instant::now();
    let r = run(&p, None).await.unwrap();
    assert!(
        started.elapsed() < secs(2.0),
        "the run must stop at its deadline"
    );
    assert_consistent(&r);
    assert_eq!(r.requests.aborted_at_deadline, 3);
    assert_eq!(
        (r.requests.completed, r.requests.timeouts, r.requests.errors),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_in_one_runtime() {
    let addr = server().await;
    let heavy = plan(addr, "/slow/20", closed(4, Stop::Duration(secs(1.0))));
    let probe = plan(
        addr,
        "/ok",
        Mode::Open {
            rate: 100.0,
            connections: 2,
            stop: Stop::Duration(secs(1.0)),
        },
    );
    let (a, b) = tokio::join!(run(&heavy, None), run(&probe, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_consistent(&a);
    assert_consistent(&b);
    assert!(a.requests.completed >= 50, "{:?}", a.requests);
    assert!(
        (b.requests.completed as i64 - 100).abs() <= 5,
        "{:?}",
        b.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_published_and_finishes() {
    let addr = server().await;
    let (tx, rx) = tokio::sync::watch::channel(Progress::default());
    let r = run(&plan(addr, "/ok", closed(2, Stop::Count(300))), Some(tx))
        .await
        .unwrap();
    let last = rx.borrow().clone();
    assert!(last.done);
    assert_eq!(last.finished, r.requests.sent);
    assert_eq!(last.fraction, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_headers_and_body_are_sent() {
    let addr = server().await;
    let p = plan(addr, "/echo", closed(2, Stop::Count(20)))
        .with_method("post")
        .unwrap()
        .with_header("content-type: application/json")
        .unwrap()
        .with_body(r#"{"work":"count","n":1000}"#);
    let r = run(&p, None).await.unwrap();
    assert_eq!(r.requests.status_2xx, 20, "{:?}", r.requests.by_status);
    assert_eq!(r.method, "POST");
}

/// Runs the `offload` binary off the runtime's threads (the test server lives on them).
async fn offload(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_offload"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_refuses_bad_arguments_clearly() {
    let cases: &[(&[&str], &str)] = &[
        (&["load"], "<URL>"),
        (&["load", "not a url"], "malformed URL"),
        (&["load", "127.0.0.1:3000/x"], "malformed URL"),
        (&["load", "http://127.0.0.1:1/", "-c", "0"], "--connections"),
        (&["load", "http://127.0.0.1:1/", "-d", "-5"], "negative"),
        (
            &["load", "http://127.0.0.1:1/", "-R", "100"],
            "needs a duration (-d) or an amount (-a)",
        ),
        (
            &["load", "http://127.0.0.1:1/", "-R", "0", "-d", "1"],
            "rate",
        ),
        (
            &["load", "http://127.0.0.1:1/", "-d", "1", "-a", "5"],
            "cannot be used with",
        ),
        (&["load", "http://192.0.2.1/", "-a", "1"], "--allow-remote"),
        (
            &["load", "http://127.0.0.1:1/", "-H", "no colon"],
            "bad header",
        ),
    ];
    for (args, expected) in cases {
        let out = offload(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
}

/// A port where nothing listens is a mistake in the command: one clear line and a non-zero
/// exit at once, not a table of zeros after the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_fails_loudly_when_nothing_listens() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/heavy");
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["load", &url, "-c", "4", "-d", "10"];
        args.extend_from_slice(extra);
        let started = std::time::Instant::now();
        let out = offload(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(
            stderr.contains(&format!("cannot connect to {addr}")) && stderr.contains("refused"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed a report: {stderr}");
        // It did not run the 10 s it was asked for.
        assert!(started.elapsed() < Duration::from_secs(8), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_json_matches_the_committed_schema() {
    let addr = server().await;
    let url = format!("http://{addr}/ok");
    let out = offload(&["load", &url, "-c", "4", "-a", "300", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(offload::load::REPORT_SCHEMA).unwrap();
    let errors = schema::validate(&schema, &report);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(report["requests"]["sent"], 300);
    assert_eq!(report["requests"]["by_status"]["200"], 300);
    assert_eq!(report["mode"], "closed");

    // An open-loop, time-bound run with failures exercises the nullable and map fields.
    let url = format!("http://{addr}/fail");
    let out = offload(&["load", &url, "-R", "100", "-d", "1", "-c", "2", "--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = schema::validate(&schema, &report);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(report["mode"], "open");
    assert!(report["requests"]["by_status"]["500"].as_u64().unwrap() > 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_text_shows_every_count_and_how_timeouts_count() {
    let addr = server().await;
    let url = format!("http://{addr}/fail");
    let out = offload(&["load", &url, "-c", "2", "-a", "50"]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Latency (ms)",
        "2.5%",
        "97.5%",
        "99.9%",
        "Stdev",
        "Req/Sec",
        "Bytes/Sec",
        "50 requests sent: 50 completed (0 2xx, 50 non-2xx), 0 timeouts, 0 connection errors",
        "by status: 500: 50",
        "with timeouts",
        "note: latency covers completed responses",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Piped output: no progress bar escape codes anywhere.
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\r'));
}

/// A server that refuses with `Retry-After: 1`: a client that honours it sends about one
/// request per second per connection and waits the rest of the time; one that does not
/// spins on the refusals. Both count every answer that asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_per_connection() {
    let addr = server().await;
    let connections = 4u32;
    let honoured = plan(
        addr,
        "/busy",
        closed(connections, Stop::Duration(secs(2.5))),
    )
    .with_honor_retry_after(true);
    let r = run(&honoured, None).await.unwrap();
    assert_consistent(&r);
    let q = &r.requests;
    // Sent at about 0 s, 1 s and 2 s on each connection.
    assert!(
        (2 * connections as u64..=4 * connections as u64).contains(&q.sent),
        "{q:?}"
    );
    assert_eq!(q.by_status["503"], q.completed);
    let ra = &r.retry_after;
    assert!(ra.honoured);
    assert_eq!((ra.asked, ra.unparseable), (q.completed, 0), "{ra:?}");
    // Each connection waited from its first answer to the end: about 2.5 s each, the last
    // wait cut at the deadline.
    let most = f64::from(connections) * 2.5;
    assert!(
        ra.waited_s > most * 0.9 && ra.waited_s <= most + 0.01,
        "{ra:?}"
    );
    assert!(
        ra.waited_fraction > 0.9 && ra.waited_fraction <= 1.0,
        "{ra:?}"
    );
    assert_eq!(ra.skipped, 0, "closed loop: nothing is skipped");

    let spinning = plan(
        addr,
        "/busy",
        closed(connections, Stop::Duration(secs(2.5))),
    );
    let s = run(&spinning, None).await.unwrap();
    assert_consistent(&s);
    assert!(!s.retry_after.honoured);
    assert_eq!(s.retry_after.asked, s.requests.completed);
    assert_eq!(s.retry_after.waited_s, 0.0);
    assert!(
        s.requests.sent > 50 * q.sent,
        "without the flag {} requests, with it {}",
        s.requests.sent,
        q.sent
    );
    eprintln!(
        "Retry-After: 1 at -c {connections} for 2.5 s: {} requests honouring it (waited {:.2} s), {} not",
        q.sent, ra.waited_s, s.requests.sent
    );

    // Open loop: the slots that fall due during a wait are skipped and counted, so every
    // scheduled request is accounted for.
    let open = Mode::Open {
        rate: 40.0,
        connections: 2,
        stop: Stop::Duration(secs(2.0)),
    };
    let o = run(
        &plan(addr, "/busy", open).with_honor_retry_after(true),
        None,
    )
    .await
    .unwrap();
    assert_consistent(&o);
    let (sent, skipped) = (o.requests.sent, o.retry_after.skipped);
    assert!((2..=6).contains(&sent), "{:?}", o.requests);
    assert_eq!(
        sent + skipped + o.requests.unsent_at_deadline,
        80,
        "every one of the 80 scheduled requests is accounted for: {:?} {:?}",
        o.requests,
        o.retry_after
    );

    // The CLI: the flag, its line in the text, and the JSON against the schema.
    let url = format!("http://{addr}/busy");
    let out = offload(&["load", &url, "-c", "2", "-d", "1.5", "--honor-retry-after"]).await;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("answers (503/429) asked to wait (0 unparseable); honoured: waited "),
        "{text}"
    );
    let out = offload(&["load", &url, "-c", "2", "-d", "1", "--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(offload::load::REPORT_SCHEMA).unwrap();
    assert_eq!(schema::validate(&schema, &report), Vec::<String>::new());
    assert_eq!(report["retry_after"]["honoured"], false);
    assert!(report["retry_after"]["asked"].as_u64().unwrap() > 10);
}
