#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The hub as the fleet's mirror (issue 16, item 3), against the real `cairn-hub` binary
//! and the loopback HTTPS "upstream" of the packs tests (projects' release layouts, real
//! checksum-file formats, counting every request, able to be cut off).
//!
//! The 20 agents are 20 registered hosts, each with its own target root and its own
//! artifact cache, applying the profile the hub assigns them concurrently through the
//! agent library's apply path (`profile::apply` with the hub as the artifact source — what
//! the daemon's worker calls), not 20 daemon processes: the daemon adds registration and
//! polling, which the daemon tests cover, and 20 of them would make this test slow on a
//! two-core machine.

mod common;
#[path = "daemon_support/hub.rs"]
#[allow(dead_code)]
mod hub;
#[path = "common/k8s.rs"]
mod k8s;
#[path = "daemon_support/real_hub.rs"]
#[allow(dead_code)]
mod real_hub;
#[path = "common/upstream.rs"]
mod upstream;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_agent::artifacts::hub::{ArtifactSource, HubSource};
use cairn_agent::artifacts::FetchOptions;
use cairn_agent::engine::NoJournal;
use cairn_agent::events::Emitter;
use cairn_agent::host::Host;
use cairn_agent::kubernetes::install::{InstallOptions, Timeouts};
use cairn_agent::packs::Settings;
use cairn_agent::profile::{self, ApplyError};
use cairn_proto::profile::{Arch, CniType, Flavor};
use real_hub::RealHub;
use upstream::*;

const AGENTS: usize = 20;

/// A checksum file of the upstream layouts (not an artifact).
fn is_checksum_file(path: &str) -> bool {
    path.ends_with(".sha256") || path.ends_with(".sha256sum") || path.contains("/sha256sum-")
}

/// A hub whose data directory has pack settings pointing every source at `up` (restarted
/// so `serve` reads them), with `text` published and assigned to every host tagged
/// `site=lab`.
fn hub_for(up: &Upstream, text: &str) -> RealHub {
    let mut hub = RealHub::start();
    let settings = serde_json::json!({
        "mirrors": up.settings().mirrors,
        "ca_certs": [up.ca_pem],
    });
    std::fs::write(hub.data_dir().join("packs.json"), settings.to_string()).unwrap();
    hub.kill();
    hub.restart();
    let file = hub.data_dir().join("profile.yaml");
    std::fs::write(&file, text).unwrap();
    hub.cli(&["profile", "upload", file.to_str().unwrap()]);
    hub.cli(&["assign", "--tag", "site=lab", "--profile", "by-version"]);
    hub
}

fn client(hub: &RealHub) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(hub.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// Register a host tagged `site=lab`: (host id, credential).
fn register(hub: &RealHub, name: &str) -> (String, String) {
    register_at(hub, name, "lab")
}

/// Register a host tagged `site=SITE` (the profile is assigned to `site=lab`).
fn register_at(hub: &RealHub, name: &str, site: &str) -> (String, String) {
    let (_, token) = hub.token(name, &[]);
    let resp = client(hub)
        .post(format!("{}/v1/register", hub.endpoint()))
        .header("content-type", "application/json")
        .body(serde_json::json!({"token": token, "name": name, "tags": {"site": site}}).to_string())
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "register: {}", resp.status());
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    (
        v["host_id"].as_str().unwrap().to_string(),
        v["credential"].as_str().unwrap().to_string(),
    )
}

/// One agent: its own root (of `arch`) and cache, the hub as its artifact source.
struct Agent {
    arch: Arch,
    root: tempfile::TempDir,
    cache: tempfile::TempDir,
    hub: HubSource,
}

fn agents(hub: &RealHub, prefix: &str) -> Vec<Agent> {
    (0..AGENTS)
        .map(|i| {
            let (host_id, credential) = register(hub, &format!("{prefix}-{i}"));
            let arch = if i % 2 == 0 { Arch::Amd64 } else { Arch::Arm64 };
            Agent {
                arch,
                root: root_of(arch),
                cache: tempfile::tempdir().unwrap(),
                hub: HubSource {
                    endpoint: hub.endpoint(),
                    host_id,
                    credential,
                    ca_certs: vec![hub.ca_pem.clone()],
                    proxy: None,
                    policy: ArtifactSource::HubFirst,
                },
            }
        })
        .collect()
}

