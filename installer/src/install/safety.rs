//! Is it safe to overwrite this device? Resolves the target to a whole disk and refuses one
//! that is mounted (or any of its partitions is), used as swap, held by device-mapper/LVM/md,
//! or that the running system boots from. Facts come from `/proc/self/mountinfo`,
//! `/proc/swaps` and sysfs (`/sys/dev/block/MAJ:MIN`, its `partition`, `holders/`, `slaves/`).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A device number as the kernel prints it (`MAJ:MIN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevNum {
    pub major: u64,
    pub minor: u64,
}

impl DevNum {
    /// Split a Linux `dev_t` (glibc/musl encoding).
    pub fn from_raw(dev: u64) -> Self {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        Self { major, minor }
    }

    fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once(':')?;
        Some(Self {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }

    fn sysfs(&self) -> PathBuf {
        PathBuf::from(format!("/sys/dev/block/{}:{}", self.major, self.minor))
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// What kind of target the install writes to.
#[derive(Debug, Clone)]
pub enum TargetKind {
    /// A whole block device (disk, loop device, NVMe namespace…).
    Disk {
        dev: DevNum,
        /// Size in bytes, from sysfs.
        size: u64,
        /// Logical block size: O_DIRECT writes are multiples of it.
        logical_block: u64,
    },
    /// A regular file (only with `--to-file`).
    File,
}

/// The checked target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The path given, with symlinks (e.g. /dev/disk/by-id/…) resolved.
    pub path: PathBuf,
    pub kind: TargetKind,
}

/// Why a device is refused. Each message names the device and what holds it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}: no such device ({1})")]
    Missing(PathBuf, std::io::Error),
    #[error(
        "{0} is a regular file, not a block device; pass --to-file to write a disk image into a file"
    )]
    RegularFile(PathBuf),
    #[error("{0} is neither a block device nor a regular file")]
    NotBlock(PathBuf),
    #[error("{path} is mounted at {mount_point} ({what}); unmount it first (--force does not override this)")]
    Mounted {
        path: PathBuf,
        what: String,
        mount_point: String,
    },
    #[error("{path} is in use as swap ({what}); run swapoff first, or pass --force")]
    Swap { path: PathBuf, what: String },
    #[error("{path} is in use by {holders} (device-mapper, LVM, RAID or crypt); deactivate it first, or pass --force")]
    Held { path: PathBuf, holders: String },
    #[error("{path} is the disk the running system boots from ({root} is on {root_dev}); pass --force if you really mean it")]
    BootDisk {
        path: PathBuf,
        root: String,
        root_dev: String,
    },
    #[error("{path} is a partition of {disk}; give the whole disk, or pass --force")]
    Partition { path: PathBuf, disk: String },
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
}

/// Options of the check.
#[derive(Debug, Clone)]
pub struct Checks {
    /// `--force`: allow swap, holders, a partition and the boot disk — never a mounted device.
    pub force: bool,
    /// `--to-file`: a regular file is an acceptable target.
    pub allow_file: bool,
    /// The mount point whose backing disk is "the disk the running system boots from"
    /// (`/`; tests point it at a mounted loop device).
    pub boot_root: PathBuf,
}

