#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test file compiles this module on its own, so not every helper is used by every file.
#![allow(dead_code)]
//! Shared helpers for the agent's integration tests: throwaway target roots made by
//! `scripts/mini-root.sh`, applying user-data through the library or the binary, reading
//! account rows, fake tools inside the root, a tiny HTTP server and root snapshots.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cairn_agent::engine::{self, ApplyOptions, Outcome};
use cairn_agent::events::{Emitter, MemorySink};
use cairn_agent::host::Host;
use cairn_proto::{Event, EventKind};
use cairn_userdata::load;
use sha2::{Digest, Sha256};

/// The agent crate's directory.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace (repository) directory.
pub fn repo_dir() -> PathBuf {
    manifest_dir()
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

/// The built `cairn-agent` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn-agent"))
}

/// A test workspace: `root/` is a mini target root, `cfg/` holds user-data files (kept
/// outside the root so snapshots of the root are not disturbed by them).
pub struct TestEnv {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub cfg: PathBuf,
}

impl TestEnv {
    /// A fresh mini root (Debian 12 os-release, host accounts, /bin/sh and a few tools).
    pub fn new() -> TestEnv {
        let env = TestEnv::empty();
        let script = repo_dir().join("scripts/mini-root.sh");
        assert!(script.is_file(), "missing {}", script.display());
        let out = Command::new("bash")
            .arg(&script)
            .arg(&env.root)
            .output()
            .expect("running mini-root.sh");
        assert!(
            out.status.success(),
            "mini-root.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }

    /// An empty root directory (for steps that need no tools).
    pub fn empty() -> TestEnv {
        let tmp = tempfile::Builder::new()
            .prefix("cairn-it-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().join("root");
        let cfg = tmp.path().join("cfg");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&cfg).unwrap();
        TestEnv {
            _tmp: tmp,
            root,
            cfg,
        }
    }

    /// Write a user-data file into `cfg/` and return its path.
    pub fn yaml(&self, name: &str, text: &str) -> PathBuf {
        let p = self.cfg.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    /// A path inside the root (`/etc/x` → `<root>/etc/x`).
    pub fn p(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    pub fn read(&self, inside: &str) -> String {
        let p = self.p(inside);
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    pub fn write(&self, inside: &str, content: &str) {
        let p = self.p(inside);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
    }

    /// Write an executable script inside the root (a fake tool).
    pub fn script(&self, inside: &str, body: &str) {
        self.write(inside, body);
        fs::set_permissions(self.p(inside), fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// (mode & 0o7777, uid, gid) of a path inside the root (not following a final link).
    pub fn meta(&self, inside: &str) -> (u32, u32, u32) {
        let p = self.p(inside);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (m.mode() & 0o7777, m.uid(), m.gid())
    }

    pub fn mode(&self, inside: &str) -> u32 {
        self.meta(inside).0
    }

    pub fn exists(&self, inside: &str) -> bool {
        fs::symlink_metadata(self.p(inside)).is_ok()
    }

    /// Apply one user-data text (default stages) and return the run.
    pub fn apply_yaml(&self, name: &str, text: &str) -> Run {
        let f = self.yaml(name, text);
        apply(&self.root, &[f], &ApplyOptions::default())
    }

    /// Fields of the `/etc/passwd` row for `name`.
    pub fn passwd(&self, name: &str) -> Option<Vec<String>> {
        row(&self.read("/etc/passwd"), name)
    }

    /// Fields of the `/etc/group` row for `name`.
    pub fn group(&self, name: &str) -> Option<Vec<String>> {
        row(&self.read("/etc/group"), name)
    }

    /// The password field of the `/etc/shadow` row for `name`.
    pub fn shadow_pw(&self, name: &str) -> Option<String> {
        row(&self.read("/etc/shadow"), name).map(|f| f[1].clone())
    }

    /// uid and gid of a user from the root's /etc/passwd.
    pub fn ids(&self, user: &str) -> (u32, u32) {
        let f = self
            .passwd(user)
            .unwrap_or_else(|| panic!("no user {user} in the root"));
        (f[2].parse().unwrap(), f[3].parse().unwrap())
    }

    /// gid of a group from the root's /etc/group.
    pub fn gid(&self, group: &str) -> u32 {
        self.group(group)
            .unwrap_or_else(|| panic!("no group {group} in the root"))[2]
            .parse()
            .unwrap()
    }
}

fn row(text: &str, name: &str) -> Option<Vec<String>> {
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(name))
}

/// The result of an apply through the library.
pub struct Run {
    pub outcome: Outcome,
    pub events: Vec<Event>,
}

impl Run {
    /// Panic with the events unless the run succeeded.
    pub fn ok(self) -> Run {
        assert!(
            self.outcome.ok(),
            "apply failed: {:?}\nevents:\n{}",
            self.outcome.failed,
            self.describe()
        );
        self
    }

    pub fn describe(&self) -> String {
        self.events
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {}",
                    e.kind.as_str(),
                    e.stage,
                    e.step,
                    e.message,
                    e.data
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The events of one step (by name).
    pub fn step_events(&self, step: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.step == step).collect()
    }

    /// The outcome event (changed/unchanged/failed) of one step.
    pub fn step(&self, step: &str) -> &Event {
        self.events
            .iter()
            .find(|e| {
                e.step == step
                    && matches!(
                        e.kind,
                        EventKind::StepChanged | EventKind::StepUnchanged | EventKind::StepFailed
                    )
            })
            .unwrap_or_else(|| panic!("no event for step `{step}`:\n{}", self.describe()))
    }

    /// Is this step reported as skipped by a condition?
    pub fn skipped(&self, step: &str) -> bool {
        let e = self.step(step);
        e.kind == EventKind::StepUnchanged && e.data.get("skipped").is_some()
    }

    /// All change lines of the run.
    pub fn changes(&self) -> String {
        self.outcome.changes.join("\n")
    }
}

/// Load (refusing invalid input) and apply files to `root` through the library.
pub fn apply(root: &Path, files: &[PathBuf], opts: &ApplyOptions) -> Run {
    let loaded = load::load(files, false).expect("loading user-data");
    let diags: Vec<String> = loaded
        .diags
        .errors()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    assert!(diags.is_empty(), "user-data invalid:\n{}", diags.join("\n"));
    let host = Host::system(root);
    let sink = MemorySink::default();
    let mut emitter = Emitter::new("test-host").with_sink(Box::new(sink.clone()));
    let outcome = engine::apply(&loaded.config, &host, opts, &mut emitter);
    Run {
        outcome,
        events: sink.events(),
    }
}

/// Run the binary with arguments.
pub fn cli<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(bin())
        .args(args)
        .env_remove("CAIRN_LOG")
        .output()
        .expect("running cairn-agent")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Is `program` on the host's PATH?
/// Fail (never skip) when a program a test needs is missing on the host:
/// scripts/install-test-deps.sh installs every one of them.
pub fn require(program: &str) {
    assert!(
        host_has(program),
        "`{program}` is not installed on this host; run scripts/install-test-deps.sh \
         (tests fail rather than skip when a tool is missing)"
    );
}

pub fn host_has(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Indent every line of `text` by `n` spaces (for embedding block scalars in YAML).
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// One file-system entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// sha256 of a file, `-> target` of a symlink, `dir` for a directory.
    pub content: String,
    pub mtime: (i64, i64),
}

/// Every path under `root` (the root itself included) with its metadata and content digest.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let m = fs::symlink_metadata(p).unwrap();
    let ft = m.file_type();
    let content = if ft.is_symlink() {
        format!("-> {}", fs::read_link(p).unwrap().display())
    } else if ft.is_dir() {
        "dir".to_string()
    } else if ft.is_file() {
        sha256_hex(&fs::read(p).unwrap())
    } else {
        "special".to_string()
    };
    let rel = p.strip_prefix(root).unwrap().to_path_buf();
    out.insert(
        PathBuf::from("/").join(rel),
        Entry {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: if ft.is_dir() { 0 } else { m.size() },
            content,
            mtime: (m.mtime(), m.mtime_nsec()),
        },
    );
    if ft.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        children.sort();
        for c in children {
            walk(root, &c, out);
        }
    }
}

/// Assert two snapshots are identical, listing every difference.
pub fn assert_same(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) {
    let mut diffs = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => diffs.push(format!("removed {}", p.display())),
            Some(a) if a != b => diffs.push(format!("changed {}: {b:?} -> {a:?}", p.display())),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        diffs.push(format!("added {}", p.display()));
    }
    assert!(diffs.is_empty(), "the root changed:\n{}", diffs.join("\n"));
}

/// Paths under `root` that look like Cairn's temporary files.
pub fn temp_leftovers(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (n.contains(".cairn") && n.ends_with(".tmp")) || n.starts_with(".cairn-")
        })
        .collect()
}

/// A tiny HTTP/1.1 server on 127.0.0.1 serving `body` at `path` (404 elsewhere), on a
/// background thread for the rest of the test process. Returns the base URL and a hit count.
pub fn serve(path: &'static str, body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    serve_slow(path, body, std::time::Duration::ZERO)
}

/// Like [`serve`], waiting `delay` before answering each request.
pub fn serve_slow(
    path: &'static str,
    body: Vec<u8>,
    delay: std::time::Duration,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a local port");
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&req);
            let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(delay);
            let (status, payload): (&str, &[u8]) = if target == path {
                ("200 OK", &body)
            } else {
                ("404 Not Found", b"not found")
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                payload.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(payload);
            let _ = stream.flush();
        }
    });
    (format!("http://{addr}"), hits)
}

/// Count of events per kind.
pub fn count(events: &[Event], kind: EventKind) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}
