//! `GET /jobs` costs little: what one call reads does not grow with the jobs stored (the
//! counts come from counters and the status index, the times from the store's histogram), on
//! each backend. Its answer within the store timeout during a partition is tested across the
//! test network (`netns::queue`).

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use offload::queue::{JobQueue, NewJob, Queue, QueueOptions, WorkerId};
use offload_queue::testing::{Backend, Place};

use crate::support::{Conn, Proc, exclusive};

/// Jobs stored in the big queue: the old `/jobs?latency=100000` read (and parsed) this many
/// rows per call.
const MANY: usize = 100_000;
/// Jobs stored in the small queue.
const FEW: usize = 100;
/// Calls timed per queue; the median is compared.
const CALLS: usize = 21;
/// How much slower a call on the big queue may be: a bound, not a benchmark (reading every
/// row made it about a thousand times slower).
const MOST_SLOWER: f64 = 3.0;
/// Jobs enqueued at once while filling, then claimed and completed in batches.
const CHUNK: usize = 2_000;

/// A queue of the test's own on `b` with `n` jobs done; `None` when `b` is not configured here
/// (and not required). Dropping the place deletes the test's Redis keys or Postgres rows
/// (100,000 jobs' worth), also when the test failed.
async fn filled(b: Backend, test: &str, n: usize) -> Option<Place> {
    let place = b.place(test)?;
    let queue = place
        .open(QueueOptions::default())
        .await
        .expect("open the test queue");
    fill(&queue, n).await;
    Some(place)
}

/// A queue gateway on the queue at `place`.
fn gateway(place: &Place) -> Proc {
    Proc::start(&[
        "serve",
        "--strategy",
        "queue",
        "--queue",
        place.url(),
        "--queue-name",
        place.name().as_str(),
    ])
}

/// Stores `n` done jobs through the queue's API, a chunk at a time: enqueued concurrently
/// (so the stores batch them), then claimed and completed in batches.
async fn fill(q: &Queue, n: usize) {
    let me = WorkerId::new();
    let lease = Duration::from_secs(60);
    let mut left = n;
    while left > 0 {
        let chunk = left.min(CHUNK);
        let mut enqueues = JoinSet::new();
        for i in 0..chunk {
            let q = q.clone();
            // Two works, so `by_work` has something to say.
            let label = if i % 2 == 0 { "count:1" } else { "count:2" };
            enqueues.spawn(async move { q.enqueue(NewJob::new("{}").label(label)).await });
        }
        while let Some(r) = enqueues.join_next().await {
            r.unwrap().expect("enqueue");
        }
        let mut claimed = 0;
        while claimed < chunk {
            let jobs = q
                .claim_batch(&me, lease, 256, Duration::ZERO)
                .await
                .expect("claim");
            assert!(!jobs.is_empty(), "{claimed} of {chunk} claimed");
            claimed += jobs.len();
            let done = q
                .complete_batch(jobs.into_iter().map(|j| (j, Ok("1".to_owned()))).collect())
                .await
                .expect("complete");
            assert!(done.iter().all(|c| *c == offload::queue::Completion::Done));
        }
        left -= chunk;
    }
}

/// The median time of `GET path` on `conn` over [`CALLS`] calls, after one to warm up.
async fn median_call(conn: &mut Conn, path: &str) -> Duration {
    let mut took = Vec::with_capacity(CALLS);
    for i in 0..=CALLS {
        let t = Instant::now();
        let r = conn.get(path).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        if i > 0 {
            took.push(t.elapsed());
        }
    }
    took.sort();
    took[took.len() / 2]
}

