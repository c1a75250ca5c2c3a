//! kubeadm (§3): host preparation (`overlay`/`br_netfilter`, bridge and forwarding
//! sysctls, containerd with the CRI plugin enabled and `SystemdCgroup = true`, crictl),
//! raw binaries from dl.k8s.io in `/usr/local/bin`, the kubelet unit and its
//! `10-kubeadm.conf` drop-in (kubernetes/release templates with the `/usr/local/bin`
//! path), and `kubeadm.k8s.io/v1beta4` `InitConfiguration`/`ClusterConfiguration` or
//! `JoinConfiguration` (bootstrap token + CA-hash discovery) in a 0600 file. The CNI is
//! applied after `init` with the admin kubeconfig.

use cairn_proto::profile::{CniLayer, CniType, KubernetesLayer, Role};
use serde_json::{json, Value};

use super::cni;
use super::flavor::HostPrepError;
use super::render;
use super::{
    artifact, common, fetch, file, host_port, networks, secret_file, unknown_artifacts,
    url_file_name, CniDelivery, FileStage, Placement, Plan, PlanError, PlanFile, Target, HEADER,
};
use crate::host::{Cmd, Host};

pub const BIN_DIR: &str = "/usr/local/bin";
/// The helm the agent runs (Cilium as the CNI, add-on charts).
pub const HELM: &str = "/usr/local/bin/helm";
/// The target's filesystem table, whose swap entries are commented out.
pub const FSTAB: &str = "/etc/fstab";
/// What precedes a swap entry Cairn commented out in [`FSTAB`].
pub const SWAP_OFF_MARK: &str = "#cairn: swap off for the kubelet# ";
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
pub const CERTS_D: &str = "/etc/containerd/certs.d";
pub const CRICTL_CONFIG: &str = "/etc/crictl.yaml";
pub const KUBELET_UNIT: &str = "/etc/systemd/system/kubelet.service";
pub const KUBELET_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf";
pub const CONTAINERD_UNIT: &str = "/usr/local/lib/systemd/system/containerd.service";
/// containerd's systemd drop-ins (the proxy's, `super::proxy`).
pub const CONTAINERD_DROPINS: &str = "/etc/systemd/system/containerd.service.d";
/// The artifacts that make up containerd: a new one means restarting it.
pub const CONTAINERD_ARTIFACTS: &[&str] = &["containerd", "runc"];

/// Whether a plan file is read by containerd (its configuration, registry hosts, unit and
/// drop-ins): when one changes, containerd is restarted before kubeadm runs.
pub fn is_containerd_input(path: &str) -> bool {
    let under = |dir: &str| {
        path.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    path == CONTAINERD_CONFIG
        || path == CONTAINERD_UNIT
        || under(CERTS_D)
        || under(CONTAINERD_DROPINS)
}
pub const INIT_CONFIG: &str = "/etc/cairn/kubeadm/init.yaml";
pub const JOIN_CONFIG: &str = "/etc/cairn/kubeadm/join.yaml";
pub const CNI_DIR: &str = "/var/lib/cairn/kubernetes/cni";
pub const KUBECONFIG: &str = "/etc/kubernetes/admin.conf";
/// The kubelet's kubeconfig, written by `kubeadm join` (and init).
pub const KUBELET_KUBECONFIG: &str = "/etc/kubernetes/kubelet.conf";
pub const CRI_SOCKET: &str = "unix:///var/run/containerd/containerd.sock";
pub const API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// kubeadm has no pod CIDR of its own; Flannel's is the common choice.
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
pub const DEFAULT_SANDBOX: &str = "registry.k8s.io/pause:3.10";

/// Keys of `kubernetes.values` for kubeadm (anything else is refused).
const KNOWN_VALUES: &[&str] = &[
    "podSubnet",
    "serviceSubnet",
    "dnsDomain",
    "controlPlaneEndpoint",
    "certSANs",
    "caCertHashes",
    "unsafeSkipCAVerification",
    "certificateKey",
    "kubeletExtraArgs",
    "tokenTTL",
    "sandboxImage",
    "registries",
];

pub const MODULES: &[&str] = &["overlay", "br_netfilter"];
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
];

/// kubelet.service from kubernetes/release (rpm/deb templates), binary in /usr/local/bin.
pub fn kubelet_unit() -> String {
    format!(
        "[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={BIN_DIR}/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"
    )
}

