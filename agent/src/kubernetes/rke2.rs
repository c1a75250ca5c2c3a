//! RKE2 (§2): the `rke2.linux-<arch>.tar.gz` tarball extracted under `/usr/local` (so the
//! binary is `/usr/local/bin/rke2` and the units live in `/usr/local/lib/systemd/system/`,
//! written here as the bundle has them), `/etc/rancher/rke2/config.yaml.d/` with `cni:`,
//! agents joining the supervisor on port 9345, and the bundled CNI chart customised by a
//! `HelmChartConfig` `rke2-<cni>-config.yaml` in the server's manifests directory.

use cairn_proto::profile::{CniLayer, KubernetesLayer, Role};
use serde_json::{json, Value};

use super::cni;
use super::render;
use super::{
    artifact, cni_name, common, fetch, file, host_port, networks, registries_yaml, secret_file,
    unknown_artifacts, url_file_name, CniDelivery, Placement, Plan, PlanError, Target, HEADER,
};

pub const PREFIX: &str = "/usr/local";
pub const BIN: &str = "/usr/local/bin/rke2";
pub const UNIT_DIR: &str = "/usr/local/lib/systemd/system";
pub const VALUES_DROPIN: &str = "/etc/rancher/rke2/config.yaml.d/50-cairn-values.yaml";
pub const CAIRN_DROPIN: &str = "/etc/rancher/rke2/config.yaml.d/90-cairn.yaml";
pub const TOKEN_FILE: &str = "/etc/rancher/rke2/cairn-token";
pub const REGISTRIES: &str = "/etc/rancher/rke2/registries.yaml";
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/rke2/server/manifests";
/// Chart archives served to the helm-controller (`/static/charts/FILE` on the API).
pub const STATIC_CHARTS_DIR: &str = "/var/lib/rancher/rke2/server/static/charts";
/// RKE2 unpacks kubectl here on start (not on PATH).
pub const KUBECTL: &str = "/var/lib/rancher/rke2/bin/kubectl";
pub const IMAGES_DIR: &str = "/var/lib/rancher/rke2/agent/images";
pub const KUBECONFIG: &str = "/etc/rancher/rke2/rke2.yaml";
pub const SUPERVISOR_PORT: u16 = 9345;
pub const DEFAULT_POD_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";

const MANAGED: &[&str] = &[
    "server",
    "token",
    "token-file",
    "agent-token",
    "node-name",
    "cni",
];

/// `rke2-server.service` / `rke2-agent.service` as in the bundle (§2.3).
pub fn unit(role: Role) -> String {
    let (what, other) = match role {
        Role::Server => ("server", "rke2-agent"),
        Role::Agent => ("agent", "rke2-server"),
    };
    format!(
        "[Unit]
Description=Rancher Kubernetes Engine v2 ({what})
Documentation=https://github.com/rancher/rke2#readme
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-{UNIT_DIR}/%N.env
KillMode=process
Delegate=yes
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecCondition=/bin/sh -c 'if systemctl is-active --quiet {other}.service; then echo \"Error: {other} is running!\"; exit 1; fi'
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={BIN} {what}
ExecStopPost=-/bin/sh -c \"systemd-cgls /system.slice/%n | grep -Eo '[0-9]+ (containerd|kubelet)' | awk '{{print $1}}' | xargs -r kill\"
"
    )
}

