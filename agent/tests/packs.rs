#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Profiles by name and version (issue 16, items 1 and 2): a profile naming only the
//! flavor/CNI and their versions installs on amd64 and arm64 targets, every file fetched
//! from a loopback HTTPS "upstream" (its own test CA, trusted through the pack settings'
//! `ca_certs`) that serves test doubles at the projects' real release paths, with their
//! real checksum-file formats and tarball layouts. The catalog reaches it through the
//! mirror settings production uses. A checksum file that disagrees, a missing entry or a
//! tampered file fails before anything is placed: the root is unchanged.

mod common;
#[path = "common/k8s.rs"]
mod k8s;
#[path = "common/upstream.rs"]
mod upstream;

use std::path::Path;
use std::time::Duration;

use upstream::*;

use cairn_agent::artifacts::FetchOptions;
use cairn_agent::engine::NoJournal;
use cairn_agent::events::Emitter;
use cairn_agent::host::Host;
use cairn_agent::kubernetes::install::{InstallOptions, Timeouts};
use cairn_agent::packs::{self, Settings};
use cairn_agent::profile::{self, ApplyError};
use cairn_proto::profile::{Arch, CniType, Flavor};

fn apply(
    text: &str,
    root: &Path,
    cache: &Path,
    settings: &Settings,
) -> Result<profile::Outcome, ApplyError> {
    apply_with_bundles(text, root, cache, settings, Vec::new())
}

