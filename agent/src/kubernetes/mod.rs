//! The Kubernetes layer's pure core: a profile's `kubernetes` + `cni` layers, for one target
//! (architecture and node name), become a typed [`Plan`] — the files to write, the verified
//! artifacts to fetch, the kernel modules, sysctls and units, and how the CNI is delivered.
//!
//! Nothing here touches the host. Each flavor follows its own install contract
//! (`reference/k8s-install.md`): [`k3s`] the unit and env file its install script writes,
//! [`rke2`] its tarball layout, [`kubeadm`] the host preparation and v1beta4 configuration.
//! The rules the three share live here: one pod CIDR, rendered into the flavor's config and
//! the CNI values alike (§4.5); pod and service networks must not overlap; flags go to a
//! `config.yaml.d` drop-in, never to `ExecStart` (§0.3); the join token lives only in a
//! `0600` file. [`Plan::into_config`] turns the plan into the stage engine's own
//! [`Config`], so [`crate::engine::apply`] writes it like any user-data.

pub mod addons;
pub mod bundle;
pub mod cni;
pub mod flavor;
pub mod install;
pub mod k3s;
pub mod kubeadm;
pub mod place;
pub mod probe;
pub mod proxy;
pub mod registries;
pub mod render;
pub mod rke2;

use std::fmt;
use std::sync::Arc;

use cairn_proto::profile::{Arch, Artifact, CniLayer, CniType, Flavor, KubernetesLayer, Role};
use serde_json::Value;

use cairn_userdata::diag::{Location, Pos};
use cairn_userdata::model::{
    AbsPath, Action, Conditions, Config, FileSpec, Frequency, KernelModule, KeyValue, Mode, Owner,
    PackageRef, PackageSpec, Step, SystemctlSpec,
};
use render::{cidr_list, Cidr};

pub use flavor::{distribution, Distribution};

/// The machine the plan is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub arch: Arch,
    /// The Kubernetes node name (a DNS-1123 subdomain), usually the hostname.
    pub node_name: String,
}

impl Target {
    /// A target from an architecture name as `uname -m` or Go spell it (`x86_64`/`amd64`,
    /// `aarch64`/`arm64`); anything else is refused.
    pub fn new(arch: &str, node_name: &str) -> Result<Target, PlanError> {
        let arch = match arch {
            "amd64" | "x86_64" => Arch::Amd64,
            "arm64" | "aarch64" => Arch::Arm64,
            other => {
                return Err(PlanError::new(
                    "target.arch",
                    format!(
                        "unknown architecture `{other}`: Kubernetes artifacts exist for amd64 (x86_64) and arm64 (aarch64)"
                    ),
                ))
            }
        };
        Ok(Target {
            arch,
            node_name: node_name.to_string(),
        })
    }
}

/// The Go spelling of an architecture, as release assets use it.
pub fn arch_name(arch: Arch) -> &'static str {
    arch.as_str()
}

/// Why a layer cannot be planned: the field at fault, what is wrong with it, and what kind
/// of problem it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PlanError {
    /// e.g. `kubernetes.server`, `cni.pod_cidr`, `kubernetes.values.service-cidr`: the
    /// layer's key, then the path inside the layer (`target.*` for the machine itself).
    pub field: String,
    pub message: String,
    pub kind: PlanErrorKind,
}

/// What kind of problem a [`PlanError`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanErrorKind {
    /// The layers are inconsistent or a value is wrong, whatever the machine.
    Invalid,
    /// The layer does not list an artifact the target's architecture needs.
    MissingArtifact { name: String, arch: Arch },
}

impl PlanError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> PlanError {
        PlanError {
            field: field.into(),
            message: message.into(),
            kind: PlanErrorKind::Invalid,
        }
    }

    /// An artifact `name` the target's `arch` needs is not listed under `field`.
    pub fn missing_artifact(
        field: impl Into<String>,
        message: impl Into<String>,
        name: &str,
        arch: Arch,
    ) -> PlanError {
        PlanError {
            field: field.into(),
            message: message.into(),
            kind: PlanErrorKind::MissingArtifact {
                name: name.to_string(),
                arch,
            },
        }
    }
}

