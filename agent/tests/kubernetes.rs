#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Kubernetes layer's pure core: every flavor × CNI plan checked against the flavors'
//! documented install contracts (reference/k8s-install.md), the refusals, and one plan
//! applied through the stage engine into a temp root with no command run for real.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use cairn_agent::engine::{self, ApplyOptions};
use cairn_agent::events::Emitter;
use cairn_agent::host::{Cmd, Host, Output, RunError, Runner};
use cairn_agent::kubernetes::{self, CniDelivery, FileStage, Placement, Plan, PlanError, Target};
use cairn_proto::profile::{Arch, Artifact, CniLayer, CniType, Flavor, KubernetesLayer, Role};
use cairn_userdata::yaml::{self, NodeKind};
use serde_json::{json, Value};

const TOKEN: &str = "abcdef.0123456789abcdef";
const CA_HASH: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const POD: &str = "10.50.0.0/16";

const FLAVORS: [Flavor; 3] = [Flavor::K3s, Flavor::Rke2, Flavor::Kubeadm];
const CNIS: [CniType; 3] = [CniType::Calico, CniType::Cilium, CniType::Flannel];

fn sha(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(seed.as_bytes()))
}

fn art(name: &str, arch: Arch, url: &str) -> Artifact {
    Artifact {
        name: name.into(),
        arch,
        url: url.into(),
        sha256: sha(&format!("{name}-{arch:?}")),
        size: None,
    }
}

fn a(arch: Arch) -> &'static str {
    kubernetes::arch_name(arch)
}

fn k8s_artifacts(flavor: Flavor) -> Vec<Artifact> {
    let mut out = Vec::new();
    for arch in [Arch::Amd64, Arch::Arm64] {
        let x = a(arch);
        match flavor {
            Flavor::K3s => {
                let bin = if arch == Arch::Amd64 {
                    "k3s".to_string()
                } else {
                    format!("k3s-{x}")
                };
                out.push(art(
                    "k3s",
                    arch,
                    &format!("https://mirror.test/k3s/v1.31.4%2Bk3s1/{bin}"),
                ));
                out.push(art(
                    "k3s-airgap-images",
                    arch,
                    &format!(
                        "https://mirror.test/k3s/v1.31.4%2Bk3s1/k3s-airgap-images-{x}.tar.zst"
                    ),
                ));
            }
            Flavor::Rke2 => {
                out.push(art(
                    "rke2",
                    arch,
                    &format!("https://mirror.test/rke2/rke2.linux-{x}.tar.gz"),
                ));
            }
            Flavor::Kubeadm => {
                for b in ["kubeadm", "kubelet", "kubectl"] {
                    out.push(art(
                        b,
                        arch,
                        &format!("https://dl.test/v1.31.4/bin/linux/{x}/{b}"),
                    ));
                }
                out.push(art(
                    "crictl",
                    arch,
                    &format!("https://dl.test/crictl-v1.31.1-linux-{x}.tar.gz"),
                ));
                out.push(art(
                    "cni-plugins",
                    arch,
                    &format!("https://dl.test/cni-plugins-linux-{x}-v1.5.1.tgz"),
                ));
            }
        }
    }
    out
}

fn cni_artifacts(flavor: Flavor, cni: CniType) -> Vec<Artifact> {
    let mut out = Vec::new();
    if flavor != Flavor::Kubeadm {
        return out;
    }
    for arch in [Arch::Amd64, Arch::Arm64] {
        let x = a(arch);
        match cni {
            CniType::Calico => out.push(art(
                "tigera-operator",
                arch,
                "https://cni.test/tigera-operator.yaml",
            )),
            CniType::Cilium => {
                out.push(art("cilium", arch, "https://cni.test/cilium-1.16.1.tgz"));
                out.push(art(
                    "helm",
                    arch,
                    &format!("https://get.helm.sh/helm-v3.16.3-linux-{x}.tar.gz"),
                ));
            }
            CniType::Flannel => {}
        }
    }
    out
}

fn version(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::K3s => "v1.31.4+k3s1",
        Flavor::Rke2 => "v1.31.4+rke2r1",
        Flavor::Kubeadm => "v1.31.4",
    }
}

fn server(flavor: Flavor) -> KubernetesLayer {
    KubernetesLayer {
        flavor,
        version: version(flavor).into(),
        role: Role::Server,
        server: None,
        token: Some(TOKEN.into()),
        values: Value::Null,
        artifacts: k8s_artifacts(flavor),
        components: Default::default(),
        sha256: Default::default(),
    }
}

fn agent(flavor: Flavor, url: &str) -> KubernetesLayer {
    let mut k = server(flavor);
    k.role = Role::Agent;
    k.server = Some(url.into());
    if flavor == Flavor::Kubeadm {
        k.values = json!({"caCertHashes": [CA_HASH]});
    }
    k
}

fn cni(flavor: Flavor, t: CniType, pod: Option<&str>) -> CniLayer {
    CniLayer {
        cni: t,
        version: match t {
            CniType::Calico => "v3.28.1",
            CniType::Cilium => "1.16.1",
            CniType::Flannel => "v0.25.6",
        }
        .into(),
        pod_cidr: pod.map(str::to_string),
        values: Value::Null,
        artifacts: cni_artifacts(flavor, t),
        components: Default::default(),
        sha256: Default::default(),
    }
}

fn target(arch: &str) -> Target {
    Target::new(arch, "edge-1").unwrap()
}

fn plan_ok(k: &KubernetesLayer, c: &CniLayer, arch: &str) -> Plan {
    kubernetes::plan(k, c, &target(arch))
        .unwrap_or_else(|e| panic!("{:?}/{:?}: {e}", k.flavor, c.cni))
}

fn refuse(k: &KubernetesLayer, c: &CniLayer, t: &Target) -> PlanError {
    match kubernetes::plan(k, c, t) {
        Ok(_) => panic!("{:?}/{:?} was accepted", k.flavor, c.cni),
        Err(e) => e,
    }
}

/// Parse YAML text with the agent's own parser into JSON (plain scalars typed as YAML
/// 1.2 core would type them).
fn docs(text: &str) -> Vec<Value> {
    fn conv(n: &yaml::Node) -> Value {
        match &n.kind {
            NodeKind::Scalar { value, plain } => {
                if !plain {
                    return json!(value);
                }
                match value.as_str() {
                    "true" => json!(true),
                    "false" => json!(false),
                    "" | "~" | "null" => Value::Null,
                    v => v
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| json!(v)),
                }
            }
            NodeKind::Seq(items) => Value::Array(items.iter().map(conv).collect()),
            NodeKind::Map(pairs) => Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| (k.scalar().unwrap_or_default().to_string(), conv(v)))
                    .collect(),
            ),
        }
    }
    yaml::parse(text)
        .unwrap_or_else(|e| panic!("YAML does not parse: {e:?}\n{text}"))
        .iter()
        .map(conv)
        .collect()
}

