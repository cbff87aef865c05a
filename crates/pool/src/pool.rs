//! The pool: a fixed set of threads fed by a bounded queue, admission by deadline, and the
//! worker loop.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admission::{self, Cost, CostModel, Late};
use crate::handle::{self, Handle, Sender};
use crate::priority::Priority;
use crate::stats::{Counters, Observer, PoolStats, inc};

/// What a task receives: call it now and then; true means "give up, nobody wants the result".
pub type StopCheck<'a> = &'a dyn Fn() -> bool;

type Job = Box<dyn FnOnce(StopCheck<'_>) -> Box<dyn std::any::Any + Send> + Send>;

/// How a pool is built.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads (fixed for the pool's life).
    pub threads: usize,
    /// Requests that may wait (a request's chunks count once); past it, submissions are
    /// rejected at once. A hard cap on memory: the deadline decides first.
    pub max_queue: usize,
    /// How the worker threads are scheduled (Linux): niceness and policy.
    pub priority: Priority,
    /// Thread name prefix.
    pub name: String,
}

/// The queue's cap in [`PoolConfig::default`]: enough for a burst on any machine, while the
/// deadline, not the cap, is what refuses in practice.
pub const DEFAULT_MAX_QUEUE: usize = 1_024;

impl Default for PoolConfig {
    /// One thread per core the process may use, [`DEFAULT_MAX_QUEUE`], the caller's
    /// priority, threads named `pool-N`.
    fn default() -> Self {
        PoolConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_queue: DEFAULT_MAX_QUEUE,
            priority: Priority::SAME,
            name: "pool".into(),
        }
    }
}

/// Why a submission was refused. Nothing of the request was queued. A refusal for load says
/// when to try again ([`SubmitError::retry_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds its cap of requests.
    #[error("the pool queue is full ({waiting} requests waiting)")]
    Full {
        /// The requests waiting.
        waiting: usize,
        /// The predicted wait of a request arriving now ([`Pool::predicted_wait`]): by then
        /// the work ahead has drained, so the queue has room.
        retry_after: Duration,
    },
    /// The request was predicted to miss its deadline (or budget); `Late::retry_after` says
    /// when one like it would fit.
    #[error("the predicted wait ({:.3} s) would not leave time to finish before the deadline", .0.wait.as_secs_f64())]
    Late(Late),
    /// [`Pool::shutdown`] was called.
    #[error("the pool is shutting down")]
    ShuttingDown,
}

impl SubmitError {
    /// When a request like the refused one would be taken: for [`SubmitError::Full`] the
    /// predicted wait, for [`SubmitError::Late`] its [`Late::retry_after`]; `None` while
    /// shutting down (it will not be). For a `Retry-After` header, round it with
    /// [`admission::retry_after_secs`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SubmitError::Full { retry_after, .. } => Some(*retry_after),
            SubmitError::Late(late) => Some(late.retry_after),
            SubmitError::ShuttingDown => None,
        }
    }
}

/// Why a submitted task produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// Its deadline passed before it started.
    #[error("the task's deadline passed before it finished")]
    Expired,
    /// It panicked, with this message; the thread carried on.
    #[error("the task panicked: {0}")]
    Panicked(String),
    /// The pool went away without running it.
    #[error("the task stopped early")]
    Stopped,
}

struct Task {
    job: Job,
    /// The task's part of its request's cost, for the model; `None` for plain submissions.
    cost: Option<Cost>,
    /// The first task of its request: the request counts as waiting until this one starts.
    lead: bool,
    deadline: Option<Instant>,
    queued_at: Instant,
    reply: Sender,
}

struct Queue {
    tasks: VecDeque<Task>,
    /// Requests with a task waiting (their lead task not yet taken).
    requests: usize,
    open: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    max_queue: usize,
    counters: Counters,
    /// Threads running a task now.
    running: AtomicUsize,
    /// Time per unit of work on a pool thread, and the work admitted.
    model: CostModel,
    /// Per-task events for the caller's metrics, once installed.
    observer: OnceLock<Arc<dyn Observer>>,
}

