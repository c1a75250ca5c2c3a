//! Cluster profiles: what an operator publishes on the hub and the agent applies.
//!
//! A profile has a name, a version (monotonic per name, assigned or checked by the hub at
//! upload, immutable once published) and layers in a fixed order — `os` (user-data, kept as
//! YAML *text* so yip's YAML 1.1 habits such as unquoted octal `0644` survive the trip),
//! `kubernetes`, `cni`, `addons`. The JSON the hub serves is exactly `serde_json` of
//! [`Profile`]; the YAML an operator writes has the same shape.
//!
//! [`Profile::validate`] finds every semantic problem at once and names each by its path
//! (`layers[1].kubernetes.role`); readers that know positions (the hub's YAML loader, the
//! agent's located tree) turn the path into `FILE:LINE:COL`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest profile name accepted (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Lower-case letters, digits and `-`, at most 63 characters, e.g. `edge-k3s`.
    pub name: String,
    /// Monotonic per name. `0` (or absent) in an uploaded document means "the next
    /// version"; a profile served by the hub always has a version ≥ 1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// In order: `os`, `kubernetes`, `cni`, `addons`; each at most once.
    pub layers: Vec<Layer>,
    /// Add-on profiles attached to the host on top of this (infrastructure) profile, in
    /// order: the hub fills this when it serves a host whose assignment attaches some
    /// (docs/protocol.md, "Add-on profiles"); the agent installs the profile's own `addons`
    /// layer, then each of these, as one ordered plan ([`Profile::merged_addons`]). Never
    /// written in an uploaded document.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addon_profiles: Vec<AttachedAddons>,
}

/// One add-on profile as attached to a host: its name, version and `addons` layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedAddons {
    pub name: String,
    pub version: u64,
    pub addons: AddonsLayer,
}

/// Why attached add-on layers do not merge into one plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MergeError {
    pub path: String,
    pub message: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One layer, written as a single-key mapping: `- os: {…}`, `- kubernetes: {…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    Os(OsLayer),
    Kubernetes(KubernetesLayer),
    Cni(CniLayer),
    Addons(AddonsLayer),
}

impl Layer {
    /// The layer's key, e.g. `kubernetes`.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Os(_) => "os",
            Layer::Kubernetes(_) => "kubernetes",
            Layer::Cni(_) => "cni",
            Layer::Addons(_) => "addons",
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Layer::Os(_) => 0,
            Layer::Kubernetes(_) => 1,
            Layer::Cni(_) => 2,
            Layer::Addons(_) => 3,
        }
    }
}

/// User-data (the `stages:`/cloud-config document the agent validates and applies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsLayer {
    /// The YAML text of a user-data document (write it as a `|` block in YAML).
    pub user_data: String,
    /// Which dialect the user-data is written in. Absent, an os layer is Kairos user-data
    /// (as a Palette OS layer is) unless its text says `#cairn-dialect: cloud-init`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialect: Option<Dialect>,
}

/// The two meanings one `#cloud-config` document can have (docs/user-data.md, "Kairos
/// dialect vs cloud-init dialect"): the same keys (`users:`, `hostname:`) are applied the
/// way Kairos/Palette apply them, or the way cloud-init does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// Kairos/Palette (yip): a plain `passwd` is hashed and the account stays usable.
    Kairos,
    /// cloud-init: `passwd` is a crypt hash and accounts are locked unless told otherwise.
    CloudInit,
}

