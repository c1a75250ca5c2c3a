//! `cairn-installer`: parse the command line, set up logging, run the subcommand
//! ([`cairn_installer::cli`]), exit with its status ([`cairn_installer::cli::exit_code`]).

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cairn_installer::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = cairn_installer::cli::run(cli);
    if let Err(e) = &result {
        eprintln!("error: {e}");
    }
    ExitCode::from(cairn_installer::cli::exit_code(&result))
}
