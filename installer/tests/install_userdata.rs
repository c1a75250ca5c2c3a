//! The `install:` user-data section as the install ISO's live environment reads it: device,
//! reboot, poweroff (both true: a reboot, with a warning); a relative or non-/dev path is an
//! error with its line;
//! Kairos's other install keys are accepted; a later file's block wins.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn load(texts: &[&str]) -> (cairn_userdata::load::Loaded, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = dir.path().join(format!("{i:02}.yaml"));
            std::fs::write(&p, t).unwrap();
            p
        })
        .collect();
    (cairn_userdata::load::load(&files, false).unwrap(), dir)
}

fn errors(l: &cairn_userdata::load::Loaded) -> Vec<String> {
    l.diags
        .sorted()
        .iter()
        .filter(|d| d.to_string().contains("error"))
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn device_and_poweroff_are_read() {
    let (l, _d) = load(&["#cloud-config\ninstall:\n  device: /dev/disk/by-id/virtio-target\n  poweroff: true\n  grub_options: {}\n"]);
    assert!(!l.diags.has_errors(), "{:?}", errors(&l));
    let i = l.config.install.unwrap();
    assert_eq!(i.device.as_deref(), Some("/dev/disk/by-id/virtio-target"));
    assert!(i.poweroff && !i.reboot);
}

#[test]
fn auto_or_absent_device_means_the_only_suitable_disk() {
    let (l, _d) = load(&["install:\n  device: auto\n  reboot: yes\n"]);
    assert!(!l.diags.has_errors(), "{:?}", errors(&l));
    let i = l.config.install.unwrap();
    assert_eq!(i.device, None);
    assert!(i.reboot);
}

#[test]
fn reboot_and_poweroff_together_reboot_as_kairos_does_with_a_warning() {
    let (l, _d) = load(&["install:\n  device: /dev/sda\n  reboot: true\n  poweroff: true\n"]);
    assert!(!l.diags.has_errors(), "{:?}", errors(&l));
    let warnings: Vec<String> = l.diags.warnings().map(|d| d.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("00.yaml:4") && w.contains("both true") && w.contains("reboots")),
        "{warnings:?}"
    );
    let i = l.config.install.unwrap();
    assert!(i.reboot && !i.poweroff);
}

#[test]
fn bad_device_paths_are_errors() {
    for bad in ["sda", "/tmp/disk", "/dev/../etc/passwd", "/dev/"] {
        let (l, _d) = load(&[&format!("install:\n  device: {bad:?}\n")]);
        let errs = errors(&l);
        assert!(
            errs.iter()
                .any(|e| e.contains("00.yaml:2") && e.contains("install device")),
            "{bad}: {errs:?}"
        );
    }
}

#[test]
fn a_typo_is_reported_and_a_later_file_wins() {
    let (l, _d) = load(&[
        "install:\n  device: /dev/sda\n  reboot: true\n",
        "install:\n  device: /dev/vdb\n  powerof: true\n",
    ]);
    let all: Vec<String> = l.diags.sorted().iter().map(|d| d.to_string()).collect();
    assert!(
        all.iter()
            .any(|d| d.contains("powerof") && d.contains("poweroff")),
        "{all:?}"
    );
    let i = l.config.install.unwrap();
    assert_eq!(i.device.as_deref(), Some("/dev/vdb"));
    assert!(!i.reboot);
}