impl Dialect {
    /// The name as written in user-data and profiles: `kairos`, `cloud-init`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Kairos => "kairos",
            Dialect::CloudInit => "cloud-init",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    K3s,
    Rke2,
    Kubeadm,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Server,
    Agent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLayer {
    pub flavor: Flavor,
    /// The flavor's own version string, e.g. `v1.30.4+k3s1`.
    pub version: String,
    #[serde(default)]
    pub role: Role,
    /// `https://` URL of an existing server to join (required for `role: agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Join token (required whenever `server` is set). Secret: never put it in an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Passed to the flavor's configuration file; a mapping.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub values: serde_json::Value,
    /// Overrides: files listed here are used instead of the pack's (per name and arch).
    /// With a version the catalog resolves (`cairn_packs`), none is needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Versions of the parts a flavor is assembled from (kubeadm: `containerd`, `runc`,
    /// `cni-plugins`, `crictl`), each overriding the pack's default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
    /// Pinned digests, overriding the upstream checksum file: `NAME` for a file that is the
    /// same on every arch, `NAME/ARCH` (`k3s/arm64`) for one per arch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CniType {
    Calico,
    Cilium,
    Flannel,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniLayer {
    #[serde(rename = "type")]
    pub cni: CniType,
    pub version: String,
    /// Pod network, e.g. `10.42.0.0/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub values: serde_json::Value,
    /// Overrides of the pack's files (see [`KubernetesLayer::artifacts`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Versions of the tools the CNI is installed with (`helm`), overriding the pack's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, String>,
    /// Pinned digests (see [`KubernetesLayer::sha256`]): needed for a CNI manifest or chart
    /// whose project publishes no checksum and whose version the catalog has no pin for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddonsLayer {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Manifest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<Chart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
}

/// A Kubernetes manifest, inline (`content`) or fetched (`url` + `sha256`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A Helm chart release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    /// Release name.
    pub name: String,
    /// Chart name in `repo` (or the name of an artifact holding the chart archive).
    pub chart: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// A registry object on the hub (a Helm repository or an OCI registry, with its
    /// credentials) the chart comes from, instead of `repo`. For an OCI registry, `chart`
    /// is the repository path under it (`charts/podinfo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub values: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// The Go spelling, as profiles and release assets write it: `amd64`, `arm64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// A file the layer needs, per architecture, verified by SHA-256 before use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub name: String,
    pub arch: Arch,
    pub url: String,
    /// 64 lower-case hex digits.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One semantic problem: where (a document path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathProblem {
    /// e.g. `layers[1].kubernetes.role`; empty for the document itself.
    pub path: String,
    pub message: String,
}

struct Checker {
    problems: Vec<PathProblem>,
}

impl Checker {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(PathProblem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn non_empty_token(&mut self, path: &str, what: &str, value: &str) {
        if value.trim().is_empty() {
            self.err(path, format!("{what} must not be empty"));
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(path, format!("{what} must not contain spaces"));
        }
    }

    fn url(&mut self, path: &str, value: &str, https_only: bool) {
        let ok_scheme =
            value.starts_with("https://") || (!https_only && value.starts_with("http://"));
        if !ok_scheme {
            let want = if https_only {
                "https://"
            } else {
                "http:// or https://"
            };
            self.err(path, format!("`{value}` is not a URL starting with {want}"));
        } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.err(path, "a URL must not contain spaces or control characters");
        } else if value
            .split_once("://")
            .is_some_and(|(_, rest)| rest.is_empty())
        {
            self.err(path, "the URL has no host");
        }
    }

    fn sha256(&mut self, path: &str, value: &str) {
        if value.len() != 64
            || !value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            self.err(path, "sha256 must be 64 lower-case hex digits");
        }
    }

    fn mapping(&mut self, path: &str, value: &serde_json::Value) {
        if !(value.is_null() || value.is_object()) {
            self.err(path, "values must be a mapping");
        }
    }

    fn pins(&mut self, path: &str, pins: &BTreeMap<String, String>) {
        for (key, digest) in pins {
            let p = format!("{path}.{key}");
            let name = match key.split_once('/') {
                Some((name, arch)) => {
                    if !matches!(arch, "amd64" | "arm64") {
                        self.err(
                            &p,
                            format!("`{key}`: the part after `/` is an arch, amd64 or arm64"),
                        );
                    }
                    name
                }
                None => key.as_str(),
            };
            self.non_empty_token(&p, "a pinned artifact's name", name);
            self.sha256(&p, digest);
        }
    }

    fn components(&mut self, path: &str, components: &BTreeMap<String, String>) {
        for (name, version) in components {
            self.non_empty_token(&format!("{path}.{name}"), "a component version", version);
        }
    }