fn doc(text: &str) -> Value {
    docs(text).into_iter().next().unwrap()
}

fn content<'a>(p: &'a Plan, path: &str) -> &'a str {
    &p.file(path)
        .unwrap_or_else(|| {
            panic!(
                "no {path} in {:?}",
                p.files.iter().map(|f| &f.path).collect::<Vec<_>>()
            )
        })
        .content
}

/// The flavor's effective config: its config.yaml.d drop-ins merged in order.
fn flavor_config(p: &Plan) -> Value {
    let dir = match p.flavor {
        Flavor::K3s => "/etc/rancher/k3s/config.yaml.d/",
        _ => "/etc/rancher/rke2/config.yaml.d/",
    };
    let mut files: Vec<_> = p.files.iter().filter(|f| f.path.starts_with(dir)).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(!files.is_empty(), "no drop-in under {dir}");
    let mut out = serde_json::Map::new();
    for f in files {
        assert!(
            f.path.ends_with(".yaml"),
            "{} is not read by the flavor",
            f.path
        );
        if let Value::Object(m) = doc(&f.content) {
            out.extend(m);
        }
    }
    Value::Object(out)
}

fn kubeadm_doc(p: &Plan, path: &str, kind: &str) -> Value {
    docs(content(p, path))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {path}"))
}

/// The pod CIDR as the CNI will use it, read back from the rendered CNI files.
fn cni_pod_cidr(p: &Plan) -> Option<String> {
    let values_content = |path: &str| -> Value {
        let res = doc(content(p, path));
        doc(res["spec"]["valuesContent"].as_str().unwrap())
    };
    let calico = |v: &Value| {
        v["calicoNetwork"]["ipPools"][0]["cidr"]
            .as_str()
            .map(str::to_string)
    };
    let cilium = |v: &Value| -> Option<String> {
        match v["ipam"]["mode"].as_str()? {
            // Each node's podCIDR, allocated from the flavor's cluster CIDR.
            "kubernetes" => Some(p.pod_cidr.clone()),
            _ => v["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"][0]
                .as_str()
                .map(str::to_string),
        }
    };
    match (&p.flavor, &p.cni, &p.cni_delivery) {
        (Flavor::K3s, CniType::Flannel, CniDelivery::Embedded) => {
            // Embedded Flannel uses cluster-cidr itself.
            flavor_config(p)["cluster-cidr"]
                .as_str()
                .map(str::to_string)
        }
        (Flavor::K3s, t, CniDelivery::AutoDeploy { dir, files }) => {
            assert_eq!(dir, "/var/lib/rancher/k3s/server/manifests");
            let res = doc(content(p, &files[0]));
            assert_eq!(res["apiVersion"], "helm.cattle.io/v1");
            assert_eq!(res["kind"], "HelmChart");
            assert_eq!(res["spec"]["bootstrap"], true);
            let v = values_content(&files[0]);
            match t {
                CniType::Calico => {
                    assert_eq!(res["spec"]["chart"], "tigera-operator");
                    assert_eq!(
                        v["installation"]["calicoNetwork"]["containerIPForwarding"],
                        "Enabled"
                    );
                    calico(&v["installation"])
                }
                _ => {
                    assert_eq!(res["spec"]["chart"], "cilium");
                    cilium(&v)
                }
            }
        }
        (Flavor::Rke2, t, CniDelivery::Bundled { chart, config_file }) => {
            assert_eq!(chart, &format!("rke2-{}", kubernetes::cni_name(*t)));
            assert_eq!(
                config_file,
                &format!(
                    "/var/lib/rancher/rke2/server/manifests/rke2-{}-config.yaml",
                    kubernetes::cni_name(*t)
                )
            );
            let res = doc(content(p, config_file));
            assert_eq!(res["kind"], "HelmChartConfig");
            assert_eq!(res["metadata"]["name"], chart.as_str());
            assert_eq!(res["metadata"]["namespace"], "kube-system");
            let v = values_content(config_file);
            match t {
                CniType::Calico => calico(&v["installation"]),
                CniType::Cilium => cilium(&v),
                CniType::Flannel => v["podCidr"].as_str().map(str::to_string),
            }
        }
        (
            Flavor::Kubeadm,
            CniType::Flannel,
            CniDelivery::Apply {
                kubeconfig,
                manifests,
            },
        ) => {
            assert_eq!(kubeconfig, "/etc/kubernetes/admin.conf");
            let all = docs(content(p, &manifests[0]));
            let cm = all.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
            let net: Value =
                serde_json::from_str(cm["data"]["net-conf.json"].as_str().unwrap()).unwrap();
            let ds = all.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
            assert_eq!(ds["metadata"]["name"], "kube-flannel-ds");
            net["Network"].as_str().map(str::to_string)
        }
        (
            Flavor::Kubeadm,
            CniType::Calico,
            CniDelivery::Apply {
                kubeconfig,
                manifests,
            },
        ) => {
            assert_eq!(kubeconfig, "/etc/kubernetes/admin.conf");
            assert_eq!(
                manifests.len(),
                2,
                "operator bundle, then the custom resources"
            );
            assert!(p.fetch.iter().any(|f| f.name == "tigera-operator"
                && matches!(&f.place, Placement::Into { file, .. } if manifests[0].ends_with(file.as_str()))));
            let inst = docs(content(p, &manifests[1]))
                .into_iter()
                .find(|d| d["kind"] == "Installation")
                .unwrap();
            calico(&inst["spec"])
        }
        (
            Flavor::Kubeadm,
            CniType::Cilium,
            CniDelivery::Helm {
                values_file,
                chart_artifact,
                ..
            },
        ) => {
            // Helm publishes a tarball: its `linux-ARCH/helm` becomes /usr/local/bin/helm.
            let helm = p.fetch.iter().find(|f| f.name == "helm").unwrap();
            assert_eq!(
                helm.place,
                Placement::Member {
                    member: format!("linux-{}/helm", kubernetes::arch_name(helm.arch)),
                    path: "/usr/local/bin/helm".into(),
                    mode: 0o755
                }
            );
            assert!(chart_artifact.ends_with("cilium-1.16.1.tgz"));
            cilium(&doc(content(p, values_file)))
        }
        other => panic!("unexpected CNI delivery {other:?}"),
    }
}

fn flavor_pod_cidr(p: &Plan) -> String {
    match p.flavor {
        Flavor::Kubeadm => kubeadm_doc(p, "/etc/cairn/kubeadm/init.yaml", "ClusterConfiguration")
            ["networking"]["podSubnet"]
            .as_str()
            .unwrap()
            .to_string(),
        _ => flavor_config(p)["cluster-cidr"]
            .as_str()
            .unwrap()
            .to_string(),
    }
}

