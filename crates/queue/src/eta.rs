//! When a job stored now will be done: the backlog's clock. A 202 that says only "queued" tells
//! a client nothing of a backlog that takes minutes to drain, and a cap counted in jobs means a
//! different wait on every machine and for every size of job. An [`Eta`] reads the queue's
//! counts in the background (one bounded read every [`READ_EVERY`] while the queue is in use),
//! measures how fast its workers finish jobs while they have a backlog, and predicts the time
//! to done of a job stored now: the jobs ahead of it (queued and running, plus those this
//! process stored since the last read) over that rate. So a service can put the prediction in
//! its 202, and refuse to store work whose wait would pass a cap in seconds
//! ([`Line::with_time_cap`](crate::Line::with_time_cap)).
//!
//! The rate counts the jobs finished (done or failed) between two reads that both saw a
//! backlog: then the workers had work for the whole span, so it measures their capacity, not
//! the demand. Until one such span of at least [`RATE_WINDOW`] has passed, nothing is
//! predicted. It is the rate of every worker on the queue, on any host, so a prediction holds
//! however many workers there are; it follows a change of workers within a few windows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::{JobQueue, Queue};

/// How often the backlog is read while the queue is in use: a fresh depth for every 202 without
/// a store read per request (one bounded read four times a second).
pub const READ_EVERY: Duration = Duration::from_millis(250);
/// A finish rate is measured over spans at least this long: a second holds enough finished jobs
/// to count at tens a second, and the moving average smooths the rest.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The reads stop after this long with no prediction asked for and no backlog.
const IDLE_STOP: Duration = Duration::from_secs(10);
/// Weight of a new span in the finish rate's moving average.
const RATE_WEIGHT: f64 = 0.3;

/// The backlog's clock of one queue, shared by the requests of a process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Eta {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Queue,
    state: Mutex<State>,
    /// A reader task is running.
    reading: AtomicBool,
    /// Jobs this process stored since the last read (not yet in its depth).
    stored_since: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// Unfinished jobs (queued and running) at the last read.
    depth: u64,
    /// Finished jobs at the last read, and when it was.
    finished: u64,
    read_at: Option<Instant>,
    /// Start of the current span: the first read of a run of reads that all saw a backlog.
    span: Option<(Instant, u64)>,
    /// Jobs finished a second while there was a backlog, once measured.
    rate: Option<f64>,
    last_asked: Instant,
}

/// What an [`Eta`] knows of the backlog now.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prediction {
    /// Unfinished jobs (queued and running), counting those this process stored since the last
    /// read.
    pub unfinished: u64,
    /// Jobs finished a second while the workers had a backlog, once measured.
    pub rate: Option<f64>,
}

impl Prediction {
    /// Time until `jobs` more than the unfinished ones are done: for a job about to be stored,
    /// `done_in(1)`; for one just stored (and so already counted), `done_in(0)`. `None` until
    /// the rate is measured.
    pub fn done_in(&self, jobs: u64) -> Option<Duration> {
        let r = self.rate.filter(|r| *r > 0.0)?;
        Some(Duration::from_secs_f64(
            ((self.unfinished + jobs) as f64 / r).min(86_400.0),
        ))
    }
}

impl Eta {
    /// The clock of `queue`. It reads nothing until it is first asked.
    pub fn new(queue: Queue) -> Eta {
        Eta {
            inner: Arc::new(Inner {
                queue,
                state: Mutex::new(State {
                    depth: 0,
                    finished: 0,
                    read_at: None,
                    span: None,
                    rate: None,
                    last_asked: Instant::now(),
                }),
                reading: AtomicBool::new(false),
                stored_since: AtomicU64::new(0),
            }),
        }
    }

    /// Tells the clock that this process stored `n` jobs, so the next prediction counts them
    /// before the next read does.
    pub fn stored(&self, n: u64) {
        self.inner.stored_since.fetch_add(n, Ordering::Relaxed);
    }

    /// The backlog now, as far as the clock knows it. Starts the background reads if they are
    /// not running (so it must be called within a tokio runtime).
    pub fn predict(&self) -> Prediction {
        self.ensure_reading();
        let mut st = self.inner.state.lock().expect("eta lock");
        st.last_asked = Instant::now();
        Prediction {
            unfinished: st.depth + self.inner.stored_since.load(Ordering::Relaxed),
            rate: st.rate,
        }
    }

    /// Jobs finished a second while the workers had a backlog, once measured.
    pub fn rate(&self) -> Option<f64> {
        self.inner.state.lock().expect("eta lock").rate
    }

    fn ensure_reading(&self) {
        if self
            .inner
            .reading
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tokio::spawn(read(Arc::downgrade(&self.inner)));
        }
    }
}

/// Reads the backlog every [`READ_EVERY`] while the clock is alive and in use.
async fn read(weak: Weak<Inner>) {
    let mut tick = tokio::time::interval(READ_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        // Counted before the read, so a job stored during it is counted in the read or after.
        let stored = inner.stored_since.load(Ordering::Relaxed);
        let counts = match inner.queue.counts().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "offload-queue: eta read failed");
                continue;
            }
        };
        inner.stored_since.fetch_sub(stored, Ordering::Relaxed);
        let now = Instant::now();
        let mut st = inner.state.lock().expect("eta lock");
        let depth = counts.queued + counts.running;
        let finished = counts.done + counts.failed;
        // A prune lowers the finished count: the span restarts.
        let pruned = finished < st.finished;
        if depth == 0 || pruned || st.read_at.is_none() {
            st.span = (depth > 0).then_some((now, finished));
        } else if let Some((start, at_start)) = st.span {
            let span = now.duration_since(start);
            if span >= RATE_WINDOW {
                let r = finished.saturating_sub(at_start) as f64 / span.as_secs_f64();
                st.rate = Some(match st.rate {
                    Some(old) => old + RATE_WEIGHT * (r - old),
                    None => r,
                });
                st.span = Some((now, finished));
            }
        } else {
            st.span = Some((now, finished));
        }
        (st.depth, st.finished, st.read_at) = (depth, finished, Some(now));
        if depth == 0 && st.last_asked.elapsed() > IDLE_STOP {
            inner.reading.store(false, Ordering::Release);
            return;
        }
    }
}
