//! Postgres's own tests: what the store trait does not say, but the Postgres backend must do.

use std::time::Duration;

use offload_queue::testing::{Backend, LEASE, NO_WAIT, TestQueue, options};
use offload_queue::{Completion, JobId, JobQueue, NewJob, QueueOptions, WorkerId, open};
use tokio::time::{Instant, sleep};

/// An idle claim with a wait wakes on the enqueue's `NOTIFY` from another
/// connection within milliseconds, not at the end of its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_claim_wakes_on_notify() {
    let Some(h) = TestQueue::open(Backend::Postgres, "pg_notify", options()).await else {
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
}

/// Connections killed by the server (as on a restart) are replaced on the next
/// call, and the `LISTEN` connection listens again, so idle claims still wake on `NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_lost_connections() {
    let Some(place) = Backend::Postgres.place("pg_reconnect") else {
        return;
    };
    let base = place.url();
    // A name for this test's connections, so only they are killed.
    let app = format!("offload-test-{}", &JobId::random().as_str()[..8]);
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}application_name={app}");
    let options = QueueOptions {
        name: place.name().clone(),
        ..options()
    };
    let q = open(&url, options.clone()).await.expect("open");
    let (admin, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
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
    let producer = open(base, options).await.expect("producer");
    let id = producer.enqueue(NewJob::new("3")).await.unwrap();
    let enqueued = Instant::now();
    let (job, woke) = waiting.await.unwrap();
    assert_eq!(job.unwrap().expect("woken with the job").id, id);
    let after = woke.saturating_duration_since(enqueued);
    assert!(
        after < Duration::from_secs(1),
        "woke {after:?} after the enqueue"
    );
}
