//! k3s (§1): the binary per arch in `/usr/local/bin/k3s`, the unit and env file exactly as
//! its install script writes them (no flags in `ExecStart`), settings in
//! `/etc/rancher/k3s/config.yaml.d/`, the join token in a 0600 `token-file`, air-gap image
//! archives in `agent/images/`, and Calico/Cilium as `HelmChart`s in the server's
//! auto-deploy directory with Flannel and its network policy controller turned off.

use cairn_proto::profile::{CniLayer, CniType, KubernetesLayer, Role};
use serde_json::{json, Value};

use super::cni;
use super::render;
use super::{
    artifact, common, fetch, file, host_port, networks, registries_yaml, secret_file,
    unknown_artifacts, url_file_name, CniDelivery, Placement, Plan, PlanError, Target, HEADER,
};

pub const BIN: &str = "/usr/local/bin/k3s";
pub const CONFIG_DIR: &str = "/etc/rancher/k3s/config.yaml.d";
/// User values from the profile (earlier, so Cairn's managed keys win).
pub const VALUES_DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/50-cairn-values.yaml";
/// Settings Cairn owns: node name, networks, join, CNI switches.
pub const CAIRN_DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/90-cairn.yaml";
pub const TOKEN_FILE: &str = "/etc/rancher/k3s/cairn-token";
pub const REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// Chart archives served to the helm-controller (`/static/charts/FILE` on the API).
pub const STATIC_CHARTS_DIR: &str = "/var/lib/rancher/k3s/server/static/charts";
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
pub const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
pub const DEFAULT_POD_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";

/// Keys Cairn sets itself; a profile's `values` may not set them differently.
const MANAGED: &[&str] = &[
    "server",
    "token",
    "token-file",
    "agent-token",
    "node-name",
    "flannel-backend",
    "disable-network-policy",
];

/// The unit `install.sh` writes (§1.3) for `server` (`k3s.service`) or `agent`
/// (`k3s-agent.service`), with no arguments after the command.
pub fn unit(role: Role) -> String {
    let (name, cmd) = match role {
        Role::Server => ("k3s", "server"),
        Role::Agent => ("k3s-agent", "agent"),
    };
    format!(
        "[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-/etc/systemd/system/{name}.service.env
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={BIN} \\
    {cmd} \\

"
    )
}

pub fn service_name(role: Role) -> &'static str {
    match role {
        Role::Server => "k3s",
        Role::Agent => "k3s-agent",
    }
}

