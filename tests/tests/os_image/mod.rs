//! Shared by the VM tests (boot.rs, iso.rs): the OS image recipe's root tarball per arch
//! (cached), the real `cairn-hub` over TLS on 127.0.0.1 with a certificate for 10.0.2.2 (the
//! host as QEMU's user networking shows it to the guest), and a QEMU/UEFI virtual machine
//! driven through its serial console.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("CAIRN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/cairn-test-cache"))
}

/// Run a script of the repo, streaming its stderr to ours; returns the last stdout line.
fn run_script(args: &[&str]) -> PathBuf {
    let out = Command::new(repo_dir().join(args[0]))
        .args(&args[1..])
        .current_dir(repo_dir())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

/// The static (musl) agent for `arch`, from packaging/build-static.sh (cargo skips the
/// build when nothing changed).
/// `CAIRN_TEST_AGENT_X86_64` / `CAIRN_TEST_AGENT_AARCH64` name a prebuilt one instead.
pub fn static_agent(arch: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CAIRN_TEST_AGENT_{}", arch.to_uppercase())) {
        return PathBuf::from(p);
    }
    static_binary(arch, "cairn-agent")
}

/// The static (musl) cairn-installer for `arch` (the install ISO's live environment).
#[allow(dead_code)] // used by iso.rs, not by boot.rs
pub fn static_installer(arch: &str) -> PathBuf {
    static_binary(arch, "cairn-installer")
}

fn static_binary(arch: &str, name: &str) -> PathBuf {
    let out = Command::new(repo_dir().join("packaging/build-static.sh"))
        .args(["--arch", arch])
        .current_dir(repo_dir())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "packaging/build-static.sh --arch {arch} failed"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let binary = stdout
        .lines()
        .map(|l| PathBuf::from(l.trim()))
        .find(|p| p.ends_with(name))
        .unwrap_or_else(|| panic!("build-static.sh printed no {name} path:\n{stdout}"));
    assert!(binary.is_file(), "{}", binary.display());
    binary
}

/// The test root tarball for `arch` (x86_64 | aarch64): the OS image recipe with the
/// current static agent and root autologin on the serial console. The Debian base is
/// cached by build-root.sh; the Cairn layer is re-appended each run (seconds). One file per
/// arch in the cache, replaced atomically; a lock serializes test binaries.
///
/// The initramfs is the recipe's default (`most`) where the build runs natively and
/// `targeted` where it runs under qemu-user (aarch64 here), which takes minutes instead of
/// the better part of an hour; the QEMU `virt` machine boots from virtio either way.
pub fn root_tar(arch: &str) -> PathBuf {
    let agent = static_agent(arch);
    let initramfs = if arch == std::env::consts::ARCH {
        "most"
    } else {
        "targeted"
    };
    let out = cache_dir().join(format!("os-root-{arch}-test.tar"));
    let started = Instant::now();
    let path = run_script(&[
        "packaging/os-image/build-root.sh",
        "--arch",
        arch,
        "--out",
        out.to_str().unwrap(),
        "--agent",
        agent.to_str().unwrap(),
        "--initramfs",
        initramfs,
        "--serial-autologin",
    ]);
    eprintln!(
        "root tarball {} ready in {:.0}s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    path
}

// ---------------------------------------------------------------------------------------
// The hub
// ---------------------------------------------------------------------------------------

fn newest_mtime(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let t = if p.is_dir() {
                newest_mtime(&p)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
            };
            newest = newest.max(t);
        }
    }
    newest
}

/// `cairn-hub` (CAIRN_HUB_BIN, else target/debug/cairn-hub, built when missing or stale).
pub fn hub_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_HUB_BIN") {
        return PathBuf::from(p);
    }
    // target/debug/deps/boot-HASH → target/debug
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("cairn-hub");
    let repo = repo_dir();
    let sources = ["hub/src", "hub/migrations", "proto/src"]
        .iter()
        .map(|d| newest_mtime(&repo.join(d)))
        .max()
        .unwrap();
    let fresh = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= sources);
    if !fresh {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "cairn-hub"])
            .current_dir(&repo)
            .status()
            .unwrap();
        assert!(st.success(), "cargo build -p cairn-hub failed");
    }
    bin
}

