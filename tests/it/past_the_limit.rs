//! The examples past their limit, as a user who embeds the crates meets them: closed loops that
//! ignore `Retry-After` and resend the moment they are answered, as autocannon does. The goals
//! are ratios within one run (issue 27), so they are in the timing group, run alone by
//! `.ci/run`: a busy neighbour moves both halves of a ratio, but not always equally.

use serde_json::Value;

use crate::embed::example;
use crate::support::{Proc, exclusive, get, offload_command, request};

/// `offload load` with `args` for `secs` seconds, closed loop, `Retry-After` ignored (its
/// default): the JSON report's `requests`.
async fn closed_loop(url: String, conns: u32, secs: u32, args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        offload_command()
            .args(["load", "-c", &conns.to_string(), "-d", &format!("{secs}s")])
            .args(["--timeout", "60s", "--json"])
            .args(&args)
            .arg(&url)
            .output()
            .expect("run offload load")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("load's JSON");
    report["requests"].clone()
}

fn count(requests: &Value, status: &str) -> u64 {
    requests["by_status"][status].as_u64().unwrap_or(0)
}

/// The pool example (`GET /count`, a 2 s deadline): 200 connections that resend every 503 at
/// once get at least 0.8 of the 200s a second that 4 connections get (0.86-1.14 in six runs
/// of this debug build on 2026-12-07, about 40 answers in 6 s each; 0.77 in one fresh-clone run
/// of 2026-12-08 with 23 against 30 answers, so each window is now 12 s, for twice the answers
/// and half the counting noise; the release script
/// `scripts/examples-past-the-limit.sh` measures 0.97-1.00), and at most 5% of the
/// requests the pool admitted miss their deadline (504). Unpaced, on a 2-core VM the 200
/// connections got 0.39 of it, in 900,000 refusals in 8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: rate ratios on one CPU, run alone by .ci/run (cargo test --test it -- --ignored --test-threads 1)"]
async fn the_pool_example_keeps_its_rate_under_a_closed_loop_that_ignores_retry_after() {
    let _x = exclusive().await;
    let app = Proc::start_program(&example("axum"), &["127.0.0.1:0"]);
    assert_eq!(get(app.addr, "/health").await.status, 200);
    // About 40 ms a request in a debug build: 200 connections hold twice the deadline's work.
    let url = format!("http://{}/count?n=100000000", app.addr);
    // The VM's speed drifts by tens of percent within a minute: the flood is compared with the
    // slower of a polite run before it and one after it.
    const SECS: u32 = 12;
    let before = closed_loop(url.clone(), 4, SECS, &[]).await;
    let flood = closed_loop(url.clone(), 200, SECS, &[]).await;
    let after = closed_loop(url, 4, SECS, &[]).await;
    let polite = match count(&before, "200") <= count(&after, "200") {
        true => before,
        false => after,
    };
    let (ok_polite, ok_flood) = (count(&polite, "200"), count(&flood, "200"));
    let (missed, refused) = (count(&flood, "504"), count(&flood, "503"));
    eprintln!(
        "pool example: -c 4 {ok_polite} x 200; -c 200 {ok_flood} x 200, {refused} x 503, \
         {missed} x 504 ({SECS} s each)"
    );
    assert_eq!(
        count(&polite, "503") + count(&polite, "504"),
        0,
        "{polite:#}"
    );
    assert!(
        ok_flood as f64 >= 0.8 * ok_polite as f64,
        "-c 200 got {ok_flood} x 200 against {ok_polite} for -c 4: {flood:#}"
    );
    assert!(
        missed as f64 <= 0.05 * (ok_flood + missed) as f64,
        "{missed} of {} admitted missed the deadline: {flood:#}",
        ok_flood + missed
    );
    // Paced: about 100 refusals a second per core, not thousands.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        refused <= u64::from(SECS) * 100 * cores * 3 / 2 + 200,
        "{refused} refusals in {SECS} s: {flood:#}"
    );
    assert_eq!(flood["timeouts"], 0, "{flood:#}");
}

/// The `auto` example at the article's kind of load, and ten times its connections: 1,000
/// closed-loop connections for 8 s (jobs a tenth of the size the issue's release build ran, as
/// this is a debug build). The pool answers what fits the budget, the queue stores the rest up
/// to its caps (10,000 jobs, five minutes of predicted work), and past them the requests wait
/// in the queue's line. A request the line cannot reach before its deadline is refused, but
/// the refusals are paced: about 100 a second per core, not the 33,000 a second the example
/// answered before the line and the pacing were in the crate (267,520 in 8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing: a flood on one CPU, run alone by .ci/run (cargo test --test it -- --ignored --test-threads 1)"]
async fn the_auto_example_answers_a_thousand_closed_loop_connections_with_paced_refusals_at_most() {
    let _x = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let app = Proc::start_program(&example("auto"), &["127.0.0.1:0", db.to_str().unwrap()]);
    let headers = [("content-type", "application/json")];
    let r = request(app.addr, "POST", "/collatz", &headers, r#"{"below": 1000}"#).await;
    assert!([200, 202].contains(&r.status), "{:?}", r.body);
    let url = format!("http://{}/collatz", app.addr);
    let args = [
        "-m",
        "POST",
        "-H",
        "content-type: application/json",
        "-b",
        r#"{"below": 30000}"#,
    ];
    let flood = closed_loop(url, 1000, 8, &args).await;
    let (ok, accepted, refused) = (
        count(&flood, "200"),
        count(&flood, "202"),
        count(&flood, "503"),
    );
    eprintln!(
        "auto example, -c 1000 for 8 s: {ok} x 200, {accepted} x 202, {refused} x 503: {flood}"
    );
    assert_eq!(
        ok + accepted + refused,
        flood["completed"].as_u64().unwrap(),
        "{flood:#}"
    );
    assert_eq!(flood["timeouts"], 0, "{flood:#}");
    assert!(ok + accepted > 1000, "{flood:#}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        refused <= 8 * 100 * cores * 3 / 2 + 200,
        "{refused} refusals in 8 s: {flood:#}"
    );
}
