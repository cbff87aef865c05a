//! The queue strategy's promises under faults, with real processes: `offload serve --strategy
//! queue` and `offload worker` on one queue, killed and restarted. Each test runs on SQLite (a
//! file in a temp dir), on Redis at `REDIS_URL` and on Postgres at `POSTGRES_URL` (a unique
//! `--queue-name`, its keys or rows deleted after, even when the test fails); without the URL a
//! server's runs say loudly that they did not run, and with `OFFLOAD_REQUIRE_REDIS=1` /
//! `OFFLOAD_REQUIRE_POSTGRES=1` they fail.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::sleep;

use offload::queue::{Counts, JobId};
use offload_queue::testing::{Backend, Place};

use crate::gateway::bad_cases;
use crate::support::{Proc, count_n_for, get, metric, offload_command, request};

/// Worker lease in these tests: short, so a killed worker's jobs run again within seconds
/// (the reaper runs every second, so a lost job waits at most about lease + 1 s).
const LEASE: &str = "1s";
/// Small work for the many-jobs tests: a few ms per job in a debug build.
const SMALL_N: u64 = 200_000;

/// `--queue URL --queue-name NAME` of the test's queue at `place`, then `extra`.
fn queue_args<'a>(place: &'a Place, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--queue",
        place.url(),
        "--queue-name",
        place.name().as_str(),
    ];
    args.extend_from_slice(extra);
    args
}

/// A queue gateway on the test's queue.
fn serve(place: &Place, extra: &[&str]) -> Proc {
    let mut args = vec!["serve", "--strategy", "queue"];
    args.extend(queue_args(place, extra));
    Proc::start(&args)
}

/// A worker on the test's queue, with a short lease.
fn worker(place: &Place, extra: &[&str]) -> Proc {
    let mut args = queue_args(place, &["--lease", LEASE]);
    args.extend_from_slice(extra);
    Proc::start_worker(&args)
}

/// Enqueues through `GET path` and returns the job id; asserts the 202 and its Location.
pub(crate) async fn enqueue(addr: SocketAddr, path: &str) -> String {
    let r = get(addr, path).await;
    assert_eq!(r.status, 202, "{path}: {:?}", r.body);
    let id = r.json()["id"].as_str().expect("an id").to_string();
    assert_eq!(r.headers["location"], format!("/jobs/{id}"));
    id
}

/// `GET /jobs/{id}`, which must answer 200.
pub(crate) async fn job(addr: SocketAddr, id: &str) -> Value {
    let r = get(addr, &format!("/jobs/{id}")).await;
    assert_eq!(r.status, 200, "/jobs/{id}: {:?}", r.body);
    r.json()
}

