//! Makes the kernel re-read a disk's partition table after the image is written: BLKRRPART
//! through `blockdev --rereadpt`, then `partx --update`, which parses the table in user space
//! and adds/resizes/removes partitions one by one (BLKPG) — it works where BLKRRPART does not
//! (a kernel without the GPT parser, a busy disk). Then waits for udev, when there is one.

use std::path::Path;
use std::process::Command;

/// Re-read the partition table of `disk`. The error (each tool's message) is for a warning:
/// the image is written either way, only the kernel's view is stale until the next boot.
// String error: the caller only logs it (the partition table is written either way).
pub fn reread(disk: &Path) -> Result<(), String> {
    let mut errors = Vec::new();
    let mut ok = false;
    for (tool, arg) in [("blockdev", "--rereadpt"), ("partx", "--update")] {
        match Command::new(tool).arg(arg).arg(disk).output() {
            Ok(out) if out.status.success() => ok = true,
            Ok(out) => errors.push(format!(
                "{tool} {arg}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("{tool}: {e}")),
        }
    }
    // Let udev create /dev/… for the new partitions; no udev (containers, initramfs) is fine.
    let _ = Command::new("udevadm")
        .args(["settle", "--timeout=10"])
        .output();
    if ok {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}
