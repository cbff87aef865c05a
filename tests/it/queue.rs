//! Queue conformance suite: one set of tests, each run on SQLite (temp dir), on Redis at
//! `REDIS_URL` (a unique key prefix per test, deleted after) and on Postgres at `POSTGRES_URL`
//! (a unique queue name per test, its rows deleted after). Without the URL a server's runs say
//! loudly that they did not run; with `OFFLOAD_REQUIRE_REDIS=1` / `OFFLOAD_REQUIRE_POSTGRES=1`
//! they fail instead. A URL that cannot be reached always fails: a set URL means that server was
//! meant to be tested.

use std::time::Duration;

use tokio::time::{Instant, sleep};

use offload::queue::{
    Completion, JobId, JobQueue, NewJob, Queue, QueueName, QueueOptions, WorkerId, open,
};

/// Short leases keep the suite fast; still far above a claim's round trip.
const LEASE: Duration = Duration::from_millis(300);
/// Nothing blocks in these tests: a claim that finds nothing must answer quickly.
const NO_WAIT: Duration = Duration::ZERO;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Redis,
    Postgres,
}

/// One queue under test; `handle` opens another connection to it, as another process would.
struct Harness {
    url: String,
    options: QueueOptions,
    queue: Queue,
    _dir: Option<tempfile::TempDir>,
}

fn options() -> QueueOptions {
    QueueOptions {
        retry_base: Duration::from_millis(40),
        retry_max: Duration::from_millis(200),
        ..QueueOptions::default()
    }
}

/// Deletes a test's Redis keys or Postgres rows for queue `name` at `url` (nothing for
/// SQLite, whose file goes with its temp dir), also when the test failed. For `Drop`: on a
/// thread and runtime of its own, as drop may run inside the test's runtime, which cannot
/// block on another future.
pub(crate) fn destroy_queue_data(url: String, name: offload::queue::QueueName) {
    let cleaned = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let options = offload::queue::QueueOptions {
                name,
                ..offload::queue::QueueOptions::default()
            };
            match offload::queue::open(&url, options)
                .await
                .map_err(|e| e.to_string())?
            {
                offload::queue::Queue::Redis(q) => q.destroy().await.map_err(|e| e.to_string()),
                offload::queue::Queue::Postgres(q) => q.destroy().await.map_err(|e| e.to_string()),
                offload::queue::Queue::Sqlite(_) => Ok(()),
            }
        })
    })
    .join();
    if let Ok(Err(e)) = cleaned {
        eprintln!("could not delete the test's queue data: {e}");
    }
}

pub(crate) fn redis_url(test: &str) -> Option<String> {
    server_url("REDIS_URL", "OFFLOAD_REQUIRE_REDIS", "Redis", test)
}

pub(crate) fn postgres_url(test: &str) -> Option<String> {
    server_url("POSTGRES_URL", "OFFLOAD_REQUIRE_POSTGRES", "Postgres", test)
}

/// The server URL in `var`; without it, a loud skip, or a failure if `require` is `1`.
fn server_url(var: &str, require: &str, server: &str, test: &str) -> Option<String> {
    let required = std::env::var(require).is_ok_and(|v| v == "1");
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if required => panic!("{require}=1 but {var} is not set ({test})"),
        _ => {
            crate::support::did_not_run(&format!("{var} is not set: {server} queue test `{test}`"));
            None
        }
    }
}

/// A queue name of the test's own: `test-{test}-{8 random hex}`.
pub(crate) fn test_name(test: &str) -> QueueName {
    QueueName::new(format!("test-{test}-{}", &JobId::random().as_str()[..8]))
        .expect("a valid queue name")
}

impl Backend {
    async fn open(self, test: &str, options: QueueOptions) -> Option<Harness> {
        let (url, dir, options) = match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("q.db").display());
                (url, Some(dir), options)
            }
            Backend::Redis => {
                let url = redis_url(test)?;
                let name = test_name(test);
                (url, None, QueueOptions { name, ..options })
            }
            Backend::Postgres => {
                let url = postgres_url(test)?;
                let name = test_name(test);
                (url, None, QueueOptions { name, ..options })
            }
        };
        let queue = match open(&url, options.clone()).await {
            Ok(q) => q,
            Err(e) => panic!("cannot open {url}: {e}"),
        };
        Some(Harness {
            url,
            options,
            queue,
            _dir: dir,
        })
    }
}

impl Harness {
    async fn handle(&self) -> Queue {
        open(&self.url, self.options.clone())
            .await
            .expect("second handle")
    }

    async fn cleanup(self) {
        match &self.queue {
            Queue::Redis(q) => q.destroy().await.expect("delete test keys"),
            Queue::Postgres(q) => q.destroy().await.expect("delete test rows"),
            Queue::Sqlite(_) => {}
        }
    }
}