/// When a file is written: with the flavor's install, or once the cluster is up (kubeadm
/// CNI manifests, applied with the admin kubeconfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStage {
    Install,
    Cni,
}

/// A file to write.
#[derive(Clone, PartialEq, Eq)]
pub struct PlanFile {
    pub path: String,
    pub content: String,
    pub mode: u32,
    /// Holds a secret (join token, registry credentials): mode 0600, never logged.
    pub secret: bool,
    pub stage: FileStage,
}

impl fmt::Debug for PlanFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("PlanFile");
        d.field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode));
        if self.secret {
            d.field(
                "content",
                &format_args!("<redacted, {} bytes>", self.content.len()),
            );
        } else {
            d.field("content", &self.content);
        }
        d.field("stage", &self.stage).finish()
    }
}

/// What to do with a fetched artifact once its sha256 is verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Install as an executable file.
    Binary { path: String, mode: u32 },
    /// Extract a `.tar.gz` into a directory (RKE2's tarball, crictl, CNI plugins).
    Extract { dir: String },
    /// Copy into a directory under its own file name (air-gap image archives, manifests).
    Into { dir: String, file: String },
    /// Unpack one member of a `.tar.gz` as the file `path` (Helm's `linux-ARCH/helm`).
    Member {
        member: String,
        path: String,
        mode: u32,
    },
}

/// An artifact to fetch through the cache (`crate::artifacts`), already chosen for the arch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fetch {
    /// The artifact's name in the profile (`k3s`, `rke2`, `kubeadm`…).
    pub name: String,
    pub arch: Arch,
    pub url: String,
    pub sha256: String,
    pub size: Option<u64>,
    pub place: Placement,
}

/// How the CNI reaches the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CniDelivery {
    /// Built into the distribution (k3s Flannel): configured by the flavor's config only.
    Embedded,
    /// Manifests / `HelmChart` resources in the server's auto-deploy directory (k3s),
    /// written before the first start.
    AutoDeploy { dir: String, files: Vec<String> },
    /// RKE2's bundled chart, selected by `cni:` in config.yaml and customised by a
    /// `HelmChartConfig` in its manifests directory.
    Bundled { chart: String, config_file: String },
    /// Manifests written after `kubeadm init` and applied in order with the admin
    /// kubeconfig (`kubectl create`, as the Calico operator bundle needs).
    Apply {
        kubeconfig: String,
        manifests: Vec<String>,
    },
    /// A Helm chart installed by the agent with the admin kubeconfig (Cilium on kubeadm).
    Helm {
        kubeconfig: String,
        release: String,
        namespace: String,
        chart_artifact: String,
        values_file: String,
    },
    /// An agent/worker node: the CNI comes from the servers.
    FromServer,
}

/// The complete, typed install plan of one node.
#[derive(Debug, Clone)]
pub struct Plan {
    pub flavor: Flavor,
    /// The Kubernetes/distribution version tag the plan installs (e.g. `v1.31.4+k3s1`).
    pub version: String,
    /// The node's name in the cluster (the target's).
    pub node_name: String,
    pub role: Role,
    pub cni: CniType,
    /// The service (unit) that runs the node, e.g. `k3s`, `rke2-agent`, `kubelet`.
    pub service: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    /// Where the admin kubeconfig appears on a server (readiness uses it).
    pub kubeconfig: Option<String>,
    pub files: Vec<PlanFile>,
    pub fetch: Vec<Fetch>,
    pub modules: Vec<String>,
    pub sysctls: Vec<(String, String)>,
    /// Units to enable (started later, by the start phase).
    pub enable: Vec<String>,
    /// Distribution packages the flavor needs from the OS (kubeadm's containerd when no
    /// containerd artifact is given).
    pub packages: Vec<String>,
    /// The bootstrap command run once the files are in place (kubeadm init/join); argv.
    pub bootstrap: Option<Vec<String>>,
    pub cni_delivery: CniDelivery,
    /// Things worth telling the operator (e.g. a CNI version fixed by the distribution).
    pub notes: Vec<String>,
}

