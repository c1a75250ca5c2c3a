//! `files`, `directories` and `downloads`: content-compared, atomic, owner-aware.

use std::time::Duration;

use super::{converge_queued, Changes, StepCx, StepError};
use crate::artifacts::{self, FetchOptions};
use crate::host::fs;
use cairn_userdata::model::{DirSpec, DownloadSpec, FileSpec};

/// Whole-file entries are compared first and written together at the end of the step (one
/// concurrent round of fsyncs, see [`fs::WriteBatch`]): an entry that cannot be resolved
/// (an unknown owner, a directory in the way) fails the step before the files queued so far
/// are replaced.
pub fn files(cx: &mut StepCx, specs: &[FileSpec]) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    let mut batch = fs::WriteBatch::default();
    for spec in specs {
        let mode = spec.mode.map_or(0o644, |m| m.0);
        let ids = cx.resolve_ids(spec.owner.as_ref(), spec.group.as_ref())?;
        if spec.append {
            // Appends act on the file as the entries before them left it.
            batch.commit(cx.host)?;
            let real = spec.path.as_str();
            let current = cx.host.read_opt(real)?.unwrap_or_default();
            // Appending the same block again would grow the file on every run: skip it
            // when the file already ends with it.
            if !spec.content.is_empty() && !current.ends_with(&spec.content) {
                changes.push(format!(
                    "appended {} bytes to {}",
                    spec.content.len(),
                    spec.path
                ));
                if !cx.dry_run {
                    cx.host.append(real, &spec.content, mode)?;
                }
            }
            if let Some(c) = converge_meta(cx, &spec.path, mode, ids)? {
                changes.push(c);
            }
            continue;
        }
        if let Some(c) = converge_queued(cx, &mut batch, &spec.path, &spec.content, mode, ids)? {
            changes.push(c);
        }
    }
    batch.commit(cx.host)?;
    Ok(changes)
}

fn converge_meta(
    cx: &StepCx,
    shown: &cairn_userdata::model::AbsPath,
    mode: u32,
    ids: Option<(u32, u32)>,
) -> Result<Option<String>, StepError> {
    let real = shown.as_str();
    let Some(m) = cx.host.meta(real)? else {
        return Ok(None);
    };
    let mut what = Vec::new();
    if m.mode != mode {
        what.push(format!("mode {mode:04o}"));
        if !cx.dry_run {
            cx.host.set_mode(real, mode)?;
        }
    }
    if let Some((u, g)) = ids {
        if m.uid != u || m.gid != g {
            what.push(format!("owner {u}:{g}"));
            if !cx.dry_run {
                cx.host.set_owner(real, u, g)?;
            }
        }
    }
    Ok((!what.is_empty()).then(|| format!("set {} of {shown}", what.join(", "))))
}

pub fn directories(cx: &mut StepCx, specs: &[DirSpec]) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    for spec in specs {
        let mode = spec.mode.map_or(0o755, |m| m.0);
        let ids = cx.resolve_ids(spec.owner.as_ref(), spec.group.as_ref())?;
        let real = spec.path.as_str();
        match cx.host.meta(real)? {
            Some(m) if !m.is_dir => {
                return Err(StepError::msg(format!(
                    "{} exists and is not a directory",
                    spec.path
                )))
            }
            Some(_) => {
                if let Some(c) = converge_meta(cx, &spec.path, mode, ids)? {
                    changes.push(c);
                }
            }
            None => {
                changes.push(format!("created directory {} (mode {mode:04o})", spec.path));
                if !cx.dry_run {
                    cx.host.create_dir(real, mode)?;
                    if let Some((u, g)) = ids {
                        cx.host.set_owner(real, u, g)?;
                    }
                }
            }
        }
    }
    Ok(changes)
}

/// Download attempts before giving up.
const ATTEMPTS: u32 = 3;

pub fn downloads(cx: &mut StepCx, specs: &[DownloadSpec]) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    for spec in specs {
        let mode = spec.mode.map_or(0o644, |m| m.0);
        let ids = cx.resolve_ids(spec.owner.as_ref(), spec.group.as_ref())?;
        let real = spec.path.as_str();
        let present = cx.host.meta(real)?.is_some_and(|m| m.is_file);
        let up_to_date = match (&spec.sha256, present) {
            (Some(want), true) => match cx.host.open_read(real)? {
                Some(f) => {
                    artifacts::sha256_reader(f, &cx.host.shown(real)).map_err(download_err)?
                        == *want
                }
                None => false,
            },
            // Without a digest an existing file is kept: it cannot be compared.
            (None, true) => true,
            (_, false) => false,
        };
        if up_to_date {
            if let Some(c) = converge_meta(cx, &spec.path, mode, ids)? {
                changes.push(c);
            }
            continue;
        }
        changes.push(format!("downloaded {} to {}", spec.url, spec.path));
        if cx.dry_run {
            continue;
        }
        let opts = FetchOptions {
            attempts: ATTEMPTS,
            // yip's `timeout: 0` means no time limit.
            idle_timeout: match spec.timeout_secs {
                Some(0) => None,
                secs => Some(Duration::from_secs(secs.unwrap_or(600))),
            },
            backoff: Duration::from_millis(500),
            ..FetchOptions::default()
        };
        // The partial file is a temp file beside the target (random name, created with
        // O_EXCL|O_NOFOLLOW in the opened directory) so the final rename stays on one file
        // system; interruptions within the step resume from it. Dropped on failure, it is
        // removed: a failed step leaves the target tree as it was.
        let mut staged = cx.host.stage(real)?;
        let shown = staged.shown().to_path_buf();
        artifacts::download_to(
            &spec.url,
            staged.file(),
            &shown,
            spec.sha256.as_ref(),
            &opts,
            &mut |_| {},
        )
        .map_err(download_err)?;
        staged.commit(mode, ids)?;
    }
    Ok(changes)
}

fn download_err(e: artifacts::ArtifactError) -> StepError {
    StepError::msg(e.to_string())
}
