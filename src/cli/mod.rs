//! Command-line flags, validated into configs, and dispatch to the subcommands. Every
//! setting is a flag with its default shown in `--help`, and an `OFFLOAD_*` variable.

mod bench;
mod compute;
mod load;
mod serve;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use bench::BenchArgs;
pub use compute::ComputeArgs;
pub use load::{DEFAULT_DURATION, LoadArgs, parse_duration};
pub use serve::{QueueArgs, ServeArgs};
pub use worker::WorkerArgs;

/// offload: run CPU-heavy work from an async service every known way, and measure each.
#[derive(Debug, Parser)]
#[command(name = "offload", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: `/heavy` with one strategy, `/health`, `/metrics`.
    Serve(ServeArgs),
    /// Run the compute service that `serve --strategy remote` forwards to.
    Compute(ComputeArgs),
    /// Run queued jobs (the `queue` strategy's other half); start as many as needed.
    Worker(WorkerArgs),
    /// Load an HTTP endpoint (closed or open loop) and report latency, throughput and every
    /// failure; `--json` for a machine-readable report.
    Load(LoadArgs),
    /// Run every strategy side by side on this machine and write a report.
    Bench(BenchArgs),
}

/// Runs the parsed command.
///
/// # Errors
/// Whatever stopped the command, with context.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Compute(args) => compute::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Load(args) => load::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

impl Cli {
    /// Where the command exports spans (`--otlp-endpoint`), and the service it names itself
    /// (`OTEL_SERVICE_NAME`, else `offload-serve` or `offload-worker`).
    pub fn otlp(&self) -> Option<(crate::otel::Endpoint, String)> {
        let (endpoint, service) = match &self.command {
            Command::Serve(a) => (a.otlp_endpoint.clone()?, "offload-serve"),
            Command::Worker(a) => (a.otlp_endpoint.clone()?, "offload-worker"),
            _ => return None,
        };
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| service.to_owned());
        Some((endpoint, service))
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); with `otlp`, also exports
/// offload's spans there ([`crate::otel`]), which the log's filter never takes.
pub fn init_tracing(otlp: Option<(crate::otel::Endpoint, String)>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let spans =
        otlp.and_then(
            |(endpoint, service)| match crate::otel::Layer::start(endpoint, service) {
                Ok(layer) => Some(layer.with_filter(crate::otel::Exported)),
                Err(e) => {
                    eprintln!(
                        "offload: cannot start the span exporter ({e}); no spans are exported"
                    );
                    None
                }
            },
        );
    // Without spans to export, the log's layer alone: a layer that is not there costs no
    // check at any call site.
    let _ = match spans {
        Some(spans) => tracing_subscriber::registry()
            .with(log)
            .with(spans)
            .try_init(),
        None => tracing_subscriber::registry().with(log).try_init(),
    };
    crate::logs::count_queue_events();
}

pub use crate::work::cores;

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("inf").is_err());
    }
}
