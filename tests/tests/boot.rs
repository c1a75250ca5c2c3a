//! VM boot tests of the OS image (issue #5): build the recipe's root for an arch, turn it
//! into a disk with `cairn-installer image` and example user-data (a user, a file, a CA
//! certificate, a sysctl) plus this hub's address, boot it under UEFI in QEMU (software
//! emulation) and check, independently:
//!   - from the hub (a real `cairn-hub` on 127.0.0.1, reached by the guest as 10.0.2.2):
//!     the host registered and reported its boot stages;
//!   - from the serial console (root autologin, test images only): the user, the file, the
//!     CA and the sysctl are really there, /oem holds the user-data, and the root file
//!     system grew on first boot to fill the disk, which is 3 GiB bigger than the image
//!     (so its backup GPT header is mid-disk, as after `dd` to a bigger stick).
//!
//! Each image boots once; one test per arch does all the assertions. Slow by nature
//! (minutes); they need root (mmdebstrap), qemu-system-*, OVMF/AAVMF: see
//! scripts/install-test-deps.sh. Figures are printed with --nocapture.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod os_image;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_installer::image::{self, Arch, Format, Options};
use os_image::{Hub, Vm};

const SITE_STAGES: &str = r#"#node-config
# Example site user-data: an operator account, a file, a kernel setting.
stages:
  initramfs:
    - name: operator account
      users:
        alice:
          groups: [adm]
          shell: /bin/bash
          gecos: Site Operator
  boot:
    - name: site role and kernel settings
      files:
        - path: /etc/site/role
          permissions: 0644
          content: "edge-node-under-test\n"
      sysctl:
        vm.swappiness: "13"
"#;

/// A throwaway CA certificate (PEM) for the `certificates` step.
fn site_ca() -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "Cairn Site Test Root");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.self_signed(&key).unwrap().pem()
}

/// The user-data files, and a line of the site CA's base64 body (to find it in the bundle).
fn user_data(dir: &Path, hub: &Hub, site: &str) -> (Vec<std::path::PathBuf>, String) {
    let stages = dir.join("10-site.yaml");
    let mut text = SITE_STAGES.to_string();
    text.push_str("    - name: site CA\n      certificates:\n        - |\n");
    let ca = site_ca();
    let ca_line = ca.lines().nth(2).unwrap().to_string();
    for l in ca.lines() {
        text.push_str(&format!("          {l}\n"));
    }
    std::fs::write(&stages, text).unwrap();
    let hub_file = dir.join("20-hub.yaml");
    std::fs::write(
        &hub_file,
        format!("#node-config\n{}", hub.user_data_block(site)),
    )
    .unwrap();
    (vec![stages, hub_file], ca_line)
}