/// The token lives in exactly the 0600 secret files and nowhere else, not in Debug output.
fn check_token(p: &Plan) {
    let holders: Vec<_> = p
        .files
        .iter()
        .filter(|f| f.content.contains(TOKEN))
        .collect();
    assert!(
        !holders.is_empty(),
        "{:?}: the token is in no file",
        p.flavor
    );
    for f in &holders {
        assert!(
            f.secret,
            "{} holds the token but is not marked secret",
            f.path
        );
        assert_eq!(
            f.mode, 0o600,
            "{} holds the token with mode {:o}",
            f.path, f.mode
        );
    }
    for f in p.files.iter().filter(|f| !f.secret) {
        assert!(!f.content.contains(TOKEN), "token leaked into {}", f.path);
        assert!(
            !f.content.contains("0123456789abcdef\n"),
            "token part leaked into {}",
            f.path
        );
    }
    for f in p.files.iter().filter(|f| {
        f.path.ends_with(".service") || f.path.ends_with(".conf") || f.path.ends_with(".env")
    }) {
        assert!(!f.content.contains(TOKEN), "token in unit file {}", f.path);
    }
    assert!(
        !format!("{p:?}").contains(TOKEN),
        "the plan's Debug output shows the token"
    );
    match p.flavor {
        Flavor::K3s | Flavor::Rke2 => {
            let dir = if p.flavor == Flavor::K3s {
                "k3s"
            } else {
                "rke2"
            };
            let token_file = format!("/etc/rancher/{dir}/cairn-token");
            assert_eq!(content(p, &token_file), format!("{TOKEN}\n"));
            assert_eq!(flavor_config(p)["token-file"], token_file.as_str());
            assert!(flavor_config(p).get("token").is_none());
        }
        Flavor::Kubeadm => {}
    }
}

fn exec_start(unit: &str) -> String {
    // Join continuation lines as systemd does.
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap();
    line.trim_start_matches("ExecStart=")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn nine_combinations_follow_the_contract() {
    for flavor in FLAVORS {
        for t in CNIS {
            let p = plan_ok(&server(flavor), &cni(flavor, t, Some(POD)), "amd64");
            let what = format!("{flavor:?}/{t:?}");
            // One pod CIDR: profile → flavor config → CNI.
            assert_eq!(p.pod_cidr, POD, "{what}");
            assert_eq!(flavor_pod_cidr(&p), POD, "{what}: flavor config");
            assert_eq!(cni_pod_cidr(&p).as_deref(), Some(POD), "{what}: CNI values");
            // Flannel off when replaced (k3s), CNI selected by `cni:` (RKE2).
            match flavor {
                Flavor::K3s => {
                    let cfg = flavor_config(&p);
                    if t == CniType::Flannel {
                        assert_eq!(cfg["flannel-backend"], "vxlan", "{what}");
                        assert!(cfg.get("disable-network-policy").is_none(), "{what}");
                        assert!(p
                            .files
                            .iter()
                            .all(|f| !f.path.starts_with("/var/lib/rancher/k3s/server/manifests")));
                    } else {
                        assert_eq!(cfg["flannel-backend"], "none", "{what}");
                        assert_eq!(cfg["disable-network-policy"], true, "{what}");
                    }
                    assert_eq!(cfg["service-cidr"], "10.43.0.0/16");
                    assert_eq!(cfg["node-name"], "edge-1");
                    assert!(cfg.get("server").is_none(), "first server has no server:");
                }
                Flavor::Rke2 => {
                    let cfg = flavor_config(&p);
                    assert_eq!(cfg["cni"], kubernetes::cni_name(t), "{what}");
                    assert_eq!(cfg["service-cidr"], "10.43.0.0/16");
                }
                Flavor::Kubeadm => {
                    let cc =
                        kubeadm_doc(&p, "/etc/cairn/kubeadm/init.yaml", "ClusterConfiguration");
                    assert_eq!(cc["apiVersion"], "kubeadm.k8s.io/v1beta4");
                    assert_eq!(cc["networking"]["serviceSubnet"], "10.96.0.0/12");
                    assert_eq!(cc["kubernetesVersion"], "v1.31.4");
                    let ic = kubeadm_doc(&p, "/etc/cairn/kubeadm/init.yaml", "InitConfiguration");
                    assert_eq!(ic["bootstrapTokens"][0]["token"], TOKEN);
                    assert_eq!(ic["nodeRegistration"]["name"], "edge-1");
                    assert_eq!(
                        ic["nodeRegistration"]["criSocket"],
                        "unix:///var/run/containerd/containerd.sock"
                    );
                    assert_eq!(
                        p.bootstrap.as_deref().unwrap(),
                        [
                            "kubeadm",
                            "init",
                            "--config",
                            "/etc/cairn/kubeadm/init.yaml"
                        ]
                    );
                    // CNI manifests are written after init, not with the install files.
                    assert!(p
                        .files
                        .iter()
                        .filter(|f| f.path.starts_with("/var/lib/cairn/kubernetes/cni/"))
                        .all(|f| f.stage == FileStage::Cni));
                }
            }
            check_token(&p);
            // Flags never in ExecStart (§0.3): the command only.
            if flavor != Flavor::Kubeadm {
                let unit = content(
                    &p,
                    p.files
                        .iter()
                        .find(|f| f.path.ends_with(&format!("/{}.service", p.service)))
                        .unwrap()
                        .path
                        .as_str(),
                );
                let exec = exec_start(unit);
                assert!(!exec.contains("--"), "{what}: flags in ExecStart: {exec}");
            }
            // Every file absolute, with an explicit sane mode; every YAML file parses.
            for f in &p.files {
                assert!(f.path.starts_with('/'), "{}", f.path);
                assert!(
                    f.mode == 0o600 || f.mode == 0o644,
                    "{} mode {:o}",
                    f.path,
                    f.mode
                );
                if f.path.ends_with(".yaml") || f.path.ends_with(".yml") {
                    docs(&f.content);
                }
            }
            assert_eq!(
                p.enable.iter().filter(|u| u.ends_with(".service")).count(),
                p.enable.len()
            );
        }
    }
}

#[test]
fn default_pod_cidrs_per_flavor() {
    for (flavor, want) in [
        (Flavor::K3s, "10.42.0.0/16"),
        (Flavor::Rke2, "10.42.0.0/16"),
        (Flavor::Kubeadm, "10.244.0.0/16"),
    ] {
        for t in CNIS {
            let p = plan_ok(&server(flavor), &cni(flavor, t, None), "amd64");
            assert_eq!(flavor_pod_cidr(&p), want, "{flavor:?}/{t:?}");
            assert_eq!(cni_pod_cidr(&p).as_deref(), Some(want), "{flavor:?}/{t:?}");
        }
    }
}

#[test]
fn cilium_cluster_pool_follows_the_pod_cidr() {
    for flavor in FLAVORS {
        let mut c = cni(flavor, CniType::Cilium, Some(POD));
        c.values = json!({"ipam": {"mode": "cluster-pool"}, "hubble": {"enabled": false}});
        let p = plan_ok(&server(flavor), &c, "amd64");
        assert_eq!(cni_pod_cidr(&p).as_deref(), Some(POD), "{flavor:?}");
        // A pool that disagrees is refused, naming the value.
        c.values = json!({"ipam": {"mode": "cluster-pool", "operator": {"clusterPoolIPv4PodCIDRList": ["10.0.0.0/8"]}}});
        let e = refuse(&server(flavor), &c, &target("amd64"));
        assert_eq!(
            e.field, "cni.values.ipam.operator.clusterPoolIPv4PodCIDRList",
            "{flavor:?}"
        );
    }
}

#[test]
fn k3s_unit_and_env_file_are_the_install_scripts() {
    let p = plan_ok(
        &server(Flavor::K3s),
        &cni(Flavor::K3s, CniType::Flannel, None),
        "amd64",
    );
    assert_eq!(p.service, "k3s");
    assert_eq!(p.enable, ["k3s.service"]);
    assert_eq!(p.kubeconfig.as_deref(), Some("/etc/rancher/k3s/k3s.yaml"));
    let unit = content(&p, "/etc/systemd/system/k3s.service");
    for line in [
        "Description=Lightweight Kubernetes",
        "Documentation=https://k3s.io",
        "Wants=network-online.target",
        "After=network-online.target",
        "WantedBy=multi-user.target",
        "Type=notify",
        "EnvironmentFile=-/etc/default/%N",
        "EnvironmentFile=-/etc/sysconfig/%N",
        "EnvironmentFile=-/etc/systemd/system/k3s.service.env",
        "KillMode=process",
        "Delegate=yes",
        "User=root",
        "LimitNOFILE=1048576",
        "LimitNPROC=infinity",
        "LimitCORE=infinity",
        "TasksMax=infinity",
        "TimeoutStartSec=0",
        "Restart=always",
        "RestartSec=5s",
        "ExecStartPre=-/sbin/modprobe br_netfilter",
        "ExecStartPre=-/sbin/modprobe overlay",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "k3s.service lacks `{line}`:\n{unit}"
        );
    }
    assert!(
        unit.contains("ExecStart=/usr/local/bin/k3s \\\n    server \\\n\n"),
        "{unit}"
    );
    assert_eq!(exec_start(unit), "/usr/local/bin/k3s server");
    let env = p.file("/etc/systemd/system/k3s.service.env").unwrap();
    assert_eq!((env.mode, env.content.as_str()), (0o600, ""));
    // Config only in drop-ins; config.yaml itself is left to the operator.
    assert!(p.file("/etc/rancher/k3s/config.yaml").is_none());
    // Binary placement (install.sh: chmod 755 into /usr/local/bin/k3s).
    assert_eq!(
        p.fetch("k3s").unwrap().place,
        Placement::Binary {
            path: "/usr/local/bin/k3s".into(),
            mode: 0o755
        }
    );
    assert_eq!(
        p.fetch("k3s-airgap-images").unwrap().place,
        Placement::Into {
            dir: "/var/lib/rancher/k3s/agent/images".into(),
            file: "k3s-airgap-images-amd64.tar.zst".into()
        }
    );

    let ag = plan_ok(
        &agent(Flavor::K3s, "https://10.0.0.1"),
        &cni(Flavor::K3s, CniType::Flannel, None),
        "amd64",
    );
    assert_eq!(ag.service, "k3s-agent");
    let unit = content(&ag, "/etc/systemd/system/k3s-agent.service");
    assert!(unit.contains("EnvironmentFile=-/etc/systemd/system/k3s-agent.service.env"));
    assert_eq!(exec_start(unit), "/usr/local/bin/k3s agent");
}

