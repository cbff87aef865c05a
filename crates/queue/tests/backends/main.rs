//! The store trait's promises ([`offload_queue::testing`]) on each built-in backend, one line
//! each, and each backend's tests of its own: SQLite in a temporary directory, Redis at
//! `REDIS_URL` and Postgres at `POSTGRES_URL` (see the testing module for what happens without
//! them). `cargo test -p offload-queue --features testing,redis,postgres`.

use offload_queue::testing::Backend;

#[cfg(feature = "sqlite")]
offload_queue::conformance_tests!(sqlite, Backend::Sqlite);
#[cfg(feature = "redis")]
offload_queue::conformance_tests!(redis, Backend::Redis);
#[cfg(feature = "postgres")]
offload_queue::conformance_tests!(postgres, Backend::Postgres);

#[cfg(feature = "postgres")]
mod postgres_only;
#[cfg(feature = "redis")]
mod redis_only;