/// Resolve and check `device`. Mounted partitions are refused even with `force`.
pub fn check(device: &Path, checks: &Checks) -> Result<Target, Refusal> {
    if checks.allow_file && !device.exists() {
        return Ok(Target {
            path: device.to_path_buf(),
            kind: TargetKind::File,
        });
    }
    let path = fs::canonicalize(device).map_err(|e| Refusal::Missing(device.to_path_buf(), e))?;
    let meta = fs::metadata(&path).map_err(|e| Refusal::Missing(path.clone(), e))?;
    let ft = meta.file_type();
    if ft.is_file() {
        if checks.allow_file {
            return Ok(Target {
                path,
                kind: TargetKind::File,
            });
        }
        return Err(Refusal::RegularFile(path));
    }
    if !ft.is_block_device() {
        return Err(Refusal::NotBlock(path));
    }
    let dev = DevNum::from_raw(meta.rdev());
    let sys = fs::canonicalize(dev.sysfs()).map_err(|e| Refusal::Read(dev.sysfs(), e))?;

    if sys.join("partition").exists() && !checks.force {
        let disk = sys
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| format!("/dev/{}", n.to_string_lossy()))
            .unwrap_or_else(|| "another disk".into());
        return Err(Refusal::Partition { path, disk });
    }

    // The disk and every partition on it.
    let mut devs = vec![(path.display().to_string(), dev, sys.clone())];
    devs.extend(partitions(&sys));

    let mounts = read_to_string(Path::new("/proc/self/mountinfo"))?;
    // The boot disk first: it is mounted too, and "it is the boot disk" is the better reason.
    if !checks.force {
        if let Some((root_dev, disks)) = boot_disks(&checks.boot_root, &mounts) {
            if disks.contains(&dev) {
                return Err(Refusal::BootDisk {
                    path,
                    root: checks.boot_root.display().to_string(),
                    root_dev,
                });
            }
        }
    }
    for m in parse_mountinfo(&mounts) {
        let source_dev = source_devnum(&m.source);
        if let Some((name, _, _)) = devs
            .iter()
            .find(|(_, d, _)| *d == m.dev || Some(*d) == source_dev)
        {
            return Err(Refusal::Mounted {
                path,
                what: name.clone(),
                mount_point: m.mount_point,
            });
        }
    }

    if !checks.force {
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        for line in swaps.lines().skip(1) {
            let Some(file) = line.split_whitespace().next() else {
                continue;
            };
            let file = unescape(file);
            if let Some(sd) = source_devnum(&file) {
                if let Some((name, _, _)) = devs.iter().find(|(_, d, _)| *d == sd) {
                    return Err(Refusal::Swap {
                        path,
                        what: name.clone(),
                    });
                }
            }
        }

        let mut holders = Vec::new();
        for (name, _, dir) in &devs {
            for h in list_dir(&dir.join("holders")) {
                let label =
                    fs::read_to_string(Path::new("/sys/class/block").join(&h).join("dm/name"))
                        .map(|n| format!("{h} ({})", n.trim()))
                        .unwrap_or(h);
                holders.push(format!("{label} on {name}"));
            }
        }
        if !holders.is_empty() {
            return Err(Refusal::Held {
                path,
                holders: holders.join(", "),
            });
        }
    }

    let size = read_u64(&sys.join("size")).unwrap_or(0) * 512;
    let logical_block = fs::read_to_string(sys.join("queue/logical_block_size"))
        .ok()
        .or_else(|| {
            sys.parent()
                .and_then(|p| fs::read_to_string(p.join("queue/logical_block_size")).ok())
        })
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512);
    Ok(Target {
        path,
        kind: TargetKind::Disk {
            dev,
            size,
            logical_block,
        },
    })
}

/// The whole disks under the filesystem mounted at `mount` (see [`check`]'s boot-disk rule);
/// `None` when it is not on a block device.
pub fn disks_under(mount: &Path, mountinfo: &str) -> Option<Vec<DevNum>> {
    boot_disks(mount, mountinfo).map(|(_, d)| d)
}

/// One line of mountinfo: the device number, the mount point and the source.
#[derive(Debug, PartialEq)]
struct Mount {
    dev: DevNum,
    mount_point: String,
    source: String,
}

/// Parse `/proc/self/mountinfo` (see proc(5)); lines that do not parse are skipped.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(dev), Some(mp)) = (fields.get(2).and_then(|d| DevNum::parse(d)), fields.get(4))
        else {
            continue;
        };
        let source = right.split(' ').nth(1).unwrap_or("");
        out.push(Mount {
            dev,
            mount_point: unescape(mp),
            source: unescape(source),
        });
    }
    out
}

/// Undo the kernel's octal escapes (`\040` for a space) in mountinfo and /proc/swaps.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device number of a mount/swap source when it is a block device path.
fn source_devnum(source: &str) -> Option<DevNum> {
    if !source.starts_with('/') {
        return None;
    }
    let meta = fs::metadata(source).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| DevNum::from_raw(meta.rdev()))
}

