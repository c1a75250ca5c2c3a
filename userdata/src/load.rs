//! Reading user-data sources: files and directories given on the command line, or the
//! device's default locations. Files merge in order (directories in lexical order).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::decode;
use crate::diag::Diagnostics;
use crate::model::Config;
use crate::profile;
use crate::validate;
use crate::yaml;

/// Where a device looks for user-data when no file is named (docs/architecture.md, "Files on a device").
pub const DEVICE_SOURCES: &[&str] = &["/oem", "/usr/local/cloud-config"];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Read with a bound, so naming `/dev/zero` or a huge file fails fast instead of
    /// filling memory.
    #[error("{}: larger than {limit} bytes; refused", path.display())]
    TooLarge { path: PathBuf, limit: usize },
}

/// The merged configuration and every diagnostic found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub diags: Diagnostics,
    pub files: Vec<PathBuf>,
}

/// Expand directories into their `*.yaml`/`*.yml` files, sorted by name.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| LoadError::Read {
                    path: p.clone(),
                    source,
                })?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| {
                    f.is_file()
                        && matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Load, decode, merge and cross-check the given files.
pub fn load(paths: &[PathBuf], strict: bool) -> Result<Loaded, LoadError> {
    let files = expand(paths)?;
    let mut diags = Diagnostics::new(strict);
    let mut config = Config::default();
    let mut budget = decode::DecodeBudget::new();
    for file in &files {
        let text = read_text(file)?;
        let display = file.display().to_string();
        config.merge(decode::decode_text_within(
            &display,
            &text,
            decode::dialect::Origin::File,
            &mut diags,
            &mut budget,
        ));
    }
    validate::check(&config, &mut diags);
    Ok(Loaded {
        config,
        diags,
        files,
    })
}

/// Read a user-data or profile file as text, at most [`yaml::MAX_DOCUMENT_BYTES`]: the bound
/// is applied while reading, so a device node or a growing file cannot exhaust memory.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let limit = yaml::MAX_DOCUMENT_BYTES;
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > limit {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    // Invalid UTF-8 is replaced; the YAML parser then reports the odd characters in place.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Read and check a cluster profile file (`cairn-agent apply PROFILE`, `validate`, `plan`).
pub fn read_profile(path: &Path) -> Result<profile::Checked, ProfileFileError> {
    let text = read_text(path)?;
    Ok(profile::read(&path.display().to_string(), &text)?)
}

/// Why a profile file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProfileFileError {
    #[error(transparent)]
    Read(#[from] LoadError),
    #[error(transparent)]
    Refused(#[from] profile::Refused),
}
