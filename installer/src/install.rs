//! `cairn-installer install`: write a disk image (file or http(s) URL, raw or gzip/zstd)
//! onto a block device safely, then inject the site's user-data into its OEM partition.
//!
//! Order, so that a refusal or a bad input leaves the disk untouched: validate user-data →
//! check the target ([`safety`]) → open the image ([`source`]) → when the digest is known up
//! front and the image is a local file, verify the whole file first (nothing is written on a
//! mismatch) → write while hashing ([`writer`]) → compare the digest (a URL's is only known
//! at the end: on a mismatch the half-written disk's partition tables are wiped) → re-read
//! the partition table ([`rescan`]) → write the user-data into `CAIRN_OEM`.
//!
//! The digest, when known, comes from `--sha256` or a `IMAGE.sha256` file next to the image
//! (or at `URL.sha256`); it is the sha256 of the image as stored (compressed, if it is).

pub mod progress;
pub mod rescan;
pub mod safety;
pub mod source;
pub mod writer;

use std::path::PathBuf;

use progress::{human_bytes, Mode, Progress};
use safety::{Checks, Refusal, TargetKind};
use source::{Compression, SourceError, Tally};
use writer::WriteError;

/// Environment variable naming the mount point whose disk counts as "the disk the running
/// system boots from" (default `/`). A test seam: tests point it at a mounted loop device.
pub const BOOT_ROOT_ENV: &str = "CAIRN_INSTALLER_BOOT_ROOT";

/// What to install where.
#[derive(Debug, Clone)]
pub struct Options {
    /// A path or an http(s) URL.
    pub image: String,
    pub device: PathBuf,
    pub user_data: Vec<PathBuf>,
    /// Expected sha256 of the image as stored.
    pub sha256: Option<String>,
    /// Allow swap, device-mapper holders, a partition and the boot disk (never a mounted one).
    pub force: bool,
    /// Accept a regular file as the target.
    pub to_file: bool,
    pub output: Mode,
}

/// Why an install failed. Every message says whether the target was changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    UserData(#[from] crate::userdata::UserDataError),
    #[error("--sha256 {0:?} is not a sha256 (64 hex digits); nothing was written")]
    BadDigest(String),
    #[error("refusing to write: {0}")]
    Refused(#[from] Refusal),
    #[error("{0}; nothing was written")]
    Source(#[from] SourceError),
    #[error("verifying {image} before writing: {err}; nothing was written")]
    PreVerify { image: String, err: std::io::Error },
    #[error(
        "sha256 mismatch for {image}:\n  expected {expected}\n  actual   {actual}\n{consequence}"
    )]
    Mismatch {
        image: String,
        expected: String,
        actual: String,
        consequence: String,
    },
    #[error("the image ({image_size} bytes) does not fit on {device} ({device_size} bytes); nothing was written")]
    TooSmall {
        device: PathBuf,
        image_size: u64,
        device_size: u64,
    },
    #[error("{err}{consequence}")]
    Write {
        err: WriteError,
        consequence: String,
    },
    #[error("the image was written to {device}, but injecting the user-data failed: {err}")]
    Oem { device: PathBuf, err: String },
}

/// The result of an install, printed as a summary or as JSON.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub image: String,
    pub device: PathBuf,
    pub compression: Compression,
    pub source_bytes: u64,
    pub bytes_written: u64,
    pub sha256: String,
    /// "before writing", "while writing", or "no digest given".
    pub verified: &'static str,
    pub seconds: f64,
    pub bytes_per_sec: u64,
    pub direct_io: bool,
    pub user_data: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

fn consequence_after_write(target: &safety::Target, written: u64) -> String {
    match writer::wipe(target, written) {
        Ok(()) => format!(
            "{} was partly written; its partition tables were wiped so it does not boot a \
             corrupt image. Fix the image and run the install again.",
            target.path.display()
        ),
        Err(e) => format!(
            "{} was partly written, and wiping its partition tables failed too ({e}): do not \
             boot it; run the install again.",
            target.path.display()
        ),
    }
}

