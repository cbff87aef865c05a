//! The job queue: the [`offload_queue`] crate (the store trait, its SQLite, Redis and Postgres
//! backends, typed jobs and the worker), offload's own work as [`builtin`] job types, and the
//! gateway's [`line`](mod@line) in front of the store.
pub use offload_queue::*;

pub mod builtin;
pub mod line;

pub use self::line::{Line, LineError};
