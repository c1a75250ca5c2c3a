//! A loopback HTTPS "upstream" for the packs tests: its own test CA, test doubles of every
//! flavor's and CNI's release files at the projects' real release paths, with their real
//! checksum-file formats and tarball layouts. It records every request and can be cut off
//! ([`Upstream::cut_off`]): then every connection is closed unanswered.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_agent::packs::Settings;
use cairn_packs::{Mirrors, Source};
use cairn_proto::profile::{Arch, CniType, Flavor};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common;
use crate::k8s;

/// An HTTPS server on 127.0.0.1 with its own CA, serving files by path.
pub struct Upstream {
    pub base: String,
    pub ca_pem: String,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    requests: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
}

pub fn pki() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
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
    pub fn start() -> Upstream {
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
        let down: Arc<AtomicBool> = Arc::default();
        let (f, r, d) = (Arc::clone(&files), Arc::clone(&requests), Arc::clone(&down));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if d.load(Ordering::SeqCst) {
                    r.lock().unwrap().push("<refused: cut off>".to_string());
                    drop(stream);
                    continue;
                }
                let (config, f, r) = (Arc::clone(&config), Arc::clone(&f), Arc::clone(&r));
                std::thread::spawn(move || serve(config, stream, &f, &r));
            }
        });
        Upstream {
            base,
            ca_pem,
            files,
            requests,
            down,
        }
    }

    /// From now on, every connection is closed unanswered (and recorded).
    pub fn cut_off(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    /// Every file path served (the checksum files' and the artifacts'), with how many times.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.requests() {
            *out.entry(r).or_insert(0) += 1;
        }
        out
    }

    /// The paths of every file published.
    pub fn paths(&self) -> Vec<String> {
        self.files.lock().unwrap().keys().cloned().collect()
    }

    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }

    pub fn get(&self, path: &str) -> Vec<u8> {
        self.files.lock().unwrap()[path].clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// The pack settings a site would write to point every source at this mirror.
    pub fn settings(&self) -> Settings {
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

pub fn serve(
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

pub const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

pub fn sha(b: &[u8]) -> String {
    common::sha256_hex(b)
}

pub fn sums(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut s = String::new();
    for (name, body) in entries {
        s.push_str(&format!("{}  {name}\n", sha(body)));
    }
    s.into_bytes()
}

pub const K3S: &str = "v1.31.4+k3s1";
pub const RKE2: &str = "v1.31.4+rke2r1";
pub const KUBE: &str = "v1.31.4";
pub const CALICO: &str = "v3.29.1";
pub const CILIUM: &str = "1.16.5";

/// Publish the doubles of `flavor` and `cni` for both arches at the projects' release
/// paths (the layouts are written out here, independently of the catalog), with their
/// checksum files. Returns the profile's pins for files published without a checksum.
pub fn publish(up: &Upstream, flavor: Flavor, cni: CniType) -> String {
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
pub fn profile_text(flavor: Flavor, cni: CniType, pins: &str) -> String {
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
pub fn root_of(arch: Arch) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    let machine: u16 = if arch == Arch::Arm64 { 0xb7 } else { 0x3e };
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[18..20].copy_from_slice(&machine.to_le_bytes());
    std::fs::write(root.path().join("bin/sh"), elf).unwrap();
    root
}
