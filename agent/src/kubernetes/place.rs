//! Placing verified artifacts where each flavor expects them (binary, tarball layout, files
//! in a directory), and the record of what is installed (`installed.json`), which makes
//! re-applying idempotent and lets a failed upgrade roll back: the previous artifacts are
//! still in the content-addressed cache, so rolling back is placing them again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Fetch, Placement};
use crate::artifacts::{parse_sha256, sha256_reader, ArtifactCache, ArtifactError, BadSha256};
use crate::host::fs::FsError;
use crate::host::untar::{self, Compression};
use crate::host::Host;

/// Why placing an artifact (or recording what was placed) failed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("artifact `{name}`: {source}")]
    Digest {
        name: String,
        #[source]
        source: BadSha256,
    },
    #[error("artifact `{name}` ({sha256}) is not in the cache {}; the artifacts phase fetches it first", cache.display())]
    NotCached {
        name: String,
        sha256: String,
        cache: PathBuf,
    },
    #[error("installing `{name}` at {target}: {source}")]
    Install {
        name: String,
        target: String,
        #[source]
        source: Box<InstallIo>,
    },
    #[error("creating {dir} for `{name}`: {source}")]
    Dir {
        name: String,
        dir: String,
        #[source]
        source: FsError,
    },
    #[error("unpacking `{name}`: {source}")]
    Unpack {
        name: String,
        #[source]
        source: UnpackError,
    },
    #[error("recording the install in {RECORD_PATH}: {0}")]
    Record(#[from] FsError),
}

/// What went wrong copying an artifact into the target.
#[derive(Debug, thiserror::Error)]
pub enum InstallIo {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Cache(#[from] ArtifactError),
    #[error("copying to {}: {source}", path.display())]
    Copy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("it left the cache")]
    Gone,
}

/// Why an archive could not be unpacked into the target.
pub type UnpackError = crate::host::untar::UntarError;

/// One artifact that changed on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The artifact's name in the profile (`containerd`, `k3s`…).
    pub name: String,
    /// What was done, e.g. `installed k3s at /usr/local/bin/k3s`.
    pub what: String,
}

impl std::fmt::Display for Placed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

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

    pub fn save(&self, host: &Host) -> Result<(), PlaceError> {
        // A record of plain strings and numbers always serializes.
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        if host.read_opt(RECORD_PATH).ok().flatten().as_deref() == Some(text.as_slice()) {
            return Ok(());
        }
        host.write_atomic(RECORD_PATH, &text, 0o600, None)?;
        Ok(())
    }

    /// The artifact placed at the same place as `f`, if recorded.
    fn same_place(&self, f: &Fetch) -> Option<&Fetch> {
        self.artifacts.iter().find(|r| r.place == f.place)
    }
}

/// Place every artifact; returns each artifact that changed on disk.
pub fn place_all(
    host: &Host,
    cache: &ArtifactCache,
    fetches: &[Fetch],
    previous: Option<&Record>,
) -> Result<Vec<Placed>, PlaceError> {
    let mut changed = Vec::new();
    for f in fetches {
        if let Some(what) = place(host, cache, f, previous)? {
            changed.push(Placed {
                name: f.name.clone(),
                what,
            });
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
) -> Result<Option<String>, PlaceError> {
    let sha = parse_sha256(&f.sha256).map_err(|source| PlaceError::Digest {
        name: f.name.clone(),
        source,
    })?;
    let src = cache.get(&sha).ok_or_else(|| PlaceError::NotCached {
        name: f.name.clone(),
        sha256: f.sha256.clone(),
        cache: cache.dir().to_path_buf(),
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
            host.create_dir_all(dir).map_err(|source| PlaceError::Dir {
                name: f.name.clone(),
                dir: dir.clone(),
                source,
            })?;
            let archive = open_cached(cache, &sha, &src, f)?;
            untar::unpack(host, archive, Compression::Gzip, dir, Some(&sha)).map_err(|source| {
                PlaceError::Unpack {
                    name: f.name.clone(),
                    source,
                }
            })?;
            Ok(Some(format!("unpacked {} into {dir}", f.name)))
        }
        Placement::Member { member, path, mode } => {
            let archive = open_cached(cache, &sha, &src, f)?;
            let written = untar::unpack_member(
                host,
                archive,
                Compression::Gzip,
                member,
                path,
                *mode,
                Some(&sha),
            )
            .map_err(|source| PlaceError::Unpack {
                name: f.name.clone(),
                source,
            })?;
            Ok(written.then(|| format!("installed {} ({member}) at {path}", f.name)))
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
) -> Result<Option<String>, PlaceError> {
    let installing = |source: InstallIo| PlaceError::Install {
        name: f.name.clone(),
        target: target.to_string(),
        source: Box::new(source),
    };
    if let Some(meta) = host.meta(target).map_err(|e| installing(e.into()))? {
        if meta.is_file && meta.mode == mode {
            let current = host.open_read(target).map_err(|e| installing(e.into()))?;
            let same = current
                .map(|c| sha256_reader(c, &host.shown(target)))
                .transpose()
                .map_err(|e| installing(e.into()))?;
            if same.as_ref() == Some(sha) {
                return Ok(None);
            }
        }
    }
    let mut src = cache
        .open(sha)
        .map_err(|e| installing(e.into()))?
        .ok_or_else(|| installing(InstallIo::Gone))?;
    // Written to a temp file beside the target and renamed over it: a running binary is
    // replaced, never rewritten in place ("text file busy").
    let mut staged = host.stage(target).map_err(|e| installing(e.into()))?;
    let shown = staged.shown().to_path_buf();
    std::io::copy(&mut src, staged.file()).map_err(|source| {
        installing(InstallIo::Copy {
            path: shown.clone(),
            source,
        })
    })?;
    // Owned by root where Cairn may change owners (not in an unprivileged test run).
    let owner = nix::unistd::geteuid().is_root().then_some((0, 0));
    staged
        .commit(mode, owner)
        .map_err(|e| installing(e.into()))?;
    Ok(Some(format!("installed {} at {target}", f.name)))
}

/// The cached archive of `f`, opened for unpacking (its digest is checked again while it
/// streams).
fn open_cached(
    cache: &ArtifactCache,
    sha: &[u8; 32],
    src: &Path,
    f: &Fetch,
) -> Result<std::fs::File, PlaceError> {
    cache
        .open(sha)
        .map_err(|e| PlaceError::Install {
            name: f.name.clone(),
            target: src.display().to_string(),
            source: Box::new(e.into()),
        })?
        .ok_or_else(|| PlaceError::NotCached {
            name: f.name.clone(),
            sha256: f.sha256.clone(),
            cache: cache.dir().to_path_buf(),
        })
}