/// Run the install. See the module documentation for the order of the steps.
pub fn run(opts: &Options) -> Result<Report, InstallError> {
    let files = if opts.user_data.is_empty() {
        Vec::new()
    } else {
        crate::userdata::validate(&opts.user_data)?
    };
    let mut expected = match &opts.sha256 {
        Some(s) => {
            Some(source::normalize_digest(s).ok_or_else(|| InstallError::BadDigest(s.clone()))?)
        }
        None => None,
    };
    let boot_root = std::env::var_os(BOOT_ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let target = safety::check(
        &opts.device,
        &Checks {
            force: opts.force,
            allow_file: opts.to_file,
            boot_root,
        },
    )?;
    if expected.is_none() {
        expected = source::sidecar_digest(&opts.image)?;
        if let Some(d) = &expected {
            tracing::info!("using the digest published next to the image: {d}");
        }
    }
    let mut image = source::open(&opts.image)?;
    tracing::info!(
        "writing {} ({}) to {}",
        image.name,
        image
            .source_len
            .map(human_bytes)
            .unwrap_or_else(|| "size unknown".into()),
        target.path.display()
    );

    // A local file with a known digest is verified completely before anything is written.
    let mut verified = if expected.is_some() {
        "while writing"
    } else {
        "no digest given"
    };
    if let (Some(want), Some(file)) = (&expected, image.file.as_mut()) {
        let mut p = Progress::start(opts.output, "verify", image.source_len);
        let got =
            source::hash_file(file, |n| p.update(n)).map_err(|err| InstallError::PreVerify {
                image: opts.image.clone(),
                err,
            })?;
        p.finish(image.source_len.unwrap_or(0));
        if &got != want {
            return Err(InstallError::Mismatch {
                image: opts.image.clone(),
                expected: want.clone(),
                actual: got,
                consequence: format!(
                    "the image was checked before writing: nothing was written to {}",
                    target.path.display()
                ),
            });
        }
        use std::io::{Seek, SeekFrom};
        file.seek(SeekFrom::Start(0))
            .map_err(|err| InstallError::PreVerify {
                image: opts.image.clone(),
                err,
            })?;
        verified = "before writing";
    }

    let tally = Tally::default();
    let source_len = image.source_len;
    let (reader, compression) = image.into_reader(&tally)?;
    if let (TargetKind::Disk { size, .. }, Compression::None, Some(len)) =
        (&target.kind, compression, source_len)
    {
        if len > *size {
            return Err(InstallError::TooSmall {
                device: target.path.clone(),
                image_size: len,
                device_size: *size,
            });
        }
    }

    let mut p = Progress::start(opts.output, "write", source_len);
    let written = match writer::write(&target, reader, &tally, &mut p, opts.force) {
        Ok(w) => w,
        Err(err) => {
            let consequence = if err.wrote_something() {
                format!("\n{}", consequence_after_write(&target, tally.bytes()))
            } else {
                String::new()
            };
            return Err(InstallError::Write { err, consequence });
        }
    };
    let actual = tally.hex();
    if let Some(want) = &expected {
        if &actual != want {
            return Err(InstallError::Mismatch {
                image: opts.image.clone(),
                expected: want.clone(),
                actual,
                consequence: consequence_after_write(&target, written.bytes),
            });
        }
    }

    let mut warnings = Vec::new();
    if let TargetKind::Disk { .. } = target.kind {
        if let Err(e) = rescan::reread(&target.path) {
            warnings.push(format!(
                "the kernel did not re-read the partition table of {} ({e}); it will at the next boot",
                target.path.display()
            ));
        }
    }
    if !files.is_empty() {
        inject_user_data(&target.path, &files).map_err(|err| InstallError::Oem {
            device: target.path.clone(),
            err,
        })?;
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(Report {
        image: opts.image.clone(),
        device: target.path.clone(),
        compression,
        source_bytes: tally.bytes(),
        bytes_written: written.bytes,
        sha256: actual,
        verified,
        seconds: written.seconds,
        bytes_per_sec: (written.bytes as f64 / written.seconds.max(1e-6)) as u64,
        direct_io: written.direct,
        user_data: files,
        warnings,
    })
}

/// Write the validated user-data files into the disk's `CAIRN_OEM` partition.
// String error: carried by `InstallError::Oem`, which names the partition.
fn inject_user_data(disk: &std::path::Path, files: &[PathBuf]) -> Result<(), String> {
    crate::oem::write_user_data(disk, files)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
