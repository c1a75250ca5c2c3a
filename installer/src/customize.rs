//! `cairn-installer customize`: replace the user-data embedded in an existing image
//! without rebuilding it. Raw images are changed in place (only the CAIRN_OEM partition is
//! rewritten, after the new user-data has been validated and its FAT built); qcow2 images
//! are converted to raw in a work file, changed, converted back and renamed over the
//! original, so a failure leaves the original untouched. ISO images go to `iso`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::oem::{self, OemError};
use crate::userdata;

/// What kind of file an image is, from its content (not its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Raw,
    Qcow2,
    Iso,
}

/// Why customize failed. The image is unchanged in every case but a failed write in the
/// middle of the OEM partition of a raw image (then re-run customize).
#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    #[error(transparent)]
    Oem(#[from] OemError),
    #[error("{path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("qemu-img failed while {step}: {detail}")]
    QemuImg { step: String, detail: String },
    /// An install ISO: its `/cairn/user-data` and `/cairn/oem.fat` are replaced (iso.rs).
    #[error("{0}: {1}")]
    Iso(PathBuf, crate::iso::IsoError),
}

fn io(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> CustomizeError {
    let path = path.to_path_buf();
    move |source| CustomizeError::Io { path, step, source }
}

/// Detect the kind of `image` from its magic numbers.
pub fn detect(image: &Path) -> Result<Kind, CustomizeError> {
    let mut f = File::open(image).map_err(io(image, "opening the image"))?;
    let mut head = [0u8; 4];
    let n = f.read(&mut head).map_err(io(image, "reading the image"))?;
    if n == 4 && head == *b"QFI\xfb" {
        return Ok(Kind::Qcow2);
    }
    // ISO 9660: "CD001" at byte 0x8001 (primary volume descriptor).
    let mut vd = [0u8; 5];
    if f.seek(SeekFrom::Start(0x8001)).is_ok() && f.read_exact(&mut vd).is_ok() && vd == *b"CD001" {
        return Ok(Kind::Iso);
    }
    Ok(Kind::Raw)
}

/// The result of `customize`, printed by `--output json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub image: PathBuf,
    pub kind: Kind,
    pub partition: Option<oem::Partition>,
    pub user_data: Vec<String>,
}

fn qemu_img(step: &str, args: &[&std::ffi::OsStr]) -> Result<(), CustomizeError> {
    let out = Command::new("qemu-img")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CustomizeError::QemuImg {
            step: step.into(),
            detail: format!("cannot run it: {e} (package qemu-utils)"),
        })?;
    if !out.status.success() {
        return Err(CustomizeError::QemuImg {
            step: step.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Replace the user-data of `image` with `files` (validated first).
pub fn customize(image: &Path, files: &[PathBuf]) -> Result<Summary, CustomizeError> {
    // Validate before looking at the image at all, so an invalid file is reported the
    // same way whatever the image is.
    let expanded = userdata::validate(files).map_err(OemError::from)?;
    let stored = expanded
        .iter()
        .enumerate()
        .map(|(i, f)| oem::stored_name(i, f))
        .collect();
    let kind = detect(image)?;
    let partition = match kind {
        Kind::Raw => Some(oem::write_user_data(image, &expanded)?),
        Kind::Qcow2 => Some(customize_qcow2(image, &expanded)?),
        Kind::Iso => {
            crate::iso::customize(image, &expanded, image)
                .map_err(|e| CustomizeError::Iso(image.to_path_buf(), e))?;
            None
        }
    };
    Ok(Summary {
        image: image.to_path_buf(),
        kind,
        partition,
        user_data: stored,
    })
}

fn customize_qcow2(image: &Path, files: &[PathBuf]) -> Result<oem::Partition, CustomizeError> {
    let parent = match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".cairn-customize-")
        .tempdir_in(&parent)
        .map_err(io(&parent, "creating a work directory next to the image"))?;
    let raw = work.path().join("disk.raw");
    let out = work.path().join("disk.qcow2");
    let os = std::ffi::OsStr::new;
    qemu_img(
        "converting the qcow2 image to raw",
        &[
            os("convert"),
            os("-f"),
            os("qcow2"),
            os("-O"),
            os("raw"),
            image.as_os_str(),
            raw.as_os_str(),
        ],
    )?;
    let part = oem::write_user_data(&raw, files)?;
    qemu_img(
        "converting back to qcow2",
        &[
            os("convert"),
            os("-f"),
            os("raw"),
            os("-O"),
            os("qcow2"),
            raw.as_os_str(),
            out.as_os_str(),
        ],
    )?;
    File::open(&out)
        .and_then(|f| f.sync_all())
        .map_err(io(&out, "fsync"))?;
    std::fs::rename(&out, image).map_err(io(image, "replacing the image"))?;
    if let Ok(d) = File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(part)
}

/// Command-line arguments of `cairn-installer customize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image to change in place: raw or qcow2 disk image (from `image`) or ISO (from `iso`).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// New user-data files (or directories of *.yaml), in merge order. They replace every
    /// file in the image's CAIRN_OEM partition. Validated before anything is written.
    #[arg(long = "user-data", value_name = "FILE", required = true, num_args = 1..)]
    pub user_data: Vec<PathBuf>,
}