#[test]
fn rke2_units_follow_the_tarball_layout() {
    let p = plan_ok(
        &server(Flavor::Rke2),
        &cni(Flavor::Rke2, CniType::Calico, None),
        "arm64",
    );
    assert_eq!(p.service, "rke2-server");
    assert_eq!(p.enable, ["rke2-server.service"]);
    assert_eq!(
        p.fetch("rke2").unwrap().place,
        Placement::Extract {
            dir: "/usr/local".into()
        }
    );
    assert!(p
        .fetch("rke2")
        .unwrap()
        .url
        .ends_with("rke2.linux-arm64.tar.gz"));
    for (name, what, other) in [
        ("rke2-server", "server", "rke2-agent"),
        ("rke2-agent", "agent", "rke2-server"),
    ] {
        let unit = content(&p, &format!("/usr/local/lib/systemd/system/{name}.service"));
        for line in [
            format!("Description=Rancher Kubernetes Engine v2 ({what})"),
            "Documentation=https://github.com/rancher/rke2#readme".into(),
            "Type=notify".into(),
            "EnvironmentFile=-/usr/local/lib/systemd/system/%N.env".into(),
            "KillMode=process".into(),
            "Delegate=yes".into(),
            "TimeoutStartSec=0".into(),
            "Restart=always".into(),
            format!("ExecStart=/usr/local/bin/rke2 {what}"),
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "{name} lacks `{line}`:\n{unit}"
            );
        }
        assert!(!unit.contains("User=root"), "the RKE2 unit has no User=");
        let cond = unit
            .lines()
            .find(|l| l.starts_with("ExecCondition="))
            .unwrap();
        assert!(
            cond.contains(&format!("systemctl is-active --quiet {other}.service")),
            "{cond}"
        );
        assert!(unit.contains("ExecStopPost=-/bin/sh -c \"systemd-cgls /system.slice/%n | grep -Eo '[0-9]+ (containerd|kubelet)' | awk '{print $1}' | xargs -r kill\""));
        assert_eq!(
            content(&p, &format!("/usr/local/lib/systemd/system/{name}.env")),
            "HOME=/root\n"
        );
    }
}

