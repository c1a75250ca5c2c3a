//! `cairn-installer image`: build a bootable disk image ([`crate::image`]).

use super::{report_json, with_kind, Error, Outcome, Output};

// No group of its own: the flattened library `Args` has one by that name already.
#[derive(clap::Args)]
#[group(skip)]
pub struct Args {
    #[command(flatten)]
    pub build: crate::image::Args,
    /// Result as human text, or as one JSON object on stdout.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

pub fn run(args: Args) -> Result<Outcome, Error> {
    let summary = crate::image::build(&args.build.options())
        .map_err(Error::from)
        .inspect_err(|e| report_json(args.output, e))?;
    match args.output {
        Output::Json => println!("{}", with_kind(&summary, "image")),
        Output::Human => print!("{}", crate::image::describe(&summary)),
    }
    Ok(Outcome::Done)
}