fn apply_with_bundles(
    text: &str,
    root: &Path,
    cache: &Path,
    settings: &Settings,
    bundles: Vec<std::path::PathBuf>,
) -> Result<profile::Outcome, ApplyError> {
    let checked =
        cairn_userdata::profile::read("by-version.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let host = Host::system(root);
    let plan = profile::validate_with(&checked, &profile::Machine::of(&host), settings)
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = profile::ApplyOptions {
        install: InstallOptions {
            start: false,
            cache_dir: Some(cache.to_path_buf()),
            fetch: FetchOptions {
                attempts: 1,
                backoff: Duration::from_millis(10),
                ..FetchOptions::default()
            },
            timeouts: Timeouts::all(Duration::from_secs(20)),
            poll: Duration::from_millis(50),
            bundles,
            proxy: None,
        },
        off_root_cache: cache.to_path_buf(),
        os_stages: profile::os_stages(),
    };
    let mut em = Emitter::new("node-1");
    profile::apply(&plan, &host, &opts, &mut em, &mut NoJournal)
}

fn read(root: &Path, inside: &str) -> Vec<u8> {
    std::fs::read(root.join(inside.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{inside}: {e}"))
}

/// Install `flavor` × `cni` by version on both arches and check what was placed against
/// what upstream served.
fn installs_by_version(flavor: Flavor, cni: CniType) {
    let up = Upstream::start();
    let pins = publish(&up, flavor, cni);
    let text = profile_text(flavor, cni, &pins);
    for arch in ARCHES {
        let x = k8s::arch_name(arch);
        let root = root_of(arch);
        let cache = tempfile::tempdir().unwrap();
        let before = up.requests().len();
        let r = apply(&text, root.path(), cache.path(), &up.settings());
        assert!(r.is_ok(), "{flavor:?} × {cni:?} on {x}: {:?}", r.err());
        let r = root.path();
        match flavor {
            Flavor::K3s => {
                let file = if arch == Arch::Amd64 {
                    "k3s".to_string()
                } else {
                    format!("k3s-{x}")
                };
                assert_eq!(
                    read(r, "/usr/local/bin/k3s"),
                    up.get(&format!("/k3s/{K3S}/{file}"))
                );
            }
            Flavor::Rke2 => {
                assert_eq!(
                    read(r, "/usr/local/bin/rke2"),
                    k8s::double("rke2", RKE2, arch, false)
                );
            }
            Flavor::Kubeadm => {
                for b in ["kubeadm", "kubelet", "kubectl"] {
                    assert_eq!(
                        read(r, &format!("/usr/local/bin/{b}")),
                        up.get(&format!("/kubernetes/{KUBE}/bin/linux/{x}/{b}")),
                        "{b} on {x}"
                    );
                }
                assert_eq!(
                    read(r, "/usr/local/sbin/runc"),
                    up.get(&format!("/runc/v1.2.3/runc.{x}"))
                );
                assert!(r.join("usr/local/bin/crictl").is_file());
                assert!(r.join("opt/cni/bin/bridge").is_file());
                assert_eq!(
                    read(r, "/usr/local/bin/containerd"),
                    k8s::double("containerd", "v1.7.24", arch, false)
                );
            }
        }
        match (flavor, cni) {
            (Flavor::Kubeadm, CniType::Calico) => assert_eq!(
                read(r, "/var/lib/cairn/kubernetes/cni/tigera-operator.yaml"),
                up.get(&format!("/calico/{CALICO}/manifests/tigera-operator.yaml"))
            ),
            (Flavor::Kubeadm, CniType::Cilium) => assert_eq!(
                read(
                    r,
                    &format!("/var/lib/cairn/kubernetes/cni/cilium-{CILIUM}.tgz")
                ),
                up.get(&format!("/cilium/cilium-{CILIUM}.tgz"))
            ),
            _ => {}
        }
        // Only this arch's files (and their checksum files) were asked for.
        let asked = &up.requests()[before..];
        assert!(!asked.is_empty());
        let other = if arch == Arch::Amd64 {
            "arm64"
        } else {
            "amd64"
        };
        assert!(
            asked.iter().all(|p| !p.contains(other)),
            "{x} asked for {other}: {asked:?}"
        );
    }
}

#[test]
fn k3s_with_calico_installs_by_version_on_amd64_and_arm64() {
    installs_by_version(Flavor::K3s, CniType::Calico);
}

#[test]
fn k3s_with_flannel_installs_by_version_on_amd64_and_arm64() {
    installs_by_version(Flavor::K3s, CniType::Flannel);
}

#[test]
fn rke2_with_cilium_installs_by_version_on_amd64_and_arm64() {
    installs_by_version(Flavor::Rke2, CniType::Cilium);
}

#[test]
fn kubeadm_with_flannel_installs_by_version_on_amd64_and_arm64() {
    installs_by_version(Flavor::Kubeadm, CniType::Flannel);
}

#[test]
fn kubeadm_with_calico_installs_by_version_on_amd64_and_arm64() {
    installs_by_version(Flavor::Kubeadm, CniType::Calico);
}

#[test]
fn kubeadm_with_cilium_installs_by_version_on_amd64_and_arm64() {
    installs_by_version(Flavor::Kubeadm, CniType::Cilium);
}

/// What can go wrong with a checksum file or a file, for `flavor` on `arch`: each fails
/// before anything is placed.
fn refused(flavor: Flavor, arch: Arch, spoil: &dyn Fn(&Upstream, &str), expect: &str) {
    let up = Upstream::start();
    let pins = publish(&up, flavor, CniType::Flannel);
    spoil(&up, k8s::arch_name(arch));
    let root = root_of(arch);
    let cache = tempfile::tempdir().unwrap();
    let before = common::snapshot(root.path());
    let err = match apply(
        &profile_text(flavor, CniType::Flannel, &pins),
        root.path(),
        cache.path(),
        &up.settings(),
    ) {
        Ok(_) => panic!("{flavor:?} on {arch:?}: applied"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(
        message.contains(expect) && message.contains("nothing was applied"),
        "{flavor:?} on {arch:?}: {message}"
    );
    common::assert_same(&before, &common::snapshot(root.path()));
}

#[test]
fn a_checksum_file_that_disagrees_fails_before_anything_is_placed() {
    for arch in ARCHES {
        // k3s's sha256sum-ARCH.txt names another digest for the binary.
        refused(
            Flavor::K3s,
            arch,
            &|up, x| {
                let file = if x == "amd64" {
                    "k3s".to_string()
                } else {
                    format!("k3s-{x}")
                };
                up.put(
                    &format!("/k3s/{K3S}/sha256sum-{x}.txt"),
                    sums(&[(&file, b"another build")]),
                );
            },
            "sha256 mismatch",
        );
        // kubelet's .sha256 holds another digest.
        refused(
            Flavor::Kubeadm,
            arch,
            &|up, x| {
                up.put(
                    &format!("/kubernetes/{KUBE}/bin/linux/{x}/kubelet.sha256"),
                    sha(b"another kubelet").into_bytes(),
                )
            },
            "sha256 mismatch",
        );
    }
}

#[test]
fn a_missing_checksum_entry_fails_before_anything_is_placed() {
    for arch in ARCHES {
        refused(
            Flavor::Rke2,
            arch,
            &|up, x| {
                up.put(
                    &format!("/rke2/{RKE2}/sha256sum-{x}.txt"),
                    sums(&[(&format!("rke2-images.linux-{x}.tar.zst"), b"i")]),
                )
            },
            "has no entry for `rke2.linux-",
        );
        refused(
            Flavor::Kubeadm,
            arch,
            &|up, _| {
                up.put(
                    "/runc/v1.2.3/runc.sha256sum",
                    sums(&[("runc.tar.xz", b"src")]),
                )
            },
            "has no entry for `runc.",
        );
    }
}

#[test]
fn a_tampered_artifact_fails_before_anything_is_placed() {
    for arch in ARCHES {
        refused(
            Flavor::K3s,
            arch,
            &|up, x| {
                let file = if x == "amd64" {
                    "k3s".to_string()
                } else {
                    format!("k3s-{x}")
                };
                let mut b = up.get(&format!("/k3s/{K3S}/{file}"));
                b.extend_from_slice(b"\n# tampered\n");
                up.put(&format!("/k3s/{K3S}/{file}"), b);
            },
            "sha256 mismatch",
        );
        refused(
            Flavor::Kubeadm,
            arch,
            &|up, x| {
                let p = format!("/containerd/v1.7.24/containerd-1.7.24-linux-{x}.tar.gz");
                let mut b = up.get(&p);
                let n = b.len();
                b[n / 2] ^= 0xff;
                up.put(&p, b);
            },
            "sha256 mismatch",
        );
    }
}

#[test]
fn checksum_files_are_read_over_verified_tls_only() {
    let up = Upstream::start();
    let pins = publish(&up, Flavor::K3s, CniType::Flannel);
    let root = root_of(Arch::Amd64);
    let cache = tempfile::tempdir().unwrap();
    // The mirror's CA not trusted: the checksum file cannot be had, nothing is placed.
    let mut settings = up.settings();
    settings.ca_certs.clear();
    let before = common::snapshot(root.path());
    let err = apply(
        &profile_text(Flavor::K3s, CniType::Flannel, &pins),
        root.path(),
        cache.path(),
        &settings,
    )
    .expect_err("an untrusted mirror is refused");
    assert!(matches!(err, ApplyError::Packs(_)), "{err}");
    common::assert_same(&before, &common::snapshot(root.path()));
}

#[test]
fn plan_lists_every_file_its_url_and_verification() {
    let up = Upstream::start();
    let pins = publish(&up, Flavor::Kubeadm, CniType::Cilium);
    let checked = cairn_userdata::profile::read(
        "p.yaml",
        &profile_text(Flavor::Kubeadm, CniType::Cilium, &pins),
    )
    .unwrap();
    let entries = packs::plan_entries(&checked, &ARCHES, &up.settings()).unwrap();
    // kubeadm, kubelet, kubectl, crictl, cni-plugins, containerd, runc, cilium chart, helm.
    assert_eq!(entries.len(), 18, "{entries:#?}");
    let kubelet = entries
        .iter()
        .find(|e| e.name == "kubelet" && e.arch == Arch::Arm64)
        .unwrap();
    assert_eq!(
        kubelet.url,
        format!("{}/kubernetes/{KUBE}/bin/linux/arm64/kubelet", up.base)
    );
    assert!(kubelet.how.contains("kubelet.sha256"), "{}", kubelet.how);
    let chart = entries.iter().find(|e| e.name == "cilium").unwrap();
    assert!(chart.how.contains("pinned by the profile"), "{}", chart.how);
    // Planning reads nothing.
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert!(packs::render_plan(&entries).contains("helm-v3.16.3-linux-arm64.tar.gz"));
}

/// `examples/` has a profile per flavor naming only versions: each is read, validated for
/// amd64 and arm64 and planned against the real upstream locations (nothing is fetched),
/// every file verified through a checksum file of its release.
#[test]
fn the_example_profile_of_each_flavor_names_only_versions_and_validates() {
    let dir = common::repo_dir().join("examples");
    let mut flavors = Vec::new();
    for name in [
        "profile-k3s.yaml",
        "profile-rke2.yaml",
        "profile-kubeadm.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let checked = cairn_userdata::profile::read(name, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            checked.warnings.is_empty(),
            "{name}: {:?}",
            checked.warnings
        );
        for layer in &checked.profile.layers {
            match layer {
                cairn_proto::profile::Layer::Kubernetes(k) => {
                    assert!(k.artifacts.is_empty() && k.sha256.is_empty(), "{name}");
                    flavors.push(k.flavor);
                }
                cairn_proto::profile::Layer::Cni(c) => {
                    assert!(c.artifacts.is_empty() && c.sha256.is_empty(), "{name}")
                }
                _ => {}
            }
        }
        let entries = packs::plan_entries(&checked, &ARCHES, &Settings::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!entries.is_empty(), "{name}");
        for e in &entries {
            assert_eq!(e.from, "pack", "{name}: {e:?}");
            assert!(
                e.url.starts_with("https://github.com/") || e.url.starts_with("https://dl.k8s.io/"),
                "{name}: {e:?}"
            );
            assert_eq!(e.verify["by"], "checksum-file", "{name}: {e:?}");
        }
    }
    assert_eq!(flavors, [Flavor::K3s, Flavor::Rke2, Flavor::Kubeadm]);
}

/// `bundle create` of a profile naming only versions packs the pack files of both arches,
/// each with the digest its release's checksum file gives (so an air-gapped device gets
/// everything), and a checksum file that disagrees makes no bundle.
#[test]
fn a_bundle_of_a_version_only_profile_holds_every_pack_file_and_installs_offline() {
    let up = Upstream::start();
    let pins = publish(&up, Flavor::K3s, CniType::Flannel);
    let text = profile_text(Flavor::K3s, CniType::Flannel, &pins);
    let profile = cairn_userdata::profile::read("p.yaml", &text)
        .unwrap()
        .profile;
    let mut opts = FetchOptions::default();
    opts.ca_certs.push(up.ca_pem.clone());
    let resolved = packs::resolve_profile(&profile, &ARCHES, &up.settings(), &opts).unwrap();
    let listed = cairn_agent::kubernetes::bundle::profile_artifacts(&resolved, &[]);
    for (arch, file) in [(Arch::Amd64, "k3s"), (Arch::Arm64, "k3s-arm64")] {
        let a = listed
            .iter()
            .find(|a| a.name == "k3s" && a.arch == arch)
            .unwrap_or_else(|| panic!("no k3s for {arch:?}: {listed:?}"));
        assert_eq!(a.sha256, sha(&up.get(&format!("/k3s/{K3S}/{file}"))));
        assert_ne!(a.sha256, packs::PENDING);
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = cairn_agent::artifacts::ArtifactCache::new(dir.path().join("cache"));
    let out = dir.path().join("bundle");
    let s = cairn_agent::kubernetes::bundle::create(
        &resolved,
        &[],
        &cache,
        &out,
        &opts,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(s.artifacts, listed.len());
    assert!(s.artifacts >= 2);

    // Air-gapped: the bundle alone installs the version-only profile on both arches, with
    // no request to the upstream (its digests come from the bundle's manifest).
    let before = up.requests().len();
    for arch in ARCHES {
        let root = root_of(arch);
        let cache = tempfile::tempdir().unwrap();
        let r = apply_with_bundles(
            &text,
            root.path(),
            cache.path(),
            &up.settings(),
            vec![out.clone()],
        );
        assert!(r.is_ok(), "{arch:?}: {:?}", r.err());
        let file = if arch == Arch::Amd64 {
            "k3s"
        } else {
            "k3s-arm64"
        };
        assert_eq!(
            read(root.path(), "/usr/local/bin/k3s"),
            up.get(&format!("/k3s/{K3S}/{file}"))
        );
    }
    assert_eq!(
        up.requests().len(),
        before,
        "{:?}",
        &up.requests()[before..]
    );

    // A checksum file that disagrees: nothing resolved, so no bundle.
    let path = format!("/k3s/{K3S}/sha256sum-arm64.txt");
    let spoiled = String::from_utf8(up.get(&path)).unwrap().replace(
        &sha(&up.get(&format!("/k3s/{K3S}/k3s-arm64"))),
        &"ab".repeat(32),
    );
    up.put(&path, spoiled.into_bytes());
    let resolved = packs::resolve_profile(&profile, &ARCHES, &up.settings(), &opts).unwrap();
    let out2 = dir.path().join("bundle2");
    let fresh = cairn_agent::artifacts::ArtifactCache::new(dir.path().join("cache2"));
    assert!(cairn_agent::kubernetes::bundle::create(
        &resolved,
        &[],
        &fresh,
        &out2,
        &opts,
        &mut |_, _| {}
    )
    .is_err());
}
