//! A service's calls to its store on a client's behalf, bounded in time: each waits at most
//! [`DEFAULT_STORE_WAIT`], and once one fails or goes unanswered the store counts as out of
//! reach. While it is, calls fail at once ([`QueueError::Down`]) and one background check asks
//! the store every [`STORE_CHECK`]; its first answer lets calls through again. So clients wait
//! for no timeout but the first, and a store that is down is asked twice a second, not once a
//! request.
//!
//! A network partition is silence, not a refused connection, and the store clients' own
//! timeouts (10 s Redis, 30 s Postgres) are for workers, which can afford to wait. Each call a
//! service makes for a client is one round trip touching a few rows, so one unanswered after
//! two seconds means the store is out of reach.
//!
//! ```
//! use offload_queue::{JobQueue, QueueOptions, Reach};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
//! let queue = offload_queue::open(&url, QueueOptions::default()).await.unwrap();
//! let reach = Reach::new(queue.clone());
//! let counts = reach.call("the job counts", queue.counts()).await.unwrap();
//! assert_eq!(counts.queued, 0);
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::log::throttled;
use crate::{JobQueue, Queue, QueueError};

/// Longest a call waits for the store on a client's behalf.
pub const DEFAULT_STORE_WAIT: Duration = Duration::from_secs(2);

/// While the store is out of reach, the background check asks it this often.
pub const STORE_CHECK: Duration = Duration::from_millis(500);

/// Calls to a store, bounded in time, that fail at once while it is out of reach. Cheap to
/// clone; clones share whether the store is reachable.
#[derive(Debug, Clone)]
pub struct Reach {
    queue: Queue,
    wait: Duration,
    down: Arc<AtomicBool>,
}

impl Reach {
    /// Calls to `queue`'s store, each waiting at most [`DEFAULT_STORE_WAIT`].
    pub fn new(queue: Queue) -> Reach {
        Reach {
            queue,
            wait: DEFAULT_STORE_WAIT,
            down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sets how long a call waits for the store before it counts as out of reach.
    #[must_use]
    pub fn with_wait(mut self, wait: Duration) -> Reach {
        self.wait = wait;
        self
    }

    /// How long a call waits for the store.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The store failed or went unanswered, and has not answered the check since.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Fails at once with [`QueueError::Down`] while the store is out of reach.
    ///
    /// # Errors
    /// [`QueueError::Down`].
    pub fn check(&self) -> Result<(), QueueError> {
        match self.is_down() {
            true => Err(QueueError::Down),
            false => Ok(()),
        }
    }

    /// `op` on the store, within the wait (`what` names it in the timeout's error); at once
    /// [`QueueError::Down`] while the store is out of reach. A failure or a timeout marks the
    /// store out of reach.
    ///
    /// # Errors
    /// [`QueueError::Down`], [`QueueError::Timeout`], or `op`'s own error.
    pub async fn call<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        self.check()?;
        let result = match tokio::time::timeout(self.wait, op).await {
            Ok(result) => result,
            Err(_) => Err(QueueError::Timeout(what, self.wait)),
        };
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    /// Marks the store out of reach after `e` and starts the background check, unless one
    /// runs. For a failure met outside [`Reach::call`] (an enqueue through a line).
    pub fn failed(&self, e: &QueueError) {
        if matches!(e, QueueError::Down) || self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        throttled!("queue_store_down", warn, error = %e, "the queue's store failed; refusing until it answers");
        let (queue, down, wait) = (self.queue.clone(), Arc::clone(&self.down), self.wait);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STORE_CHECK).await;
                if let Ok(Ok(_)) = tokio::time::timeout(wait, queue.counts()).await {
                    down.store(false, Ordering::Release);
                    tracing::info!("the queue's store answers again");
                    return;
                }
            }
        });
    }
}