    /// The checks of one `addons` layer (a profile's own, or an attached add-on profile's).
    fn addons(&mut self, base: &str, a: &AddonsLayer) {
        let c = self;
        if a.manifests.is_empty() && a.charts.is_empty() {
            c.err(base, "an `addons` layer lists `manifests` or `charts`");
        }
        let mut names = HashSet::new();
        for (j, m) in a.manifests.iter().enumerate() {
            let p = format!("{base}.manifests[{j}]");
            c.non_empty_token(&format!("{p}.name"), "a manifest name", &m.name);
            if !names.insert(m.name.as_str()) {
                c.err(
                    format!("{p}.name"),
                    format!("manifest `{}` is listed twice", m.name),
                );
            }
            match (&m.content, &m.url) {
                (Some(_), Some(_)) => {
                    c.err(&p, "a manifest has either `content` or `url`, not both")
                }
                (None, None) => c.err(&p, "a manifest needs `content` or `url`"),
                (None, Some(url)) => {
                    c.url(&format!("{p}.url"), url, false);
                    match &m.sha256 {
                        Some(s) => c.sha256(&format!("{p}.sha256"), s),
                        None => c.err(&p, "a manifest fetched by `url` needs `sha256`"),
                    }
                }
                (Some(_), None) => {
                    if m.sha256.is_some() {
                        c.err(
                            format!("{p}.sha256"),
                            "`sha256` goes with `url`, not `content`",
                        );
                    }
                }
            }
        }
        let mut releases = HashSet::new();
        for (j, ch) in a.charts.iter().enumerate() {
            let p = format!("{base}.charts[{j}]");
            c.non_empty_token(&format!("{p}.name"), "a release name", &ch.name);
            c.non_empty_token(&format!("{p}.chart"), "a chart name", &ch.chart);
            c.non_empty_token(&format!("{p}.version"), "a chart version", &ch.version);
            if let Some(repo) = &ch.repo {
                if !repo.starts_with("oci://") {
                    c.url(&format!("{p}.repo"), repo, false);
                } else if crate::registry::url_host(repo).is_none() {
                    c.err(format!("{p}.repo"), "the oci:// URL has no host");
                }
            }
            if let Some(reg) = &ch.registry {
                if ch.repo.is_some() {
                    c.err(
                        format!("{p}.registry"),
                        "a chart comes from `repo` or from `registry`, not both",
                    );
                }
                if check_name(reg).is_err() {
                    c.err(
                        format!("{p}.registry"),
                        format!("`{reg}` is not a registry name: 1 to 63 lower-case letters, digits and `-`"),
                    );
                }
            }
            let ns = ch.namespace.as_deref().unwrap_or("default");
            if !releases.insert((ns, ch.name.as_str())) {
                c.err(
                    format!("{p}.name"),
                    format!("release `{}` appears twice in namespace `{ns}`", ch.name),
                );
            }
            c.mapping(&format!("{p}.values"), &ch.values);
        }
        c.artifacts(&format!("{base}.artifacts"), &a.artifacts);
    }

    fn artifacts(&mut self, path: &str, artifacts: &[Artifact]) {
        let mut seen = HashSet::new();
        for (i, a) in artifacts.iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.non_empty_token(&format!("{p}.name"), "an artifact name", &a.name);
            self.url(&format!("{p}.url"), &a.url, false);
            self.sha256(&format!("{p}.sha256"), &a.sha256);
            if !seen.insert((a.name.as_str(), a.arch)) {
                self.err(
                    format!("{p}.name"),
                    format!("artifact `{}` is listed twice for the same arch", a.name),
                );
            }
        }
    }
}

/// Why a profile name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a profile name has 1 to {MAX_NAME_LEN} characters, `{name}` has {len}")]
    Length { name: String, len: usize },
    #[error(
        "`{0}` is not a valid profile name: use lower-case letters, digits and `-`, \
         starting and ending with a letter or digit"
    )]
    Characters(String),
}

