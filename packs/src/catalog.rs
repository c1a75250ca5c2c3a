//! The catalog of upstream packs: where each file comes from and how it is verified.
//!
//! | pack | files (per arch) | verified by |
//! |---|---|---|
//! | `kubernetes/k3s` | `k3s` (amd64), `k3s-arm64` | `sha256sum-ARCH.txt` of the release (lines) |
//! | `kubernetes/rke2` | `rke2.linux-ARCH.tar.gz` | `sha256sum-ARCH.txt` of the release (lines) |
//! | `kubernetes/kubeadm` | dl.k8s.io `kubeadm`, `kubelet`, `kubectl` | `<file>.sha256` (digest only) |
//! | | containerd `containerd-V-linux-ARCH.tar.gz` | `<file>.sha256sum` (lines) |
//! | | runc `runc.ARCH` | `runc.sha256sum` of the release (lines) |
//! | | CNI plugins `cni-plugins-linux-ARCH-vV.tgz` | `<file>.sha256` |
//! | | crictl `crictl-vV-linux-ARCH.tar.gz` | `<file>.sha256` |
//! | `cni/calico` (kubeadm) | `tigera-operator.yaml` of the release tag | pinned: no checksum published |
//! | `cni/cilium` (kubeadm) | chart `cilium-V.tgz`; Helm `helm-vV-linux-ARCH.tar.gz` | chart pinned; Helm `<file>.sha256sum` |
//! | `cni/flannel` | nothing to fetch: the manifest is rendered, k3s/RKE2 bundle it | — |
//!
//! k3s and RKE2 deploy Calico and Cilium from their charts themselves; only kubeadm fetches
//! CNI files.

use std::collections::BTreeMap;

use cairn_proto::profile::{Arch, CniLayer, CniType, Flavor, KubernetesLayer};
use serde::{Deserialize, Serialize};

use crate::checksum::ChecksumFormat;
use crate::version::{kubernetes_minor, semver, with_v, without_v};

/// An upstream project whose releases the catalog knows the layout of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    K3s,
    Rke2,
    /// dl.k8s.io: kubeadm, kubelet, kubectl.
    Kubernetes,
    Containerd,
    Runc,
    CniPlugins,
    Crictl,
    Helm,
    Calico,
    Cilium,
}

impl Source {
    pub const ALL: [Source; 10] = [
        Source::K3s,
        Source::Rke2,
        Source::Kubernetes,
        Source::Containerd,
        Source::Runc,
        Source::CniPlugins,
        Source::Crictl,
        Source::Helm,
        Source::Calico,
        Source::Cilium,
    ];

    /// The name a mirror setting uses for it.
    pub fn key(self) -> &'static str {
        match self {
            Source::K3s => "k3s",
            Source::Rke2 => "rke2",
            Source::Kubernetes => "kubernetes",
            Source::Containerd => "containerd",
            Source::Runc => "runc",
            Source::CniPlugins => "cni-plugins",
            Source::Crictl => "crictl",
            Source::Helm => "helm",
            Source::Calico => "calico",
            Source::Cilium => "cilium",
        }
    }

    /// Where the project publishes its releases; a file's URL is this base, `/`, and the
    /// file's path in the release layout.
    pub fn default_base(self) -> &'static str {
        match self {
            Source::K3s => "https://github.com/k3s-io/k3s/releases/download",
            Source::Rke2 => "https://github.com/rancher/rke2/releases/download",
            Source::Kubernetes => "https://dl.k8s.io/release",
            Source::Containerd => "https://github.com/containerd/containerd/releases/download",
            Source::Runc => "https://github.com/opencontainers/runc/releases/download",
            Source::CniPlugins => {
                "https://github.com/containernetworking/plugins/releases/download"
            }
            Source::Crictl => "https://github.com/kubernetes-sigs/cri-tools/releases/download",
            Source::Helm => "https://get.helm.sh",
            Source::Calico => "https://raw.githubusercontent.com/projectcalico/calico",
            Source::Cilium => "https://helm.cilium.io",
        }
    }
}

