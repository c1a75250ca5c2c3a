//! `cairn-installer image`: turns a root file system (directory or tarball from
//! `packaging/os-image/build-root.sh`) and the site's user-data into a bootable GPT disk
//! image, raw or qcow2, without root privileges or loop devices.
//!
//! Each file system is built in its own temporary file (`mkfs.vfat` + `mtools` for the FAT
//! ones, `mkfs.ext4 -d` for the ext4 ones), the partition table is written with `sfdisk` on
//! the image file, the file systems are copied in sparsely, and the result is renamed over
//! `--out` only when everything succeeded. The layout is documented in `lib.rs` and
//! docs/installer.md.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::oem::{self, OemError};
use crate::userdata::{self, UserDataError};

const MIB: u64 = 1024 * 1024;
/// GPT names and file-system labels of the four partitions, in disk order.
pub const ESP_LABEL: &str = "CAIRN_ESP";
pub const PERSISTENT_LABEL: &str = "CAIRN_PERSISTENT";
pub const ROOT_LABEL: &str = "CAIRN_ROOT";
/// Size of the OEM partition unless the user-data needs more.
pub const OEM_SIZE: u64 = 16 * MIB;
/// Size of the persistent partition (mounted on /usr/local).
pub const PERSISTENT_SIZE: u64 = 64 * MIB;
/// Smallest ESP: room for a second kernel and initrd during upgrades.
pub const MIN_ESP_SIZE: u64 = 64 * MIB;
/// Free space added to the root file system beyond its content, before first-boot growth.
pub const ROOT_HEADROOM: u64 = 256 * MIB;

const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const TYPE_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
const TYPE_LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// Target CPU architecture of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
    Aarch64,
}

impl Arch {
    /// Discoverable Partitions Specification type of the root partition (systemd-repart
    /// matches it to grow root on first boot).
    pub fn root_type(self) -> &'static str {
        match self {
            Arch::X86_64 => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            Arch::Aarch64 => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        }
    }
    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
    fn efi_suffix(self) -> &'static str {
        match self {
            Arch::X86_64 => "x64",
            Arch::Aarch64 => "aa64",
        }
    }
    /// The serial console the kernel and the getty use.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Raw,
    Qcow2,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    pub arch: Arch,
    pub rootfs: PathBuf,
    pub user_data: Vec<PathBuf>,
    pub out: PathBuf,
    pub format: Format,
    /// Total disk size; default: just what the content needs plus headroom (root grows to
    /// fill the real disk on first boot).
    pub size: Option<u64>,
    /// Extra kernel command-line arguments.
    pub kernel_args: Vec<String>,
}

/// One partition of a built image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionSummary {
    pub number: u32,
    pub name: String,
    pub filesystem: &'static str,
    pub offset: u64,
    pub size: u64,
}

/// The result of `build`, printed by `--output json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub arch: Arch,
    pub format: Format,
    /// Virtual disk size in bytes.
    pub disk_size: u64,
    /// Bytes the output file occupies on the host's disk (sparse raw or qcow2).
    pub file_allocated: u64,
    pub kernel: String,
    pub user_data: Vec<String>,
    pub partitions: Vec<PartitionSummary>,
    pub seconds: f64,
}

/// Why an image could not be built. Nothing is left at `--out` in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    UserData(#[from] UserDataError),
    #[error(transparent)]
    Oem(#[from] OemError),
    #[error("{path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed while {step}: {detail}")]
    Tool {
        tool: &'static str,
        step: String,
        detail: String,
    },
    #[error("root file system {path}: {detail}")]
    Rootfs { path: PathBuf, detail: String },
    #[error("--size {requested} bytes is too small: this image needs at least {needed} bytes ({} MiB)", needed.div_ceil(MIB))]
    TooSmall { requested: u64, needed: u64 },
}

