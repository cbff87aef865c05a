//! Backpressure for a full backlog. A request that finds the backlog at its cap does not get a
//! refusal it would send straight back: it waits in a line, in arrival order, and one task per
//! process (the pump) stores the jobs at the head of the line as room appears. Only when its
//! own wait runs out does a request leave the line unstored. The line is first come, first
//! stored: the pump stores each batch with one [`JobQueue::enqueue_prefix`], which stops at the
//! first job that does not fit, so a place that frees while a batch is being stored never goes
//! to a later request ahead of an earlier one, and jobs are claimed in the order they arrived. A closed loop of any size is then
//! paced to the rate at which workers drain the backlog, and the store sees one attempt per
//! free place rather than one per refused request.
//!
//! The pump learns that room appeared by trying: it stores a batch of jobs from the head of the
//! line and, when the store says full, pauses before it tries again. The pause is a small part
//! of the time the workers take to drain the whole backlog (a quarter, at most 20 ms), so the
//! backlog never runs low while the line waits, and each try stores the places freed in the
//! pause in one write rather than one write per job drained: against a backlog of thousands,
//! one try per 20 ms. The batch grows while every job in it is stored and shrinks to what was
//! stored when the store is full, so the attempts that fail are about one per pause.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::{EnqueueError, Eta, JobId, JobQueue, NewJob, Queue, QueueError};

/// Requests that may wait in a line by default: a closed loop of thousands of connections
/// fits, and each waiter holds only its job's payload and a channel, so the bound on memory is
/// the payloads'.
pub const DEFAULT_MAX_WAITING: usize = 4096;
/// How long one store call may take, by default, before the line counts it as failed: each is
/// one round trip touching a few rows, so one unanswered after this long means the store is out
/// of reach.
pub const DEFAULT_STORE_WAIT: Duration = Duration::from_secs(2);

/// The longest predicted time to done a backlog takes on by default, when it has a time cap
/// ([`Line::with_time_cap`]): five minutes, as long as a client that took a 202 can be
/// expected to come back for.
pub const DEFAULT_TIME_CAP: Duration = Duration::from_secs(300);

/// Most jobs the pump stores at once: enough to move the line at tens of thousands of jobs a
/// second against a store with a millisecond's round trip, few enough that a full store sees a
/// small burst of failed attempts.
const MAX_BATCH: usize = 64;
/// The pump's pause after the store says full, before the drain rate is known.
const FULL_PAUSE: Duration = Duration::from_millis(5);
/// The pause is a quarter of the time the workers take to drain the full backlog (its depth
/// when the store last said full, at the measured drain rate), within these bounds: under a
/// millisecond it is not worth a wake-up, and past 20 ms the line's requests would wait
/// noticeably longer than the workers need to make room. Every store write costs the store a
/// transaction and wakes every process that watches it, so a longer pause is cheaper.
const PAUSE_MIN: Duration = Duration::from_millis(1);
const PAUSE_MAX: Duration = Duration::from_millis(20);
/// The share of the full backlog's drain time that the pump waits for room.
const PAUSE_SHARE: f64 = 0.25;
/// The drain rate is averaged over windows at least this long.
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// Weight of a new window in the drain rate's moving average.
const RATE_WEIGHT: f64 = 0.3;

/// Why a job did not get into the store.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is at its cap, or the line ahead is predicted to take longer to drain than the
    /// request may wait. `retry_after`: when a request like it would get through.
    #[error("the queue is full and its line is longer than this request may wait")]
    Full {
        /// When a request like it would get through.
        retry_after: Duration,
    },
    /// The request waited its whole wait and the backlog stayed full.
    #[error("the queue stayed full for the whole of this request's wait")]
    WaitRanOut {
        /// When a request like it would get through.
        retry_after: Duration,
    },
    /// The job's idempotency key names a job with a different payload: nothing was stored.
    #[error("the idempotency key is already used by job {0} with a different payload")]
    KeyReused(JobId),
    /// The store failed or did not answer in time.
    #[error(transparent)]
    Store(#[from] QueueError),
}

/// The line of requests waiting for room in a full backlog, and the pump that serves it.
#[derive(Debug, Clone)]
pub struct Line {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: Queue,
    state: Mutex<State>,
    /// Most requests that may wait at once.
    max_waiting: usize,
    /// How long one store call may take before it counts as failed.
    store_wait: Duration,
    /// The backlog's clock and the longest predicted time to done it may reach: past it, the
    /// store counts as full whatever its count.
    time_cap: Option<(Eta, Duration)>,
    /// Requests stored from the line, whose wait ran out, and refused on arrival.
    stored: AtomicU64,
    ran_out: AtomicU64,
    refused: AtomicU64,
}

