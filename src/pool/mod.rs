//! offload's piscina: a fixed set of threads fed by a bounded queue, with no HTTP in it.
//!
//! - Submitting never blocks. [`Pool::submit_work`] admits by deadline: a request that is
//!   predicted not to finish in time is refused at once ([`SubmitError::Late`]), before any
//!   of its work exists; the queue's hard cap, counted in requests, refuses with
//!   [`SubmitError::Full`].
//! - A request is split into chunks only while threads would otherwise sit idle: alone on an
//!   idle pool it runs on every thread; when the pool is saturated it runs whole, on one.
//! - Each task may carry a deadline; a task whose deadline passed before it starts is dropped
//!   without running, and a task whose caller stopped waiting (dropped its [`Handle`]) never
//!   runs. Running tasks see the same two conditions through their stop check.
//! - A panic in a task is caught and reported; the thread carries on.
//! - Wait and run times go into histograms; busy time gives utilisation.
//! - [`Pool::shutdown`] stops intake and lets the threads drain what is queued.

pub mod priority;
mod stats;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::admission::{self, Cost, CostModel, Late};
use crate::metrics::{ConstGauge, Registry, Work};
pub use priority::{Policy, Priority};
use stats::Counters;
pub use stats::PoolStats;

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

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the pool queue is full ({0} requests waiting)")]
    Full(usize),
    #[error("the predicted wait ({:.3} s) would not leave time to finish before the deadline", .0.wait.as_secs_f64())]
    Late(Late),
    #[error("the pool is shutting down")]
    ShuttingDown,
}

/// Why a submitted task produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("the task's deadline passed before it finished")]
    Expired,
    #[error("the task panicked: {0}")]
    Panicked(String),
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
    reply: oneshot::Sender<Result<Box<dyn std::any::Any + Send>, TaskError>>,
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

/// The result of one submitted task, as a future.
/// Dropping it before the task starts means the task never runs.
#[derive(Debug)]
pub struct Handle<T> {
    rx: oneshot::Receiver<Result<Box<dyn std::any::Any + Send>, TaskError>>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Send + 'static> std::future::Future for Handle<T> {
    type Output = Result<T, TaskError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok(any)) => Ok(*any
                .downcast::<T>()
                .expect("a handle gets its own task's type")),
            Ok(Err(e)) => Err(e),
            // The worker dropped the sender without replying: only on a shut-down pool.
            Err(_) => Err(TaskError::Stopped),
        })
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
        let busy = self.shared.running.load(Relaxed) + q.tasks.len();
        let idle = self.size.saturating_sub(busy);
        let model = &self.shared.model;
        // Every thread busy: the wait is the slot time of all admitted work over the threads.
        let wait = if idle > 0 {
            Duration::ZERO
        } else {
            model.backlog() / self.size as u32
        };
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
            None => admission::judge(wait, run, deadline.saturating_duration_since(now)),
            Some(b) if b.start_now && !wait.is_zero() => Err(Late {
                wait,
                retry_after: wait,
                finish: wait + run,
            }),
            Some(b) => admission::fits(wait, run, b.end.saturating_duration_since(now)),
        };
        if let Err(late) = judged {
            if budget.is_none() {
                self.shared.counters.late.inc();
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
            self.shared.counters.rejected.inc();
            return Err(SubmitError::Full(q.requests));
        }
        Ok(())
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
            let (tx, rx) = oneshot::channel();
            let job: Job = Box::new(move |stop| Box::new(f(stop)) as Box<dyn std::any::Any + Send>);
            q.tasks.push_back(Task {
                job,
                cost,
                lead: handles.is_empty(),
                deadline,
                queued_at: now,
                reply: tx,
            });
            handles.push(Handle {
                rx,
                _t: std::marker::PhantomData,
            });
        }
        if !handles.is_empty() {
            q.requests += 1;
        }
        self.shared.counters.submitted.inc_by(handles.len() as u64);
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
        if self.shared.running.load(Relaxed) + q.tasks.len() < self.size {
            return Duration::ZERO;
        }
        drop(q);
        self.shared.model.backlog() / self.size as u32
    }

    /// A snapshot of the pool's counters, histograms and utilisation.
    pub fn stats(&self) -> PoolStats {
        let depth = self.shared.queue.lock().expect("pool queue lock").requests;
        self.shared.counters.snapshot(
            depth,
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
        c.expired.inc();
        settle(shared, task.cost);
        let _ = task.reply.send(Err(TaskError::Expired));
        return;
    }
    if task.reply.is_closed() {
        c.cancelled.inc();
        settle(shared, task.cost);
        return;
    }
    c.started.inc();
    c.wait.observe((start - task.queued_at).as_secs_f64());
    let (reply, deadline) = (&task.reply, task.deadline);
    let stop = move || reply.is_closed() || deadline.is_some_and(|d| Instant::now() >= d);
    let out = catch_unwind(AssertUnwindSafe(|| (task.job)(&stop)));
    let ran = start.elapsed();
    if let (Some(cost), Ok(_)) = (task.cost, &out)
        && !stop()
    {
        shared.model.observe(cost.class, cost.units, ran);
    }
    c.run.observe(ran.as_secs_f64());
    c.busy_us.inc_by(ran.as_micros() as u64);
    let out = match out {
        Ok(v) => {
            c.completed.inc();
            Ok(v)
        }
        Err(panic) => {
            c.panicked.inc();
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            crate::throttled!("pool_task_panicked", error, panic = %msg, "a pool task panicked; the thread carries on");
            Err(TaskError::Panicked(msg))
        }
    };
    settle(shared, task.cost);
    let _ = task.reply.send(out);
}

