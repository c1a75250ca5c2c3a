//! The daemon's state directory (`/var/lib/cairn` by default) and its durable writes.
//!
//! Layout (every file mode 0600, the directory 0700, all written by this module):
//! ```text
//! identity.json   host id + credential from registration (secret)
//! registration-key.json  the registration key, until identity.json is stored (secret)
//! profile.json    the last verified profile received from the hub (may hold secrets)
//! applied.json    the profile last applied completely
//! journal.jsonl   progress of the current apply, one fsynced record per line
//! status.json     what the daemon last knew about the hub (for `cairn-agent status`)
//! seq             high-water mark of event sequence numbers handed out
//! spool/          events not yet acknowledged by the hub (see `spool.rs`)
//! daemon.lock     held by the running daemon
//! hub-ca.pem      the hub CA a join string pins, once fetched and checked against the pin
//! ```
//! Whole-file updates go through [`write_atomic`]: temp file created 0600 with
//! `O_EXCL|O_NOFOLLOW` under a random name, fsynced, renamed over the target, directory fsynced — a crash leaves the old or the new
//! content, never a torn file, and a secret is never readable by others, not even briefly.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Paths inside the state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity.json")
    }
    pub fn registration_key(&self) -> PathBuf {
        self.dir.join("registration-key.json")
    }
    pub fn profile(&self) -> PathBuf {
        self.dir.join("profile.json")
    }
    /// The chart registries (with credentials) the held profile uses: 0600, like every
    /// file here, in the 0700 state directory.
    pub fn registries(&self) -> PathBuf {
        self.dir.join("registries.json")
    }
    pub fn applied(&self) -> PathBuf {
        self.dir.join("applied.json")
    }
    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }
    pub fn status(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    pub fn seq(&self) -> PathBuf {
        self.dir.join("seq")
    }
    pub fn spool(&self) -> PathBuf {
        self.dir.join("spool")
    }
    pub fn lock(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }
    pub fn hub_ca(&self) -> PathBuf {
        self.dir.join("hub-ca.pem")
    }

    /// The artifact cache when the root is not `/` and has no cache of its own (on `/`,
    /// the default state directory holds the device's cache at this very path).
    pub fn artifacts(&self) -> PathBuf {
        self.dir.join("artifacts")
    }

    /// Create the directory (and `spool/`) with mode 0700, modes set on opened descriptors.
    /// The configured path may be a symbolic link (to persistent storage, say) when it
    /// belongs to this process's user; a link anyone else owns is refused before anything
    /// is created, and so is any link at `spool/`: nothing is ever chmodded through them.
    pub fn create(&self) -> io::Result<()> {
        let refuse = |d: &Path, why: &str| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("opening the state directory {}: {why}", d.display()),
            )
        };
        match fs::symlink_metadata(&self.dir) {
            Ok(m) if m.file_type().is_symlink() && m.uid() != nix::unistd::geteuid().as_raw() => {
                return Err(refuse(
                    &self.dir,
                    &format!("it is a symbolic link owned by uid {}", m.uid()),
                ));
            }
            _ => {}
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let top = rustix::fs::open(
            &self.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| refuse(&self.dir, &e.to_string()))?;
        rustix::fs::fchmod(&top, Mode::from_raw_mode(0o700))?;
        match rustix::fs::mkdirat(&top, c"spool", Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let spool = rustix::fs::openat(
            &top,
            c"spool",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| refuse(&self.spool(), &e.to_string()))?;
        rustix::fs::fchmod(&spool, Mode::from_raw_mode(0o700))?;
        Ok(())
    }
}

/// Atomically replace `path` with `content` (mode 0600). See the module docs: the write goes
/// through the host seam rooted at the file's directory (temp file with a random name,
/// `O_CREAT|O_EXCL|O_NOFOLLOW`, renamed within the opened directory), like every write Cairn
/// makes in a target.
pub fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    crate::host::Host::system(dir)
        .write_atomic(
            &format!("/{}", name.to_string_lossy()),
            content,
            0o600,
            None,
        )
        .map_err(io::Error::other)
}

/// Serialize `value` as pretty JSON and [`write_atomic`] it.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Read a JSON file: `Ok(None)` when it does not exist, an error when it does not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Open `path` for appending (created 0600).
pub fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// fsync a directory so a create, rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Split a JSON-lines file into its complete lines. A last line without its newline is a
/// write cut short by a crash (or still being written): it is not returned.
pub fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    bytes[..end]
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// A secret string (credential, token): never printed by `Debug`/`Display`.
#[derive(Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Now, RFC 3339 UTC.
pub fn now() -> String {
    crate::events::now_rfc3339()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn atomic_json_is_0600_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        write_json(&p, &serde_json::json!({"a": 2})).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let v: serde_json::Value = read_json(&p).unwrap().unwrap();
        assert_eq!(v["a"], 2);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        let missing: Option<serde_json::Value> = read_json(&d.path().join("nope")).unwrap();
        assert!(missing.is_none());
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let lines: Vec<&[u8]> = complete_lines(b"{\"a\":1}\n\n{\"b\":2}\n{\"c\"").collect();
        assert_eq!(lines, vec![&b"{\"a\":1}"[..], &b"{\"b\":2}"[..]]);
        assert_eq!(complete_lines(b"no newline").count(), 0);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
    }
}