fn io(path: &Path, step: &'static str) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { path, step, source }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Run a tool, optionally under `fakeroot` with a saved state file (unprivileged builds:
/// ownership and device nodes from the tarball survive into mkfs.ext4 -d).
fn run(
    tool: &'static str,
    step: impl Into<String>,
    fakeroot: Option<&Path>,
    args: &[&std::ffi::OsStr],
) -> Result<Vec<u8>, ImageError> {
    let step = step.into();
    let mut cmd = match fakeroot {
        Some(state) => {
            let mut c = Command::new("fakeroot");
            if state.exists() {
                c.arg("-i").arg(state);
            }
            c.arg("-s").arg(state).arg("--").arg(tool);
            c
        }
        None => Command::new(tool),
    };
    cmd.args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdin(Stdio::null());
    tracing::debug!(?cmd, "running");
    let out = cmd.output().map_err(|e| ImageError::Tool {
        tool,
        step: step.clone(),
        detail: format!("cannot run it: {e} (see docs/installer.md for the tools it needs)"),
    })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
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

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// Kernel, initrd and boot loader found in the root file system.
struct BootFiles {
    version: String,
    kernel: PathBuf,
    initrd: PathBuf,
    loader: PathBuf,
}

fn boot_files(root: &Path, arch: Arch) -> Result<BootFiles, ImageError> {
    let boot = root.join("boot");
    let bad = |detail: String| ImageError::Rootfs {
        path: root.to_path_buf(),
        detail,
    };
    let mut versions: Vec<String> = fs::read_dir(&boot)
        .map_err(|e| bad(format!("cannot read /boot: {e}")))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_owned)
        })
        .collect();
    versions.sort_by(|a, b| version_cmp(a, b));
    let version = versions.pop().ok_or_else(|| {
        bad("no kernel (/boot/vmlinuz-*): build it with packaging/os-image/build-root.sh".into())
    })?;
    let kernel = boot.join(format!("vmlinuz-{version}"));
    let initrd = boot.join(format!("initrd.img-{version}"));
    if !initrd.is_file() {
        return Err(bad(format!(
            "no initrd for kernel {version} (/boot/initrd.img-{version})"
        )));
    }
    let loader = root.join(format!(
        "usr/lib/systemd/boot/efi/systemd-boot{}.efi",
        arch.efi_suffix()
    ));
    if !loader.is_file() {
        return Err(bad(format!(
            "no UEFI boot loader /usr/lib/systemd/boot/efi/systemd-boot{}.efi (package \
             systemd-boot-efi); is this an {} root?",
            arch.efi_suffix(),
            arch.name()
        )));
    }
    Ok(BootFiles {
        version,
        kernel,
        initrd,
        loader,
    })
}

/// Compare kernel versions like 6.1.0-27-amd64 numerically, part by part.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', '+', '~'])
            .map(|p| (p.parse().unwrap_or(0), p.to_string()))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

/// Bytes the root's content takes in an ext4 file system (4 KiB blocks, inodes).
fn content_size(dir: &Path) -> Result<u64, ImageError> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io(&d, "reading the root file system"))? {
            let entry = entry.map_err(io(&d, "reading the root file system"))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(io(&entry.path(), "reading the root file system"))?;
            // 256-byte inode plus the data blocks.
            total += 256 + meta.len().div_ceil(4096) * 4096;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

fn round_mib(n: u64) -> u64 {
    n.div_ceil(MIB) * MIB
}

/// Copy `src` into `disk` at `offset`, leaving all-zero blocks as holes (sparse output).
fn copy_sparse(
    src: &Path,
    disk: &mut File,
    disk_path: &Path,
    offset: u64,
) -> Result<(), ImageError> {
    let mut input = File::open(src).map_err(io(src, "opening"))?;
    let mut buf = vec![0u8; 4 * MIB as usize];
    let zeros = vec![0u8; 64 * 1024];
    let mut pos = offset;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = input.read(&mut buf[filled..]).map_err(io(src, "reading"))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for chunk in buf[..filled].chunks(64 * 1024) {
            // Slice equality is a memcmp: fast even in debug builds.
            if chunk != &zeros[..chunk.len()] {
                disk.seek(SeekFrom::Start(pos))
                    .map_err(io(disk_path, "seeking"))?;
                disk.write_all(chunk)
                    .map_err(io(disk_path, "writing a partition"))?;
            }
            pos += chunk.len() as u64;
        }
        if filled < buf.len() {
            break;
        }
    }
    Ok(())
}

fn make_file(path: &Path, size: u64) -> Result<(), ImageError> {
    let f = File::create(path).map_err(io(path, "creating"))?;
    f.set_len(size).map_err(io(path, "sizing"))?;
    Ok(())
}

/// The systemd-boot configuration and entry.
fn loader_files(arch: Arch, version: &str, extra: &[String]) -> (String, String) {
    let conf = "default cairn.conf\ntimeout 0\neditor no\nconsole-mode keep\n".to_string();
    let mut options = format!(
        "root=LABEL={ROOT_LABEL} rw console=tty0 console={},115200",
        arch.console()
    );
    for a in extra {
        options.push(' ');
        options.push_str(a);
    }
    let entry = format!(
        "title Cairn (Debian GNU/Linux 12, {version})\nlinux /cairn/vmlinuz\ninitrd /cairn/initrd.img\noptions {options}\n"
    );
    (conf, entry)
}

