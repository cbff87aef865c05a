//! The job queue: the [`offload_queue`] crate (the store trait, its SQLite, Redis and Postgres
//! backends, typed jobs and the worker), and the gateway's [`line`] in front of it.
pub use offload_queue::*;

pub mod line;

pub use self::line::{Line, LineError};
