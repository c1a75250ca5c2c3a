#![allow(clippy::unwrap_used, clippy::expect_used)]
//! validate → plan → apply: a cluster profile that cannot be applied to the target is
//! refused *before anything is written*. For each way a profile can fail — a rule between
//! its layers, a missing artifact for the target's architecture, an artifact whose sha256
//! does not match — `cairn-agent apply --root R PROFILE` exits 1 naming the problem and R
//! is byte-for-byte as it was: every path with its mode, owner, size, mtime and content
//! digest compared before and after (no file of the os layer, no lock file, no state, no
//! artifact cache).

mod common;
#[path = "common/k8s.rs"]
mod k8s;

use std::path::Path;

use cairn_proto::profile::{
    Arch, CniLayer, CniType, Flavor, KubernetesLayer, Layer, OsLayer, Profile, Role,
};
use common::{assert_same, cli, snapshot, stderr, stdout, TestEnv};
use k8s::Mirror;

/// A profile whose os layer writes a file (so a half-applied profile would show), then
/// the Kubernetes layers given.
fn profile_json(k: KubernetesLayer, c: CniLayer) -> String {
    let p = Profile {
        name: "edge".into(),
        version: 0,
        description: String::new(),
        addon_profiles: Vec::new(),
        layers: vec![
            Layer::Os(OsLayer {
                user_data: "stages:\n  boot:\n    - name: site\n      files:\n        - path: /etc/site\n          content: lab\n".into(),
                dialect: None,
            }),
            Layer::Kubernetes(k),
            Layer::Cni(c),
        ],
    };
    serde_json::to_string_pretty(&p).unwrap()
}

/// Make the root's `/bin/sh` an aarch64 ELF header: the agent reads the target's arch
/// from it.
fn make_arm64(root: &Path) {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[18..20].copy_from_slice(&0xb7u16.to_le_bytes());
    let sh = root.join("bin/sh");
    let _ = std::fs::remove_file(&sh);
    std::fs::write(&sh, elf).unwrap();
}

/// `apply --root R --cache C PROFILE` must exit 1 with every string of `want` in its
/// error output (and the profile file named with a line and column when `located`), and
/// leave R exactly as it was.
fn refused(env: &TestEnv, k: KubernetesLayer, c: CniLayer, want: &[&str], located: bool) -> String {
    let file = env.cfg.join("profile.json");
    std::fs::write(&file, profile_json(k, c)).unwrap();
    let cache = env.cfg.join("cache");
    let before = snapshot(&env.root);
    let out = cli([
        "apply",
        "--root",
        env.root.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{err}",
        stdout(&out)
    );
    for w in want {
        assert!(err.contains(w), "`{w}` not in:\n{err}");
    }
    assert!(err.contains("nothing was applied"), "{err}");
    if located {
        let prefix = format!("{}:", file.display());
        let line = err
            .lines()
            .find(|l| l.starts_with(&prefix) && l.contains(": error: "))
            .unwrap_or_else(|| panic!("no `{prefix}LINE:COL: error:` line in:\n{err}"));
        let pos: Vec<&str> = line[prefix.len()..].splitn(3, ':').collect();
        assert!(
            pos[0].parse::<usize>().unwrap() > 1 && pos[1].parse::<usize>().is_ok(),
            "{line}"
        );
    }
    assert_same(&before, &snapshot(&env.root));
    assert!(!env.exists("/etc/site"), "the os layer ran");
    err
}

#[test]
fn a_pod_network_overlapping_the_service_network_writes_nothing() {
    let m = Mirror::start();
    let (mut k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Calico,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    // The pod network is k8s::POD, 10.50.0.0/16.
    k.values = serde_json::json!({"service-cidr": "10.50.128.0/20"});
    let env = TestEnv::new();
    refused(
        &env,
        k,
        c,
        &[
            "the pod network 10.50.0.0/16 overlaps the service network 10.50.128.0/20",
            "cannot be applied",
        ],
        true,
    );
    assert!(m.requests().is_empty(), "nothing was downloaded");
}

#[test]
fn an_rke2_agent_joining_on_the_api_port_writes_nothing() {
    let m = Mirror::start();
    let (mut k, c) = k8s::publish(
        &m,
        Flavor::Rke2,
        CniType::Calico,
        &k8s::version(Flavor::Rke2, 31),
        false,
    );
    k.role = Role::Agent;
    k.server = Some("https://10.0.0.1:6443".into());
    k.token = Some("K10abc::server:secret".into());
    let env = TestEnv::new();
    let err = refused(
        &env,
        k,
        c,
        &["join the supervisor on port 9345, not the API port 6443"],
        true,
    );
    assert!(!err.contains("secret"), "the token leaked: {err}");
}

#[test]
fn a_missing_arm64_artifact_for_an_arm64_target_writes_nothing() {
    // kubeadm's other files come from the packs catalog by version; Calico's operator
    // manifest is published without a checksum, so an arm64 copy nobody pins is refused.
    let m = Mirror::start();
    let (mut k, mut c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Calico,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    k.artifacts.retain(|a| a.arch == Arch::Amd64);
    c.artifacts.retain(|a| a.arch == Arch::Amd64);
    let env = TestEnv::new();
    make_arm64(&env.root);
    refused(
        &env,
        k,
        c,
        &[
            "`tigera-operator.yaml` of calico",
            "published without a checksum",
        ],
        true,
    );
    assert!(m.requests().is_empty(), "nothing was downloaded");
}

#[test]
fn an_invalid_kubeadm_token_writes_nothing() {
    let m = Mirror::start();
    let (mut k, c) = k8s::publish(
        &m,
        Flavor::Kubeadm,
        CniType::Calico,
        &k8s::version(Flavor::Kubeadm, 31),
        false,
    );
    k.role = Role::Agent;
    k.server = Some("https://10.0.0.1:6443".into());
    k.token = Some("not-a-bootstrap-token".into());
    k.values = serde_json::json!({"unsafeSkipCAVerification": true});
    let env = TestEnv::new();
    let err = refused(
        &env,
        k,
        c,
        &["a kubeadm bootstrap token has the form [a-z0-9]{6}.[a-z0-9]{16}"],
        true,
    );
    assert!(
        !err.contains("not-a-bootstrap-token"),
        "the token leaked: {err}"
    );
}

#[test]
fn an_artifact_with_the_wrong_sha256_writes_nothing() {
    let m = Mirror::start();
    let (mut k, c) = k8s::publish(
        &m,
        Flavor::K3s,
        CniType::Calico,
        &k8s::version(Flavor::K3s, 31),
        false,
    );
    // Both arches, whichever this machine is: the listed digest is another file's.
    for a in &mut k.artifacts {
        a.sha256 = common::sha256_hex(b"not the k3s binary");
        a.size = None;
    }
    let env = TestEnv::new();
    refused(&env, k, c, &["sha256 mismatch", "expected"], false);
    assert!(!m.requests().is_empty(), "the artifact was downloaded");
}
