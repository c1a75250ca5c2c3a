//! `files`, `directories` and `downloads`: content-compared, atomic, owner-aware.

use std::io::{Read, Write};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{converge_file, Changes, StepCx, StepError};
use crate::host::fs;
use crate::model::{DirSpec, DownloadSpec, FileSpec};

pub fn files(cx: &mut StepCx, specs: &[FileSpec]) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    for spec in specs {
        let mode = spec.mode.map_or(0o644, |m| m.0);
        let ids = cx.resolve_ids(spec.owner.as_ref(), spec.group.as_ref())?;
        if spec.append {
            let real = cx.path(&spec.path);
            let current = fs::read_opt(&real)?.unwrap_or_default();
            // Appending the same block again would grow the file on every run: skip it
            // when the file already ends with it.
            if !spec.content.is_empty() && !current.ends_with(&spec.content) {
                changes.push(format!(
                    "appended {} bytes to {}",
                    spec.content.len(),
                    spec.path
                ));
                if !cx.dry_run {
                    fs::append(&real, &spec.content, mode)?;
                }
            }
            if let Some(c) = converge_meta(cx, &real, &spec.path, mode, ids)? {
                changes.push(c);
            }
            continue;
        }
        if let Some(c) = converge_file(cx, &spec.path, &spec.content, mode, ids)? {
            changes.push(c);
        }
    }
    Ok(changes)
}

fn converge_meta(
    cx: &StepCx,
    real: &std::path::Path,
    shown: &crate::model::AbsPath,
    mode: u32,
    ids: Option<(u32, u32)>,
) -> Result<Option<String>, StepError> {
    let Some(m) = fs::meta(real) else {
        return Ok(None);
    };
    let mut what = Vec::new();
    if m.mode != mode {
        what.push(format!("mode {mode:04o}"));
        if !cx.dry_run {
            fs::set_mode(real, mode)?;
        }
    }
    if let Some((u, g)) = ids {
        if m.uid != u || m.gid != g {
            what.push(format!("owner {u}:{g}"));
            if !cx.dry_run {
                fs::set_owner(real, u, g)?;
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
        let real = cx.path(&spec.path);
        match fs::meta(&real) {
            Some(m) if !m.is_dir => {
                return Err(StepError::msg(format!(
                    "{} exists and is not a directory",
                    spec.path
                )))
            }
            Some(_) => {
                if let Some(c) = converge_meta(cx, &real, &spec.path, mode, ids)? {
                    changes.push(c);
                }
            }
            None => {
                changes.push(format!("created directory {} (mode {mode:04o})", spec.path));
                if !cx.dry_run {
                    fs::create_dir(&real, mode)?;
                    if let Some((u, g)) = ids {
                        fs::set_owner(&real, u, g)?;
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
        let real = cx.path(&spec.path);
        let present = real.is_file();
        let up_to_date = match (&spec.sha256, present) {
            (Some(want), true) => sha256_file(&real)? == *want,
            // Without a digest an existing file is kept: it cannot be compared.
            (None, true) => true,
            (_, false) => false,
        };
        if up_to_date {
            if let Some(c) = converge_meta(cx, &real, &spec.path, mode, ids)? {
                changes.push(c);
            }
            continue;
        }
        changes.push(format!("downloaded {} to {}", spec.url, spec.path));
        if cx.dry_run {
            continue;
        }
        // yip's `timeout: 0` means no time limit (it used to become 1 s here).
        let timeout = match spec.timeout_secs {
            Some(0) => None,
            secs => Some(Duration::from_secs(secs.unwrap_or(600))),
        };
        let mut last_err = String::new();
        let mut done = false;
        for attempt in 1..=ATTEMPTS {
            match fetch_verified(&spec.url, &real, spec.sha256.as_ref(), timeout, mode, ids) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(FetchError::Mismatch(m)) => return Err(StepError::msg(m)),
                Err(FetchError::Other(e)) => {
                    last_err = e;
                    tracing::warn!(url = %spec.url, attempt, "download failed: {last_err}");
                    if attempt < ATTEMPTS {
                        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                    }
                }
            }
        }
        if !done {
            return Err(StepError::msg(format!(
                "downloading {} failed after {ATTEMPTS} attempts: {last_err}",
                spec.url
            )));
        }
    }
    Ok(changes)
}

enum FetchError {
    Mismatch(String),
    Other(String),
}

/// Stream the body into a temp file next to the target, hashing as it goes; rename only
/// when the digest matches. A mismatch deletes the temp file and names both digests.
fn fetch_verified(
    url: &str,
    dest: &std::path::Path,
    want: Option<&[u8; 32]>,
    timeout: Option<Duration>,
    mode: u32,
    ids: Option<(u32, u32)>,
) -> Result<(), FetchError> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .timeout(timeout)
        .build()
        .map_err(|e| FetchError::Other(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| FetchError::Other(e.to_string()))?;
    fs::ensure_parents(dest).map_err(|e| FetchError::Other(e.to_string()))?;
    let dir = dest.parent().unwrap_or(std::path::Path::new("/"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cairn-download-")
        .tempfile_in(dir)
        .map_err(|e| FetchError::Other(format!("creating temp file in {}: {e}", dir.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = resp
            .read(&mut buf)
            .map_err(|e| FetchError::Other(format!("reading body: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| FetchError::Other(format!("writing temp file: {e}")))?;
    }
    let got: [u8; 32] = hasher.finalize().into();
    if let Some(want) = want {
        if &got != want {
            return Err(FetchError::Mismatch(format!(
                "sha256 mismatch for {url}: expected {}, got {}",
                hex::encode(want),
                hex::encode(got)
            )));
        }
    }
    let f = tmp.as_file();
    if let Some((u, g)) = ids {
        std::os::unix::fs::fchown(f, Some(u), Some(g))
            .map_err(|e| FetchError::Other(e.to_string()))?;
    }
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| FetchError::Other(e.to_string()))?;
    f.sync_all().map_err(|e| FetchError::Other(e.to_string()))?;
    tmp.persist(dest)
        .map_err(|e| FetchError::Other(format!("renaming into {}: {e}", dest.display())))?;
    Ok(())
}

fn sha256_file(path: &std::path::Path) -> Result<[u8; 32], StepError> {
    let mut f = std::fs::File::open(path).map_err(fs::err("reading", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(fs::err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}
