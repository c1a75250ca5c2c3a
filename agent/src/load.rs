//! Reading user-data sources: files and directories given on the command line, or the
//! device's default locations. Files merge in order (directories in lexical order).

use std::path::{Path, PathBuf};

use crate::decode;
use crate::diag::Diagnostics;
use crate::model::Config;
use crate::validate;

/// Where a device looks for user-data when no file is named (DESIGN.md, Inputs).
pub const DEVICE_SOURCES: &[&str] = &["/oem", "/usr/local/cloud-config"];

#[derive(Debug, thiserror::Error)]
#[error("reading {}: {source}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
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
                .map_err(|source| LoadError {
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
    for file in &files {
        let text = read_text(file)?;
        let display = file.display().to_string();
        config.merge(decode::decode_text(&display, &text, &mut diags));
    }
    validate::check(&config, &mut diags);
    Ok(Loaded {
        config,
        diags,
        files,
    })
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError {
        path: path.to_path_buf(),
        source,
    })?;
    // Invalid UTF-8 is replaced; the YAML parser then reports the odd characters in place.
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}
