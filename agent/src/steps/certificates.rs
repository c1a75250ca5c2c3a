//! CA certificates into the distro trust store, rebuilt with the distro's own tool — only
//! when a certificate file actually changed.

use super::{converge_file, Changes, StepCx, StepError};
use crate::host::{Cmd, OsRelease};
use cairn_userdata::model::{AbsPath, CertSpec};

/// Where one distro family keeps local CA certificates and how it rebuilds its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStore {
    pub anchors_dir: &'static str,
    pub tool: &'static [&'static str],
    pub bundle: &'static str,
    /// `/etc/ca-certificates.conf`-style list of enabled defaults, if the family has one.
    pub defaults_conf: Option<&'static str>,
}

const DEBIAN: TrustStore = TrustStore {
    anchors_dir: "/usr/local/share/ca-certificates",
    tool: &["update-ca-certificates"],
    bundle: "/etc/ssl/certs/ca-certificates.crt",
    defaults_conf: Some("/etc/ca-certificates.conf"),
};
const ALPINE: TrustStore = TrustStore {
    anchors_dir: "/usr/local/share/ca-certificates",
    tool: &["update-ca-certificates"],
    bundle: "/etc/ssl/certs/ca-certificates.crt",
    defaults_conf: Some("/etc/ca-certificates.conf"),
};
const RHEL: TrustStore = TrustStore {
    anchors_dir: "/etc/pki/ca-trust/source/anchors",
    tool: &["update-ca-trust", "extract"],
    bundle: "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    defaults_conf: None,
};
const SUSE: TrustStore = TrustStore {
    anchors_dir: "/etc/pki/trust/anchors",
    tool: &["update-ca-certificates"],
    bundle: "/var/lib/ca-certificates/ca-bundle.pem",
    defaults_conf: None,
};

/// The trust store of the target's distro family.
pub fn trust_store_for(os: &OsRelease) -> Option<TrustStore> {
    for id in os.families() {
        match id {
            "debian" | "ubuntu" => return Some(DEBIAN),
            "alpine" => return Some(ALPINE),
            "rhel" | "fedora" | "centos" | "rocky" | "almalinux" | "amzn" | "ol" => {
                return Some(RHEL)
            }
            "suse" | "opensuse" | "sles" | "opensuse-leap" | "opensuse-tumbleweed" => {
                return Some(SUSE)
            }
            _ => {}
        }
    }
    None
}

const PREFIX: &str = "cairn-ca-";

pub fn apply(cx: &mut StepCx, spec: &CertSpec) -> Result<Changes, StepError> {
    let os = cx.host.os().clone();
    let store = trust_store_for(&os).ok_or_else(|| {
        StepError::msg(format!(
            "no known CA trust store for OS `{}` (supported: Debian/Ubuntu, RHEL family, SUSE, Alpine)",
            os.id
        ))
    })?;
    let mut changes = Vec::new();
    let mut wanted = Vec::new();
    for (i, cert) in spec.trusted.iter().enumerate() {
        let name = format!("{PREFIX}{}.crt", i + 1);
        let path =
            AbsPath::parse(&format!("{}/{name}", store.anchors_dir)).map_err(StepError::msg)?;
        let mut body = cert.value.trim().to_string();
        body.push('\n');
        if let Some(c) = converge_file(cx, &path, body.as_bytes(), 0o644, Some((0, 0)))? {
            changes.push(c);
        }
        wanted.push(name);
    }
    // Certificates Cairn added earlier that are no longer listed are removed.
    if let Some(entries) = cx.host.read_dir(store.anchors_dir)? {
        let mut stale: Vec<String> = entries
            .iter()
            .map(|e| e.to_string_lossy().into_owned())
            .filter(|n| n.starts_with(PREFIX) && !wanted.contains(n))
            .collect();
        stale.sort();
        for n in stale {
            changes.push(format!("removed {}/{n}", store.anchors_dir));
            if !cx.dry_run {
                cx.host.remove_file(&format!("{}/{n}", store.anchors_dir))?;
            }
        }
    }
    if spec.remove_defaults {
        changes.extend(disable_defaults(cx, &store)?);
    }
    if !changes.is_empty() {
        let tool = store.tool[0];
        if !cx.host.target_has(tool) {
            return Err(StepError::msg(format!(
                "the target has no `{tool}`; install the ca-certificates package first"
            )));
        }
        if !cx.dry_run {
            cx.host
                .check_in_target(Cmd::new(tool).args(store.tool[1..].iter().copied()))?;
        }
        changes.push(format!(
            "rebuilt {} with {}",
            store.bundle,
            store.tool.join(" ")
        ));
    }
    Ok(changes)
}

/// Distrust the distro's bundled CAs by deselecting every entry of ca-certificates.conf
/// (a `!` prefix), the mechanism Debian and Alpine document; reversible and idempotent.
fn disable_defaults(cx: &mut StepCx, store: &TrustStore) -> Result<Changes, StepError> {
    let Some(conf) = store.defaults_conf else {
        return Err(StepError::msg(
            "remove_defaults is supported on Debian, Ubuntu and Alpine trust stores only",
        ));
    };
    let path = AbsPath::parse(conf).map_err(StepError::msg)?;
    let current = cx.host.read_opt(path.as_str())?.unwrap_or_default();
    let text = String::from_utf8_lossy(&current);
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
            out.push_str(line);
        } else {
            out.push('!');
            out.push_str(t);
        }
        out.push('\n');
    }
    Ok(
        converge_file(cx, &path, out.as_bytes(), 0o644, Some((0, 0)))?
            .map(|_| format!("disabled the distro's default CAs in {conf}"))
            .into_iter()
            .collect(),
    )
}