fn build_esp(
    arch: Arch,
    files: &BootFiles,
    extra: &[String],
    work: &Path,
) -> Result<(PathBuf, u64), ImageError> {
    let len = |p: &Path| -> Result<u64, ImageError> {
        Ok(fs::metadata(p).map_err(io(p, "reading"))?.len())
    };
    let content = len(&files.kernel)? + len(&files.initrd)? + 2 * len(&files.loader)?;
    let size = MIN_ESP_SIZE.max(round_mib(content * 2 + 16 * MIB));
    let esp = work.join("esp.fat");
    make_file(&esp, size)?;
    run(
        "mkfs.vfat",
        "formatting the EFI system partition",
        None,
        &[os("-F"), os("32"), os("-n"), os(ESP_LABEL), esp.as_os_str()],
    )?;
    let img = esp.as_os_str();
    run(
        "mmd",
        "creating the ESP's directories",
        None,
        &[
            os("-i"),
            img,
            os("::/EFI"),
            os("::/EFI/BOOT"),
            os("::/EFI/systemd"),
            os("::/loader"),
            os("::/loader/entries"),
            os("::/cairn"),
        ],
    )?;
    let (conf, entry) = loader_files(arch, &files.version, extra);
    let conf_path = work.join("loader.conf");
    let entry_path = work.join("cairn.conf");
    fs::write(&conf_path, conf).map_err(io(&conf_path, "writing"))?;
    fs::write(&entry_path, entry).map_err(io(&entry_path, "writing"))?;
    let upper = arch.efi_suffix().to_uppercase();
    let copies: [(&Path, String); 6] = [
        (&files.loader, format!("::/EFI/BOOT/BOOT{upper}.EFI")),
        (
            &files.loader,
            format!("::/EFI/systemd/systemd-boot{}.efi", arch.efi_suffix()),
        ),
        (&files.kernel, "::/cairn/vmlinuz".into()),
        (&files.initrd, "::/cairn/initrd.img".into()),
        (&conf_path, "::/loader/loader.conf".into()),
        (&entry_path, "::/loader/entries/cairn.conf".into()),
    ];
    for (src, dest) in copies {
        run(
            "mcopy",
            format!("copying {} to the ESP as {dest}", src.display()),
            None,
            &[os("-i"), img, src.as_os_str(), os(&dest)],
        )?;
    }
    Ok((esp, size))
}

/// Root directory to build from: the given directory, or the tarball extracted into
/// `work` (under fakeroot when not running as root).
fn root_dir(rootfs: &Path, work: &Path, fakeroot: Option<&Path>) -> Result<PathBuf, ImageError> {
    let meta = fs::metadata(rootfs).map_err(io(rootfs, "reading --rootfs"))?;
    if meta.is_dir() {
        if !is_root() {
            tracing::warn!(
                "not running as root: files of {} keep their owners in the image (use a \
                 tarball to have root-owned files without root)",
                rootfs.display()
            );
        }
        return Ok(rootfs.to_path_buf());
    }
    let dir = work.join("root");
    fs::create_dir(&dir).map_err(io(&dir, "creating"))?;
    tracing::info!(tarball = %rootfs.display(), "extracting the root file system");
    run(
        "tar",
        format!("extracting {}", rootfs.display()),
        fakeroot,
        &[
            os("--extract"),
            os("--preserve-permissions"),
            os("--numeric-owner"),
            os("--file"),
            rootfs.as_os_str(),
            os("--directory"),
            dir.as_os_str(),
        ],
    )?;
    Ok(dir)
}

fn sfdisk_script(arch: Arch, sizes: &[u64; 4]) -> String {
    let sectors = |b: u64| b / 512;
    let names = [oem::OEM_LABEL, PERSISTENT_LABEL, ROOT_LABEL];
    let types = [TYPE_BASIC_DATA, TYPE_LINUX, arch.root_type()];
    let mut s = format!(
        "label: gpt\nunit: sectors\nfirst-lba: 2048\nstart=2048, size={}, type={TYPE_ESP}, name=\"{ESP_LABEL}\"\n",
        sectors(sizes[0])
    );
    for i in 0..3 {
        s.push_str(&format!(
            "size={}, type={}, name=\"{}\"\n",
            sectors(sizes[i + 1]),
            types[i],
            names[i]
        ));
    }
    s
}

