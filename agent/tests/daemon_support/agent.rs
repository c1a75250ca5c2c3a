//! Running `cairn-agent run` as a real process for the daemon tests: its config, state
//! directory and mini target root, its stdout events and stderr log, signals, `status`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::Event;
use serde_json::Value;

/// Poll `cond` every 50 ms until it holds or `limit` passes; panics with `what` on timeout.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cairn:` user-data for a hub.
pub fn agent_yaml(endpoint: &str, token: &str, site: &str, ca_pem: &str) -> String {
    let ca: String = ca_pem.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "#cloud-config\ncairn:\n  endpoint: {endpoint}\n  token: {token}\n  site: {site}\n  \
         tags:\n    rack: r1\n  ca_certs:\n    - |\n{ca}"
    )
}

/// `cairn:` user-data with a join string instead of endpoint, token and CA.
pub fn join_yaml(join: &str, site: &str) -> String {
    format!("#cloud-config\ncairn:\n  join: \"{join}\"\n  site: {site}\n  tags:\n    rack: r1\n")
}

/// The binary under test: `CAIRN_AGENT_BIN` (e.g. a release build, to measure it) or the
/// one Cargo built for this test.
pub fn agent_bin() -> PathBuf {
    std::env::var_os("CAIRN_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cairn-agent")))
}

pub struct Agent {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Agent {
    pub fn spawn(config: &Path, state: &Path, root: &Path) -> Agent {
        Self::spawn_with(config, state, root, &[], &[])
    }

    /// With extra environment variables and `run` arguments.
    pub fn spawn_with(
        config: &Path,
        state: &Path,
        root: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Agent {
        let mut cmd = Command::new(agent_bin());
        cmd.env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env("CAIRN_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("run")
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .arg("--root")
            .arg(root)
            .args(["--output", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cairn-agent run");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let lines = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let text = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Agent {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The events printed so far (`--output json`).
    pub fn events(&self) -> Vec<Event> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit.
    pub fn term(&mut self, limit: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if start.elapsed() > limit {
                self.kill9();
                panic!(
                    "cairn-agent did not stop within {limit:?} of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// `cairn-agent status --output json` and its exit code.
pub fn status(state: &Path) -> (Value, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-agent"))
        .args(["status", "--output", "json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status output is not JSON ({e}): {:?}", out));
    (v, out.status.code().unwrap_or(-1))
}

/// `cairn-agent status` (human).
pub fn status_text(state: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-agent"))
        .args(["status", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files of a state directory, for secret scans.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Resident memory of a process (kB), from /proc/PID/status.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}
