//! `cairn-installer image` and `customize` on a small synthetic root (fake kernel, initrd
//! and boot loader files): the GPT layout, each file system's label and content, qcow2
//! output, atomic output and refusals. The real Debian root is booted in tests/tests/boot.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_installer::image::{self, Arch, Format, Options};
use cairn_installer::{customize, oem};

const SITE: &str = "#cloud-config\nhostname: edge-7\n";
const OTHER: &str = "#cloud-config\nhostname: edge-8\n";

fn fake_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in ["boot", "usr/lib/systemd/boot/efi", "etc", "usr/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("boot/vmlinuz-6.1.0-9-amd64"), b"old kernel").unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-9-amd64"), b"old initrd").unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-27-amd64"), b"KERNEL-27").unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-27-amd64"), b"INITRD-27").unwrap();
    std::fs::write(
        root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        b"MZ-loader",
    )
    .unwrap();
    std::fs::write(root.join("etc/hostname"), "cairn\n").unwrap();
    std::fs::write(root.join("usr/bin/cairn-agent"), vec![7u8; 3 << 20]).unwrap();
    root
}

fn user_data(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn opts(rootfs: PathBuf, ud: Vec<PathBuf>, out: PathBuf) -> Options {
    Options {
        arch: Arch::X86_64,
        rootfs,
        user_data: ud,
        out,
        format: Format::Raw,
        size: None,
        kernel_args: vec!["quiet".into()],
    }
}

/// Extract partition `p` of `disk` into its own file.
fn extract(disk: &Path, p: &oem::Partition, out: &Path) {
    let data = std::fs::read(disk).unwrap();
    std::fs::write(
        out,
        &data[p.offset as usize..(p.offset + p.length) as usize],
    )
    .unwrap();
}

fn mtype(fat: &Path, file: &str) -> String {
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(fat)
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "mtype {file}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn debugfs_cat(ext4: &Path, file: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(ext4)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blkid(dev: &Path, tag: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", tag])
        .arg(dev)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn raw_image_has_the_documented_layout_and_content() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_root(tmp.path());
    let ud = user_data(tmp.path(), "site.yaml", SITE);
    let out = tmp.path().join("edge.img");
    let s = image::build(&opts(root, vec![ud], out.clone())).unwrap();
    assert_eq!(s.kernel, "6.1.0-27-amd64", "newest kernel picked");
    assert_eq!(s.user_data, ["00-site.yaml"]);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), s.disk_size);
    // Nothing left behind but the image (work directory removed).
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let parts = oem::partitions(&out).unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["CAIRN_ESP", "CAIRN_OEM", "CAIRN_PERSISTENT", "CAIRN_ROOT"]
    );
    // 1 MiB aligned, in order, root last (it grows into the end of the disk).
    for w in parts.windows(2) {
        assert_eq!(w[0].offset + w[0].length, w[1].offset);
    }
    for p in &parts {
        assert_eq!(p.offset % (1 << 20), 0, "{p:?}");
    }
    let last = parts.last().unwrap();
    assert!(last.offset + last.length + 33 * 512 <= s.disk_size);
    assert!(s.disk_size - (last.offset + last.length) <= 1 << 20);

    // Partition types, from sfdisk's own reading of the table.
    let dump = Command::new("sfdisk")
        .arg("--dump")
        .arg(&out)
        .output()
        .unwrap();
    let dump = String::from_utf8(dump.stdout).unwrap();
    assert!(
        dump.contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "{dump}"
    );
    assert!(
        dump.contains("type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        "{dump}"
    );

    // ESP: systemd-boot as the removable-media loader, the kernel, the entry.
    let esp = tmp.path().join("esp.fat");
    extract(&out, &parts[0], &esp);
    assert_eq!(blkid(&esp, "LABEL"), "CAIRN_ESP");
    assert_eq!(mtype(&esp, "::/EFI/BOOT/BOOTX64.EFI"), "MZ-loader");
    assert_eq!(mtype(&esp, "::/cairn/vmlinuz"), "KERNEL-27");
    assert_eq!(mtype(&esp, "::/cairn/initrd.img"), "INITRD-27");
    let entry = mtype(&esp, "::/loader/entries/cairn.conf");
    assert!(
        entry.contains("options root=LABEL=CAIRN_ROOT rw console=tty0 console=ttyS0,115200 quiet"),
        "{entry}"
    );
    assert!(mtype(&esp, "::/loader/loader.conf").contains("default cairn.conf"));

    // OEM: FAT labelled CAIRN_OEM with the user-data.
    assert_eq!(oem::volume_label(&out).unwrap(), "CAIRN_OEM");
    let files = oem::read_user_data(&out).unwrap();
    assert_eq!(
        files,
        [("00-site.yaml".to_string(), SITE.as_bytes().to_vec())]
    );

    // Persistent and root: ext4 with their labels; root holds the root's files.
    let persistent = tmp.path().join("persistent.ext4");
    extract(&out, &parts[2], &persistent);
    assert_eq!(blkid(&persistent, "LABEL"), "CAIRN_PERSISTENT");
    assert_eq!(blkid(&persistent, "TYPE"), "ext4");
    let rootfs = tmp.path().join("root.ext4");
    extract(&out, &parts[3], &rootfs);
    assert_eq!(blkid(&rootfs, "LABEL"), "CAIRN_ROOT");
    assert_eq!(debugfs_cat(&rootfs, "/etc/hostname"), "cairn\n");
    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{fsck:?}");
}

