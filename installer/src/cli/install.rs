//! `cairn-installer install`: write an image to a disk, verified ([`crate::install`]).

use std::path::PathBuf;

use super::{report_json, with_kind, Error, Outcome, Output};
use crate::install::progress::{human_bytes, Mode};

#[derive(clap::Args)]
pub struct Args {
    /// Image to write: a path or an http(s) URL.
    #[arg(long, value_name = "FILE|URL")]
    pub image: String,
    /// Target disk: /dev/sdX, /dev/nvme0n1, /dev/disk/by-id/… (a whole disk, not a partition).
    #[arg(long, value_name = "DEV")]
    pub device: PathBuf,
    /// User-data files (or directories of *.yaml) for the OEM partition, in merge order.
    /// Validated before anything is written.
    #[arg(long = "user-data", value_name = "FILE")]
    pub user_data: Vec<PathBuf>,
    /// Expected sha256 of the image as stored (compressed, if it is).
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Also write to swap, device-mapper/LVM members, a partition or the boot disk.
    /// A mounted device is refused even so.
    #[arg(long)]
    pub force: bool,
    /// The target is a regular file (created if missing) instead of a block device.
    #[arg(long)]
    pub to_file: bool,
    /// Progress and result as human text, or as JSON lines on stdout.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

pub fn run(args: Args) -> Result<Outcome, Error> {
    let output = args.output;
    let opts = crate::install::Options {
        image: args.image,
        device: args.device,
        user_data: args.user_data,
        sha256: args.sha256,
        force: args.force,
        to_file: args.to_file,
        output: match output {
            Output::Human => Mode::Human,
            Output::Json => Mode::Json,
        },
    };
    let r = crate::install::run(&opts)
        .map_err(Error::from)
        .inspect_err(|e| report_json(output, e))?;
    match output {
        Output::Json => println!("{}", with_kind(&r, "installed")),
        Output::Human => println!(
            "wrote {} to {} in {:.1} s ({}/s); sha256 {} ({}); user-data: {}",
            human_bytes(r.bytes_written),
            r.device.display(),
            r.seconds,
            human_bytes(r.bytes_per_sec),
            r.sha256,
            r.verified,
            if r.user_data.is_empty() {
                "none".to_string()
            } else {
                format!("{} file(s) in CAIRN_OEM", r.user_data.len())
            }
        ),
    }
    Ok(Outcome::Done)
}
