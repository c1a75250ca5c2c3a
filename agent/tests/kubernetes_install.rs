#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Kubernetes install pipeline end to end, against a loopback release mirror serving
//! test doubles (tests/doubles/k8s): every flavor × CNI reaches `cni-ready` with each phase
//! reported; re-applying changes and restarts nothing; an upgrade replaces the binaries and
//! restarts in place; a failing new version rolls back; the arch picks the artifacts.
//! Services run in a prepared test root through the systemctl double; the agent's code
//! path is the production one (systemctl and kubectl inside the target).

mod common;
#[path = "common/k8s.rs"]
mod k8s;

use std::time::{Duration, Instant};

use cairn_agent::artifacts::FetchOptions;
use cairn_agent::engine::NoJournal;
use cairn_agent::events::{Emitter, MemorySink};
use cairn_agent::host::Host;
use cairn_agent::kubernetes::install::{
    self, InstallError, InstallOptions, Report, Timeouts, PHASES,
};
use cairn_agent::kubernetes::{self, Target};
use cairn_agent::profile;
use cairn_proto::profile::{
    AddonsLayer, Arch, Chart, CniLayer, CniType, Flavor, KubernetesLayer, Layer, Manifest, Profile,
};
use cairn_proto::{Event, EventKind, Phase, PhaseStatus};
use k8s::{K8sRoot, Mirror};

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

struct Applied {
    result: Result<Report, InstallError>,
    events: Vec<Event>,
}

fn apply(root: &K8sRoot, k: &KubernetesLayer, c: &CniLayer, o: &InstallOptions) -> Applied {
    let host = Host::system(root.path());
    let arch = cairn_agent::host::osrelease::target_arch(&host);
    let target = Target::new(arch, "node-1").unwrap();
    let plan = kubernetes::plan(k, c, &target).unwrap();
    let sink = MemorySink::default();
    let mut em = Emitter::new("node-1").with_sink(Box::new(sink.clone()));
    let result = install::install(&plan, &host, o, &mut em);
    Applied {
        result,
        events: sink.events(),
    }
}

/// A profile through the agent's one apply path: validated for the root's machine, its
/// artifacts fetched into the root's own cache, then applied.
fn apply_profile(
    p: &Profile,
    host: &Host,
    o: &InstallOptions,
    em: &mut Emitter,
) -> Result<Report, profile::ApplyError> {
    let checked = cairn_userdata::profile::check("p.json", p.clone()).unwrap();
    let plan =
        profile::validate(&checked, &profile::Machine::of(host)).unwrap_or_else(|e| panic!("{e}"));
    let opts = profile::ApplyOptions {
        install: o.clone(),
        off_root_cache: host.root().join("var/lib/cairn/artifacts"),
        os_stages: profile::os_stages(),
    };
    match profile::apply(&plan, host, &opts, em, &mut NoJournal)? {
        profile::Outcome::Applied(a) => Ok(a.kubernetes.unwrap()),
        profile::Outcome::Interrupted => panic!("interrupted without a journal"),
    }
}