#[test]
fn qcow2_output_and_customize_replace_the_user_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_root(tmp.path());
    let a = user_data(tmp.path(), "a.yaml", SITE);
    let out = tmp.path().join("edge.qcow2");
    let mut o = opts(root, vec![a], out.clone());
    o.format = Format::Qcow2;
    o.size = Some(512 << 20);
    let s = image::build(&o).unwrap();
    assert_eq!(s.disk_size, 512 << 20);
    assert_eq!(customize::detect(&out).unwrap(), customize::Kind::Qcow2);

    let b = user_data(tmp.path(), "b.yaml", OTHER);
    let r = customize::customize(&out, &[b]).unwrap();
    assert_eq!(r.kind, customize::Kind::Qcow2);
    let raw = tmp.path().join("check.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&out)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 512 << 20);
    let files = oem::read_user_data(&raw).unwrap();
    assert_eq!(
        files,
        [("00-b.yaml".to_string(), OTHER.as_bytes().to_vec())]
    );
}

#[test]
fn customize_a_raw_image_changes_only_the_oem_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_root(tmp.path());
    let a = user_data(tmp.path(), "a.yaml", SITE);
    let out = tmp.path().join("edge.img");
    image::build(&opts(root, vec![a], out.clone())).unwrap();
    let before = std::fs::read(&out).unwrap();
    let b = user_data(tmp.path(), "b.yaml", OTHER);
    let c = user_data(tmp.path(), "c.yaml", SITE);
    let r = customize::customize(&out, &[b, c]).unwrap();
    assert_eq!(r.kind, customize::Kind::Raw);
    let p = r.partition.unwrap();
    let after = std::fs::read(&out).unwrap();
    let (s, e) = (p.offset as usize, (p.offset + p.length) as usize);
    assert_eq!(before[..s], after[..s]);
    assert_eq!(before[e..], after[e..]);
    let names: Vec<String> = oem::read_user_data(&out)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["00-b.yaml", "01-c.yaml"]);

    // Invalid user-data: refused, image unchanged.
    let bad = user_data(tmp.path(), "bad.yaml", "#node-config\nstages:\n  bot: []\n");
    let err = customize::customize(&out, &[bad]).unwrap_err().to_string();
    assert!(err.contains("bad.yaml"), "{err}");
    assert_eq!(after, std::fs::read(&out).unwrap());
}

#[test]
fn refusals_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fake_root(tmp.path());
    let out = tmp.path().join("edge.img");

    // Invalid user-data: the error names the file and nothing is created.
    let bad = user_data(tmp.path(), "bad.yaml", "#node-config\nstages:\n  bot: []\n");
    let err = image::build(&opts(root.clone(), vec![bad], out.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.yaml") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!out.exists());

    // --size too small.
    let ud = user_data(tmp.path(), "site.yaml", SITE);
    let mut o = opts(root.clone(), vec![ud.clone()], out.clone());
    o.size = Some(64 << 20);
    let err = image::build(&o).unwrap_err().to_string();
    assert!(err.contains("too small"), "{err}");
    assert!(!out.exists());

    // A root without a kernel.
    std::fs::remove_file(root.join("boot/vmlinuz-6.1.0-27-amd64")).unwrap();
    std::fs::remove_file(root.join("boot/vmlinuz-6.1.0-9-amd64")).unwrap();
    let err = image::build(&opts(root.clone(), vec![ud.clone()], out.clone()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no kernel"), "{err}");
    assert!(!out.exists());

    // An aarch64 image from an x86_64 root: no aa64 loader.
    std::fs::write(root.join("boot/vmlinuz-6.1.0-27-amd64"), b"K").unwrap();
    let mut o = opts(root, vec![ud], out.clone());
    o.arch = Arch::Aarch64;
    let err = image::build(&o).unwrap_err().to_string();
    assert!(err.contains("systemd-bootaa64.efi"), "{err}");
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn sizes_parse() {
    assert_eq!(image::parse_size("4G").unwrap(), 4 << 30);
    assert_eq!(image::parse_size("512MiB").unwrap(), 512 << 20);
    assert_eq!(image::parse_size("1000").unwrap(), 1000);
    assert!(image::parse_size("4X").is_err());
    assert!(image::parse_size("big").is_err());
}
