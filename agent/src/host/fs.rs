//! File-system primitives for steps: atomic writes, directories, ownership and modes.
//!
//! Every write goes to a temp file in the same directory, gets its mode and owner, is
//! fsynced and renamed over the target, and the directory is fsynced: a crash leaves the
//! old file or the new one, never a torn one. The temp file is created with mode 0600, so
//! secret content is never readable by others even for a moment.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An I/O error with the path and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}: {source}", path.display())]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Current state of a path, for diffing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub is_dir: bool,
    pub is_file: bool,
}

pub fn meta(path: &Path) -> Option<Meta> {
    let m = fs::symlink_metadata(path).ok()?;
    Some(Meta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        is_dir: m.is_dir(),
        is_file: m.is_file(),
    })
}

/// Read a file if it exists; `Ok(None)` when it does not.
pub fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err("reading", path)(e)),
    }
}

/// Create missing parent directories (mode 0755, owned by root) of `path`.
pub fn ensure_parents(path: &Path) -> Result<(), FsError> {
    if let Some(parent) = path.parent() {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(err("creating directory", parent))?;
        }
    }
    Ok(())
}

/// Atomically replace `path` with `content`, then set `mode` and owner.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), FsError> {
    ensure_parents(path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp = temp_path(path);
    let result = (|| {
        let f = write_temp(&tmp, content, mode, owner)?;
        f.sync_all().map_err(err("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(err("renaming into place", path))?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temp file a write of `dst` goes through: hidden, in the same directory (so the
/// rename is atomic), named after this process.
fn temp_path(dst: &Path) -> PathBuf {
    let dir = dst.parent().unwrap_or(Path::new("/"));
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.cairn-{}.tmp", std::process::id()))
}

/// Create `tmp` with mode 0600 (secrets are never readable by others, not even briefly),
/// write `content`, then set the owner and `mode`. Not synced.
fn write_temp(
    tmp: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<File, FsError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(err("creating", tmp))?;
    f.write_all(content).map_err(err("writing", tmp))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .map_err(err("changing owner of", tmp))?;
    }
    f.set_permissions(Permissions::from_mode(mode))
        .map_err(err("changing mode of", tmp))?;
    Ok(f)
}

/// Append bytes to a file (creating it with `mode` if missing) and fsync it.
pub fn append(path: &Path, content: &[u8], mode: u32) -> Result<(), FsError> {
    ensure_parents(path)?;
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)
        .map_err(err("opening for append", path))?;
    f.write_all(content).map_err(err("appending to", path))?;
    f.sync_all().map_err(err("syncing", path))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

pub fn set_mode(path: &Path, mode: u32) -> Result<(), FsError> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(err("changing mode of", path))
}

pub fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), FsError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(err("changing owner of", path))
}

/// Create a directory (and missing parents, 0755 root-owned) with `mode`.
pub fn create_dir(path: &Path, mode: u32) -> Result<(), FsError> {
    ensure_parents(path)?;
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err("creating directory", path)(e)),
    }
    // DirBuilder's mode is filtered by the umask; set it exactly.
    set_mode(path, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c.conf");
        write_atomic(&p, b"x=1\n", 0o640, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x=1\n");
        assert_eq!(meta(&p).unwrap().mode, 0o640);
        write_atomic(&p, b"x=2\n", 0o644, None).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x=2\n");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }
}

/// fsync every file, concurrently: the filesystem can then make them durable in one
/// journal commit instead of one commit per file (each file is still synced before it is
/// renamed into place).
pub fn sync_together(files: &[(&File, &Path)]) -> Result<(), FsError> {
    if files.len() <= 1 {
        for (f, p) in files {
            f.sync_all().map_err(err("syncing", p))?;
        }
        return Ok(());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|(f, p)| s.spawn(move || f.sync_all().map_err(err("syncing", p))))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(FsError {
                    action: "syncing",
                    path: PathBuf::new(),
                    source: std::io::Error::other("sync thread panicked"),
                })
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Whole-file writes collected and made durable together: each file still lands atomically
/// (temp file with its owner and mode, fsync, rename, directory fsync), but the fsyncs run
/// concurrently so the filesystem commits them at once instead of one journal commit each.
/// Nothing is renamed into place unless every temp file was written and synced.
#[derive(Default)]
pub struct WriteBatch(Vec<Queued>);

struct Queued {
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
    owner: Option<(u32, u32)>,
}

impl WriteBatch {
    /// Is `path` waiting in the batch? (Read it again only after [`WriteBatch::commit`].)
    pub fn holds(&self, path: &Path) -> bool {
        self.0.iter().any(|q| q.path == path)
    }

    /// Queue a write of `content` to `path` (parents are created now).
    pub fn push(
        &mut self,
        path: PathBuf,
        content: Vec<u8>,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), FsError> {
        ensure_parents(&path)?;
        self.0.push(Queued {
            path,
            content,
            mode,
            owner,
        });
        Ok(())
    }

    /// Write, sync and rename every queued file; on failure no temp file is left behind.
    pub fn commit(&mut self) -> Result<(), FsError> {
        let mut staged: Vec<(File, PathBuf, PathBuf)> = Vec::new();
        let result = (|| {
            for Queued {
                path: dst,
                content,
                mode,
                owner,
            } in self.0.drain(..)
            {
                let tmp = temp_path(&dst);
                match write_temp(&tmp, &content, mode, owner) {
                    Ok(f) => staged.push((f, tmp, dst)),
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        return Err(e);
                    }
                }
            }
            let files: Vec<(&File, &Path)> =
                staged.iter().map(|(f, t, _)| (f, t.as_path())).collect();
            sync_together(&files)?;
            let mut dirs: Vec<PathBuf> = Vec::new();
            for (_, tmp, dst) in &staged {
                fs::rename(tmp, dst).map_err(err("renaming into place", dst))?;
                let dir = dst.parent().unwrap_or(Path::new("/")).to_path_buf();
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
            let handles: Vec<(File, PathBuf)> = dirs
                .into_iter()
                .filter_map(|d| File::open(&d).ok().map(|f| (f, d)))
                .collect();
            let dir_files: Vec<(&File, &Path)> =
                handles.iter().map(|(f, d)| (f, d.as_path())).collect();
            // As in write_atomic: a failed directory sync does not fail the write.
            let _ = sync_together(&dir_files);
            Ok(())
        })();
        if result.is_err() {
            for (_, tmp, _) in &staged {
                let _ = fs::remove_file(tmp);
            }
        }
        result
    }
}
