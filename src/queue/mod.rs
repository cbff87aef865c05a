//! The job queue: the [`offload_queue`] crate (the store trait, its SQLite, Redis and Postgres
//! backends, typed jobs, the worker and the line in front of a full store), offload's own work
//! as [`builtin`] job types, and the line's `/metrics` series.
pub use offload_queue::*;

pub mod builtin;
mod line_metrics;
mod store_metrics;

pub use self::line_metrics::LineMetrics;
pub use self::store_metrics::StoreMetrics;
