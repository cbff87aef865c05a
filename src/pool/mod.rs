//! The bounded worker pool.