/// 10-kubeadm.conf from kubernetes/release, binary in /usr/local/bin.
pub fn kubelet_dropin() -> String {
    format!(
        "# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"
Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"
# This is a file that \"kubeadm init\" and \"kubeadm join\" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS should be sourced from this file.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart={BIN_DIR}/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"
    )
}

/// containerd.service from the containerd release (used with the containerd artifact).
pub fn containerd_unit() -> String {
    "[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target dbus.service

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd

Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"
    .to_string()
}

fn toml_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// containerd's config (version 2, read by containerd 1.6/1.7 and, migrated, by 2.x):
/// no disabled plugins (so CRI is served), runc with the systemd cgroup driver, CNI dirs,
/// per-registry `hosts.toml` under certs.d, and registry credentials when given.
pub fn containerd_config(sandbox: &str, auths: &[RegistryAuth]) -> String {
    let mut s = String::from(HEADER);
    s.push_str(&format!(
        "version = 2
disabled_plugins = []

[plugins.\"io.containerd.grpc.v1.cri\"]
  sandbox_image = {sandbox}

[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]
  runtime_type = \"io.containerd.runc.v2\"

[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]
  SystemdCgroup = true

[plugins.\"io.containerd.grpc.v1.cri\".cni]
  bin_dir = \"{CNI_BIN_DIR}\"
  conf_dir = \"/etc/cni/net.d\"

[plugins.\"io.containerd.grpc.v1.cri\".registry]
  config_path = \"{CERTS_D}\"
",
        sandbox = toml_str(sandbox)
    ));
    for a in auths {
        s.push_str(&format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.{}.auth]\n",
            toml_str(&a.registry)
        ));
        match &a.credential {
            RegistryCredential::Basic { username, password } => s.push_str(&format!(
                "  username = {}\n  password = {}\n",
                toml_str(username),
                toml_str(password)
            )),
            RegistryCredential::IdentityToken(t) => {
                s.push_str(&format!("  identitytoken = {}\n", toml_str(t)))
            }
        }
    }
    s
}

pub fn crictl_config() -> String {
    format!("{HEADER}runtime-endpoint: {CRI_SOCKET}\nimage-endpoint: {CRI_SOCKET}\ntimeout: 10\n")
}

/// `(1, 31)` from `v1.31.4`.
fn minor(version: &str) -> Option<(u32, u32)> {
    let v = version.trim().trim_start_matches('v');
    let mut it = v.split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn is_bootstrap_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    t.split_once('.')
        .is_some_and(|(a, b)| ok(a, 6) && ok(b, 16))
}

fn string_list(
    values: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Vec<String>, PlanError> {
    match values.get(key) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    PlanError::new(
                        format!("kubernetes.values.{key}"),
                        "must be a list of strings",
                    )
                })
            })
            .collect(),
        Some(_) => Err(PlanError::new(
            format!("kubernetes.values.{key}"),
            "must be a string or a list of strings",
        )),
    }
}

fn opt_str<'a>(
    values: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, PlanError> {
    match values.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(PlanError::new(
            format!("kubernetes.values.{key}"),
            "must be a string",
        )),
    }
}

/// `kubeletExtraArgs` as v1beta4's list of `{name, value}`.
fn kubelet_args(values: &serde_json::Map<String, Value>) -> Result<Value, PlanError> {
    let mut out = vec![];
    if let Some(v) = values.get("kubeletExtraArgs") {
        let Some(m) = v.as_object() else {
            return Err(PlanError::new(
                "kubernetes.values.kubeletExtraArgs",
                "must be a mapping of flag name to value",
            ));
        };
        for (k, v) in m {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Bool(_) | Value::Number(_) => v.to_string(),
                _ => {
                    return Err(PlanError::new(
                        format!("kubernetes.values.kubeletExtraArgs.{k}"),
                        "must be a string",
                    ))
                }
            };
            out.push(json!({"name": k, "value": value}));
        }
    }
    Ok(Value::Array(out))
}

fn node_registration(
    target: &Target,
    values: &serde_json::Map<String, Value>,
) -> Result<Value, PlanError> {
    let mut nr = json!({"name": target.node_name, "criSocket": CRI_SOCKET});
    let args = kubelet_args(values)?;
    if args.as_array().is_some_and(|a| !a.is_empty()) {
        nr["kubeletExtraArgs"] = args;
    }
    Ok(nr)
}