/// The smallest chunk worth handing to another thread: a hand-off costs a few microseconds
/// and a wake-up; below this, splitting costs more than it saves.
pub const MIN_CHUNK: Duration = Duration::from_micros(250);

#[cfg(test)]
mod tests;

impl Pool {
    /// Registers the pool's metrics (`offload_pool_*`).
    pub fn register(&self, registry: &mut Registry) {
        let c = &self.shared.counters;
        registry.register(
            "offload_pool_threads",
            "Worker threads in the pool",
            ConstGauge::new(self.size as u64),
        );
        registry.register(
            "offload_pool_queue_depth",
            "Requests waiting in the pool queue",
            c.depth.clone(),
        );
        registry.register(
            "offload_pool_queue_capacity",
            "Requests the pool queue holds before it rejects (a hard cap; the deadline decides first)",
            ConstGauge::new(self.shared.max_queue as u64),
        );
        registry.register(
            "offload_pool_tasks",
            "Pool tasks by outcome",
            c.tasks.clone(),
        );
        registry.register(
            "offload_pool_predicted_wait_seconds",
            "Predicted wait of a request arriving now: admitted work over the threads",
            c.predicted_wait.clone(),
        );
        registry.register(
            "offload_pool_seconds_per_unit",
            "Measured time one unit of work holds a pool thread, by kind of work",
            c.secs_per_unit.clone(),
        );
        registry.register(
            "offload_pool_utilisation",
            "Busy thread time over thread time since start",
            c.utilisation.clone(),
        );
        registry.register(
            "offload_pool_wait_seconds",
            "Time tasks waited in the queue before starting",
            c.wait.clone(),
        );
        registry.register(
            "offload_pool_run_seconds",
            "Time tasks ran on a pool thread",
            c.run.clone(),
        );
    }

    /// Sets the gauges read from the pool's state, before a scrape.
    pub fn refresh_metrics(&self) {
        let (c, s) = (&self.shared.counters, self.stats());
        c.depth.set(s.queue_depth as i64);
        c.predicted_wait.set(self.predicted_wait().as_secs_f64());
        c.utilisation.set(s.utilisation);
        for (class, kind) in crate::work::Kind::ALL.iter().enumerate() {
            if let Some(v) = self.shared.model.secs_per_unit(class) {
                let work = Work { work: kind.name() };
                c.secs_per_unit.get_or_create(&work).set(v);
            }
        }
    }
}