#[test]
fn kubeadm_host_preparation() {
    let p = plan_ok(
        &server(Flavor::Kubeadm),
        &cni(Flavor::Kubeadm, CniType::Calico, None),
        "amd64",
    );
    assert_eq!(p.modules, ["overlay", "br_netfilter"]);
    for (k, v) in [
        ("net.bridge.bridge-nf-call-iptables", "1"),
        ("net.bridge.bridge-nf-call-ip6tables", "1"),
        ("net.ipv4.ip_forward", "1"),
    ] {
        assert!(p.sysctls.contains(&(k.to_string(), v.to_string())), "{k}");
    }
    let ctd = content(&p, "/etc/containerd/config.toml");
    assert!(
        ctd.lines().any(|l| l.trim() == "SystemdCgroup = true"),
        "{ctd}"
    );
    assert!(
        ctd.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]")
    );
    assert!(
        ctd.lines().any(|l| l.trim() == "disabled_plugins = []"),
        "CRI must not be disabled"
    );
    assert!(!ctd.contains("\"cri\""), "{ctd}");
    assert!(ctd.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""));
    let crictl = doc(content(&p, "/etc/crictl.yaml"));
    assert_eq!(
        crictl["runtime-endpoint"],
        "unix:///var/run/containerd/containerd.sock"
    );
    assert_eq!(
        crictl["image-endpoint"],
        "unix:///var/run/containerd/containerd.sock"
    );
    let unit = content(&p, "/etc/systemd/system/kubelet.service");
    assert_eq!(exec_start(unit), "/usr/local/bin/kubelet");
    let dropin = content(&p, "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf");
    assert!(dropin.contains("EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env"));
    assert!(dropin.contains("--config=/var/lib/kubelet/config.yaml"));
    assert!(
        dropin.lines().any(|l| l == "ExecStart="),
        "the drop-in resets ExecStart first"
    );
    assert_eq!(
        exec_start(dropin.rsplit("ExecStart=\n").next().unwrap()),
        "/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS"
    );
    let kc = kubeadm_doc(&p, "/etc/cairn/kubeadm/init.yaml", "KubeletConfiguration");
    assert_eq!(
        kc["cgroupDriver"], "systemd",
        "kubelet and runc agree on the cgroup driver"
    );
    assert_eq!(p.enable, ["containerd.service", "kubelet.service"]);
    assert_eq!(
        p.packages,
        ["containerd"],
        "no containerd artifact: the distro package"
    );
    for b in ["kubeadm", "kubelet", "kubectl"] {
        assert_eq!(
            p.fetch(b).unwrap().place,
            Placement::Binary {
                path: format!("/usr/local/bin/{b}"),
                mode: 0o755
            }
        );
    }
    assert_eq!(
        p.fetch("cni-plugins").unwrap().place,
        Placement::Extract {
            dir: "/opt/cni/bin".into()
        }
    );
}

#[test]
fn agents_join_with_the_right_endpoint_and_token() {
    // k3s agent: https://…:6443 + token-file; no server-only flags.
    let p = plan_ok(
        &agent(Flavor::K3s, "https://10.0.0.1"),
        &cni(Flavor::K3s, CniType::Cilium, Some(POD)),
        "amd64",
    );
    let cfg = flavor_config(&p);
    assert_eq!(cfg["server"], "https://10.0.0.1:6443");
    assert_eq!(cfg["token-file"], "/etc/rancher/k3s/cairn-token");
    for k in [
        "cluster-cidr",
        "service-cidr",
        "flannel-backend",
        "disable-network-policy",
    ] {
        assert!(cfg.get(k).is_none(), "agent config has server-only `{k}`");
    }
    assert_eq!(p.cni_delivery, CniDelivery::FromServer);
    assert_eq!(p.kubeconfig, None);
    check_token(&p);

    // RKE2 agent: the supervisor port 9345.
    let p = plan_ok(
        &agent(Flavor::Rke2, "https://lb.example.com"),
        &cni(Flavor::Rke2, CniType::Calico, None),
        "amd64",
    );
    let cfg = flavor_config(&p);
    assert_eq!(cfg["server"], "https://lb.example.com:9345");
    assert!(cfg.get("cni").is_none());
    assert_eq!(p.service, "rke2-agent");
    assert_eq!(p.enable, ["rke2-agent.service"]);
    check_token(&p);

    // HA: a second k3s server joins the first, keeps the server-only flags.
    let mut k = server(Flavor::K3s);
    k.server = Some("https://10.0.0.1:6443".into());
    let p = plan_ok(&k, &cni(Flavor::K3s, CniType::Calico, Some(POD)), "amd64");
    let cfg = flavor_config(&p);
    assert_eq!(cfg["server"], "https://10.0.0.1:6443");
    assert_eq!(cfg["flannel-backend"], "none");
    assert_eq!(cfg["cluster-cidr"], POD);

    // kubeadm worker: JoinConfiguration with token discovery and the CA hash.
    let p = plan_ok(
        &agent(Flavor::Kubeadm, "https://10.0.0.1"),
        &cni(Flavor::Kubeadm, CniType::Flannel, None),
        "amd64",
    );
    let jc = kubeadm_doc(&p, "/etc/cairn/kubeadm/join.yaml", "JoinConfiguration");
    assert_eq!(jc["apiVersion"], "kubeadm.k8s.io/v1beta4");
    let bt = &jc["discovery"]["bootstrapToken"];
    assert_eq!(bt["apiServerEndpoint"], "10.0.0.1:6443");
    assert_eq!(bt["token"], TOKEN);
    assert_eq!(bt["caCertHashes"][0], CA_HASH);
    assert!(bt.get("unsafeSkipCAVerification").is_none());
    assert!(jc.get("controlPlane").is_none());
    assert_eq!(
        p.bootstrap.as_deref().unwrap(),
        [
            "kubeadm",
            "join",
            "--config",
            "/etc/cairn/kubeadm/join.yaml"
        ]
    );
    assert!(p.file("/etc/cairn/kubeadm/init.yaml").is_none());
    assert_eq!(p.cni_delivery, CniDelivery::FromServer);
    check_token(&p);

    // kubeadm control-plane join needs the certificate key.
    let mut k = agent(Flavor::Kubeadm, "https://cp.example.com:6443");
    k.role = Role::Server;
    let e = refuse(
        &k,
        &cni(Flavor::Kubeadm, CniType::Flannel, None),
        &target("amd64"),
    );
    assert_eq!(e.field, "kubernetes.values.certificateKey");
    k.values = json!({"caCertHashes": CA_HASH, "certificateKey": sha("key")});
    let p = plan_ok(&k, &cni(Flavor::Kubeadm, CniType::Flannel, None), "amd64");
    let jc = kubeadm_doc(&p, "/etc/cairn/kubeadm/join.yaml", "JoinConfiguration");
    assert_eq!(jc["controlPlane"]["certificateKey"], sha("key"));

    // An explicit opt-out of CA pinning is honoured, and visible.
    let mut k = agent(Flavor::Kubeadm, "https://10.0.0.1");
    k.values = json!({"unsafeSkipCAVerification": true});
    let p = plan_ok(&k, &cni(Flavor::Kubeadm, CniType::Flannel, None), "amd64");
    let jc = kubeadm_doc(&p, "/etc/cairn/kubeadm/join.yaml", "JoinConfiguration");
    assert_eq!(
        jc["discovery"]["bootstrapToken"]["unsafeSkipCAVerification"],
        true
    );
}