/// Credentials for one registry in containerd's CRI config (hosts.toml has no auth).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub registry: String,
    pub credential: RegistryCredential,
}

#[derive(Clone, PartialEq, Eq)]
pub enum RegistryCredential {
    Basic { username: String, password: String },
    IdentityToken(String),
}

/// Registry mirrors as containerd `hosts.toml` files (with a registry's CA when
/// `configs.HOST.tls.ca_file` names one); credentials for config.toml.
fn registries(
    values: &serde_json::Map<String, Value>,
) -> Result<(Vec<PlanFile>, Vec<RegistryAuth>), PlanError> {
    let mut files = Vec::new();
    let mut auths = Vec::new();
    let Some(reg) = values.get("registries") else {
        return Ok((files, auths));
    };
    let field = "kubernetes.values.registries";
    let reg = reg.as_object().ok_or_else(|| {
        PlanError::new(field, "must be a mapping with `mirrors` and/or `configs`")
    })?;
    for k in reg.keys() {
        if k != "mirrors" && k != "configs" {
            return Err(PlanError::new(
                format!("{field}.{k}"),
                "unknown key; use `mirrors` and `configs`",
            ));
        }
    }
    if let Some(m) = reg.get("mirrors").and_then(Value::as_object) {
        for (name, spec) in m {
            let endpoints: Vec<&str> = spec
                .get("endpoint")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if endpoints.is_empty() || name.contains('/') || name.contains("..") {
                return Err(PlanError::new(
                    format!("{field}.mirrors.{name}"),
                    "a mirror needs a registry host name and an `endpoint` list",
                ));
            }
            let server = if name == "docker.io" {
                "https://registry-1.docker.io".to_string()
            } else {
                format!("https://{name}")
            };
            let mut text = format!("{HEADER}server = {}\n", toml_str(&server));
            for e in endpoints {
                text.push_str(&format!(
                    "\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    toml_str(e)
                ));
            }
            let dir = if name == "*" {
                "_default"
            } else {
                name.as_str()
            };
            files.push(file(&format!("{CERTS_D}/{dir}/hosts.toml"), text, 0o644));
        }
    }
    if let Some(c) = reg.get("configs").and_then(Value::as_object) {
        for (name, spec) in c {
            if let Some(auth) = spec.get("auth") {
                let u = auth.get("username").and_then(Value::as_str);
                let p = auth.get("password").and_then(Value::as_str);
                let t = auth.get("identity_token").and_then(Value::as_str);
                let credential =
                    match (u, p, t) {
                        (Some(u), Some(p), _) => RegistryCredential::Basic {
                            username: u.to_string(),
                            password: p.to_string(),
                        },
                        (None, None, Some(t)) => RegistryCredential::IdentityToken(t.to_string()),
                        _ => return Err(PlanError::new(
                            format!("{field}.configs.{name}.auth"),
                            "kubeadm hosts support `username` and `password`, or `identity_token`",
                        )),
                    };
                auths.push(RegistryAuth {
                    registry: name.clone(),
                    credential,
                });
            }
            let ca = spec
                .get("tls")
                .and_then(|t| t.get("ca_file"))
                .and_then(Value::as_str);
            if let Some(ca) = ca {
                if name.contains('/') || name.contains("..") || name == "*" {
                    return Err(PlanError::new(
                        format!("{field}.configs.{name}"),
                        "a registry host name such as registry.example.org:5000",
                    ));
                }
                let path = format!("{CERTS_D}/{name}/hosts.toml");
                if files.iter().any(|f: &PlanFile| f.path == path) {
                    continue; // a mirror of its own already; the profile's file wins
                }
                let server = format!("https://{name}");
                let text = format!(
                    "{HEADER}server = {s}\n\n[host.{s}]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {}\n",
                    toml_str(ca),
                    s = toml_str(&server)
                );
                files.push(file(&path, text, 0o644));
            }
        }
    }
    Ok((files, auths))
}

fn yaml_docs(docs: &[Value]) -> String {
    let mut s = String::from(HEADER);
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            s.push_str("---\n");
        }
        s.push_str(&render::yaml(d));
    }
    s
}

