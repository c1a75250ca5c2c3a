//! Placing verified artifacts where each flavor expects them (binary, tarball layout, files
//! in a directory), and the record of what is installed (`installed.json`), which makes
//! re-applying idempotent and lets a failed upgrade roll back: the previous artifacts are
//! still in the content-addressed cache, so rolling back is placing them again.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Fetch, Placement};
use crate::artifacts::{parse_sha256, sha256_file, ArtifactCache};
use crate::host::{fs, Cmd, Host};

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
        let text = std::fs::read(host.path_str(RECORD_PATH)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save(&self, host: &Host) -> Result<(), String> {
        let path = host.path_str(RECORD_PATH);
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        if std::fs::read(&path).ok().as_deref() == Some(text.as_slice()) {
            return Ok(());
        }
        fs::write_atomic(&path, &text, 0o600, None).map_err(|e| e.to_string())
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
        Placement::Binary { path, mode } => copy_if_different(host, &src, &sha, path, *mode, f),
        Placement::Into { dir, file } => {
            copy_if_different(host, &src, &sha, &format!("{dir}/{file}"), 0o644, f)
        }
        Placement::Extract { dir } => {
            let recorded = previous
                .and_then(|r| r.same_place(f))
                .is_some_and(|r| r.sha256.eq_ignore_ascii_case(&f.sha256));
            if recorded {
                return Ok(None);
            }
            let dest = host.path_str(dir);
            std::fs::create_dir_all(&dest)
                .map_err(|e| format!("creating {} for `{}`: {e}", dest.display(), f.name))?;
            extract(host, &src, &dest).map_err(|e| format!("unpacking `{}`: {e}", f.name))?;
            Ok(Some(format!("unpacked {} into {dir}", f.name)))
        }
    }
}

fn copy_if_different(
    host: &Host,
    src: &Path,
    sha: &[u8; 32],
    target: &str,
    mode: u32,
    f: &Fetch,
) -> Result<Option<String>, String> {
    let dest = host.path_str(target);
    if dest.is_file() && sha256_file(&dest).ok().as_ref() == Some(sha) {
        let meta_ok = std::fs::metadata(&dest)
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o7777 == mode
            })
            .unwrap_or(false);
        if meta_ok {
            return Ok(None);
        }
    }
    let data = std::fs::read(src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    // Written beside the target and renamed over it: a running binary is replaced, never
    // rewritten in place ("text file busy").
    fs::write_atomic(&dest, &data, mode, Some((0, 0)))
        .or_else(|_| fs::write_atomic(&dest, &data, mode, None))
        .map_err(|e| format!("installing `{}` at {target}: {e}", f.name))?;
    Ok(Some(format!("installed {} at {target}", f.name)))
}

/// Unpack a `.tar.gz` with tar(1) (present on every target: Debian's `tar` is essential),
/// never restoring owners from the archive and refusing members that climb out.
fn extract(host: &Host, archive: &Path, dest: &Path) -> Result<(), String> {
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
