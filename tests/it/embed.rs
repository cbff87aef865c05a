//! The crates as a user embeds them: `crates/pool/examples/axum.rs`, driven with `offload
//! load`, answers every request, and exactly; `crates/axum/examples/auto.rs` answers at once
//! or with a job that finishes, never 5xx, and learns a job type's cost from its worker. ([`example`] finds any example's executable; the
//! queue crate's is tested in `custom_job.rs`.)

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{Proc, Resp, exclusive, get, offload_command, request};

/// An example's executable: beside the `offload` binary, under `examples/`. Plain `cargo test`
/// builds the examples of the workspace's default members; `cargo test --test it` does not,
/// and then this fails saying how to build it.
pub(crate) fn example(name: &str) -> PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_offload"));
    let path = bin
        .parent()
        .expect("a target dir")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --example {name}` in the workspace's root, so \
         that its crate has the features offload enables (plain `cargo test` builds it)",
        path.display()
    );
    path
}

/// The JSON report of an `offload load --json` run that must have succeeded.
fn load_report(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("load's JSON")
}

/// `GET /count?n=N` of the example, checked for the exact count.
async fn count_exactly(app: &Proc, n: u64) {
    let r = get(app.addr, &format!("/count?n={n}")).await;
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!((r.status, body.as_ref()), (200, format!("{n}\n").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_answers_every_request_exactly_under_load() {
    let _x = exclusive().await;
    let app = Proc::start_program(&example("axum"), &["127.0.0.1:0"]);
    assert_eq!(get(app.addr, "/health").await.status, 200);
    assert_eq!(get(app.addr, "/count?n=many").await.status, 400);
    for n in [0, 1, 999_983] {
        count_exactly(&app, n).await;
    }
    // 400 requests of about a millisecond each over 4 connections: far inside the example's
    // 2 s deadline, so admission must take every one.
    let url = format!("http://{}/count?n=1000000", app.addr);
    let load = tokio::task::spawn_blocking(move || {
        offload_command()
            .args([
                "load",
                "-c",
                "4",
                "-a",
                "400",
                "--timeout",
                "30s",
                "--json",
                &url,
            ])
            .output()
            .expect("run offload load")
    });
    // Exact answers while the load runs, too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in [12_345, 2_000_000] {
        count_exactly(&app, n).await;
    }
    let out = load.await.unwrap();
    let report = load_report(&out);
    let requests = &report["requests"];
    assert_eq!(requests["sent"], 400, "{requests:#}");
    assert_eq!(requests["by_status"]["200"], 400, "{requests:#}");
    assert_eq!(requests["non_2xx"], 0, "{requests:#}");
    assert_eq!(requests["timeouts"], 0, "{requests:#}");
}

/// The `auto` example's answer for `below`: the start with the longest Collatz chain and its
/// steps (Project Euler 14's figures).
fn longest(below: u64) -> serde_json::Value {
    let (start, steps) = match below {
        1_000 => (871, 178),
        10_000 => (6_171, 261),
        100_000 => (77_031, 350),
        10_000_000 => (8_400_511, 685),
        _ => unreachable!("no figure for {below}"),
    };
    serde_json::json!([start, steps])
}

/// `POST /collatz` of the `auto` example, with a `Prefer` header when given.
async fn collatz(app: &Proc, below: u64, prefer: &str) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if !prefer.is_empty() {
        headers.push(("prefer", prefer));
    }
    let body = format!(r#"{{"below": {below}}}"#);
    request(app.addr, "POST", "/collatz", &headers, body).await
}

fn header<'a>(r: &'a Resp, name: &str) -> &'a str {
    r.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

/// A 202's `Location`, long-polled until the job is done: its result.
pub(crate) async fn finished(app: &Proc, accepted: &Resp) -> serde_json::Value {
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let location = header(accepted, "location").to_owned();
    let body: offload_axum::AcceptedBody = serde_json::from_slice(&accepted.body).unwrap();
    assert_eq!(location, format!("/jobs/{}", body.id));
    assert_eq!(body.status_url, location);
    for _ in 0..4 {
        let r = request(app.addr, "GET", &location, &[("prefer", "wait=30")], "").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let job = r.json();
        match job["status"].as_str() {
            Some("done") => return job["result"].clone(),
            Some("queued" | "running") => continue,
            _ => panic!("the job did not finish: {job:#}"),
        }
    }
    panic!("{location} not done within 2 minutes");
}

/// Jobs in the example's SQLite queue, read as another process would.
async fn counts(db: &std::path::Path) -> offload_queue::Counts {
    use offload_queue::JobQueue;
    let url = format!("sqlite://{}", db.display());
    let queue = offload_queue::open(&url, offload_queue::QueueOptions::default()).await;
    queue.unwrap().counts().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_example_answers_at_once_or_with_a_job_that_finishes() {
    let _x = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let args = ["127.0.0.1:0", db.to_str().unwrap()];
    let app = Proc::start_program(&example("auto"), &args);
    // The example's job type gives a first guess of its time per unit, so light work answers
    // 200 from the first request, with the handler's output as JSON; the runs teach the model.
    for below in [1_000, 10_000, 10_000] {
        let r = collatz(&app, below, "").await;
        assert_eq!((r.status, r.json()), (200, longest(below)), "{below}");
        assert_eq!(header(&r, "content-type"), "application/json");
    }
    // `respond-async` on an idle pool: it starts at once, so it answers at once, not applied.
    let r = collatz(&app, 1_000, "respond-async").await;
    assert_eq!((r.status, r.json()), (200, longest(1_000)));
    assert_eq!(header(&r, "preference-applied"), "");
    // With no time to wait at all, it is stored, and the job's answer is exact.
    let r = collatz(&app, 10_000, "respond-async, wait=0").await;
    assert_eq!(header(&r, "preference-applied"), "respond-async, wait=0");
    assert_eq!(finished(&app, &r).await, longest(10_000));
    // Far too big for the example's 250 ms budget (seconds): stored, and it finishes.
    let r = collatz(&app, 10_000_000, "").await;
    assert!(
        r.json()["pool_finish_us"].as_u64().unwrap() > 250_000,
        "{:?}",
        r.body
    );
    assert_eq!(finished(&app, &r).await, longest(10_000_000));
    // A body that is not a job: the example's own JSON error, in offload's shape.
    let json = [("content-type", "application/json")];
    let r = request(app.addr, "POST", "/collatz", &json, r#"{"below": -1}"#).await;
    assert_eq!((r.status, r.code()), (422, "invalid_job".into()));
    let r = request(app.addr, "POST", "/collatz", &json, "not json").await;
    assert_eq!((r.status, r.code()), (400, "invalid_job".into()));
    // Bad ids and unknown ones: JSON errors.
    let r = get(app.addr, "/jobs/not-a-job").await;
    assert_eq!((r.status, r.code()), (400, "invalid_job_id".into()));
    let r = get(app.addr, &format!("/jobs/{}", "0f".repeat(16))).await;
    assert_eq!((r.status, r.code()), (404, "job_not_found".into()));
    // An `Idempotency-Key` stores even light work, once; a repeat gets the same job, and its
    // result once done; other work under the key is a 422; a bad key or deadline a 400.
    let keyed = |below: u64, key: &'static str| {
        let body = format!(r#"{{"below": {below}}}"#);
        let headers = [
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ];
        async move { request(app.addr, "POST", "/collatz", &headers, body).await }
    };
    let first = keyed(1_000, "c-1").await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let again = keyed(1_000, "c-1").await;
    assert_eq!(header(&again, "location"), header(&first, "location"));
    assert_eq!(finished(&app, &first).await, longest(1_000));
    let done = keyed(1_000, "c-1").await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(
        header(&done, "content-location"),
        header(&first, "location")
    );
    assert_eq!(done.json()["result"], longest(1_000));
    assert_eq!(keyed(10_000, "c-1").await.code(), "idempotency_key_reused");
    let bad = [("content-type", "application/json"), ("job-deadline", "-3")];
    let r = request(app.addr, "POST", "/collatz", &bad, r#"{"below": 1000}"#).await;
    assert_eq!((r.status, r.code()), (400, "invalid_deadline".into()));
    let bad = [("content-type", "application/json"), ("job-priority", "10")];
    let r = request(app.addr, "POST", "/collatz", &bad, r#"{"below": 1000}"#).await;
    assert_eq!((r.status, r.code()), (400, "invalid_schedule".into()));
    // The done jobs, newest first: the keyed one is among them.
    let r = get(app.addr, "/jobs?status=done&limit=1000").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let page: offload_axum::JobList = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        page.jobs[0].id,
        first.json()["id"].as_str().unwrap(),
        "the newest done job"
    );
    let r = get(app.addr, "/jobs?status=lost").await;
    assert_eq!((r.status, r.code()), (400, "invalid_query".into()));

    // A burst from 16 connections over a 2-thread pool (each job some tens of ms): the first
    // run at once, those behind more than the budget's worth of work are stored, none is
    // refused, and every stored one finishes.
    let before = counts(&db).await;
    let url = format!("http://{}/collatz", app.addr);
    let body = r#"{"below": 200000}"#;
    let out = tokio::task::spawn_blocking(move || {
        offload_command()
            .args([
                "load",
                "-c",
                "16",
                "-a",
                "160",
                "--timeout",
                "60s",
                "--json",
            ])
            .args([
                "-m",
                "POST",
                "-H",
                "content-type: application/json",
                "-b",
                body,
            ])
            .arg(&url)
            .output()
            .expect("run offload load")
    })
    .await
    .unwrap();
    let report = load_report(&out);
    let requests = &report["requests"];
    let by_status = requests["by_status"].as_object().expect("by_status");
    let n = |s: &str| by_status.get(s).and_then(|v| v.as_u64()).unwrap_or(0);
    assert_eq!(n("200") + n("202"), 160, "only 200 and 202: {requests:#}");
    // The pool answers some; how many are stored depends on the machine's speed against the
    // model's (a busy core can make all 160 fit the budget, or few), so 202 may be 0.
    assert!(n("200") > 0, "the pool answered none: {requests:#}");
    eprintln!(
        "auto example, 16 connections: {} x 200, {} x 202",
        n("200"),
        n("202")
    );
    assert_eq!(requests["timeouts"], 0, "{requests:#}");
    let end = std::time::Instant::now() + Duration::from_secs(120);
    let after = loop {
        let c = counts(&db).await;
        if c.queued + c.running == 0 || std::time::Instant::now() > end {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (after.queued, after.running, after.failed),
        (0, 0, 0),
        "{after:?}"
    );
    assert_eq!(
        after.done - before.done,
        n("202"),
        "every 202's job is done"
    );
    eprintln!(
        "the burst: {} answered 200, {} stored and done",
        n("200"),
        n("202")
    );
}

/// Crates a service embedding the pool must not be made to build: storage, HTTP, the CLI,
/// metrics, password hashing, the bench's histograms, and an async runtime (a pool's `Handle`
/// is a future any executor awaits, or a blocking wait).
const NOT_IN_THE_POOL: [&str; 10] = [
    "rusqlite",
    "redis",
    "tokio-postgres",
    "hyper",
    "hyper-util",
    "clap",
    "prometheus-client",
    "argon2",
    "hdrhistogram",
    "tokio",
];

/// Crates the queue crate with its default feature (SQLite) must not build: the other
/// backends' clients, HTTP, the CLI, metrics and the bench's parts.
const NOT_IN_THE_SQLITE_QUEUE: [&str; 9] = [
    "redis",
    "tokio-postgres",
    "hyper",
    "axum",
    "clap",
    "prometheus-client",
    "argon2",
    "hdrhistogram",
    "rayon",
];

/// The distinct crates `package` builds for itself (normal dependencies), with `features`
/// given to `cargo tree` as they are.
fn crates_of(package: &str, features: &[&str]) -> std::collections::BTreeSet<String> {
    // The cargo running the tests, else the one that built them.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let out = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .args(features)
        .args(["--offline", "--locked"])
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Lines are `name vX.Y.Z [(path)] [(*)]`.
    let names: std::collections::BTreeSet<String> = tree
        .lines()
        .filter_map(|l| Some(l.split_whitespace().next()?.to_owned()))
        .collect();
    assert!(names.contains(package), "{tree}");
    names
}

/// The crates of `names` that are in `forbidden`.
fn found<'a>(names: &std::collections::BTreeSet<String>, forbidden: &[&'a str]) -> Vec<&'a str> {
    forbidden
        .iter()
        .copied()
        .filter(|c| names.contains(*c))
        .collect()
}

#[test]
fn the_pool_crate_pulls_in_nothing_heavy() {
    let names = crates_of("offload-pool", &[]);
    let heavy = found(&names, &NOT_IN_THE_POOL);
    assert!(
        heavy.is_empty(),
        "offload-pool depends on {heavy:?}: {names:?}"
    );
    eprintln!("offload-pool's crates ({}): {names:?}", names.len());
}

#[test]
fn the_queue_crate_builds_only_the_backends_asked_for() {
    let sqlite = crates_of("offload-queue", &[]);
    let heavy = found(&sqlite, &NOT_IN_THE_SQLITE_QUEUE);
    assert!(
        heavy.is_empty(),
        "offload-queue (SQLite) depends on {heavy:?}: {sqlite:?}"
    );
    assert!(sqlite.contains("rusqlite"), "{sqlite:?}");
    let redis = crates_of(
        "offload-queue",
        &["--no-default-features", "--features", "redis"],
    );
    assert!(redis.contains("redis"), "{redis:?}");
    let not_redis = found(&redis, &["rusqlite", "tokio-postgres", "hyper", "clap"]);
    assert!(
        not_redis.is_empty(),
        "offload-queue (Redis) depends on {not_redis:?}"
    );
    let postgres = crates_of(
        "offload-queue",
        &["--no-default-features", "--features", "postgres"],
    );
    let not_postgres = found(&postgres, &["rusqlite", "redis", "hyper", "clap"]);
    assert!(
        postgres.contains("tokio-postgres") && not_postgres.is_empty(),
        "{postgres:?}"
    );
    eprintln!(
        "offload-queue's crates: {} with SQLite, {} with Redis, {} with Postgres",
        sqlite.len(),
        redis.len(),
        postgres.len()
    );
}

/// The README's "Use it in your service" shows the example as it is, not as it once was.
#[test]
fn the_readme_shows_the_example_as_it_is() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("crates/pool/examples/axum.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let code = &example[example.find("use std::").expect("the example's first use")..];
    assert!(
        readme.contains(&format!("```rust\n{code}```")),
        "README.md's \"Use it in your service\" no longer shows crates/pool/examples/axum.rs \
         from its first `use` on: copy it over"
    );
}