/// What a [`Line`] has done, for a service's metrics ([`Line::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LineStats {
    /// Requests waiting now.
    pub waiting: usize,
    /// Jobs stored a second from the line while requests waited, once measured.
    pub drain_per_second: Option<f64>,
    /// Requests that waited and whose job was stored (since the line was made).
    pub stored: u64,
    /// Requests whose wait ran out before room appeared; nothing of theirs was stored.
    pub ran_out: u64,
    /// Requests refused on arrival: the line was at its cap, or too long for their wait.
    pub refused: u64,
}

#[derive(Debug)]
struct State {
    waiting: VecDeque<Waiter>,
    /// Waiters in `waiting` whose requests gave up (the pump drops them when it gets there).
    abandoned: usize,
    pump: bool,
    /// Jobs stored per second by the pump while requests waited (the drain rate), if known.
    rate: Option<f64>,
    window_start: Instant,
    window_stored: u64,
    /// Until when the store is taken to be full without asking it: after it said so, a new
    /// request joins the line rather than trying a store write of its own.
    full_until: Instant,
    /// Unfinished jobs in the store when it last said full (its backlog cap), if it has.
    full_depth: Option<u64>,
}

/// A request in the line. Its `claim` says who decides its fate: the pump once it has taken
/// the job to store it, or the request once it has given up.
#[derive(Debug)]
struct Waiter {
    job: NewJob,
    until: Instant,
    claim: Arc<AtomicU8>,
    reply: oneshot::Sender<Result<JobId, LineError>>,
}

