#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Add-on charts from the hub's registries (docs/kubernetes.md, "Charts from registries"):
//! a chart from an HTTP Helm repository with basic auth and one from an OCI registry with
//! token auth install as add-ons, each verified by its digest; the OCI registry's
//! credentials become the runtime's registry configuration (0600); no credential appears
//! in an event, a log line or the plan's debug output; a tampered chart or refused
//! credentials fail before anything is placed.
//!
//! The registries are the loopback doubles of `tests/doubles/registry/`.

mod common;
#[path = "common/k8s.rs"]
mod k8s;
#[path = "../../tests/doubles/registry/mod.rs"]
mod registry_double;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_agent::artifacts::FetchOptions;
use cairn_agent::engine::NoJournal;
use cairn_agent::events::{Emitter, MemorySink};
use cairn_agent::host::Host;
use cairn_agent::kubernetes::install::{InstallOptions, Timeouts};
use cairn_agent::profile::{self, ApplyError};
use cairn_proto::profile::{AddonsLayer, Chart, CniType, Flavor, Layer, Profile};
use cairn_proto::registry::{RegistryAccess, RegistryKind};
use cairn_proto::{Phase, PhaseStatus};
use k8s::{K8sRoot, Mirror};
use registry_double::{HelmRepo, OciRegistry};

const HELM_USER: &str = "reader";
const HELM_PW: &str = "CANARY-helm-pw-3c9d1e";
const OCI_USER: &str = "robot";
const OCI_PW: &str = "CANARY-oci-pw-8b2f40";

fn opts() -> InstallOptions {
    InstallOptions {
        start: true,
        cache_dir: None,
        fetch: FetchOptions {
            attempts: 2,
            backoff: Duration::from_millis(10),
            ..FetchOptions::default()
        },
        timeouts: Timeouts::all(Duration::from_secs(20)),
        poll: Duration::from_millis(50),
        bundles: Vec::new(),
        proxy: None,
    }
}

fn chart_tgz(name: &str, version: &str) -> Vec<u8> {
    k8s::tarball(&[(
        &format!("{name}/Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n").into_bytes(),
        0o644,
    )])
}

fn ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["registry.test".into()])
        .unwrap()
        .cert
        .pem()
}

struct Doubles {
    helm: HelmRepo,
    oci: OciRegistry,
    registries: Vec<RegistryAccess>,
    hello: Vec<u8>,
    api: Vec<u8>,
}

fn doubles(oci_password: &str) -> Doubles {
    let helm = HelmRepo::start(HELM_USER, HELM_PW);
    let hello = chart_tgz("hello", "0.1.0");
    helm.add("hello", "0.1.0", hello.clone());
    helm.add("hello", "0.2.0", chart_tgz("hello", "0.2.0"));
    let oci = OciRegistry::start(OCI_USER, OCI_PW);
    let api = chart_tgz("api", "1.2.3");
    oci.push_chart("charts/api", "1.2.3", api.clone());
    let registries = vec![
        RegistryAccess {
            name: "corp-helm".into(),
            kind: RegistryKind::Helm,
            url: helm.url.clone(),
            ca_pem: None,
            username: Some(HELM_USER.into()),
            password: Some(HELM_PW.into()),
            token: None,
        },
        RegistryAccess {
            name: "corp-oci".into(),
            kind: RegistryKind::Oci,
            url: oci.url.clone(),
            ca_pem: Some(ca_pem()),
            username: Some(OCI_USER.into()),
            password: Some(oci_password.into()),
            token: None,
        },
    ];
    Doubles {
        helm,
        oci,
        registries,
        hello,
        api,
    }
}