/// Runs a conformance test on every backend.
macro_rules! conformance {
    ($($part:ident :: $name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$part::$name(super::Backend::Sqlite, stringify!($name)).await
            })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$part::$name(super::Backend::Redis, stringify!($name)).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$part::$name(super::Backend::Postgres, stringify!($name)).await
            })*
        }
    };
}

mod cancel;
mod loops;
mod ops;

conformance!(
    ops::round_trip,
    ops::unknown_and_malformed_ids,
    ops::claim_is_exclusive,
    ops::batched_claims_are_exclusive,
    ops::stale_holder_is_refused,
    ops::retry_with_backoff_then_failed,
    ops::poison_job_ends_failed,
    ops::cap_rejects_exactly_the_overflow,
    ops::a_prefix_stops_at_the_first_job_that_does_not_fit,
    ops::prune_after_retention,
    ops::latency_counts_done_jobs_by_label,
    ops::counts_drop_jobs_past_retention_before_prune,
    loops::dead_worker_job_runs_again,
    loops::shutdown_gives_jobs_back,
    loops::long_job_keeps_its_lease,
    loops::panicking_job_is_retried,
    loops::worker_loops_drain_everything,
    cancel::cancel_ends_unfinished_jobs_only,
    cancel::cancelled_jobs_free_the_backlog_and_expire,
    cancel::cancel_tells_a_running_handler_to_stop,
    cancel::retry_requeues_failed_and_cancelled_jobs,
);

/// Redis only: a server restart without persistence (or deleted keys) loses the consumer group;
/// the queue recreates it instead of failing every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_recreates_a_lost_group() {
    let Some(h) = Backend::Redis.open("lost_group", options()).await else {
        return;
    };
    let Queue::Redis(q) = &h.queue else {
        unreachable!()
    };
    q.destroy().await.unwrap();
    let id = h.queue.enqueue(NewJob::new("1")).await.unwrap();
    let me = WorkerId::new();
    let job = h
        .queue
        .claim(&me, LEASE, NO_WAIT)
        .await
        .unwrap()
        .expect("job after recovery");
    assert_eq!(job.id, id);
    q.destroy().await.unwrap();
    // And again after a second loss, with a blocking wait.
    assert!(
        h.queue
            .claim(&me, LEASE, Duration::from_millis(50))
            .await
            .unwrap()
            .is_none()
    );
    h.cleanup().await;
}