/// Base URLs replacing the upstream ones, by [`Source::key`]: a site mirror (or a test's
/// loopback upstream) that serves the same release layout. Unset sources use upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mirrors(pub BTreeMap<String, String>);

impl Mirrors {
    /// The base URL of `source`, without a trailing `/`.
    pub fn base(&self, source: Source) -> String {
        self.0
            .get(source.key())
            .map(String::as_str)
            .unwrap_or(source.default_base())
            .trim_end_matches('/')
            .to_string()
    }

    pub fn set(&mut self, source: Source, base: impl Into<String>) {
        self.0.insert(source.key().to_string(), base.into());
    }

    /// Keys that name no source, and bases that are not `https://` URLs.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, base) in &self.0 {
            if !Source::ALL.iter().any(|s| s.key() == key) {
                let known: Vec<&str> = Source::ALL.iter().map(|s| s.key()).collect();
                out.push(format!(
                    "mirror `{key}` names no source; the sources are {}",
                    known.join(", ")
                ));
            } else if !base.starts_with("https://") || base.len() <= "https://".len() {
                out.push(format!(
                    "mirror `{key}`: `{base}` is not an https:// URL (checksum files are only read over verified TLS)"
                ));
            }
        }
        out
    }
}

/// Where a pinned digest comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PinOrigin {
    /// The profile's `sha256:` map.
    Profile,
    /// The catalog's pins for a known version of a file published without a checksum.
    Catalog,
}

/// How a file is verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "by")]
pub enum Verify {
    /// A digest known before fetching anything.
    Pinned { sha256: String, origin: PinOrigin },
    /// The digest is read from `entry` of the checksum file at `url` (same release, same
    /// mirror), fetched over verified TLS before the file.
    ChecksumFile {
        url: String,
        format: ChecksumFormat,
        entry: String,
    },
}

/// Which layer a planned file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    Kubernetes,
    Cni,
}

impl LayerKind {
    pub fn key(self) -> &'static str {
        match self {
            LayerKind::Kubernetes => "kubernetes",
            LayerKind::Cni => "cni",
        }
    }
}

/// One file a profile needs on one arch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    pub layer: LayerKind,
    /// The artifact name the flavor's installer knows it by (`k3s`, `kubelet`, `helm`…).
    pub name: String,
    pub arch: Arch,
    pub source: Source,
    /// The version of its project the file is from (`v1.31.4+k3s1`, `1.7.24`…).
    pub version: String,
    pub url: String,
    pub verify: Verify,
}

/// Why a layer does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveProblem {
    /// Relative to the layers: `kubernetes.version`, `cni.sha256`, `kubernetes.components.runc`.
    pub field: String,
    pub message: String,
    /// The file the problem is about, when it is about one.
    pub artifact: Option<String>,
}

/// Kubeadm's parts and their default versions (`components:` overrides them). crictl
/// follows the Kubernetes minor (`v1.MINOR.0`, as cri-tools releases one per minor).
pub const KUBEADM_DEFAULTS: [(&str, &str); 3] = [
    ("containerd", "1.7.24"),
    ("runc", "v1.2.3"),
    ("cni-plugins", "v1.6.1"),
];

/// The Helm release used to install Cilium on kubeadm (`cni.components.helm` overrides).
pub const HELM_DEFAULT: &str = "v3.16.3";

/// Digests the catalog pins for files their project publishes no checksum for: (source,
/// version, file name, sha256). A pin is added here only after reading the digest from the
/// released file itself; until then every such file needs a `sha256:` pin in the profile
/// (docs/decisions.md, "Pinned digests where upstream publishes none").
pub const CATALOG_PINS: &[(Source, &str, &str, &str)] = &[];

fn catalog_pin(source: Source, version: &str, file: &str) -> Option<&'static str> {
    CATALOG_PINS
        .iter()
        .find(|(s, v, f, _)| *s == source && without_v(v) == without_v(version) && *f == file)
        .map(|(_, _, _, sha)| *sha)
}