/// The client's budget for an answer, for [`Pool::submit_work_within`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The work must be predicted to finish by then.
    pub end: Instant,
    /// And it must start at once (`Prefer: respond-async`).
    pub start_now: bool,
}

/// A bounded pool of worker threads. Cheap to share behind an `Arc`.
pub struct Pool {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
    created: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.size)
            .field("max_queue", &self.shared.max_queue)
            .finish()
    }
}

impl Pool {
    /// Starts the pool's threads.
    ///
    /// # Errors
    /// The OS error when a thread cannot be started (the threads already started stop).
    pub fn new(config: PoolConfig) -> std::io::Result<Pool> {
        let threads = config.threads.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                tasks: VecDeque::with_capacity(config.max_queue.min(1024)),
                requests: 0,
                open: true,
            }),
            ready: Condvar::new(),
            max_queue: config.max_queue,
            counters: Counters::default(),
            running: AtomicUsize::new(0),
            model: CostModel::default(),
            observer: OnceLock::new(),
        });
        let pool = Pool {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
            size: threads,
            created: Instant::now(),
        };
        for i in 0..threads {
            let shared = shared.clone();
            let priority = config.priority;
            let handle = std::thread::Builder::new()
                .name(format!("{}-{i}", config.name))
                .spawn(move || {
                    priority.apply();
                    worker(&shared);
                });
            match handle {
                Ok(h) => pool.threads.lock().expect("pool thread list").push(h),
                Err(e) => {
                    pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.size
    }

    /// Queues `f` to run on a pool thread, all or nothing for a batch of one.
    ///
    /// # Errors
    /// [`SubmitError`] when the queue is full or the pool is shutting down.
    pub fn submit<T, F>(&self, deadline: Option<Instant>, f: F) -> Result<Handle<T>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(StopCheck<'_>) -> T + Send + 'static,
    {
        let mut handles = self.submit_all(deadline, vec![f])?;
        Ok(handles.pop().expect("one task in, one handle out"))
    }

    /// Queues several tasks at once: either all are queued or none is (a request split into
    /// chunks never half-enters the queue). No admission by deadline: see
    /// [`Pool::submit_work`].
    ///
    /// # Errors
    /// [`SubmitError`] when the queue is at its cap, or the pool is shutting down.
    pub fn submit_all<T, F>(
        &self,
        deadline: Option<Instant>,
        fs: Vec<F>,
    ) -> Result<Vec<Handle<T>>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(StopCheck<'_>) -> T + Send + 'static,
    {
        let mut q = self.shared.queue.lock().expect("pool queue lock");
        self.check_room(&q)?;
        Ok(self.enqueue(&mut q, deadline, fs.into_iter().map(|f| (None, f))))
    }

    /// Admits a request of `cost` by its deadline and queues it, split into as many chunks
    /// as there are idle threads (at most `max_split`, and none smaller than
    /// [`MIN_CHUNK`]); `split(k)` makes the k chunks, each with its share of the units.
    /// `split` is called only once the request is admitted: a refused request costs no work.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use offload_pool::{Pool, PoolConfig, StopCheck, SubmitError, admission::Cost};
    ///
    /// let pool = Pool::new(PoolConfig { threads: 1, ..PoolConfig::default() })?;
    /// // A kind of work, named once (keep the class), and 1,000 units of it.
    /// let sums = pool.model().class("sums")?;
    /// let cost = Cost::new(sums, 1_000);
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// // At most one chunk: `split(1)` gives it all the units.
    /// let split = |_k| vec![(1_000, |_stop: StopCheck<'_>| 42)];
    /// match pool.submit_work(deadline, cost, 1, split) {
    ///     Ok(handles) => assert_eq!(handles.into_iter().next().unwrap().wait()?, 42),
    ///     // Predicted to miss the deadline: answer 503 with this Retry-After.
    ///     Err(SubmitError::Late(late)) => println!("retry in {:?}", late.retry_after),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SubmitError::Late`] when the predicted wait leaves no time to finish before
    /// `deadline`; [`SubmitError::Full`] at the hard cap; [`SubmitError::ShuttingDown`].
    pub fn submit_work<T, F>(
        &self,
        deadline: Instant,
        cost: Cost,
        max_split: usize,
        split: impl FnOnce(usize) -> Vec<(u64, F)>,
    ) -> Result<Vec<Handle<T>>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(StopCheck<'_>) -> T + Send + 'static,
    {
        self.submit_judged(deadline, None, cost, max_split, split)
            .map(|(handles, _)| handles)
    }

    /// One task of `cost` under admission by deadline: [`Pool::submit_work`] for work that is
    /// not split. `f` runs on a pool thread with a [`StopCheck`] that turns true when the
    /// deadline passes or the caller stops waiting; a refused task costs no work.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use offload_pool::{Pool, PoolConfig, admission::Cost};
    ///
    /// let pool = Pool::new(PoolConfig { threads: 1, ..PoolConfig::default() })?;
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let sums = pool.model().class("sums")?;
    /// let sum = pool.submit_one(deadline, Cost::new(sums, 1_000), |_stop| {
    ///     (1..=1_000u64).sum::<u64>()
    /// })?;
    /// assert_eq!(sum.wait()?, 500_500); // in async code: `sum.await`
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Pool::submit_work`].
    pub fn submit_one<T, F>(
        &self,
        deadline: Instant,
        cost: Cost,
        f: F,
    ) -> Result<Handle<T>, SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(StopCheck<'_>) -> T + Send + 'static,
    {
        let units = cost.units;
        let mut handles = self.submit_work(deadline, cost, 1, move |_| vec![(units, f)])?;
        Ok(handles.remove(0))
    }

    /// As [`Pool::submit_work`], but admitted only when predicted to *finish* by `budget.end`
    /// (its wait plus its run, even when it would start at once: [`admission::fits`]); it
    /// still runs until `deadline`. Returns the handles and the predicted time to finish.
    /// `auto` uses it to keep in the pool only what answers within the client's budget.
    ///
    /// # Errors
    /// As [`Pool::submit_work`], with [`SubmitError::Late`] when it would not fit the budget.
    pub fn submit_work_within<T, F>(
        &self,
        budget: Budget,
        deadline: Instant,
        cost: Cost,
        max_split: usize,
        split: impl FnOnce(usize) -> Vec<(u64, F)>,
    ) -> Result<(Vec<Handle<T>>, Duration), SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(StopCheck<'_>) -> T + Send + 'static,
    {
        self.submit_judged(deadline, Some(budget), cost, max_split, split)
    }

    fn submit_judged<T, F>(
        &self,
        deadline: Instant,
        budget: Option<Budget>,
        cost: Cost,
        max_split: usize,
        split: impl FnOnce(usize) -> Vec<(u64, F)>,
    ) -> Result<(Vec<Handle<T>>, Duration), SubmitError>
    where
        T: Send + 'static,
        F: FnOnce(StopCheck<'_>) -> T + Send + 'static,
    {
        let mut q = self.shared.queue.lock().expect("pool queue lock");
        self.check_room(&q)?;
        let idle = self.idle(&q);
        let model = &self.shared.model;
        let wait = self.wait(&q);
        let own = model.estimate(cost);
        let k = if max_split <= 1 {
            1
        } else {
            let worth = (own.as_nanos() / MIN_CHUNK.as_nanos()).max(1) as usize;
            idle.min(max_split).min(worth).max(1)
        };
        let now = Instant::now();
        let run = own / k as u32;
        let judged = match budget {
            None => {
                // Deadline admission allows for the error the runs have shown.
                let m = model.margin();
                let remaining = deadline.saturating_duration_since(now);
                admission::judge(wait.mul_f64(m), run.mul_f64(m), remaining)
            }
            Some(b) if b.start_now && !wait.is_zero() => Err(Late {
                wait,
                retry_after: wait,
                finish: wait + run,
            }),
            Some(b) => admission::fits(wait, run, b.end.saturating_duration_since(now)),
        };
        if let Err(late) = judged {
            if budget.is_none() {
                inc(&self.shared.counters.late);
            }
            return Err(SubmitError::Late(late));
        }
        let chunks = split(k);
        let tasks = chunks.into_iter().map(|(units, f)| {
            let c = Cost {
                class: cost.class,
                units,
            };
            model.admit(c);
            (Some(c), f)
        });
        Ok((self.enqueue(&mut q, Some(deadline), tasks), wait + run))
    }

    /// Refuses when the pool is closed or its queue is at the cap.
    fn check_room(&self, q: &Queue) -> Result<(), SubmitError> {
        if !q.open {
            return Err(SubmitError::ShuttingDown);
        }
        if q.requests >= self.shared.max_queue {
            inc(&self.shared.counters.rejected);
            return Err(SubmitError::Full {
                waiting: q.requests,
                retry_after: self.wait(q),
            });
        }
        Ok(())
    }

    /// Threads that would be idle if every queued task started now (under the queue lock).
    fn idle(&self, q: &Queue) -> usize {
        let busy = self.shared.running.load(Relaxed) + q.tasks.len();
        self.size.saturating_sub(busy)
    }

    /// The predicted wait of a request arriving now (under the queue lock): none while a
    /// thread is idle; with every thread busy, the slot time of all admitted work over the
    /// threads.
    fn wait(&self, q: &Queue) -> Duration {
        if self.idle(q) > 0 {
            return Duration::ZERO;
        }
        self.shared.model.backlog() / self.size as u32
    }

    /// Pushes one request's tasks (under the queue lock) and wakes threads for them.
    fn enqueue<T, F>(
        &self,
        q: &mut std::sync::MutexGuard<'_, Queue>,
        deadline: Option<Instant>,
        tasks: impl Iterator<Item = (Option<Cost>, F)>,
    ) -> Vec<Handle<T>>
    where
        T: Send + 'static,
        F: FnOnce(StopCheck<'_>) -> T + Send + 'static,
    {
        let now = Instant::now();
        let mut handles = Vec::new();
        for (cost, f) in tasks {
            let (tx, rx) = handle::channel();
            let job: Job = Box::new(move |stop| Box::new(f(stop)) as Box<dyn std::any::Any + Send>);
            q.tasks.push_back(Task {
                job,
                cost,
                lead: handles.is_empty(),
                deadline,
                queued_at: now,
                reply: tx,
            });
            handles.push(rx);
        }
        if !handles.is_empty() {
            q.requests += 1;
        }
        self.shared
            .counters
            .submitted
            .fetch_add(handles.len() as u64, Relaxed);
        if handles.len() == 1 {
            self.shared.ready.notify_one();
        } else {
            self.shared.ready.notify_all();
        }
        handles
    }

    /// The pool's measured time per unit of work, and the work admitted and unfinished.
    pub fn model(&self) -> &CostModel {
        &self.shared.model
    }

    /// The predicted wait of a request arriving now (zero while a thread is idle).
    pub fn predicted_wait(&self) -> Duration {
        let q = self.shared.queue.lock().expect("pool queue lock");
        self.wait(&q)
    }

    /// Installs `observer` to hear of every task's wait, run and panic (for metrics the crate
    /// does not keep, such as latency histograms). Returns false, and changes nothing, when
    /// one is already installed.
    pub fn observe(&self, observer: Arc<dyn Observer>) -> bool {
        self.shared.observer.set(observer).is_ok()
    }

    /// The queue's hard cap, in requests.
    pub fn max_queue(&self) -> usize {
        self.shared.max_queue
    }

    /// A snapshot of the pool's counters and utilisation.
    pub fn stats(&self) -> PoolStats {
        let depth = self.shared.queue.lock().expect("pool queue lock").requests;
        self.shared.counters.snapshot(
            depth,
            self.shared.running.load(Relaxed),
            self.size,
            self.shared.max_queue,
            self.created.elapsed(),
        )
    }

    /// Stops intake: later submissions fail with [`SubmitError::ShuttingDown`]. Queued tasks
    /// still run (unless their deadline passes or their caller has gone).
    pub fn shutdown(&self) {
        self.shared.queue.lock().expect("pool queue lock").open = false;
        self.shared.ready.notify_all();
    }

    /// Shuts down and waits up to `grace` for the threads to drain the queue and exit.
    /// Returns false when some thread was still busy at the end of the grace period.
    pub fn drain(&self, grace: Duration) -> bool {
        self.shutdown();
        let end = Instant::now() + grace;
        let mut threads = std::mem::take(&mut *self.threads.lock().expect("pool thread list"));
        while Instant::now() < end {
            if threads.iter().all(|t| t.is_finished()) {
                threads.drain(..).for_each(|t| {
                    let _ = t.join();
                });
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(shared: &Shared) {
    loop {
        let task = {
            let mut q = shared.queue.lock().expect("pool queue lock");
            loop {
                if let Some(t) = q.tasks.pop_front() {
                    if t.lead {
                        q.requests -= 1;
                    }
                    // Counted under the lock, so admission never sees a task in neither
                    // the queue nor the running count.
                    shared.running.fetch_add(1, Relaxed);
                    break t;
                }
                if !q.open {
                    return;
                }
                q = shared.ready.wait(q).expect("pool queue lock");
            }
        };
        run_task(shared, task);
    }
}

/// Counts a task as no longer running or admitted. Called before its reply goes out, so a
/// client that sends its next request at once finds the pool as free as it is.
fn settle(shared: &Shared, cost: Option<Cost>) {
    shared.running.fetch_sub(1, Relaxed);
    if let Some(c) = cost {
        shared.model.finish(c);
    }
}

fn run_task(shared: &Shared, task: Task) {
    let c = &shared.counters;
    let start = Instant::now();
    // Deadline first: a caller that gave up because its deadline passed counts as expired.
    if task.deadline.is_some_and(|d| d <= start) {
        inc(&c.expired);
        settle(shared, task.cost);
        task.reply.send(Err(TaskError::Expired));
        return;
    }
    if task.reply.is_closed() {
        inc(&c.cancelled);
        settle(shared, task.cost);
        return;
    }
    inc(&c.started);
    let observer = shared.observer.get();
    if let Some(o) = observer {
        o.waited(start - task.queued_at);
    }
    let (reply, deadline) = (&task.reply, task.deadline);
    let stop = move || reply.is_closed() || deadline.is_some_and(|d| Instant::now() >= d);
    let out = catch_unwind(AssertUnwindSafe(|| (task.job)(&stop)));
    let ran = start.elapsed();
    // A run stopped at its deadline took at least `ran`: a figure worth learning when it is
    // past the estimate (erratic work whose long runs miss would otherwise teach the model its
    // short ones only). A run whose caller left was cut short at no particular point.
    if let (Some(cost), Ok(_)) = (task.cost, &out)
        && !task.reply.is_closed()
        && (!stop() || ran > shared.model.estimate(cost))
    {
        shared.model.observe(cost.class, cost.units, ran);
    }
    if let Some(o) = observer {
        o.ran(ran);
    }
    c.busy_us.fetch_add(ran.as_micros() as u64, Relaxed);
    let out = match out {
        Ok(v) => {
            inc(&c.completed);
            Ok(v)
        }
        Err(panic) => {
            inc(&c.panicked);
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            match observer {
                Some(o) => o.panicked(&msg),
                None => log_panic(&msg),
            }
            Err(TaskError::Panicked(msg))
        }
    };
    settle(shared, task.cost);
    task.reply.send(out);
}

/// The smallest chunk worth handing to another thread: a hand-off costs a few microseconds
/// and a wake-up; below this, splitting costs more than it saves.
pub const MIN_CHUNK: Duration = Duration::from_micros(250);

/// Logs a task's panic, at most once a second for the process (a task that always panics
/// must not flood the log), with the number held back since the last line.
fn log_panic(msg: &str) {
    static NEXT_MS: AtomicU64 = AtomicU64::new(0);
    static HELD_BACK: AtomicU64 = AtomicU64::new(0);
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let next = NEXT_MS.load(Relaxed);
    if now >= next
        && NEXT_MS
            .compare_exchange(next, now + 1_000, Relaxed, Relaxed)
            .is_ok()
    {
        let held_back = HELD_BACK.swap(0, Relaxed);
        tracing::error!(panic = %msg, held_back, "a pool task panicked; the thread carries on");
    } else {
        HELD_BACK.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
