#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cairn-agent run` installs a profile's kubernetes and cni layers through the same
//! install pipeline as `apply`, and reports every phase to the real hub over TLS. The
//! target is a mini root (not `/`), so files are installed and verified and nothing is
//! started — the phases after `install` are reported as skipped.

#[path = "daemon_support/agent.rs"]
#[allow(dead_code)]
mod agent;
mod common;
#[path = "daemon_support/hub.rs"]
#[allow(dead_code)]
mod hub;
#[path = "common/k8s.rs"]
mod k8s;
#[path = "daemon_support/real_hub.rs"]
#[allow(dead_code)]
mod real_hub;

use std::time::Duration;

use agent::{agent_yaml, wait_for, Agent};
use cairn_agent::kubernetes::install::PHASES;
use cairn_proto::profile::{CniType, Flavor};
use cairn_proto::EventKind;
use common::TestEnv;
use real_hub::RealHub;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn the_daemon_installs_the_kubernetes_layers_and_reports_each_phase_to_the_hub() {
    let m = k8s::Mirror::start();
    let version = k8s::version(Flavor::K3s, 31);
    let (k, c) = k8s::publish(&m, Flavor::K3s, CniType::Calico, &version, false);
    let hub = RealHub::start();
    let (_, token) = hub.token("k8s", &[]);
    let user_data = "stages:\n  boot:\n    - name: site\n      files:\n        - path: /etc/site\n          content: lab\n";
    hub.publish(&json!({"name": "edge-k3s", "version": 1, "layers": [
        {"os": {"user_data": user_data}},
        {"kubernetes": k},
        {"cni": c},
    ]}));
    hub.assign_tag("rack=r1", "edge-k3s");
    let env = TestEnv::new();
    let config = env.cfg.join("agent.yaml");
    std::fs::write(
        &config,
        agent_yaml(&hub.endpoint(), &token, "edge-1", &hub.ca_pem),
    )
    .unwrap();
    let state = env.cfg.parent().unwrap().join("state");
    let mut agent = Agent::spawn(&config, &state, &env.root);

    wait_for(LIMIT, "the host to register", || hub.hosts().len() == 1);
    let id = hub.hosts()[0]["id"].as_str().unwrap().to_string();
    wait_for(LIMIT, "the profile applied and reported", || {
        hub.events(&id)
            .iter()
            .any(|e| e.kind == EventKind::ProfileApplied)
    });
    let events = hub.events(&id);
    let phases: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.kind == EventKind::Phase && PHASES.contains(&e.step.as_str()))
        .map(|e| {
            (
                e.step.clone(),
                e.data["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = phases.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, PHASES.to_vec(), "{phases:?}\n{}", agent.log());
    // k3s needs no host preparation: that phase has nothing to change.
    let want = ["done", "unchanged", "done"];
    for ((p, s), w) in phases[..3].iter().zip(want) {
        assert_eq!(s, w, "{p}: {phases:?}");
    }
    for (p, s) in &phases[3..] {
        assert_eq!(s, "skipped", "{p}: {phases:?}");
    }
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::ProfileApplied, "{last:?}");
    assert_eq!(last.data["unsupported_layers"], json!([]), "{last:?}");
    // The os layer, then the k3s binary verified from the mirror and its configuration.
    assert_eq!(env.read("/etc/site"), "lab");
    assert!(env
        .read("/usr/local/bin/k3s")
        .contains(&format!("DOUBLE_VERSION='{version}'")));
    assert!(env
        .read("/etc/rancher/k3s/config.yaml.d/90-cairn.yaml")
        .contains("flannel-backend: \"none\""));
    assert!(!m.requests().is_empty());
    // The daemon took its artifacts from the hub's mirror (`artifact_source: hub-first`,
    // the default): the hub downloaded and holds each file of this machine's arch.
    let arch = if cfg!(target_arch = "aarch64") {
        cairn_proto::profile::Arch::Arm64
    } else {
        cairn_proto::profile::Arch::Amd64
    };
    let mine: Vec<String> = k
        .artifacts
        .iter()
        .filter(|a| a.arch == arch)
        .map(|a| a.sha256.clone())
        .collect();
    assert!(!mine.is_empty(), "{k:?}");
    for sha in &mine {
        assert!(
            hub.data_dir().join("mirror/sha256").join(sha).is_file(),
            "the hub's mirror does not hold {sha}:\n{}",
            agent.log()
        );
    }
    assert_eq!(hub.host(&id)["status"], "applied", "{}", hub.host(&id));
    let code = agent.term(Duration::from_secs(15));
    assert!(code.success(), "{code:?}");
}