/// The partitions of the disk at sysfs directory `sys`: (name, dev, sysfs dir).
fn partitions(sys: &Path) -> Vec<(String, DevNum, PathBuf)> {
    let mut out = Vec::new();
    for name in list_dir(sys) {
        let dir = sys.join(&name);
        if !dir.join("partition").exists() {
            continue;
        }
        if let Some(dev) = fs::read_to_string(dir.join("dev"))
            .ok()
            .and_then(|d| DevNum::parse(&d))
        {
            out.push((format!("/dev/{name}"), dev, dir));
        }
    }
    out
}

/// The whole disks under the filesystem mounted at `root`: its device, or the parent disk
/// of its partition, following device-mapper/md `slaves/` down to the physical disks.
/// `None` when `root` is not on a block device (tmpfs, overlay of a live system, NFS).
fn boot_disks(root: &Path, mountinfo: &str) -> Option<(String, Vec<DevNum>)> {
    let root_s = root.to_string_lossy();
    let root_s = root_s.trim_end_matches('/');
    let root_s = if root_s.is_empty() { "/" } else { root_s };
    // The last mount at that point is the visible one.
    let m = parse_mountinfo(mountinfo)
        .into_iter()
        .rev()
        .find(|m| m.mount_point == root_s)?;
    let dev = if m.dev.major != 0 {
        m.dev
    } else {
        source_devnum(&m.source)?
    };
    let mut disks = Vec::new();
    let mut todo = vec![fs::canonicalize(dev.sysfs()).ok()?];
    while let Some(dir) = todo.pop() {
        let slaves = list_dir(&dir.join("slaves"));
        if !slaves.is_empty() {
            for s in slaves {
                if let Ok(d) = fs::canonicalize(dir.join("slaves").join(s)) {
                    todo.push(d);
                }
            }
            continue;
        }
        let disk_dir = if dir.join("partition").exists() {
            dir.parent().map(Path::to_path_buf)?
        } else {
            dir
        };
        if let Some(d) = fs::read_to_string(disk_dir.join("dev"))
            .ok()
            .and_then(|d| DevNum::parse(&d))
        {
            disks.push(d);
        }
    }
    Some((format!("{} ({dev})", m.source), disks))
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_to_string(p: &Path) -> Result<String, Refusal> {
    fs::read_to_string(p).map_err(|e| Refusal::Read(p.to_path_buf(), e))
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    25 1 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].dev,
            DevNum {
                major: 98,
                minor: 0
            }
        );
        assert_eq!(m[0].mount_point, "/mnt/my disk");
        assert_eq!(m[0].source, "/dev/root");
        assert_eq!(m[1].mount_point, "/sys");
    }

    #[test]
    fn dev_t_splits_like_the_kernel() {
        // makedev(259, 70000) with glibc's encoding.
        let (maj, min): (u64, u64) = (259, 70000);
        let raw =
            ((maj & 0xfff) << 8) | ((maj & !0xfff) << 32) | (min & 0xff) | ((min & !0xff) << 12);
        assert_eq!(
            DevNum::from_raw(raw),
            DevNum {
                major: 259,
                minor: 70000
            }
        );
        assert_eq!(DevNum::from_raw(0x0801).to_string(), "8:1");
    }

    #[test]
    fn a_non_block_target_is_refused_unless_files_are_allowed() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut checks = Checks {
            force: true,
            allow_file: false,
            boot_root: "/".into(),
        };
        assert!(matches!(
            check(f.path(), &checks),
            Err(Refusal::RegularFile(_))
        ));
        checks.allow_file = true;
        assert!(matches!(
            check(f.path(), &checks).unwrap().kind,
            TargetKind::File
        ));
        assert!(matches!(
            check(Path::new("/dev/null"), &checks),
            Err(Refusal::NotBlock(_))
        ));
        checks.allow_file = false;
        assert!(matches!(
            check(Path::new("/nonexistent/disk"), &checks),
            Err(Refusal::Missing(..))
        ));
    }
}
