//! The Postgres backend's connections: the shared pipelined client with its statements prepared
//! once per connection (so each operation is one round trip), reconnecting when the server
//! restarts, and the `LISTEN` connection that turns `NOTIFY`s for this queue into wake-ups.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Statement};

use super::sql;
use crate::QueueError;

/// Longest a connection attempt (TCP, startup and authentication) may take: an unreachable or
/// stuck host fails the call in seconds instead of hanging it.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one statement may take before the call fails: every statement here touches a few
/// rows by index, so one still running after this long means the server is stuck or gone.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts of the `LISTEN` connection to reconnect: short, since idle workers
/// fall back to the next claim's timeout meanwhile, long enough not to hammer a server that is
/// restarting.
const RELISTEN_PAUSE: Duration = Duration::from_millis(200);

/// One connection and its prepared statements.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) client: Client,
    pub(super) enqueue: Statement,
    pub(super) enqueue_batch: Statement,
    pub(super) get: Statement,
    pub(super) claim: Statement,
    pub(super) next_due: Statement,
    pub(super) heartbeat: Statement,
    pub(super) complete: Statement,
    pub(super) release: Statement,
    pub(super) reap: Statement,
    pub(super) prune: Statement,
    pub(super) counts: Statement,
    pub(super) latency: Statement,
}

/// Connects within [`CONNECT_TIMEOUT`], spawning the task that drives the connection.
pub(super) async fn connect(config: &Config) -> Result<Client, QueueError> {
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| QueueError::Timeout("connecting to postgres", CONNECT_TIMEOUT))??;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; the next call reconnects.
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

impl Link {
    /// Connects, creates the schema and `queue`'s meta row unless they exist (so a server
    /// that came back empty works again too), and prepares every statement (pipelined: one
    /// round trip's wait for all).
    pub(super) async fn open(config: &Config, queue: &str) -> Result<Link, QueueError> {
        let client = connect(config).await?;
        // Changing the schema takes table locks that running processes' statements may hold in
        // the other order: Postgres then aborts one side with a deadlock, and this side tries
        // again (the schema is one transaction, so nothing of it stays half done).
        let mut tries = 0;
        loop {
            let ready: bool = client.query_one(sql::SCHEMA_READY, &[]).await?.try_get(0)?;
            if ready {
                break;
            }
            match client.batch_execute(&sql::schema()).await {
                Err(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) && tries < 5 => {
                    tries += 1;
                    tracing::info!(error = %e, "schema change met running statements; again");
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
                other => other?,
            }
        }
        client.execute(sql::ADD_QUEUE, &[&queue]).await?;
        let c = &client;
        let complete = sql::complete();
        let (enqueue, get, claim, next_due, heartbeat, complete) = tokio::try_join!(
            c.prepare(sql::ENQUEUE),
            c.prepare(sql::GET),
            c.prepare(sql::CLAIM),
            c.prepare(sql::NEXT_DUE),
            c.prepare(sql::HEARTBEAT),
            c.prepare(&complete),
        )?;
        let (enqueue_batch, release, reap, prune, counts, latency) = tokio::try_join!(
            c.prepare(sql::ENQUEUE_BATCH),
            c.prepare(sql::RELEASE),
            c.prepare(sql::REAP),
            c.prepare(sql::PRUNE),
            c.prepare(sql::COUNTS),
            c.prepare(sql::LATENCY),
        )?;
        Ok(Link {
            client,
            enqueue,
            enqueue_batch,
            get,
            claim,
            next_due,
            heartbeat,
            complete,
            release,
            reap,
            prune,
            counts,
            latency,
        })
    }
}

/// The shared link, replaced when it breaks.
#[derive(Debug)]
pub(super) struct Shared {
    config: Config,
    queue: String,
    current: Mutex<Arc<Link>>,
    /// Held while reconnecting, so many callers failing together make one new connection.
    reconnecting: tokio::sync::Mutex<()>,
}

/// The connection was lost (or the server is shutting it down): worth one reconnect and retry.
pub(super) fn is_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || matches!(
            e.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        )
}

impl Shared {
    pub(super) fn new(config: Config, queue: String, link: Link) -> Shared {
        Shared {
            config,
            queue,
            current: Mutex::new(Arc::new(link)),
            reconnecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The current link, reconnected first if it is known to be closed.
    pub(super) async fn link(&self) -> Result<Arc<Link>, QueueError> {
        let link = Arc::clone(&self.current.lock().expect("link lock"));
        if link.client.is_closed() {
            return self.reconnect(&link).await;
        }
        Ok(link)
    }

    /// Replaces `broken` with a new link, unless another caller already did.
    pub(super) async fn reconnect(&self, broken: &Arc<Link>) -> Result<Arc<Link>, QueueError> {
        let _one = self.reconnecting.lock().await;
        let current = Arc::clone(&self.current.lock().expect("link lock"));
        if !Arc::ptr_eq(&current, broken) && !current.client.is_closed() {
            return Ok(current);
        }
        tracing::info!("reconnecting to postgres");
        let fresh = Arc::new(Link::open(&self.config, &self.queue).await?);
        *self.current.lock().expect("link lock") = Arc::clone(&fresh);
        Ok(fresh)
    }
}

/// Connects the `LISTEN` connection and returns once it listens; then a spawned task bumps
/// `wake` on every notification for `queue`, and after a lost connection reconnects, listens
/// again and bumps `wake` once (jobs may have arrived while it was away). The task ends when
/// every receiver is gone.
///
/// # Errors
/// If the first connection or `LISTEN` fails.
pub(super) async fn listen(
    config: Config,
    queue: String,
    wake: watch::Sender<u64>,
) -> Result<tokio::task::JoinHandle<()>, QueueError> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            let outcome = listen_once(&config, &queue, &wake, &mut ready).await;
            if let Some(tx) = ready.take() {
                // Never listened: `open` fails with this error.
                let _ = tx.send(Err(outcome.err().unwrap_or(QueueError::Closed)));
                return;
            }
            if wake.is_closed() {
                return;
            }
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "postgres LISTEN connection lost; reconnecting");
            }
            tokio::time::sleep(RELISTEN_PAUSE).await;
        }
    });
    match ready_rx.await {
        Ok(Ok(())) => Ok(task),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(QueueError::Closed),
    }
}

/// One `LISTEN` connection's life: connect, listen, forward notifications until it ends.
async fn listen_once(
    config: &Config,
    queue: &str,
    wake: &watch::Sender<u64>,
    ready: &mut Option<tokio::sync::oneshot::Sender<Result<(), QueueError>>>,
) -> Result<(), QueueError> {
    let (client, mut conn) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| QueueError::Timeout("connecting to postgres", CONNECT_TIMEOUT))??;
    let statement = format!("LISTEN {}", sql::CHANNEL);
    let mut subscribe = std::pin::pin!(client.batch_execute(&statement));
    let mut listening = false;
    loop {
        // The connection must be polled for the LISTEN to be sent and answered, so both run here.
        tokio::select! {
            done = &mut subscribe, if !listening => {
                done?;
                listening = true;
                match ready.take() {
                    Some(tx) => { let _ = tx.send(Ok(())); }
                    None => { wake.send_modify(|n| *n = n.wrapping_add(1)); }
                }
            }
            message = std::future::poll_fn(|cx| conn.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.payload() == queue => {
                    wake.send_modify(|n| *n = n.wrapping_add(1));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            () = wake.closed() => return Ok(()),
        }
    }
}
