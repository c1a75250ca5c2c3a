//! `files`, `directories` and `downloads`: content-compared, atomic, owner-aware.

use std::time::Duration;

use std::collections::HashMap;

use super::{converge_queued, file_delta, Changes, StepCx, StepError};
use crate::artifacts::{self, FetchOptions};
use crate::host::fs;
use cairn_userdata::model::{AbsPath, Action, DirSpec, DownloadSpec, FileSpec, Step};

/// Every `files`/`write_files` entry of one apply, by path, in the order the apply meets
/// them: what lets a step compare a path with its *final* content across the run (a
/// `write_files` entry followed by an `append: true` one, a deferred entry for the same
/// path) instead of rewriting and re-appending it at every apply.
#[derive(Debug, Default)]
pub struct RunFiles<'c> {
    by_path: HashMap<&'c str, Vec<PlannedEntry<'c>>>,
}

#[derive(Debug)]
struct PlannedEntry<'c> {
    /// The position of its step in the apply (0, 1, …).
    step: usize,
    /// Its step has conditions: it may not run, so nothing after it is assumed.
    conditional: bool,
    spec: &'c FileSpec,
}

impl<'c> RunFiles<'c> {
    /// The plan of the steps an apply runs, in the order it runs them (`steps` yields each
    /// step's position and the step).
    pub fn plan(steps: impl IntoIterator<Item = (usize, &'c Step)>) -> RunFiles<'c> {
        let mut by_path: HashMap<&'c str, Vec<PlannedEntry<'c>>> = HashMap::new();
        for (index, step) in steps {
            for action in &step.actions {
                if let Action::Files(specs) = action {
                    for spec in specs {
                        by_path
                            .entry(spec.path.as_str())
                            .or_default()
                            .push(PlannedEntry {
                                step: index,
                                conditional: !step.conditions.is_empty(),
                                spec,
                            });
                    }
                }
            }
        }
        RunFiles { by_path }
    }

    /// The entries for `path` of the steps after step `step` that will surely run after it
    /// (up to the first step with conditions).
    fn later(&self, path: &str, step: usize) -> Vec<&'c FileSpec> {
        self.by_path
            .get(path)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e.step > step)
                    .take_while(|e| !e.conditional)
                    .map(|e| e.spec)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Apply file entries to `base` in order: a whole-file entry replaces it, an append adds
/// its content unless `base` already ends with it (appending the same block again would
/// grow the file at every apply).
fn fold<'s>(mut base: Vec<u8>, entries: impl IntoIterator<Item = &'s FileSpec>) -> Vec<u8> {
    for e in entries {
        if !e.append {
            base.clone_from(&e.content);
        } else if !e.content.is_empty() && !base.ends_with(&e.content) {
            base.extend_from_slice(&e.content);
        }
    }
    base
}

/// The entries of one step for a path are folded into the one content they leave there,
/// which is compared with the file once and written once (atomically). When later steps of
/// the same apply write or append to the path too, the file is first compared with the
/// content the whole apply leaves there: if it already holds that (with the last entry's
/// mode and owner), nothing is written by this step — a settled file is never rewritten
/// and re-appended. Whole files are written together at the end of the step (one
/// concurrent round of fsyncs, see [`fs::WriteBatch`]): an entry that cannot be resolved
/// (an unknown owner, a directory in the way) fails the step before any file is replaced.
pub fn files(cx: &mut StepCx, specs: &[FileSpec]) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    let mut batch = fs::WriteBatch::default();
    let mut paths: Vec<&AbsPath> = Vec::new();
    for spec in specs {
        if !paths.contains(&&spec.path) {
            paths.push(&spec.path);
        }
    }
    for path in paths {
        let entries: Vec<&FileSpec> = specs.iter().filter(|s| s.path == *path).collect();
        let mut ids = None;
        for e in &entries {
            ids = cx.resolve_ids(e.owner.as_ref(), e.group.as_ref())?;
        }
        let Some(last) = entries.last() else { continue };
        let mode = last.mode.map_or(0o644, |m| m.0);
        let real = path.as_str();
        if cx.host.meta(real)?.is_some_and(|m| m.is_dir) {
            return Err(StepError::msg(format!("{path} is a directory, not a file")));
        }
        let current = cx.host.read_opt(real)?;
        let only_appends = entries.iter().all(|e| e.append);
        let base = if only_appends {
            current.clone().unwrap_or_default()
        } else {
            Vec::new()
        };
        let local = fold(base, entries.iter().copied());
        if only_appends && current.is_none() && local.is_empty() {
            continue;
        }
        let later = cx
            .run_files
            .map(|plan| plan.later(real, cx.step_index))
            .unwrap_or_default();
        if let Some(last_later) = later.last() {
            let settled = fold(local.clone(), later.iter().copied());
            let later_mode = last_later.mode.map_or(0o644, |m| m.0);
            let later_ids = cx.resolve_ids(last_later.owner.as_ref(), last_later.group.as_ref());
            if let Ok(Some(later_ids)) = later_ids {
                if current.as_deref() == Some(settled.as_slice())
                    && file_delta(cx, path, &settled, later_mode, Some(later_ids))?.is_none()
                {
                    continue;
                }
            }
        }
        let grown = only_appends
            && current
                .as_deref()
                .is_some_and(|c| local.len() > c.len() && local.starts_with(c));
        if let Some(c) = converge_queued(cx, &mut batch, path, &local, mode, ids)? {
            match (&current, grown) {
                (Some(c0), true) => changes.push(format!(
                    "appended {} bytes to {path}",
                    local.len() - c0.len()
                )),
                _ => changes.push(c),
            }
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
