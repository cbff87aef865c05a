//! `queue` across the test network: the store on a host of its own (Redis or Postgres bound to
//! its address), a gateway host and worker hosts; a worker host cut off for longer than its
//! lease, the store cut off from the gateway, and 1 % loss on every link.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::time::{Duration, Instant};

use offload::queue::JobId;
use offload_queue::testing::Backend;
use tokio::task::JoinSet;

use super::{Link, Net};
use crate::queue_faults::{assert_counted, enqueue, job, jobs_in, wait_done};
use crate::support::{Proc, count_n_for, exclusive, get, metric};

/// The worker lease in these tests: short, so a lost host's jobs move within seconds.
const LEASE: &str = "1s";

/// 1 ms ± 0.2 ms on each host's link.
const LAN: Link = Link {
    delay: Duration::from_millis(1),
    jitter: Duration::from_micros(200),
    loss: 0.0,
};

/// The test's lock (network tests run one at a time: each builds a network of its own) and its
/// name with its backend's, `redis::NAME` or `postgres::NAME`, for its hosts and messages.
async fn begin(b: Backend, test: &str) -> (tokio::sync::MutexGuard<'static, ()>, String) {
    let serial = exclusive().await;
    let server = match b {
        Backend::Redis => "redis",
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    };
    (serial, format!("{server}::{test}"))
}

/// A network with the store running on host `s`, and the flags every process of the test's
/// queue shares (URL and a queue name of its own).
struct Site {
    net: Net,
    queue: Vec<String>,
}

impl Site {
    fn start(b: Backend, test: &str, hosts: &[&str]) -> Option<Site> {
        let mut net = Net::new(test, hosts)?;
        let url = match b {
            Backend::Redis => net.redis("s"),
            Backend::Postgres => net.postgres(test, "s")?,
            Backend::Sqlite => panic!("a SQLite file is not reached across a network ({test})"),
        };
        let name = format!("netns-{}", &JobId::random().as_str()[..8]);
        net.set_all_links(LAN);
        Some(Site {
            net,
            queue: vec!["--queue".into(), url, "--queue-name".into(), name],
        })
    }

    fn args<'a>(&'a self, head: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = head.to_vec();
        args.extend(self.queue.iter().map(String::as_str));
        args.extend_from_slice(extra);
        args
    }

    fn gateway(&self, extra: &[&str]) -> Proc {
        let args = self.args(&["serve", "--strategy", "queue"], extra);
        self.net.offload("g", &args)
    }

    /// A worker on `host` with the test's lease, its warnings logged to `log`.
    fn worker(&self, host: &str, extra: &[&str], log: Option<&File>) -> Proc {
        let args = self.args(&["--lease", LEASE], extra);
        self.net.worker(host, &args, log)
    }
}

fn log_text(log: &tempfile::NamedTempFile) -> String {
    let mut s = String::new();
    let _ = File::open(log.path()).and_then(|mut f| f.read_to_string(&mut s));
    s
}