/// `components:` of a layer: each name one the layer knows (`known`), each version a tag
/// that can go into a URL.
fn check_components(
    problems: &mut Vec<ResolveProblem>,
    layer: &str,
    components: &BTreeMap<String, String>,
    known: &[&str],
    none_known: &str,
    known_are: &str,
) {
    for (name, cv) in components {
        let field = format!("{layer}.components.{name}");
        if !known.contains(&name.as_str()) {
            problems.push(ResolveProblem {
                field,
                message: if known.is_empty() {
                    format!("`{name}`: {none_known}")
                } else {
                    format!(
                        "unknown component `{name}`; {known_are} {}",
                        known.join(", ")
                    )
                },
                artifact: None,
            });
        } else if !url_safe(cv.trim()) {
            problems.push(ResolveProblem {
                field,
                message: format!("`{cv}` is not a release tag"),
                artifact: None,
            });
        }
    }
}

fn arch_key(arch: Arch) -> &'static str {
    arch.as_str()
}

struct Ctx<'a> {
    mirrors: &'a Mirrors,
    arch: Arch,
    out: Vec<Planned>,
    problems: Vec<ResolveProblem>,
}

impl Ctx<'_> {
    /// The profile's pin for `name` on this arch (`name/arch`, then `name`).
    fn profile_pin(pins: &BTreeMap<String, String>, name: &str, arch: Arch) -> Option<String> {
        pins.get(&format!("{name}/{}", arch_key(arch)))
            .or_else(|| pins.get(name))
            .cloned()
    }

    #[allow(clippy::too_many_arguments)]
    fn checked(
        &mut self,
        layer: LayerKind,
        pins: &BTreeMap<String, String>,
        name: &str,
        source: Source,
        version: &str,
        path: String,
        sums: String,
        format: ChecksumFormat,
        entry: String,
    ) {
        let base = self.mirrors.base(source);
        let verify = match Self::profile_pin(pins, name, self.arch) {
            Some(sha256) => Verify::Pinned {
                sha256,
                origin: PinOrigin::Profile,
            },
            None => Verify::ChecksumFile {
                url: format!("{base}/{sums}"),
                format,
                entry,
            },
        };
        self.out.push(Planned {
            layer,
            name: name.to_string(),
            arch: self.arch,
            source,
            version: version.to_string(),
            url: format!("{base}/{path}"),
            verify,
        });
    }

    /// A file published without a checksum: pinned by the profile or the catalog, else a
    /// problem asking for the pin.
    #[allow(clippy::too_many_arguments)]
    fn pinned(
        &mut self,
        layer: LayerKind,
        pins: &BTreeMap<String, String>,
        name: &str,
        source: Source,
        version: &str,
        path: String,
        file: &str,
    ) {
        let base = self.mirrors.base(source);
        let verify = match Self::profile_pin(pins, name, self.arch) {
            Some(sha256) => Verify::Pinned {
                sha256,
                origin: PinOrigin::Profile,
            },
            None => match catalog_pin(source, version, file) {
                Some(sha) => Verify::Pinned {
                    sha256: sha.to_string(),
                    origin: PinOrigin::Catalog,
                },
                None => {
                    self.problems.push(ResolveProblem {
                        field: format!("{}.sha256", layer.key()),
                        message: format!(
                            "`{file}` of {} {version} is published without a checksum and the catalog has no digest pinned for that version: pin it in the profile (`sha256: {{{name}: <64 hex>}}`) or list it under `artifacts`",
                            source.key()
                        ),
                        artifact: Some(name.to_string()),
                    });
                    return;
                }
            },
        };
        self.out.push(Planned {
            layer,
            name: name.to_string(),
            arch: self.arch,
            source,
            version: version.to_string(),
            url: format!("{base}/{path}"),
            verify,
        });
    }
}

fn listed(artifacts: &[cairn_proto::profile::Artifact], name: &str, arch: Arch) -> bool {
    artifacts.iter().any(|a| a.name == name && a.arch == arch)
}

/// A version string usable in a URL: non-empty, no `/`, spaces or URL syntax.
fn url_safe(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'))
}

