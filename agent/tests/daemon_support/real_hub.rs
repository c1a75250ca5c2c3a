//! The real `cairn-hub` binary for the daemon's tests: `serve` over TLS on 127.0.0.1 with a
//! test CA, or with the CA the hub makes itself ([`RealHub::start_own_ca`]); SQLite in a
//! temp dir; driven by its admin commands, stopped with SIGKILL and restarted on the same
//! port and database.
//!
//! The binary is `CAIRN_HUB_BIN`, else the one next to `cairn-agent` in the target
//! directory (`cargo test --workspace` builds it), built with `cargo build -p cairn-hub`
//! when it is missing or older than the hub's sources.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use cairn_proto::Event;
use serde_json::Value;

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let t = if p.is_dir() {
                newest_mtime(&p)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            newest = newest.max(t);
        }
    }
    newest
}

/// The `cairn-hub` binary, built once per test run if needed.
pub fn hub_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CAIRN_HUB_BIN") {
            return PathBuf::from(p);
        }
        let agent = PathBuf::from(env!("CARGO_BIN_EXE_cairn-agent"));
        let bin = agent.with_file_name("cairn-hub");
        let repo = crate::common::repo_dir();
        let sources = ["hub/src", "hub/migrations", "proto/src"]
            .iter()
            .map(|d| newest_mtime(&repo.join(d)))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let fresh = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= sources);
        if !fresh {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            eprintln!("building cairn-hub for the daemon tests…");
            let mut child = Command::new(cargo)
                .args(["build", "-p", "cairn-hub"])
                .current_dir(&repo)
                .spawn()
                .expect("running cargo build -p cairn-hub");
            let start = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "cargo build -p cairn-hub failed");
                    break;
                }
                if start.elapsed() > Duration::from_secs(1200) {
                    let _ = child.kill();
                    panic!("cargo build -p cairn-hub took over 20 minutes; build it first");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

pub struct RealHub {
    _dir: tempfile::TempDir,
    db: PathBuf,
    /// The test PKI's certificate and key; `None`: the hub's own CA.
    cert: Option<(PathBuf, PathBuf)>,
    /// Extra environment of `serve` (e.g. `CAIRN_HUB_LOG`).
    env: Vec<(String, String)>,
    dir: PathBuf,
    pub ca_pem: String,
    pub port: u16,
    child: Option<Child>,
    pub log: Arc<Mutex<String>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RealHub {
    pub fn start() -> RealHub {
        let dir = tempfile::Builder::new()
            .prefix("cairn-hub-it-")
            .tempdir()
            .unwrap();
        let pki = crate::hub::pki();
        let cert = dir.path().join("hub.crt");
        let key = dir.path().join("hub.key");
        std::fs::write(&cert, &pki.cert_pem).unwrap();
        std::fs::write(&key, &pki.key_pem).unwrap();
        let mut hub = RealHub {
            db: dir.path().join("hub.db"),
            dir: dir.path().to_path_buf(),
            _dir: dir,
            cert: Some((cert, key)),
            env: Vec::new(),
            ca_pem: pki.ca_pem,
            port: free_port(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        hub.restart();
        hub
    }

    /// `serve` with no certificate options: the hub makes its own CA in its data directory
    /// (the database's), and `token create` prints join strings. `env` goes to `serve`.
    pub fn start_own_ca(env: &[(&str, &str)]) -> RealHub {
        let dir = tempfile::Builder::new()
            .prefix("cairn-hub-it-")
            .tempdir()
            .unwrap();
        let mut hub = RealHub {
            db: dir.path().join("hub.db"),
            dir: dir.path().to_path_buf(),
            _dir: dir,
            cert: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ca_pem: String::new(),
            port: free_port(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        };
        hub.restart();
        hub.ca_pem = std::fs::read_to_string(hub.dir.join("tls/ca.crt")).unwrap();
        hub
    }

    /// The data directory (the database's): `tls/`, `mirror/`, `packs.json`.
    #[allow(dead_code)]
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    #[allow(dead_code)]
    pub fn db(&self) -> &Path {
        &self.db
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Start `serve` (again) on the same port and database; returns once it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the hub is running");
        let mut cmd = Command::new(hub_bin());
        cmd.arg("--db").arg(&self.db).args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
        ]);
        if let Some((cert, key)) = &self.cert {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd
            .args(["--heartbeat-interval", "5"])
            .env_remove("CAIRN_HUB_DB")
            .env_remove("CAIRN_HUB_ADMIN_TOKEN")
            .env_remove("CAIRN_HUB_DATA_DIR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cairn-hub serve");
        let mut err = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "cairn-hub serve exited early ({status}):\n{}",
                    self.log.lock().unwrap()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cairn-hub did not listen"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        self.child = Some(child);
    }

    /// SIGKILL the server (its database stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An admin command with `--output json`; panics unless it succeeds.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = Command::new(hub_bin())
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .args(["--output", "json"])
            .env_remove("CAIRN_HUB_DB")
            .env_remove("CAIRN_HUB_DATA_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cairn-hub {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// A registration token: (id, secret).
    pub fn token(&self, name: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["token", "create", "--name", name];
        args.extend(extra);
        let t = self.cli(&args);
        (
            t["id"].as_str().unwrap().to_string(),
            t["token"].as_str().unwrap().to_string(),
        )
    }

    /// A registration token with its join string (hub with its own CA): (id, secret, join).
    pub fn join_token(&self, name: &str, extra: &[&str]) -> (String, String, String) {
        let mut args = vec!["token", "create", "--name", name];
        args.extend(extra);
        let t = self.cli(&args);
        (
            t["id"].as_str().unwrap().to_string(),
            t["token"].as_str().unwrap().to_string(),
            t["join"].as_str().expect("no join string").to_string(),
        )
    }

    /// The registration tokens as `token list` shows them.
    pub fn tokens(&self) -> Vec<Value> {
        self.cli(&["token", "list"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Publish a profile (JSON) and assign it to the host named `host` (by name or id).
    pub fn publish(&self, profile: &Value) {
        let name = profile["name"].as_str().unwrap();
        let file = self.dir.join(format!("{name}-{}.json", profile["version"]));
        std::fs::write(&file, profile.to_string()).unwrap();
        self.cli(&["profile", "upload", file.to_str().unwrap()]);
    }

    pub fn assign_tag(&self, tag: &str, profile: &str) {
        self.cli(&["assign", "--tag", tag, "--profile", profile]);
    }

    pub fn hosts(&self) -> Vec<Value> {
        self.cli(&["hosts"]).as_array().cloned().unwrap_or_default()
    }

    pub fn host(&self, id: &str) -> Value {
        self.cli(&["hosts", "show", id])
    }

    /// The host's events as the hub lists them (in `seq` order), each with `received_at`.
    pub fn events_raw(&self, id: &str) -> Vec<Value> {
        self.cli(&["hosts", "events", id, "--limit", "10000"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn events(&self, id: &str) -> Vec<Event> {
        self.events_raw(id)
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }

    pub fn remove_host(&self, id: &str) {
        self.cli(&["hosts", "remove", id]);
    }
}

impl Drop for RealHub {
    fn drop(&mut self) {
        self.kill();
    }
}
