//! `cairn-hub`: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cairn_hub::cli::Cli::parse();
    let default_level = match cli.command {
        cairn_hub::cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_HUB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: journald and log files get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-hub: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cairn_hub::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-hub: {e:#}");
            cairn_hub::cli::exit_code(&e)
        }
    }
}
