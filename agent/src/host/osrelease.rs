//! The target's identity: os-release fields and CPU architecture.

use std::collections::HashMap;

use super::Host;

#[derive(Debug, Clone, Default)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub pretty_name: String,
    pub version_id: String,
    /// `VERSION_CODENAME` (`noble`, `bookworm`), empty when absent.
    pub version_codename: String,
    /// `UBUNTU_CODENAME`: the Ubuntu release a derivative is built on.
    pub ubuntu_codename: String,
}

impl OsRelease {
    pub fn read(host: &Host) -> OsRelease {
        for p in ["/etc/os-release", "/usr/lib/os-release"] {
            if let Some(text) = host.read_text(p) {
                return OsRelease::parse(&text);
            }
        }
        OsRelease::default()
    }

    pub fn parse(text: &str) -> OsRelease {
        let mut map = HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().trim_matches('"').trim_matches('\'');
                map.insert(k.trim().to_string(), v.to_string());
            }
        }
        let get = |k: &str| map.get(k).cloned().unwrap_or_default();
        OsRelease {
            id: get("ID"),
            id_like: get("ID_LIKE")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            pretty_name: get("PRETTY_NAME"),
            version_id: get("VERSION_ID"),
            version_codename: get("VERSION_CODENAME"),
            ubuntu_codename: get("UBUNTU_CODENAME"),
        }
    }

    /// ID and ID_LIKE, most specific first.
    pub fn families(&self) -> Vec<&str> {
        let mut v = vec![self.id.as_str()];
        v.extend(self.id_like.iter().map(String::as_str));
        v
    }

    pub fn is_like(&self, id: &str) -> bool {
        self.families().contains(&id)
    }

    /// The Ubuntu release this system's packages come from: `VERSION_CODENAME` on Ubuntu
    /// itself (else `UBUNTU_CODENAME`), `UBUNTU_CODENAME` on a derivative that declares
    /// `ID_LIKE=ubuntu`; `None` on anything else.
    pub fn ubuntu_release(&self) -> Option<&str> {
        let name = if self.id == "ubuntu" {
            if self.version_codename.is_empty() {
                self.ubuntu_codename.as_str()
            } else {
                self.version_codename.as_str()
            }
        } else if self.is_like("ubuntu") {
            self.ubuntu_codename.as_str()
        } else {
            return None;
        };
        (!name.is_empty()).then_some(name)
    }
}

/// The target's architecture in Go/Kubernetes spelling (`amd64`, `arm64`), read from the
/// ELF header of its `/bin/sh` (so an arm64 root is recognised on an x86_64 builder), else
/// the running machine's.
pub fn target_arch(host: &Host) -> &'static str {
    if let Ok(Some(bytes)) = host.read_opt("/bin/sh") {
        if bytes.len() > 20 && &bytes[..4] == b"\x7fELF" {
            let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
            match machine {
                0x3e => return "amd64",
                0xb7 => return "arm64",
                _ => {}
            }
        }
    }
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "x86_64" => "amd64",
        other => other_arch(other),
    }
}

fn other_arch(a: &str) -> &'static str {
    match a {
        "arm" => "arm",
        "riscv64" => "riscv64",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian() {
        let os = OsRelease::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(os.id, "debian");
        assert_eq!(os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        let os = OsRelease::parse("ID=rocky\nID_LIKE=\"rhel centos fedora\"\n");
        assert!(os.is_like("fedora"));
    }
}
