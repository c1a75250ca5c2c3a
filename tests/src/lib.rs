//! Support for Cairn's workspace-level tests: the cached Debian root, extracting twin
//! copies of it, running the agent binary and cloud-init inside them, and snapshots.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of the cached Debian bookworm root tarball, building it on first use (once per
/// machine; tests/support/debian-root.sh holds a lock so parallel tests build it once).
pub fn debian_tarball() -> Result<PathBuf> {
    // Cached once per test process and shared by every test: the error is kept as its
    // message (errors are not Clone), for each test to report.
    static TAR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    TAR.get_or_init(|| {
        let script = workspace().join("tests/support/debian-root.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().last().unwrap_or_default().trim().to_string();
        Ok(PathBuf::from(path))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A fresh copy of the Debian root in a temp dir (removed on drop).
pub struct DebianRoot {
    dir: tempfile::TempDir,
}

impl DebianRoot {
    pub fn new() -> Result<DebianRoot> {
        let tar = debian_tarball()?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-debian-")
            .tempdir_in("/var/tmp")?;
        let status = Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(&tar)
            .arg("-C")
            .arg(dir.path())
            .status()
            .context("running tar")?;
        if !status.success() {
            bail!("extracting {} failed", tar.display());
        }
        // The cached root may come from another network: use this machine's resolver.
        if let Ok(conf) = std::fs::read("/etc/resolv.conf") {
            std::fs::write(dir.path().join("etc/resolv.conf"), conf)?;
        }
        Ok(DebianRoot { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run a command inside the root with chroot; fail with its output on non-zero exit.
    pub fn chroot(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("chroot")
            .arg(self.path())
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("running chroot")?;
        if !out.status.success() {
            bail!(
                "chroot {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run cloud-init's `single` mode for one module against a document placed in the root.
    pub fn cloud_init(&self, doc: &str, module: &str) -> Result<String> {
        let rel = "tmp/cairn-cloud-init-doc.yaml";
        std::fs::write(self.path().join(rel), doc)?;
        self.chroot(&[
            "cloud-init",
            "--file",
            &format!("/{rel}"),
            "single",
            "--name",
            module,
            "--frequency",
            "always",
        ])
    }

    pub fn read(&self, rel: &str) -> Result<String> {
        std::fs::read_to_string(self.path().join(rel.trim_start_matches('/')))
            .with_context(|| format!("reading {rel}"))
    }
}

/// The `cairn-agent` binary: the debug build for tests (already built by `cargo test
/// --workspace`; built here if missing), the release build for benchmarks.
pub fn agent_binary() -> Result<PathBuf> {
    agent_binary_for(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    })
}

fn agent_binary_for(profile: &'static str) -> Result<PathBuf> {
    // As for the Debian root: one build per process, its error kept as text for every test.
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let ws = workspace();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "cairn-agent"])
            .current_dir(&ws);
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("building cairn-agent failed".into());
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| ws.join("target"));
        Ok(target.join(profile).join("cairn-agent"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Run `cairn-agent ARGS`; returns (status code, stdout, stderr).
pub fn agent(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(agent_binary()?).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Rows of a colon-separated account file, by name.
pub fn rows(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<String> = l.split(':').map(str::to_string).collect();
            (f[0].clone(), f)
        })
        .collect()
}

/// One entry of a tree snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: String,
    pub mtime: i64,
}

/// Every path under `root` (not following links) with mode, owner, content digest, mtime.
pub fn snapshot(root: &Path) -> Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let p = e.path();
            let m = std::fs::symlink_metadata(&p)?;
            let content = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p)?.display())
            } else if m.is_file() {
                hex::encode(Sha256::digest(std::fs::read(&p)?))
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                "special".into()
            };
            out.insert(
                p.strip_prefix(root)?.to_path_buf(),
                Entry {
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    content,
                    mtime: m.mtime(),
                },
            );
        }
    }
    Ok(out)
}
