//! The built-in backends' [`Store`]: a SQLite file in a temporary directory of the test's own,
//! or a queue of the test's own on the Redis or Postgres server its environment names, deleted
//! after; and the loud skip when that server is not configured.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Store;
use crate::{JobId, Queue, QueueError, QueueName, QueueOptions};

/// A built-in backend under test. Tests of a queue ([`Store`]) and tests that start processes
/// on a queue of their own ([`Backend::place`]) both take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory of the test's own.
    #[cfg(feature = "sqlite")]
    Sqlite,
    /// The Redis server at `REDIS_URL` (required with `OFFLOAD_REQUIRE_REDIS=1`).
    #[cfg(feature = "redis")]
    Redis,
    /// The Postgres server at `POSTGRES_URL` (required with `OFFLOAD_REQUIRE_POSTGRES=1`).
    #[cfg(feature = "postgres")]
    Postgres,
}

/// Where one test's queue lives on a built-in backend: its URL and its name. Dropping it deletes
/// the queue's Redis keys or Postgres rows (a SQLite queue's temporary directory goes), also
/// when the test panicked.
#[derive(Debug)]
pub struct Place {
    url: String,
    name: QueueName,
    /// A SQLite queue's directory, deleted with its file when dropped.
    dir: Option<tempfile::TempDir>,
    /// The last [`Place::open`] failed: there is nothing to delete, and no point in waiting
    /// for the server again.
    unreachable: AtomicBool,
}

impl Backend {
    /// A place for a queue of `test`'s own, named `test-{test}-{8 random hex}` ([`queue_name`]);
    /// `None` when this backend's server is not configured here ([`server_url`]), after a loud
    /// line saying so.
    ///
    /// # Panics
    /// When the server is required but not configured, or `test` makes too long a queue name.
    pub fn place(self, test: &str) -> Option<Place> {
        let name = queue_name(test);
        let (url, dir) = match self.server() {
            Some((var, require, server)) => (server_url(var, require, server, test)?, None),
            None => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("q.db").display());
                (url, Some(dir))
            }
        };
        Some(Place {
            url,
            name,
            dir,
            unreachable: AtomicBool::new(false),
        })
    }

    /// Whether this backend can be tested here: SQLite always, a server when its URL is set
    /// (otherwise after a loud line saying that `test` did not run).
    ///
    /// # Panics
    /// When the server is required but not configured.
    pub fn configured(self, test: &str) -> bool {
        match self.server() {
            Some((var, require, server)) => server_url(var, require, server, test).is_some(),
            None => true,
        }
    }

    /// A server's environment variables, its URL's and the one that requires it, and its name
    /// for messages; `None` for SQLite, which needs no server.
    fn server(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => None,
            #[cfg(feature = "redis")]
            Backend::Redis => Some(("REDIS_URL", "OFFLOAD_REQUIRE_REDIS", "Redis")),
            #[cfg(feature = "postgres")]
            Backend::Postgres => Some(("POSTGRES_URL", "OFFLOAD_REQUIRE_POSTGRES", "Postgres")),
        }
    }
}

impl Place {
    /// The queue's URL, as [`open`](crate::open) and offload's `--queue` take it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's name, as offload's `--queue-name` takes it.
    pub fn name(&self) -> &QueueName {
        &self.name
    }

    /// Opens a handle to the queue with `options`, under the place's name.
    ///
    /// # Errors
    /// As [`open`](crate::open).
    pub async fn open(&self, options: QueueOptions) -> Result<Queue, QueueError> {
        let options = QueueOptions {
            name: self.name.clone(),
            ..options
        };
        let opened = crate::open(&self.url, options).await;
        self.unreachable.store(opened.is_err(), Ordering::Relaxed);
        opened
    }
}

impl Drop for Place {
    /// Deletes the queue's keys or rows on a thread and a runtime of its own: a place is dropped
    /// inside the test's runtime, which cannot block on another future.
    fn drop(&mut self) {
        if self.dir.is_some() || *self.unreachable.get_mut() {
            return;
        }
        let (url, name) = (self.url.clone(), self.name.clone());
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let options = QueueOptions {
                    name,
                    ..QueueOptions::default()
                };
                let queue = crate::open(&url, options).await?;
                destroy(&queue).await
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
        })
        .join();
        if let Ok(Err(e)) = deleted {
            // Straight to stderr, as a passing test's `eprintln!` is captured and not shown.
            let line = format!(
                "!!!! could not delete the test's queue data ({}, queue {}): {e} !!!!\n",
                self.url, self.name
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

impl Store for Backend {
    type Queue = Queue;
    type Place = Place;

    fn place(&self, test: &str) -> Option<Place> {
        Backend::place(*self, test)
    }

    async fn open(&self, place: &Place, options: QueueOptions) -> Queue {
        match place.open(options).await {
            Ok(queue) => queue,
            Err(e) => panic!("cannot open {}: {e}", place.url),
        }
    }

    async fn destroy(&self, queue: &Queue) -> bool {
        match destroy(queue).await {
            Ok(deleted) => deleted,
            Err(e) => panic!("cannot delete the test's queue data: {e}"),
        }
    }
}

/// Deletes a Redis or Postgres queue's data; `false` for SQLite, whose file goes with its
/// directory.
async fn destroy(queue: &Queue) -> Result<bool, QueueError> {
    match queue {
        #[cfg(feature = "sqlite")]
        Queue::Sqlite(_) => Ok(false),
        #[cfg(feature = "redis")]
        Queue::Redis(q) => q.destroy().await.map(|()| true),
        #[cfg(feature = "postgres")]
        Queue::Postgres(q) => q.destroy().await.map(|()| true),
    }
}

/// A queue name of `test`'s own: `test-{test}-{8 random hex}`, so that tests (and runs) that
/// share a server never share a queue.
///
/// # Panics
/// If that is not a valid [`QueueName`] (`test` too long, or with other characters than
/// `[A-Za-z0-9_-]`).
pub fn queue_name(test: &str) -> QueueName {
    QueueName::new(format!("test-{test}-{}", &JobId::random().as_str()[..8]))
        .expect("a valid queue name")
}

/// The server URL in the environment variable `var`; without it `None`, after a loud line that
/// `server`'s test `test` did not run, or a panic when the variable `require` is `1`.
///
/// # Panics
/// When `require` is `1` and `var` is not set.
pub fn server_url(var: &str, require: &str, server: &str, test: &str) -> Option<String> {
    let required = std::env::var(require).is_ok_and(|v| v == "1");
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if required => panic!("{require}=1 but {var} is not set ({test})"),
        _ => {
            did_not_run(&format!("{var} is not set: {server} queue test `{test}`"));
            None
        }
    }
}

/// Says loudly, straight to stderr (the test harness captures `eprintln!` of passing tests),
/// that a check did not run and why. The line goes out in one write, so that it is not torn
/// apart by what other tests and their processes write to the same stderr.
pub fn did_not_run(why: &str) {
    let line = format!("!!!! DID NOT RUN: {why} !!!!\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
