#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]
//! Kubernetes install tests' support: the test doubles of tests/doubles/k8s assembled per
//! flavor, version and arch into release artifacts, a loopback release mirror that records
//! every request, profiles pointing at it with the doubles' sha256s, and test roots made by
//! tests/doubles/k8s/prepare-root.sh whose background services are killed on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use cairn_agent::kubernetes;
use cairn_proto::profile::{Arch, Artifact, CniLayer, CniType, Flavor, KubernetesLayer, Role};
use serde_json::{json, Value};

pub const POD: &str = "10.50.0.0/16";

pub fn doubles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/doubles/k8s")
}

pub fn arch_name(a: Arch) -> &'static str {
    match a {
        Arch::Amd64 => "amd64",
        Arch::Arm64 => "arm64",
    }
}

/// One double as an executable: header (version, arch, failure mode) + lib.sh + its part.
pub fn double(part: &str, version: &str, arch: Arch, fail_start: bool) -> Vec<u8> {
    let dir = doubles_dir();
    let lib = std::fs::read_to_string(dir.join("lib.sh")).unwrap();
    let body = std::fs::read_to_string(dir.join(format!("{part}.sh"))).unwrap();
    format!(
        "#!/bin/sh\n# Cairn test double `{part}` (tests/doubles/k8s) — not the real program.\nDOUBLE_VERSION='{version}'\nDOUBLE_ARCH='{}'\nDOUBLE_FAIL='{}'\n{lib}\n{body}",
        arch_name(arch),
        if fail_start { "start" } else { "" }
    )
    .into_bytes()
}

/// A .tar.gz of (path, content, mode) entries, each member named exactly as given (as
/// the upstream release archives name theirs), owned by 0:0.
pub fn tarball(entries: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, content, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, content.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// `sha256sum` output (`<hex>  <name>` lines), the form of k3s's and RKE2's
/// `sha256sum-ARCH.txt`, Helm's and containerd's `.sha256sum` and runc's `runc.sha256sum`.
pub fn sha256sum(entries: &[(&str, &[u8])]) -> Vec<u8> {
    entries
        .iter()
        .map(|(name, body)| format!("{}  {name}\n", crate::common::sha256_hex(body)))
        .collect::<String>()
        .into_bytes()
}

/// The digest a checksum file gives for `name`, read the way a person (or an install
/// script) reads it: a `sha256sum` line for that name, or a file holding only the digest.
pub fn digest_from(sums: &[u8], name: &str) -> String {
    let text = std::str::from_utf8(sums).unwrap();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let found = text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (hex, file) = (f.next()?, f.next()?);
        (file.trim_start_matches('*') == name).then(|| hex.to_string())
    });
    found.unwrap_or_else(|| {
        let only = lines.next().unwrap().trim().to_string();
        assert!(
            lines.next().is_none() && !only.contains(' '),
            "no `{name}` in {text}"
        );
        only
    })
}

/// Helm's release tarball for `arch` with `helm` as its binary.
pub fn helm_tarball(arch: Arch, helm: Vec<u8>) -> Vec<u8> {
    let x = arch_name(arch);
    tarball(&[
        (&format!("linux-{x}/helm"), helm, 0o755),
        (&format!("linux-{x}/LICENSE"), b"double\n".to_vec(), 0o644),
        (&format!("linux-{x}/README.md"), b"double\n".to_vec(), 0o644),
    ])
}