#[test]
fn artifacts_are_selected_for_the_target_arch() {
    for flavor in FLAVORS {
        for (arch, uname, enumv) in [
            ("amd64", "x86_64", Arch::Amd64),
            ("arm64", "aarch64", Arch::Arm64),
        ] {
            for t in CNIS {
                let c = cni(flavor, t, None);
                let p = plan_ok(&server(flavor), &c, uname);
                assert!(!p.fetch.is_empty());
                for f in &p.fetch {
                    assert_eq!(f.arch, enumv, "{flavor:?} {} for {arch}", f.name);
                    let listed = server(flavor)
                        .artifacts
                        .into_iter()
                        .chain(c.artifacts.clone())
                        .find(|x| x.name == f.name && x.arch == enumv)
                        .unwrap();
                    assert_eq!((&f.url, &f.sha256), (&listed.url, &listed.sha256));
                }
                let main = match flavor {
                    Flavor::K3s => "k3s",
                    Flavor::Rke2 => "rke2",
                    Flavor::Kubeadm => "kubelet",
                };
                let url = &p.fetch(main).unwrap().url;
                match (flavor, enumv) {
                    (Flavor::K3s, Arch::Amd64) => assert!(url.ends_with("/k3s"), "{url}"),
                    _ => assert!(url.contains(arch), "{url} for {arch}"),
                }
            }
        }
    }
}

#[test]
fn registries_yaml_from_values() {
    let mut k = server(Flavor::K3s);
    k.values = json!({
        "registries": {
            "mirrors": {"docker.io": {"endpoint": ["https://registry.example.com:5000"]}},
            "configs": {"registry.example.com:5000": {"auth": {"username": "u", "password": "s3cret"}}}
        },
        "tls-san": ["edge.example.com"],
        "write-kubeconfig-mode": "0600"
    });
    let p = plan_ok(&k, &cni(Flavor::K3s, CniType::Flannel, None), "amd64");
    let reg = p.file("/etc/rancher/k3s/registries.yaml").unwrap();
    assert!(
        reg.secret && reg.mode == 0o600,
        "credentials make it a secret"
    );
    let v = doc(&reg.content);
    assert_eq!(
        v["mirrors"]["docker.io"]["endpoint"][0],
        "https://registry.example.com:5000"
    );
    assert_eq!(
        v["configs"]["registry.example.com:5000"]["auth"]["password"],
        "s3cret"
    );
    let cfg = flavor_config(&p);
    assert!(
        cfg.get("registries").is_none(),
        "registries is not a k3s flag"
    );
    assert_eq!(cfg["tls-san"][0], "edge.example.com");
    assert_eq!(
        cfg["write-kubeconfig-mode"], "0600",
        "quoted, stays a string"
    );
    for f in p.files.iter().filter(|f| !f.secret) {
        assert!(!f.content.contains("s3cret"), "{}", f.path);
    }

    // Mirrors only: a plain 0644 file. RKE2 uses its own path.
    let mut k = server(Flavor::Rke2);
    k.values =
        json!({"registries": {"mirrors": {"docker.io": {"endpoint": ["https://m.example.com"]}}}});
    let p = plan_ok(&k, &cni(Flavor::Rke2, CniType::Cilium, None), "amd64");
    let reg = p.file("/etc/rancher/rke2/registries.yaml").unwrap();
    assert_eq!((reg.secret, reg.mode), (false, 0o644));

    // kubeadm: containerd certs.d hosts.toml, credentials in a 0600 config.toml.
    let mut k = server(Flavor::Kubeadm);
    k.values = json!({"registries": {
        "mirrors": {"docker.io": {"endpoint": ["https://m.example.com"]}},
        "configs": {"m.example.com": {"auth": {"username": "u", "password": "s3cret"}}}
    }});
    let p = plan_ok(&k, &cni(Flavor::Kubeadm, CniType::Flannel, None), "amd64");
    let hosts = content(&p, "/etc/containerd/certs.d/docker.io/hosts.toml");
    assert!(hosts.contains("server = \"https://registry-1.docker.io\""));
    assert!(hosts.contains("[host.\"https://m.example.com\"]"));
    let ctd = p.file("/etc/containerd/config.toml").unwrap();
    assert!(ctd.secret && ctd.mode == 0o600 && ctd.content.contains("s3cret"));
}