pub fn plan(k: &KubernetesLayer, cni: &CniLayer, target: &Target) -> Result<Plan, PlanError> {
    let c = common(k, target)?;
    let values = c.values;
    for key in values.keys() {
        if !KNOWN_VALUES.contains(&key.as_str()) {
            return Err(PlanError::new(
                format!("kubernetes.values.{key}"),
                format!("unknown kubeadm value; known: {}", KNOWN_VALUES.join(", ")),
            ));
        }
    }
    match minor(&k.version) {
        Some((1, m)) if m >= 31 => {}
        _ => {
            return Err(PlanError::new(
                "kubernetes.version",
                format!(
                    "`{}`: Cairn writes kubeadm.k8s.io/v1beta4 configuration, which needs Kubernetes v1.31 or newer",
                    k.version
                ),
            ))
        }
    }
    let (pod, service) = networks(
        cni,
        &values,
        "podSubnet",
        "serviceSubnet",
        DEFAULT_POD_CIDR,
        DEFAULT_SERVICE_CIDR,
    )?;
    if let Some(t) = c.token {
        if !is_bootstrap_token(t) {
            return Err(PlanError::new(
                "kubernetes.token",
                "a kubeadm bootstrap token has the form [a-z0-9]{6}.[a-z0-9]{16}",
            ));
        }
    }

    // Artifacts.
    let arch = target.arch;
    let field = "kubernetes.artifacts";
    unknown_artifacts(
        &k.artifacts,
        field,
        arch,
        &[
            "kubeadm",
            "kubelet",
            "kubectl",
            "crictl",
            "cni-plugins",
            "containerd",
            "runc",
        ],
        &[],
    )?;
    let mut fetches = Vec::new();
    for name in ["kubeadm", "kubelet", "kubectl"] {
        let a = artifact(&k.artifacts, field, name, arch)?;
        fetches.push(fetch(
            a,
            Placement::Binary {
                path: format!("{BIN_DIR}/{name}"),
                mode: 0o755,
            },
        ));
    }
    fetches.push(fetch(
        artifact(&k.artifacts, field, "crictl", arch)?,
        Placement::Extract {
            dir: BIN_DIR.into(),
        },
    ));
    fetches.push(fetch(
        artifact(&k.artifacts, field, "cni-plugins", arch)?,
        Placement::Extract {
            dir: CNI_BIN_DIR.into(),
        },
    ));
    let mut files = Vec::new();
    let mut packages = Vec::new();
    let mut notes = Vec::new();
    match k
        .artifacts
        .iter()
        .find(|a| a.name == "containerd" && a.arch == arch)
    {
        Some(a) => {
            fetches.push(fetch(
                a,
                Placement::Extract {
                    dir: "/usr/local".into(),
                },
            ));
            let runc = artifact(&k.artifacts, field, "runc", arch)?;
            fetches.push(fetch(
                runc,
                Placement::Binary {
                    path: "/usr/local/sbin/runc".into(),
                    mode: 0o755,
                },
            ));
            files.push(file(CONTAINERD_UNIT, containerd_unit(), 0o644));
        }
        None => {
            packages.push("containerd".to_string());
            notes.push("containerd comes from the distribution's package (no `containerd` artifact listed)".into());
        }
    }

    // Host preparation and runtime.
    let sandbox = opt_str(&values, "sandboxImage")?.unwrap_or(DEFAULT_SANDBOX);
    let (host_files, auths) = registries(&values)?;
    files.extend(host_files);
    let containerd = containerd_config(sandbox, &auths);
    files.push(if auths.is_empty() {
        file(CONTAINERD_CONFIG, containerd, 0o644)
    } else {
        secret_file(CONTAINERD_CONFIG, containerd)
    });
    files.push(file(CRICTL_CONFIG, crictl_config(), 0o644));
    files.push(file(KUBELET_UNIT, kubelet_unit(), 0o644));
    files.push(file(KUBELET_DROPIN, kubelet_dropin(), 0o644));

    let nr = node_registration(target, &values)?;
    let kubelet_cfg = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
    });
    let bootstrap;
    let mut cni_delivery = CniDelivery::FromServer;
    if let Some(server) = c.server {
        // Join: a worker, or another control-plane node (role server).
        let (host, port) = host_port(server, 6443)?;
        let hashes = string_list(&values, "caCertHashes")?;
        let skip = values
            .get("unsafeSkipCAVerification")
            .and_then(Value::as_bool)
            == Some(true);
        if hashes.is_empty() && !skip {
            return Err(PlanError::new(
                "kubernetes.values.caCertHashes",
                "joining needs the cluster CA's hash (`sha256:<hex>`, from `kubeadm token create --print-join-command`), or an explicit `unsafeSkipCAVerification: true`",
            ));
        }
        for (i, h) in hashes.iter().enumerate() {
            let ok = h
                .strip_prefix("sha256:")
                .is_some_and(|x| x.len() == 64 && x.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(PlanError::new(
                    format!("kubernetes.values.caCertHashes[{i}]"),
                    "a CA hash is `sha256:` followed by 64 hex digits",
                ));
            }
        }
        let mut bt = json!({
            "apiServerEndpoint": format!("{host}:{port}"),
            "token": c.token.unwrap_or_default(),
        });
        if hashes.is_empty() {
            bt["unsafeSkipCAVerification"] = json!(true);
        } else {
            bt["caCertHashes"] = json!(hashes);
        }
        let mut join = json!({
            "apiVersion": API_VERSION,
            "kind": "JoinConfiguration",
            "discovery": {"bootstrapToken": bt},
            "nodeRegistration": nr,
        });
        if k.role == Role::Server {
            let key = opt_str(&values, "certificateKey")?.ok_or_else(|| {
                PlanError::new(
                    "kubernetes.values.certificateKey",
                    "joining as a control-plane node (`role: server` with `server`) needs the certificateKey used with `kubeadm init --upload-certs`",
                )
            })?;
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PlanError::new(
                    "kubernetes.values.certificateKey",
                    "the certificate key is 64 hex digits",
                ));
            }
            join["controlPlane"] = json!({"certificateKey": key});
        }
        files.push(secret_file(JOIN_CONFIG, yaml_docs(&[join, kubelet_cfg])));
        bootstrap = Some(vec![
            "kubeadm".into(),
            "join".into(),
            "--config".into(),
            JOIN_CONFIG.into(),
        ]);
    } else {
        // First control-plane node.
        let mut init = json!({
            "apiVersion": API_VERSION,
            "kind": "InitConfiguration",
            "nodeRegistration": nr,
        });
        if let Some(t) = c.token {
            let ttl = opt_str(&values, "tokenTTL")?.unwrap_or("24h0m0s");
            init["bootstrapTokens"] = json!([{
                "token": t,
                "ttl": ttl,
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
                "usages": ["signing", "authentication"],
            }]);
        }
        let endpoint = opt_str(&values, "controlPlaneEndpoint")?;
        if let Some(key) = opt_str(&values, "certificateKey")? {
            if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PlanError::new(
                    "kubernetes.values.certificateKey",
                    "the certificate key is 64 hex digits",
                ));
            }
            init["certificateKey"] = json!(key);
        }
        let mut networking = json!({"podSubnet": pod, "serviceSubnet": service});
        if let Some(d) = opt_str(&values, "dnsDomain")? {
            networking["dnsDomain"] = json!(d);
        }
        let mut cluster = json!({
            "apiVersion": API_VERSION,
            "kind": "ClusterConfiguration",
            "kubernetesVersion": k.version.trim(),
            "networking": networking,
        });
        if let Some(e) = endpoint {
            cluster["controlPlaneEndpoint"] = json!(e);
        }
        let sans = string_list(&values, "certSANs")?;
        if !sans.is_empty() {
            cluster["apiServer"] = json!({"certSANs": sans});
        }
        let doc = yaml_docs(&[init, cluster, kubelet_cfg]);
        files.push(
            if c.token.is_some() || values.contains_key("certificateKey") {
                secret_file(INIT_CONFIG, doc)
            } else {
                file(INIT_CONFIG, doc, 0o600)
            },
        );
        let mut argv: Vec<String> = vec![
            "kubeadm".into(),
            "init".into(),
            "--config".into(),
            INIT_CONFIG.into(),
        ];
        if endpoint.is_some() {
            argv.push("--upload-certs".into());
        }
        bootstrap = Some(argv);

        // The CNI, applied once the API answers.
        let cni_field = "cni.artifacts";
        let cni_file = |name: &str, content: String| PlanFile {
            path: format!("{CNI_DIR}/{name}"),
            content,
            mode: 0o600,
            secret: false,
            stage: FileStage::Cni,
        };
        cni_delivery = match cni.cni {
            CniType::Flannel => {
                unknown_artifacts(&cni.artifacts, cni_field, arch, &[], &[])?;
                let f = cni_file("kube-flannel.yml", cni::flannel_manifest(cni, &pod)?);
                let path = f.path.clone();
                files.push(f);
                CniDelivery::Apply {
                    kubeconfig: KUBECONFIG.into(),
                    manifests: vec![path],
                }
            }
            CniType::Calico => {
                unknown_artifacts(&cni.artifacts, cni_field, arch, &["tigera-operator"], &[])?;
                let op = artifact(&cni.artifacts, cni_field, "tigera-operator", arch)?;
                let op_file = url_file_name(&op.url);
                fetches.push(fetch(
                    op,
                    Placement::Into {
                        dir: CNI_DIR.into(),
                        file: op_file.clone(),
                    },
                ));
                let values = cni::chart_values(cni, &pod, false)?;
                let f = cni_file(
                    "calico-custom-resources.yaml",
                    cni::calico_custom_resources(&values),
                );
                let cr = f.path.clone();
                files.push(f);
                CniDelivery::Apply {
                    kubeconfig: KUBECONFIG.into(),
                    manifests: vec![format!("{CNI_DIR}/{op_file}"), cr],
                }
            }
            CniType::Cilium => {
                unknown_artifacts(&cni.artifacts, cni_field, arch, &["cilium", "helm"], &[])?;
                let chart = artifact(&cni.artifacts, cni_field, "cilium", arch)?;
                let helm = artifact(&cni.artifacts, cni_field, "helm", arch)?;
                let chart_file = url_file_name(&chart.url);
                fetches.push(fetch(
                    chart,
                    Placement::Into {
                        dir: CNI_DIR.into(),
                        file: chart_file.clone(),
                    },
                ));
                // Helm publishes only `helm-vX.Y.Z-linux-ARCH.tar.gz`, with the binary at
                // `linux-ARCH/helm`.
                fetches.push(fetch(
                    helm,
                    Placement::Member {
                        member: helm_member(arch),
                        path: HELM.into(),
                        mode: 0o755,
                    },
                ));
                let values = cni::chart_values(cni, &pod, false)?;
                let mut text = String::from(HEADER);
                text.push_str(&render::yaml(&values));
                let f = cni_file("cilium-values.yaml", text);
                let values_file = f.path.clone();
                files.push(f);
                CniDelivery::Helm {
                    kubeconfig: KUBECONFIG.into(),
                    release: "cilium".into(),
                    namespace: "kube-system".into(),
                    chart_artifact: format!("{CNI_DIR}/{chart_file}"),
                    values_file,
                }
            }
        };
    }

    Ok(Plan {
        flavor: k.flavor,
        version: k.version.trim().to_string(),
        node_name: target.node_name.clone(),
        role: k.role,
        cni: cni.cni,
        service: "kubelet".into(),
        pod_cidr: pod,
        service_cidr: service,
        kubeconfig: (k.role == Role::Server).then(|| KUBECONFIG.to_string()),
        files,
        fetch: fetches,
        modules: MODULES.iter().map(|s| s.to_string()).collect(),
        sysctls: SYSCTLS
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        enable: vec!["containerd.service".into(), "kubelet.service".into()],
        packages,
        bootstrap,
        cni_delivery,
        notes,
    })
}