fn apply(text: &str, agent: &Agent, settings: &Settings) -> Result<profile::Outcome, ApplyError> {
    let checked = cairn_userdata::profile::read("by-version.yaml", text).unwrap();
    let host = Host::system(agent.root.path());
    let plan = profile::validate_with(&checked, &profile::Machine::of(&host), settings)
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = profile::ApplyOptions {
        install: InstallOptions {
            start: false,
            cache_dir: Some(agent.cache.path().to_path_buf()),
            fetch: FetchOptions {
                attempts: 1,
                backoff: Duration::from_millis(10),
                hub: Some(agent.hub.clone()),
                ..FetchOptions::default()
            },
            timeouts: Timeouts::all(Duration::from_secs(300)),
            poll: Duration::from_millis(50),
            bundles: Vec::new(),
            proxy: None,
        },
        off_root_cache: agent.cache.path().to_path_buf(),
        os_stages: profile::os_stages(),
    };
    let mut em = Emitter::new("node");
    profile::apply(&plan, &host, &opts, &mut em, &mut NoJournal)
}

/// All agents apply at once; each must install, with the binaries upstream published.
fn install_all(up: &Upstream, text: &str, agents: &[Agent]) {
    let settings = up.settings();
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .map(|a| {
                let settings = &settings;
                s.spawn(move || (a, apply(text, a, settings)))
            })
            .collect();
        for h in handles {
            let (a, r) = h.join().unwrap();
            assert!(
                matches!(r, Ok(profile::Outcome::Applied(_))),
                "agent {} ({}): {:?}",
                a.hub.host_id,
                a.arch.as_str(),
                r.err()
            );
            let x = k8s::arch_name(a.arch);
            for b in ["kubeadm", "kubelet", "kubectl"] {
                let placed = std::fs::read(a.root.path().join("usr/local/bin").join(b)).unwrap();
                assert_eq!(
                    placed,
                    up.get(&format!("/kubernetes/v1.31.4/bin/linux/{x}/{b}")),
                    "{b} on {x}"
                );
            }
        }
    });
}

fn artifact_counts(up: &Upstream) -> BTreeMap<String, usize> {
    up.counts()
        .into_iter()
        .filter(|(p, _)| !is_checksum_file(p))
        .collect()
}

#[test]
fn twenty_agents_through_the_hub_cause_one_upstream_download_per_artifact() {
    let up = Upstream::start();
    let pins = publish(&up, Flavor::Kubeadm, CniType::Calico);
    let text = profile_text(Flavor::Kubeadm, CniType::Calico, &pins);
    let hub = hub_for(&up, &text);
    let agents = agents(&hub, "edge");
    // No sync: the first agents to ask make the hub download, the others wait for it.
    install_all(&up, &text, &agents);
    let artifacts: Vec<String> = up
        .paths()
        .into_iter()
        .filter(|p| !is_checksum_file(p))
        .collect();
    assert!(artifacts.len() >= 10, "{artifacts:?}");
    let counts = artifact_counts(&up);
    for p in &artifacts {
        assert_eq!(
            counts.get(p).copied().unwrap_or(0),
            1,
            "{p} downloaded from upstream {:?} times; all requests: {:?}",
            counts.get(p),
            up.counts()
        );
    }
    assert_eq!(
        counts.keys().filter(|p| !artifacts.contains(p)).count(),
        0,
        "{counts:?}"
    );
}

