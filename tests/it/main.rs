//! The one integration-test binary: each module tests one part through its public API.

mod queue;