/// The path of the helm binary inside Helm's release tarball for `arch`.
pub fn helm_member(arch: cairn_proto::profile::Arch) -> String {
    format!("linux-{}/helm", super::arch_name(arch))
}

/// `fstab` with every active swap entry (third field `swap`) commented out, byte for byte
/// otherwise; `None` when there is none.
pub fn fstab_without_swap(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() + 64);
    let mut changed = false;
    for line in text.split_inclusive(|b| *b == b'\n') {
        let trimmed = line.trim_ascii_start();
        let swap = !trimmed.starts_with(b"#")
            && trimmed
                .split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty())
                .nth(2)
                == Some(b"swap".as_slice());
        if swap {
            out.extend_from_slice(SWAP_OFF_MARK.as_bytes());
            changed = true;
        }
        out.extend_from_slice(line);
    }
    changed.then_some(out)
}

/// Turn swap off for good: the target's fstab swap entries commented out (so no swap unit
/// is generated at the next boot), and on the running system `swapoff -a` while
/// `/proc/swaps` lists an active area.
pub fn disable_swap(host: &Host) -> Result<Vec<String>, HostPrepError> {
    let fs = |what: &str| {
        let what = what.to_string();
        move |source| HostPrepError::Fs { what, source }
    };
    let mut changes = Vec::new();
    if let Some(text) = host.read_opt(FSTAB).map_err(fs("reading /etc/fstab"))? {
        if let Some(new) = fstab_without_swap(&text) {
            let meta = host.meta(FSTAB).map_err(fs("inspecting /etc/fstab"))?;
            let (mode, owner) = meta
                .map(|m| (m.mode, Some((m.uid, m.gid))))
                .unwrap_or((0o644, None));
            let owner = owner.filter(|_| nix::unistd::geteuid().is_root());
            host.write_atomic(FSTAB, &new, mode, owner)
                .map_err(fs("writing /etc/fstab"))?;
            changes.push(format!("commented out the swap entries of {FSTAB}"));
        }
    }
    if host.is_live() {
        let active = host
            .read_text("/proc/swaps")
            .is_some_and(|t| t.lines().skip(1).any(|l| !l.trim().is_empty()));
        if active {
            host.check_in_target(Cmd::new("swapoff").arg("-a"))
                .map_err(|source| HostPrepError::Run {
                    what: "turning swap off (`swapoff -a`)".into(),
                    source,
                })?;
            changes.push("turned swap off (swapoff -a)".into());
        }
    }
    Ok(changes)
}

