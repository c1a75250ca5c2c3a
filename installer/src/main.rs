//! `cairn-installer`: command-line entry point. Each subcommand lives in its own module
//! of the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-installer",
    version,
    about = "Build Cairn disk images and install media; write an image to a disk safely"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
