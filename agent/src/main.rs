//! `cairn-agent`: parse the command line, set up logging, run the subcommand
//! ([`cairn_agent::cli`]), exit with its status ([`cairn_agent::cli::exit_code`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cairn_agent::cli::Cli::parse();
    init_logging(cli.verbosity());
    let result = cairn_agent::cli::run(cli);
    if let Err(e) = &result {
        eprintln!("error: {e}");
    }
    ExitCode::from(cairn_agent::cli::exit_code(&result))
}

/// Logging on stderr: warnings by default, more with -v (see `Cli::verbosity`); CAIRN_LOG
/// overrides.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
