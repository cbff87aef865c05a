//! All integration tests, in one test binary: real `offload` processes on loopback ports.

mod gateway;
mod remote;
mod support;
