//! `cairn-installer`: command-line entry point. Each subcommand lives in its own module
//! of the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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
enum Command {
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
    Image {
        #[command(flatten)]
        args: cairn_installer::image::Args,
        /// Result as human text, or as one JSON object on stdout.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Replace the user-data embedded in an existing image, without rebuilding it.
    ///
    /// Raw images are changed in place (only the CAIRN_OEM partition is rewritten, after the
    /// new files validated); qcow2 images are rewritten through a work copy and renamed
    /// over the original.
    ///
    /// Example: cairn-installer customize edge.img --user-data site-042.yaml
    Customize {
        #[command(flatten)]
        args: cairn_installer::customize::Args,
        /// Result as human text, or as one JSON object on stdout.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
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
    Install {
        /// Image to write: a path or an http(s) URL.
        #[arg(long, value_name = "FILE|URL")]
        image: String,
        /// Target disk: /dev/sdX, /dev/nvme0n1, /dev/disk/by-id/… (a whole disk, not a partition).
        #[arg(long, value_name = "DEV")]
        device: PathBuf,
        /// User-data files (or directories of *.yaml) for the OEM partition, in merge order.
        /// Validated before anything is written.
        #[arg(long = "user-data", value_name = "FILE")]
        user_data: Vec<PathBuf>,
        /// Expected sha256 of the image as stored (compressed, if it is).
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Also write to swap, device-mapper/LVM members, a partition or the boot disk.
        /// A mounted device is refused even so.
        #[arg(long)]
        force: bool,
        /// The target is a regular file (created if missing) instead of a block device.
        #[arg(long)]
        to_file: bool,
        /// Progress and result as human text, or as JSON lines on stdout.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
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
    Iso {
        #[arg(long, value_enum)]
        arch: cairn_installer::image::Arch,
        /// The OS root tarball the image was built from (kernel, modules, systemd-boot).
        #[arg(long, value_name = "TAR")]
        rootfs: PathBuf,
        /// The disk image to install (raw, from `cairn-installer image`).
        #[arg(long, value_name = "FILE")]
        image: PathBuf,
        /// User-data files (validated; `install:` says where to install and what to do after).
        #[arg(long = "user-data", value_name = "FILE", required = true)]
        user_data: Vec<PathBuf>,
        /// The ISO to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Static cairn-installer for the live environment (default: this program when it
        /// is a static build for ARCH, else target/dist/ARCH/cairn-installer of a checkout).
        #[arg(long, value_name = "BIN")]
        installer: Option<PathBuf>,
        /// Static busybox for the live environment (default: the root's own, from
        /// busybox-static, else /bin/busybox when it is a static build for ARCH).
        #[arg(long, value_name = "BIN")]
        busybox: Option<PathBuf>,
        /// zstd level of the embedded image (1 fastest … 19 smallest).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=19))]
        zstd_level: u32,
        /// Result as human text, or as one JSON object on stdout.
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// The install medium's live environment (run by the ISO's /init, not by hand).
    #[command(hide = true)]
    Live {
        /// Where the medium is mounted.
        #[arg(long, value_name = "DIR")]
        medium: PathBuf,
    },
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Iso {
            arch,
            rootfs,
            image,
            user_data,
            out,
            installer,
            busybox,
            zstd_level,
            output,
        } => iso(
            &cairn_installer::iso::Options {
                arch,
                rootfs,
                image,
                user_data,
                out,
                installer,
                busybox,
                zstd_level,
            },
            output,
        ),
        Command::Live { medium } => live(&medium),
        Command::Completions { shell } => {
            cairn_cli::docs::print_completions(<Cli as clap::CommandFactory>::command(), shell);
            ExitCode::SUCCESS
        }
        Command::Manpages { dir } => {
            let written =
                cairn_cli::docs::write_manpages(<Cli as clap::CommandFactory>::command(), &dir);
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing man pages to {}: {e}", dir.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::Image { args, output } => image(&args, output),
        Command::Customize { args, output } => customize(&args, output),
        Command::Install {
            image,
            device,
            user_data,
            sha256,
            force,
            to_file,
            output,
        } => install(
            cairn_installer::install::Options {
                image,
                device,
                user_data,
                sha256,
                force,
                to_file,
                output: match output {
                    Output::Human => cairn_installer::install::progress::Mode::Human,
                    Output::Json => cairn_installer::install::progress::Mode::Json,
                },
            },
            output,
        ),
    }
}

fn install(opts: cairn_installer::install::Options, output: Output) -> ExitCode {
    use cairn_installer::install::progress::human_bytes;
    match cairn_installer::install::run(&opts) {
        Ok(r) => {
            if output == Output::Json {
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("kind".into(), "installed".into());
                }
                println!("{v}");
            } else {
                println!(
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
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"kind": "error", "message": e.to_string()})
                );
            }
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn print_error(output: Output, e: &dyn std::fmt::Display) -> ExitCode {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({"kind": "error", "message": e.to_string()})
        );
    }
    eprintln!("error: {e}");
    ExitCode::from(1)
}

fn image(args: &cairn_installer::image::Args, output: Output) -> ExitCode {
    match cairn_installer::image::build(&args.options()) {
        Ok(s) => {
            if output == Output::Json {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("kind".into(), "image".into());
                }
                println!("{v}");
            } else {
                print!("{}", cairn_installer::image::describe(&s));
            }
            ExitCode::SUCCESS
        }
        Err(e) => print_error(output, &e),
    }
}

fn customize(args: &cairn_installer::customize::Args, output: Output) -> ExitCode {
    match cairn_installer::customize::customize(&args.image, &args.user_data) {
        Ok(s) => {
            if output == Output::Json {
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("kind".into(), "customized".into());
                }
                println!("{v}");
            } else {
                println!(
                    "{}: user-data replaced ({:?} image): {}",
                    s.image.display(),
                    s.kind,
                    s.user_data.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => print_error(output, &e),
    }
}

fn iso(opts: &cairn_installer::iso::Options, output: Output) -> ExitCode {
    use cairn_installer::install::progress::human_bytes;
    match cairn_installer::iso::build(opts) {
        Ok(s) => {
            if output == Output::Json {
                println!("{}", serde_json::to_string(&s).unwrap_or_default());
            } else {
                println!(
                    "wrote {} ({}; image {} → {} zstd; kernel {}; {} user-data file(s)) in {:.0} s",
                    s.out.display(),
                    human_bytes(s.bytes),
                    human_bytes(s.image_bytes),
                    human_bytes(s.compressed_image_bytes),
                    s.kernel,
                    s.user_data.len(),
                    s.seconds
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"kind": "error", "message": e.to_string()})
                );
            }
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn live(medium: &std::path::Path) -> ExitCode {
    use cairn_installer::iso::live;
    match live::run(medium) {
        Ok(after) => {
            eprintln!("cairn-install: done ({after:?})");
            if let Err(e) = live::act(after) {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