impl Plan {
    /// The plan's flavor implementation.
    pub fn distribution(&self) -> &'static dyn Distribution {
        distribution(self.flavor)
    }

    pub fn file(&self, path: &str) -> Option<&PlanFile> {
        self.files.iter().find(|f| f.path == path)
    }

    pub fn fetch(&self, name: &str) -> Option<&Fetch> {
        self.fetch.iter().find(|f| f.name == name)
    }

    /// The plan's files, modules, sysctls and units as the stage engine's [`Config`]:
    /// stage `kubernetes.before` (host preparation: kernel modules, sysctls and the
    /// distribution packages the flavor needs), stage
    /// `kubernetes` (the flavor's files, unit enablement) and stage
    /// `cni` (manifests applied after the cluster is up). Artifacts, start and readiness
    /// are not engine steps; the caller runs them around this.
    pub fn into_config(&self) -> Config {
        let file: Arc<str> = Arc::from(format!("profile:kubernetes/{}", flavor_name(self.flavor)));
        let loc = Location::new(&file, Pos { line: 1, col: 1 });
        let step = |name: &str, actions: Vec<Action>| Step {
            name: name.to_string(),
            location: loc.clone(),
            conditions: Conditions::default(),
            frequency: Frequency::Always,
            actions,
        };
        let files = |stage: FileStage| -> Vec<FileSpec> {
            self.files
                .iter()
                .filter(|f| f.stage == stage)
                // Every plan path is an absolute literal built by this module.
                .filter_map(|f| {
                    Some(FileSpec {
                        path: AbsPath::parse(&f.path).ok()?,
                        content: f.content.as_bytes().to_vec(),
                        mode: Some(Mode(f.mode)),
                        owner: Some(Owner::Id(0)),
                        group: Some(Owner::Id(0)),
                        append: false,
                        location: loc.clone(),
                    })
                })
                .collect()
        };
        let mut config = Config::default();
        let mut prep = Vec::new();
        if !self.sysctls.is_empty() {
            prep.push(Action::Sysctl(
                self.sysctls
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                        location: loc.clone(),
                    })
                    .collect(),
            ));
        }
        if !self.modules.is_empty() {
            prep.push(Action::Modules(
                self.modules
                    .iter()
                    .map(|m| KernelModule {
                        name: m.clone(),
                        params: Vec::new(),
                        location: loc.clone(),
                    })
                    .collect(),
            ));
        }
        if !self.packages.is_empty() {
            // Installed with the target's package manager when missing (nothing happens
            // when the OS layer already has them); an air-gapped target without them fails
            // here, naming the package.
            prep.push(Action::Packages(PackageSpec {
                refresh: false,
                upgrade: false,
                install: self
                    .packages
                    .iter()
                    .map(|name| PackageRef {
                        name: name.clone(),
                        version: None,
                    })
                    .collect(),
                remove: Vec::new(),
                location: Some(loc.clone()),
            }));
        }
        if !prep.is_empty() {
            // Its own stage, so the install pipeline runs it as its own phase without
            // the engine taking the stage's other steps for removed ones.
            config.push_step(HOST_PREP_STAGE, step("host-prep", prep));
        }
        let install = files(FileStage::Install);
        if !install.is_empty() {
            config.push_step("kubernetes", step("files", vec![Action::Files(install)]));
        }
        if !self.enable.is_empty() {
            config.push_step(
                "kubernetes",
                step(
                    "units",
                    vec![Action::Systemctl(SystemctlSpec {
                        enable: self.enable.clone(),
                        location: Some(loc.clone()),
                        ..SystemctlSpec::default()
                    })],
                ),
            );
        }
        let cni = files(FileStage::Cni);
        if !cni.is_empty() {
            config.push_step("cni", step("manifests", vec![Action::Files(cni)]));
        }
        config
    }
}

