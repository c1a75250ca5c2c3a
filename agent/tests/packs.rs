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

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_agent::artifacts::FetchOptions;
use cairn_agent::engine::NoJournal;
use cairn_agent::events::Emitter;
use cairn_agent::host::Host;
use cairn_agent::kubernetes::install::{InstallOptions, Timeouts};
use cairn_agent::packs::{self, Settings};
use cairn_agent::profile::{self, ApplyError};
use cairn_packs::{Mirrors, Source};
use cairn_proto::profile::{Arch, CniType, Flavor};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// An HTTPS server on 127.0.0.1 with its own CA, serving files by path.
struct Upstream {
    base: String,
    ca_pem: String,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

fn pki() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "Cairn packs test upstream CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    p.distinguished_name
        .push(DnType::CommonName, "upstream.test");
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (
        ca_cert.pem(),
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

impl Upstream {
    fn start() -> Upstream {
        let (ca_pem, chain, key) = pki();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r) = (Arc::clone(&files), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, f, r) = (Arc::clone(&config), Arc::clone(&f), Arc::clone(&r));
                std::thread::spawn(move || serve(config, stream, &f, &r));
            }
        });
        Upstream {
            base,
            ca_pem,
            files,
            requests,
        }
    }

    fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }

    fn get(&self, path: &str) -> Vec<u8> {
        self.files.lock().unwrap()[path].clone()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// The pack settings a site would write to point every source at this mirror.
    fn settings(&self) -> Settings {
        let mut mirrors = Mirrors::default();
        for s in Source::ALL {
            mirrors.set(s, format!("{}/{}", self.base, s.key()));
        }
        Settings {
            mirrors,
            ca_certs: vec![self.ca_pem.clone()],
            ..Settings::default()
        }
    }
}