/// Polls a job until its status is `status`; panics after `within`.
async fn wait_status(addr: SocketAddr, id: &str, status: &str, within: Duration) -> Value {
    let end = Instant::now() + within;
    loop {
        let j = job(addr, id).await;
        if j["status"] == status {
            return j;
        }
        assert!(Instant::now() < end, "job {id} never became {status}: {j}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `offload_jobs{state="done"}` until it reaches `n`; panics after `within`.
pub(crate) async fn wait_done(addr: SocketAddr, n: usize, within: Duration) {
    let end = Instant::now() + within;
    loop {
        let done = jobs_in(addr, "done").await;
        if done >= n as f64 {
            return;
        }
        assert!(Instant::now() < end, "only {done} of {n} jobs done");
        sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn jobs_in(addr: SocketAddr, state: &str) -> f64 {
    metric(addr, &format!("offload_jobs{{state=\"{state}\"}}")).await
}

/// Asserts a job is done with the exact result of `count n`.
pub(crate) fn assert_counted(j: &Value, n: u64) {
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(j["result"]["work"], "count", "{j}");
    assert_eq!(j["result"]["result"].as_u64(), Some(n), "{j}");
    assert!(j.get("error").is_none(), "a done job keeps no error: {j}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A worker killed with SIGKILL mid-job loses its lease; after it expires the job runs on
/// another worker, is counted as a stall (not an attempt), and ends with exactly one result.
async fn killed_worker_job_runs_again(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    let gw = serve(&place, &[]);
    let n = count_n_for(Duration::from_millis(1500)).max(1);
    let doomed = worker(&place, &["--concurrency", "1"]);
    let id = enqueue(gw.addr, &format!("/heavy?n={n}")).await;
    let first = wait_status(gw.addr, &id, "running", Duration::from_secs(10)).await;
    assert_eq!(first["attempts"], 1, "{first}");
    doomed.kill();
    let killed_at = now_ms();
    let rescuer = worker(&place, &["--concurrency", "1"]);
    let j = wait_status(gw.addr, &id, "done", Duration::from_secs(20)).await;
    assert_counted(&j, n);
    assert_eq!(
        (j["attempts"].as_u64(), j["stalls"].as_u64()),
        (Some(1), Some(1)),
        "the lost run is a stall, not an attempt: {j}"
    );
    assert_eq!(metric(gw.addr, "offload_job_stalls_total").await, 1.0);
    let started = j["started_at"].as_u64().unwrap();
    assert!(
        started >= killed_at,
        "the second run started after the kill ({started} < {killed_at})"
    );
    // One result, no duplicate: one job done, nothing left anywhere else.
    for (state, want) in [
        ("done", 1.0),
        ("queued", 0.0),
        ("running", 0.0),
        ("failed", 0.0),
    ] {
        assert_eq!(jobs_in(gw.addr, state).await, want, "{state}");
    }
    drop(rescuer);
}

/// What a kill storm runs: its jobs (how they are enqueued, counted and checked) and the worker
/// program. Offload's built-in work through the gateway and `offload worker` ([`Builtin`]), or a
/// user's own job type through the library and the queue crate's example
/// ([`Checksums`](crate::custom_job::Checksums)).
pub(crate) trait Storm {
    /// Enqueues `jobs` jobs; their ids, in order.
    async fn enqueue(&self, jobs: usize) -> Vec<String>;
    /// Starts a worker on the storm's queue that runs `concurrency` jobs at once.
    fn worker(&self, concurrency: usize) -> Proc;
    /// The queue's jobs by state and its stalls.
    async fn counts(&self) -> Counts;
    /// Asserts that each job is done with its exact result, and no error; their attempts and
    /// stalls, in order.
    async fn check(&self, ids: &[String]) -> Vec<(u32, u32)>;
}

/// Offload's built-in work: `count n` through a queue gateway, run by `offload worker`.
struct Builtin<'a> {
    place: &'a Place,
    gw: Proc,
    n: u64,
}

impl Storm for Builtin<'_> {
    async fn enqueue(&self, jobs: usize) -> Vec<String> {
        let (addr, path) = (self.gw.addr, format!("/heavy?n={}", self.n));
        let mut ids = Vec::with_capacity(jobs);
        let mut batch = JoinSet::new();
        for _ in 0..jobs {
            let path = path.clone();
            batch.spawn(async move { enqueue(addr, &path).await });
            if batch.len() >= 50 {
                ids.push(batch.join_next().await.unwrap().unwrap());
            }
        }
        while let Some(id) = batch.join_next().await {
            ids.push(id.unwrap());
        }
        ids
    }

    fn worker(&self, concurrency: usize) -> Proc {
        worker(self.place, &["--concurrency", &concurrency.to_string()])
    }

    async fn counts(&self) -> Counts {
        let addr = self.gw.addr;
        Counts {
            queued: jobs_in(addr, "queued").await as u64,
            running: jobs_in(addr, "running").await as u64,
            done: jobs_in(addr, "done").await as u64,
            failed: jobs_in(addr, "failed").await as u64,
            cancelled: jobs_in(addr, "cancelled").await as u64,
            expired: jobs_in(addr, "expired").await as u64,
            stalls: metric(addr, "offload_job_stalls_total").await as u64,
        }
    }

    async fn check(&self, ids: &[String]) -> Vec<(u32, u32)> {
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            let j = job(self.gw.addr, id).await;
            assert_counted(&j, self.n);
            let count = |k: &str| j[k].as_u64().and_then(|v| u32::try_from(v).ok());
            runs.push((count("attempts").unwrap(), count("stalls").unwrap()));
        }
        runs
    }
}

/// A kill storm: 1,200 jobs, three workers, one of them SIGKILLed and restarted every 0.5 s,
/// with the default attempt and stall limits. Every job ends done with its exact result, exactly
/// one result each, none failed: a worker's death costs its jobs stalls, not attempts.
async fn kill_storm(storm: &impl Storm, test: &str) {
    const JOBS: usize = 1200;
    let ids = storm.enqueue(JOBS).await;
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        JOBS,
        "ids are unique"
    );

    let steady = [storm.worker(1), storm.worker(1)];
    // The victim holds several jobs at a time (running and prefetched), so each kill loses some.
    let mut victim = storm.worker(4);
    let mut kills = 0;
    let end = Instant::now() + Duration::from_secs(90);
    while storm.counts().await.done < JOBS as u64 {
        assert!(
            Instant::now() < end,
            "not all jobs done after 90 s ({kills} kills)"
        );
        sleep(Duration::from_millis(500)).await;
        victim.kill();
        kills += 1;
        victim = storm.worker(4);
    }
    drop(steady);
    drop(victim);
    assert!(
        kills >= 4,
        "the test must kill a busy worker several times ({kills})"
    );

    let mut stalls = 0;
    for (id, (attempts, lost)) in ids.iter().zip(storm.check(&ids).await) {
        assert_eq!(attempts, 1, "a stall spends no attempt: job {id}");
        stalls += u64::from(lost);
    }
    let counts = storm.counts().await;
    assert_eq!((counts.done, counts.failed), (JOBS as u64, 0), "{counts:?}");
    assert_eq!(
        counts.stalls, stalls,
        "the queue counts every stall the jobs show"
    );
    eprintln!("{test}: {kills} kills, {stalls} runs lost and redone");
    // Proof that the kills hit jobs in flight (else this test tested nothing).
    assert!(stalls > 0, "no job was ever re-run after {kills} kills");
}

/// [`kill_storm`] of offload's built-in work.
async fn kill_storm_fails_nothing(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    // Jobs long enough to be caught mid-run, and enough of them that the drain outlasts many
    // kills even on an idle machine (1,200 jobs of ~10 ms on 2 cores: 6 s or more).
    let n = count_n_for(Duration::from_millis(10)).max(SMALL_N);
    let gw = serve(&place, &[]);
    kill_storm(
        &Builtin {
            place: &place,
            gw,
            n,
        },
        test,
    )
    .await;
}

/// [`kill_storm`] of a user's own job type: enqueued with the library from the test, run by the
/// queue crate's `custom_job` example. It survives as the built-in work does.
async fn custom_job_kill_storm_fails_nothing(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    let storm = crate::custom_job::Checksums::open(place.url(), place.name().as_str()).await;
    kill_storm(&storm, test).await;
}

/// The gateway stopped (SIGTERM) while jobs wait and no worker runs, then started again on the
/// same queue: every job it accepted, including those accepted while it was shutting down, is
/// still there and done once a worker starts.
async fn gateway_restart_keeps_waiting_jobs(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    let first = serve(&place, &[]);
    let addr = first.addr;
    let path = format!("/heavy?n={SMALL_N}");
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(enqueue(addr, &path).await);
    }
    // More requests race the shutdown; those answered 202 must not be lost either.
    let racing = tokio::spawn(async move {
        let mut accepted = Vec::new();
        for _ in 0..200 {
            match try_enqueue(addr, &format!("/heavy?n={SMALL_N}")).await {
                Some(id) => accepted.push(id),
                None => break,
            }
        }
        accepted
    });
    sleep(Duration::from_millis(30)).await;
    assert!(
        first.terminate(Duration::from_secs(10)),
        "the gateway did not exit cleanly on SIGTERM"
    );
    ids.extend(racing.await.unwrap());

    let second = serve(&place, &[]);
    assert_eq!(jobs_in(second.addr, "queued").await, ids.len() as f64);
    for id in &ids {
        assert_eq!(job(second.addr, id).await["status"], "queued");
    }
    let _worker = worker(&place, &[]);
    wait_done(second.addr, ids.len(), Duration::from_secs(30)).await;
    for id in &ids {
        assert_counted(&job(second.addr, id).await, SMALL_N);
    }
}

/// Enqueues one job; `None` if the gateway refused the connection or did not answer 202 (it is
/// shutting down).
async fn try_enqueue(addr: SocketAddr, path: &str) -> Option<String> {
    let r = offload::client::get(addr, path, Duration::from_secs(60))
        .await
        .ok()?;
    if r.status != 202 {
        return None;
    }
    let j: Value = serde_json::from_slice(&r.body).ok()?;
    Some(j["id"].as_str()?.to_string())
}

/// A job that panics its worker's task is retried with a backoff until its attempts are spent,
/// then `failed` with the panic as its error, and stays there: no loop. The worker carries on.
async fn failing_job_is_retried_then_failed(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    let gw = serve(&place, &["--allow-fault", "--max-attempts", "3"]);
    let _worker = worker(&place, &["--allow-fault"]);
    let id = enqueue(gw.addr, "/heavy?work=fault&n=1").await;
    let j = wait_status(gw.addr, &id, "failed", Duration::from_secs(20)).await;
    assert_eq!(
        (j["attempts"].as_u64(), j["max_attempts"].as_u64()),
        (Some(3), Some(3)),
        "{j}"
    );
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("panicked"),
        "the error says what happened: {j}"
    );
    assert!(j.get("result").is_none(), "{j}");
    assert!(j["finished_at"].as_u64().is_some(), "{j}");
    // Longer than the largest backoff left (base 500 ms doubled): a loop would show here.
    sleep(Duration::from_millis(2500)).await;
    let later = job(gw.addr, &id).await;
    assert_eq!(later, j, "a failed job stays failed, untouched");
    for (state, want) in [
        ("failed", 1.0),
        ("queued", 0.0),
        ("running", 0.0),
        ("done", 0.0),
    ] {
        assert_eq!(jobs_in(gw.addr, state).await, want, "{state}");
    }
    // The panics did not take the worker down.
    let ok = enqueue(gw.addr, "/heavy?n=1000").await;
    assert_counted(
        &wait_status(gw.addr, &ok, "done", Duration::from_secs(10)).await,
        1000,
    );
}

/// Bad job ids and bad work specs get their 4xx and enqueue nothing; a full backlog holds a
/// request for room up to its wait (`Prefer: wait=N`), then answers 503 with Retry-After, and
/// holds exactly `--max-backlog` jobs.
async fn bad_input_and_a_full_backlog(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    let gw = serve(&place, &["--max-backlog", "5"]);
    let unknown = JobId::random();
    let r = get(gw.addr, &format!("/jobs/{unknown}")).await;
    assert_eq!((r.status, r.code().as_str()), (404, "job_not_found"));
    for bad in [
        "xyz",
        "0123456789abcdef0123456789abcdeg",
        &"a".repeat(33),
        "%2e%2e",
    ] {
        let r = get(gw.addr, &format!("/jobs/{bad}")).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_job_id"),
            "/jobs/{bad}"
        );
    }
    for (method, path, headers, body, status, code) in bad_cases() {
        let r = request(gw.addr, method, &path, &headers, body).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{method} {path:.60}"
        );
    }
    assert_eq!(metric(gw.addr, "offload_work_handed_off_total").await, 0.0);
    for state in ["queued", "running", "done", "failed"] {
        assert_eq!(
            jobs_in(gw.addr, state).await,
            0.0,
            "{state} after bad input"
        );
    }

    let mut accepted = Vec::new();
    for i in 0..8 {
        // No wait: the backlog's refusal comes at once.
        let r = request(gw.addr, "GET", "/heavy?n=1000", &[("prefer", "wait=0")], "").await;
        if i < 5 {
            assert_eq!(r.status, 202, "job {i}: {:?}", r.body);
            accepted.push(r.json()["id"].as_str().unwrap().to_string());
        } else {
            assert_eq!(
                (r.status, r.code().as_str()),
                (503, "overloaded"),
                "job {i}"
            );
            let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1, "Retry-After {retry}");
        }
    }
    // A wait of a second: held for room that never comes (no worker), then refused.
    let start = std::time::Instant::now();
    let r = request(gw.addr, "GET", "/heavy?n=1000", &[("prefer", "wait=1")], "").await;
    let held = start.elapsed();
    assert_eq!((r.status, r.code().as_str()), (503, "overloaded"));
    assert!(
        held >= std::time::Duration::from_millis(900),
        "held only {held:?}"
    );
    assert_eq!(jobs_in(gw.addr, "queued").await, 5.0);
    for id in &accepted {
        assert_eq!(job(gw.addr, id).await["status"], "queued");
    }
}

