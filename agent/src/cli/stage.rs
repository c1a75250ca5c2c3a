//! `cairn-agent stage NAME`: one stage of the device's own user-data (the boot units).

use std::path::PathBuf;

use cairn_userdata::load::DEVICE_SOURCES;

use super::{Error, Outcome, Output};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Stage name, e.g. initramfs, boot, network.
    pub name: String,
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

/// Apply stage `name` of the user-data in the root's device sources; a device without
/// user-data has nothing to do.
pub fn run(args: Args) -> Result<Outcome, Error> {
    let sources: Vec<PathBuf> = DEVICE_SOURCES
        .iter()
        .map(|s| args.root.join(s.trim_start_matches('/')))
        .filter(|p| p.is_dir())
        .collect();
    if sources.is_empty() {
        eprintln!("no user-data found under {}", DEVICE_SOURCES.join(", "));
        return Ok(Outcome::Done);
    }
    super::apply::user_data(
        &args.root,
        &sources,
        vec![args.name],
        false,
        false,
        args.output,
    )
}