/// The engine stage that carries host preparation (modules, sysctls).
pub const HOST_PREP_STAGE: &str = "kubernetes.before";

/// The flavor's name as profiles spell it (see [`Distribution::name`]).
pub fn flavor_name(f: Flavor) -> &'static str {
    distribution(f).name()
}

pub fn cni_name(c: CniType) -> &'static str {
    match c {
        CniType::Calico => "calico",
        CniType::Cilium => "cilium",
        CniType::Flannel => "flannel",
    }
}

/// Plan one node: the flavor's [`Distribution::plan`] (each flavor runs the checks every
/// flavor shares, [`common`], first).
pub fn plan(k: &KubernetesLayer, cni: &CniLayer, target: &Target) -> Result<Plan, PlanError> {
    distribution(k.flavor).plan(k, cni, target)
}

/// What every flavor checks first: version, node name, join server and token, values.
pub(crate) struct Common<'a> {
    pub values: serde_json::Map<String, Value>,
    pub server: Option<&'a str>,
    pub token: Option<&'a str>,
}

pub(crate) fn common<'a>(k: &'a KubernetesLayer, target: &Target) -> Result<Common<'a>, PlanError> {
    let v = k.version.trim();
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(PlanError::new(
            "kubernetes.version",
            "the version must be a non-empty tag such as v1.31.4+k3s1",
        ));
    }
    check_node_name(&target.node_name)?;
    let server = k.server.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let token = k.token.as_deref().filter(|t| !t.trim().is_empty());
    if k.role == Role::Agent && server.is_none() {
        return Err(PlanError::new(
            "kubernetes.server",
            "`role: agent` needs `server`, the https:// URL of the cluster to join",
        ));
    }
    if server.is_some() && token.is_none() {
        return Err(PlanError::new(
            "kubernetes.token",
            "joining a server needs the cluster's join `token`",
        ));
    }
    if let Some(t) = token {
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PlanError::new(
                "kubernetes.token",
                "the token must not contain spaces or control characters",
            ));
        }
    }
    if let Some(s) = server {
        if !s.starts_with("https://") || s.len() <= "https://".len() {
            return Err(PlanError::new(
                "kubernetes.server",
                "the server must be an https:// URL, e.g. https://10.0.0.1:6443",
            ));
        }
        check_join_port(k.flavor, s)?;
    }
    let values = match &k.values {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => {
            return Err(PlanError::new(
                "kubernetes.values",
                "values must be a mapping of configuration keys",
            ))
        }
    };
    Ok(Common {
        values,
        server,
        token,
    })
}

/// The port a node joins an existing cluster on, when the `server:` URL names none: RKE2's
/// supervisor (9345); the API server for k3s (whose supervisor shares it) and kubeadm.
pub fn join_port(flavor: Flavor) -> u16 {
    distribution(flavor).join_port()
}

/// The Kubernetes API server's port.
pub const API_PORT: u16 = 6443;

/// A `server:` URL on the port of another flavor's join endpoint is a mistake that would
/// only show as a node that never joins: RKE2 joins on the supervisor port 9345, not on the
/// API port 6443; k3s and kubeadm join through the API port, and 9345 is RKE2's. (Another
/// port, e.g. a load balancer's 443, is the operator's choice.)
fn check_join_port(flavor: Flavor, server: &str) -> Result<(), PlanError> {
    let d = distribution(flavor);
    let (host, port) = host_port(server, d.join_port())?;
    match d.join_port_mistake(&host, port) {
        None => Ok(()),
        Some(message) => Err(PlanError::new("kubernetes.server", message)),
    }
}