/// `DELETE /jobs/{id}` through the gateway: a queued job ends `cancelled` and never runs; a
/// running one ends `cancelled`, its handler is told to stop, and its thread takes the next job;
/// a second cancel is a 409, an unknown id a 404, a malformed one a 400. `POST
/// /jobs/{id}/retry` runs a cancelled job again, and is a 409 for a done one.
async fn cancel_over_http(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    // A job of about a minute, over the default size limit.
    let max = ["--max-count", "1000000000000"];
    let gw = serve(&place, &max);
    let long = count_n_for(Duration::from_secs(60)).max(1);
    let queued = enqueue(gw.addr, &format!("/heavy?n={long}")).await;
    let r = request(gw.addr, "DELETE", &format!("/jobs/{queued}"), &[], "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    let r = request(gw.addr, "DELETE", &format!("/jobs/{queued}"), &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (409, "job_finished"));
    let unknown = JobId::random();
    let r = request(gw.addr, "DELETE", &format!("/jobs/{unknown}"), &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "job_not_found"));
    let r = request(gw.addr, "DELETE", "/jobs/xyz", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_job_id"));
    // A running job: one thread, cancelled once it runs.
    let running = enqueue(gw.addr, &format!("/heavy?n={long}")).await;
    let _worker = worker(&place, &["--concurrency", "1", max[0], max[1]]);
    wait_status(gw.addr, &running, "running", Duration::from_secs(10)).await;
    let r = request(gw.addr, "DELETE", &format!("/jobs/{running}"), &[], "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    // The one thread is free again well before the cancelled job would have ended.
    let next = enqueue(gw.addr, "/heavy?n=1000").await;
    wait_status(gw.addr, &next, "done", Duration::from_secs(8)).await;
    assert_eq!(job(gw.addr, &running).await["status"], "cancelled");
    assert_eq!(job(gw.addr, &queued).await["status"], "cancelled");
    assert_eq!(jobs_in(gw.addr, "cancelled").await, 2.0);
    // Retried, a cancelled job runs again; a done one cannot be retried.
    let r = request(gw.addr, "POST", &format!("/jobs/{next}/retry"), &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (409, "job_not_retryable"));
    let r = request(gw.addr, "POST", &format!("/jobs/{unknown}/retry"), &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "job_not_found"));
    let r = request(gw.addr, "POST", &format!("/jobs/{queued}/retry"), &[], "").await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.headers["location"], format!("/jobs/{queued}"));
    // Read after the retry: the idle worker may have taken it already.
    let status = r.json()["status"].clone();
    assert!(status == "queued" || status == "running", "{status}");
    wait_status(gw.addr, &queued, "running", Duration::from_secs(10)).await;
    let r = request(gw.addr, "DELETE", &format!("/jobs/{queued}"), &[], "").await;
    assert_eq!(r.json()["status"], "cancelled");
}