/// A loopback HTTP mirror serving many files; records every request path.
#[derive(Clone)]
pub struct Mirror {
    pub base: String,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    pub fn start() -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r) = (Arc::clone(&files), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (f, r) = (Arc::clone(&f), Arc::clone(&r));
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&req);
                    let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                    r.lock().unwrap().push(path.clone());
                    let body = f.lock().unwrap().get(&path).cloned();
                    let (status, payload) = match body {
                        Some(b) => ("200 OK", b),
                        None => ("404 Not Found", b"not found".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        payload.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&payload);
                });
            }
        });
        Mirror {
            base: format!("http://{addr}"),
            files,
            requests,
        }
    }

    /// Serve `body` at `path` (no artifact entry: checksum files).
    pub fn serve(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), body);
    }

    /// Serve `body` at `path` with its checksum file `sums` (in upstream's form) at
    /// `sums_path`; the artifact entry's sha256 is the one read from the checksum file.
    pub fn released(
        &self,
        name: &str,
        arch: Arch,
        path: &str,
        body: Vec<u8>,
        sums_path: &str,
        sums: Vec<u8>,
    ) -> Artifact {
        let file = path.rsplit('/').next().unwrap().to_string();
        let mut a = self.artifact(name, arch, path, body);
        let digest = digest_from(&sums, &file);
        assert_eq!(digest, a.sha256, "{sums_path} gives {file} its digest");
        a.sha256 = digest;
        // One checksum file may list several files (RKE2's, runc's): lines accumulate.
        let mut all = self
            .files
            .lock()
            .unwrap()
            .get(sums_path)
            .cloned()
            .unwrap_or_default();
        all.extend_from_slice(&sums);
        self.serve(sums_path, all);
        a
    }

    /// Serve `body` at `path`; returns the artifact entry for a profile.
    pub fn artifact(&self, name: &str, arch: Arch, path: &str, body: Vec<u8>) -> Artifact {
        let sha = crate::common::sha256_hex(&body);
        let size = body.len() as u64;
        self.files.lock().unwrap().insert(path.to_string(), body);
        Artifact {
            name: name.into(),
            arch,
            url: format!("{}{path}", self.base),
            sha256: sha,
            size: Some(size),
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// The flavor's version tag used by the tests.
pub fn version(flavor: Flavor, minor: u32) -> String {
    match flavor {
        Flavor::K3s => format!("v1.{minor}.4+k3s1"),
        Flavor::Rke2 => format!("v1.{minor}.4+rke2r1"),
        Flavor::Kubeadm => format!("v1.{minor}.4"),
    }
}

/// Publish the doubles of `flavor` at `version` for both arches on the mirror, and return
/// the layers of a single-node server profile with `cni`. `fail_start` builds doubles whose
/// service exits at start.
pub fn publish(
    m: &Mirror,
    flavor: Flavor,
    cni: CniType,
    version: &str,
    fail_start: bool,
) -> (KubernetesLayer, CniLayer) {
    let mut k_art = Vec::new();
    let mut c_art = Vec::new();
    let v = version;
    let tag = v.replace('+', "-");
    for arch in [Arch::Amd64, Arch::Arm64] {
        let x = arch_name(arch);
        let d = |part: &str| double(part, v, arch, fail_start);
        // The tools' own release versions, whatever the Kubernetes version: one file
        // per URL, as on the real release pages.
        let tool = |name: &str, version: &str| {
            let mut b = double("tool", version, arch, false);
            b.extend_from_slice(format!("# {name}\n").as_bytes());
            b
        };
        // Each artifact as upstream publishes it (reference/k8s-install.md §7, and the
        // projects' release pages): file names, archive layouts and checksum files.
        match flavor {
            Flavor::K3s => {
                // GitHub release: the raw binary (`k3s` on amd64, `k3s-ARCH` otherwise)
                // and `sha256sum-ARCH.txt` naming it.
                let file = if arch == Arch::Amd64 {
                    "k3s".to_string()
                } else {
                    format!("k3s-{x}")
                };
                let body = d("k3s");
                let sums = sha256sum(&[(file.as_str(), &body)]);
                let dir = format!("/k3s-io/k3s/releases/download/{tag}");
                k_art.push(m.released(
                    "k3s",
                    arch,
                    &format!("{dir}/{file}"),
                    body,
                    &format!("{dir}/sha256sum-{x}.txt"),
                    sums,
                ));
            }
            Flavor::Rke2 => {
                // `rke2.linux-ARCH.tar.gz` (scripts/package-bundle: bin/, lib/systemd/system/,
                // share/rke2/) and `sha256sum-ARCH.txt` covering the arch's files.
                let env = b"HOME=/root\n".to_vec();
                let tgz = tarball(&[
                    ("bin/rke2", d("rke2"), 0o755),
                    (
                        "bin/rke2-killall.sh",
                        b"#!/bin/sh\n# double\n".to_vec(),
                        0o755,
                    ),
                    (
                        "bin/rke2-uninstall.sh",
                        b"#!/bin/sh\n# double\n".to_vec(),
                        0o755,
                    ),
                    (
                        "lib/systemd/system/rke2-server.service",
                        kubernetes::rke2::unit(Role::Server).into_bytes(),
                        0o644,
                    ),
                    ("lib/systemd/system/rke2-server.env", env.clone(), 0o644),
                    (
                        "lib/systemd/system/rke2-agent.service",
                        kubernetes::rke2::unit(Role::Agent).into_bytes(),
                        0o644,
                    ),
                    ("lib/systemd/system/rke2-agent.env", env, 0o644),
                    ("share/rke2/LICENSE.txt", b"double\n".to_vec(), 0o644),
                    (
                        "share/rke2/rke2-cis-sysctl.conf",
                        b"# double\n".to_vec(),
                        0o644,
                    ),
                ]);
                let file = format!("rke2.linux-{x}.tar.gz");
                let bare = d("rke2");
                let sums = sha256sum(&[
                    (format!("rke2.linux-{x}").as_str(), &bare),
                    (file.as_str(), &tgz),
                ]);
                let dir = format!("/rancher/rke2/releases/download/{tag}");
                k_art.push(m.released(
                    "rke2",
                    arch,
                    &format!("{dir}/{file}"),
                    tgz,
                    &format!("{dir}/sha256sum-{x}.txt"),
                    sums,
                ));
            }
            Flavor::Kubeadm => {
                // dl.k8s.io: raw binaries, each with a `.sha256` holding only the digest.
                for b in ["kubeadm", "kubelet", "kubectl"] {
                    let body = d(b);
                    let sum = format!("{}\n", crate::common::sha256_hex(&body)).into_bytes();
                    let path = format!("/release/{tag}/bin/linux/{x}/{b}");
                    k_art.push(m.released(b, arch, &path, body, &format!("{path}.sha256"), sum));
                }
                // cri-tools: `crictl-vX-linux-ARCH.tar.gz` holding `crictl` at the top.
                let crictl = tarball(&[("crictl", tool("crictl", "v1.31.1"), 0o755)]);
                let file = format!("crictl-v1.31.1-linux-{x}.tar.gz");
                let path = format!("/kubernetes-sigs/cri-tools/releases/download/v1.31.1/{file}");
                let sums = sha256sum(&[(file.as_str(), &crictl)]);
                k_art.push(m.released(
                    "crictl",
                    arch,
                    &path,
                    crictl,
                    &format!("{path}.sha256"),
                    sums,
                ));
                // containernetworking/plugins: `cni-plugins-linux-ARCH-vX.tgz`, the plugins
                // at the top with LICENSE and README.md.
                let cni_tgz = tarball(&[
                    ("./bridge", tool("bridge", "v1.6.1"), 0o755),
                    ("./host-local", tool("host-local", "v1.6.1"), 0o755),
                    ("./loopback", tool("loopback", "v1.6.1"), 0o755),
                    ("./LICENSE", b"double\n".to_vec(), 0o644),
                    ("./README.md", b"double\n".to_vec(), 0o644),
                ]);
                let file = format!("cni-plugins-linux-{x}-v1.6.1.tgz");
                let path = format!("/containernetworking/plugins/releases/download/v1.6.1/{file}");
                let sums = sha256sum(&[(file.as_str(), &cni_tgz)]);
                k_art.push(m.released(
                    "cni-plugins",
                    arch,
                    &path,
                    cni_tgz,
                    &format!("{path}.sha256"),
                    sums,
                ));
                // containerd: `containerd-X-linux-ARCH.tar.gz` with bin/, and `.sha256sum`.
                let ctd = tarball(&[
                    (
                        "bin/containerd",
                        double("containerd", "v1.7.24", arch, false),
                        0o755,
                    ),
                    (
                        "bin/containerd-shim-runc-v2",
                        tool("containerd-shim-runc-v2", "v1.7.24"),
                        0o755,
                    ),
                    (
                        "bin/containerd-stress",
                        tool("containerd-stress", "v1.7.24"),
                        0o755,
                    ),
                    ("bin/ctr", tool("ctr", "v1.7.24"), 0o755),
                ]);
                let file = format!("containerd-1.7.24-linux-{x}.tar.gz");
                let path = format!("/containerd/containerd/releases/download/v1.7.24/{file}");
                let sums = sha256sum(&[(file.as_str(), &ctd)]);
                k_art.push(m.released(
                    "containerd",
                    arch,
                    &path,
                    ctd,
                    &format!("{path}.sha256sum"),
                    sums,
                ));
                // runc: raw `runc.ARCH`, one `runc.sha256sum` listing every arch.
                let runc = tool("runc", "v1.2.3");
                let file = format!("runc.{x}");
                let dir = "/opencontainers/runc/releases/download/v1.2.3";
                let sums = sha256sum(&[(file.as_str(), &runc)]);
                k_art.push(m.released(
                    "runc",
                    arch,
                    &format!("{dir}/{file}"),
                    runc,
                    &format!("{dir}/runc.sha256sum"),
                    sums,
                ));
                match cni {
                    CniType::Calico => c_art.push(m.artifact(
                        "tigera-operator",
                        arch,
                        &format!("/projectcalico/calico/releases/download/v3.29.1/{x}/tigera-operator.yaml"),
                        b"# tigera-operator double\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: installations.operator.tigera.io\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tigera-operator\n  namespace: tigera-operator\n".to_vec(),
                    )),
                    CniType::Cilium => {
                        // A Helm chart archive: `cilium/Chart.yaml` inside `cilium-X.tgz`.
                        c_art.push(m.artifact(
                            "cilium",
                            arch,
                            &format!("/cilium/charts/{x}/cilium-1.16.5.tgz"),
                            tarball(&[("cilium/Chart.yaml", b"name: cilium\nversion: 1.16.5\n".to_vec(), 0o644)]),
                        ));
                        // get.helm.sh: `helm-vX-linux-ARCH.tar.gz` holding `linux-ARCH/helm`,
                        // LICENSE and README.md, with `.sha256sum` (`<digest>  <name>`).
                        let helm = helm_tarball(arch, double("helm", "v3.16.3", arch, false));
                        let file = format!("helm-v3.16.3-linux-{x}.tar.gz");
                        let sums = sha256sum(&[(file.as_str(), &helm)]);
                        c_art.push(m.released(
                            "helm",
                            arch,
                            &format!("/helm/{file}"),
                            helm,
                            &format!("/helm/{file}.sha256sum"),
                            sums,
                        ));
                    }
                    CniType::Flannel => {}
                }
            }
        }
    }
    let k = KubernetesLayer {
        flavor,
        version: v.to_string(),
        role: Role::Server,
        server: None,
        token: None,
        values: Value::Null,
        artifacts: k_art,
        components: Default::default(),
        sha256: Default::default(),
    };
    let c = CniLayer {
        cni,
        version: match cni {
            CniType::Calico => "v3.29.1".into(),
            CniType::Cilium => "1.16.5".into(),
            CniType::Flannel => "v0.26.2".into(),
        },
        pod_cidr: Some(POD.into()),
        values: json!(null),
        artifacts: c_art,
        components: Default::default(),
        sha256: Default::default(),
    };
    (k, c)
}

/// A test root prepared for the doubles; every background service is killed on drop.
pub struct K8sRoot {
    pub dir: tempfile::TempDir,
}

impl K8sRoot {
    pub fn new() -> K8sRoot {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(doubles_dir().join("prepare-root.sh"))
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prepare-root.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        K8sRoot { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn read(&self, inside: &str) -> String {
        std::fs::read_to_string(self.path().join(inside.trim_start_matches('/')))
            .unwrap_or_default()
    }

    /// Lines `start UNIT` / `stop UNIT` / `daemon-reload` the systemctl double logged.
    pub fn service_log(&self) -> Vec<String> {
        self.read("/var/log/systemd-double/starts")
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn starts(&self, unit: &str) -> usize {
        self.service_log()
            .iter()
            .filter(|l| *l == &format!("start {unit}"))
            .count()
    }

    pub fn unit_log(&self, unit: &str) -> String {
        self.read(&format!("/var/log/systemd-double/{unit}.log"))
    }

    pub fn stop_all(&self) {
        let run = self.path().join("run/systemd-double");
        if let Ok(rd) = std::fs::read_dir(&run) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "pid") {
                    if let Ok(pid) = std::fs::read_to_string(&p) {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            let _ = nix::sys::signal::killpg(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

impl Drop for K8sRoot {
    fn drop(&mut self) {
        self.stop_all();
    }
}