/// `oci_by_name`: the OCI chart names `registry: corp-oci`; otherwise an `oci://` repo on
/// the registry's host.
fn addons(d: &Doubles, oci_by_name: bool) -> AddonsLayer {
    AddonsLayer {
        manifests: vec![],
        charts: vec![
            Chart {
                name: "web".into(),
                chart: "hello".into(),
                repo: None,
                registry: Some("corp-helm".into()),
                version: "0.1.0".into(),
                namespace: Some("web".into()),
                values: serde_json::json!({"replicas": 2}),
            },
            if oci_by_name {
                Chart {
                    name: "api".into(),
                    chart: "charts/api".into(),
                    repo: None,
                    registry: Some("corp-oci".into()),
                    version: "1.2.3".into(),
                    namespace: None,
                    values: serde_json::Value::Null,
                }
            } else {
                Chart {
                    name: "api".into(),
                    chart: "api".into(),
                    repo: Some(format!("oci://{}/charts", d.oci.host())),
                    registry: None,
                    version: "1.2.3".into(),
                    namespace: None,
                    values: serde_json::Value::Null,
                }
            },
        ],
        artifacts: vec![],
    }
}

/// A writer for a tracing subscriber that keeps everything logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Outcome {
    result: Result<(), ApplyError>,
    events: String,
    logs: String,
    plan_debug: String,
}

