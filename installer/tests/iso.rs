//! `cairn-installer iso` and `iso::customize` without a VM (the boot is tests/tests/iso.rs):
//! from a stand-in root (fake kernel, one module, a stand-in systemd-boot) and a small GPT
//! image, the ISO has the El Torito EFI image, an appended EFI partition for USB boot, the
//! zstd image with a matching digest, the user-data and a CAIRN_OEM filesystem; invalid
//! user-data writes no ISO; customize replaces the user-data and keeps the rest.
//! Needs xorriso, zstd, sfdisk, dosfstools, mtools, tar, /bin/busybox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn_installer::image::Arch;
use cairn_installer::iso;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A root tarball with just what the ISO takes from it.
fn fake_root(dir: &Path) -> PathBuf {
    let r = dir.join("root");
    let m = r.join("usr/lib/modules/6.1.0-test/kernel/fs/isofs");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("isofs.ko"), b"not really a module").unwrap();
    std::fs::write(
        r.join("usr/lib/modules/6.1.0-test/modules.dep"),
        "kernel/fs/isofs/isofs.ko:\n",
    )
    .unwrap();
    std::fs::create_dir_all(r.join("boot")).unwrap();
    std::fs::write(r.join("boot/vmlinuz-6.1.0-test"), vec![0x4du8; 100_000]).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd/boot/efi")).unwrap();
    std::fs::write(
        r.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        b"MZ stand-in loader",
    )
    .unwrap();
    let tar = dir.join("root.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&r)
        .arg("."));
    tar
}

/// A 24 MiB GPT image with a CAIRN_OEM partition.
fn image(dir: &Path) -> PathBuf {
    let p = dir.join("disk.img");
    std::fs::File::create(&p)
        .unwrap()
        .set_len(24 << 20)
        .unwrap();
    let mut c = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&p)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(
            b"label: gpt\nstart=2048, size=8192, type=U, name=\"CAIRN_ESP\"\nsize=8192, type=L, name=\"CAIRN_OEM\"\ntype=L, name=\"CAIRN_ROOT\"\n",
        )
        .unwrap();
    assert!(c.wait().unwrap().success());
    p
}

fn options(dir: &Path, files: Vec<PathBuf>, out: &Path) -> iso::Options {
    // Any static executable will do for the structure: the live environment is not booted.
    iso::Options {
        arch: Arch::X86_64,
        rootfs: fake_root(dir),
        image: image(dir),
        user_data: files,
        out: out.to_path_buf(),
        installer: Some(PathBuf::from("/bin/busybox")),
        busybox: None,
        zstd_level: 3,
    }
}

fn extract(iso: &Path, path: &str, to: &Path) {
    run(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", path])
        .arg(to));
}

