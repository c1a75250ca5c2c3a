//! The OEM partition: where a Cairn disk keeps the site's user-data. It is the GPT partition
//! named `CAIRN_OEM`, formatted FAT with the volume label `CAIRN_OEM`, mounted at `/oem` on
//! the device, where the agent reads `/oem/*.yaml` in lexical order.
//!
//! Files are stored as `NN-<name>.yaml` (NN = position on the command line, from 00) so the
//! agent's lexical merge order is the order the user gave. The filesystem is built in a
//! temporary file with `mkfs.vfat` + `mcopy` (dosfstools, mtools: no mount, no root), then
//! copied into the partition in one pass and fsynced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use gpt::disk::LogicalBlockSize;

use crate::userdata::{self, UserDataError};

/// GPT partition name and FAT volume label of the OEM partition.
pub const OEM_LABEL: &str = "CAIRN_OEM";

/// Smallest FAT filesystem `build_fat` makes (FAT12 below this gets awkward for mkfs.vfat).
pub const MIN_FAT_SIZE: u64 = 1024 * 1024;

/// A partition found in a GPT: where it is on the disk, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    /// 1-based GPT partition number (the `N` of `/dev/sdaN`).
    pub number: u32,
    /// GPT partition name.
    pub name: String,
    /// Byte offset from the start of the disk.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// Everything that can go wrong reading or writing the OEM partition.
#[derive(Debug, thiserror::Error)]
pub enum OemError {
    #[error(transparent)]
    UserData(#[from] UserDataError),
    #[error("{path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: no readable GPT partition table ({detail})")]
    NoGpt { path: PathBuf, detail: String },
    #[error(
        "{path}: no partition named {OEM_LABEL} in its GPT (partitions: {found}); \
         is this a Cairn image?"
    )]
    NoOemPartition { path: PathBuf, found: String },
    #[error("{path}: partition {number} ({name}): {detail}")]
    BadPartition {
        path: PathBuf,
        number: u32,
        name: String,
        detail: String,
    },
    #[error(
        "user-data does not fit the {OEM_LABEL} partition: {needed} bytes of files, \
         {available} bytes of partition"
    )]
    TooBig { needed: u64, available: u64 },
    #[error("{tool} failed ({step}): {detail}")]
    Tool {
        tool: &'static str,
        step: String,
        detail: String,
    },
}

