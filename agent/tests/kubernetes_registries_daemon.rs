#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cairn-agent run` against the real hub with chart registries: the daemon fetches the
//! registries its profile references (`GET /v1/hosts/{id}/registries`), keeps them 0600 in
//! its state directory, fetches the charts from the loopback Helm repository (basic auth)
//! and OCI registry (token auth) with them, and gives the runtime the OCI registry's
//! credentials; a registry the profile does not reference never reaches the device; no
//! credential appears in the agent's log, the hub's log or the events.
//!
//! The target is a mini root (not `/`): files are installed, nothing is started, so the
//! add-ons phase itself is skipped — the charts are fetched and verified before it.

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
#[path = "../../tests/doubles/registry/mod.rs"]
mod registry_double;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use agent::{agent_yaml, wait_for, Agent};
use cairn_proto::profile::{CniType, Flavor};
use cairn_proto::EventKind;
use common::TestEnv;
use real_hub::RealHub;
use registry_double::{HelmRepo, OciRegistry};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(180);
const HELM_PW: &str = "CANARY-daemon-helm-5e0a";
const OCI_PW: &str = "CANARY-daemon-oci-77b1";
const UNUSED: &str = "CANARY-daemon-unused-c4d2";

#[test]
fn the_daemon_fetches_registry_charts_with_only_the_credentials_its_profile_uses() {
    let helm = HelmRepo::start("reader", HELM_PW);
    helm.add(
        "hello",
        "0.1.0",
        k8s::tarball(&[("hello/Chart.yaml", b"name: hello\n".to_vec(), 0o644)]),
    );
    let oci = OciRegistry::start("robot", OCI_PW);
    oci.push_chart(
        "charts/api",
        "1.2.3",
        k8s::tarball(&[("api/Chart.yaml", b"name: api\n".to_vec(), 0o644)]),
    );
    let m = k8s::Mirror::start();
    let (k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Flannel,
        &k8s::version(Flavor::K3s, 31),
        false,
    );

    let hub = RealHub::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, value).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (hp, op, up) = (
        secret("h", HELM_PW),
        secret("o", OCI_PW),
        secret("u", UNUSED),
    );
    hub.cli(&[
        "registry",
        "create",
        "corp-helm",
        "--kind",
        "helm",
        "--url",
        &helm.url,
        "--username",
        "reader",
        "--password-file",
        &hp,
    ]);
    hub.cli(&[
        "registry",
        "create",
        "corp-oci",
        "--kind",
        "oci",
        "--url",
        &oci.url,
        "--username",
        "robot",
        "--password-file",
        &op,
    ]);
    hub.cli(&[
        "registry",
        "create",
        "unused",
        "--kind",
        "oci",
        "--url",
        "https://unused.example",
        "--token-file",
        &up,
    ]);
    let (_, token) = hub.token("k8s", &[]);
    hub.publish(&json!({"name": "edge-k3s", "version": 1, "layers": [
        {"kubernetes": k},
        {"cni": c},
        {"addons": {"charts": [
            {"name": "web", "chart": "hello", "version": "0.1.0", "registry": "corp-helm"},
            {"name": "api", "chart": "api", "version": "1.2.3", "repo": format!("oci://{}/charts", oci.host())}
        ]}},
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
    assert_eq!(
        hub.host(&id)["status"],
        "applied",
        "{}\n{}",
        hub.host(&id),
        agent.log()
    );

    // The charts came from the registries, with their credentials.
    let helm_seen = helm.seen.lock().unwrap().clone();
    assert_eq!(
        helm_seen
            .iter()
            .map(|s| (s.path.as_str(), s.auth.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("/index.yaml", Some("Basic")),
            ("/charts/hello-0.1.0.tgz", Some("Basic"))
        ]
    );
    let oci_seen = oci.seen.lock().unwrap().clone();
    assert!(
        oci_seen
            .iter()
            .any(|s| s.path.contains("/blobs/sha256:") && s.status.starts_with("200")),
        "{oci_seen:?}"
    );
    // What the device keeps: the registries its profile uses (0600), not the unused one;
    // the runtime's configuration with the OCI registry's credentials (0600).
    let kept = state.join("registries.json");
    let text = std::fs::read_to_string(&kept).unwrap();
    assert!(
        text.contains("corp-helm") && text.contains("corp-oci") && !text.contains("unused"),
        "{text}"
    );
    assert!(!text.contains(UNUSED));
    assert_eq!(
        std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let reg = env.read("/etc/rancher/k3s/registries.yaml");
    assert!(reg.contains(&oci.host()) && reg.contains(OCI_PW), "{reg}");
    let reg_path = env.root.join("etc/rancher/k3s/registries.yaml");
    assert_eq!(
        std::fs::metadata(reg_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Nowhere else.
    let events = serde_json::to_string(&hub.events_raw(&id)).unwrap();
    let hub_log = hub.log.lock().unwrap().clone();
    let agent_log = agent.log();
    for secret in [HELM_PW, OCI_PW, UNUSED] {
        assert!(!events.contains(secret), "the events show {secret}");
        assert!(!hub_log.contains(secret), "the hub's log shows {secret}");
        assert!(
            !agent_log.contains(secret),
            "the agent's log shows {secret}:\n{agent_log}"
        );
    }
    let code = agent.term(Duration::from_secs(15));
    assert!(code.success(), "{code:?}");
}