fn ls(iso: &Path, dir: &str) -> String {
    let out = run(Command::new("xorriso")
        .arg("-indev")
        .arg(iso)
        .args(["-lsl", dir]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_iso_holds_boot_images_the_compressed_image_and_the_user_data() {
    let dir = tempfile::tempdir().unwrap();
    let ud = dir.path().join("site.yaml");
    std::fs::write(&ud, "install:\n  device: /dev/vda\n  reboot: true\n").unwrap();
    let out = dir.path().join("install.iso");
    let opts = options(dir.path(), vec![ud.clone()], &out);
    let s = iso::build(&opts).unwrap();
    assert_eq!(s.kernel, "6.1.0-test");
    assert_eq!(s.bytes, std::fs::metadata(&out).unwrap().len());

    // Boot setup: an EFI El Torito entry and the appended EFI system partition (GPT).
    let report = run(Command::new("xorriso").arg("-indev").arg(&out).args([
        "-report_el_torito",
        "plain",
        "-report_system_area",
        "plain",
    ]));
    let report = String::from_utf8_lossy(&report.stdout).to_string()
        + &String::from_utf8_lossy(&report.stderr);
    assert!(report.contains("UEFI"), "no EFI boot entry:\n{report}");
    assert!(
        report
            .to_lowercase()
            .contains("28732ac11ff8d211ba4b00a0c93ec93b"),
        "no EFI system partition in the GPT:\n{report}"
    );

    // The image: zstd of the input, with its digest next to it.
    let x = dir.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    extract(&out, "/cairn/image.zst", &x.join("image.zst"));
    extract(&out, "/cairn/image.zst.sha256", &x.join("image.zst.sha256"));
    let back = run(Command::new("zstd")
        .args(["-d", "-c"])
        .arg(x.join("image.zst")));
    assert!(back.stdout == std::fs::read(&opts.image).unwrap());
    let sum = run(Command::new("sha256sum").arg(x.join("image.zst")));
    let side = std::fs::read_to_string(x.join("image.zst.sha256")).unwrap();
    assert_eq!(&side[..64], &String::from_utf8_lossy(&sum.stdout)[..64]);

    // The user-data, and a CAIRN_OEM filesystem holding it.
    assert!(ls(&out, "/cairn/user-data").contains("00-site.yaml"));
    extract(&out, "/cairn/oem.fat", &x.join("oem.fat"));
    let fat = x.join("oem.fat").display().to_string();
    let label = run(Command::new("mlabel").args(["-s", "-i", &fat, "::"]));
    assert!(String::from_utf8_lossy(&label.stdout).contains("CAIRN_OEM"));
    let body = run(Command::new("mtype").args(["-i", &fat, "::00-site.yaml"]));
    assert_eq!(body.stdout, std::fs::read(&ud).unwrap());

    // The EFI image carries the loader entry for the kernel and initrd.
    extract(&out, "/cairn/install.json", &x.join("install.json"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(x.join("install.json")).unwrap()).unwrap();
    assert_eq!(manifest["arch"], "x86_64");
}

#[test]
fn invalid_user_data_writes_no_iso() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    // (`reboot` and `poweroff` both true is a warning since Kairos's meaning is honoured:
    // the host reboots; a value that is not a boolean is an error.)
    std::fs::write(&bad, "install:\n  reboot: maybe\n").unwrap();
    let out = dir.path().join("install.iso");
    let err = iso::build(&options(dir.path(), vec![bad], &out)).unwrap_err();
    assert!(err.to_string().contains("bad.yaml:2:11"), "{err}");
    assert!(!out.exists());
}

#[test]
fn customize_replaces_the_user_data_and_keeps_image_and_boot_setup() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(&a, "install:\n  poweroff: true\n").unwrap();
    let out = dir.path().join("install.iso");
    iso::build(&options(dir.path(), vec![a], &out)).unwrap();
    let x = dir.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    extract(&out, "/cairn/image.zst", &x.join("before.zst"));

    // Invalid new user-data: refused, the ISO untouched.
    let before = std::fs::read(&out).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "stages:\n  bootz: []\n").unwrap();
    assert!(iso::customize(&out, &[bad], &out).is_err());
    assert!(std::fs::read(&out).unwrap() == before);

    let b = dir.path().join("site-042.yaml");
    std::fs::write(&b, "hostname: site-042\ninstall:\n  reboot: true\n").unwrap();
    iso::customize(&out, std::slice::from_ref(&b), &out).unwrap();
    let listing = ls(&out, "/cairn/user-data");
    assert!(listing.contains("00-site-042.yaml"), "{listing}");
    assert!(!listing.contains("a.yaml"), "{listing}");
    extract(&out, "/cairn/oem.fat", &x.join("oem.fat"));
    let fat = x.join("oem.fat").display().to_string();
    let body = run(Command::new("mtype").args(["-i", &fat, "::00-site-042.yaml"]));
    assert_eq!(body.stdout, std::fs::read(&b).unwrap());
    extract(&out, "/cairn/image.zst", &x.join("after.zst"));
    assert!(
        std::fs::read(x.join("before.zst")).unwrap() == std::fs::read(x.join("after.zst")).unwrap()
    );
    let report = run(Command::new("xorriso")
        .arg("-indev")
        .arg(&out)
        .args(["-report_el_torito", "plain"]));
    let report = String::from_utf8_lossy(&report.stdout).to_string()
        + &String::from_utf8_lossy(&report.stderr);
    assert!(report.contains("UEFI"), "boot setup lost:\n{report}");
}

#[test]
fn the_customize_command_accepts_an_install_iso() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(&a, "install:\n  poweroff: true\n").unwrap();
    let out = dir.path().join("install.iso");
    iso::build(&options(dir.path(), vec![a], &out)).unwrap();
    let b = dir.path().join("b.yaml");
    std::fs::write(&b, "hostname: site-7\n").unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_cairn-installer"))
        .arg("customize")
        .arg(&out)
        .arg("--user-data")
        .arg(&b));
    let listing = ls(&out, "/cairn/user-data");
    assert!(
        listing.contains("00-b.yaml") && !listing.contains("a.yaml"),
        "{listing}"
    );
}