pub fn service_name(role: Role) -> &'static str {
    match role {
        Role::Server => "rke2-server",
        Role::Agent => "rke2-agent",
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
    let registries = registries_yaml(&mut values, REGISTRIES)?;
    let (pod, service) = networks(
        cni,
        &values,
        "cluster-cidr",
        "service-cidr",
        DEFAULT_POD_CIDR,
        DEFAULT_SERVICE_CIDR,
    )?;
    values.remove("cluster-cidr");
    values.remove("service-cidr");

    unknown_artifacts(
        &k.artifacts,
        "kubernetes.artifacts",
        target.arch,
        &["rke2"],
        &["rke2-images"],
    )?;
    let tarball = artifact(&k.artifacts, "kubernetes.artifacts", "rke2", target.arch)?;
    let mut fetches = vec![fetch(tarball, Placement::Extract { dir: PREFIX.into() })];
    for a in k
        .artifacts
        .iter()
        .filter(|a| a.arch == target.arch && a.name.starts_with("rke2-images"))
    {
        fetches.push(fetch(
            a,
            Placement::Into {
                dir: IMAGES_DIR.into(),
                file: url_file_name(&a.url),
            },
        ));
    }

    let mut managed = serde_json::Map::new();
    managed.insert("node-name".into(), json!(target.node_name));
    if let Some(server) = c.server {
        // The port was checked with the other flavors' (`super::common`).
        let (host, port) = host_port(server, SUPERVISOR_PORT)?;
        managed.insert("server".into(), json!(format!("https://{host}:{port}")));
    }
    if c.token.is_some() {
        managed.insert("token-file".into(), json!(TOKEN_FILE));
    }
    let mut files = Vec::new();
    let chart = format!("rke2-{}", cni_name(cni.cni));
    let cni_delivery = if k.role == Role::Server {
        managed.insert("cni".into(), json!(cni_name(cni.cni)));
        managed.insert("cluster-cidr".into(), json!(pod));
        managed.insert("service-cidr".into(), json!(service));
        let chart_values = cni::chart_values(cni, &pod, false)?;
        let path = format!("{MANIFESTS_DIR}/{chart}-config.yaml");
        files.push(file(
            &path,
            cni::helm_resource("HelmChartConfig", &chart, &json!({}), &chart_values),
            0o600,
        ));
        CniDelivery::Bundled {
            chart: chart.clone(),
            config_file: path,
        }
    } else {
        CniDelivery::FromServer
    };
    let notes = vec![format!(
        "RKE2 {} bundles its own {chart} chart; cni.version {} is informational",
        k.version, cni.version
    )];

    if !values.is_empty() {
        let mut text = String::from(HEADER);
        text.push_str(&render::yaml(&Value::Object(values)));
        files.push(file(VALUES_DROPIN, text, 0o600));
    }
    let mut text = String::from(HEADER);
    text.push_str(&render::yaml(&Value::Object(managed)));
    files.push(file(CAIRN_DROPIN, text, 0o600));
    if let Some(t) = c.token {
        files.push(secret_file(TOKEN_FILE, format!("{t}\n")));
    }
    if let Some(r) = registries {
        files.push(r);
    }
    let role = k.role;
    let svc = service_name(role);
    // Both units ship in the tarball; Cairn writes them so their content is known and
    // converged, and enables only the one for the role.
    for r in [Role::Server, Role::Agent] {
        let name = service_name(r);
        files.push(file(&format!("{UNIT_DIR}/{name}.service"), unit(r), 0o644));
        files.push(file(
            &format!("{UNIT_DIR}/{name}.env"),
            "HOME=/root\n".into(),
            0o644,
        ));
    }

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

/// RKE2 as a [`Distribution`](super::Distribution).
pub struct Rke2;

impl super::Distribution for Rke2 {
    fn name(&self) -> &'static str {
        "rke2"
    }

    fn plan(
        &self,
        k: &KubernetesLayer,
        cni: &CniLayer,
        target: &Target,
    ) -> Result<Plan, PlanError> {
        plan(k, cni, target)
    }

    /// Nodes register with the supervisor, not the API server.
    fn join_port(&self) -> u16 {
        SUPERVISOR_PORT
    }

    fn join_port_mistake(&self, host: &str, port: u16) -> Option<String> {
        (port == super::API_PORT).then(|| {
            format!(
                "RKE2 nodes join the supervisor on port {SUPERVISOR_PORT}, not the API port {}: use https://{host}:{SUPERVISOR_PORT}",
                super::API_PORT
            )
        })
    }

    fn kubectl(&self) -> Vec<String> {
        vec![KUBECTL.into()]
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

    /// The units read `<unit dir>/%N.env`.
    fn apply_proxy(&self, plan: &mut Plan, env_lines: &str) {
        super::proxy::append_to_env_file(plan, env_lines);
    }
}
