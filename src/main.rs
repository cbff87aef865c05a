use clap::Parser;

fn main() -> std::process::ExitCode {
    let _cli = offload::cli::Cli::parse();
    std::process::ExitCode::SUCCESS
}
