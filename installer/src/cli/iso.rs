//! `cairn-installer iso`: build a hybrid install ISO ([`crate::iso`]).

use std::path::PathBuf;

use super::{report_json, Error, Outcome, Output};
use crate::install::progress::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    pub arch: crate::image::Arch,
    /// The OS root tarball the image was built from (kernel, modules, systemd-boot).
    #[arg(long, value_name = "TAR")]
    pub rootfs: PathBuf,
    /// The disk image to install (raw, from `cairn-installer image`).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// User-data files (validated; `install:` says where to install and what to do after).
    #[arg(long = "user-data", value_name = "FILE", required = true)]
    pub user_data: Vec<PathBuf>,
    /// The ISO to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Static cairn-installer for the live environment (default: this program when it
    /// is a static build for ARCH, else target/dist/ARCH/cairn-installer of a checkout).
    #[arg(long, value_name = "BIN")]
    pub installer: Option<PathBuf>,
    /// Static busybox for the live environment (default: the root's own, from
    /// busybox-static, else /bin/busybox when it is a static build for ARCH).
    #[arg(long, value_name = "BIN")]
    pub busybox: Option<PathBuf>,
    /// zstd level of the embedded image (1 fastest … 19 smallest).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=19))]
    pub zstd_level: u32,
    /// Result as human text, or as one JSON object on stdout.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

pub fn run(args: Args) -> Result<Outcome, Error> {
    let output = args.output;
    let opts = crate::iso::Options {
        arch: args.arch,
        rootfs: args.rootfs,
        image: args.image,
        user_data: args.user_data,
        out: args.out,
        installer: args.installer,
        busybox: args.busybox,
        zstd_level: args.zstd_level,
    };
    let s = crate::iso::build(&opts)
        .map_err(Error::from)
        .inspect_err(|e| report_json(output, e))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string(&s).unwrap_or_default()),
        Output::Human => println!(
            "wrote {} ({}; image {} → {} zstd; kernel {}; {} user-data file(s)) in {:.0} s",
            s.out.display(),
            human_bytes(s.bytes),
            human_bytes(s.image_bytes),
            human_bytes(s.compressed_image_bytes),
            s.kernel,
            s.user_data.len(),
            s.seconds
        ),
    }
    Ok(Outcome::Done)
}
