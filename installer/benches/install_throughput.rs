//! `cairn-installer install` throughput to a loop device against `dd bs=4M oflag=direct
//! conv=fsync` (same image, same device, page cache warm for both) and, when it is installed,
//! `coreos-installer install --image-file` (`cargo install coreos-installer --root
//! /var/tmp/coreos-installer`, or CAIRN_COREOS_INSTALLER=PATH). Needs root and `losetup`.
//!
//! Two rounds of measurements: the loop device as it is (memory speed: one SHA-256 stream,
//! ~1.5 GB/s, is then the limit), and the same device with its writes throttled by a cgroup
//! to CAIRN_BENCH_DEVICE_MBPS (default 450 MB/s: a SATA SSD or a USB 3 drive), where the
//! device is the limit, as with the media Cairn is written to in the field.
//!
//! Run: `cargo bench -p cairn-installer --bench install_throughput` (CAIRN_BENCH_MIB=1024 sets
//! the image size, CAIRN_BENCH_ROUNDS=3 the rounds; the best round of each tool is reported).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn noise_file(path: &Path, mib: u64) {
    use std::io::Write;
    if std::fs::metadata(path).map(|m| m.len()).ok() == Some(mib << 20) {
        return;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for w in chunk.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            w.copy_from_slice(&seed.to_le_bytes());
        }
        f.write_all(&chunk).unwrap();
    }
    f.flush().unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn timed(name: &str, cmd: &mut Command) -> Option<f64> {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        eprintln!(
            "{name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(secs)
}

/// The best time of each tool over `rounds` rounds, each command started through `prefix`
/// (empty, or a shell that first joins a throttling cgroup).
fn measure(
    img: &Path,
    dev: &str,
    digest: &str,
    rounds: u64,
    prefix: &[String],
) -> Vec<(&'static str, f64)> {
    let coreos = coreos_path();
    let bin = env!("CARGO_BIN_EXE_cairn-installer");
    let cmd = |program: &str| -> Command {
        match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        }
    };
    let mut best: Vec<(&str, f64)> = Vec::new();
    let mut record = |name: &'static str, secs: Option<f64>| {
        if let Some(s) = secs {
            match best.iter_mut().find(|(n, _)| *n == name) {
                Some((_, b)) => *b = b.min(s),
                None => best.push((name, s)),
            }
        }
    };
    for _ in 0..rounds {
        record(
            "dd bs=4M oflag=direct conv=fsync",
            timed(
                "dd",
                cmd("dd")
                    .arg(format!("if={}", img.display()))
                    .arg(format!("of={dev}"))
                    .args(["bs=4M", "oflag=direct", "conv=fsync", "status=none"]),
            ),
        );
        record(
            "cairn-installer install (sha256 while streaming)",
            timed(
                "cairn-installer",
                cmd(bin)
                    .args(["install", "--image"])
                    .arg(img)
                    .args(["--device", dev])
                    .env("CAIRN_LOG", "warn"),
            ),
        );
        record(
            "cairn-installer install --sha256 (verify first, then write)",
            timed(
                "cairn-installer --sha256",
                cmd(bin)
                    .args(["install", "--image"])
                    .arg(img)
                    .args(["--device", dev, "--sha256", digest])
                    .env("CAIRN_LOG", "warn"),
            ),
        );
        if coreos.exists() {
            // Without udevd (containers), coreos-installer writes the whole image, then fails
            // waiting for udev and zeroes the partition table: the time still measures the
            // copy (plus a small wipe). It is counted only when the copy reached 100%.
            let t = Instant::now();
            let out = cmd(coreos.to_str().unwrap())
                .args(["install", "--insecure", "--image-file"])
                .arg(img)
                .arg(dev)
                .output()
                .unwrap();
            let secs = t.elapsed().as_secs_f64();
            let err = String::from_utf8_lossy(&out.stderr);
            let copied = out.status.success()
                || (err.contains("(100%)") && err.contains("udevd socket missing"));
            if !copied {
                eprintln!("coreos-installer failed: {err}");
            }
            record(
                "coreos-installer install --image-file --insecure (copy)",
                copied.then_some(secs),
            );
        }
    }
    best
}

fn coreos_path() -> PathBuf {
    std::env::var("CAIRN_COREOS_INSTALLER")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/coreos-installer/bin/coreos-installer"))
}