/// Is `name` an acceptable profile name (a DNS label)?
pub fn check_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN {
        return Err(NameError::Length {
            name: name.to_owned(),
            len: name.chars().count(),
        });
    }
    let ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !ok || bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(NameError::Characters(name.to_owned()));
    }
    Ok(())
}

/// Why a pod network is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CidrError {
    #[error("`{0}` is not a CIDR such as 10.42.0.0/16")]
    Shape(String),
    #[error("`{addr}` in `{value}` is not an IP address")]
    Address { addr: String, value: String },
    #[error("`{len}` in `{value}` is not a prefix length")]
    Length { len: String, value: String },
    #[error("prefix length {len} is longer than {max}")]
    TooLong { len: u8, max: u8 },
}

fn check_cidr(value: &str) -> Result<(), CidrError> {
    let (addr, len) = value
        .split_once('/')
        .ok_or_else(|| CidrError::Shape(value.to_owned()))?;
    let ip: IpAddr = addr.parse().map_err(|_| CidrError::Address {
        addr: addr.to_owned(),
        value: value.to_owned(),
    })?;
    let len: u8 = len.parse().map_err(|_| CidrError::Length {
        len: len.to_owned(),
        value: value.to_owned(),
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(CidrError::TooLong { len, max });
    }
    Ok(())
}

impl Profile {
    /// An add-on profile: its only layer is `addons`. It is attached to hosts on top of an
    /// infrastructure profile (os, kubernetes, cni), never applied alone.
    pub fn is_addon_profile(&self) -> bool {
        matches!(self.layers.as_slice(), [Layer::Addons(_)]) && self.addon_profiles.is_empty()
    }

    /// The profile's own `addons` layer followed by each attached add-on profile's, in
    /// order, as one layer; `None` when there is none. A manifest name, a release (name and
    /// namespace) or an artifact (name and arch) that two of them define is refused, naming
    /// both.
    pub fn merged_addons(&self) -> Result<Option<AddonsLayer>, MergeError> {
        let own = self.layers.iter().find_map(|l| match l {
            Layer::Addons(a) => Some(a),
            _ => None,
        });
        if self.addon_profiles.is_empty() {
            return Ok(own.cloned());
        }
        let mut out = AddonsLayer::default();
        let mut manifests: std::collections::HashMap<String, String> = Default::default();
        let mut releases: std::collections::HashMap<(String, String), String> = Default::default();
        let mut artifacts: std::collections::HashMap<(String, Arch), String> = Default::default();
        let sources = own
            .map(|a| (format!("profile {}", self.name), "addons".to_string(), a))
            .into_iter()
            .chain(self.addon_profiles.iter().enumerate().map(|(i, p)| {
                (
                    format!("add-on profile {} v{}", p.name, p.version),
                    format!("addon_profiles[{i}].addons"),
                    &p.addons,
                )
            }));
        for (who, path, a) in sources {
            for (j, m) in a.manifests.iter().enumerate() {
                if let Some(first) = manifests.insert(m.name.clone(), who.clone()) {
                    return Err(MergeError {
                        path: format!("{path}.manifests[{j}].name"),
                        message: format!(
                            "manifest `{}` is defined by {first} and by {who}",
                            m.name
                        ),
                    });
                }
                out.manifests.push(m.clone());
            }
            for (j, c) in a.charts.iter().enumerate() {
                let ns = c.namespace.clone().unwrap_or_else(|| "default".into());
                if let Some(first) = releases.insert((ns.clone(), c.name.clone()), who.clone()) {
                    return Err(MergeError {
                        path: format!("{path}.charts[{j}].name"),
                        message: format!(
                            "release `{}` in namespace `{ns}` is installed by {first} and by {who}",
                            c.name
                        ),
                    });
                }
                out.charts.push(c.clone());
            }
            for (j, x) in a.artifacts.iter().enumerate() {
                if let Some(first) = artifacts.insert((x.name.clone(), x.arch), who.clone()) {
                    return Err(MergeError {
                        path: format!("{path}.artifacts[{j}].name"),
                        message: format!(
                            "artifact `{}` ({}) is listed by {first} and by {who}",
                            x.name,
                            x.arch.as_str()
                        ),
                    });
                }
                out.artifacts.push(x.clone());
            }
        }
        Ok(Some(out))
    }

    /// Every semantic problem of the profile (an empty list means valid).
    pub fn validate(&self) -> Vec<PathProblem> {
        let mut c = Checker {
            problems: Vec::new(),
        };
        if let Err(e) = check_name(&self.name) {
            c.err("name", e.to_string());
        }
        if self.version > i64::MAX as u64 {
            c.err("version", "version is too large");
        }
        if self.layers.is_empty() {
            c.err("layers", "a profile needs at least one layer");
        }
        let mut prev: Option<&Layer> = None;
        let mut has_kubernetes = false;
        let addon_profile = self.is_addon_profile();
        for (i, layer) in self.layers.iter().enumerate() {
            let base = format!("layers[{i}].{}", layer.kind());
            if let Some(p) = prev {
                if layer.rank() == p.rank() {
                    c.err(
                        &base,
                        format!("a second `{}` layer; each layer appears once", layer.kind()),
                    );
                } else if layer.rank() < p.rank() {
                    c.err(
                        &base,
                        format!(
                            "`{}` must come before `{}`: layers are ordered os, kubernetes, cni, addons",
                            layer.kind(),
                            p.kind()
                        ),
                    );
                }
            }
            prev = Some(layer);
            match layer {
                Layer::Os(os) => {
                    if os.user_data.trim().is_empty() {
                        c.err(format!("{base}.user_data"), "user_data is empty");
                    }
                }
                Layer::Kubernetes(k) => {
                    has_kubernetes = true;
                    c.non_empty_token(
                        &format!("{base}.version"),
                        "the Kubernetes version",
                        &k.version,
                    );
                    if let Some(server) = &k.server {
                        c.url(&format!("{base}.server"), server, true);
                        if k.token.as_deref().is_none_or(|t| t.trim().is_empty()) {
                            c.err(format!("{base}.token"), "joining `server` needs a `token`");
                        }
                    } else if k.role == Role::Agent {
                        c.err(
                            format!("{base}.role"),
                            "`role: agent` needs `server` (the URL to join) and `token`",
                        );
                    }
                    c.mapping(&format!("{base}.values"), &k.values);
                    c.artifacts(&format!("{base}.artifacts"), &k.artifacts);
                    c.pins(&format!("{base}.sha256"), &k.sha256);
                    c.components(&format!("{base}.components"), &k.components);
                }
                Layer::Cni(n) => {
                    if !has_kubernetes {
                        c.err(&base, "a `cni` layer needs a `kubernetes` layer before it");
                    }
                    c.non_empty_token(&format!("{base}.version"), "the CNI version", &n.version);
                    if let Some(cidr) = &n.pod_cidr {
                        if let Err(e) = check_cidr(cidr) {
                            c.err(format!("{base}.pod_cidr"), e.to_string());
                        }
                    }
                    c.mapping(&format!("{base}.values"), &n.values);
                    c.artifacts(&format!("{base}.artifacts"), &n.artifacts);
                    c.pins(&format!("{base}.sha256"), &n.sha256);
                    c.components(&format!("{base}.components"), &n.components);
                }
                Layer::Addons(a) => {
                    if !has_kubernetes && !addon_profile {
                        c.err(
                            &base,
                            "an `addons` layer needs a `kubernetes` layer before it",
                        );
                    }
                    c.addons(&base, a);
                }
            }
        }
        for (i, p) in self.addon_profiles.iter().enumerate() {
            let base = format!("addon_profiles[{i}]");
            if !has_kubernetes {
                c.err(
                    &base,
                    "add-on profiles are attached on top of a profile with a `kubernetes` layer",
                );
            }
            if let Err(e) = check_name(&p.name) {
                c.err(format!("{base}.name"), e.to_string());
            }
            c.addons(&format!("{base}.addons"), &p.addons);
        }
        if let Err(e) = self.merged_addons() {
            c.err(e.path, e.message);
        }
        c.problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        serde_json::from_value(serde_json::json!({
            "name": "edge-k3s",
            "version": 2,
            "layers": [
                {"os": {"user_data": "stages:\n  boot:\n    - commands: [\"true\"]\n"}},
                {"kubernetes": {"flavor": "k3s", "version": "v1.30.4+k3s1",
                    "artifacts": [{"name": "k3s", "arch": "amd64",
                        "url": "https://example.org/k3s", "sha256": "a".repeat(64)}]}},
                {"cni": {"type": "calico", "version": "3.28.0", "pod_cidr": "10.42.0.0/16"}},
                {"addons": {"manifests": [{"name": "ns", "content": "kind: Namespace"}]}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn a_complete_profile_is_valid_and_round_trips() {
        let p = sample();
        assert_eq!(p.validate(), vec![]);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["layers"][2]["cni"]["type"], "calico");
        let back: Profile = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut p = sample();
        p.name = "Edge_K3s".into();
        p.layers.swap(1, 2); // cni before kubernetes
        if let Layer::Cni(n) = &mut p.layers[1] {
            n.pod_cidr = Some("10.42.0.0/33".into());
        }
        if let Layer::Kubernetes(k) = &mut p.layers[2] {
            k.role = Role::Agent;
            k.artifacts[0].sha256 = "XYZ".into();
        }
        let problems = p.validate();
        let paths: Vec<&str> = problems.iter().map(|x| x.path.as_str()).collect();
        assert!(paths.contains(&"name"), "{problems:?}");
        assert!(paths.contains(&"layers[1].cni"), "{problems:?}"); // needs kubernetes before it
        assert!(paths.contains(&"layers[1].cni.pod_cidr"), "{problems:?}");
        assert!(paths.contains(&"layers[2].kubernetes"), "{problems:?}"); // order
        assert!(paths.contains(&"layers[2].kubernetes.role"), "{problems:?}"); // agent without server
        assert!(
            paths.contains(&"layers[2].kubernetes.artifacts[0].sha256"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<Profile>(serde_json::json!({
            "name": "x", "layers": [{"os": {"user_data": "a: 1", "userdata": "typo"}}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("userdata"), "{err}");
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(check_name("edge-k3s-2").is_ok());
        for bad in ["", "-x", "x-", "Edge", "a_b", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn add_on_profiles_validate_alone_and_merge_in_order() {
        let addon: Profile = serde_json::from_value(serde_json::json!({
            "name": "monitoring",
            "layers": [{"addons": {"charts": [{"name": "prom", "chart": "prom", "version": "1", "registry": "corp"}]}}]
        }))
        .unwrap();
        assert!(addon.is_addon_profile());
        assert_eq!(addon.validate(), vec![]);
        let mut p = sample();
        assert!(!p.is_addon_profile());
        let Layer::Addons(layer) = addon.layers[0].clone() else {
            unreachable!()
        };
        p.addon_profiles.push(AttachedAddons {
            name: "monitoring".into(),
            version: 3,
            addons: layer.clone(),
        });
        assert_eq!(p.validate(), vec![]);
        let merged = p.merged_addons().unwrap().unwrap();
        assert_eq!(
            merged.manifests[0].name, "ns",
            "the profile's own add-ons first"
        );
        assert_eq!(merged.charts[0].name, "prom");
        // The same release twice, from two add-on profiles: refused, naming both.
        p.addon_profiles.push(AttachedAddons {
            name: "again".into(),
            version: 1,
            addons: layer,
        });
        let problems = p.validate();
        assert!(
            problems
                .iter()
                .any(|x| x.path == "addon_profiles[1].addons.charts[0].name"
                    && x.message.contains("monitoring v3")
                    && x.message.contains("again v1")),
            "{problems:?}"
        );
        // Without a kubernetes layer, attached add-ons are refused.
        p.layers
            .retain(|l| !matches!(l, Layer::Kubernetes(_) | Layer::Cni(_) | Layer::Addons(_)));
        assert!(p.validate().iter().any(|x| x.path == "addon_profiles[0]"));
    }
}
