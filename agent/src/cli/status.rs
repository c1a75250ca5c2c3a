//! `cairn-agent status`: what the daemon applied and how the hub connection is.

use std::path::PathBuf;

use super::{Error, Outcome, Output};
use crate::daemon;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = daemon::DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

/// Print the report read from the state directory; [`Outcome::Unhealthy`] when it shows a
/// failed apply or a hub refusing this host.
pub fn run(args: Args) -> Result<Outcome, Error> {
    let state = daemon::store::StateDir::new(args.state_dir);
    let report = daemon::status::report(&state);
    match args.output {
        Output::Json => println!("{report}"),
        Output::Human => print!("{}", daemon::status::render(&report)),
    }
    Ok(if daemon::status::exit_code(&report) == 0 {
        Outcome::Done
    } else {
        Outcome::Unhealthy
    })
}
