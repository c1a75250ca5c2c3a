//! `cairn-installer customize`: replace the user-data of an image ([`crate::customize`]).

use super::{report_json, with_kind, Error, Outcome, Output};

// No group of its own: the flattened library `Args` has one by that name already.
#[derive(clap::Args)]
#[group(skip)]
pub struct Args {
    #[command(flatten)]
    pub files: crate::customize::Args,
    /// Result as human text, or as one JSON object on stdout.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

pub fn run(args: Args) -> Result<Outcome, Error> {
    let s = crate::customize::customize(&args.files.image, &args.files.user_data)
        .map_err(Error::from)
        .inspect_err(|e| report_json(args.output, e))?;
    match args.output {
        Output::Json => println!("{}", with_kind(&s, "customized")),
        Output::Human => println!(
            "{}: user-data replaced ({:?} image): {}",
            s.image.display(),
            s.kind,
            s.user_data.join(", ")
        ),
    }
    Ok(Outcome::Done)
}