pub fn plan(k: &KubernetesLayer, cni: &CniLayer, target: &Target) -> Result<Plan, PlanError> {
    let c = common(k, target)?;
    let mut values = c.values;
    for key in MANAGED {
        if values.contains_key(*key) {
            return Err(PlanError::new(
                format!("kubernetes.values.{key}"),
                format!("`{key}` is set by Cairn from the profile (server, token, node name, cni); remove it from values"),
            ));
        }
    }
    let registries = registries_yaml(&mut values, super::k3s::REGISTRIES)?;
    let (pod, service) = networks(
        cni,
        &values,
        "cluster-cidr",
        "service-cidr",
        DEFAULT_POD_CIDR,
        DEFAULT_SERVICE_CIDR,
    )?;
    values.remove("cluster-cidr");

    // Artifacts: the binary, and optional air-gap image archives.
    unknown_artifacts(
        &k.artifacts,
        "kubernetes.artifacts",
        target.arch,
        &["k3s"],
        &["k3s-airgap-images"],
    )?;
    let bin = artifact(&k.artifacts, "kubernetes.artifacts", "k3s", target.arch)?;
    let mut fetches = vec![fetch(
        bin,
        Placement::Binary {
            path: BIN.into(),
            mode: 0o755,
        },
    )];
    for a in k
        .artifacts
        .iter()
        .filter(|a| a.arch == target.arch && a.name.starts_with("k3s-airgap-images"))
    {
        fetches.push(fetch(
            a,
            Placement::Into {
                dir: IMAGES_DIR.into(),
                file: url_file_name(&a.url),
            },
        ));
    }

    // Cairn's drop-in.
    let mut managed = serde_json::Map::new();
    managed.insert("node-name".into(), json!(target.node_name));
    if let Some(server) = c.server {
        let (host, port) = host_port(server, 6443)?;
        managed.insert("server".into(), json!(format!("https://{host}:{port}")));
    }
    if c.token.is_some() {
        managed.insert("token-file".into(), json!(TOKEN_FILE));
    }
    let mut notes = Vec::new();
    let mut files = Vec::new();
    let cni_delivery;
    if k.role == Role::Server {
        managed.insert("cluster-cidr".into(), json!(pod));
        managed.insert("service-cidr".into(), json!(service));
        values.remove("service-cidr");
        match cni.cni {
            CniType::Flannel => {
                let backend = cni::flannel_backend(cni, &[])?;
                managed.insert("flannel-backend".into(), json!(backend));
                notes.push(format!(
                    "Flannel is built into k3s {}; cni.version {} is informational",
                    k.version, cni.version
                ));
                cni_delivery = CniDelivery::Embedded;
            }
            CniType::Calico | CniType::Cilium => {
                managed.insert("flannel-backend".into(), json!("none"));
                managed.insert("disable-network-policy".into(), json!(true));
                let values = cni::chart_values(cni, &pod, cni.cni == CniType::Calico)?;
                let (name, text) = cni::k3s_helm_chart(cni, &values);
                let path = format!("{MANIFESTS_DIR}/cairn-cni-{name}.yaml");
                files.push(file(&path, text, 0o600));
                cni_delivery = CniDelivery::AutoDeploy {
                    dir: MANIFESTS_DIR.into(),
                    files: vec![path],
                };
            }
        }
    } else {
        // Agents take the networks from their server; CIDR flags are server-only.
        values.remove("service-cidr");
        cni_delivery = CniDelivery::FromServer;
    }

    let role = k.role;
    let svc = service_name(role);
    let mut header_values = String::from(HEADER);
    header_values.push_str(&render::yaml(&Value::Object(values.clone())));
    if !values.is_empty() {
        files.push(file(VALUES_DROPIN, header_values, 0o600));
    }
    let mut cairn = String::from(HEADER);
    cairn.push_str(&render::yaml(&Value::Object(managed)));
    files.push(file(CAIRN_DROPIN, cairn, 0o600));
    if let Some(t) = c.token {
        files.push(secret_file(TOKEN_FILE, format!("{t}\n")));
    }
    if let Some(r) = registries {
        files.push(r);
    }
    files.push(file(
        &format!("/etc/systemd/system/{svc}.service"),
        unit(role),
        0o644,
    ));
    // install.sh: touch, chmod 0600, then the K3S_*/CONTAINERD_*/proxy variables; Cairn
    // passes none (everything is in config.yaml.d), so the file is empty.
    files.push(file(
        &format!("/etc/systemd/system/{svc}.service.env"),
        String::new(),
        0o600,
    ));

    Ok(Plan {
        flavor: k.flavor,
        version: k.version.trim().to_string(),
        node_name: target.node_name.clone(),
        role,
        cni: cni.cni,
        service: svc.to_string(),
        pod_cidr: pod,
        service_cidr: service,
        kubeconfig: (role == Role::Server).then(|| KUBECONFIG.to_string()),
        files,
        fetch: fetches,
        modules: Vec::new(),
        sysctls: Vec::new(),
        enable: vec![format!("{svc}.service")],
        packages: Vec::new(),
        bootstrap: None,
        cni_delivery,
        notes,
    })
}

/// k3s as a [`Distribution`](super::Distribution).
pub struct K3s;

impl super::Distribution for K3s {
    fn name(&self) -> &'static str {
        "k3s"
    }

    fn plan(
        &self,
        k: &KubernetesLayer,
        cni: &CniLayer,
        target: &Target,
    ) -> Result<Plan, PlanError> {
        plan(k, cni, target)
    }

    /// k3s's supervisor shares the API server's port.
    fn join_port(&self) -> u16 {
        super::API_PORT
    }

    fn join_port_mistake(&self, host: &str, port: u16) -> Option<String> {
        super::api_join_port_mistake(self.name(), host, port)
    }

    /// The multi-call binary's `k3s kubectl`.
    fn kubectl(&self) -> Vec<String> {
        vec![BIN.into(), "kubectl".into()]
    }

    fn manifests_dir(&self) -> Option<&'static str> {
        Some(MANIFESTS_DIR)
    }

    fn static_charts_dir(&self) -> Option<&'static str> {
        Some(STATIC_CHARTS_DIR)
    }

    fn helm(&self) -> Option<String> {
        None
    }

    /// install.sh puts the proxy variables into the unit's env file.
    fn apply_proxy(&self, plan: &mut Plan, env_lines: &str) {
        super::proxy::append_to_env_file(plan, env_lines);
    }
}
