//! User-data checks shared by every command: each command validates the site's user-data
//! with the stage engine's validator and fails before writing anything if it is invalid.

use std::path::PathBuf;

/// User-data that failed validation: every diagnostic, each as FILE:LINE:COL: message.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    #[error(transparent)]
    Read(#[from] cairn_userdata::load::LoadError),
    #[error("invalid user-data, nothing was written:\n{0}")]
    Invalid(String),
}

/// Validate `files` (files or directories of *.yaml) and return the expanded file list.
pub fn validate(files: &[PathBuf]) -> Result<Vec<PathBuf>, UserDataError> {
    let loaded = cairn_userdata::load::load(files, false)?;
    if loaded.diags.has_errors() {
        let lines: Vec<String> = loaded
            .diags
            .sorted()
            .iter()
            .map(|d| d.to_string())
            .collect();
        return Err(UserDataError::Invalid(lines.join("\n")));
    }
    Ok(loaded.files)
}