/// Every file `k` (and `c`) need on `arch` that the layers do not list under `artifacts`
/// themselves, each with its URL (through `mirrors`) and how it is verified. Nothing is
/// fetched. All problems are reported.
pub fn resolve(
    k: &KubernetesLayer,
    c: Option<&CniLayer>,
    arch: Arch,
    mirrors: &Mirrors,
) -> Result<Vec<Planned>, Vec<ResolveProblem>> {
    let mut cx = Ctx {
        mirrors,
        arch,
        out: Vec::new(),
        problems: Vec::new(),
    };
    let a = arch_key(arch);
    let kl = LayerKind::Kubernetes;
    let v = k.version.trim();
    let kube = |name: &str| !listed(&k.artifacts, name, arch);
    if !url_safe(v) {
        cx.problems.push(ResolveProblem {
            field: "kubernetes.version".into(),
            message: format!("`{v}` is not a release tag"),
            artifact: None,
        });
        return Err(cx.problems);
    }
    let known_components: &[&str] = match k.flavor {
        Flavor::Kubeadm => &["containerd", "runc", "cni-plugins", "crictl"],
        Flavor::K3s | Flavor::Rke2 => &[],
    };
    check_components(
        &mut cx.problems,
        "kubernetes",
        &k.components,
        known_components,
        "this flavor is one release, it has no components to choose",
        "kubeadm's are",
    );
    match k.flavor {
        Flavor::K3s => {
            if kube("k3s") {
                let file = match arch {
                    Arch::Amd64 => "k3s".to_string(),
                    Arch::Arm64 => "k3s-arm64".to_string(),
                };
                cx.checked(
                    kl,
                    &k.sha256,
                    "k3s",
                    Source::K3s,
                    v,
                    format!("{v}/{file}"),
                    format!("{v}/sha256sum-{a}.txt"),
                    ChecksumFormat::Sums,
                    file,
                );
            }
        }
        Flavor::Rke2 => {
            if kube("rke2") {
                let file = format!("rke2.linux-{a}.tar.gz");
                cx.checked(
                    kl,
                    &k.sha256,
                    "rke2",
                    Source::Rke2,
                    v,
                    format!("{v}/{file}"),
                    format!("{v}/sha256sum-{a}.txt"),
                    ChecksumFormat::Sums,
                    file,
                );
            }
        }
        Flavor::Kubeadm => {
            let kv = with_v(v);
            for bin in ["kubeadm", "kubelet", "kubectl"] {
                if kube(bin) {
                    let path = format!("{kv}/bin/linux/{a}/{bin}");
                    cx.checked(
                        kl,
                        &k.sha256,
                        bin,
                        Source::Kubernetes,
                        &kv,
                        path.clone(),
                        format!("{path}.sha256"),
                        ChecksumFormat::Digest,
                        bin.to_string(),
                    );
                }
            }
            let component = |name: &str| -> Option<String> {
                k.components
                    .get(name)
                    .map(|s| s.trim().to_string())
                    .or_else(|| {
                        KUBEADM_DEFAULTS
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map(|(_, d)| d.to_string())
                    })
            };
            if kube("crictl") {
                let cv = match k.components.get("crictl") {
                    Some(cv) => Some(with_v(cv)),
                    None => kubernetes_minor(v).map(|(ma, mi)| format!("v{ma}.{mi}.0")),
                };
                match cv {
                    Some(cv) => {
                        let file = format!("crictl-{cv}-linux-{a}.tar.gz");
                        cx.checked(
                            kl,
                            &k.sha256,
                            "crictl",
                            Source::Crictl,
                            &cv,
                            format!("{cv}/{file}"),
                            format!("{cv}/{file}.sha256"),
                            ChecksumFormat::Digest,
                            file,
                        );
                    }
                    None => cx.problems.push(ResolveProblem {
                        field: "kubernetes.version".into(),
                        message: format!(
                            "`{v}` is not a Kubernetes version (vMAJOR.MINOR.PATCH), so crictl's cannot follow it; set `components: {{crictl: …}}`"
                        ),
                        artifact: Some("crictl".into()),
                    }),
                }
            }
            if kube("cni-plugins") {
                if let Some(pv) = component("cni-plugins") {
                    let pv = with_v(&pv);
                    let file = format!("cni-plugins-linux-{a}-{pv}.tgz");
                    cx.checked(
                        kl,
                        &k.sha256,
                        "cni-plugins",
                        Source::CniPlugins,
                        &pv,
                        format!("{pv}/{file}"),
                        format!("{pv}/{file}.sha256"),
                        ChecksumFormat::Digest,
                        file,
                    );
                }
            }
            if kube("containerd") {
                if let Some(cv) = component("containerd") {
                    let n = without_v(&cv);
                    let file = format!("containerd-{n}-linux-{a}.tar.gz");
                    cx.checked(
                        kl,
                        &k.sha256,
                        "containerd",
                        Source::Containerd,
                        &n,
                        format!("v{n}/{file}"),
                        format!("v{n}/{file}.sha256sum"),
                        ChecksumFormat::Sums,
                        file,
                    );
                }
            }
            if kube("runc") {
                if let Some(rv) = component("runc") {
                    let rv = with_v(&rv);
                    let file = format!("runc.{a}");
                    cx.checked(
                        kl,
                        &k.sha256,
                        "runc",
                        Source::Runc,
                        &rv,
                        format!("{rv}/{file}"),
                        format!("{rv}/runc.sha256sum"),
                        ChecksumFormat::Sums,
                        file,
                    );
                }
            }
        }
    }
    if let Some(c) = c {
        resolve_cni(&mut cx, k.flavor, c);
    }
    if cx.problems.is_empty() {
        Ok(cx.out)
    } else {
        Err(cx.problems)
    }
}

