//! All integration tests, in one test binary: real `offload` processes on loopback ports.

mod bench;
mod bench_node;
mod gateway;
mod load;
mod queue;
mod queue_faults;
mod remote;
mod support;