/// One worker host cut off (`ip link set down`) while it runs a long job, for longer than the
/// lease; the other worker's reaper takes the job back and runs it. Healed, the stale worker's
/// lease is refused (it logs it) and the stored result stays the other worker's; every job is
/// done once, the lost runs counted as stalls; the healed worker then takes jobs again.
async fn a_worker_cut_off_past_its_lease_is_refused(b: Backend, test: &str) {
    let (_serial, test) = begin(b, test).await;
    let test = test.as_str();
    let Some(site) = Site::start(b, test, &["g", "w1", "w2", "s"]) else {
        return;
    };
    let gw = site.gateway(&[]);
    let stale_log = super::temp_log();
    let w1 = site.worker("w1", &["--concurrency", "1"], Some(stale_log.as_file()));
    let long_n = count_n_for(Duration::from_secs(4));
    let long = enqueue(gw.addr, &format!("/heavy?n={long_n}")).await;
    let mut status = job(gw.addr, &long).await;
    let end = Instant::now() + Duration::from_secs(20);
    while status["status"] != "running" {
        assert!(
            Instant::now() < end,
            "w1 never started the long job: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = job(gw.addr, &long).await;
    }
    // w1 holds the long job and some small ones claimed ahead; w2 takes the rest.
    let w2 = site.worker("w2", &["--concurrency", "1"], None);
    let small_n = 200_000;
    let mut small = Vec::new();
    for _ in 0..100 {
        small.push(enqueue(gw.addr, &format!("/heavy?n={small_n}")).await);
    }
    site.net.cut("w1");
    let cut_at = Instant::now();
    // Longer than the lease and a reaper's round, until w2 has taken the long job over.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let j = job(gw.addr, &long).await;
        if j["stalls"].as_u64() >= Some(1) && cut_at.elapsed() >= Duration::from_secs(3) {
            break;
        }
        assert!(Instant::now() < end, "the long job never moved to w2: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    site.net.restore("w1");
    let healed = Instant::now();
    let out = cut_at.elapsed();
    wait_done(gw.addr, 101, Duration::from_secs(60)).await;
    let done = job(gw.addr, &long).await;
    assert_counted(&done, long_n);
    // The stale worker hears that its lease is gone: refused by the store, nothing written.
    let end = Instant::now() + Duration::from_secs(40);
    while !log_text(&stale_log).contains("lease lost") {
        assert!(
            Instant::now() < end,
            "w1 was never refused; its log:\n{}",
            log_text(&stale_log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_after = healed.elapsed();
    // Whatever w1 still had to say has been said: the stored result is unchanged.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        job(gw.addr, &long).await,
        done,
        "the stale worker overwrote the result"
    );
    let mut stalls = done["stalls"].as_u64().unwrap();
    for id in &small {
        let j = job(gw.addr, id).await;
        assert_counted(&j, small_n);
        assert_eq!(
            j["attempts"], 1,
            "a lost run is a stall, not an attempt: {j}"
        );
        stalls += j["stalls"].as_u64().unwrap();
    }
    assert_eq!(jobs_in(gw.addr, "done").await, 101.0);
    assert_eq!(jobs_in(gw.addr, "failed").await, 0.0);
    assert_eq!(
        metric(gw.addr, "offload_job_stalls_total").await,
        stalls as f64
    );
    // w1 works again: with w2 gone, new jobs are done by w1 alone.
    assert!(
        w2.terminate(Duration::from_secs(15)),
        "w2 did not stop cleanly"
    );
    let t = Instant::now();
    let mut more = Vec::new();
    for _ in 0..10 {
        more.push(enqueue(gw.addr, "/heavy?n=1000").await);
    }
    wait_done(gw.addr, 111, Duration::from_secs(30)).await;
    let w1_back = t.elapsed();
    for id in &more {
        assert_counted(&job(gw.addr, id).await, 1000);
    }
    let log = log_text(&stale_log);
    let beats = log.matches("lease lost; abandoning the run").count();
    let completions = log.matches("lease lost before completion").count();
    eprintln!(
        "netns {test}: 101 jobs, 0 failed, {stalls} run(s) lost with w1 and redone (stalls), \
         w1 cut off for {out:?} (lease {LEASE}); w1 refused {beats} heartbeat(s) and \
         {completions} completion(s), the first {refused_after:?} after the heal; 10 more \
         jobs on w1 alone done in {w1_back:?}"
    );
    assert!(stalls >= 1);
    drop(w1);
}

/// Redis only: a worker host cut off past the store client's reply timeout (10 s), so that
/// its heartbeat gives up and the run it finished meanwhile is sent as a completion, still
/// waiting when the host comes back. By then the job is another worker's and done: the store
/// refuses the stale completion, and the stored result stays. (On Postgres a statement waits
/// 30 s, so the same path takes over half a minute; the heartbeat refusal above covers it.)
async fn a_stale_completion_is_refused(b: Backend, test: &str) {
    let (_serial, test) = begin(b, test).await;
    let test = test.as_str();
    let Some(site) = Site::start(b, test, &["g", "w1", "w2", "s"]) else {
        return;
    };
    let gw = site.gateway(&[]);
    let stale_log = super::temp_log();
    let _w1 = site.worker("w1", &["--concurrency", "1"], Some(stale_log.as_file()));
    let n = count_n_for(Duration::from_millis(1500));
    let id = enqueue(gw.addr, &format!("/heavy?n={n}")).await;
    let end = Instant::now() + Duration::from_secs(20);
    while job(gw.addr, &id).await["status"] != "running" {
        assert!(Instant::now() < end, "w1 never started the job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _w2 = site.worker("w2", &["--concurrency", "1"], None);
    site.net.cut("w1");
    let cut_at = Instant::now();
    let end = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let j = job(gw.addr, &id).await;
        if j["status"] == "done" {
            break j;
        }
        assert!(Instant::now() < end, "w2 never finished the job: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_counted(&done, n);
    assert_eq!(done["stalls"], 1, "{done}");
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(cut_at.elapsed())).await;
    site.net.restore("w1");
    let healed = Instant::now();
    let end = Instant::now() + Duration::from_secs(30);
    while !log_text(&stale_log).contains("lease lost before completion") {
        assert!(
            Instant::now() < end,
            "w1's completion was never refused; its log:\n{}",
            log_text(&stale_log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_after = healed.elapsed();
    assert_eq!(
        job(gw.addr, &id).await,
        done,
        "the stale completion overwrote the result"
    );
    assert_eq!(jobs_in(gw.addr, "done").await, 1.0);
    eprintln!(
        "netns {test}: w1 cut off for 12 s while w2 redid its job (1 stall); w1's completion \
         refused {refused_after:?} after the heal, the stored result unchanged"
    );
}

/// The store cut off from the gateway (the workers still reach it): enqueues answer 503
/// `queue_unavailable` within a bounded time, never hanging, and `/health` answers at once.
/// Healed, enqueues succeed again within seconds, and every job acknowledged before, during or
/// after is done.
async fn the_store_cut_off_from_the_gateway_answers_503_at_once(b: Backend, test: &str) {
    let (_serial, test) = begin(b, test).await;
    let test = test.as_str();
    let Some(site) = Site::start(b, test, &["g", "w1", "s"]) else {
        return;
    };
    let gw = site.gateway(&[]);
    let _w = site.worker("w1", &[], None);
    let path = "/heavy?n=100000";
    let mut acked = Vec::new();
    for _ in 0..20 {
        acked.push(enqueue(gw.addr, path).await);
    }
    site.net.partition("g", "s");
    let cut_at = Instant::now();
    // Requests during the partition: each one answered, none hanging.
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    let mut waits = Vec::new();
    while cut_at.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        let r = get(gw.addr, path).await;
        let took = t.elapsed();
        match r.status {
            202 => acked.push(r.json()["id"].as_str().unwrap().to_string()),
            503 => {
                assert_eq!(r.code(), "queue_unavailable", "{:?}", r.body);
                assert!(r.headers.contains_key("retry-after"));
                refused += 1;
                slowest = slowest.max(took);
                waits.push(took);
            }
            s => panic!("status {s} during the partition: {:?}", r.body),
        }
        let t = Instant::now();
        assert_eq!(get(gw.addr, "/health").await.status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "/health took {:?}",
            t.elapsed()
        );
    }
    waits.sort();
    // Watching it: /metrics says the store is out of reach, and a job's status is refused,
    // both at once.
    let t = Instant::now();
    assert_eq!(metric(gw.addr, "offload_queue_up").await, 0.0);
    let r = get(gw.addr, &format!("/jobs/{}", acked[0])).await;
    assert_eq!((r.status, r.code().as_str()), (503, "queue_unavailable"));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    site.net.heal("g", "s");
    let healed = Instant::now();
    let back = loop {
        let r = get(gw.addr, path).await;
        if r.status == 202 {
            acked.push(r.json()["id"].as_str().unwrap().to_string());
            break healed.elapsed();
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(
            healed.elapsed() < Duration::from_secs(60),
            "enqueue never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for _ in 0..20 {
        acked.push(enqueue(gw.addr, path).await);
    }
    wait_done(gw.addr, acked.len(), Duration::from_secs(60)).await;
    for id in &acked {
        assert_counted(&job(gw.addr, id).await, 100_000);
    }
    // An enqueue that timed out was sent, and may have been stored once the partition healed
    // (its 503 says "retry later", not "not stored"); an at-once refusal never reached the
    // store. So beyond the acknowledged jobs there are at most the timed-out ones.
    let done = jobs_in(gw.addr, "done").await as usize;
    let waited = waits
        .iter()
        .filter(|w| **w >= Duration::from_secs(1))
        .count();
    eprintln!(
        "netns {test}: {} jobs acknowledged and done, 0 lost; {refused} enqueues refused 503 \
         queue_unavailable during the 6 s partition ({waited} after waiting for the store, \
         slowest {slowest:?}, the rest at once, median {:?}); {} unacknowledged job(s) \
         stored late; enqueue accepted again {back:?} after the heal",
        acked.len(),
        waits.get(waits.len() / 2).copied().unwrap_or_default(),
        done - acked.len(),
    );
    assert!(
        done >= acked.len() && done - acked.len() <= waited,
        "{done} done"
    );
    assert!(refused >= 10, "only {refused} requests in 6 s: some hung");
    assert!(
        slowest < Duration::from_secs(5),
        "a refusal took {slowest:?}"
    );
    assert!(
        waited <= 2,
        "{waited} refusals waited for the store: {waits:?}"
    );
}

/// `GET /jobs?latency=N` while the store is cut off from the gateway: 503 `queue_unavailable`
/// (with `Retry-After`) within the store timeout (2 s) and a margin, not the store client's own
/// 10-30 s; then at once while the gateway knows the store is out of reach. Healed, it answers
/// the times of the jobs done before.
async fn jobs_with_latency_answer_503_within_the_store_timeout(b: Backend, test: &str) {
    /// The gateway's store timeout (`STORE_WAIT`), and what is allowed beyond it.
    const STORE_WAIT: Duration = Duration::from_secs(2);
    const MARGIN: Duration = Duration::from_secs(1);
    let (_serial, test) = begin(b, test).await;
    let test = test.as_str();
    let Some(site) = Site::start(b, test, &["g", "w1", "s"]) else {
        return;
    };
    let gw = site.gateway(&[]);
    let _w = site.worker("w1", &[], None);
    const JOBS: usize = 5;
    for _ in 0..JOBS {
        enqueue(gw.addr, "/heavy?n=1000").await;
    }
    wait_done(gw.addr, JOBS, Duration::from_secs(60)).await;
    let path = "/jobs?latency=100000";
    let r = get(gw.addr, path).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.json()["enqueue_to_done_ms"]["count"],
        JOBS,
        "{:?}",
        r.body
    );

    site.net.partition("g", "s");
    let t = Instant::now();
    let r = get(gw.addr, path).await;
    let first = t.elapsed();
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "queue_unavailable"),
        "{:?}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        first <= STORE_WAIT + MARGIN,
        "the first call during the partition took {first:?}"
    );
    let t = Instant::now();
    let r = get(gw.addr, path).await;
    let second = t.elapsed();
    assert_eq!((r.status, r.code().as_str()), (503, "queue_unavailable"));
    assert!(
        second < Duration::from_secs(1),
        "the second took {second:?}"
    );

    site.net.heal("g", "s");
    let healed = Instant::now();
    let back = loop {
        let r = get(gw.addr, path).await;
        if r.status == 200 {
            assert_eq!(
                r.json()["enqueue_to_done_ms"]["count"],
                JOBS,
                "{:?}",
                r.body
            );
            break healed.elapsed();
        }
        assert_eq!(r.status, 503, "{:?}", r.body);
        assert!(
            healed.elapsed() < Duration::from_secs(60),
            "/jobs never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "netns {test}: GET {path} during the partition: 503 queue_unavailable after {first:?} \
         (store timeout {STORE_WAIT:?}), then after {second:?}; 200 again {back:?} after the heal"
    );
}

/// 1 % of frames lost on every host's link (and 1 ms delay) while two workers drain a few
/// hundred jobs: every accepted job is done once with its exact result, none failed, none
/// duplicated.
async fn one_percent_loss_on_every_link_loses_nothing(b: Backend, test: &str) {
    const JOBS: usize = 300;
    let (_serial, test) = begin(b, test).await;
    let test = test.as_str();
    let Some(site) = Site::start(b, test, &["g", "w1", "w2", "s"]) else {
        return;
    };
    site.net.set_all_links(Link { loss: 0.01, ..LAN });
    let gw = site.gateway(&[]);
    let _w1 = site.worker("w1", &["--concurrency", "1"], None);
    let _w2 = site.worker("w2", &["--concurrency", "1"], None);
    let n = count_n_for(Duration::from_millis(2)).max(1000);
    let path = format!("/heavy?n={n}");
    let t = Instant::now();
    let mut ids = Vec::with_capacity(JOBS);
    let mut batch = JoinSet::new();
    let addr = gw.addr;
    for _ in 0..JOBS {
        let path = path.clone();
        batch.spawn(async move { enqueue(addr, &path).await });
        if batch.len() >= 10 {
            ids.push(batch.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(id) = batch.join_next().await {
        ids.push(id.unwrap());
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), JOBS);
    wait_done(gw.addr, JOBS, Duration::from_secs(120)).await;
    let took = t.elapsed();
    let mut stalls = 0;
    for id in &ids {
        let j = job(gw.addr, id).await;
        assert_counted(&j, n);
        stalls += j["stalls"].as_u64().unwrap();
    }
    for (state, want) in [("done", JOBS), ("queued", 0), ("running", 0), ("failed", 0)] {
        assert_eq!(jobs_in(gw.addr, state).await, want as f64, "{state}");
    }
    let lost = site.net.frames_lost();
    eprintln!(
        "netns {test}: {JOBS} jobs enqueued and done in {took:?}, 0 lost, 0 duplicated, \
         {stalls} stall(s); the links dropped {lost} frames"
    );
    assert!(lost > 0, "no frame was lost: the test tested nothing");
}

offload_queue::store_tests!(
    redis = Backend::Redis, postgres = Backend::Postgres;
    a_worker_cut_off_past_its_lease_is_refused,
    the_store_cut_off_from_the_gateway_answers_503_at_once,
    jobs_with_latency_answer_503_within_the_store_timeout,
    one_percent_loss_on_every_link_loses_nothing,
);
offload_queue::store_tests!(redis_only = Backend::Redis; a_stale_completion_is_refused);
