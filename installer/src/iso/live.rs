//! The install medium's live environment (`cairn-installer live --medium DIR`, run by the
//! ISO's /init): validate the embedded user-data, choose the target disk (`install.device`,
//! else the only suitable disk), write the embedded image with [`crate::install::run`]
//! (digest from `image.zst.sha256`), write the prepared CAIRN_OEM filesystem into the new
//! disk's OEM partition, then reboot or power off as `install:` asks.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::install::progress::Mode;

/// Disks smaller than this are not install targets when chosen automatically.
const MIN_AUTO_DISK: u64 = 1 << 30;

/// What to do after a successful install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Reboot,
    PowerOff,
    Stay,
}

/// Errors of the live install. Each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    UserData(#[from] crate::userdata::UserDataError),
    #[error("reading the user-data on the medium: {0}")]
    Load(#[from] cairn_userdata::load::LoadError),
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    Install(#[from] crate::install::InstallError),
    #[error("writing the user-data into {device}: {detail}")]
    Oem { device: PathBuf, detail: String },
}

/// A block device seen in /sys/block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
}

/// The disks under `sys_block` (normally /sys/block), except pseudo-devices.
pub fn disks(sys_block: &Path) -> Vec<Disk> {
    let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let mut out: Vec<Disk> = fs::read_dir(sys_block)
        .map(|rd| rd.filter_map(|e| e.ok()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let pseudo = ["loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd", "zd"];
            if pseudo.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let dir = e.path();
            Some(Disk {
                size: read(dir.join("size")).parse::<u64>().unwrap_or(0) * 512,
                removable: read(dir.join("removable")) == "1",
                read_only: read(dir.join("ro")) == "1",
                name,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Pick the only suitable disk: writable, not empty, not the medium, and not a removable
/// disk under 1 GiB. None or several is an error listing what was seen.
// String error: carried by `LiveError::Target`; it lists the disks seen for a person.
pub fn choose(all: &[Disk], medium_disk: Option<&str>) -> Result<PathBuf, String> {
    let fits = |d: &&Disk| {
        !d.read_only
            && d.size > 0
            && Some(d.name.as_str()) != medium_disk
            && !(d.removable && d.size < MIN_AUTO_DISK)
    };
    let candidates: Vec<&Disk> = all.iter().filter(fits).collect();
    let list = || {
        all.iter()
            .map(|d| {
                format!(
                    "/dev/{} ({} MiB{}{}{})",
                    d.name,
                    d.size >> 20,
                    if d.removable { ", removable" } else { "" },
                    if d.read_only { ", read-only" } else { "" },
                    if Some(d.name.as_str()) == medium_disk {
                        ", the install medium"
                    } else {
                        ""
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match candidates.as_slice() {
        [one] => Ok(PathBuf::from(format!("/dev/{}", one.name))),
        [] => Err(format!(
            "no disk to install to (seen: {}); set install.device in the user-data",
            if all.is_empty() { "none".into() } else { list() }
        )),
        _ => Err(format!(
            "several disks could be the target: {}; set install.device in the user-data to choose one",
            list()
        )),
    }
}

/// The /sys/block name of the disk holding the filesystem mounted at `mount`.
fn medium_disk(mount: &Path) -> Option<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let devs = crate::install::safety::disks_under(mount, &mountinfo)?;
    let dev = devs.first()?;
    let link = fs::canonicalize(format!("/sys/dev/block/{dev}")).ok()?;
    link.file_name().map(|n| n.to_string_lossy().to_string())
}

/// Run the live install from the medium mounted at `medium`; returns what to do next.
pub fn run(medium: &Path) -> Result<After, LiveError> {
    let files = crate::userdata::validate(&[medium.join("cairn/user-data")])?;
    let loaded = cairn_userdata::load::load(&files, false)?;
    let settings = loaded.config.install.unwrap_or_default();
    let after = match (settings.reboot, settings.poweroff) {
        (true, _) => After::Reboot,
        (_, true) => After::PowerOff,
        _ => After::Stay,
    };

    let device = match &settings.device {
        Some(d) => {
            let d = PathBuf::from(d);
            wait_for(|| d.exists(), Duration::from_secs(60));
            if !d.exists() {
                return Err(LiveError::Target(format!(
                    "install.device {} does not exist (seen: {})",
                    d.display(),
                    disks(Path::new("/sys/block"))
                        .iter()
                        .map(|x| format!("/dev/{}", x.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            d
        }
        None => {
            let med = medium_disk(medium);
            // Drivers may still be probing: wait for a candidate, then let the rest settle.
            wait_for(
                || choose(&disks(Path::new("/sys/block")), med.as_deref()).is_ok(),
                Duration::from_secs(30),
            );
            std::thread::sleep(Duration::from_secs(2));
            choose(&disks(Path::new("/sys/block")), med.as_deref()).map_err(LiveError::Target)?
        }
    };
    tracing::info!("installing onto {}", device.display());
    let report = crate::install::run(&crate::install::Options {
        image: medium.join("cairn/image.zst").to_string_lossy().to_string(),
        device: device.clone(),
        user_data: Vec::new(),
        sha256: None, // image.zst.sha256 next to the image is found and checked
        force: false,
        to_file: false,
        output: Mode::Human,
    })?;
    tracing::info!(
        "wrote {} bytes in {:.1} s, sha256 {} ({})",
        report.bytes_written,
        report.seconds,
        report.sha256,
        report.verified
    );
    write_oem(&device, &medium.join("cairn/oem.fat"))?;
    tracing::info!("user-data written into CAIRN_OEM on {}", device.display());
    Ok(after)
}

/// Write the prepared OEM filesystem into the CAIRN_OEM partition of `device`.
fn write_oem(device: &Path, fat: &Path) -> Result<(), LiveError> {
    let err = |detail: String| LiveError::Oem {
        device: device.to_path_buf(),
        detail,
    };
    let part = crate::oem::find_partition(device).map_err(|e| err(e.to_string()))?;
    let data = fs::read(fat).map_err(|e| err(format!("reading {}: {e}", fat.display())))?;
    if data.len() as u64 > part.length {
        return Err(err(format!(
            "{} ({} bytes) is larger than the partition ({} bytes)",
            fat.display(),
            data.len(),
            part.length
        )));
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .open(device)
        .map_err(|e| err(e.to_string()))?;
    f.write_all_at(&data, part.offset)
        .map_err(|e| err(e.to_string()))?;
    f.sync_all().map_err(|e| err(e.to_string()))
}

fn wait_for(mut ok: impl FnMut() -> bool, limit: Duration) {
    let start = Instant::now();
    while !ok() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Reboot or power off now (busybox's `-f`: no init to ask in the live environment).
pub fn act(after: After) -> std::io::Result<()> {
    let cmd = match after {
        After::Reboot => "reboot",
        After::PowerOff => "poweroff",
        After::Stay => return Ok(()),
    };
    // SAFETY of data: everything was fsynced; sync once more for the page cache.
    let _ = Command::new("sync").status();
    let status = Command::new(cmd).arg("-f").status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("{cmd} -f failed: {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, mib: u64, removable: bool, ro: bool) -> Disk {
        Disk {
            name: name.into(),
            size: mib << 20,
            removable,
            read_only: ro,
        }
    }

    #[test]
    fn the_only_suitable_disk_is_chosen() {
        let all = [
            d("sda", 8192, true, false), // the USB stick we booted from
            d("sdb", 512, true, false),  // a small card reader
            d("vda", 20480, false, false),
            d("vdb", 20480, false, true), // read-only
        ];
        assert_eq!(
            choose(&all, Some("sda")).unwrap(),
            PathBuf::from("/dev/vda")
        );
    }

    #[test]
    fn several_or_no_candidates_are_errors_listing_the_disks() {
        let all = [
            d("vda", 20480, false, false),
            d("nvme0n1", 40960, false, false),
        ];
        let e = choose(&all, None).unwrap_err();
        assert!(
            e.contains("/dev/vda") && e.contains("/dev/nvme0n1") && e.contains("install.device"),
            "{e}"
        );
        let e = choose(&[d("sr0x", 700, true, true)], None).unwrap_err();
        assert!(e.contains("no disk"), "{e}");
    }
}