fn resolve_cni(cx: &mut Ctx, flavor: Flavor, c: &CniLayer) {
    let cl = LayerKind::Cni;
    let arch = cx.arch;
    let a = arch_key(arch);
    let v = c.version.trim();
    let cni = |name: &str| !listed(&c.artifacts, name, arch);
    let known: &[&str] = match (flavor, c.cni) {
        (Flavor::Kubeadm, CniType::Cilium) => &["helm"],
        _ => &[],
    };
    check_components(
        &mut cx.problems,
        "cni",
        &c.components,
        known,
        "this CNI is installed without other tools here",
        "this CNI uses",
    );
    // k3s and RKE2 deploy the CNI themselves (bundled Flannel/Canal, or the chart from
    // its repository as a HelmChart); only kubeadm fetches CNI files.
    if flavor != Flavor::Kubeadm {
        return;
    }
    if !url_safe(v) || semver(v).is_none() {
        cx.problems.push(ResolveProblem {
            field: "cni.version".into(),
            message: format!("`{v}` is not a release version such as 3.29.1"),
            artifact: None,
        });
        return;
    }
    match c.cni {
        CniType::Flannel => {}
        CniType::Calico => {
            if cni("tigera-operator") {
                let tag = with_v(v);
                cx.pinned(
                    cl,
                    &c.sha256,
                    "tigera-operator",
                    Source::Calico,
                    &tag,
                    format!("{tag}/manifests/tigera-operator.yaml"),
                    "tigera-operator.yaml",
                );
            }
        }
        CniType::Cilium => {
            if cni("cilium") {
                let n = without_v(v);
                let file = format!("cilium-{n}.tgz");
                cx.pinned(
                    cl,
                    &c.sha256,
                    "cilium",
                    Source::Cilium,
                    &n,
                    file.clone(),
                    &file,
                );
            }
            if cni("helm") {
                let hv = with_v(
                    c.components
                        .get("helm")
                        .map(String::as_str)
                        .unwrap_or(HELM_DEFAULT),
                );
                let file = format!("helm-{hv}-linux-{a}.tar.gz");
                cx.checked(
                    cl,
                    &c.sha256,
                    "helm",
                    Source::Helm,
                    &hv,
                    file.clone(),
                    format!("{file}.sha256sum"),
                    ChecksumFormat::Sums,
                    file,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(
        flavor: Flavor,
        version: &str,
        cni: CniType,
        cv: &str,
    ) -> (KubernetesLayer, CniLayer) {
        let k = KubernetesLayer {
            flavor,
            version: version.into(),
            role: Default::default(),
            server: None,
            token: None,
            values: serde_json::Value::Null,
            artifacts: Vec::new(),
            components: BTreeMap::new(),
            sha256: BTreeMap::new(),
        };
        let c = CniLayer {
            cni,
            version: cv.into(),
            pod_cidr: None,
            values: serde_json::Value::Null,
            artifacts: Vec::new(),
            components: BTreeMap::new(),
            sha256: BTreeMap::new(),
        };
        (k, c)
    }

    #[test]
    fn k3s_follows_its_release_layout() {
        let (k, c) = layers(Flavor::K3s, "v1.31.4+k3s1", CniType::Flannel, "v0.26.2");
        let p = resolve(&k, Some(&c), Arch::Arm64, &Mirrors::default()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].url,
            "https://github.com/k3s-io/k3s/releases/download/v1.31.4+k3s1/k3s-arm64"
        );
        assert_eq!(
            p[0].verify,
            Verify::ChecksumFile {
                url: "https://github.com/k3s-io/k3s/releases/download/v1.31.4+k3s1/sha256sum-arm64.txt".into(),
                format: ChecksumFormat::Sums,
                entry: "k3s-arm64".into()
            }
        );
    }

    #[test]
    fn kubeadm_needs_its_parts_and_a_mirror_replaces_the_base() {
        let (k, c) = layers(Flavor::Kubeadm, "v1.31.4", CniType::Flannel, "v0.26.2");
        let mut m = Mirrors::default();
        m.set(Source::Kubernetes, "https://mirror.example/k8s/");
        let p = resolve(&k, Some(&c), Arch::Amd64, &m).unwrap();
        let names: Vec<&str> = p.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kubeadm",
                "kubelet",
                "kubectl",
                "crictl",
                "cni-plugins",
                "containerd",
                "runc"
            ]
        );
        assert_eq!(
            p[1].url,
            "https://mirror.example/k8s/v1.31.4/bin/linux/amd64/kubelet"
        );
        let crictl = &p[3];
        assert_eq!(crictl.version, "v1.31.0");
        assert!(crictl
            .url
            .ends_with("/v1.31.0/crictl-v1.31.0-linux-amd64.tar.gz"));
        let containerd = &p[5];
        assert!(containerd
            .url
            .ends_with("/v1.7.24/containerd-1.7.24-linux-amd64.tar.gz"));
    }

    #[test]
    fn listed_artifacts_and_profile_pins_override() {
        let (mut k, _) = layers(Flavor::Rke2, "v1.31.4+rke2r1", CniType::Flannel, "x");
        k.sha256.insert("rke2/amd64".into(), "a".repeat(64));
        let p = resolve(&k, None, Arch::Amd64, &Mirrors::default()).unwrap();
        assert_eq!(
            p[0].verify,
            Verify::Pinned {
                sha256: "a".repeat(64),
                origin: PinOrigin::Profile
            }
        );
        k.artifacts.push(cairn_proto::profile::Artifact {
            name: "rke2".into(),
            arch: Arch::Amd64,
            url: "https://x/rke2.tgz".into(),
            sha256: "b".repeat(64),
            size: None,
        });
        assert!(resolve(&k, None, Arch::Amd64, &Mirrors::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_manifest_without_a_published_checksum_needs_a_pin() {
        let (k, mut c) = layers(Flavor::Kubeadm, "v1.31.4", CniType::Calico, "v3.29.1");
        let e = resolve(&k, Some(&c), Arch::Amd64, &Mirrors::default()).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "cni.sha256");
        assert!(e[0].message.contains("tigera-operator.yaml"), "{e:?}");
        c.sha256.insert("tigera-operator".into(), "c".repeat(64));
        let p = resolve(&k, Some(&c), Arch::Arm64, &Mirrors::default()).unwrap();
        let op = p.iter().find(|x| x.name == "tigera-operator").unwrap();
        assert_eq!(
            op.url,
            "https://raw.githubusercontent.com/projectcalico/calico/v3.29.1/manifests/tigera-operator.yaml"
        );
    }

    #[test]
    fn mirror_settings_are_checked() {
        let mut m = Mirrors::default();
        m.0.insert("k3z".into(), "https://x".into());
        m.0.insert("helm".into(), "http://x".into());
        assert_eq!(m.problems().len(), 2);
    }
}