fn report(title: &str, mib: u64, best: &[(&str, f64)]) {
    let dd = best.first().map(|(_, s)| *s).unwrap_or(f64::NAN);
    println!("{title}");
    for (name, secs) in best {
        println!(
            "  {name:<62} {:>7.1} MiB/s  {:>5.2}× dd",
            mib as f64 / secs,
            dd / secs
        );
    }
}

/// A cgroup limiting writes to `dev` to `bytes_per_sec` (cgroup v2 `io.max`, else v1
/// `blkio.throttle.write_bps_device`): the command prefix that runs a program inside it.
/// None where neither is available.
fn throttle(dev: &str, bytes_per_sec: u64) -> Option<(PathBuf, Vec<String>)> {
    let out = Command::new("lsblk")
        .args(["-dno", "MAJ:MIN", dev])
        .output()
        .ok()?;
    let majmin = String::from_utf8(out.stdout).ok()?.trim().to_string();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let (group, file, line) = if std::fs::read_to_string(v2)
        .map(|c| c.split_whitespace().any(|w| w == "io"))
        .unwrap_or(false)
    {
        let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+io");
        (
            PathBuf::from("/sys/fs/cgroup/cairn-bench"),
            "io.max",
            format!("{majmin} wbps={bytes_per_sec}"),
        )
    } else if Path::new("/sys/fs/cgroup/blkio").is_dir() {
        (
            PathBuf::from("/sys/fs/cgroup/blkio/cairn-bench"),
            "blkio.throttle.write_bps_device",
            format!("{majmin} {bytes_per_sec}"),
        )
    } else {
        return None;
    };
    std::fs::create_dir_all(&group).ok()?;
    std::fs::write(group.join(file), line).ok()?;
    let procs = group.join("cgroup.procs");
    Some((
        group,
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > {} && exec \"$@\"", procs.display()),
            "sh".into(),
        ],
    ))
}

fn main() {
    let mib = env_u64("CAIRN_BENCH_MIB", 1024);
    let rounds = env_u64("CAIRN_BENCH_ROUNDS", 3);
    let dir = PathBuf::from("/var/tmp/cairn-bench-install");
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("image.raw");
    noise_file(&img, mib);
    let digest = sha256(&img); // also warms the page cache
    let backing = dir.join("device");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let out = Command::new("losetup")
        // Partition scanning on: coreos-installer insists on re-reading the table.
        .args(["--find", "--show", "--partscan"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let best = measure(&img, &dev, &digest, rounds, &[]);
    // A device slower than one SHA-256 stream (a SATA SSD, a USB 3 drive, an SD card): the
    // same device throttled by a cgroup, as the writes of a real one would be.
    let device_mbps = env_u64("CAIRN_BENCH_DEVICE_MBPS", 450);
    let throttled = throttle(&dev, device_mbps * 1_000_000)
        .map(|(group, prefix)| (group, measure(&img, &dev, &digest, rounds, &prefix)));

    // A last cairn-installer write must produce the image exactly.
    let last = Command::new(env!("CARGO_BIN_EXE_cairn-installer"))
        .args(["install", "--image"])
        .arg(&img)
        .args(["--device", &dev])
        .env("CAIRN_LOG", "warn")
        .output()
        .unwrap();
    assert!(last.status.success());
    let check = Command::new("cmp")
        .args(["-n", &(mib << 20).to_string()])
        .arg(&img)
        .arg(&dev)
        .status()
        .unwrap();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    let _ = std::fs::remove_file(&backing);

    report(
        &format!("install throughput, {mib} MiB image to a loop device (best of {rounds}):"),
        mib,
        &best,
    );
    match &throttled {
        Some((group, best)) => {
            report(
                &format!(
                    "the same loop device with writes throttled to {device_mbps} MB/s (cgroup), like a SATA SSD or USB 3 drive:"
                ),
                mib,
                best,
            );
            let _ = std::fs::remove_dir(group);
        }
        None => {
            println!("  (no blkio/io cgroup controller: the throttled-device round was skipped)")
        }
    }
    let coreos = coreos_path();
    if !coreos.exists() {
        println!("  (coreos-installer not found at {})", coreos.display());
    }
    assert!(
        check.success(),
        "the device does not hold the image after the last run"
    );
}
