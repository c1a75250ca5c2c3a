//! `cairn-installer iso`: a hybrid install ISO (UEFI; boots from CD or as a USB stick) that
//! installs a Cairn disk image onto the machine's disk and reboots or powers off — an "edge
//! installer ISO".
//!
//! Layout. The El Torito EFI boot image (also appended as an EFI system partition, so the
//! same file boots when written to a USB stick) holds systemd-boot (from the OS root), one
//! loader entry, the root's kernel and a small initramfs: static busybox, the static
//! `cairn-installer`, and the storage/CD/USB kernel modules of the root. The ISO 9660 tree
//! holds `/cairn/image.zst` (the disk image from `cairn-installer image`, zstd), its
//! `.sha256`, `/cairn/user-data/` (the site's user-data, `NN-name.yaml` in merge order),
//! `/cairn/oem.fat` (the same files as a ready CAIRN_OEM filesystem) and
//! `/cairn/install.json` (what the medium is).
//!
//! Boot: /init loads the drivers, finds and mounts the medium, and runs
//! `cairn-installer live` ([`live`]): validate the user-data, pick the target from `install:`
//! (or the only suitable disk), `install` the image (digest checked), write the OEM
//! filesystem, then reboot or power off as asked. [`customize`] replaces the user-data of an
//! existing ISO without rebuilding it (xorriso maps the new files over the old ones).

pub mod cpio;
pub mod live;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::image::Arch;

/// Volume label of the install ISO.
pub const VOLUME_ID: &str = "CAIRN_INSTALL";

/// Kernel modules the live environment loads (with their dependencies): CD-ROM, ISO 9660,
/// virtio, SATA/IDE, NVMe, USB storage, SD/MMC. Missing or built-in ones are skipped.
pub const LIVE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "scsi_mod",
    "sd_mod",
    "sr_mod",
    "cdrom",
    "isofs",
    "ahci",
    "ata_piix",
    "ata_generic",
    "nvme",
    "xhci_pci",
    "ehci_pci",
    "uhci_hcd",
    "ohci_pci",
    "usb_storage",
    "uas",
    "mmc_block",
    "sdhci_pci",
    "sdhci_acpi",
];

/// Module directories (under lib/modules/VERSION/kernel/) copied into the initramfs.
const MODULE_DIRS: &[&str] = &[
    "drivers/ata",
    "drivers/block",
    "drivers/cdrom",
    "drivers/nvme",
    "drivers/scsi",
    "drivers/usb/common",
    "drivers/usb/core",
    "drivers/usb/host",
    "drivers/usb/storage",
    "drivers/virtio",
    "drivers/mmc",
    "fs/isofs",
    "lib",
    "crypto",
];

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    pub arch: Arch,
    /// The OS root tarball (packaging/os-image/build-root.sh): kernel, modules, systemd-boot.
    pub rootfs: PathBuf,
    /// The disk image to install (from `cairn-installer image`), raw.
    pub image: PathBuf,
    pub user_data: Vec<PathBuf>,
    pub out: PathBuf,
    /// Static cairn-installer for the live environment (default: target/dist/ARCH/…).
    pub installer: Option<PathBuf>,
    /// Static busybox for the live environment (default: the root's own, else the host's
    /// /bin/busybox when it is a static build for `arch`).
    pub busybox: Option<PathBuf>,
    /// zstd level for the embedded image (default 6).
    pub zstd_level: u32,
}

/// What was built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub bytes: u64,
    pub image_bytes: u64,
    pub compressed_image_bytes: u64,
    pub kernel: String,
    pub user_data: Vec<PathBuf>,
    pub seconds: f64,
}