fn phases(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Phase)
        .map(|e| {
            (
                e.step.clone(),
                e.data["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn describe(root: &K8sRoot, a: &Applied, svc: &str) -> String {
    format!(
        "result: {:?}\nphases: {:?}\nservice log:\n{}\nsystemctl: {:?}",
        a.result.as_ref().map(|r| &r.phases),
        phases(&a.events),
        root.unit_log(svc),
        root.service_log()
    )
}

fn full_install(flavor: Flavor, cni: CniType) {
    let combo = format!(
        "{} × {}",
        kubernetes::flavor_name(flavor),
        kubernetes::cni_name(cni)
    );
    let started = Instant::now();
    let m = Mirror::start();
    let (k, c) = k8s::publish(&m, flavor, cni, &k8s::version(flavor, 31), false);
    let root = K8sRoot::new();
    let svc = match flavor {
        Flavor::K3s => "k3s.service",
        Flavor::Rke2 => "rke2-server.service",
        Flavor::Kubeadm => "kubelet.service",
    };
    let a = apply(&root, &k, &c, &opts());
    assert!(a.result.is_ok(), "{combo}: {}", describe(&root, &a, svc));
    // Every phase reported once, in order, each with a duration.
    let got = phases(&a.events);
    let names: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, PHASES.to_vec(), "{combo}: phases in order");
    for (p, status) in &got {
        let want_skip = p == "addons";
        assert_eq!(
            status == "skipped",
            want_skip,
            "{combo}: phase {p} status {status}"
        );
    }
    for e in a.events.iter().filter(|e| e.kind == EventKind::Phase) {
        assert!(e.data["ms"].is_u64(), "{combo}: {e:?} has its duration");
        let phase: Phase = serde_json::from_value(e.data["phase"].clone()).unwrap();
        assert_eq!(phase.as_str(), e.step, "{combo}: {e:?}");
        assert_eq!(e.stage, phase.stage(), "{combo}: {e:?}");
    }
    let cni_ready = a
        .events
        .iter()
        .find(|e| e.kind == EventKind::Phase && e.step == "cni-ready")
        .unwrap();
    assert!(
        cni_ready.message.contains("ready") || cni_ready.message.contains("pod CIDR 10.50.0.0/24"),
        "{combo}: {}",
        cni_ready.message
    );
    // Downloads came from the mirror, only amd64 (the root's /bin/sh is this machine's).
    let reqs = m.requests();
    assert!(!reqs.is_empty(), "{combo}: nothing fetched");
    assert!(
        reqs.iter().all(|r| !r.contains("arm64")),
        "{combo}: amd64 target fetched {reqs:?}"
    );
    // The service was started exactly once, and reported active.
    assert_eq!(root.starts(svc), 1, "{combo}: {:?}", root.service_log());
    eprintln!("{combo}: installed in {:?}", started.elapsed());
}

macro_rules! combos {
    ($($name:ident: $f:ident, $c:ident;)*) => {$(
        #[test]
        fn $name() {
            full_install(Flavor::$f, CniType::$c);
        }
    )*};
}

combos! {
    k3s_calico_reaches_cni_ready: K3s, Calico;
    k3s_cilium_reaches_cni_ready: K3s, Cilium;
    k3s_flannel_reaches_cni_ready: K3s, Flannel;
    rke2_calico_reaches_cni_ready: Rke2, Calico;
    rke2_cilium_reaches_cni_ready: Rke2, Cilium;
    rke2_flannel_reaches_cni_ready: Rke2, Flannel;
    kubeadm_calico_reaches_cni_ready: Kubeadm, Calico;
    kubeadm_cilium_reaches_cni_ready: Kubeadm, Cilium;
    kubeadm_flannel_reaches_cni_ready: Kubeadm, Flannel;
}

fn phase_status(a: &Applied, phase: &str) -> String {
    phases(&a.events)
        .into_iter()
        .find(|(p, _)| p == phase)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// Re-applying the same layer: nothing fetched, nothing changed, nothing restarted.
fn reapply_changes_nothing(flavor: Flavor, cni: CniType, svc: &str) {
    let m = Mirror::start();
    let (k, c) = k8s::publish(&m, flavor, cni, &k8s::version(flavor, 31), false);
    let root = K8sRoot::new();
    let first = apply(&root, &k, &c, &opts());
    assert!(first.result.is_ok(), "{}", describe(&root, &first, svc));
    let fetched = m.requests().len();
    let log_before = root.service_log();
    let applies_before = root.read("/var/lib/k8s-double/apply.log");
    let second = apply(&root, &k, &c, &opts());
    let report = second.result.as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert!(report.changes.is_empty(), "changes: {:?}", report.changes);
    assert!(report.started.is_empty(), "started: {:?}", report.started);
    for p in ["artifacts", "host-prep", "install", "start"] {
        assert_eq!(phase_status(&second, p), "unchanged", "phase {p}");
    }
    assert_eq!(phase_status(&second, "cni-ready"), "done");
    assert_eq!(m.requests().len(), fetched, "no second download");
    assert_eq!(
        root.service_log(),
        log_before,
        "the service manager saw nothing new"
    );
    assert_eq!(
        root.read("/var/lib/k8s-double/apply.log"),
        applies_before,
        "the CNI was not applied again"
    );
    assert_eq!(root.starts(svc), 1);
}

#[test]
fn k3s_reapply_changes_and_restarts_nothing() {
    reapply_changes_nothing(Flavor::K3s, CniType::Calico, "k3s.service");
}

#[test]
fn rke2_reapply_changes_and_restarts_nothing() {
    reapply_changes_nothing(Flavor::Rke2, CniType::Cilium, "rke2-server.service");
}

#[test]
fn kubeadm_reapply_changes_and_restarts_nothing() {
    // A second `kubeadm init` would fail its preflight: the pipeline must not run it.
    reapply_changes_nothing(Flavor::Kubeadm, CniType::Flannel, "kubelet.service");
}

fn upgrade(flavor: Flavor, svc: &str, bin: &str) {
    let m = Mirror::start();
    let old = k8s::version(flavor, 31);
    let new = k8s::version(flavor, 32);
    let (k1, c) = k8s::publish(&m, flavor, CniType::Calico, &old, false);
    let (k2, _) = k8s::publish(&m, flavor, CniType::Calico, &new, false);
    let root = K8sRoot::new();
    let a = apply(&root, &k1, &c, &opts());
    assert!(a.result.is_ok(), "{}", describe(&root, &a, svc));
    assert!(root.read(bin).contains(&format!("DOUBLE_VERSION='{old}'")));
    let b = apply(&root, &k2, &c, &opts());
    assert!(b.result.is_ok(), "{}", describe(&root, &b, svc));
    assert!(
        root.read(bin).contains(&format!("DOUBLE_VERSION='{new}'")),
        "{bin} replaced by {new}"
    );
    let install = b
        .events
        .iter()
        .find(|e| e.kind == EventKind::Phase && e.step == "install")
        .unwrap();
    assert_eq!(install.data["upgraded_from"], old.as_str(), "{install:?}");
    assert_eq!(
        root.starts(svc),
        2,
        "restarted in place once: {:?}",
        root.service_log()
    );
    assert!(
        root.read("/var/lib/k8s-double/version").starts_with(&new),
        "the new version runs"
    );
    assert_eq!(phase_status(&b, "cni-ready"), "done");
}

#[test]
fn k3s_upgrade_replaces_the_binary_and_restarts_in_place() {
    upgrade(Flavor::K3s, "k3s.service", "/usr/local/bin/k3s");
}

#[test]
fn rke2_upgrade_replaces_the_tarball_layout_and_restarts_in_place() {
    upgrade(Flavor::Rke2, "rke2-server.service", "/usr/local/bin/rke2");
}

fn rollback(flavor: Flavor, svc: &str, bin: &str) {
    let m = Mirror::start();
    let old = k8s::version(flavor, 31);
    let new = k8s::version(flavor, 32);
    let (k1, c) = k8s::publish(&m, flavor, CniType::Flannel, &old, false);
    let (k2, _) = k8s::publish(&m, flavor, CniType::Flannel, &new, true);
    let root = K8sRoot::new();
    let a = apply(&root, &k1, &c, &opts());
    assert!(a.result.is_ok(), "{}", describe(&root, &a, svc));
    let b = apply(&root, &k2, &c, &opts());
    let err = b
        .result
        .as_ref()
        .err()
        .cloned()
        .unwrap_or_else(|| panic!("{}", describe(&root, &b, svc)));
    assert_eq!(err.phase, Phase::Start);
    assert!(err.rolled_back(), "{err}");
    assert!(
        err.message.contains("built to fail at start"),
        "the failure's log is named: {err}"
    );
    assert!(
        err.message.contains(&format!(
            "rolled back to {} {old}",
            kubernetes::flavor_name(flavor)
        )),
        "{err}"
    );
    assert_eq!(phase_status(&b, "start"), "rolled_back");
    assert!(
        root.read(bin).contains(&format!("DOUBLE_VERSION='{old}'")),
        "previous binary back"
    );
    // Started: first install, the failed new version, the rollback.
    assert_eq!(root.starts(svc), 3, "{:?}", root.service_log());
    let host = Host::system(root.path());
    let active = host
        .run_in_target(cairn_agent::host::Cmd::new("systemctl").args(["is-active", svc]))
        .unwrap();
    assert_eq!(active.status, 0, "{svc} runs again after the rollback");
    // The record still names the old version: re-applying it changes nothing.
    let again = apply(&root, &k1, &c, &opts());
    let report = again.result.unwrap_or_else(|e| panic!("{e}"));
    assert!(report.started.is_empty(), "{:?}", report.started);
}

#[test]
fn k3s_failing_new_version_rolls_back() {
    rollback(Flavor::K3s, "k3s.service", "/usr/local/bin/k3s");
}

#[test]
fn rke2_failing_new_version_rolls_back() {
    rollback(Flavor::Rke2, "rke2-server.service", "/usr/local/bin/rke2");
}

/// A root whose /bin/sh is an aarch64 ELF (only its header matters to the arch probe).
/// Nothing can run in it here, so the install stops after placing files, as the CLI does
/// for a root other than `/`.
#[test]
fn arm64_target_gets_arm64_artifacts_and_amd64_gets_amd64() {
    for (arch, machine) in [(Arch::Arm64, 0xb7u16), (Arch::Amd64, 0x3e)] {
        let x = k8s::arch_name(arch);
        let other = if arch == Arch::Arm64 {
            "amd64"
        } else {
            "arm64"
        };
        for flavor in [Flavor::K3s, Flavor::Rke2, Flavor::Kubeadm] {
            let m = Mirror::start();
            let (k, c) = k8s::publish(
                &m,
                flavor,
                CniType::Cilium,
                &k8s::version(flavor, 31),
                false,
            );
            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(root.path().join("bin")).unwrap();
            let mut elf = vec![0u8; 64];
            elf[..4].copy_from_slice(b"\x7fELF");
            elf[18..20].copy_from_slice(&machine.to_le_bytes());
            std::fs::write(root.path().join("bin/sh"), elf).unwrap();
            let host = Host::system(root.path());
            let arch_seen = cairn_agent::host::osrelease::target_arch(&host);
            assert_eq!(arch_seen, x);
            let plan =
                kubernetes::plan(&k, &c, &Target::new(arch_seen, "node-1").unwrap()).unwrap();
            let mut o = opts();
            o.start = false;
            let sink = MemorySink::default();
            let mut em = Emitter::new("node-1").with_sink(Box::new(sink.clone()));
            let report = install::install(&plan, &host, &o, &mut em)
                .unwrap_or_else(|e| panic!("{x} {flavor:?}: {e}"));
            let reqs = m.requests();
            assert!(!reqs.is_empty());
            assert!(
                reqs.iter().all(|r| r.contains(x)
                    || (flavor == Flavor::K3s && arch == Arch::Amd64 && r.ends_with("/k3s"))),
                "{x} {flavor:?} fetched {reqs:?}"
            );
            assert!(
                reqs.iter().all(|r| !r.contains(other)),
                "{x} {flavor:?} fetched {reqs:?}"
            );
            let bin = match flavor {
                Flavor::K3s => "usr/local/bin/k3s",
                Flavor::Rke2 => "usr/local/bin/rke2",
                Flavor::Kubeadm => "usr/local/bin/kubelet",
            };
            let text = std::fs::read_to_string(root.path().join(bin)).unwrap();
            assert!(
                text.contains(&format!("DOUBLE_ARCH='{x}'")),
                "{x} {flavor:?}: {bin}"
            );
            let skipped: Vec<_> = report
                .phases
                .iter()
                .filter(|p| p.status == PhaseStatus::Skipped)
                .map(|p| p.phase.as_str())
                .collect();
            assert_eq!(
                skipped,
                PHASES[3..].to_vec(),
                "nothing started in an image root"
            );
        }
    }
}

/// The doubles can fail: the k3s double refuses Calico with Flannel still on, and a CNI
/// pool that is not the cluster's pod CIDR.
#[test]
fn k3s_double_refuses_flannel_left_on_or_a_foreign_pod_cidr() {
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Calico,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    let root = K8sRoot::new();
    let a = apply(&root, &k, &c, &opts());
    assert!(a.result.is_ok(), "{}", describe(&root, &a, "k3s.service"));
    let host = Host::system(root.path());
    let dropin = root
        .path()
        .join("etc/rancher/k3s/config.yaml.d/90-cairn.yaml");
    let good = std::fs::read_to_string(&dropin).unwrap();
    let restart = || {
        host.run_in_target(cairn_agent::host::Cmd::new("systemctl").args(["restart", "k3s"]))
            .unwrap()
    };
    std::fs::write(
        &dropin,
        good.replace("flannel-backend: \"none\"", "flannel-backend: \"vxlan\""),
    )
    .unwrap();
    let out = restart();
    assert_ne!(out.status, 0);
    assert!(
        root.unit_log("k3s.service")
            .contains("set flannel-backend: none"),
        "{}",
        root.unit_log("k3s.service")
    );
    std::fs::write(&dropin, good.replace("10.50.0.0/16", "10.60.0.0/16")).unwrap();
    assert_ne!(restart().status, 0);
    assert!(
        root.unit_log("k3s.service")
            .contains("differs from cluster-cidr 10.60.0.0/16"),
        "{}",
        root.unit_log("k3s.service")
    );
}

/// A phase that runs out of time names itself and what it saw last: here the Calico
/// operator bundle lacks its CRDs, so the Installation is never accepted.
#[test]
fn a_timeout_names_the_phase_and_the_last_thing_seen() {
    let m = Mirror::start();
    let (k, mut c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Calico,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    let broken = m.artifact(
        "tigera-operator",
        Arch::Amd64,
        "/calico/broken/tigera-operator.yaml",
        b"# no CRDs here\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: tigera-operator\n"
            .to_vec(),
    );
    c.artifacts.retain(|a| a.arch != Arch::Amd64);
    c.artifacts.push(broken);
    let root = K8sRoot::new();
    let mut o = opts();
    o.timeouts.node_ready = Duration::from_secs(2);
    let a = apply(&root, &k, &c, &o);
    let err = a
        .result
        .as_ref()
        .err()
        .cloned()
        .unwrap_or_else(|| panic!("{}", describe(&root, &a, "kubelet.service")));
    assert_eq!(err.phase, Phase::NodeReady);
    assert_eq!(err.kind, install::InstallErrorKind::Timeout);
    assert!(err.message.starts_with("timed out"), "{err}");
    assert!(
        err.message.contains("no matches for kind \"Installation\""),
        "{err}"
    );
    assert_eq!(phase_status(&a, "node-ready"), "timeout");
    let ms = a
        .events
        .iter()
        .find(|e| e.kind == EventKind::Phase && e.step == "node-ready")
        .and_then(|e| e.data["ms"].as_u64())
        .unwrap();
    assert!(
        (2000..12_000).contains(&ms),
        "node-ready gave up after its 2 s, not the 20 s default: {ms} ms"
    );
}

fn profile_json(k: KubernetesLayer, c: CniLayer, addons: Option<AddonsLayer>) -> String {
    let mut layers = vec![Layer::Kubernetes(k), Layer::Cni(c)];
    if let Some(a) = addons {
        layers.push(Layer::Addons(a));
    }
    let p = Profile {
        name: "edge".into(),
        version: 1,
        description: String::new(),
        addon_profiles: Vec::new(),
        layers,
    };
    serde_json::to_string_pretty(&p).unwrap()
}

/// `cairn-agent bundle create` fetches a profile's artifacts once (one arch); an install
/// from that bundle then makes no request at all.
#[test]
fn bundle_create_then_install_from_it_with_zero_network_requests() {
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Cilium,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    let work = tempfile::tempdir().unwrap();
    let profile = work.path().join("profile.json");
    std::fs::write(&profile, profile_json(k.clone(), c.clone(), None)).unwrap();
    let bundle = work.path().join("edge.tar");
    let out = common::cli([
        "bundle",
        "create",
        "--arch",
        "amd64",
        "--out",
        bundle.to_str().unwrap(),
        profile.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stdout(&out).contains("artifact(s)"),
        "{}",
        common::stdout(&out)
    );
    let fetched = m.requests();
    let amd64 = k
        .artifacts
        .iter()
        .chain(&c.artifacts)
        .filter(|a| a.arch == Arch::Amd64)
        .count();
    assert_eq!(
        fetched.len(),
        amd64,
        "each amd64 artifact fetched once: {fetched:?}"
    );
    assert!(fetched.iter().all(|r| !r.contains("arm64")), "{fetched:?}");

    let root = K8sRoot::new();
    let host = Host::system(root.path());
    let p = cairn_userdata::load::read_profile(&profile)
        .unwrap()
        .profile;
    let mut o = opts();
    o.bundles = vec![bundle.clone()];
    let sink = MemorySink::default();
    let mut em = Emitter::new("node-1").with_sink(Box::new(sink.clone()));
    let report = apply_profile(&p, &host, &o, &mut em)
        .unwrap_or_else(|e| panic!("{e}\n{}", root.unit_log("kubelet.service")));
    assert_eq!(
        report
            .phases
            .iter()
            .find(|p| p.phase == Phase::CniReady)
            .unwrap()
            .status,
        PhaseStatus::Done
    );
    assert_eq!(
        m.requests().len(),
        fetched.len(),
        "the install made network requests: {:?}",
        m.requests()
    );
    let art = sink
        .events()
        .into_iter()
        .find(|e| e.kind == EventKind::Phase && e.step == "artifacts")
        .unwrap();
    assert_eq!(art.data["imported"].as_u64(), Some(amd64 as u64), "{art:?}");
    assert_eq!(art.data["fetched"].as_u64(), Some(0), "{art:?}");
}

/// `cairn-agent apply PROFILE.yaml --root DIR`: a YAML profile, the os layer applied as
/// user-data, the Kubernetes files installed and verified, nothing started.
#[test]
fn cli_apply_yaml_profile_into_a_root_installs_without_starting() {
    let m = Mirror::start();
    let (k, _) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Calico,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    let k3s = k.artifacts.iter().find(|a| a.arch == Arch::Amd64).unwrap();
    let yaml = format!(
        "name: edge\nlayers:\n  - os:\n      user_data: |\n        stages:\n          boot:\n            - files:\n                - path: /etc/site\n                  content: lab\n  - kubernetes:\n      flavor: k3s\n      version: {}\n      role: server\n      values:\n        write-kubeconfig-mode: \"0644\"\n      artifacts:\n        - name: k3s\n          arch: amd64\n          url: {}\n          sha256: {}\n  - cni:\n      type: calico\n      version: \"3.29.1\"\n      pod_cidr: 10.50.0.0/16\n",
        k.version, k3s.url, k3s.sha256
    );
    let root = K8sRoot::new();
    let file = root.path().join("tmp/profile.yaml");
    std::fs::write(&file, yaml).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = common::cli([
        "apply",
        "--output",
        "json",
        "--root",
        root.path().to_str().unwrap(),
        "--cache",
        cache.path().to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert_eq!(root.read("/etc/site"), "lab", "the os layer ran");
    assert!(root
        .read("/usr/local/bin/k3s")
        .contains("DOUBLE_VERSION='v1.31.4+k3s1'"));
    assert!(root
        .read("/etc/rancher/k3s/config.yaml.d/50-cairn-values.yaml")
        .contains("write-kubeconfig-mode"));
    assert!(root
        .read("/etc/rancher/k3s/config.yaml.d/90-cairn.yaml")
        .contains("flannel-backend: \"none\""));
    assert!(
        root.service_log().is_empty(),
        "nothing started: {:?}",
        root.service_log()
    );
    let stdout = common::stdout(&out);
    let phase_lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "phase")
        .collect();
    let names: Vec<&str> = phase_lines
        .iter()
        .map(|v| v["step"].as_str().unwrap())
        .collect();
    assert_eq!(names, PHASES.to_vec(), "{stdout}");
    assert_eq!(phase_lines[3]["data"]["status"], "skipped");
}

/// Add-ons after cni-ready: kubeadm applies manifests with kubectl and installs charts
/// with helm; k3s gets them in its auto-deploy directory (a chart artifact under
/// static/charts, referenced the k3s way).
#[test]
fn addons_are_installed_after_the_cni_the_way_each_flavor_expects() {
    let addons = |m: &Mirror| AddonsLayer {
        manifests: vec![Manifest {
            name: "shop-namespace".into(),
            content: Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n".into()),
            url: None,
            sha256: None,
        }],
        charts: vec![
            Chart {
                name: "ingress".into(),
                chart: "ingress-nginx".into(),
                repo: Some("https://kubernetes.github.io/ingress-nginx".into()),
                registry: None,
                version: "4.11.3".into(),
                namespace: Some("ingress".into()),
                values: serde_json::json!({"controller": {"replicaCount": 1}}),
            },
            Chart {
                name: "metrics".into(),
                chart: "metrics-server".into(),
                repo: None,
                registry: None,
                version: "3.12.2".into(),
                namespace: Some("kube-system".into()),
                values: serde_json::Value::Null,
            },
        ],
        artifacts: vec![m.artifact(
            "metrics-server",
            Arch::Amd64,
            "/charts/metrics-server-3.12.2.tgz",
            k8s::tarball(&[(
                "metrics-server/Chart.yaml",
                b"name: metrics-server\n".to_vec(),
                0o644,
            )]),
        )],
    };
    // kubeadm
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Cilium,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    let root = K8sRoot::new();
    let p = cairn_userdata::profile::read("p.json", &profile_json(k, c, Some(addons(&m))))
        .unwrap()
        .profile;
    let host = Host::system(root.path());
    let sink = MemorySink::default();
    let mut em = Emitter::new("node-1").with_sink(Box::new(sink.clone()));
    let report = apply_profile(&p, &host, &opts(), &mut em).unwrap_or_else(|e| panic!("{e}"));
    let last = report.phases.last().unwrap();
    assert_eq!(
        (last.phase, last.status),
        (Phase::Addons, PhaseStatus::Done),
        "{:?}",
        report.phases
    );
    assert!(root
        .read("/var/lib/k8s-double/applied/cairn-addon-shop-namespace.yaml")
        .contains("name: shop"));
    let ingress = root.read("/var/lib/k8s-double/releases/ingress");
    assert!(ingress.contains("chart=ingress-nginx repo=https://kubernetes.github.io/ingress-nginx version=4.11.3 namespace=ingress create-namespace=1"), "{ingress}");
    let metrics = root.read("/var/lib/k8s-double/releases/metrics");
    assert!(
        metrics.contains("chart=/var/lib/cairn/kubernetes/addons/metrics-server-3.12.2.tgz repo= "),
        "{metrics}"
    );
    // The add-ons phase comes after cni-ready.
    let order: Vec<String> = sink
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Phase)
        .map(|e| e.step.clone())
        .collect();
    assert_eq!(order, PHASES.to_vec());

    // k3s
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Flannel,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    let root = K8sRoot::new();
    let p = cairn_userdata::profile::read("p.json", &profile_json(k, c, Some(addons(&m))))
        .unwrap()
        .profile;
    let host = Host::system(root.path());
    let mut em = Emitter::new("node-1");
    let report = apply_profile(&p, &host, &opts(), &mut em).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.phases.last().unwrap().status, PhaseStatus::Done);
    let dir = "/var/lib/rancher/k3s/server/manifests";
    assert!(root
        .read(&format!("{dir}/cairn-addon-shop-namespace.yaml"))
        .contains("kind: Namespace"));
    let chart = root.read(&format!("{dir}/cairn-addon-chart-ingress.yaml"));
    assert!(
        chart.contains("kind: \"HelmChart\"")
            && chart.contains("repo: \"https://kubernetes.github.io/ingress-nginx\""),
        "{chart}"
    );
    assert!(chart.contains("replicaCount: 1"), "{chart}");
    let local = root.read(&format!("{dir}/cairn-addon-chart-metrics.yaml"));
    assert!(
        local.contains("https://%{KUBERNETES_API}%/static/charts/metrics-server-3.12.2.tgz"),
        "{local}"
    );
    assert!(root
        .path()
        .join("var/lib/rancher/k3s/server/static/charts/metrics-server-3.12.2.tgz")
        .is_file());
}

/// A proxy in the agent's environment reaches the service's environment with the
/// cluster's own networks in NO_PROXY, and registry mirrors reach the runtime config
/// (the double logs both from what it was started with).
#[test]
fn proxy_and_registry_mirrors_reach_the_services() {
    let m = Mirror::start();
    let (mut k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Flannel,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    k.values = serde_json::json!({"registries": {"mirrors": {"docker.io": {"endpoint": ["https://registry.lab:5000"]}}}});
    let env = |key: &str| match key {
        "HTTPS_PROXY" => Some("http://proxy.lab:3128".to_string()),
        "NO_PROXY" => Some("10.0.0.0/8,registry.lab".to_string()),
        _ => None,
    };
    let proxy = kubernetes::proxy::Proxy::from_lookup(&env).unwrap();
    let root = K8sRoot::new();
    let host = Host::system(root.path());
    let p = cairn_userdata::profile::read("p.json", &profile_json(k, c, None))
        .unwrap()
        .profile;
    let mut o = opts();
    o.proxy = Some(proxy);
    let mut em = Emitter::new("node-1");
    apply_profile(&p, &host, &o, &mut em).unwrap_or_else(|e| panic!("{e}"));
    let envfile = root.read("/etc/systemd/system/k3s.service.env");
    assert!(
        envfile.contains("HTTPS_PROXY=http://proxy.lab:3128\n"),
        "{envfile}"
    );
    let no_proxy = envfile
        .lines()
        .find_map(|l| l.strip_prefix("NO_PROXY="))
        .unwrap();
    let entries: Vec<&str> = no_proxy.split(',').collect();
    for want in [
        "10.0.0.0/8",
        "registry.lab",
        "127.0.0.1",
        "localhost",
        "10.50.0.0/16",
        "10.43.0.0/16",
        ".svc",
        ".svc.cluster.local",
        "node-1",
    ] {
        assert!(entries.contains(&want), "{want} missing from {no_proxy}");
    }
    let log = root.unit_log("k3s.service");
    assert!(
        log.contains("using proxy http://proxy.lab:3128 (NO_PROXY=10.0.0.0/8,registry.lab,"),
        "{log}"
    );
    assert!(log.contains("registries: 1 mirror endpoint(s)"), "{log}");
    assert!(root
        .read("/etc/rancher/k3s/registries.yaml")
        .contains("https://registry.lab:5000"));
    // No proxy configured: nothing added.
    assert!(kubernetes::proxy::Proxy::from_lookup(&|_| None).is_none());
}

/// A k3s agent joins with the token in a 0600 token-file (the double refuses to start
/// without server and token); its readiness phases are left to the servers.
#[test]
fn k3s_agent_joins_with_its_token_file_and_leaves_readiness_to_the_servers() {
    let m = Mirror::start();
    let (mut k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Calico,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    k.role = cairn_proto::profile::Role::Agent;
    k.server = Some("https://10.0.0.1:6443".into());
    k.token = Some("K10secret::server:abc".into());
    let root = K8sRoot::new();
    let a = apply(&root, &k, &c, &opts());
    let report = a
        .result
        .as_ref()
        .unwrap_or_else(|e| panic!("{e}\n{}", root.unit_log("k3s-agent.service")));
    let status: Vec<(Phase, PhaseStatus)> =
        report.phases.iter().map(|p| (p.phase, p.status)).collect();
    assert_eq!(&status[3], &(Phase::Start, PhaseStatus::Done), "{status:?}");
    for p in &report.phases[4..] {
        assert_eq!(p.status, PhaseStatus::Skipped, "{status:?}");
    }
    assert!(root
        .unit_log("k3s-agent.service")
        .contains("joining https://10.0.0.1:6443"));
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(root.path().join("etc/rancher/k3s/cairn-token")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // The token never appears in an event.
    for e in &a.events {
        assert!(
            !serde_json::to_string(e).unwrap().contains("K10secret"),
            "{e:?}"
        );
    }
}

/// kubeadm without a containerd artifact uses the distribution's package: missing, the
/// host-prep phase says what to do.
#[test]
fn kubeadm_without_containerd_names_the_missing_package() {
    let m = Mirror::start();
    let (mut k, c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Flannel,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    k.artifacts
        .retain(|a| a.name != "containerd" && a.name != "runc");
    let root = K8sRoot::new();
    let a = apply(&root, &k, &c, &opts());
    let err = a.result.err().unwrap();
    assert_eq!(err.phase, Phase::HostPrep);
    assert!(
        err.message
            .contains("`containerd` is not installed on the target"),
        "{err}"
    );
    assert!(root.service_log().is_empty(), "nothing started");
}

/// kubeadm: a newer version runs `kubeadm upgrade apply VERSION` with the new kubeadm,
/// then restarts the kubelet on its new binary; `kubeadm init` is not run again.
#[test]
fn kubeadm_upgrade_applies_the_new_version_then_restarts_the_kubelet() {
    let m = Mirror::start();
    let old = k8s::version(Flavor::Kubeadm, 31);
    let new = k8s::version(Flavor::Kubeadm, 32);
    let (k1, c) = k8s::publish(&m, Flavor::Kubeadm, CniType::Flannel, &old, false);
    let (k2, _) = k8s::publish(&m, Flavor::Kubeadm, CniType::Flannel, &new, false);
    let root = K8sRoot::new();
    let a = apply(&root, &k1, &c, &opts());
    assert!(
        a.result.is_ok(),
        "{}",
        describe(&root, &a, "kubelet.service")
    );
    let b = apply(&root, &k2, &c, &opts());
    assert!(
        b.result.is_ok(),
        "{}",
        describe(&root, &b, "kubelet.service")
    );
    assert_eq!(
        root.read("/var/lib/k8s-double/upgrades"),
        format!("{new} upgraded\n")
    );
    assert!(root
        .read("/usr/local/bin/kubelet")
        .contains(&format!("DOUBLE_VERSION='{new}'")));
    assert_eq!(
        root.starts("kubelet.service"),
        2,
        "{:?}",
        root.service_log()
    );
    assert!(root
        .unit_log("kubelet.service")
        .contains(&format!("kubelet double {new}")));
    assert_eq!(phase_status(&b, "cni-ready"), "done");
}

/// kubeadm: the kubelet refuses to start with swap on, so host preparation comments out
/// the target's fstab swap entries (and only those, byte for byte otherwise); applying
/// again changes nothing.
#[test]
fn kubeadm_turns_swap_off_persistently_and_only_once() {
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Flannel,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    let root = K8sRoot::new();
    let fstab = "# <file system> <mount point> <type> <options> <dump> <pass>\n\
        UUID=0a1b / ext4 errors=remount-ro 0 1\n\
        /swapfile none swap sw 0 0\n\
        \tUUID=ef01   none\tswap   sw,pri=5  0 0\n\
        # /old-swap none swap sw 0 0\n\
        /dev/sdb1 /srv/swap ext4 defaults 0 2";
    let path = root.path().join("etc/fstab");
    std::fs::write(&path, fstab).unwrap();
    let mut o = opts();
    o.start = false;
    let a = apply(&root, &k, &c, &o);
    assert!(
        a.result.is_ok(),
        "{}",
        describe(&root, &a, "kubelet.service")
    );
    assert_eq!(phase_status(&a, "host-prep"), "done");
    let after = std::fs::read_to_string(&path).unwrap();
    let active_swap: Vec<&str> = after
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| l.split_whitespace().nth(2) == Some("swap"))
        .collect();
    assert!(active_swap.is_empty(), "swap left in fstab:\n{after}");
    let want: Vec<String> = fstab
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 || i == 3 {
                format!("{}{l}", kubernetes::kubeadm::SWAP_OFF_MARK)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(after, want.join("\n"), "only the swap entries changed");
    let mtime = path.metadata().unwrap().modified().unwrap();
    let again = apply(&root, &k, &c, &o);
    assert!(
        again.result.is_ok(),
        "{}",
        describe(&root, &again, "kubelet.service")
    );
    assert_eq!(phase_status(&again, "host-prep"), "unchanged");
    assert_eq!(path.metadata().unwrap().modified().unwrap(), mtime);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), after);
}

/// k3s runs its kubelet with swap allowed: its host preparation leaves fstab alone.
#[test]
fn k3s_leaves_swap_alone() {
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Flannel,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    let root = K8sRoot::new();
    let fstab = "/swapfile none swap sw 0 0\n";
    let path = root.path().join("etc/fstab");
    std::fs::write(&path, fstab).unwrap();
    let mut o = opts();
    o.start = false;
    let a = apply(&root, &k, &c, &o);
    assert!(a.result.is_ok(), "{}", describe(&root, &a, "k3s.service"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), fstab);
}

/// Helm's release tarball is unpacked: /usr/local/bin/helm is its `linux-ARCH/helm`
/// (the double), executable, not the archive.
#[test]
fn kubeadm_cilium_places_helm_from_its_release_tarball() {
    let m = Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Cilium,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    let helm_art = c.artifacts.iter().find(|a| a.name == "helm").unwrap();
    assert!(helm_art.url.ends_with(".tar.gz"), "{}", helm_art.url);
    let root = K8sRoot::new();
    let mut o = opts();
    o.start = false;
    let a = apply(&root, &k, &c, &o);
    assert!(
        a.result.is_ok(),
        "{}",
        describe(&root, &a, "kubelet.service")
    );
    let helm = root.path().join("usr/local/bin/helm");
    let body = std::fs::read(&helm).unwrap();
    assert!(
        body.starts_with(b"#!/bin/sh\n# Cairn test double `helm`"),
        "not the helm binary: {:?}",
        String::from_utf8_lossy(&body[..body.len().min(40)])
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        helm.metadata().unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert!(!root.path().join("usr/local/bin/linux-amd64").exists());
    assert!(!root.path().join("usr/local/bin/LICENSE").exists());
}