#[test]
fn after_pack_sync_twenty_agents_install_with_upstream_cut_off() {
    let up = Upstream::start();
    let pins = publish(&up, Flavor::Kubeadm, CniType::Calico);
    let text = profile_text(Flavor::Kubeadm, CniType::Calico, &pins);
    let hub = hub_for(&up, &text);
    let report = hub.cli(&["pack", "sync", "by-version"]);
    let artifacts = up
        .paths()
        .into_iter()
        .filter(|p| !is_checksum_file(p))
        .count();
    assert_eq!(report["added"], artifacts, "{report}");
    // Synced once more: nothing to download.
    let again = hub.cli(&["pack", "sync", "by-version"]);
    assert_eq!(again["added"], 0, "{again}");
    assert_eq!(again["present"], artifacts, "{again}");
    let before = up.requests().len();
    up.cut_off();
    let agents = agents(&hub, "site");
    install_all(&up, &text, &agents);
    // Nobody even tried upstream: neither the hub nor an agent (for a file or a digest).
    assert_eq!(
        up.requests().len(),
        before,
        "{:?}",
        &up.requests()[before..]
    );

    // A hub-only agent needs nothing else either; an unknown host is refused.
    let strict = &agents[0];
    let mut hub_only = strict.hub.clone();
    hub_only.policy = ArtifactSource::HubOnly;
    let list = hub_only.list(Duration::from_secs(5)).unwrap();
    assert_eq!(list.profile, "by-version");
    assert!(list.artifacts.iter().all(|a| a.cached), "{list:?}");
    let mut stranger = strict.hub.clone();
    stranger.credential = "wrong".into();
    assert!(stranger.list(Duration::from_secs(5)).is_err());
}

#[test]
fn the_hub_serves_ranges_and_refuses_strangers() {
    let up = Upstream::start();
    let pins = publish(&up, Flavor::Kubeadm, CniType::Calico);
    let text = profile_text(Flavor::Kubeadm, CniType::Calico, &pins);
    let hub = hub_for(&up, &text);
    hub.cli(&["pack", "sync", "by-version"]);
    up.cut_off();
    let (id, cred) = register(&hub, "ranger");
    let body = up.get("/kubernetes/v1.31.4/bin/linux/arm64/kubelet");
    let sha = common::sha256_hex(&body);
    let url = format!("{}/v1/hosts/{id}/artifacts/{sha}", hub.endpoint());
    let c = client(&hub);
    let get = |range: Option<&str>| {
        let mut r = c.get(&url).bearer_auth(&cred);
        if let Some(v) = range {
            r = r.header("Range", v);
        }
        r.send().unwrap()
    };
    let full = get(None);
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.bytes().unwrap().to_vec(), body);
    let len = body.len();
    let part = get(Some("bytes=10-19"));
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 10-19/{len}").as_str()
    );
    assert_eq!(part.bytes().unwrap().to_vec(), body[10..20].to_vec());
    let tail = get(Some("bytes=5-"));
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().unwrap().to_vec(), body[5..].to_vec());
    let last = get(Some("bytes=-7"));
    assert_eq!(last.status(), 206);
    assert_eq!(last.bytes().unwrap().to_vec(), body[len - 7..].to_vec());
    let past = get(Some(&format!("bytes={len}-")));
    assert_eq!(past.status(), 416);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{len}").as_str()
    );
    // No credential, another host's id, a digest nobody references, not a digest.
    assert_eq!(c.get(&url).send().unwrap().status(), 401);
    let (other, _) = register(&hub, "other");
    let theirs = format!("{}/v1/hosts/{other}/artifacts/{sha}", hub.endpoint());
    assert_eq!(
        c.get(&theirs).bearer_auth(&cred).send().unwrap().status(),
        403
    );
    let unknown = format!(
        "{}/v1/hosts/{id}/artifacts/{}",
        hub.endpoint(),
        "ab".repeat(32)
    );
    assert_eq!(
        c.get(&unknown).bearer_auth(&cred).send().unwrap().status(),
        404
    );
    let bad = format!("{}/v1/hosts/{id}/artifacts/xyz", hub.endpoint());
    assert_eq!(c.get(&bad).bearer_auth(&cred).send().unwrap().status(), 400);
    // A host whose own profile does not name the file (here: no profile at all) is not
    // served it, although the hub holds it for others.
    let (elsewhere, elsewhere_cred) = register_at(&hub, "elsewhere", "other-site");
    let not_theirs = format!("{}/v1/hosts/{elsewhere}/artifacts/{sha}", hub.endpoint());
    assert_eq!(
        c.get(&not_theirs)
            .bearer_auth(&elsewhere_cred)
            .send()
            .unwrap()
            .status(),
        404
    );
}