fn serve(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    files: &Mutex<BTreeMap<String, Vec<u8>>>,
    seen: &Mutex<Vec<String>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&req);
    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
    seen.lock().unwrap().push(path.clone());
    let body = files.lock().unwrap().get(&path).cloned();
    let (status, body) = match body {
        Some(b) => ("200 OK", b),
        None => ("404 Not Found", b"Not Found".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(head.as_bytes());
    let _ = tls.write_all(&body);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

fn sha(b: &[u8]) -> String {
    common::sha256_hex(b)
}

fn sums(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut s = String::new();
    for (name, body) in entries {
        s.push_str(&format!("{}  {name}\n", sha(body)));
    }
    s.into_bytes()
}

const K3S: &str = "v1.31.4+k3s1";
const RKE2: &str = "v1.31.4+rke2r1";
const KUBE: &str = "v1.31.4";
const CALICO: &str = "v3.29.1";
const CILIUM: &str = "1.16.5";

/// Publish the doubles of `flavor` and `cni` for both arches at the projects' release
/// paths (the layouts are written out here, independently of the catalog), with their
/// checksum files. Returns the profile's pins for files published without a checksum.
fn publish(up: &Upstream, flavor: Flavor, cni: CniType) -> String {
    for arch in ARCHES {
        let x = k8s::arch_name(arch);
        let tool = |name: &str, v: &str| {
            let mut b = k8s::double("tool", v, arch, false);
            b.extend_from_slice(format!("# {name}\n").as_bytes());
            b
        };
        match flavor {
            Flavor::K3s => {
                // github.com/k3s-io/k3s/releases/download/TAG/{k3s,k3s-arm64,sha256sum-ARCH.txt}
                let file = if arch == Arch::Amd64 {
                    "k3s".to_string()
                } else {
                    format!("k3s-{x}")
                };
                let bin = k8s::double("k3s", K3S, arch, false);
                let images = format!("k3s-airgap-images-{x}.tar.zst");
                up.put(
                    &format!("/k3s/{K3S}/sha256sum-{x}.txt"),
                    sums(&[(&images, b"images"), (&file, &bin)]),
                );
                up.put(&format!("/k3s/{K3S}/{file}"), bin);
            }
            Flavor::Rke2 => {
                // github.com/rancher/rke2/releases/download/TAG/rke2.linux-ARCH.tar.gz
                let file = format!("rke2.linux-{x}.tar.gz");
                let tgz = k8s::tarball(&[
                    ("bin/rke2", k8s::double("rke2", RKE2, arch, false), 0o755),
                    ("share/rke2/LICENSE.txt", b"double\n".to_vec(), 0o644),
                ]);
                up.put(
                    &format!("/rke2/{RKE2}/sha256sum-{x}.txt"),
                    sums(&[
                        (&format!("rke2-images.linux-{x}.tar.zst"), b"i"),
                        (&file, &tgz),
                    ]),
                );
                up.put(&format!("/rke2/{RKE2}/{file}"), tgz);
            }
            Flavor::Kubeadm => {
                // dl.k8s.io/release/TAG/bin/linux/ARCH/BIN and BIN.sha256 (the digest alone)
                for b in ["kubeadm", "kubelet", "kubectl"] {
                    let body = k8s::double(b, KUBE, arch, false);
                    let p = format!("/kubernetes/{KUBE}/bin/linux/{x}/{b}");
                    up.put(&format!("{p}.sha256"), sha(&body).into_bytes());
                    up.put(&p, body);
                }
                // cri-tools: TAG/crictl-TAG-linux-ARCH.tar.gz(.sha256), crictl at the top
                let crictl = k8s::tarball(&[("crictl", tool("crictl", "v1.31.0"), 0o755)]);
                let p = format!("/crictl/v1.31.0/crictl-v1.31.0-linux-{x}.tar.gz");
                up.put(&format!("{p}.sha256"), sha(&crictl).into_bytes());
                up.put(&p, crictl);
                // containernetworking/plugins: cni-plugins-linux-ARCH-TAG.tgz(.sha256)
                let cni_file = format!("cni-plugins-linux-{x}-v1.6.1.tgz");
                let plugins = k8s::tarball(&[
                    ("./bridge", tool("bridge", "v1.6.1"), 0o755),
                    ("./host-local", tool("host-local", "v1.6.1"), 0o755),
                    ("./loopback", tool("loopback", "v1.6.1"), 0o755),
                ]);
                let p = format!("/cni-plugins/v1.6.1/{cni_file}");
                up.put(&format!("{p}.sha256"), sums(&[(&cni_file, &plugins)]));
                up.put(&p, plugins);
                // containerd: vV/containerd-V-linux-ARCH.tar.gz(.sha256sum), bin/ inside
                let cd_file = format!("containerd-1.7.24-linux-{x}.tar.gz");
                let cd = k8s::tarball(&[
                    (
                        "bin/containerd",
                        k8s::double("containerd", "v1.7.24", arch, false),
                        0o755,
                    ),
                    ("bin/ctr", tool("ctr", "v1.7.24"), 0o755),
                ]);
                let p = format!("/containerd/v1.7.24/{cd_file}");
                up.put(&format!("{p}.sha256sum"), sums(&[(&cd_file, &cd)]));
                up.put(&p, cd);
                // runc: TAG/runc.ARCH and one runc.sha256sum for all arches
                let runc = tool("runc", "v1.2.3");
                up.put(&format!("/runc/v1.2.3/runc.{x}"), runc);
            }
        }
        if flavor == Flavor::Kubeadm && cni == CniType::Cilium {
            // get.helm.sh/helm-TAG-linux-ARCH.tar.gz(.sha256sum), linux-ARCH/helm inside
            let file = format!("helm-v3.16.3-linux-{x}.tar.gz");
            let helm = k8s::tarball(&[
                (
                    &format!("linux-{x}/helm"),
                    k8s::double("helm", "v3.16.3", arch, false),
                    0o755,
                ),
                (&format!("linux-{x}/LICENSE"), b"double\n".to_vec(), 0o644),
            ]);
            up.put(&format!("/helm/{file}.sha256sum"), sums(&[(&file, &helm)]));
            up.put(&format!("/helm/{file}"), helm);
        }
    }
    if flavor == Flavor::Kubeadm {
        let a = up.get("/runc/v1.2.3/runc.amd64");
        let b = up.get("/runc/v1.2.3/runc.arm64");
        up.put(
            "/runc/v1.2.3/runc.sha256sum",
            sums(&[
                ("runc.amd64", &a),
                ("runc.arm64", &b),
                ("runc.tar.xz", b"src"),
            ]),
        );
    }
    // Manifests and charts are published without checksums: the profile pins them.
    match (flavor, cni) {
        (Flavor::Kubeadm, CniType::Calico) => {
            let op = b"# tigera-operator double\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tigera-operator\n  namespace: tigera-operator\n".to_vec();
            let pin = sha(&op);
            up.put(
                &format!("/calico/{CALICO}/manifests/tigera-operator.yaml"),
                op,
            );
            format!("      sha256:\n        tigera-operator: {pin}\n")
        }
        (Flavor::Kubeadm, CniType::Cilium) => {
            let chart = k8s::tarball(&[(
                "cilium/Chart.yaml",
                format!("name: cilium\nversion: {CILIUM}\n").into_bytes(),
                0o644,
            )]);
            let pin = sha(&chart);
            up.put(&format!("/cilium/cilium-{CILIUM}.tgz"), chart);
            format!("      sha256:\n        cilium: {pin}\n")
        }
        _ => String::new(),
    }
}

/// A profile naming only the flavor, the CNI and their versions (plus `pins`).
fn profile_text(flavor: Flavor, cni: CniType, pins: &str) -> String {
    let (f, v) = match flavor {
        Flavor::K3s => ("k3s", K3S),
        Flavor::Rke2 => ("rke2", RKE2),
        Flavor::Kubeadm => ("kubeadm", KUBE),
    };
    let (t, cv) = match cni {
        CniType::Calico => ("calico", CALICO),
        CniType::Cilium => ("cilium", CILIUM),
        CniType::Flannel => ("flannel", "v0.26.2"),
    };
    format!(
        "name: by-version\nlayers:\n  - kubernetes:\n      flavor: {f}\n      version: {v}\n  - cni:\n      type: {t}\n      version: {cv}\n{pins}"
    )
}

/// A root whose /bin/sh is an ELF of `arch` (all the arch probe reads); nothing runs in it,
/// so the install places files and starts nothing, as `apply --root` does.
fn root_of(arch: Arch) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    let machine: u16 = if arch == Arch::Arm64 { 0xb7 } else { 0x3e };
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    std::fs::write(root.path().join("bin/sh"), elf).unwrap();
    root
}

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