/// The message for a k3s/kubeadm `server:` on RKE2's supervisor port.
pub(crate) fn api_join_port_mistake(name: &str, host: &str, port: u16) -> Option<String> {
    (port == rke2::SUPERVISOR_PORT).then(|| {
        format!(
            "{name} nodes join through the API server (port {API_PORT}), not on {}, RKE2's supervisor port: use https://{host}:{API_PORT}",
            rke2::SUPERVISOR_PORT
        )
    })
}

fn check_node_name(name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(PlanError::new(
            "target.node_name",
            format!(
                "`{name}` is not a valid node name: lower-case letters, digits, `-` and `.` (a DNS-1123 subdomain)"
            ),
        ))
    }
}

/// Split an `https://host[:port][/]` URL into host and port (default `port`).
pub(crate) fn host_port(server: &str, default_port: u16) -> Result<(String, u16), PlanError> {
    let bad = || {
        PlanError::new(
            "kubernetes.server",
            format!("`{server}` is not an https://HOST[:PORT] URL"),
        )
    };
    let rest = server.strip_prefix("https://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad());
    }
    // [v6]:port, host:port or host.
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (format!("[{h}]"), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None => default_port,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// The pod CIDR (the CNI layer's, else `default`) and the service CIDR (from `values`
/// under `service_key`, else `default_service`), checked to parse and not to overlap.
/// A pod CIDR repeated in `values` under `pod_key` must be the same.
pub(crate) fn networks(
    cni: &CniLayer,
    values: &serde_json::Map<String, Value>,
    pod_key: &str,
    service_key: &str,
    default_pod: &str,
    default_service: &str,
) -> Result<(String, String), PlanError> {
    let pod = cni
        .pod_cidr
        .as_deref()
        .map(str::trim)
        .unwrap_or(default_pod)
        .to_string();
    let pods = cidr_list(&pod).map_err(|e| PlanError::new("cni.pod_cidr", e.to_string()))?;
    if let Some(v) = values.get(pod_key) {
        let same = v
            .as_str()
            .is_some_and(|s| cidr_list(s).is_ok_and(|l| l == pods));
        if !same {
            return Err(PlanError::new(
                format!("kubernetes.values.{pod_key}"),
                format!(
                    "`{pod_key}` is {v} but the pod network is {pod}; set the pod network once, in cni.pod_cidr"
                ),
            ));
        }
    }
    let service = match values.get(service_key) {
        None => default_service.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => {
            return Err(PlanError::new(
                format!("kubernetes.values.{service_key}"),
                format!("`{service_key}` must be a CIDR string, not {other}"),
            ))
        }
    };
    let services = cidr_list(&service)
        .map_err(|e| PlanError::new(format!("kubernetes.values.{service_key}"), e.to_string()))?;
    for p in &pods {
        for s in &services {
            if p.overlaps(s) {
                return Err(PlanError::new(
                    "cni.pod_cidr",
                    format!(
                        "the pod network {pod} overlaps the service network {service} (kubernetes.values.{service_key}); they must be disjoint"
                    ),
                ));
            }
        }
    }
    Ok((pod, service))
}

/// The first IPv4 CIDR of a list (Flannel/Calico pools are per family).
pub(crate) fn first_cidr(list: &str) -> String {
    list.split(',').next().unwrap_or(list).trim().to_string()
}

/// Are `a` and `b` the same network (used to re-check pools given in CNI values)?
pub(crate) fn same_cidr(a: &str, b: &str) -> bool {
    match (Cidr::parse(a), Cidr::parse(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The layer's artifact `name` for the target's arch, or an error naming the field.
pub(crate) fn artifact<'a>(
    k: &'a [Artifact],
    field: &str,
    name: &str,
    arch: Arch,
) -> Result<&'a Artifact, PlanError> {
    k.iter()
        .find(|a| a.name == name && a.arch == arch)
        .ok_or_else(|| {
            let have: Vec<String> = k
                .iter()
                .filter(|a| a.name == name)
                .map(|a| arch_name(a.arch).to_string())
                .collect();
            let msg = if have.is_empty() {
                format!(
                    "no artifact `{name}` for {}: list it with its url and sha256",
                    arch_name(arch)
                )
            } else {
                format!(
                    "artifact `{name}` is listed for {} but not for the target's arch {}",
                    have.join(", "),
                    arch_name(arch)
                )
            };
            PlanError::missing_artifact(field, msg, name, arch)
        })
}

pub(crate) fn fetch(a: &Artifact, place: Placement) -> Fetch {
    Fetch {
        name: a.name.clone(),
        arch: a.arch,
        url: a.url.clone(),
        sha256: a.sha256.clone(),
        size: a.size,
        place,
    }
}

/// The last path segment of an artifact URL (query and fragment dropped).
pub(crate) fn url_file_name(url: &str) -> String {
    let u = url.split(['?', '#']).next().unwrap_or(url);
    u.rsplit('/').next().unwrap_or(u).to_string()
}

/// Artifacts of the target's arch whose names are not in `known` (and do not start with
/// one of `prefixes`) are refused, so a typo never silently drops a file.
pub(crate) fn unknown_artifacts(
    list: &[Artifact],
    field: &str,
    arch: Arch,
    known: &[&str],
    prefixes: &[&str],
) -> Result<(), PlanError> {
    for (i, a) in list.iter().enumerate() {
        if a.arch != arch {
            continue;
        }
        if known.contains(&a.name.as_str()) || prefixes.iter().any(|p| a.name.starts_with(p)) {
            continue;
        }
        let mut all: Vec<String> = known.iter().map(|s| format!("`{s}`")).collect();
        all.extend(prefixes.iter().map(|p| format!("`{p}…`")));
        return Err(PlanError::new(
            format!("{field}[{i}].name"),
            format!(
                "unknown artifact `{}`; this flavor uses {}",
                a.name,
                all.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A plain (non-secret) install-stage file.
pub(crate) fn file(path: &str, content: String, mode: u32) -> PlanFile {
    PlanFile {
        path: path.to_string(),
        content,
        mode,
        secret: false,
        stage: FileStage::Install,
    }
}

/// A secret file: always 0600.
pub(crate) fn secret_file(path: &str, content: String) -> PlanFile {
    PlanFile {
        path: path.to_string(),
        content,
        mode: 0o600,
        secret: true,
        stage: FileStage::Install,
    }
}

/// `registries.yaml` for k3s/RKE2 from `values.registries` (`mirrors`/`configs`), taken
/// out of the values so it is not passed on as a config key. Credentials make it secret.
pub(crate) fn registries_yaml(
    values: &mut serde_json::Map<String, Value>,
    path: &str,
) -> Result<Option<PlanFile>, PlanError> {
    let Some(reg) = values.remove("registries") else {
        return Ok(None);
    };
    let Value::Object(m) = &reg else {
        return Err(PlanError::new(
            "kubernetes.values.registries",
            "registries must be a mapping with `mirrors` and/or `configs`",
        ));
    };
    for k in m.keys() {
        if k != "mirrors" && k != "configs" {
            return Err(PlanError::new(
                format!("kubernetes.values.registries.{k}"),
                "unknown key; registries.yaml has `mirrors` and `configs`",
            ));
        }
    }
    let has_auth = m
        .get("configs")
        .and_then(Value::as_object)
        .is_some_and(|c| c.values().any(|r| r.get("auth").is_some()));
    let content = render::yaml(&reg);
    Ok(Some(if has_auth {
        secret_file(path, content)
    } else {
        file(path, content, 0o644)
    }))
}

pub(crate) const HEADER: &str =
    "# Written by Cairn from the cluster profile; changes are overwritten.\n";
