//! What this machine is made of, for registration and heartbeats.
//!
//! CPU, memory, network interfaces and the kernel come from `sysinfo`; the OS fields from
//! `/etc/os-release` (ID, VERSION_ID, PRETTY_NAME, as the protocol defines them). Disks come from
//! `/sys/block`: sysinfo lists mounted file systems (`/dev/sda1` and its free space), while
//! the hub wants whole disks with their kernel name, size and model.

use std::path::Path;

use crate::host::{Host, OsRelease};
use cairn_proto::protocol::{Cpu, Disk, Inventory, Nic, Os};
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

/// Debian/Kubernetes spelling of the machine architecture.
pub fn arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "arm" => "arm".into(),
        other => other.into(),
    }
}

pub fn gather() -> Inventory {
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing()),
    );
    let cpu = Cpu {
        model: sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default(),
        cores: sys.cpus().len() as u32,
    };
    let networks = Networks::new_with_refreshed_list();
    let mut nics: Vec<Nic> = networks
        .iter()
        .filter(|(name, _)| name.as_str() != "lo")
        .map(|(name, data)| {
            let mac = data.mac_address();
            Nic {
                name: name.clone(),
                mac: if mac.is_unspecified() {
                    String::new()
                } else {
                    mac.to_string()
                },
                addresses: data
                    .ip_networks()
                    .iter()
                    .map(|n| format!("{}/{}", n.addr, n.prefix))
                    .collect(),
            }
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    // os-release of the running system, as the protocol asks (sysinfo's names differ).
    let os = OsRelease::read(&Host::system("/"));
    for n in &mut nics {
        n.addresses.sort();
    }
    Inventory {
        cpu,
        memory_bytes: sys.total_memory(),
        disks: disks(Path::new("/sys/block")),
        nics,
        os: Os {
            id: os.id,
            version: os.version_id,
            pretty_name: os.pretty_name,
            kernel: System::kernel_version().unwrap_or_default(),
        },
        arch: arch(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Whole disks: `/sys/block/*` less loop, ram, zram and device-mapper devices.
fn disks(sys_block: &Path) -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<Disk> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if ["loop", "ram", "zram", "dm-", "sr", "fd", "nbd"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                return None;
            }
            let dir = e.path();
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let sectors: u64 = read("size").parse().unwrap_or(0);
            Some(Disk {
                name,
                size_bytes: sectors.saturating_mul(512),
                model: read("device/model"),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_describes_this_machine() {
        let inv = gather();
        assert!(inv.cpu.cores >= 1);
        assert!(inv.memory_bytes > 0);
        assert!(inv.arch == "amd64" || inv.arch == "arm64", "{}", inv.arch);
        assert!(!inv.os.kernel.is_empty());
        assert!(
            !inv.os.id.is_empty() && !inv.os.pretty_name.is_empty(),
            "{:?}",
            inv.os
        );
        assert!(inv.nics.iter().all(|n| n.name != "lo"));
    }
}
