//! Which versions go together, and which pod networks a CNI can use: checked wherever a
//! profile is read (the agent's `validate` and `apply`, the hub's upload), before anything
//! is fetched or written.

use cairn_proto::profile::{Arch, CniType, Layer, Profile};

use crate::catalog::{resolve, Mirrors};
use crate::version::{kubernetes_minor, semver};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a profile, at a document path (`layers[2].cni.version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub severity: Severity,
    pub message: String,
}

/// The Kubernetes minors each CNI minor is tested with by its project (Calico's "Kubernetes
/// requirements", Cilium's "Kubernetes Compatibility" pages): (CNI major, minor, oldest
/// Kubernetes minor, newest Kubernetes minor). Older Kubernetes is refused; newer is
/// accepted with a warning (both projects say newer Kubernetes relies on its own backward
/// compatibility). A CNI minor missing here gets a warning.
pub const SUPPORT: &[(CniType, u32, u32, u32, u32)] = &[
    (CniType::Calico, 3, 27, 27, 29),
    (CniType::Calico, 3, 28, 27, 30),
    (CniType::Calico, 3, 29, 29, 32),
    (CniType::Calico, 3, 30, 30, 33),
    (CniType::Calico, 3, 31, 31, 35),
    (CniType::Cilium, 1, 15, 26, 29),
    (CniType::Cilium, 1, 16, 27, 30),
    (CniType::Cilium, 1, 17, 29, 32),
    (CniType::Cilium, 1, 18, 30, 33),
];

/// Every node gets a /24 of an IPv4 pod network (the default node CIDR mask of k3s, RKE2
/// and kube-controller-manager, and Flannel's subnet length): a longer prefix cannot hold
/// one node.
pub const NODE_MASK_V4: u8 = 24;

fn cni_name(t: CniType) -> &'static str {
    match t {
        CniType::Calico => "Calico",
        CniType::Cilium => "Cilium",
        CniType::Flannel => "Flannel",
    }
}

/// The compatibility and pack findings of a profile: a CNI version that does not support
/// the Kubernetes version (naming both), a pod network too small for a node, and a file
/// that cannot be verified (published without a checksum and not pinned).
pub fn check(profile: &Profile) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut k = None;
    let mut c = None;
    for (i, layer) in profile.layers.iter().enumerate() {
        match layer {
            Layer::Kubernetes(x) => k = Some((i, x)),
            Layer::Cni(x) => c = Some((i, x)),
            _ => {}
        }
    }
    let Some((ki, k)) = k else {
        return out;
    };
    if let Some((ci, c)) = c {
        let kube = kubernetes_minor(&k.version);
        let cni = semver(&c.version);
        if let (Some((kma, kmi)), Some((cma, cmi, _))) = (kube, cni) {
            let row = SUPPORT
                .iter()
                .find(|(t, ma, mi, _, _)| *t == c.cni && *ma == cma && *mi == cmi);
            let name = cni_name(c.cni);
            match row {
                Some((_, _, _, lo, hi)) if kma == 1 && kmi < *lo => out.push(Problem {
                    path: format!("layers[{ci}].cni.version"),
                    severity: Severity::Error,
                    message: format!(
                        "{name} {} does not support Kubernetes {kma}.{kmi} (the kubernetes layer's version {}): it supports Kubernetes 1.{lo} to 1.{hi}; choose a {name} release for 1.{kmi} or a newer Kubernetes",
                        c.version.trim(),
                        k.version.trim()
                    ),
                }),
                Some((_, _, _, _, hi)) if kma == 1 && kmi > *hi => out.push(Problem {
                    path: format!("layers[{ci}].cni.version"),
                    severity: Severity::Warning,
                    message: format!(
                        "{name} {} is tested with Kubernetes up to 1.{hi}; the kubernetes layer's version {} is Kubernetes {kma}.{kmi}",
                        c.version.trim(),
                        k.version.trim()
                    ),
                }),
                Some(_) => {}
                None if c.cni != CniType::Flannel => out.push(Problem {
                    path: format!("layers[{ci}].cni.version"),
                    severity: Severity::Warning,
                    message: format!(
                        "{name} {cma}.{cmi} is not in Cairn's compatibility table; whether it supports Kubernetes {} is not checked",
                        k.version.trim()
                    ),
                }),
                None => {}
            }
        }
        if let Some(cidr) = &c.pod_cidr {
            for part in cidr.split(',') {
                let part = part.trim();
                let Some((addr, len)) = part.split_once('/') else {
                    continue;
                };
                let (Ok(addr), Ok(len)) = (addr.parse::<std::net::IpAddr>(), len.parse::<u8>())
                else {
                    continue;
                };
                if addr.is_ipv4() && len > NODE_MASK_V4 {
                    out.push(Problem {
                        path: format!("layers[{ci}].cni.pod_cidr"),
                        severity: Severity::Error,
                        message: format!(
                            "the pod network {part} is smaller than one node's share (/{NODE_MASK_V4}): {} needs a /{NODE_MASK_V4} or larger",
                            cni_name(c.cni)
                        ),
                    });
                }
            }
        }
    }
    // Files that cannot be verified: reported once, for the arches the layer does not list
    // the file for itself. A profile that lists its own files for some architectures only
    // is meant for those: on the others an unverifiable file is a warning here (applying on
    // such a device is still refused, before anything is written).
    let cni = c.map(|(_, c)| c);
    let listed: Vec<Arch> = k
        .artifacts
        .iter()
        .chain(cni.iter().flat_map(|c| c.artifacts.iter()))
        .map(|a| a.arch)
        .collect();
    for arch in [Arch::Amd64, Arch::Arm64] {
        let elsewhere = !listed.is_empty() && !listed.contains(&arch);
        if let Err(problems) = resolve(k, cni, arch, &Mirrors::default()) {
            for p in problems {
                let (layer_index, rest) = match p.field.split_once('.') {
                    Some(("cni", rest)) => (c.map(|(i, _)| i).unwrap_or(ki), ("cni", rest)),
                    Some((_, rest)) => (ki, ("kubernetes", rest)),
                    None => (ki, ("kubernetes", "")),
                };
                let path = if rest.1.is_empty() {
                    format!("layers[{layer_index}].{}", rest.0)
                } else {
                    format!("layers[{layer_index}].{}.{}", rest.0, rest.1)
                };
                let finding = if elsewhere {
                    Problem {
                        path,
                        severity: Severity::Warning,
                        message: format!(
                            "{} (the profile lists files for {} only: it cannot be applied on {} devices)",
                            p.message,
                            listed_names(&listed),
                            arch.as_str()
                        ),
                    }
                } else {
                    Problem {
                        path,
                        severity: Severity::Error,
                        message: p.message,
                    }
                };
                if !out.contains(&finding) {
                    out.push(finding);
                }
            }
        }
    }
    out
}

fn listed_names(listed: &[Arch]) -> String {
    let mut names: Vec<&str> = listed.iter().map(|a| a.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(k: &str, cni: &str, cv: &str, cidr: &str) -> Profile {
        serde_json::from_value(serde_json::json!({
            "name": "p",
            "layers": [
                {"kubernetes": {"flavor": "k3s", "version": k}},
                {"cni": {"type": cni, "version": cv, "pod_cidr": cidr}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn an_unverifiable_file_is_an_error_only_for_the_arches_the_profile_is_for() {
        let mut v = serde_json::json!({
            "name": "p",
            "layers": [
                {"kubernetes": {"flavor": "kubeadm", "version": "v1.31.4"}},
                {"cni": {"type": "calico", "version": "v3.29.1", "pod_cidr": "10.244.0.0/16"}}
            ]
        });
        // No files listed: every arch is meant, the unpinned manifest is an error.
        let p = check(&serde_json::from_value(v.clone()).unwrap());
        assert!(p.iter().any(|p| p.severity == Severity::Error), "{p:?}");
        // The manifest listed (pinned) for amd64 only: arm64 is a warning naming the arch.
        v["layers"][1]["cni"]["artifacts"] = serde_json::json!([{
            "name": "tigera-operator", "arch": "amd64",
            "url": "https://example.org/tigera-operator.yaml",
            "sha256": "0".repeat(64)
        }]);
        let p = check(&serde_json::from_value(v).unwrap());
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].severity, Severity::Warning);
        assert!(
            p[0].message.contains("amd64 only") && p[0].message.contains("arm64"),
            "{p:?}"
        );
    }

    #[test]
    fn an_older_kubernetes_than_the_cni_supports_is_refused_naming_both() {
        let p = check(&profile("v1.28.9+k3s1", "cilium", "1.18.2", "10.42.0.0/16"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].severity, Severity::Error);
        assert_eq!(p[0].path, "layers[1].cni.version");
        assert!(p[0].message.contains("1.18.2"), "{p:?}");
        assert!(p[0].message.contains("v1.28.9+k3s1"), "{p:?}");

        let p = check(&profile(
            "v1.31.4+k3s1",
            "calico",
            "v3.27.3",
            "10.42.0.0/16",
        ));
        assert_eq!(p[0].severity, Severity::Warning, "{p:?}");
        assert!(check(&profile(
            "v1.31.4+k3s1",
            "calico",
            "v3.29.1",
            "10.42.0.0/16"
        ))
        .is_empty());
        let p = check(&profile("v1.31.4+k3s1", "cilium", "1.99.0", "10.42.0.0/16"));
        assert_eq!(p[0].severity, Severity::Warning, "{p:?}");
    }

    #[test]
    fn a_pod_network_smaller_than_a_node_is_refused() {
        let p = check(&profile(
            "v1.31.4+k3s1",
            "flannel",
            "v0.26.2",
            "10.42.0.0/25",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, "layers[1].cni.pod_cidr");
    }

    #[test]
    fn unpinned_manifests_are_refused_at_the_cni_layer() {
        let mut p = profile("v1.31.4", "calico", "v3.29.1", "10.244.0.0/16");
        if let Layer::Kubernetes(k) = &mut p.layers[0] {
            k.flavor = cairn_proto::profile::Flavor::Kubeadm;
        }
        let found = check(&p);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "layers[1].cni.sha256");
    }
}
