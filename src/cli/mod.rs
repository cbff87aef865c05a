//! Command-line flags, validated into configs, and dispatch to the subcommands.

use clap::{Parser, Subcommand};

/// offload: run CPU-heavy work from an async service every known way, and measure each.
#[derive(Debug, Parser)]
#[command(name = "offload", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load an HTTP endpoint (closed or open loop) and report latency, throughput and every
    /// failure; `--json` for a machine-readable report.
    Load(crate::load::LoadArgs),
}
