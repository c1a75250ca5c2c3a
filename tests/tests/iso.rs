//! ISO tests (issue #5): the install ISO, attached as a USB stick would be (the first
//! virtio disk: the hybrid ISO's appended EFI partition boots), installs by itself onto the
//! blank second disk — the only suitable one, no `install.device` given — and powers off
//! (`install.poweroff`). That disk then boots on its own under UEFI and its agent registers
//! with a real hub on 127.0.0.1 and reports its boot stages. Once per architecture: x86_64
//! (q35 + OVMF) and aarch64 (`-M virt` + AAVMF; the live environment's busybox comes from
//! the arm64 root, so nothing beyond the root tarball is needed to build it on x86_64).
//!
//! Reuses the OS image recipe's cached root (tests/tests/os_image) and its hub and VM
//! helpers. Slow by nature (two TCG boots each, minutes); needs root, qemu-system-x86 and
//! -arm, OVMF/AAVMF, xorriso, zstd, dosfstools, mtools. Figures are printed with --nocapture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod os_image;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_installer::image::{self, Arch, Format};
use cairn_installer::{iso, oem};
use os_image::{Hub, Vm};

const SITE: &str = r#"#node-config
# Site user-data for the ISO test: where to install and what to do after, plus a file.
install:
  poweroff: true
stages:
  boot:
    - name: installed from the ISO
      files:
        - path: /etc/site/installed-by
          permissions: 0644
          content: "cairn-install-iso\n"
"#;

fn user_data(dir: &Path, hub: &Hub, site: &str) -> Vec<PathBuf> {
    let a = dir.join("10-site.yaml");
    std::fs::write(&a, SITE).unwrap();
    let b = dir.join("20-hub.yaml");
    std::fs::write(&b, format!("#node-config\n{}", hub.user_data_block(site))).unwrap();
    vec![a, b]
}

fn wait_exit(vm: &mut Vm, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if vm.exited().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    false
}

#[test]
fn x86_64_iso_installs_onto_a_blank_disk_which_then_boots_and_reports_to_the_hub() {
    iso_installs_and_boots(Arch::X86_64);
}

#[test]
fn aarch64_iso_installs_onto_a_blank_disk_which_then_boots_and_reports_to_the_hub() {
    iso_installs_and_boots(Arch::Aarch64);
}

fn iso_installs_and_boots(target_arch: Arch) {
    let arch = target_arch.name();
    let t_all = Instant::now();
    let root = os_image::root_tar(arch);
    let hub = Hub::start();
    let site = format!("iso-test-{arch}");
    let site = site.as_str();
    let work = tempfile::Builder::new()
        .prefix("iso-")
        .tempdir_in({
            let c = os_image::cache_dir();
            std::fs::create_dir_all(&c).unwrap();
            c
        })
        .unwrap();
    let ud = user_data(work.path(), &hub, site);

    let disk = work.path().join("cairn.img");
    let summary = image::build(&image::Options {
        arch: target_arch,
        rootfs: root.clone(),
        user_data: ud.clone(),
        out: disk.clone(),
        format: Format::Raw,
        size: None,
        kernel_args: vec![],
    })
    .unwrap();

    let iso_path = work.path().join("cairn-install.iso");
    let built = iso::build(&iso::Options {
        arch: target_arch,
        rootfs: root,
        image: disk.clone(),
        user_data: ud,
        out: iso_path.clone(),
        installer: Some(os_image::static_installer(arch)),
        // The root's own (busybox-static is in Cairn's OS recipe): for aarch64 on an x86_64
        // host, the host's /bin/busybox would be refused.
        busybox: None,
        zstd_level: 3,
    })
    .unwrap();
    // The image on the ISO is not needed any more; the ISO carries it.
    std::fs::remove_file(&disk).unwrap();

    // A blank target, 1 GiB larger than the image.
    let target = work.path().join("target.raw");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(summary.disk_size + (1 << 30))
        .unwrap();

    // 1. Boot the ISO as a USB stick; it installs and powers off by itself.
    let mut vm = Vm::boot(arch, &iso_path, &[&target]);
    if !wait_exit(&mut vm, Duration::from_secs(1500)) {
        panic!(
            "the install ISO did not power off in time\n--- serial (tail) ---\n{}",
            vm.tail(8000)
        );
    }
    let install_secs = vm.started.elapsed().as_secs_f64();
    let log = vm.tail(200_000);
    assert!(
        log.contains("cairn-install: done (PowerOff)"),
        "the live installer did not finish:\n{}",
        vm.tail(8000)
    );
    assert!(
        log.contains("installing onto /dev/vdb"),
        "{}",
        vm.tail(8000)
    );
    drop(vm);

    // The target now has the layout, and CAIRN_OEM holds the ISO's user-data.
    let part = oem::find_partition(&target).unwrap();
    let spec = format!("{}@@{}", target.display(), part.offset);
    let listing = std::process::Command::new("mdir")
        .args(["-b", "-i", &spec, "::"])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        names.contains("10-site.yaml") && names.contains("20-hub.yaml"),
        "CAIRN_OEM on the installed disk: {names}"
    );

    // 2. The installed disk boots alone and reports to the hub.
    let mut vm = Vm::boot(arch, &target, &[]);
    let fail = |vm: &Vm, what: &str| -> ! {
        panic!(
            "{what}\n--- hub log ---\n{}\n--- serial console (tail) ---\n{}",
            hub.log.lock().unwrap(),
            vm.tail(12000)
        )
    };
    let host_id = loop {
        if let Some(h) = hub.hosts().iter().find(|h| h.to_string().contains(site)) {
            break h["id"].as_str().unwrap().to_string();
        }
        if vm.started.elapsed() > Duration::from_secs(900) {
            fail(
                &vm,
                "the installed host did not register with the hub in time",
            );
        }
        if vm.exited().is_some() {
            fail(&vm, "the VM stopped");
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let registered_secs = vm.started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let events = hub.events(&host_id);
        let finished = |stage: &str| {
            events
                .iter()
                .any(|e| e["kind"] == "stage_finished" && e["stage"] == stage)
        };
        if finished("boot") {
            let failed: Vec<_> = events
                .iter()
                .filter(|e| e["kind"] == "step_failed" || e["kind"] == "error")
                .collect();
            if !failed.is_empty() {
                fail(&vm, &format!("failed steps reported: {failed:?}"));
            }
            break;
        }
        if Instant::now() > deadline {
            fail(&vm, "no stage_finished event for the boot stage at the hub");
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    vm.shutdown();

    eprintln!(
        "ISO figures {arch}: ISO {:.1} MiB (image {:.1} MiB → {:.1} MiB zstd -3), ISO build {:.0} s, \
         boot + install + power-off {:.0} s (TCG), installed disk boot-to-registered {:.0} s, \
         whole test {:.0} s",
        built.bytes as f64 / 1048576.0,
        built.image_bytes as f64 / 1048576.0,
        built.compressed_image_bytes as f64 / 1048576.0,
        built.seconds,
        install_secs,
        registered_secs,
        t_all.elapsed().as_secs_f64()
    );
}
