//! The `offload` executable: parse flags, set up logging, run the subcommand, and map its
//! outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = offload::cli::Cli::parse();
    offload::cli::init_tracing(cli.otlp());
    match offload::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("offload: {e:#}");
            ExitCode::FAILURE
        }
    }
}
