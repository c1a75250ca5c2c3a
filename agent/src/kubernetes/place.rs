//! Placing verified artifacts where each flavor expects them (binary, tarball layout, files
//! in a directory), and the record of what is installed (`installed.json`), which makes
//! re-applying idempotent and lets a failed upgrade roll back: the previous artifacts are
//! still in the content-addressed cache, so rolling back is placing them again.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Fetch, Placement};
use crate::artifacts::{parse_sha256, sha256_reader, ArtifactCache};
use crate::host::{Cmd, Host};

/// Where the record of the installed Kubernetes artifacts lives in the target.
pub const RECORD_PATH: &str = "/var/lib/cairn/kubernetes/installed.json";

/// What the last successful install placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub flavor: String,
    pub version: String,
    pub service: String,
    pub artifacts: Vec<Fetch>,
}

impl Record {
    /// The record in the target, if any (an unreadable record counts as none: the next
    /// install re-places everything, which is safe).
    pub fn load(host: &Host) -> Option<Record> {
        let text = host.read_opt(RECORD_PATH).ok()??;
        serde_json::from_slice(&text).ok()
    }

    pub fn save(&self, host: &Host) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        if host.read_opt(RECORD_PATH).ok().flatten().as_deref() == Some(text.as_slice()) {
            return Ok(());
        }
        host.write_atomic(RECORD_PATH, &text, 0o600, None)
            .map_err(|e| e.to_string())
    }

    /// The artifact placed at the same place as `f`, if recorded.
    fn same_place(&self, f: &Fetch) -> Option<&Fetch> {
        self.artifacts.iter().find(|r| r.place == f.place)
    }
}

/// Place every artifact; returns one line per artifact that changed on disk.
pub fn place_all(
    host: &Host,
    cache: &ArtifactCache,
    fetches: &[Fetch],
    previous: Option<&Record>,
) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for f in fetches {
        if let Some(line) = place(host, cache, f, previous)? {
            changed.push(line);
        }
    }
    Ok(changed)
}

/// Place one verified artifact from the cache. `None` when it is already in place.
pub fn place(
    host: &Host,
    cache: &ArtifactCache,
    f: &Fetch,
    previous: Option<&Record>,
) -> Result<Option<String>, String> {
    let sha = parse_sha256(&f.sha256).map_err(|e| format!("artifact `{}`: {e}", f.name))?;
    let src = cache.get(&sha).ok_or_else(|| {
        format!(
            "artifact `{}` ({}) is not in the cache {}; the artifacts phase fetches it first",
            f.name,
            f.sha256,
            cache.dir().display()
        )
    })?;
    match &f.place {
        Placement::Binary { path, mode } => copy_if_different(host, cache, &sha, path, *mode, f),
        Placement::Into { dir, file } => {
            copy_if_different(host, cache, &sha, &format!("{dir}/{file}"), 0o644, f)
        }
        Placement::Extract { dir } => {
            let recorded = previous
                .and_then(|r| r.same_place(f))
                .is_some_and(|r| r.sha256.eq_ignore_ascii_case(&f.sha256));
            if recorded {
                return Ok(None);
            }
            // The directory is made (and resolved) by the seam; tar(1) then unpacks into it
            // running chrooted into the target when the root is not `/` (see `extract`).
            host.create_dir_all(dir)
                .map_err(|e| format!("creating {dir} for `{}`: {e}", f.name))?;
            extract(host, &src, dir).map_err(|e| format!("unpacking `{}`: {e}", f.name))?;
            Ok(Some(format!("unpacked {} into {dir}", f.name)))
        }
    }
}

fn copy_if_different(
    host: &Host,
    cache: &ArtifactCache,
    sha: &[u8; 32],
    target: &str,
    mode: u32,
    f: &Fetch,
) -> Result<Option<String>, String> {
    let installing =
        |e: &dyn std::fmt::Display| format!("installing `{}` at {target}: {e}", f.name);
    if let Some(meta) = host.meta(target).map_err(|e| installing(&e))? {
        if meta.is_file && meta.mode == mode {
            let current = host.open_read(target).map_err(|e| installing(&e))?;
            let same = current
                .map(|c| sha256_reader(c, &host.shown(target)))
                .transpose()
                .map_err(|e| installing(&e))?;
            if same.as_ref() == Some(sha) {
                return Ok(None);
            }
        }
    }
    let mut src = cache
        .open(sha)
        .map_err(|e| installing(&e))?
        .ok_or_else(|| installing(&"it left the cache"))?;
    // Written to a temp file beside the target and renamed over it: a running binary is
    // replaced, never rewritten in place ("text file busy").
    let mut staged = host.stage(target).map_err(|e| installing(&e))?;
    let shown = staged.shown().to_path_buf();
    std::io::copy(&mut src, staged.file())
        .map_err(|e| installing(&format!("copying to {}: {e}", shown.display())))?;
    // Owned by root where Cairn may change owners (not in an unprivileged test run).
    let owner = nix::unistd::geteuid().is_root().then_some((0, 0));
    staged.commit(mode, owner).map_err(|e| installing(&e))?;
    Ok(Some(format!("installed {} at {target}", f.name)))
}

/// Unpack a `.tar.gz` with tar(1) (present on every target: Debian's `tar` is essential),
/// never restoring owners from the archive and refusing members that climb out.
///
/// tar works by path: the destination is the host path the seam resolved (inside the root,
/// link budget and unsafe-link rule applied), and tar itself refuses members that climb
/// out. A link planted *below* the destination after that is not guarded against here.
fn extract(host: &Host, archive: &Path, dir: &str) -> Result<(), String> {
    let dest = host.resolved_path(dir).map_err(|e| e.to_string())?;
    let cmd = Cmd::new("tar")
        .arg("-xzf")
        .arg(archive.display().to_string())
        .arg("-C")
        .arg(dest.display().to_string())
        .args(["--no-same-owner", "--no-overwrite-dir"]);
    host.runner()
        .check(&cmd)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