/// Redis only: an entry read by a worker that died before its claim script ran (the gap in the
/// blocking-read path) is delivered again by the reaper, without counting an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_redelivers_an_entry_read_but_never_started() {
    let Some(h) = Backend::Redis.open("read_not_started", options()).await else {
        return;
    };
    let id = h.queue.enqueue(NewJob::new("1")).await.unwrap();
    let client = ::redis::Client::open(h.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("{{{}}}:stream", h.options.name);
    let read: ::redis::Value = ::redis::cmd("XREADGROUP")
        .arg(&[
            "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", &stream, ">",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_ne!(read, ::redis::Value::Nil, "the ghost read the entry");
    let me = WorkerId::new();
    assert!(h.queue.claim(&me, LEASE, NO_WAIT).await.unwrap().is_none());
    sleep(LEASE + Duration::from_millis(100)).await;
    assert_eq!(h.queue.reap().await.unwrap(), 1);
    let job = h
        .queue
        .claim(&me, LEASE, NO_WAIT)
        .await
        .unwrap()
        .expect("delivered again");
    assert_eq!((job.id, job.attempt), (id, 1));
    h.cleanup().await;
}

/// Postgres only: an idle claim with a wait wakes on the enqueue's `NOTIFY` from another
/// connection within milliseconds, not at the end of its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_idle_claim_wakes_on_notify() {
    let Some(h) = Backend::Postgres.open("pg_notify", options()).await else {
        return;
    };
    let producer = h.handle().await;
    let waiting = tokio::spawn({
        let q = h.queue.clone();
        async move {
            let job = q
                .claim(&WorkerId::new(), LEASE, Duration::from_secs(5))
                .await
                .unwrap();
            (job, Instant::now())
        }
    });
    sleep(Duration::from_millis(200)).await;
    let id = producer.enqueue(NewJob::new("1")).await.unwrap();
    let enqueued = Instant::now();
    let (job, woke) = waiting.await.unwrap();
    assert_eq!(job.expect("woken with the job").id, id);
    let after = woke.saturating_duration_since(enqueued);
    assert!(
        after < Duration::from_secs(1),
        "woke {after:?} after the enqueue"
    );
    h.cleanup().await;
}

/// Postgres only: connections killed by the server (as on a restart) are replaced on the next
/// call, and the `LISTEN` connection listens again, so idle claims still wake on `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reconnects_after_lost_connections() {
    let Some(base) = postgres_url("pg_reconnect") else {
        return;
    };
    // A name for this test's connections, so only they are killed.
    let app = format!("offload-test-{}", &JobId::random().as_str()[..8]);
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}application_name={app}");
    let options = QueueOptions {
        name: test_name("pg-reconnect"),
        ..options()
    };
    let q = open(&url, options.clone()).await.expect("open");
    let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    let kill = || async {
        let row = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    let connections = || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    assert_eq!(kill().await, 2, "the shared and the LISTEN connection");
    let me = WorkerId::new();
    let id = q
        .enqueue(NewJob::new("1"))
        .await
        .expect("enqueue after the kill");
    let job = q
        .claim(&me, LEASE, NO_WAIT)
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(job.id, id);
    assert_eq!(
        q.complete(&job, Ok("2".into())).await.unwrap(),
        Completion::Done
    );

    // Once the LISTEN task is back (it reconnects on its own), kill both again: a waiting claim
    // still wakes.
    let end = Instant::now() + Duration::from_secs(5);
    while connections().await < 2 {
        assert!(
            Instant::now() < end,
            "the LISTEN connection did not come back"
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kill().await, 2);
    let end = Instant::now() + Duration::from_secs(5);
    while connections().await < 1 {
        assert!(
            Instant::now() < end,
            "the LISTEN connection did not come back"
        );
        sleep(Duration::from_millis(20)).await;
    }
    let waiting = tokio::spawn({
        let q = q.clone();
        async move {
            let job = q
                .claim(&WorkerId::new(), LEASE, Duration::from_secs(5))
                .await;
            (job, Instant::now())
        }
    });
    sleep(Duration::from_millis(200)).await;
    let producer = open(&base, options).await.expect("producer");
    let id = producer.enqueue(NewJob::new("3")).await.unwrap();
    let enqueued = Instant::now();
    let (job, woke) = waiting.await.unwrap();
    assert_eq!(job.unwrap().expect("woken with the job").id, id);
    let after = woke.saturating_duration_since(enqueued);
    assert!(
        after < Duration::from_secs(1),
        "woke {after:?} after the enqueue"
    );
    if let Queue::Postgres(p) = &producer {
        p.destroy().await.unwrap();
    }
}

/// Redis only: `destroy` deletes its queue's keys and no other queue's, also those of a queue
/// whose name begins with its name (`…` and `…-b`, both holding waiting and done jobs and a
/// latency histogram). (A name with glob characters, the way one queue's `SCAN MATCH` pattern
/// once matched another's keys, cannot be made: see `offload::queue::QueueName`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_destroy_leaves_other_queues_alone() {
    let Some(url) = redis_url("destroy_alone") else {
        return;
    };
    let a_name = test_name("destroy");
    let b_name = QueueName::new(format!("{a_name}-b")).unwrap();
    let open_named = |name: &QueueName| {
        let options = QueueOptions {
            name: name.clone(),
            ..options()
        };
        open(&url, options)
    };
    let (a, b) = (
        open_named(&a_name).await.unwrap(),
        open_named(&b_name).await.unwrap(),
    );
    let me = WorkerId::new();
    let mut b_jobs = Vec::new();
    for q in [&a, &b] {
        for _ in 0..3 {
            let id = q.enqueue(NewJob::new("1").label("count:1")).await.unwrap();
            if std::ptr::eq(q, &b) {
                b_jobs.push(id);
            }
        }
        for _ in 0..2 {
            let job = q.claim(&me, LEASE, NO_WAIT).await.unwrap().unwrap();
            assert_eq!(
                q.complete(&job, Ok("1".into())).await.unwrap(),
                Completion::Done
            );
        }
    }
    let client = ::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys = async |name: &QueueName| {
        let pattern = format!("{{{name}}}*");
        let mut found = std::collections::BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            found.extend(batch);
            if next == 0 {
                return found;
            }
            cursor = next;
        }
    };
    let b_before = keys(&b_name).await;
    // The stream, the done zset, the histogram, its labels and one hash per job at least.
    assert!(b_before.len() >= 7, "{b_before:?}");
    assert!(!keys(&a_name).await.is_empty());
    let Queue::Redis(ra) = &a else { unreachable!() };
    ra.destroy().await.unwrap();
    assert_eq!(keys(&a_name).await.len(), 0, "a's keys are gone");
    assert_eq!(keys(&b_name).await, b_before, "b's keys are all there");
    let c = b.counts().await.unwrap();
    assert_eq!((c.queued, c.done), (1, 2));
    assert_eq!(b.latency().await.unwrap().by_label["count:1"].count(), 2);
    for id in &b_jobs {
        assert!(b.get(id).await.unwrap().is_some(), "b's job {id}");
    }
    let Queue::Redis(rb) = &b else { unreachable!() };
    rb.destroy().await.unwrap();
    assert_eq!(keys(&b_name).await.len(), 0);
}