pub struct Hub {
    dir: tempfile::TempDir,
    db: PathBuf,
    pub ca_pem: String,
    pub port: u16,
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Hub {
    /// `cairn-hub serve` on 127.0.0.1 (only), TLS with a fresh test CA; the certificate
    /// names 10.0.2.2 (the guest's view of the host) and 127.0.0.1.
    pub fn start() -> Hub {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
        };
        use std::net::{IpAddr, Ipv4Addr};
        let dir = tempfile::Builder::new()
            .prefix("cairn-boot-hub-")
            .tempdir()
            .unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "Cairn boot-test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 2))),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ];
        p.distinguished_name.push(DnType::CommonName, "cairn-hub");
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let cert_path = dir.path().join("hub.crt");
        let key_path = dir.path().join("hub.key");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = dir.path().join("hub.db");
        let mut child = Command::new(hub_bin())
            .arg("--db")
            .arg(&db)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .args(["--heartbeat-interval", "5"])
            .env_remove("CAIRN_HUB_DB")
            .env_remove("CAIRN_HUB_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                l.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("cairn-hub exited ({st}):\n{}", log.lock().unwrap());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "hub did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Hub {
            dir,
            db,
            ca_pem: ca_cert.pem(),
            port,
            child,
            log,
        }
    }

    /// The hub as the guest reaches it.
    pub fn guest_endpoint(&self) -> String {
        format!("https://10.0.2.2:{}", self.port)
    }

    /// An admin command with `--output json`.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(hub_bin())
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .args(["--output", "json"])
            .env_remove("CAIRN_HUB_DB")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cairn-hub {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// A registration token secret.
    pub fn token(&self, name: &str) -> String {
        let t = self.cli(&["token", "create", "--name", name]);
        t["token"].as_str().unwrap().to_string()
    }

    pub fn hosts(&self) -> Vec<Value> {
        self.cli(&["hosts"]).as_array().cloned().unwrap_or_default()
    }

    pub fn events(&self, id: &str) -> Vec<Value> {
        self.cli(&["hosts", "events", id, "--limit", "10000"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `cairn:` block for user-data: this hub, a fresh token, the test CA.
    pub fn user_data_block(&self, site: &str) -> String {
        let token = self.token(site);
        let ca: String = self
            .ca_pem
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect();
        format!(
            "cairn:\n  endpoint: {}\n  token: \"{token}\"\n  site: {site}\n  ca_certs:\n    - |\n{ca}",
            self.guest_endpoint()
        )
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

// ---------------------------------------------------------------------------------------
// The virtual machine
// ---------------------------------------------------------------------------------------

pub struct Vm {
    child: Child,
    stdin: ChildStdin,
    pub log: Arc<Mutex<String>>,
    pub started: Instant,
    _vars: tempfile::TempDir,
}

/// Firmware (code, vars template) for `arch`.
fn firmware(arch: &str) -> (&'static str, &'static str) {
    match arch {
        "x86_64" => (
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
        "aarch64" => (
            "/usr/share/AAVMF/AAVMF_CODE.fd",
            "/usr/share/AAVMF/AAVMF_VARS.fd",
        ),
        _ => panic!("unknown arch {arch}"),
    }
}

impl Vm {
    /// Boot `disk` (raw) under UEFI with software emulation (-accel tcg), user networking,
    /// the serial console on our pipes. `extra` disks are attached after it.
    pub fn boot(arch: &str, disk: &Path, extra: &[&Path]) -> Vm {
        let (code, vars_template) = firmware(arch);
        let vars_dir = tempfile::tempdir().unwrap();
        let vars = vars_dir.path().join("vars.fd");
        std::fs::copy(vars_template, &vars).unwrap();
        let mut cmd = match arch {
            "x86_64" => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args(["-machine", "q35", "-cpu", "max"]);
                c
            }
            _ => {
                let mut c = Command::new("qemu-system-aarch64");
                // pauth-impdef: a cheap pointer-authentication algorithm under TCG.
                c.args(["-machine", "virt", "-cpu", "max,pauth-impdef=on"]);
                c
            }
        };
        cmd.args(["-accel", "tcg", "-smp", "2", "-m", "1024"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={code}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()));
        for d in extra {
            cmd.arg("-drive")
                .arg(format!("file={},format=raw,if=virtio", d.display()));
        }
        cmd.args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-chardev",
            "stdio,id=ser0,signal=off",
            "-serial",
            "chardev:ser0",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let l = log.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    l.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Vm {
            child,
            stdin,
            log,
            started: Instant::now(),
            _vars: vars_dir,
        }
    }

    /// The last `n` bytes of the serial log.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let start = log.len().saturating_sub(n);
        let mut s = start;
        while !log.is_char_boundary(s) {
            s += 1;
        }
        log[s..].to_string()
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Wait until the serial log contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log.lock().unwrap().contains(needle) {
                return true;
            }
            if self.exited().is_some() {
                return self.log.lock().unwrap().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        false
    }

    /// Type `script` at the root shell on the serial console and return what it printed
    /// (between markers the shell computes, so the echoed input never matches). Retried
    /// until `timeout`, since the shell may not be up yet.
    pub fn shell(&mut self, script: &str, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        let mut attempt = 0u32;
        while start.elapsed() < timeout {
            attempt += 1;
            let (a, b) = (1000 + attempt, 7);
            let begin = format!("CAIRN-BEGIN-{}", a * b);
            let end = format!("CAIRN-END-{}", a * b);
            let line = format!(
                "\n dmesg -n 1; echo CAIRN-BEGIN-$(({a}*{b})); {{ {script} ; }} 2>&1; echo CAIRN-END-$(({a}*{b}))\n"
            );
            if self.stdin.write_all(line.as_bytes()).is_err() {
                return None;
            }
            let _ = self.stdin.flush();
            let wait = Instant::now();
            while wait.elapsed() < Duration::from_secs(20) {
                {
                    let log = self.log.lock().unwrap();
                    if let Some(e) = log.rfind(&end) {
                        if let Some(s) = log[..e].rfind(&begin) {
                            return Some(log[s + begin.len()..e].replace('\r', ""));
                        }
                    }
                }
                if self.exited().is_some() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        None
    }

    /// Power off through the console (`systemctl poweroff`), else kill.
    pub fn shutdown(&mut self) {
        let _ = self.stdin.write_all(b"\nsystemctl poweroff\n");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
