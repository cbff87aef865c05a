//! A bounded pool of threads for CPU-heavy work in an async service, with admission by
//! deadline: a request predicted to miss its deadline is refused at once, with a time to
//! retry, instead of waiting in a queue for an answer nobody will read.
//!
//! No HTTP, no storage and no async runtime in it: a [`Handle`] is a `Future` any executor
//! can await, and has a blocking [`Handle::wait`] for plain threads.
//!
//! - Submitting never blocks. [`Pool::submit_work`] admits by deadline: a request that is
//!   predicted not to finish in time is refused at once ([`SubmitError::Late`]), before any
//!   of its work exists; the queue's hard cap, counted in requests, refuses with
//!   [`SubmitError::Full`]. Both say when to try again ([`SubmitError::retry_after`]).
//! - A request is split into chunks only while threads would otherwise sit idle: alone on an
//!   idle pool it runs on every thread; when the pool is saturated it runs whole, on one.
//! - Each task may carry a deadline; a task whose deadline passed before it starts is dropped
//!   without running, and a task whose caller stopped waiting (dropped its [`Handle`]) never
//!   runs. Running tasks see the same two conditions through their [`StopCheck`].
//! - A panic in a task is caught and reported; the thread carries on.
//! - [`Pool::stats`] counts tasks by outcome and the threads' utilisation; an [`Observer`]
//!   hears of each task's wait, run and panic, for the caller's own metrics.
//! - [`Pool::shutdown`] stops intake and lets the threads drain what is queued.
//!
//! ```
//! use offload_pool::{Pool, PoolConfig, Priority};
//!
//! let pool = Pool::new(PoolConfig {
//!     threads: 2,
//!     max_queue: 64,
//!     priority: Priority::SAME,
//!     name: "work".into(),
//! })?;
//! let handle = pool.submit(None, |_stop| (1..=1_000u64).sum::<u64>())?;
//! // In async code: `handle.await`.
//! assert_eq!(handle.wait()?, 500_500);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`Pool`] (`pool.rs`): the queue, the threads, admission and splitting.
//! - [`admission`]: the cost model (time per unit of each class of work, learnt from runs)
//!   and the deadline rule.
//! - [`Handle`] (`handle.rs`): a task's result, as a future or by blocking.
//! - [`pace`]: the schedule that refusals for overload are held to, so that clients that
//!   resend at once cannot spin on them.
//! - [`priority`]: how the pool's threads are scheduled (Linux niceness and policy).
//! - [`PoolStats`] and [`Observer`] (`stats.rs`): what the pool counts and tells.

#![warn(missing_docs)]

pub mod admission;
mod handle;
pub mod pace;
mod pool;
pub mod priority;
mod stats;

pub use handle::Handle;
pub use pool::{
    Budget, DEFAULT_MAX_QUEUE, MIN_CHUNK, Pool, PoolConfig, StopCheck, SubmitError, TaskError,
};
pub use priority::{Policy, Priority};
pub use stats::{Observer, PoolStats};
