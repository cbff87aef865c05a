//! The bench's running side: it starts the processes, loads them, samples them, calibrates
//! the machine, and fills in the model (`super::model`).
//!
//! # Layout
//! - `scenario`: one row of the uniform scenario end to end;
//! - `mix`, `flood`: the mixed and the flood scenarios;
//! - `node`: the seed's Node servers (`--node`), installed and run beside their counterparts;
//! - `calibrate`: the machine's speed on one thread and on all cores;
//! - `child`, `procs`, `sample`: the children's typed arguments, the child processes and
//!   their `/proc` samples.

pub mod calibrate;
pub mod child;
pub mod flood;
pub mod mix;
pub mod node;
pub mod procs;
pub mod sample;
pub mod scenario;