/// `Idempotency-Key` and `Job-Deadline` on `/heavy` through the gateway: 100 requests sent
/// together under one key store one job and all get its `Location`; other work under the key
/// is a 422; bad keys and deadlines are 400s and store nothing; a job still queued at its
/// deadline ends `expired` unrun (its worker starts after the deadline), and can be retried;
/// once the keyed job is done, a repeat gets its result.
async fn keys_and_deadlines_over_http(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    let gw = serve(&place, &[]);
    let mut sends = JoinSet::new();
    for i in 0..100 {
        let addr = gw.addr;
        // Half as the draft writes the key (a quoted string), half bare.
        let key = if i % 2 == 0 { "\"order-7\"" } else { "order-7" };
        sends.spawn(async move {
            let r = request(
                addr,
                "GET",
                "/heavy?n=1000",
                &[("idempotency-key", key)],
                "",
            )
            .await;
            (
                r.status,
                r.headers
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        });
    }
    let answers = sends.join_all().await;
    let location = answers[0].1.clone().expect("a Location");
    for (status, at) in &answers {
        assert_eq!((*status, at.as_deref()), (202, Some(location.as_str())));
    }
    assert_eq!(jobs_in(gw.addr, "queued").await, 1.0, "one job stored");
    let key = [("idempotency-key", "order-7")];
    let r = request(gw.addr, "GET", "/heavy?n=2000", &key, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "idempotency_key_reused")
    );
    let long = "k".repeat(256);
    for (header, value, code) in [
        ("idempotency-key", long.as_str(), "invalid_idempotency_key"),
        ("job-deadline", "0", "invalid_deadline"),
        ("job-deadline", "1e9", "invalid_deadline"),
        ("job-delay", "-1", "invalid_schedule"),
        ("job-priority", "10", "invalid_schedule"),
    ] {
        let r = request(gw.addr, "GET", "/heavy?n=1000", &[(header, value)], "").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, code),
            "{header}: {value}"
        );
    }
    assert_eq!(
        jobs_in(gw.addr, "queued").await,
        1.0,
        "refusals store nothing"
    );
    let r = request(
        gw.addr,
        "GET",
        "/heavy?n=3000",
        &[("job-deadline", "0.3")],
        "",
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let late = r.json()["id"].as_str().unwrap().to_owned();
    assert!(job(gw.addr, &late).await["expires_at"].is_u64());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _worker = worker(&place, &[]);
    wait_status(gw.addr, &late, "expired", Duration::from_secs(10)).await;
    let keyed = location.trim_start_matches("/jobs/").to_owned();
    wait_status(gw.addr, &keyed, "done", Duration::from_secs(10)).await;
    let late_job = job(gw.addr, &late).await;
    assert_eq!(late_job["attempts"], 0, "never ran: {late_job}");
    assert_eq!(jobs_in(gw.addr, "expired").await, 1.0);
    let r = get(gw.addr, "/jobs?status=expired&limit=10").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let page = r.json();
    assert_eq!(page["jobs"][0]["id"], late.as_str(), "{page}");
    assert_eq!(
        page["jobs"][0]["error"]
            .as_str()
            .map(|e| e.starts_with("expired")),
        Some(true)
    );
    assert!(page["next"].is_null(), "{page}");
    let r = get(gw.addr, "/jobs?status=expired&after=not-a-cursor").await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_query"));
    let r = request(gw.addr, "GET", "/heavy?n=1000", &key, "").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["content-location"], location);
    assert_eq!(r.json()["status"], "done");
    assert_eq!(r.json()["result"]["n"], 1000);
    let r = request(gw.addr, "POST", &format!("/jobs/{late}/retry"), &[], "").await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_status(gw.addr, &late, "done", Duration::from_secs(10)).await;
}