#[test]
fn invalid_combinations_are_refused_naming_the_field() {
    let t = target("amd64");
    let flannel = |f| cni(f, CniType::Flannel, None);
    for flavor in FLAVORS {
        // Agent without server, agent without token.
        let mut k = server(flavor);
        k.role = Role::Agent;
        let e = refuse(&k, &flannel(flavor), &t);
        assert_eq!(e.field, "kubernetes.server", "{flavor:?}: {e}");
        assert!(e.message.contains("role: agent"), "{e}");
        let mut k = agent(flavor, "https://10.0.0.1");
        k.token = None;
        let e = refuse(&k, &flannel(flavor), &t);
        assert_eq!(e.field, "kubernetes.token", "{flavor:?}: {e}");
        let mut k = agent(flavor, "https://10.0.0.1");
        k.server = Some("http://10.0.0.1".into());
        assert_eq!(refuse(&k, &flannel(flavor), &t).field, "kubernetes.server");

        // Overlapping pod and service networks.
        let c = cni(flavor, CniType::Calico, Some("10.0.0.0/8"));
        let mut k = server(flavor);
        let skey = if flavor == Flavor::Kubeadm {
            "serviceSubnet"
        } else {
            "service-cidr"
        };
        k.values = json!({ skey: "10.96.0.0/16" });
        let e = refuse(&k, &c, &t);
        assert_eq!(e.field, "cni.pod_cidr", "{flavor:?}: {e}");
        assert!(
            e.message.contains("overlaps") && e.message.contains(skey),
            "{e}"
        );
        // Also against each flavor's default service network.
        let e = refuse(
            &server(flavor),
            &cni(flavor, CniType::Flannel, Some("10.0.0.0/8")),
            &t,
        );
        assert_eq!(e.field, "cni.pod_cidr", "{flavor:?}");
        // A bad CIDR.
        let e = refuse(
            &server(flavor),
            &cni(flavor, CniType::Flannel, Some("10.42.0.0/40")),
            &t,
        );
        assert_eq!(e.field, "cni.pod_cidr");
        // A pod CIDR repeated in the flavor values that disagrees.
        let mut k = server(flavor);
        let pkey = if flavor == Flavor::Kubeadm {
            "podSubnet"
        } else {
            "cluster-cidr"
        };
        k.values = json!({ pkey: "10.99.0.0/16" });
        let e = refuse(&k, &cni(flavor, CniType::Flannel, Some(POD)), &t);
        assert_eq!(e.field, format!("kubernetes.values.{pkey}"));
        k.values = json!({ pkey: POD });
        plan_ok(&k, &cni(flavor, CniType::Flannel, Some(POD)), "amd64");

        // Missing artifact for the arch, and no artifact at all.
        let main = match flavor {
            Flavor::K3s => "k3s",
            Flavor::Rke2 => "rke2",
            Flavor::Kubeadm => "kubelet",
        };
        let mut k = server(flavor);
        k.artifacts
            .retain(|a| !(a.name == main && a.arch == Arch::Arm64));
        plan_ok(&k, &flannel(flavor), "amd64");
        let e = refuse(&k, &flannel(flavor), &target("arm64"));
        assert_eq!(e.field, "kubernetes.artifacts", "{flavor:?}");
        assert!(
            e.message.contains(main) && e.message.contains("arm64") && e.message.contains("amd64"),
            "{e}"
        );
        k.artifacts.retain(|a| a.name != main);
        let e = refuse(&k, &flannel(flavor), &t);
        assert!(e.message.contains(&format!("no artifact `{main}`")), "{e}");
        // An unknown artifact name is a typo, not silently ignored.
        let mut k = server(flavor);
        k.artifacts
            .push(art("kubelett", Arch::Amd64, "https://x.test/kubelett"));
        let e = refuse(&k, &flannel(flavor), &t);
        assert!(
            e.field.starts_with("kubernetes.artifacts[") && e.field.ends_with("].name"),
            "{e}"
        );

        // Calico pool disagreeing with the pod network.
        let mut c = cni(flavor, CniType::Calico, Some(POD));
        c.values =
            json!({"installation": {"calicoNetwork": {"ipPools": [{"cidr": "192.168.0.0/16"}]}}});
        let e = refuse(&server(flavor), &c, &t);
        assert_eq!(
            e.field,
            "cni.values.installation.calicoNetwork.ipPools[0].cidr"
        );
        // Bad node name.
        let e = refuse(
            &server(flavor),
            &flannel(flavor),
            &Target::new("amd64", "Edge_1").unwrap(),
        );
        assert_eq!(e.field, "target.node_name");
    }
    // Unknown arch.
    let e = Target::new("riscv64", "edge-1").unwrap_err();
    assert_eq!(e.field, "target.arch");
    assert!(e.message.contains("riscv64"));
    // k3s: values may not override what Cairn manages.
    let mut k = server(Flavor::K3s);
    k.values = json!({"token": "leak"});
    assert_eq!(
        refuse(&k, &flannel(Flavor::K3s), &t).field,
        "kubernetes.values.token"
    );
    k.values = json!({"flannel-backend": "vxlan"});
    assert_eq!(
        refuse(&k, &cni(Flavor::K3s, CniType::Cilium, None), &t).field,
        "kubernetes.values.flannel-backend"
    );
    // RKE2: joining on the API port is the classic mistake.
    let e = refuse(
        &agent(Flavor::Rke2, "https://10.0.0.1:6443"),
        &flannel(Flavor::Rke2),
        &t,
    );
    assert_eq!(e.field, "kubernetes.server");
    assert!(e.message.contains("9345"), "{e}");
    // kubeadm: join without CA hash, bad token, too old for v1beta4, unknown value.
    let mut k = agent(Flavor::Kubeadm, "https://10.0.0.1");
    k.values = Value::Null;
    let e = refuse(&k, &flannel(Flavor::Kubeadm), &t);
    assert_eq!(e.field, "kubernetes.values.caCertHashes");
    assert!(e.message.contains("unsafeSkipCAVerification"), "{e}");
    let mut k = agent(Flavor::Kubeadm, "https://10.0.0.1");
    k.values = json!({"caCertHashes": ["sha256:abc"]});
    assert_eq!(
        refuse(&k, &flannel(Flavor::Kubeadm), &t).field,
        "kubernetes.values.caCertHashes[0]"
    );
    let mut k = server(Flavor::Kubeadm);
    k.token = Some("not-a-bootstrap-token".into());
    assert_eq!(
        refuse(&k, &flannel(Flavor::Kubeadm), &t).field,
        "kubernetes.token"
    );
    let mut k = server(Flavor::Kubeadm);
    k.version = "v1.30.9".into();
    assert_eq!(
        refuse(&k, &flannel(Flavor::Kubeadm), &t).field,
        "kubernetes.version"
    );
    let mut k = server(Flavor::Kubeadm);
    k.values = json!({"cluster-cidr": POD});
    assert_eq!(
        refuse(&k, &flannel(Flavor::Kubeadm), &t).field,
        "kubernetes.values.cluster-cidr"
    );
    // kubeadm CNI artifacts per arch.
    let mut c = cni(Flavor::Kubeadm, CniType::Cilium, None);
    c.artifacts
        .retain(|a| !(a.name == "helm" && a.arch == Arch::Arm64));
    assert_eq!(
        refuse(&server(Flavor::Kubeadm), &c, &target("arm64")).field,
        "cni.artifacts"
    );
    // Flannel values are checked.
    let mut c = cni(Flavor::K3s, CniType::Flannel, None);
    c.values = json!({"backend": "ipsec"});
    assert_eq!(
        refuse(&server(Flavor::K3s), &c, &t).field,
        "cni.values.backend"
    );
    c.values = json!({"backnd": "vxlan"});
    assert_eq!(
        refuse(&server(Flavor::K3s), &c, &t).field,
        "cni.values.backnd"
    );
}

/// Records every command; answers `systemctl is-enabled` with `disabled`, all else with 0.
#[derive(Default)]
struct Recorder(Mutex<Vec<Vec<String>>>);

impl Runner for Recorder {
    fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let mut argv = vec![cmd.program.clone()];
        argv.extend(cmd.args.iter().cloned());
        let is_enabled = argv.iter().any(|a| a == "is-enabled");
        let enabled_before = self
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.last() == argv.last() && c.iter().any(|a| a == "enable"));
        self.0.lock().unwrap().push(argv);
        let (status, out) = match (is_enabled, enabled_before) {
            (true, true) => (0, "enabled\n"),
            (true, false) => (1, "disabled\n"),
            _ => (0, ""),
        };
        Ok(Output {
            status,
            stdout: out.as_bytes().to_vec(),
            stderr: Vec::new(),
        })
    }
}

fn apply(
    p: &Plan,
    root: &std::path::Path,
    runner: &Arc<Recorder>,
    stages: &[&str],
) -> engine::Outcome {
    let host = Host::new(root, runner.clone());
    let opts = ApplyOptions {
        stages: stages.iter().map(|s| s.to_string()).collect(),
        dry_run: false,
        owner: engine::Owner::Kubernetes,
    };
    let mut events = Emitter::new("test");
    engine::apply(&p.into_config(), &host, &opts, &mut events)
}

