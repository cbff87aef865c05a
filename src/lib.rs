//! offload: run CPU-heavy work from an async Rust service every known way, and measure what
//! each way costs.
//!
//! # Layout
//! - [`api`]: serde types for everything that crosses a process: answers, job views, errors,
//!   health, job counts, the "listening on" line.
//! - [`bench`](mod@bench): every strategy side by side, and the report.
//! - [`cli`]: flags into validated configs; tracing set-up; subcommand dispatch.
//! - [`client`]: a small HTTP/1.1 client (one request, or a keep-alive connection) for the
//!   bench and the tests.
//! - [`work`]: the CPU-bound jobs (`count`, `primes`, `hash`): parse, validate, run.
//! - [`admission`]: admission by deadline: the cost model and the rule (the `offload-pool`
//!   crate's, re-exported).
//! - [`pool`]: the bounded worker pool: the `offload-pool` crate, re-exported.
//! - [`pool_metrics`]: the pool's `/metrics` series.
//! - [`strategy`]: one file per strategy, one enum over them.
//! - [`compute`]: the compute service router (`POST /compute`).
//! - [`gateway`]: the axum router: `/heavy`, `/health`, `/metrics`; errors to responses.
//! - [`metrics`]: latency buckets and label sets shared by the parts' `prometheus-client`
//!   metrics, and the Prometheus text of a server's registry.
//! - [`load`]: the load generator (knows nothing of offload's servers).
//! - [`logs`]: errors logged at most once a second per kind, every one counted.
//! - [`queue`]: the job queue layer, SQLite, Redis and Postgres backends (no HTTP in it).

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod compute;
pub mod gateway;
pub use offload_load as load;
pub mod logs;
pub mod metrics;
pub mod otel;
pub use offload_pool as pool;
pub use offload_pool::admission;
pub mod pool_metrics;
pub mod queue;
pub mod strategy;
pub mod work;
