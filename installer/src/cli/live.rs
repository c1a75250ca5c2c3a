//! `cairn-installer live`: the install medium's live environment ([`crate::iso::live`]).

use std::path::PathBuf;

use super::{Error, Outcome};
use crate::iso::live;

#[derive(clap::Args)]
pub struct Args {
    /// Where the medium is mounted.
    #[arg(long, value_name = "DIR")]
    pub medium: PathBuf,
}

/// Install from the medium, then reboot, power off or stay as its user-data asks.
pub fn run(args: Args) -> Result<Outcome, Error> {
    let after = live::run(&args.medium)?;
    eprintln!("cairn-install: done ({after:?})");
    live::act(after).map_err(Error::After)?;
    Ok(Outcome::Done)
}