fn install(
    flavor: Flavor,
    cni: CniType,
    root: &K8sRoot,
    d: &Doubles,
    oci_by_name: bool,
) -> Outcome {
    let m = Mirror::start();
    let (k, c) = k8s::publish(&m, flavor, cni, &k8s::version(flavor, 31), false);
    let p = Profile {
        name: "edge".into(),
        version: 1,
        description: String::new(),
        addon_profiles: Vec::new(),
        layers: vec![
            Layer::Kubernetes(k),
            Layer::Cni(c),
            Layer::Addons(addons(d, oci_by_name)),
        ],
    };
    let checked = cairn_userdata::profile::check("p.json", p).unwrap();
    let host = Host::system(root.path());
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let sink = MemorySink::default();
    let (result, plan_debug) = tracing::subscriber::with_default(subscriber, || {
        let plan = profile::validate_for(
            &checked,
            &profile::Machine::of(&host),
            &Default::default(),
            &d.registries,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        tracing::debug!(?plan, "the validated plan");
        let plan_debug = format!("{plan:?}");
        let o = profile::ApplyOptions {
            install: opts(),
            off_root_cache: host.root().join("var/lib/cairn/artifacts"),
            os_stages: profile::os_stages(),
        };
        let mut em = Emitter::new("node-1").with_sink(Box::new(sink.clone()));
        let r = profile::apply(&plan, &host, &o, &mut em, &mut NoJournal).map(|out| match out {
            profile::Outcome::Applied(a) => {
                let last = a.kubernetes.unwrap().phases.pop().unwrap();
                assert_eq!(
                    (last.phase, last.status),
                    (Phase::Addons, PhaseStatus::Done)
                );
            }
            profile::Outcome::Interrupted => panic!("interrupted"),
        });
        (r, plan_debug)
    });
    let events = sink
        .events()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    Outcome {
        result,
        events,
        logs,
        plan_debug,
    }
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [HELM_PW, OCI_PW] {
        assert!(!text.contains(s), "{what} shows {s}:\n{text}");
    }
}

fn mode(root: &K8sRoot, inside: &str) -> u32 {
    std::fs::metadata(root.path().join(inside.trim_start_matches('/')))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn k3s_installs_a_helm_repo_chart_and_an_oci_chart_with_their_credentials() {
    let d = doubles(OCI_PW);
    let root = K8sRoot::new();
    let out = install(Flavor::K3s, CniType::Flannel, &root, &d, false);
    out.result.unwrap_or_else(|e| panic!("{e}"));
    // Both charts placed where k3s serves static charts, byte for byte, and referenced.
    let charts = "var/lib/rancher/k3s/server/static/charts";
    assert_eq!(
        std::fs::read(root.path().join(charts).join("hello-0.1.0.tgz")).unwrap(),
        d.hello
    );
    assert_eq!(
        std::fs::read(root.path().join(charts).join("api-1.2.3.tgz")).unwrap(),
        d.api
    );
    let dir = "/var/lib/rancher/k3s/server/manifests";
    let web = root.read(&format!("{dir}/cairn-addon-chart-web.yaml"));
    assert!(
        web.contains("https://%{KUBERNETES_API}%/static/charts/hello-0.1.0.tgz"),
        "{web}"
    );
    assert!(
        web.contains("replicas: 2") && web.contains("targetNamespace: \"web\""),
        "{web}"
    );
    let api = root.read(&format!("{dir}/cairn-addon-chart-api.yaml"));
    assert!(api.contains("static/charts/api-1.2.3.tgz"), "{api}");
    // The repository saw basic auth on every request; the OCI registry a challenge, a token
    // fetched with basic auth, then bearer requests.
    let helm_seen = d.helm.seen.lock().unwrap().clone();
    assert!(
        helm_seen
            .iter()
            .all(|s| s.auth.as_deref() == Some("Basic") && s.status.starts_with("200")),
        "{helm_seen:?}"
    );
    assert_eq!(
        helm_seen
            .iter()
            .map(|s| s.path.as_str())
            .collect::<Vec<_>>(),
        ["/index.yaml", "/charts/hello-0.1.0.tgz"]
    );
    let oci_seen = d.oci.seen.lock().unwrap().clone();
    assert!(
        oci_seen
            .iter()
            .any(|s| s.path == "/token" && s.auth.as_deref() == Some("Basic")),
        "{oci_seen:?}"
    );
    assert!(
        oci_seen.iter().any(|s| s.path.contains("/blobs/sha256:")
            && s.auth.as_deref() == Some("Bearer")
            && s.status.starts_with("200")),
        "{oci_seen:?}"
    );
    // The runtime pulls images from the OCI registry with its credentials and CA.
    let reg = root.read("/etc/rancher/k3s/registries.yaml");
    assert!(
        reg.contains(&d.oci.host())
            && reg.contains(OCI_PW)
            && reg.contains("/etc/cairn/registries/corp-oci-ca.pem"),
        "{reg}"
    );
    assert!(
        !reg.contains(HELM_PW),
        "a Helm repository is no image registry: {reg}"
    );
    assert_eq!(mode(&root, "/etc/rancher/k3s/registries.yaml"), 0o600);
    assert!(root
        .read("/etc/cairn/registries/corp-oci-ca.pem")
        .contains("BEGIN CERTIFICATE"));
    // Nothing secret in events, logs or the plan's debug form.
    assert!(
        out.logs
            .contains("chart fetched from its registry and verified"),
        "{}",
        out.logs
    );
    assert_no_secret("the events", &out.events);
    assert_no_secret("the agent's log", &out.logs);
    assert_no_secret("the plan", &out.plan_debug);
}

#[test]
fn kubeadm_installs_registry_charts_with_helm_and_gives_containerd_the_credentials() {
    let d = doubles(OCI_PW);
    let root = K8sRoot::new();
    let out = install(Flavor::Kubeadm, CniType::Cilium, &root, &d, true);
    out.result.unwrap_or_else(|e| panic!("{e}"));
    let web = root.read("/var/lib/k8s-double/releases/web");
    assert!(web.contains("chart=/var/lib/cairn/kubernetes/addons/hello-0.1.0.tgz repo= version=0.1.0 namespace=web"), "{web}");
    let api = root.read("/var/lib/k8s-double/releases/api");
    assert!(
        api.contains("chart=/var/lib/cairn/kubernetes/addons/api-1.2.3.tgz repo= version=1.2.3"),
        "{api}"
    );
    assert_eq!(
        std::fs::read(
            root.path()
                .join("var/lib/cairn/kubernetes/addons/api-1.2.3.tgz")
        )
        .unwrap(),
        d.api
    );
    let containerd = root.read("/etc/containerd/config.toml");
    assert!(
        containerd.contains(&format!("registry.configs.\"{}\".auth", d.oci.host()))
            && containerd.contains(OCI_PW),
        "{containerd}"
    );
    assert_eq!(mode(&root, "/etc/containerd/config.toml"), 0o600);
    let hosts = root.read(&format!(
        "/etc/containerd/certs.d/{}/hosts.toml",
        d.oci.host()
    ));
    assert!(
        hosts.contains("ca = \"/etc/cairn/registries/corp-oci-ca.pem\""),
        "{hosts}"
    );
    assert_no_secret("the events", &out.events);
    assert_no_secret("the agent's log", &out.logs);
    assert_no_secret("the plan", &out.plan_debug);
}

#[test]
fn a_tampered_chart_or_refused_credentials_fail_before_anything_is_placed() {
    let charts = "var/lib/rancher/k3s/server/static/charts";
    // The Helm archive no longer matches the index's digest.
    let d = doubles(OCI_PW);
    d.helm.tamper("hello", "0.1.0");
    let root = K8sRoot::new();
    let out = install(Flavor::K3s, CniType::Flannel, &root, &d, false);
    let err = out
        .result
        .expect_err("a tampered chart installed")
        .to_string();
    assert!(
        err.contains("does not match its digest") && err.contains("corp-helm"),
        "{err}"
    );
    assert!(
        !root.path().join(charts).exists() && !root.path().join("etc/rancher/k3s").exists(),
        "something was placed"
    );
    // The OCI chart layer no longer matches the manifest's digest.
    let d = doubles(OCI_PW);
    d.oci.tamper("charts/api");
    let root = K8sRoot::new();
    let err = install(Flavor::K3s, CniType::Flannel, &root, &d, true)
        .result
        .expect_err("tampered")
        .to_string();
    assert!(
        err.contains("does not match its digest") && err.contains("corp-oci"),
        "{err}"
    );
    assert!(!root.path().join(charts).exists());
    // Wrong credentials: the token service refuses; the message says so, without them.
    let d = doubles("CANARY-wrong-pw");
    let root = K8sRoot::new();
    let out = install(Flavor::K3s, CniType::Flannel, &root, &d, true);
    let err = out
        .result
        .expect_err("wrong credentials installed")
        .to_string();
    assert!(
        err.contains("401") && err.contains("refused the credentials"),
        "{err}"
    );
    assert!(!err.contains("CANARY"), "{err}");
    assert_no_secret("the events", &out.events);
    assert!(!out.logs.contains("CANARY-wrong-pw"), "{}", out.logs);
    assert!(!root.path().join(charts).exists());
    // A chart naming a registry the hub did not send is refused at validation.
    let d = doubles(OCI_PW);
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Flannel,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    let p = Profile {
        name: "edge".into(),
        version: 1,
        description: String::new(),
        addon_profiles: Vec::new(),
        layers: vec![
            Layer::Kubernetes(k),
            Layer::Cni(c),
            Layer::Addons(addons(&d, true)),
        ],
    };
    let checked = cairn_userdata::profile::check("p.json", p).unwrap();
    let root = K8sRoot::new();
    let host = Host::system(root.path());
    let e = profile::validate_for(
        &checked,
        &profile::Machine::of(&host),
        &Default::default(),
        &d.registries[..1],
    )
    .expect_err("an unknown registry validated")
    .to_string();
    assert!(
        e.contains("corp-oci") && e.contains("the hub did not send"),
        "{e}"
    );
    let _ = std::io::stdout().flush();
}

/// A host's profile with attached add-on profiles (as the hub serves it): the profile's own
/// add-ons, then each add-on profile's, in one ordered plan; an add-on profile's registry
/// chart is fetched with the registry's credentials like any other.
#[test]
fn attached_addon_profiles_install_as_one_ordered_plan() {
    use cairn_proto::profile::{AttachedAddons, Manifest};
    let d = doubles(OCI_PW);
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Flannel,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    let all = addons(&d, true);
    let own = AddonsLayer {
        manifests: vec![Manifest {
            name: "ns".into(),
            content: Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n".into()),
            url: None,
            sha256: None,
        }],
        charts: vec![],
        artifacts: vec![],
    };
    let attached = |name: &str, i: usize| AttachedAddons {
        name: name.into(),
        version: 2,
        addons: AddonsLayer {
            manifests: vec![],
            charts: vec![all.charts[i].clone()],
            artifacts: vec![],
        },
    };
    let p = Profile {
        name: "edge".into(),
        version: 1,
        description: String::new(),
        layers: vec![Layer::Kubernetes(k), Layer::Cni(c), Layer::Addons(own)],
        addon_profiles: vec![attached("db", 1), attached("web", 0)],
    };
    let checked = cairn_userdata::profile::check("p.json", p).unwrap();
    let root = K8sRoot::new();
    let host = Host::system(root.path());
    let plan = profile::validate_for(
        &checked,
        &profile::Machine::of(&host),
        &Default::default(),
        &d.registries,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let kube = plan.kubernetes.as_ref().unwrap();
    let layer = kube.addons_layer.as_ref().unwrap();
    let order: Vec<&str> = layer
        .manifests
        .iter()
        .map(|m| m.name.as_str())
        .chain(layer.charts.iter().map(|c| c.name.as_str()))
        .collect();
    assert_eq!(order, ["ns", "api", "web"]);
    assert_eq!(kube.addons.as_ref().unwrap().pending, vec![0, 1]);
    let o = profile::ApplyOptions {
        install: opts(),
        off_root_cache: host.root().join("var/lib/cairn/artifacts"),
        os_stages: profile::os_stages(),
    };
    let mut em = Emitter::new("node-1");
    match profile::apply(&plan, &host, &o, &mut em, &mut NoJournal)
        .unwrap_or_else(|e| panic!("{e}"))
    {
        profile::Outcome::Applied(a) => {
            let last = a.kubernetes.unwrap().phases.pop().unwrap();
            assert_eq!(
                (last.phase, last.status),
                (Phase::Addons, PhaseStatus::Done)
            );
        }
        profile::Outcome::Interrupted => panic!("interrupted"),
    }
    let dir = "/var/lib/rancher/k3s/server/manifests";
    assert!(root
        .read(&format!("{dir}/cairn-addon-ns.yaml"))
        .contains("kind: Namespace"));
    assert!(root
        .read(&format!("{dir}/cairn-addon-chart-api.yaml"))
        .contains("static/charts/api-1.2.3.tgz"));
    assert!(root
        .read(&format!("{dir}/cairn-addon-chart-web.yaml"))
        .contains("static/charts/hello-0.1.0.tgz"));

    // An add-on profile alone is not applied.
    let alone = Profile {
        name: "monitoring".into(),
        version: 1,
        description: String::new(),
        layers: vec![Layer::Addons(addons(&d, true))],
        addon_profiles: Vec::new(),
    };
    let checked = cairn_userdata::profile::check("a.json", alone).unwrap();
    let e = profile::validate_for(
        &checked,
        &profile::Machine::of(&host),
        &Default::default(),
        &d.registries,
    )
    .expect_err("an add-on profile applied alone")
    .to_string();
    assert!(e.contains("add-on profile"), "{e}");
}

/// Without the hub (`cairn-agent validate`, `plan`), a chart naming a registry is valid and
/// planned as fetched from it, verified by its registry's digest.
#[test]
fn validate_and_plan_accept_registry_charts_without_the_hub() {
    let d = doubles(OCI_PW);
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Flannel,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    let p = Profile {
        name: "edge".into(),
        version: 1,
        description: String::new(),
        addon_profiles: Vec::new(),
        layers: vec![
            Layer::Kubernetes(k),
            Layer::Cni(c),
            Layer::Addons(addons(&d, true)),
        ],
    };
    let checked = cairn_userdata::profile::check("p.json", p).unwrap();
    let entries = cairn_agent::packs::plan_entries(
        &checked,
        &[cairn_proto::profile::Arch::Amd64],
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = cairn_agent::packs::render_plan(&entries);
    assert!(text.contains("registry corp-helm: hello 0.1.0"), "{text}");
    assert!(
        text.contains("registry corp-oci: charts/api 1.2.3"),
        "{text}"
    );
    assert!(
        entries.iter().filter(|e| e.from == "registry").count() == 2,
        "{text}"
    );
    // Nothing was fetched from the registries to plan.
    assert!(d.helm.seen.lock().unwrap().is_empty() && d.oci.seen.lock().unwrap().is_empty());
}