/// `GET /jobs?latency=100000` with 100,000 jobs stored answers about as fast as with 100, and
/// its counts and times cover every one of them; so does a page of the newest 100 done jobs
/// (`GET /jobs?status=done&limit=100`), read on the status and finish-time index.
async fn a_call_costs_the_same_with_many_jobs_stored(b: Backend, test: &str) {
    let _serial = exclusive().await;
    let t = Instant::now();
    let Some(few) = filled(b, &format!("{test}-few"), FEW).await else {
        return;
    };
    let Some(many) = filled(b, &format!("{test}-many"), MANY).await else {
        return;
    };
    let filled_in = t.elapsed();
    let path = "/jobs?latency=100000";
    let mut unsettled = String::new();
    if let Backend::Postgres = b {
        // Filling left two dead row versions per job (queued, running) in the status index,
        // which the count of unfinished jobs steps over until vacuum removes them, and the
        // table's statistics are those of an empty queue: costs of the burst that just ended,
        // not of the jobs stored. Measured, then vacuumed and analysed as autovacuum does
        // after such a burst (and the gateways started after, with the new statistics).
        let gw = gateway(&many);
        let before = median_call(&mut Conn::open(gw.addr).await, path).await;
        drop(gw);
        vacuum(many.url()).await;
        unsettled = format!("; {before:?} with {MANY} before autovacuum's work");
    }
    let (gw_few, gw_many) = (gateway(&few), gateway(&many));
    let (mut c_few, mut c_many) = (
        Conn::open(gw_few.addr).await,
        Conn::open(gw_many.addr).await,
    );
    for (conn, n) in [(&mut c_few, FEW), (&mut c_many, MANY)] {
        let j = conn.get(path).await.json();
        assert_eq!(j["counts"]["done"], n, "{j}");
        assert_eq!(j["enqueue_to_done_ms"]["count"], n, "{j}");
        assert_eq!(j["by_work"]["count:1"]["count"], n / 2, "{j}");
        assert_eq!(j["by_work"]["count:2"]["count"], n / 2, "{j}");
        let (p50, max) = (
            j["enqueue_to_done_ms"]["p50"].as_f64().unwrap(),
            j["enqueue_to_done_ms"]["max"].as_f64().unwrap(),
        );
        assert!(p50 <= max, "{j}");
    }
    for path in [path, "/jobs?status=done&limit=100"] {
        if path.contains("status=") {
            for conn in [&mut c_few, &mut c_many] {
                let page = conn.get(path).await.json();
                assert_eq!(page["jobs"].as_array().map(Vec::len), Some(100), "{page}");
            }
        }
        let (times, conns) = ((&filled_in, unsettled.as_str()), (&mut c_few, &mut c_many));
        compare(b, test, path, conns, &many, times).await;
    }
    drop((gw_few, gw_many, few, many));
}

/// Times `GET path` on the queue of [`FEW`] jobs and the queue of [`MANY`] (medians of
/// [`CALLS`] calls, the median of 3 rounds, alternately), prints both, and asserts the second is
/// less than [`MOST_SLOWER`] times the first.
async fn compare(
    b: Backend,
    test: &str,
    path: &str,
    (c_few, c_many): (&mut Conn, &mut Conn),
    many: &Place,
    (filled_in, unsettled): (&Duration, &str),
) {
    let mut tries = Vec::new();
    let (t_few, t_many, ratio) = loop {
        // Alternately, so a slow moment of the machine falls on both.
        let (mut t_few, mut t_many) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            t_few.push(median_call(c_few, path).await);
            t_many.push(median_call(c_many, path).await);
        }
        t_few.sort();
        t_many.sort();
        let (t_few, t_many) = (t_few[1], t_many[1]);
        let ratio = t_many.as_secs_f64() / t_few.as_secs_f64();
        tries.push(format!("{ratio:.1}x"));
        if ratio < MOST_SLOWER || !matches!(b, Backend::Postgres) || tries.len() >= 10 {
            break (t_few, t_many, ratio);
        }
        // A vacuum cannot remove row versions that another session's snapshot may still see
        // (the test server is shared): wait for it to move on, and vacuum again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        vacuum(many.url()).await;
    };
    eprintln!(
        "jobs {test} on {b:?}: GET {path} takes {t_many:?} with {MANY} jobs stored, {t_few:?} with \
         {FEW} ({ratio:.2}x; medians of {CALLS} calls, median of 3 rounds; tries {tries:?}; \
         filled in {filled_in:?}{unsettled})"
    );
    assert!(
        ratio < MOST_SLOWER,
        "{t_many:?} with {MANY} jobs vs {t_few:?} with {FEW}: {ratio:.1}x (tries {tries:?})"
    );
}

/// `VACUUM ANALYZE` of the jobs table, as autovacuum does after a burst of changes.
async fn vacuum(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(conn);
    client
        .batch_execute("VACUUM ANALYZE offload_jobs")
        .await
        .expect("vacuum");
}

offload_queue::store_tests!(
    sqlite = Backend::Sqlite, redis = Backend::Redis, postgres = Backend::Postgres;
    a_call_costs_the_same_with_many_jobs_stored,
);