fn write_table(disk: &Path, script: &str) -> Result<(), ImageError> {
    let mut child = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Tool {
            tool: "sfdisk",
            step: "writing the partition table".into(),
            detail: format!("cannot run it: {e} (package fdisk)"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(io(disk, "writing the partition table"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io(disk, "writing the partition table"))?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            tool: "sfdisk",
            step: "writing the partition table".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Build the image described by `opts`. Validates the user-data before anything else.
pub fn build(opts: &Options) -> Result<Summary, ImageError> {
    let started = Instant::now();
    let user_data = userdata::validate(&opts.user_data)?;
    let parent = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = opts
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    // Work space next to the output: same file system for the final rename, and /tmp is
    // often a small tmpfs.
    let work = tempfile::Builder::new()
        .prefix(&format!(".{name}.work-"))
        .tempdir_in(&parent)
        .map_err(io(&parent, "creating a work directory next to --out"))?;
    let fakeroot_state = (!is_root()).then(|| work.path().join("fakeroot.state"));
    let fakeroot = fakeroot_state.as_deref();

    tracing::info!(step = "1/6", "reading the root file system");
    let root = root_dir(&opts.rootfs, work.path(), fakeroot)?;
    let files = boot_files(&root, opts.arch)?;

    tracing::info!(step = "2/6", kernel = %files.version, "building the EFI system partition (systemd-boot)");
    let (esp, esp_size) = build_esp(opts.arch, &files, &opts.kernel_args, work.path())?;

    tracing::info!(
        step = "3/6",
        files = user_data.len(),
        "building the {} partition",
        oem::OEM_LABEL
    );
    let ud_bytes: u64 = user_data
        .iter()
        .map(|f| fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let oem_size = OEM_SIZE.max(round_mib(ud_bytes * 2 + 2 * MIB));
    let oem_fat = work.path().join("oem.fat");
    oem::build_fat(&user_data, oem_size, &oem_fat)?;

    tracing::info!(
        step = "4/6",
        "building the root and persistent file systems (mkfs.ext4 -d)"
    );
    let content = content_size(&root)?;
    let fixed = MIB + esp_size + oem_size + PERSISTENT_SIZE + MIB;
    let min_root = round_mib(content + content / 5 + 64 * MIB);
    let root_size = match opts.size {
        Some(total) => {
            let total = total / MIB * MIB;
            if total < fixed + min_root {
                return Err(ImageError::TooSmall {
                    requested: total,
                    needed: fixed + min_root,
                });
            }
            total - fixed
        }
        None => round_mib(min_root + ROOT_HEADROOM),
    };
    let persistent = work.path().join("persistent.ext4");
    make_file(&persistent, PERSISTENT_SIZE)?;
    run(
        "mkfs.ext4",
        "formatting the persistent partition",
        None,
        &[
            os("-q"),
            os("-F"),
            os("-L"),
            os(PERSISTENT_LABEL),
            persistent.as_os_str(),
        ],
    )?;
    let rootfs = work.path().join("root.ext4");
    make_file(&rootfs, root_size)?;
    run(
        "mkfs.ext4",
        "building the root file system from the root directory",
        fakeroot,
        &[
            os("-q"),
            os("-F"),
            os("-L"),
            os(ROOT_LABEL),
            // 64-bit + resize_inode: online growth on first boot. mke2fs's default reserve
            // (GDT blocks for 1024× growth; past that the kernel converts to meta_bg
            // online). Not `-E resize=2^32-1`: its 1024 reserved GDT blocks make one online
            // resize transaction bigger than the journal of a small root allows (jbd2
            // "wants too many credits", ENOSPC), so the root would never grow.
            os("-O"),
            os("64bit,resize_inode"),
            os("-d"),
            root.as_os_str(),
            rootfs.as_os_str(),
        ],
    )?;

    tracing::info!(step = "5/6", "writing the GPT and the partitions");
    let sizes = [esp_size, oem_size, PERSISTENT_SIZE, root_size];
    let disk_size = fixed + root_size;
    let raw = work.path().join("disk.raw");
    make_file(&raw, disk_size)?;
    write_table(&raw, &sfdisk_script(opts.arch, &sizes))?;
    let parts = oem::partitions(&raw)?;
    let images = [
        (&esp, "vfat"),
        (&oem_fat, "vfat"),
        (&persistent, "ext4"),
        (&rootfs, "ext4"),
    ];
    if parts.len() != images.len() {
        return Err(ImageError::Tool {
            tool: "sfdisk",
            step: "writing the partition table".into(),
            detail: format!("expected 4 partitions, found {}", parts.len()),
        });
    }
    let mut disk = OpenOptions::new()
        .write(true)
        .open(&raw)
        .map_err(io(&raw, "opening"))?;
    let mut summary_parts = Vec::new();
    for (p, (img, fs_type)) in parts.iter().zip(images) {
        copy_sparse(img, &mut disk, &raw, p.offset)?;
        summary_parts.push(PartitionSummary {
            number: p.number,
            name: p.name.clone(),
            filesystem: fs_type,
            offset: p.offset,
            size: p.length,
        });
        // Free the space of each part as soon as it is in the disk.
        let _ = fs::remove_file(img);
    }
    disk.sync_all().map_err(io(&raw, "fsync"))?;
    drop(disk);

    tracing::info!(step = "6/6", format = ?opts.format, out = %opts.out.display(), "writing the output");
    let final_tmp = match opts.format {
        Format::Raw => raw,
        Format::Qcow2 => {
            let q = work.path().join("disk.qcow2");
            run(
                "qemu-img",
                "converting to qcow2",
                None,
                &[
                    os("convert"),
                    os("-f"),
                    os("raw"),
                    os("-O"),
                    os("qcow2"),
                    raw.as_os_str(),
                    q.as_os_str(),
                ],
            )?;
            let _ = fs::remove_file(&raw);
            File::open(&q)
                .and_then(|f| f.sync_all())
                .map_err(io(&q, "fsync"))?;
            q
        }
    };
    fs::rename(&final_tmp, &opts.out)
        .map_err(io(&opts.out, "renaming the finished image into place"))?;
    if let Ok(d) = File::open(&parent) {
        let _ = d.sync_all();
    }
    let file_allocated = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&opts.out)
            .map(|m| m.blocks() * 512)
            .unwrap_or(0)
    };
    Ok(Summary {
        out: opts.out.clone(),
        arch: opts.arch,
        format: opts.format,
        disk_size,
        file_allocated,
        kernel: files.version,
        user_data: user_data
            .iter()
            .enumerate()
            .map(|(i, f)| oem::stored_name(i, f))
            .collect(),
        partitions: summary_parts,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Parse a size like `4G`, `512M`, `2GiB`, `1000000000` (bytes; K/M/G/T are powers of 1024).
// String error: a clap value parser; clap shows the text under the option's name.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 4G, 512M, 2GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}' (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Command-line arguments of `cairn-installer image`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CPU architecture of the image (must match the root file system).
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Root file system: a directory or a tarball from packaging/os-image/build-root.sh.
    #[arg(long, value_name = "DIR|TAR")]
    pub rootfs: PathBuf,
    /// User-data files (or directories of *.yaml) for the CAIRN_OEM partition, in merge
    /// order. Validated before anything is built.
    #[arg(long = "user-data", value_name = "FILE", required = true, num_args = 1..)]
    pub user_data: Vec<PathBuf>,
    /// Output image file (written atomically: it appears only when complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// raw (dd to a disk, or boot in a VM) or qcow2 (smaller; VMs).
    #[arg(long, value_enum, default_value_t = Format::Raw)]
    pub format: Format,
    /// Total disk size (e.g. 4G). Default: the content plus 256 MiB; the root partition grows
    /// to fill the real disk on first boot anyway.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub size: Option<u64>,
    /// Extra kernel command-line argument (repeatable), e.g. --kernel-arg quiet.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,
}

impl Args {
    pub fn options(&self) -> Options {
        Options {
            arch: self.arch,
            rootfs: self.rootfs.clone(),
            user_data: self.user_data.clone(),
            out: self.out.clone(),
            format: self.format,
            size: self.size,
            kernel_args: self.kernel_args.clone(),
        }
    }
}

/// Human summary of a built image.
pub fn describe(s: &Summary) -> String {
    let mut out = format!(
        "{}: {} {} image, disk {} MiB ({} MiB on the host's disk), kernel {}, built in {:.1}s\n",
        s.out.display(),
        s.arch.name(),
        match s.format {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        },
        s.disk_size / MIB,
        s.file_allocated.div_ceil(MIB),
        s.kernel,
        s.seconds
    );
    for p in &s.partitions {
        out.push_str(&format!(
            "  {} {:<17} {:<5} {:>6} MiB at {} MiB\n",
            p.number,
            p.name,
            p.filesystem,
            p.size / MIB,
            p.offset / MIB
        ));
    }
    out.push_str(&format!("  user-data: {}\n", s.user_data.join(", ")));
    out
}