fn io(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> OemError {
    let path = path.to_path_buf();
    move |source| OemError::Io { path, step, source }
}

/// Every partition of the GPT on `disk` (an image file or a block device), in number order.
/// Tries 512-byte sectors, then 4096 (4Kn disks).
pub fn partitions(disk: &Path) -> Result<Vec<Partition>, OemError> {
    let mut last = String::new();
    for lb in [LogicalBlockSize::Lb512, LogicalBlockSize::Lb4096] {
        let opened = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(lb)
            .open(disk);
        let gdisk = match opened {
            Ok(d) => d,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut out = Vec::new();
        for (number, p) in gdisk.partitions() {
            if !p.is_used() {
                continue;
            }
            let bad = |detail: String| OemError::BadPartition {
                path: disk.to_path_buf(),
                number: *number,
                name: p.name.clone(),
                detail,
            };
            let offset = p.bytes_start(lb).map_err(|e| bad(e.to_string()))?;
            let length = p.bytes_len(lb).map_err(|e| bad(e.to_string()))?;
            out.push(Partition {
                number: *number,
                name: p.name.clone(),
                offset,
                length,
            });
        }
        return Ok(out);
    }
    Err(OemError::NoGpt {
        path: disk.to_path_buf(),
        detail: last,
    })
}

/// The OEM partition (GPT name `CAIRN_OEM`) of `disk`.
pub fn find_partition(disk: &Path) -> Result<Partition, OemError> {
    let all = partitions(disk)?;
    let found = all
        .iter()
        .map(|p| format!("{}:{:?}", p.number, p.name))
        .collect::<Vec<_>>()
        .join(", ");
    all.into_iter()
        .find(|p| p.name == OEM_LABEL)
        .ok_or_else(|| OemError::NoOemPartition {
            path: disk.to_path_buf(),
            found: if found.is_empty() {
                "none".into()
            } else {
                found
            },
        })
}

/// Name a user-data file gets on the OEM partition: `NN-<stem>.yaml`.
pub fn stored_name(index: usize, file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "user-data".into());
    // FAT long names forbid these; keep the rest of the user's name readable.
    let stem: String = stem
        .chars()
        .map(|c| match c {
            '"' | '*' | '/' | ':' | '<' | '>' | '?' | '\\' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    format!("{index:02}-{stem}.yaml")
}

fn run(tool: &'static str, step: String, cmd: &mut Command) -> Result<Vec<u8>, OemError> {
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|e| OemError::Tool {
            tool,
            step: step.clone(),
            detail: format!("cannot run it: {e} (install dosfstools and mtools)"),
        })?;
    if !out.status.success() {
        return Err(OemError::Tool {
            tool,
            step,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

/// Make a FAT filesystem of exactly `size` bytes labelled `CAIRN_OEM` in the file `out`
/// (created or truncated), holding `files` as `NN-<name>.yaml` in the given order. The
/// files are not validated here (callers validate first).
pub fn build_fat(files: &[PathBuf], size: u64, out: &Path) -> Result<(), OemError> {
    let needed: u64 = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .map(|m| m.len().div_ceil(4096) * 4096)
                .map_err(io(f, "reading user-data file"))
        })
        .sum::<Result<u64, _>>()?;
    // FAT, root directory and long-name entries need room too.
    let overhead = 64 * 1024 + size / 32;
    if size < MIN_FAT_SIZE || needed + overhead > size {
        return Err(OemError::TooBig {
            needed: needed + overhead,
            available: size,
        });
    }
    let f = File::create(out).map_err(io(out, "creating the FAT image"))?;
    f.set_len(size).map_err(io(out, "sizing the FAT image"))?;
    drop(f);
    run(
        "mkfs.vfat",
        format!("formatting {}", out.display()),
        Command::new("mkfs.vfat").args(["-n", OEM_LABEL]).arg(out),
    )?;
    for (i, file) in files.iter().enumerate() {
        let dest = format!("::/{}", stored_name(i, file));
        run(
            "mcopy",
            format!("copying {} to {dest}", file.display()),
            Command::new("mcopy")
                .arg("-i")
                .arg(out)
                .arg(file)
                .arg(&dest),
        )?;
    }
    Ok(())
}

/// Validate `files` with the stage engine's validator, then replace the content of the
/// OEM partition of `disk` (image file or block device) with them, and fsync. Nothing is
/// written when validation fails or the files do not fit.
pub fn write_user_data(disk: &Path, files: &[PathBuf]) -> Result<Partition, OemError> {
    let files = userdata::validate(files)?;
    let part = find_partition(disk)?;
    let tmp = tempfile::Builder::new()
        .prefix("cairn-oem-")
        .tempdir()
        .map_err(io(&std::env::temp_dir(), "creating a temporary directory"))?;
    let fat = tmp.path().join("oem.fat");
    build_fat(&files, part.length, &fat)?;
    copy_into(&fat, disk, part.offset, part.length)?;
    tracing::info!(
        disk = %disk.display(),
        partition = part.number,
        files = files.len(),
        "user-data written to the {OEM_LABEL} partition"
    );
    Ok(part)
}

/// Copy all of `src` (exactly `length` bytes) into `disk` at `offset`, then fsync.
pub(crate) fn copy_into(src: &Path, disk: &Path, offset: u64, length: u64) -> Result<(), OemError> {
    let mut input = File::open(src).map_err(io(src, "opening"))?;
    let src_len = input.metadata().map_err(io(src, "reading the size"))?.len();
    if src_len != length {
        return Err(OemError::TooBig {
            needed: src_len,
            available: length,
        });
    }
    let mut output = OpenOptions::new()
        .write(true)
        .open(disk)
        .map_err(io(disk, "opening for writing"))?;
    output
        .seek(SeekFrom::Start(offset))
        .map_err(io(disk, "seeking to the partition"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = length;
    while left > 0 {
        let n = input.read(&mut buf).map_err(io(src, "reading"))?;
        if n == 0 {
            break;
        }
        output
            .write_all(&buf[..n])
            .map_err(io(disk, "writing the partition"))?;
        left = left.saturating_sub(n as u64);
    }
    output.sync_all().map_err(io(disk, "fsync"))?;
    Ok(())
}

/// The files stored in the OEM partition of `disk`, as (name, content), in name order
/// (the order the agent merges them).
pub fn read_user_data(disk: &Path) -> Result<Vec<(String, Vec<u8>)>, OemError> {
    let part = find_partition(disk)?;
    let tmp = tempfile::Builder::new()
        .prefix("cairn-oem-")
        .tempdir()
        .map_err(io(&std::env::temp_dir(), "creating a temporary directory"))?;
    let fat = tmp.path().join("oem.fat");
    {
        let mut input = File::open(disk).map_err(io(disk, "opening"))?;
        input
            .seek(SeekFrom::Start(part.offset))
            .map_err(io(disk, "seeking to the partition"))?;
        let mut out = File::create(&fat).map_err(io(&fat, "creating"))?;
        std::io::copy(&mut input.take(part.length), &mut out)
            .map_err(io(disk, "reading the partition"))?;
    }
    let listing = run(
        "mdir",
        format!("listing the {OEM_LABEL} partition of {}", disk.display()),
        Command::new("mdir").args(["-b", "-i"]).arg(&fat).arg("::/"),
    )?;
    let mut names: Vec<String> = String::from_utf8_lossy(&listing)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("::/").map(str::to_owned))
        .filter(|n| !n.is_empty() && !n.ends_with('/'))
        .collect();
    names.sort();
    let dir = tmp.path().join("files");
    std::fs::create_dir(&dir).map_err(io(&dir, "creating"))?;
    let mut out = Vec::new();
    for name in names {
        let dest = dir.join(&name);
        run(
            "mcopy",
            format!("reading ::/{name}"),
            Command::new("mcopy")
                .arg("-i")
                .arg(&fat)
                .arg(format!("::/{name}"))
                .arg(&dest),
        )?;
        let content = std::fs::read(&dest).map_err(io(&dest, "reading"))?;
        out.push((name, content));
    }
    Ok(out)
}

/// The FAT volume label of the OEM partition of `disk` (checks it is `CAIRN_OEM`).
pub fn volume_label(disk: &Path) -> Result<String, OemError> {
    let part = find_partition(disk)?;
    let mut f = File::open(disk).map_err(io(disk, "opening"))?;
    let mut boot = [0u8; 512];
    f.seek(SeekFrom::Start(part.offset))
        .map_err(io(disk, "seeking to the partition"))?;
    f.read_exact(&mut boot)
        .map_err(io(disk, "reading the FAT boot sector"))?;
    // FAT32 keeps the label at 71, FAT12/16 at 43; FAT32 has 0 root entries (bytes 17-18).
    let fat32 = boot[17] == 0 && boot[18] == 0;
    let at = if fat32 { 71 } else { 43 };
    Ok(String::from_utf8_lossy(&boot[at..at + 11])
        .trim_end()
        .to_string())
}