/// Errors building or customizing an ISO; each names the step and the file.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error(transparent)]
    UserData(#[from] crate::userdata::UserDataError),
    #[error("{step}: {detail}")]
    Step { step: String, detail: String },
    #[error(transparent)]
    Oem(#[from] crate::oem::OemError),
}

fn step(step: impl Into<String>, detail: impl std::fmt::Display) -> IsoError {
    IsoError::Step {
        step: step.into(),
        detail: detail.to_string(),
    }
}

/// Run a tool; its stderr is the error detail.
fn tool(what: &str, cmd: &mut Command) -> Result<(), IsoError> {
    let out = cmd
        .output()
        .map_err(|e| step(what, format!("running {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        return Err(step(
            what,
            format!(
                "{:?} failed: {}",
                cmd.get_program(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// The static cairn-installer for `arch` when `--installer` is not given: this very
/// program when it is a static build for that architecture (as packaged), else what
/// `packaging/build-static.sh` leaves in `target/dist/<arch>/` of the current directory
/// (a source checkout).
fn default_installer(arch: Arch) -> Option<PathBuf> {
    let own = std::env::current_exe()
        .ok()
        .filter(|exe| static_elf_problem(exe, arch).is_none());
    own.into_iter()
        .chain([
            PathBuf::from(format!("target/dist/{}/cairn-installer", arch.name())),
            PathBuf::from(format!(
                "target/{}-unknown-linux-musl/release/cairn-installer",
                arch.name()
            )),
        ])
        .find(|p| p.is_file())
}

/// ELF `e_machine` of each architecture.
fn elf_machine(arch: Arch) -> u16 {
    match arch {
        Arch::X86_64 => 62,   // EM_X86_64
        Arch::Aarch64 => 183, // EM_AARCH64
    }
}

/// Why the program at `path` cannot run in the live environment's bare initramfs on
/// `arch`, or None when it can: a 64-bit little-endian ELF for that machine without a
/// program interpreter (PT_INTERP), i.e. statically linked.
fn static_elf_problem(path: &Path, arch: Arch) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Some("is not a 64-bit little-endian ELF program".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let machine = u16_at(18);
    if machine != elf_machine(arch) {
        let other = [Arch::X86_64, Arch::Aarch64]
            .into_iter()
            .find(|a| elf_machine(*a) == machine)
            .map(|a| a.name().to_string())
            .unwrap_or_else(|| format!("ELF machine {machine}"));
        return Some(format!("is built for {other}, not {}", arch.name()));
    }
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&bytes[32..40]);
    let phoff = u64::from_le_bytes(phoff) as usize;
    let (phentsize, phnum) = (u16_at(54) as usize, u16_at(56) as usize);
    let interp = (0..phnum).any(|i| {
        let o = phoff.saturating_add(i.saturating_mul(phentsize));
        // PT_INTERP = 3; a header past the end of the file counts as one (not runnable).
        bytes
            .get(o..o.saturating_add(4))
            .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) == 3)
            .unwrap_or(true)
    });
    interp.then(|| "is dynamically linked (it has a program interpreter)".into())
}

/// The live environment's busybox: `--busybox`, else the root's own (Cairn's OS recipe
/// includes busybox-static), else the host's /bin/busybox; each must be static for `arch`.
fn choose_busybox(given: Option<&Path>, root: &Path, arch: Arch) -> Result<PathBuf, IsoError> {
    let what = "finding a static busybox for the live environment";
    if let Some(p) = given {
        return match static_elf_problem(p, arch) {
            None => Ok(p.to_path_buf()),
            Some(why) => Err(step(what, format!("--busybox {} {why}", p.display()))),
        };
    }
    let mut tried = Vec::new();
    let in_root = [root.join("usr/bin/busybox"), root.join("bin/busybox")];
    if !in_root.iter().any(|p| p.exists()) {
        tried.push("the root has no busybox".to_string());
    }
    for p in in_root
        .into_iter()
        .filter(|p| p.exists())
        .chain([PathBuf::from("/bin/busybox")])
    {
        match static_elf_problem(&p, arch) {
            None => return Ok(p),
            Some(why) => tried.push(format!("{} {why}", p.display())),
        }
    }
    Err(step(
        what,
        format!(
            "none found: {} (Cairn's OS recipe, packaging/os-image/build-root.sh, puts \
             busybox-static in the root); pass --busybox BIN, a static busybox for {}",
            tried.join("; "),
            arch.name()
        ),
    ))
}

/// Build the ISO. The output is written to a temporary file next to `out` and renamed.
pub fn build(opts: &Options) -> Result<Summary, IsoError> {
    let started = Instant::now();
    let files = crate::userdata::validate(&opts.user_data)?;
    let installer = opts
        .installer
        .clone()
        .or_else(|| default_installer(opts.arch))
        .ok_or_else(|| {
            step(
                "finding the static cairn-installer",
                format!(
                    "none at target/dist/{0}/cairn-installer or target/{0}-unknown-linux-musl/release/; \
                     build it (packaging/build-static.sh) or pass --installer",
                    opts.arch.name()
                ),
            )
        })?;
    if let Some(why) = static_elf_problem(&installer, opts.arch) {
        return Err(step(
            "checking the live environment's cairn-installer",
            format!("{} {why}", installer.display()),
        ));
    }
    if let Some(p) = &opts.busybox {
        // Checked now, before anything is extracted or built.
        choose_busybox(Some(p), Path::new("/nonexistent"), opts.arch)?;
    }
    let out_dir = opts
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".cairn-iso-")
        .tempdir_in(out_dir)
        .map_err(|e| {
            step(
                format!("creating a work directory in {}", out_dir.display()),
                e,
            )
        })?;
    let w = work.path();

    tracing::info!(
        step = "1/5",
        "extracting kernel, modules and systemd-boot from {}",
        opts.rootfs.display()
    );
    let root = w.join("root");
    fs::create_dir_all(&root).map_err(|e| step("work directory", e))?;
    tool(
        &format!("extracting {}", opts.rootfs.display()),
        Command::new("tar")
            .arg("-xf")
            .arg(&opts.rootfs)
            .arg("-C")
            .arg(&root)
            .args(["--wildcards", "--no-anchored", "--exclude=*/firmware/*"])
            .args([
                "boot/vmlinuz-*",
                "usr/lib/modules/*",
                &format!(
                    "usr/lib/systemd/boot/efi/systemd-boot{}.efi",
                    efi_suffix(opts.arch)
                ),
            ]),
    )?;
    let (kernel, version) = find_kernel(&root)?;
    if opts.busybox.is_none() {
        // The root's busybox, where it has one (a missing member is not an error here).
        let _ = Command::new("tar")
            .arg("-xf")
            .arg(&opts.rootfs)
            .arg("-C")
            .arg(&root)
            .args([
                "--wildcards",
                "--no-anchored",
                "usr/bin/busybox",
                "bin/busybox",
            ])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let busybox = choose_busybox(opts.busybox.as_deref(), &root, opts.arch)?;

    tracing::info!(step = "2/5", kernel = %version, "building the live initramfs");
    let initrd = w.join("initrd.img");
    build_initramfs(&root, &version, &installer, &busybox, &initrd)?;

    tracing::info!(step = "3/5", "building the EFI boot image (systemd-boot)");
    let efi_img = w.join("efiboot.img");
    build_esp(opts.arch, &root, &kernel, &initrd, &efi_img)?;

    tracing::info!(
        step = "4/5",
        "compressing the disk image and the OEM filesystem"
    );
    let tree = w.join("tree");
    let cairn = tree.join("cairn");
    fs::create_dir_all(cairn.join("user-data")).map_err(|e| step("work directory", e))?;
    let image_bytes = fs::metadata(&opts.image)
        .map_err(|e| step(format!("reading {}", opts.image.display()), e))?
        .len();
    let zst = cairn.join("image.zst");
    tool(
        &format!("compressing {}", opts.image.display()),
        Command::new("zstd")
            .args(["-q", "-T0", &format!("-{}", opts.zstd_level), "-o"])
            .arg(&zst)
            .arg(&opts.image),
    )?;
    let digest = sha256_file(&zst)?;
    write(
        &cairn.join("image.zst.sha256"),
        format!("{digest}  image.zst\n").as_bytes(),
    )?;
    put_user_data(&opts.image, &files, &cairn)?;
    let manifest = serde_json::json!({
        "kind": "cairn-install-medium",
        "arch": opts.arch.name(),
        "kernel": version,
        "image_bytes": image_bytes,
        "installer_version": env!("CARGO_PKG_VERSION"),
    });
    write(
        &cairn.join("install.json"),
        format!("{manifest:#}\n").as_bytes(),
    )?;

    tracing::info!(
        step = "5/5",
        "writing the hybrid ISO {}",
        opts.out.display()
    );
    let tmp_iso = w.join("out.iso");
    tool(
        "xorriso",
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-o"])
            .arg(&tmp_iso)
            .args(["-V", VOLUME_ID, "-R", "-J", "-joliet-long"])
            .arg("-append_partition")
            .arg("2")
            .arg("0xef")
            .arg(&efi_img)
            .args([
                "-appended_part_as_gpt",
                "-e",
                "--interval:appended_partition_2:all::",
            ])
            .args(["-no-emul-boot", "-partition_offset", "16"])
            .arg(&tree),
    )?;
    let f = fs::File::open(&tmp_iso).map_err(|e| step("syncing the ISO", e))?;
    f.sync_all().map_err(|e| step("syncing the ISO", e))?;
    fs::rename(&tmp_iso, &opts.out)
        .map_err(|e| step(format!("moving the ISO to {}", opts.out.display()), e))?;
    Ok(Summary {
        bytes: fs::metadata(&opts.out).map(|m| m.len()).unwrap_or(0),
        out: opts.out.clone(),
        image_bytes,
        compressed_image_bytes: fs::metadata(cairn_zst_path(&tree))
            .map(|m| m.len())
            .unwrap_or(0),
        kernel: version,
        user_data: files,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn cairn_zst_path(tree: &Path) -> PathBuf {
    tree.join("cairn/image.zst")
}

fn efi_suffix(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x64",
        Arch::Aarch64 => "aa64",
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), IsoError> {
    fs::write(path, data).map_err(|e| step(format!("writing {}", path.display()), e))
}

fn sha256_file(path: &Path) -> Result<String, IsoError> {
    use sha2::Digest;
    let mut f = fs::File::open(path).map_err(|e| step(format!("reading {}", path.display()), e))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| step(format!("reading {}", path.display()), e))?;
    Ok(hex::encode(h.finalize()))
}

/// The newest `boot/vmlinuz-VERSION` of the extracted root with its modules directory.
fn find_kernel(root: &Path) -> Result<(PathBuf, String), IsoError> {
    let mut found: Vec<String> = fs::read_dir(root.join("boot"))
        .map_err(|e| step("finding the kernel", format!("no boot/ in the root: {e}")))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .filter(|v| root.join("usr/lib/modules").join(v).is_dir())
        .collect();
    found.sort();
    let version = found.pop().ok_or_else(|| {
        step(
            "finding the kernel",
            "no boot/vmlinuz-* with its usr/lib/modules/ in the root",
        )
    })?;
    Ok((root.join(format!("boot/vmlinuz-{version}")), version))
}

/// The live environment's /init (busybox sh).
fn init_script() -> String {
    format!(
        r#"#!/bin/sh
# Cairn install medium: load drivers, find the medium, run the installer.
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /run /tmp /mnt/medium
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo "cairn-install: loading drivers"
for m in {modules}; do modprobe -q "$m" 2>/dev/null; done
found=
i=0
while [ $i -lt 60 ] && [ -z "$found" ]; do
  for dev in /dev/sr* /dev/vd* /dev/sd* /dev/nvme*n* /dev/mmcblk* /dev/xvd*; do
    [ -b "$dev" ] || continue
    mount -t iso9660 -o ro "$dev" /mnt/medium 2>/dev/null || continue
    if [ -f /mnt/medium/cairn/install.json ]; then found=$dev; break; fi
    umount /mnt/medium
  done
  [ -n "$found" ] || sleep 1
  i=$((i+1))
done
if [ -z "$found" ]; then
  echo "cairn-install: the install medium (ISO 9660 with /cairn/install.json) was not found"
else
  echo "cairn-install: medium $found"
  /bin/cairn-installer live --medium /mnt/medium && exec sh
  echo "cairn-install: the installation failed (see above)"
fi
echo "cairn-install: a shell follows; 'poweroff -f' or 'reboot -f' when done"
exec setsid cttyhack sh
"#,
        modules = LIVE_MODULES.join(" ")
    )
}

/// cpio of /init, busybox, cairn-installer and the kernel modules, gzip-compressed.
fn build_initramfs(
    root: &Path,
    version: &str,
    installer: &Path,
    busybox: &Path,
    out: &Path,
) -> Result<(), IsoError> {
    let read = |p: &Path| fs::read(p).map_err(|e| step(format!("reading {}", p.display()), e));
    let mut a = cpio::Archive::default();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "mnt",
        "etc",
        "lib",
        "lib/modules",
    ] {
        a.dir(d);
    }
    a.file("init", 0o755, init_script().as_bytes());
    a.file("bin/busybox", 0o755, &read(busybox)?);
    a.symlink("bin/sh", "busybox");
    a.file("bin/cairn-installer", 0o755, &read(installer)?);
    let mods = root.join("usr/lib/modules").join(version);
    let base = format!("lib/modules/{version}");
    a.dir(&base);
    for f in [
        "modules.dep",
        "modules.alias",
        "modules.builtin",
        "modules.order",
    ] {
        if let Ok(data) = fs::read(mods.join(f)) {
            a.file(&format!("{base}/{f}"), 0o644, &data);
        }
    }
    a.dir(&format!("{base}/kernel"));
    for d in MODULE_DIRS {
        add_tree(
            &mut a,
            &mods.join("kernel").join(d),
            &format!("{base}/kernel/{d}"),
        )?;
    }
    let f = fs::File::create(out).map_err(|e| step(format!("writing {}", out.display()), e))?;
    a.finish_gz(std::io::BufWriter::new(f))
        .map_err(|e| step(format!("writing {}", out.display()), e))
}

/// Add `dir` recursively as `name` (its parents are created too). Absent: nothing.
fn add_tree(a: &mut cpio::Archive, dir: &Path, name: &str) -> Result<(), IsoError> {
    if !dir.is_dir() {
        return Ok(());
    }
    let mut parent = String::new();
    for part in name.split('/') {
        if !parent.is_empty() {
            parent.push('/');
        }
        parent.push_str(part);
        a.dir(&parent);
    }
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| step(format!("reading {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let n = format!("{name}/{}", e.file_name().to_string_lossy());
        if p.is_dir() {
            add_tree(a, &p, &n)?;
        } else if p.is_file() {
            let data = fs::read(&p).map_err(|e| step(format!("reading {}", p.display()), e))?;
            a.file(&n, 0o644, &data);
        }
    }
    Ok(())
}

/// The EFI boot image: systemd-boot as the removable-media loader, one entry, kernel, initrd.
fn build_esp(
    arch: Arch,
    root: &Path,
    kernel: &Path,
    initrd: &Path,
    out: &Path,
) -> Result<(), IsoError> {
    let sfx = efi_suffix(arch);
    let loader = root.join(format!("usr/lib/systemd/boot/efi/systemd-boot{sfx}.efi"));
    if !loader.is_file() {
        return Err(step(
            "building the EFI boot image",
            format!(
                "no {} in the root (package systemd-boot-efi)",
                loader.display()
            ),
        ));
    }
    let size_of = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let need = size_of(&loader) + size_of(kernel) + size_of(initrd);
    // FAT overhead and slack; whole MiB.
    let mib = (need + need / 10 + (4 << 20)).div_ceil(1 << 20);
    let dir = out.with_extension("d");
    let w = |rel: &str, text: String| write(&dir.join(rel), text.as_bytes());
    fs::create_dir_all(dir.join("loader/entries")).map_err(|e| step("work directory", e))?;
    w(
        "loader/loader.conf",
        "default cairn-install.conf\ntimeout 0\nconsole-mode keep\n".into(),
    )?;
    w(
        "loader/entries/cairn-install.conf",
        format!(
            "title Cairn installer\nlinux /cairn/linux\ninitrd /cairn/initrd\noptions console=tty0 console={},115200 loglevel=4 panic=30\n",
            arch.console()
        ),
    )?;
    let _ = fs::remove_file(out);
    tool(
        "mkfs.vfat",
        Command::new("mkfs.vfat")
            .args(["-C", "-n", "CAIRN_EFI"])
            .arg(out)
            .arg((mib * 1024).to_string()),
    )?;
    let img = out.to_string_lossy().to_string();
    tool(
        "mmd",
        Command::new("mmd").args([
            "-i",
            &img,
            "::/EFI",
            "::/EFI/BOOT",
            "::/loader",
            "::/loader/entries",
            "::/cairn",
        ]),
    )?;
    let copies: [(&Path, String); 5] = [
        (
            &loader,
            format!("::/EFI/BOOT/BOOT{}.EFI", sfx.to_uppercase()),
        ),
        (kernel, "::/cairn/linux".into()),
        (initrd, "::/cairn/initrd".into()),
        (
            &dir.join("loader/loader.conf"),
            "::/loader/loader.conf".into(),
        ),
        (
            &dir.join("loader/entries/cairn-install.conf"),
            "::/loader/entries/cairn-install.conf".into(),
        ),
    ];
    for (src, dst) in copies {
        tool(
            "mcopy",
            Command::new("mcopy").args(["-i", &img]).arg(src).arg(&dst),
        )?;
    }
    Ok(())
}

/// Copy the user-data into `cairn/user-data/` (NN-name.yaml, merge order) and build
/// `cairn/oem.fat`, a CAIRN_OEM filesystem of exactly the image's OEM partition size.
fn put_user_data(image: &Path, files: &[PathBuf], cairn: &Path) -> Result<(), IsoError> {
    let ud = cairn.join("user-data");
    for (i, f) in files.iter().enumerate() {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "user-data.yaml".into());
        let data = fs::read(f).map_err(|e| step(format!("reading {}", f.display()), e))?;
        write(&ud.join(format!("{i:02}-{name}")), &data)?;
    }
    let part = crate::oem::find_partition(image)?;
    crate::oem::build_fat(files, part.length, &cairn.join("oem.fat"))?;
    Ok(())
}

/// Replace the user-data of an existing install ISO (`customize`): validate, rebuild
/// `/cairn/user-data/` and `/cairn/oem.fat`, and let xorriso write a new ISO with the boot
/// setup replayed. `out` may equal `iso` (written to a temporary file, then renamed).
pub fn customize(iso: &Path, files: &[PathBuf], out: &Path) -> Result<(), IsoError> {
    let files = crate::userdata::validate(files)?;
    let out_dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".cairn-iso-")
        .tempdir_in(out_dir)
        .map_err(|e| {
            step(
                format!("creating a work directory in {}", out_dir.display()),
                e,
            )
        })?;
    let w = work.path();
    // The OEM filesystem must match the image's partition: take its size from the old one.
    let old_fat = w.join("old-oem.fat");
    tool(
        &format!("reading /cairn/oem.fat from {}", iso.display()),
        Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(iso)
            .args(["-extract", "/cairn/oem.fat"])
            .arg(&old_fat),
    )?;
    let size = fs::metadata(&old_fat)
        .map_err(|e| step("reading the old OEM filesystem", e))?
        .len();
    let cairn = w.join("cairn");
    let ud = cairn.join("user-data");
    fs::create_dir_all(&ud).map_err(|e| step("work directory", e))?;
    for (i, f) in files.iter().enumerate() {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "user-data.yaml".into());
        let data = fs::read(f).map_err(|e| step(format!("reading {}", f.display()), e))?;
        write(&ud.join(format!("{i:02}-{name}")), &data)?;
    }
    crate::oem::build_fat(&files, size, &cairn.join("oem.fat"))?;
    let tmp = w.join("out.iso");
    tool(
        "xorriso",
        Command::new("xorriso")
            .args(["-indev"])
            .arg(iso)
            .args(["-outdev"])
            .arg(&tmp)
            .args(["-boot_image", "any", "replay"])
            .args(["-rm_r", "/cairn/user-data", "--"])
            .args(["-map"])
            .arg(&ud)
            .arg("/cairn/user-data")
            .args(["-map"])
            .arg(cairn.join("oem.fat"))
            .arg("/cairn/oem.fat")
            .arg("-commit"),
    )?;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&tmp)
        .map_err(|e| step("syncing the ISO", e))?;
    f.flush().map_err(|e| step("syncing the ISO", e))?;
    f.sync_all().map_err(|e| step("syncing the ISO", e))?;
    fs::rename(&tmp, out).map_err(|e| step(format!("moving the ISO to {}", out.display()), e))
}

#[cfg(test)]
mod static_elf_tests {
    #![allow(clippy::unwrap_used)]
    use super::{choose_busybox, static_elf_problem, Arch};

    /// A minimal ELF64 LE header for `machine` with one program header of type `ptype`.
    fn elf(machine: u16, ptype: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[18..20].copy_from_slice(&machine.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        elf[64..68].copy_from_slice(&ptype.to_le_bytes());
        elf
    }

    #[test]
    fn only_a_static_elf_for_the_right_machine_passes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("prog");
        let check = |bytes: &[u8], arch| {
            std::fs::write(&f, bytes).unwrap();
            static_elf_problem(&f, arch)
        };
        assert_eq!(check(&elf(62, 1), Arch::X86_64), None);
        assert_eq!(check(&elf(183, 1), Arch::Aarch64), None);
        let wrong = check(&elf(183, 1), Arch::X86_64).unwrap();
        assert!(wrong.contains("built for aarch64, not x86_64"), "{wrong}");
        let dynamic = check(&elf(62, 3), Arch::X86_64).unwrap(); // PT_INTERP
        assert!(dynamic.contains("dynamically linked"), "{dynamic}");
        let script = check(b"#!/bin/sh\n", Arch::X86_64).unwrap();
        assert!(script.contains("not a 64-bit"), "{script}");
        // A program header table past the end of the file is not runnable either.
        let mut cut = elf(62, 1);
        cut.truncate(66);
        assert!(check(&cut, Arch::X86_64).is_some());
        // Debian's own programs are dynamically linked.
        let arch = if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        };
        assert!(static_elf_problem(std::path::Path::new("/bin/ls"), arch).is_some());
    }

    #[test]
    fn the_roots_busybox_wins_and_a_wrong_given_one_is_named() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        let bb = root.path().join("usr/bin/busybox");
        std::fs::write(&bb, elf(183, 1)).unwrap();
        assert_eq!(
            choose_busybox(None, root.path(), Arch::Aarch64).unwrap(),
            bb
        );
        let err = choose_busybox(Some(&bb), root.path(), Arch::X86_64)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--busybox") && err.contains("built for aarch64"),
            "{err}"
        );
        // No busybox in the root, and the host's is for another machine or missing.
        let empty = tempfile::tempdir().unwrap();
        let other = if cfg!(target_arch = "aarch64") {
            Arch::X86_64
        } else {
            Arch::Aarch64
        };
        let err = choose_busybox(None, empty.path(), other)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the root has no busybox") && err.contains("pass --busybox"),
            "{err}"
        );
    }
}
