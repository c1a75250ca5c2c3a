//! `cairn-agent plan`: every file a cluster profile's apply fetches, from where, and how
//! each is verified.

use std::path::PathBuf;

use cairn_proto::profile::Arch;
use cairn_userdata::load;

use super::{ArchArg, Error, Outcome, Output};
use crate::packs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The architecture to plan for (repeatable). [default: amd64 and arm64]
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    pub arches: Vec<ArchArg>,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[arg(value_name = "PROFILE")]
    pub file: PathBuf,
}

/// Print the plan, or every problem (located) when the profile cannot be applied on one of
/// the architectures.
pub fn run(args: Args) -> Result<Outcome, Error> {
    let arches: Vec<Arch> = match args.arches.as_slice() {
        [] => vec![Arch::Amd64, Arch::Arm64],
        a => a.iter().map(|a| a.arch()).collect(),
    };
    let checked = match load::read_profile(&args.file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Err(Error::InvalidProfile(args.file));
        }
    };
    let settings = packs::Settings::load_default()?;
    match packs::plan_entries(&checked, &arches, &settings) {
        Ok(entries) => {
            match args.output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).map_err(Error::Json)?
                ),
                Output::Human => print!("{}", packs::render_plan(&entries)),
            }
            Ok(Outcome::Done)
        }
        Err(invalid) => {
            eprintln!("{invalid}");
            Err(Error::InvalidProfile(args.file))
        }
    }
}
