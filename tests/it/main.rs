//! All integration tests, in one test binary: real `offload` processes on loopback ports.

mod auto;
mod bench;
mod bench_node;
mod cancel_storm;
mod conns;
mod custom_job;
mod docs;
mod embed;
mod flood;
mod gateway;
mod jobs;
mod load;
mod netns;
mod observe;
mod past_the_limit;
mod queue_faults;
mod remote;
mod support;
mod traces;
mod ui;