const WAITING: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Line {
    /// A line in front of `queue` with the defaults ([`DEFAULT_MAX_WAITING`],
    /// [`DEFAULT_STORE_WAIT`]).
    pub fn with_defaults(queue: Queue) -> Line {
        Line::new(queue, DEFAULT_MAX_WAITING, DEFAULT_STORE_WAIT)
    }

    /// A line in front of `queue`, holding at most `max_waiting` requests; a store call that
    /// takes longer than `store_wait` counts as failed.
    pub fn new(queue: Queue, max_waiting: usize, store_wait: Duration) -> Line {
        Line {
            inner: Arc::new(Inner {
                queue,
                state: Mutex::new(State {
                    waiting: VecDeque::new(),
                    abandoned: 0,
                    pump: false,
                    rate: None,
                    window_start: Instant::now(),
                    window_stored: 0,
                    full_until: Instant::now(),
                    full_depth: None,
                }),
                max_waiting: max_waiting.max(1),
                store_wait,
                time_cap: None,
                stored: AtomicU64::new(0),
                ran_out: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Caps the backlog in time as well as in jobs: while `eta` predicts that a job stored now
    /// would be done more than `max_wait` from now, the store counts as full, and requests wait
    /// in the line as they do behind the count. `eta` is told of every job the line stores. A
    /// cap in seconds means the same wait on any machine and for any size of job, where a
    /// count does not.
    ///
    /// # Panics
    /// If the line was cloned already: set the cap when it is made.
    #[must_use]
    pub fn with_time_cap(mut self, eta: Eta, max_wait: Duration) -> Line {
        Arc::get_mut(&mut self.inner)
            .expect("Line::with_time_cap on a line not yet shared")
            .time_cap = Some((eta, max_wait));
        self
    }

    /// Whether requests are waiting now (a new one must not pass them).
    pub fn is_busy(&self) -> bool {
        let st = self.inner.state.lock().expect("line lock");
        st.len() > 0 || Instant::now() < st.full_until
    }

    /// Most requests that may wait at once.
    pub fn max_waiting(&self) -> usize {
        self.inner.max_waiting
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.inner.state.lock().expect("line lock").len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The predicted wait of a request joining the line now.
    pub fn predicted_wait(&self) -> Duration {
        let st = self.inner.state.lock().expect("line lock");
        predicted(&st, st.len() + 1)
    }

    /// Stores `job`, waiting in the line until `until` while the backlog is full.
    ///
    /// # Errors
    /// [`LineError::Full`] at once when the line is at its cap or predicted not to reach this
    /// request in time; [`LineError::WaitRanOut`] at `until`; [`LineError::Store`] when the
    /// store fails.
    pub async fn enqueue(&self, job: NewJob, until: Instant) -> Result<JobId, LineError> {
        if let Some(depth) = self.inner.over_time_cap() {
            let mut st = self.inner.state.lock().expect("line lock");
            st.full_depth = Some(depth);
            st.full_until = st.full_until.max(Instant::now() + pause(&st));
        } else if !self.is_busy() {
            match tokio::time::timeout(self.inner.store_wait, self.inner.queue.enqueue(job.clone()))
                .await
            {
                Ok(Ok(id)) => {
                    self.inner.tell_stored(1);
                    return Ok(id);
                }
                Ok(Err(EnqueueError::Full(depth))) => {
                    let mut st = self.inner.state.lock().expect("line lock");
                    st.full_depth = Some(depth);
                    st.full_until = Instant::now() + pause(&st);
                }
                Ok(Err(EnqueueError::Queue(e))) => return Err(e.into()),
                Ok(Err(EnqueueError::KeyReused(id))) => return Err(LineError::KeyReused(id)),
                Err(_) => {
                    return Err(QueueError::Timeout("an enqueue", self.inner.store_wait).into());
                }
            }
        }
        self.wait(job, until).await
    }

    /// Joins the line and waits for the pump to store the job, or for `until`.
    async fn wait(&self, job: NewJob, until: Instant) -> Result<JobId, LineError> {
        let claim = Arc::new(AtomicU8::new(WAITING));
        let (tx, mut rx) = oneshot::channel();
        {
            let mut st = self.inner.state.lock().expect("line lock");
            let ahead = st.len();
            let wait = predicted(&st, ahead + 1);
            let remaining = until.saturating_duration_since(Instant::now());
            let late = remaining.is_zero() || (st.rate.is_some() && wait > remaining);
            if ahead >= self.inner.max_waiting || late {
                self.inner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(LineError::Full {
                    retry_after: wait.saturating_sub(remaining).max(predicted(&st, 1)),
                });
            }
            st.waiting.push_back(Waiter {
                job,
                until,
                claim: Arc::clone(&claim),
                reply: tx,
            });
            if !st.pump {
                st.pump = true;
                (st.window_start, st.window_stored) = (Instant::now(), 0);
                tokio::spawn(pump(Arc::clone(&self.inner)));
            }
        }
        let mut gone = Gone(Some((Arc::clone(&claim), Arc::clone(&self.inner))));
        let answer = tokio::select! {
            r = &mut rx => r,
            () = tokio::time::sleep_until(until.into()) => {
                if claim
                    .compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.inner.ran_out.fetch_add(1, Ordering::Relaxed);
                    self.inner.state.lock().expect("line lock").abandoned += 1;
                    gone.0 = None;
                    return Err(LineError::WaitRanOut {
                        retry_after: self.predicted_wait(),
                    });
                }
                // The pump holds the job: its answer comes within one store call.
                (&mut rx).await
            }
        };
        gone.0 = None;
        answer.unwrap_or_else(|_| Err(QueueError::Closed.into()))
    }

    /// The line's counts now.
    pub fn stats(&self) -> LineStats {
        let inner = &self.inner;
        let st = inner.state.lock().expect("line lock");
        LineStats {
            waiting: st.len(),
            drain_per_second: st.rate,
            stored: inner.stored.load(Ordering::Relaxed),
            ran_out: inner.ran_out.load(Ordering::Relaxed),
            refused: inner.refused.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    /// The backlog's unfinished jobs, if a job stored now is predicted to be done past the
    /// time cap.
    fn over_time_cap(&self) -> Option<u64> {
        let (eta, max_wait) = self.time_cap.as_ref()?;
        let p = eta.predict();
        p.done_in(1)
            .is_some_and(|d| d > *max_wait)
            .then_some(p.unfinished)
    }

    fn tell_stored(&self, n: u64) {
        if let Some((eta, _)) = &self.time_cap
            && n > 0
        {
            eta.stored(n);
        }
    }
}

/// Marks a waiter abandoned if its request goes away (client gone) while it waits.
struct Gone(Option<(Arc<AtomicU8>, Arc<Inner>)>);

impl Drop for Gone {
    fn drop(&mut self) {
        if let Some((c, inner)) = &self.0
            && c.compare_exchange(WAITING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            inner.state.lock().expect("line lock").abandoned += 1;
        }
    }
}

impl State {
    /// Requests waiting, not counting those that gave up.
    fn len(&self) -> usize {
        self.waiting.len().saturating_sub(self.abandoned)
    }
}

/// Time for `n` requests of the line to get in, at the measured drain rate.
fn predicted(st: &State, n: usize) -> Duration {
    match st.rate {
        Some(r) if r > 0.0 => Duration::from_secs_f64((n as f64 / r).min(3600.0)),
        _ => Duration::ZERO,
    }
}

/// The pump's pause after the store said full: [`PAUSE_SHARE`] of the time the full backlog
/// takes to drain at the measured rate, within [`PAUSE_MIN`] and [`PAUSE_MAX`].
fn pause(st: &State) -> Duration {
    match st.rate {
        Some(r) if r > 0.0 => {
            let depth = st.full_depth.unwrap_or(1).max(1) as f64;
            Duration::from_secs_f64((PAUSE_SHARE * depth / r).min(3600.0))
                .clamp(PAUSE_MIN, PAUSE_MAX)
        }
        _ => FULL_PAUSE,
    }
}

/// Serves the line until it is empty: stores batches from its head as room appears.
async fn pump(inner: Arc<Inner>) {
    let mut batch_size = 1usize;
    loop {
        let batch: Vec<Waiter> = {
            let mut st = inner.state.lock().expect("line lock");
            let mut batch = Vec::new();
            while batch.len() < batch_size {
                let Some(w) = st.waiting.pop_front() else {
                    break;
                };
                if w.claim
                    .compare_exchange(WAITING, TAKEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    batch.push(w);
                } else {
                    st.abandoned = st.abandoned.saturating_sub(1);
                }
            }
            if batch.is_empty() && st.waiting.is_empty() {
                st.pump = false;
                st.window_stored = 0;
                return;
            }
            batch
        };
        // One call stores a prefix of the batch, in the line's order: a job never takes a
        // place that one ahead of it was refused, so the line is first come, first stored.
        let jobs = batch.iter().map(|w| w.job.clone()).collect();
        let (ids, refused) = if let Some(depth) = inner.over_time_cap() {
            // Full in time: no store call, the pause as for a full count.
            (Vec::new(), Some(EnqueueError::Full(depth)))
        } else {
            match tokio::time::timeout(inner.store_wait, inner.queue.enqueue_prefix(jobs)).await {
                Ok(out) => out,
                Err(_) => (
                    Vec::new(),
                    Some(EnqueueError::Queue(QueueError::Timeout(
                        "an enqueue",
                        inner.store_wait,
                    ))),
                ),
            }
        };
        let stored = ids.len();
        inner.tell_stored(stored as u64);
        let (mut full_depth, mut failed) = (None, None);
        let mut back = Vec::new();
        let now = Instant::now();
        let mut batch = batch.into_iter();
        // `ids` first: zip asks its first iterator first, so no waiter is taken past them.
        for (id, w) in ids.into_iter().zip(batch.by_ref()) {
            inner.stored.fetch_add(1, Ordering::Relaxed);
            let _ = w.reply.send(Ok(id));
        }
        match refused {
            None => {}
            Some(EnqueueError::Full(depth)) => {
                full_depth = Some(depth);
                for w in batch {
                    if now >= w.until {
                        inner.ran_out.fetch_add(1, Ordering::Relaxed);
                        let retry_after = {
                            let st = inner.state.lock().expect("line lock");
                            predicted(&st, st.len() + 1)
                        };
                        let _ = w.reply.send(Err(LineError::WaitRanOut { retry_after }));
                    } else {
                        w.claim.store(WAITING, Ordering::Release);
                        back.push(w);
                    }
                }
            }
            Some(EnqueueError::KeyReused(id)) => {
                // That job alone is refused; the rest were not tried and keep their places.
                if let Some(w) = batch.next() {
                    let _ = w.reply.send(Err(LineError::KeyReused(id)));
                }
                for w in batch {
                    w.claim.store(WAITING, Ordering::Release);
                    back.push(w);
                }
            }
            Some(EnqueueError::Queue(e)) => {
                let why = e.to_string();
                if let Some(w) = batch.next() {
                    let _ = w.reply.send(Err(e.into()));
                }
                for w in batch {
                    let _ = w
                        .reply
                        .send(Err(QueueError::Unreachable(why.clone()).into()));
                }
                failed = Some(why);
            }
        }
        let pause = {
            let mut st = inner.state.lock().expect("line lock");
            for w in back.into_iter().rev() {
                st.waiting.push_front(w);
            }
            if let Some(why) = failed {
                // The store failed: every request in the line would wait for it in turn.
                // They all hear it now; the strategy decides what the store's state means.
                for w in st.waiting.drain(..) {
                    let _ = w
                        .reply
                        .send(Err(QueueError::Unreachable(why.clone()).into()));
                }
            }
            st.window_stored += stored as u64;
            let span = st.window_start.elapsed();
            if span >= RATE_WINDOW {
                let r = st.window_stored as f64 / span.as_secs_f64();
                st.rate = Some(match st.rate {
                    Some(old) => old + RATE_WEIGHT * (r - old),
                    None => r,
                });
                st.window_start = Instant::now();
                st.window_stored = 0;
            }
            if full_depth.is_some() {
                st.full_depth = full_depth;
            }
            let pause = pause(&st);
            if full_depth.is_some() {
                st.full_until = Instant::now() + pause;
            }
            pause
        };
        let full = full_depth.is_some();
        batch_size = if full {
            stored.max(1)
        } else {
            (batch_size * 2).min(MAX_BATCH)
        };
        if full {
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{QueueOptions, WorkerId, open};

    async fn queue(dir: &tempfile::TempDir, max_backlog: u64) -> Queue {
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        let options = QueueOptions {
            max_backlog,
            ..QueueOptions::default()
        };
        open(&url, options).await.unwrap()
    }

    #[test]
    fn the_pause_is_a_quarter_of_the_backlogs_drain_within_bounds() {
        let state = |rate: Option<f64>, depth: Option<u64>| State {
            waiting: VecDeque::new(),
            abandoned: 0,
            pump: false,
            rate,
            window_start: Instant::now(),
            window_stored: 0,
            full_until: Instant::now(),
            full_depth: depth,
        };
        // Before the drain rate is known.
        assert_eq!(pause(&state(None, Some(10_000))), FULL_PAUSE);
        // 10,000 jobs at 400/s drain in 25 s: the pause is its longest, one store write per 20 ms.
        assert_eq!(pause(&state(Some(400.0), Some(10_000))), PAUSE_MAX);
        // 20 jobs at 400/s drain in 50 ms: a quarter of it, so the backlog stays three quarters full.
        let p = pause(&state(Some(400.0), Some(20)));
        assert!((p.as_secs_f64() - 0.0125).abs() < 1e-9, "{p:?}");
        // A tiny backlog behind fast workers: not under a millisecond.
        assert_eq!(pause(&state(Some(100_000.0), Some(10))), PAUSE_MIN);
    }

    /// Runs the oldest due job and returns its payload: one place frees up.
    async fn finish_one(q: &Queue, worker: &WorkerId) -> String {
        let job = q
            .claim(worker, Duration::from_secs(30), Duration::from_secs(1))
            .await
            .unwrap()
            .expect("a job to claim");
        q.complete(&job, Ok("{}".into())).await.unwrap();
        job.payload
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_get_in_in_arrival_order_as_places_free_up() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(&dir, 2).await;
        let line = Line::new(q.clone(), 100, Duration::from_secs(2));
        let until = Instant::now() + Duration::from_secs(20);
        for p in ["a", "b"] {
            line.enqueue(NewJob::new(p), until).await.unwrap();
        }
        let mut waiting = Vec::new();
        for i in 0..5 {
            let l = line.clone();
            waiting.push(tokio::spawn(async move {
                l.enqueue(NewJob::new(i.to_string()), until).await
            }));
            // Arrive one after the other.
            while line.len() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(line.len(), 5);
        let worker = WorkerId::new();
        let mut order = Vec::new();
        for _ in 0..7 {
            order.push(finish_one(&q, &worker).await);
        }
        for w in waiting {
            w.await.unwrap().expect("stored once a place freed up");
        }
        assert_eq!(order, ["a", "b", "0", "1", "2", "3", "4"]);
        assert!(line.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_that_runs_out_stores_nothing_and_a_full_line_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(&dir, 1).await;
        let line = Line::new(q.clone(), 1, Duration::from_secs(2));
        let far = Instant::now() + Duration::from_secs(20);
        line.enqueue(NewJob::new("first"), far).await.unwrap();
        let start = Instant::now();
        let short = start + Duration::from_millis(200);
        let r = line.enqueue(NewJob::new("late"), short).await;
        assert!(matches!(r, Err(LineError::WaitRanOut { .. })), "{r:?}");
        assert!(start.elapsed() >= Duration::from_millis(190));
        // One waits; the line's cap (1) refuses the next at once.
        let waiter = {
            let line = line.clone();
            tokio::spawn(async move { line.enqueue(NewJob::new("second"), far).await })
        };
        while line.is_empty() {
            tokio::task::yield_now().await;
        }
        let t = Instant::now();
        let r = line.enqueue(NewJob::new("refused"), far).await;
        assert!(matches!(r, Err(LineError::Full { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_millis(100));
        let worker = WorkerId::new();
        assert_eq!(finish_one(&q, &worker).await, "first");
        waiter.await.unwrap().unwrap();
        assert_eq!(finish_one(&q, &worker).await, "second");
        let c = q.counts().await.unwrap();
        assert_eq!(
            (c.queued, c.running, c.done),
            (0, 0, 2),
            "nothing else was stored"
        );
    }
}