/// kubeadm as a [`Distribution`](super::Distribution).
pub struct Kubeadm;

impl super::Distribution for Kubeadm {
    fn name(&self) -> &'static str {
        "kubeadm"
    }

    fn plan(
        &self,
        k: &KubernetesLayer,
        cni: &CniLayer,
        target: &Target,
    ) -> Result<Plan, PlanError> {
        plan(k, cni, target)
    }

    fn join_port(&self) -> u16 {
        super::API_PORT
    }

    fn join_port_mistake(&self, host: &str, port: u16) -> Option<String> {
        super::api_join_port_mistake(self.name(), host, port)
    }

    /// The `kubectl` artifact.
    fn kubectl(&self) -> Vec<String> {
        vec![format!("{BIN_DIR}/kubectl")]
    }

    fn manifests_dir(&self) -> Option<&'static str> {
        None
    }

    fn static_charts_dir(&self) -> Option<&'static str> {
        None
    }

    fn helm(&self) -> Option<String> {
        Some(HELM.into())
    }

    /// Drop-ins for containerd and the kubelet.
    fn apply_proxy(&self, plan: &mut Plan, env_lines: &str) {
        super::proxy::systemd_dropins(plan, env_lines, &["containerd", "kubelet"]);
    }

    /// The kubelet refuses to start with swap on (unless configured for swap, which
    /// Cairn does not do): swap is turned off persistently.
    fn prepare_host(&self, host: &Host, _plan: &Plan) -> Result<Vec<String>, HostPrepError> {
        disable_swap(host)
    }

    fn runtime_unit(&self) -> Option<&'static str> {
        Some("containerd.service")
    }

    fn is_runtime_input(&self, path: &str) -> bool {
        is_containerd_input(path)
    }

    fn runtime_artifacts(&self) -> &'static [&'static str] {
        CONTAINERD_ARTIFACTS
    }

    /// `kubeadm init` writes the admin kubeconfig; `join` the kubelet's.
    fn bootstrapped_marker(&self, plan: &Plan) -> Option<&'static str> {
        let argv = plan.bootstrap.as_ref()?;
        Some(if is_init(argv) {
            KUBECONFIG
        } else {
            KUBELET_KUBECONFIG
        })
    }

    /// `kubeadm upgrade apply VERSION --yes` on the first control-plane node, `kubeadm
    /// upgrade node` on joined ones, with the new kubeadm.
    fn upgrade_command(&self, plan: &Plan) -> Option<Vec<String>> {
        let argv = plan.bootstrap.as_ref()?;
        let kubeadm = argv.first()?.clone();
        Some(if is_init(argv) {
            vec![
                kubeadm,
                "upgrade".into(),
                "apply".into(),
                plan.version.clone(),
                "--yes".into(),
            ]
        } else {
            vec![kubeadm, "upgrade".into(), "node".into()]
        })
    }
}

fn is_init(argv: &[String]) -> bool {
    argv.get(1).map(String::as_str) == Some("init")
}
