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

/// A .tar.gz of (path, content, mode) entries, made with tar(1).
pub fn tarball(entries: &[(&str, Vec<u8>, u32)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (path, content, mode) in entries {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let out = dir.path().join("out.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("--owner=0")
        .arg("--group=0")
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(out).unwrap()
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
        let tool = |name: &str| {
            let mut b = double("tool", v, arch, false);
            b.extend_from_slice(format!("# {name}\n").as_bytes());
            b
        };
        match flavor {
            Flavor::K3s => {
                let file = if arch == Arch::Amd64 {
                    "k3s".to_string()
                } else {
                    format!("k3s-{x}")
                };
                k_art.push(m.artifact("k3s", arch, &format!("/k3s/{tag}/{file}"), d("k3s")));
            }
            Flavor::Rke2 => {
                let tgz = tarball(&[
                    ("bin/rke2", d("rke2"), 0o755),
                    ("share/rke2/LICENSE.txt", b"double\n".to_vec(), 0o644),
                ]);
                k_art.push(m.artifact(
                    "rke2",
                    arch,
                    &format!("/rke2/{tag}/rke2.linux-{x}.tar.gz"),
                    tgz,
                ));
            }
            Flavor::Kubeadm => {
                for b in ["kubeadm", "kubelet", "kubectl"] {
                    k_art.push(m.artifact(b, arch, &format!("/k8s/{tag}/{x}/{b}"), d(b)));
                }
                k_art.push(m.artifact(
                    "crictl",
                    arch,
                    &format!("/crictl/{tag}/crictl-linux-{x}.tar.gz"),
                    tarball(&[("crictl", tool("crictl"), 0o755)]),
                ));
                k_art.push(m.artifact(
                    "cni-plugins",
                    arch,
                    &format!("/cni/{tag}/cni-plugins-linux-{x}.tgz"),
                    tarball(&[
                        ("bridge", tool("bridge"), 0o755),
                        ("host-local", tool("host-local"), 0o755),
                        ("loopback", tool("loopback"), 0o755),
                    ]),
                ));
                k_art.push(m.artifact(
                    "containerd",
                    arch,
                    &format!("/containerd/{tag}/containerd-linux-{x}.tar.gz"),
                    tarball(&[
                        (
                            "bin/containerd",
                            double("containerd", "v1.7.24", arch, false),
                            0o755,
                        ),
                        ("bin/ctr", tool("ctr"), 0o755),
                    ]),
                ));
                k_art.push(m.artifact(
                    "runc",
                    arch,
                    &format!("/runc/{tag}/runc.{x}"),
                    tool("runc"),
                ));
                match cni {
                    CniType::Calico => c_art.push(m.artifact(
                        "tigera-operator",
                        arch,
                        &format!("/calico/{tag}/{x}/tigera-operator.yaml"),
                        b"# tigera-operator double\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: installations.operator.tigera.io\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tigera-operator\n  namespace: tigera-operator\n".to_vec(),
                    )),
                    CniType::Cilium => {
                        c_art.push(m.artifact(
                            "cilium",
                            arch,
                            &format!("/cilium/{tag}/{x}/cilium-1.16.5.tgz"),
                            tarball(&[("cilium/Chart.yaml", b"name: cilium\nversion: 1.16.5\n".to_vec(), 0o644)]),
                        ));
                        c_art.push(m.artifact("helm", arch, &format!("/helm/{tag}/{x}/helm"), d("helm")));
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