/// Everything about one boot; `console` adds the serial-console checks.
fn boot_and_check(arch: &str, registered_within: Duration, console: bool) {
    let t_all = Instant::now();
    let root = os_image::root_tar(arch);
    let hub = Hub::start();
    let site = format!("boot-test-{arch}");
    let work = tempfile::Builder::new()
        .prefix("boot-")
        .tempdir_in({
            let c = os_image::cache_dir();
            std::fs::create_dir_all(&c).unwrap();
            c
        })
        .unwrap();
    let (ud, ca_line) = user_data(work.path(), &hub, &site);

    let disk = work.path().join(format!("cairn-{arch}.img"));
    let t_build = Instant::now();
    let summary = image::build(&Options {
        arch: if arch == "x86_64" {
            Arch::X86_64
        } else {
            Arch::Aarch64
        },
        rootfs: root.clone(),
        user_data: ud,
        out: disk.clone(),
        format: Format::Raw,
        size: None,
        kernel_args: vec![],
    })
    .unwrap();
    let build_secs = t_build.elapsed().as_secs_f64();
    // A qcow2 of the same disk, for the size figure (what one would ship).
    let qcow = work.path().join("size.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-c", "-O", "qcow2"])
        .arg(&disk)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());
    let qcow_size = std::fs::metadata(&qcow).unwrap().len();
    let _ = std::fs::remove_file(&qcow);
    // The image on a bigger disk, as after `dd` to a USB stick or a resized VM disk: the
    // backup GPT header is no longer at the end. The root must still grow to the end.
    let grown = summary.disk_size + (3 << 30);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(grown)
        .unwrap();

    let mut vm = Vm::boot(arch, &disk, &[]);
    let fail = |vm: &Vm, what: &str| -> ! {
        panic!(
            "{arch}: {what}\n--- hub log ---\n{}\n--- serial console (tail) ---\n{}",
            hub.log.lock().unwrap(),
            vm.tail(12000)
        )
    };

    // 1. Registered with the hub.
    let host_id = loop {
        let hosts = hub.hosts();
        if let Some(h) = hosts.iter().find(|h| h.to_string().contains(&site)) {
            break h["id"].as_str().unwrap().to_string();
        }
        if vm.started.elapsed() > registered_within {
            fail(&vm, "the host did not register with the hub in time");
        }
        if vm.exited().is_some() {
            fail(&vm, "the VM stopped");
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let registered_secs = vm.started.elapsed().as_secs_f64();

    // 2. Its boot stages reported as applied (events in the hub's store).
    let stages_deadline = Instant::now() + Duration::from_secs(300);
    let events = loop {
        let events = hub.events(&host_id);
        let finished = |stage: &str| {
            events
                .iter()
                .any(|e| e["kind"] == "stage_finished" && e["stage"] == stage)
        };
        if finished("initramfs") && finished("boot") {
            break events;
        }
        if Instant::now() > stages_deadline {
            let kinds: Vec<String> = events
                .iter()
                .map(|e| format!("{} {} {}", e["kind"], e["stage"], e["step"]))
                .collect();
            fail(
                &vm,
                &format!(
                    "the hub has no stage_finished events for initramfs and boot; it has:\n{}",
                    kinds.join("\n")
                ),
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    let failed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "step_failed" || e["kind"] == "error")
        .collect();
    if !failed.is_empty() {
        fail(&vm, &format!("failed steps reported: {failed:?}"));
    }
    let stages_secs = vm.started.elapsed().as_secs_f64();

    // 3. From the console, independent of the agent's own report.
    if console {
        let script = "getent passwd alice; cat /etc/site/role; sysctl -n vm.swappiness; \
                 echo CAFILE $(cat /usr/local/share/ca-certificates/cairn-ca-*.crt | grep -c -F CALINE); \
                 echo CABUNDLE $(grep -c -F CALINE /etc/ssl/certs/ca-certificates.crt); \
                 ls /oem; findmnt -n -o SOURCE /oem; \
                 echo PART $(lsblk -b -n -o SIZE /dev/disk/by-label/CAIRN_ROOT); \
                 echo FSBLOCKS $(tune2fs -l /dev/disk/by-label/CAIRN_ROOT | sed -n 's/^Block count: *//p'); \
                 echo DISK $(lsblk -b -d -n -o SIZE /dev/vda); \
                 systemctl is-active cairn-agent; \
                 journalctl -b --no-pager -o cat -u cairn-gpt-backup-to-end -u systemd-repart \
                   -u cairn-growfs-root | tail -n 12; \
                 dmesg | grep -i -E 'ext4|resize|warn' | tail -n 12"
            .replace("CALINE", &ca_line);
        let out = vm
            .shell(&script, Duration::from_secs(300))
            .unwrap_or_else(|| fail(&vm, "no answer from the root shell on the serial console"));
        let check = |cond: bool, what: &str| {
            if !cond {
                fail(
                    &vm,
                    &format!("console check failed: {what}\n--- output ---\n{out}"),
                );
            }
        };
        check(
            out.contains("alice:x:") && out.contains(":Site Operator:/home/alice:/bin/bash"),
            "user alice",
        );
        check(out.contains("edge-node-under-test"), "/etc/site/role");
        check(out.lines().any(|l| l.trim() == "13"), "vm.swappiness = 13");
        check(
            out.contains("00-10-site.yaml") && out.contains("01-20-hub.yaml"),
            "/oem files",
        );
        check(
            out.contains("LABEL=CAIRN_OEM") || out.contains("/dev/vda2"),
            "/oem mount",
        );
        check(
            out.lines().any(|l| l.trim() == "active"),
            "cairn-agent active",
        );
        let num = |tag: &str| -> u64 {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(tag))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        check(
            num("CAFILE ") == 1,
            "site CA in /usr/local/share/ca-certificates",
        );
        check(num("CABUNDLE ") == 1, "site CA in the rebuilt bundle");
        let (part, fs_blocks, disk_size) = (num("PART "), num("FSBLOCKS "), num("DISK "));
        check(disk_size == grown, "disk size seen by the guest");
        // Root is the last partition and fills the disk (up to the backup GPT), and the
        // file system spans the whole partition (systemd-repart + systemd-growfs ran).
        let root_part = summary.partitions.last().unwrap();
        check(
            root_part.offset + part + (1 << 20) >= disk_size && part >= root_part.size,
            &format!(
                "root partition fills the disk ({part} bytes at {})",
                root_part.offset
            ),
        );
        check(
            fs_blocks * 4096 == part,
            &format!("root file system fills its partition ({fs_blocks} blocks, {part} bytes)"),
        );
    }
    vm.shutdown();

    eprintln!(
        "FIGURES {arch}: image {} MiB virtual, {} MiB allocated raw, {} MiB qcow2 (compressed); \
         image build {build_secs:.0}s; boot to registered {registered_secs:.0}s, to boot stages \
         reported {stages_secs:.0}s; whole test {:.0}s",
        summary.disk_size >> 20,
        summary.file_allocated >> 20,
        qcow_size >> 20,
        t_all.elapsed().as_secs_f64()
    );
}

#[test]
fn x86_64_image_boots_registers_and_applies_user_data() {
    boot_and_check("x86_64", Duration::from_secs(900), true);
}

#[test]
fn aarch64_image_boots_registers_and_applies_user_data() {
    boot_and_check("aarch64", Duration::from_secs(1200), true);
}