offload_queue::store_tests!(
    sqlite = Backend::Sqlite, redis = Backend::Redis, postgres = Backend::Postgres;
    killed_worker_job_runs_again,
    kill_storm_fails_nothing,
    custom_job_kill_storm_fails_nothing,
    gateway_restart_keeps_waiting_jobs,
    failing_job_is_retried_then_failed,
    bad_input_and_a_full_backlog,
    cancel_over_http,
    keys_and_deadlines_over_http,
);

/// A queue name outside `[A-Za-z0-9_-]{1,64}` (here `a*`, which on Redis was a glob matching
/// every queue whose name starts with `a`) is refused by `offload serve` and `offload worker`
/// before anything starts, from the flag or the environment: a non-zero exit, and a message
/// that names the rule; the store is never opened.
#[test]
fn a_queue_name_outside_the_rule_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("q.db");
    let sqlite = format!("sqlite://{}", file.display());
    // Nothing listens there: a worker that got as far as connecting would fail differently.
    let redis = "redis://127.0.0.1:1";
    let long = "x".repeat(65);
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (
            vec![
                "serve",
                "--strategy",
                "queue",
                "--queue",
                &sqlite,
                "--queue-name",
                "a*",
            ],
            None,
        ),
        (
            vec!["worker", "--queue", &sqlite, "--queue-name", "a*"],
            None,
        ),
        (vec!["worker", "--queue", redis, "--queue-name", "a*"], None),
        (
            vec![
                "serve",
                "--strategy",
                "auto",
                "--queue",
                redis,
                "--queue-name",
                "{a}",
            ],
            None,
        ),
        (vec!["worker", "--queue", &sqlite, "--queue-name", ""], None),
        (
            vec!["worker", "--queue", &sqlite, "--queue-name", &long],
            None,
        ),
        (
            vec!["serve", "--strategy", "queue", "--queue", &sqlite],
            Some("a*"),
        ),
        (vec!["worker", "--queue", redis], Some("a b")),
    ];
    for (args, env) in cases {
        let mut cmd = offload_command();
        cmd.args(&args)
            .env_remove("OFFLOAD_QUEUE_NAME")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(name) = env {
            cmd.env("OFFLOAD_QUEUE_NAME", name);
        }
        let out = cmd.output().expect("run offload");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{args:?} {env:?} ran: {stdout}");
        assert!(
            stderr.contains("invalid queue name") && stderr.contains("[A-Za-z0-9_-]{1,64}"),
            "{args:?} {env:?}: {stderr}"
        );
        assert!(stdout.is_empty(), "{args:?} {env:?} started: {stdout}");
        assert!(!file.exists(), "{args:?} {env:?} opened the queue");
    }
}
