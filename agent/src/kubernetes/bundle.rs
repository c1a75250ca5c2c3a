//! `cairn-agent bundle create`: every artifact a profile's `kubernetes`, `cni` and
//! `addons` layers list for the chosen architectures, fetched and verified through an
//! artifact cache and written as an air-gap bundle (a directory, or a `.tar` of one) that
//! [`crate::artifacts::bundle::import`] pre-seeds a device's cache from.

use std::path::{Path, PathBuf};

use cairn_proto::profile::{Arch, Artifact, Layer, Profile};

use crate::artifacts::{
    self, parse_sha256, ArtifactCache, ArtifactError, ArtifactRef, BadSha256, FetchOptions,
    Progress,
};

/// Why a bundle was not written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "the profile `{0}` lists no artifacts for the chosen architecture(s); nothing to bundle"
    )]
    Empty(String),
    #[error("artifact `{name}`: {source}")]
    Digest {
        name: String,
        #[source]
        source: BadSha256,
    },
    #[error("artifact `{name}` ({url}): {source}")]
    Fetch {
        name: String,
        url: String,
        #[source]
        source: Box<ArtifactError>,
    },
    #[error(transparent)]
    Write(#[from] ArtifactError),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The artifacts of a profile for `arches` (all arches when empty), in layer order,
/// each digest once.
pub fn profile_artifacts(profile: &Profile, arches: &[Arch]) -> Vec<Artifact> {
    let mut out: Vec<Artifact> = Vec::new();
    for layer in &profile.layers {
        let list: &[Artifact] = match layer {
            Layer::Kubernetes(k) => &k.artifacts,
            Layer::Cni(c) => &c.artifacts,
            Layer::Addons(a) => &a.artifacts,
            Layer::Os(_) => &[],
        };
        for a in list {
            if (arches.is_empty() || arches.contains(&a.arch))
                && !out.iter().any(|o| o.sha256.eq_ignore_ascii_case(&a.sha256))
            {
                out.push(a.clone());
            }
        }
    }
    out
}

/// What a bundle holds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub artifacts: usize,
    pub bytes: u64,
    pub path: PathBuf,
}

/// Fetch (through `cache`) and write the bundle to `out`: a directory, or a tar archive
/// when `out` ends in `.tar`.
pub fn create(
    profile: &Profile,
    arches: &[Arch],
    cache: &ArtifactCache,
    out: &Path,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(&Artifact, Progress),
) -> Result<Summary, BundleError> {
    let list = profile_artifacts(profile, arches);
    if list.is_empty() {
        return Err(BundleError::Empty(profile.name.clone()));
    }
    let mut files = Vec::new();
    let mut bytes = 0;
    for a in &list {
        let sha = parse_sha256(&a.sha256).map_err(|source| BundleError::Digest {
            name: a.name.clone(),
            source,
        })?;
        let path = cache
            .fetch(
                &ArtifactRef {
                    url: a.url.clone(),
                    sha256: sha,
                },
                opts,
                &mut |p| progress(a, p),
            )
            .map_err(|source| BundleError::Fetch {
                name: a.name.clone(),
                url: a.url.clone(),
                source: Box::new(source),
            })?;
        bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        files.push((path, sha, a.url.clone()));
    }
    let is_tar = out.extension().is_some_and(|e| e == "tar");
    if !is_tar {
        artifacts::bundle::create(out, &files)?;
        return Ok(Summary {
            artifacts: files.len(),
            bytes,
            path: out.to_path_buf(),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::tempdir_in(parent).map_err(|source| BundleError::Io {
        action: "creating a staging dir in",
        path: parent.to_path_buf(),
        source,
    })?;
    artifacts::bundle::create(staging.path(), &files)?;
    let tmp = parent.join(format!(
        ".{}.cairn-{}.tmp",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    // Written in-process (no tar(1)): plain ustar members of regular files, owned by
    // root, in a stable order; what `bundle import` unpacks through the host seam.
    if let Err(e) = write_tar(&tmp, staging.path()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(BundleError::Io {
            action: "writing the bundle archive",
            path: tmp,
            source: e,
        });
    }
    std::fs::rename(&tmp, out).map_err(|source| BundleError::Io {
        action: "moving the bundle to",
        path: out.to_path_buf(),
        source,
    })?;
    Ok(Summary {
        artifacts: files.len(),
        bytes,
        path: out.to_path_buf(),
    })
}

/// A tar archive at `out` of the regular files directly in `dir` (a bundle directory: the
/// artifacts named by their sha256, and `manifest.json`).
fn write_tar(out: &Path, dir: &Path) -> std::io::Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let file = std::fs::File::create(out)?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    for name in names {
        let path = dir.join(&name);
        if !std::fs::symlink_metadata(&path)?.is_file() {
            continue;
        }
        builder.append_path_with_name(&path, &name)?;
    }
    let file = builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    file.sync_all()
}