fn hub_cmd(hub: &RealHub, args: &[&str]) -> std::process::Output {
    Command::new(real_hub::hub_bin())
        .arg("--db")
        .arg(hub.db())
        .args(args)
        .args(["--output", "json"])
        .env_remove("CAIRN_HUB_DB")
        .env_remove("CAIRN_HUB_DATA_DIR")
        .env_remove("CAIRN_HUB_MIRROR_MAX_BYTES")
        .output()
        .unwrap()
}

fn held(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("mirror/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn mirror_storage_is_bounded_and_collected_by_what_profiles_reference() {
    let up = Upstream::start();
    let pins = publish(&up, Flavor::Kubeadm, CniType::Calico);
    let text = profile_text(Flavor::Kubeadm, CniType::Calico, &pins);
    let hub = hub_for(&up, &text);

    // Too small a bound: the sync stops, naming the bound, and nothing is half-stored.
    let out = hub_cmd(
        &hub,
        &["--mirror-max-bytes", "100", "pack", "sync", "by-version"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mirror is full"), "{err}");
    assert!(held(hub.data_dir()).is_empty());
    let tmp: Vec<_> = std::fs::read_dir(hub.data_dir().join("mirror/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");

    hub.cli(&["pack", "sync", "by-version"]);
    let operator = common::sha256_hex(&up.get("/calico/v3.29.1/manifests/tigera-operator.yaml"));
    let kubeadm = common::sha256_hex(&up.get("/kubernetes/v1.31.4/bin/linux/amd64/kubeadm"));
    let synced = held(hub.data_dir());
    assert!(synced.contains(&operator) && synced.contains(&kubeadm));

    // A bundle's file no profile references, imported (a directory, as `bundle create`
    // writes it): held until the next collection.
    let bundle = tempfile::tempdir().unwrap();
    let extra = b"an unreferenced file\n".to_vec();
    let extra_sha = common::sha256_hex(&extra);
    std::fs::write(bundle.path().join("extra"), &extra).unwrap();
    std::fs::write(
        bundle.path().join("manifest.json"),
        serde_json::json!({"artifacts": [
            {"file": "extra", "sha256": extra_sha, "url": "https://example.invalid/extra"}
        ]})
        .to_string(),
    )
    .unwrap();
    let imported = hub.cli(&["mirror", "import", bundle.path().to_str().unwrap()]);
    assert_eq!(imported["added"], 1, "{imported}");
    assert!(held(hub.data_dir()).contains(&extra_sha));
    // A tampered bundle file is refused and not stored.
    std::fs::write(bundle.path().join("extra"), b"tampered").unwrap();
    let tampered_sha = "cd".repeat(32);
    std::fs::write(
        bundle.path().join("manifest.json"),
        serde_json::json!({"artifacts": [{"file": "extra", "sha256": tampered_sha}]}).to_string(),
    )
    .unwrap();
    let out = hub_cmd(&hub, &["mirror", "import", bundle.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mismatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!held(hub.data_dir()).contains(&tampered_sha));

    // Version 2 of the profile uses flannel: Calico's operator manifest is no longer
    // referenced by the latest version (nor pinned by an assignment).
    let v2 = profile_text(Flavor::Kubeadm, CniType::Flannel, "");
    let file = hub.data_dir().join("profile-v2.yaml");
    std::fs::write(&file, v2).unwrap();
    hub.cli(&["profile", "upload", file.to_str().unwrap()]);
    let gc = hub.cli(&["mirror", "gc"]);
    assert_eq!(gc["removed"], 2, "{gc}");
    let after = held(hub.data_dir());
    assert!(!after.contains(&operator), "{after:?}");
    assert!(!after.contains(&extra_sha), "{after:?}");
    assert!(after.contains(&kubeadm), "{after:?}");
    assert_eq!(after.len(), synced.len() - 1);

    // An assignment pinning version 1 keeps its files: synced again, collected again, kept.
    hub.cli(&[
        "assign",
        "--tag",
        "site=lab",
        "--profile",
        "by-version",
        "--version",
        "1",
    ]);
    hub.cli(&["pack", "sync", "by-version", "--version", "1"]);
    let gc = hub.cli(&["mirror", "gc"]);
    assert_eq!(gc["removed"], 0, "{gc}");
    assert!(held(hub.data_dir()).contains(&operator));
}
