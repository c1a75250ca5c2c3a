//! The `cairn-installer` command line as a library: the argument definitions ([`Cli`],
//! [`Command`]), one module per subcommand, each with `run(args) -> Result<Outcome, Error>`,
//! and the one mapping from a result to the process's exit status ([`exit_code`]). The
//! binary only parses, sets up logging, calls [`run`] and exits with [`exit_code`].
//!
//! Subcommands print their result on stdout (with `--output json`, failures too, as one
//! `{"kind": "error", "message": …}` object); the binary prints an [`Error`] once on
//! stderr as `error: MESSAGE`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub mod customize;
pub mod image;
pub mod install;
pub mod iso;
pub mod live;

/// The exit statuses, as `--help` shows them. Keep in step with [`exit_code`].
const EXIT_STATUS: &str = "\
Exit status:
  0  done
  1  refused or failed (the message says whether anything was written)
  2  usage error: bad arguments";

#[derive(Parser)]
#[command(
    name = "cairn-installer",
    version,
    about = "Build Cairn disk images and install media; write an image to a disk safely",
    after_long_help = EXIT_STATUS
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build a bootable GPT disk image (raw or qcow2) from a root file system and user-data.
    ///
    /// The disk has an EFI system partition with systemd-boot and the kernel, the CAIRN_OEM
    /// partition holding the user-data (read by the agent at boot from /oem), a persistent
    /// partition (/usr/local) and the root file system, last, which grows to fill the disk
    /// on first boot. Needs no root privileges and no loop devices (mkfs.vfat, mtools,
    /// mkfs.ext4 -d, sfdisk; fakeroot when not root; qemu-img for qcow2).
    ///
    /// Example:
    ///   sudo packaging/os-image/build-root.sh --arch x86_64 --out root.tar
    ///   cairn-installer image --arch x86_64 --rootfs root.tar --user-data site.yaml \
    ///     --out edge.img
    #[command(verbatim_doc_comment)]
    Image(image::Args),
    /// Replace the user-data embedded in an existing image, without rebuilding it.
    ///
    /// Raw images are changed in place (only the CAIRN_OEM partition is rewritten, after the
    /// new files validated); qcow2 images are rewritten through a work copy and renamed
    /// over the original.
    ///
    /// Example: cairn-installer customize edge.img --user-data site-042.yaml
    Customize(customize::Args),
    /// Write a disk image to a disk, verified, then put the site's user-data on it.
    ///
    /// The image is a local file or an http(s) URL, raw or compressed with gzip or zstd
    /// (decompressed while it is written). Its sha256 is computed while streaming; when a
    /// digest is known up front (--sha256, or IMAGE.sha256 next to the image) a local file is
    /// verified completely before anything is written, and a URL is checked at the end (on a
    /// mismatch the disk's partition tables are wiped so it never boots a corrupt image).
    ///
    /// Refuses a disk that is mounted (or any partition of it), used as swap, held by
    /// device-mapper/LVM/RAID, or that the running system boots from; --force overrides all
    /// but "mounted". After writing, the partition table is re-read and the user-data files
    /// are written into the CAIRN_OEM partition, where the agent reads them at boot.
    ///
    /// Example: cairn-installer install --image cairn-x86_64.img.zst --device /dev/sdb \
    ///            --user-data site.yaml --sha256 3f1c…
    #[command(verbatim_doc_comment)]
    Install(install::Args),
    /// Build a hybrid install ISO (UEFI; CD or USB stick) that installs a disk image.
    ///
    /// The ISO boots a small live environment (the root's kernel, busybox, this installer)
    /// that validates the embedded user-data, writes the embedded image (zstd, sha256
    /// checked) to the disk named by the user-data's `install.device` — or the only suitable
    /// disk — puts the user-data into its CAIRN_OEM partition, then reboots or powers off as
    /// `install.reboot`/`install.poweroff` ask. Needs xorriso, zstd, mkfs.vfat and mtools.
    ///
    /// Example:
    ///   cairn-installer image --arch x86_64 --rootfs root.tar --user-data site.yaml --out edge.img
    ///   cairn-installer iso --arch x86_64 --rootfs root.tar --image edge.img \
    ///     --user-data site.yaml --out edge-install.iso
    #[command(verbatim_doc_comment)]
    Iso(iso::Args),
    /// The install medium's live environment (run by the ISO's /init, not by hand).
    #[command(hide = true)]
    Live(live::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (cairn-installer.1 and one per subcommand) into DIR.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `--output` values: text for people, or JSON for programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// How a subcommand that ran to its end turned out (its result is printed already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Built, written, customized or installed.
    Done,
}

/// Why a subcommand did not do what was asked; printed once on stderr as `error: MESSAGE`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Customize(#[from] crate::customize::CustomizeError),
    #[error(transparent)]
    Install(#[from] crate::install::InstallError),
    #[error(transparent)]
    Iso(#[from] crate::iso::IsoError),
    #[error(transparent)]
    Live(#[from] crate::iso::live::LiveError),
    /// The live environment installed, then could not reboot or power off.
    #[error("{0}")]
    After(std::io::Error),
    #[error("writing man pages to {}: {source}", dir.display())]
    Manpages {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// With `--output json`, a failure is also one JSON object on stdout.
fn report_json(output: Output, e: &Error) {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({"kind": "error", "message": e.to_string()})
        );
    }
}

/// A result as JSON with `"kind": KIND` added (what `--output json` prints).
fn with_kind(value: &impl serde::Serialize, kind: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), kind.into());
    }
    v
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome, Error> {
    match cli.command {
        Command::Image(args) => image::run(args),
        Command::Customize(args) => customize::run(args),
        Command::Install(args) => install::run(args),
        Command::Iso(args) => iso::run(args),
        Command::Live(args) => live::run(args),
        Command::Completions { shell } => {
            cairn_cli::docs::print_completions(<Cli as clap::CommandFactory>::command(), shell);
            Ok(Outcome::Done)
        }
        Command::Manpages { dir } => {
            cairn_cli::docs::write_manpages(<Cli as clap::CommandFactory>::command(), &dir)
                .map_err(|source| Error::Manpages { dir, source })?;
            Ok(Outcome::Done)
        }
    }
}

/// The exit status of a result: the one mapping of `cairn-installer` (documented in
/// `--help`, see `EXIT_STATUS`). Argument errors found by clap exit 2 before [`run`].
pub fn exit_code(result: &Result<Outcome, Error>) -> u8 {
    match result {
        Ok(Outcome::Done) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn failures_exit_1() {
        assert_eq!(exit_code(&Ok(Outcome::Done)), 0);
        let e = Error::After(std::io::Error::other("no reboot"));
        assert_eq!(exit_code(&Err(e)), 1);
    }
}