#[test]
fn a_plan_lands_through_the_stage_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let runner = Arc::new(Recorder::default());
    let p = plan_ok(
        &server(Flavor::K3s),
        &cni(Flavor::K3s, CniType::Calico, Some(POD)),
        "arm64",
    );
    let out = apply(&p, root, &runner, &["kubernetes", "cni"]);
    assert!(out.ok(), "{:?}", out.failed);
    assert!(out.changed > 0);
    for f in &p.files {
        let on_disk = root.join(f.path.trim_start_matches('/'));
        let meta = std::fs::metadata(&on_disk).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        assert_eq!(meta.mode() & 0o7777, f.mode, "{}", f.path);
        assert_eq!(
            std::fs::read_to_string(&on_disk).unwrap(),
            f.content,
            "{}",
            f.path
        );
    }
    let tok = std::fs::metadata(root.join("etc/rancher/k3s/cairn-token")).unwrap();
    assert_eq!(tok.mode() & 0o777, 0o600);
    // The only commands: systemctl against the root, enabling k3s — nothing started.
    let cmds = runner.0.lock().unwrap().clone();
    assert!(!cmds.is_empty());
    for c in &cmds {
        assert_eq!(c[0], "systemctl", "{c:?}");
        assert_eq!(
            c[1],
            format!("--root={}", std::path::absolute(root).unwrap().display())
        );
        assert!(!c.iter().any(|a| a == "start" || a == "restart"), "{c:?}");
    }
    assert!(
        cmds.iter()
            .any(|c| c[2..] == ["enable".to_string(), "k3s.service".to_string()]),
        "{cmds:?}"
    );
    // Idempotent: a second apply of the same plan changes nothing.
    let again = apply(&p, root, &runner, &["kubernetes", "cni"]);
    assert!(again.ok(), "{:?}", again.failed);
    assert_eq!(again.changed, 0, "{:?}", again.changes);
    assert!(again.changes.is_empty());
}

#[test]
fn kubeadm_host_prep_lands_through_the_stage_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let runner = Arc::new(Recorder::default());
    let p = plan_ok(
        &server(Flavor::Kubeadm),
        &cni(Flavor::Kubeadm, CniType::Flannel, None),
        "amd64",
    );
    // A Debian target: containerd (no artifact listed) comes from apt.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let out = apply(&p, root, &runner, &["kubernetes"]);
    assert!(out.ok(), "{:?}", out.failed);
    let init = std::fs::metadata(root.join("etc/cairn/kubeadm/init.yaml")).unwrap();
    assert_eq!(init.mode() & 0o777, 0o600);
    assert!(root
        .join("etc/systemd/system/kubelet.service.d/10-kubeadm.conf")
        .is_file());
    let read_dir = |d: &str| -> String {
        std::fs::read_dir(root.join(d))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect()
    };
    let mods = read_dir("etc/modules-load.d");
    assert!(
        mods.lines().any(|l| l == "overlay") && mods.lines().any(|l| l == "br_netfilter"),
        "{mods}"
    );
    let sysctl = read_dir("etc/sysctl.d");
    assert!(
        sysctl.contains("net.bridge.bridge-nf-call-iptables = 1"),
        "{sysctl}"
    );
    assert!(sysctl.contains("net.ipv4.ip_forward = 1"), "{sysctl}");
    // The CNI manifests belong to the `cni` stage, not run here.
    assert!(!root
        .join("var/lib/cairn/kubernetes/cni/kube-flannel.yml")
        .exists());
    let out = apply(&p, root, &runner, &["cni"]);
    assert!(out.ok(), "{:?}", out.failed);
    assert!(root
        .join("var/lib/cairn/kubernetes/cni/kube-flannel.yml")
        .is_file());
    let cmds = runner.0.lock().unwrap().clone();
    let (packages, others): (Vec<_>, Vec<_>) = cmds.iter().partition(|c| {
        c[0] == "chroot"
            && c.iter()
                .any(|a| a.starts_with("apt") || a.starts_with("dpkg"))
    });
    assert!(
        packages.iter().any(|c| c.iter().any(|a| a == "install")
            && c.last().map(String::as_str) == Some("containerd")),
        "containerd installed with apt: {packages:?}"
    );
    assert!(others.iter().all(|c| c[0] == "systemctl"), "{others:?}");
    for u in ["containerd.service", "kubelet.service"] {
        assert!(cmds.iter().any(|c| c.last().map(String::as_str) == Some(u) && c.iter().any(|a| a == "enable")), "{u}");
    }
}

#[test]
fn yaml_renderer_and_cidr_overlap() {
    use cairn_agent::kubernetes::render::{self, Cidr};
    let v = json!({"a": "on", "b": [1, {"c": "x", "d": []}], "e": {}, "f-g": true, "0644": "0644"});
    let text = render::yaml(&v);
    assert_eq!(
        text,
        "\"0644\": \"0644\"\na: \"on\"\nb:\n- 1\n- c: \"x\"\n  d: []\ne: {}\nf-g: true\n"
    );
    // Round trip through the agent's YAML reader: strings stay strings.
    assert_eq!(doc(&text), v);
    let a = Cidr::parse("10.42.0.0/16").unwrap();
    let b = Cidr::parse("10.43.0.0/16").unwrap();
    let c = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(!a.overlaps(&b));
    assert!(a.overlaps(&c) && c.overlaps(&b));
    assert!(Cidr::parse("10.42.0.0/33").is_err());
    assert!(!a.overlaps(&Cidr::parse("fd00::/8").unwrap()));
    assert!(Cidr::parse("fd00:42::/56")
        .unwrap()
        .overlaps(&Cidr::parse("fd00:42:0:1::/64").unwrap()));
}

/// Each flavor joins on its own port: RKE2 on its supervisor (9345), k3s and kubeadm through
/// the API server. A `server:` URL on the other flavor's port is refused before any
/// artifact is looked at (a node that would never join); another port (a load balancer's
/// 443) is the operator's choice. A missing artifact is typed as such.
#[test]
fn a_server_url_on_the_other_flavors_join_port_is_refused() {
    let t = target("amd64");
    for flavor in [Flavor::K3s, Flavor::Kubeadm] {
        let mut k = agent(flavor, "https://cp.example.com:9345");
        k.artifacts.clear();
        let e = refuse(&k, &cni(flavor, CniType::Flannel, None), &t);
        assert_eq!(e.field, "kubernetes.server", "{flavor:?}: {e}");
        assert!(
            e.message.contains("not on 9345, RKE2's supervisor port")
                && e.message.contains("https://cp.example.com:6443"),
            "{e}"
        );
        assert_eq!(e.kind, kubernetes::PlanErrorKind::Invalid);
        plan_ok(
            &agent(flavor, "https://cp.example.com:443"),
            &cni(flavor, CniType::Flannel, None),
            "amd64",
        );
    }
    let mut k = agent(Flavor::Rke2, "https://10.0.0.1:6443");
    k.artifacts.clear();
    let e = refuse(&k, &cni(Flavor::Rke2, CniType::Flannel, None), &t);
    assert_eq!(e.field, "kubernetes.server");
    let mut k = server(Flavor::K3s);
    k.artifacts.retain(|a| a.arch != Arch::Arm64);
    let e = refuse(
        &k,
        &cni(Flavor::K3s, CniType::Flannel, None),
        &target("arm64"),
    );
    assert_eq!(
        e.kind,
        kubernetes::PlanErrorKind::MissingArtifact {
            name: "k3s".into(),
            arch: Arch::Arm64
        }
    );
}
