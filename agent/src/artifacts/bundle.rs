//! Air-gap bundles: a directory (or a tarball of one, e.g. on a USB stick) holding artifact
//! files and a `manifest.json` listing their sha256s. Importing a bundle verifies every
//! file and places it in the [`ArtifactCache`](super::ArtifactCache), so a profile fully
//! covered by the bundle installs with no network at all.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{parse_sha256, ArtifactCache, ArtifactError};

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub artifacts: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path of the file relative to the bundle directory.
    pub file: String,
    pub sha256: String,
    /// Where the file came from (informational).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

/// Import every artifact of a bundle directory or tarball; returns how many were added.
pub fn import(cache: &ArtifactCache, bundle: &Path) -> Result<usize, ArtifactError> {
    let (dir, _guard) = if bundle.is_dir() {
        (bundle.to_path_buf(), None)
    } else {
        let tmp = tempfile::tempdir().map_err(|e| ArtifactError::Io {
            action: "creating a temp dir for",
            path: bundle.to_path_buf(),
            source: e,
        })?;
        // Unpacked in-process through the host seam (a bundle's members cannot escape
        // the temp dir: no absolute names, `..` or links out).
        let file = std::fs::File::open(bundle).map_err(|e| ArtifactError::Io {
            action: "opening",
            path: bundle.to_path_buf(),
            source: e,
        })?;
        let host = crate::host::Host::system(tmp.path());
        crate::host::untar::unpack(
            &host,
            std::io::BufReader::new(file),
            crate::host::untar::Compression::None,
            "/",
            None,
        )
        .map_err(|e| {
            ArtifactError::Invalid(format!("extracting bundle {}: {e}", bundle.display()))
        })?;
        (tmp.path().to_path_buf(), Some(tmp))
    };
    let manifest_path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&manifest_path).map_err(|e| ArtifactError::Io {
        action: "reading",
        path: manifest_path.clone(),
        source: e,
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| ArtifactError::Invalid(format!("{}: {e}", manifest_path.display())))?;
    let mut added = 0;
    for entry in &manifest.artifacts {
        let sha = parse_sha256(&entry.sha256)
            .map_err(|e| ArtifactError::Invalid(format!("{}: {e}", manifest_path.display())))?;
        let file = safe_join(&dir, &entry.file)?;
        if cache.get(&sha).is_none() {
            cache.import_file(&file, &sha)?;
            added += 1;
        }
    }
    Ok(added)
}

/// Largest `manifest.json` read from a bundle.
const MAX_MANIFEST: u64 = 4 << 20;

/// A bundle's manifest (directory or `.tar`), read without unpacking the artifacts.
pub fn manifest(bundle: &Path) -> Result<Manifest, ArtifactError> {
    use std::io::Read;
    let invalid = |why: String| ArtifactError::Invalid(format!("{}: {why}", bundle.display()));
    let io = |e: std::io::Error| ArtifactError::Io {
        action: "reading",
        path: bundle.to_path_buf(),
        source: e,
    };
    let mut text = String::new();
    if bundle.is_dir() {
        std::fs::File::open(bundle.join(MANIFEST))
            .map_err(io)?
            .take(MAX_MANIFEST + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
    } else {
        let file = std::fs::File::open(bundle).map_err(io)?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut found = false;
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path().map_err(io)?.into_owned();
            let name = path.strip_prefix("./").unwrap_or(&path);
            if name == Path::new(MANIFEST) {
                entry
                    .take(MAX_MANIFEST + 1)
                    .read_to_string(&mut text)
                    .map_err(io)?;
                found = true;
                break;
            }
        }
        if !found {
            return Err(invalid(format!("no {MANIFEST}")));
        }
    }
    if text.len() as u64 > MAX_MANIFEST {
        return Err(invalid(format!(
            "{MANIFEST} is larger than {MAX_MANIFEST} bytes"
        )));
    }
    serde_json::from_str(&text).map_err(|e| invalid(format!("{MANIFEST}: {e}")))
}

/// Join a manifest path onto the bundle dir, refusing absolute paths and `..`.
fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, ArtifactError> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ArtifactError::Invalid(format!(
            "bundle file `{rel}` must be a relative path inside the bundle"
        )));
    }
    Ok(dir.join(p))
}

/// Write a bundle directory: copy each (file, sha256, url) in and write the manifest.
pub fn create(out: &Path, files: &[(PathBuf, [u8; 32], String)]) -> Result<(), ArtifactError> {
    std::fs::create_dir_all(out).map_err(|e| ArtifactError::Io {
        action: "creating",
        path: out.to_path_buf(),
        source: e,
    })?;
    let mut manifest = Manifest::default();
    for (src, sha, url) in files {
        let name = hex::encode(sha);
        let dest = out.join(&name);
        std::fs::copy(src, &dest).map_err(|e| ArtifactError::Io {
            action: "copying into the bundle",
            path: dest.clone(),
            source: e,
        })?;
        manifest.artifacts.push(Entry {
            file: name,
            sha256: hex::encode(sha),
            url: url.clone(),
        });
    }
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ArtifactError::Invalid(e.to_string()))?;
    crate::host::Host::system(out)
        .write_atomic(&format!("/{MANIFEST}"), &json, 0o644, None)
        .map_err(|e| ArtifactError::Invalid(e.to_string()))
}
