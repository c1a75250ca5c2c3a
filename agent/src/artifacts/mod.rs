//! The artifact cache: files keyed by their sha256 under `<state>/artifacts/`.
//!
//! Downloads stream through a SHA-256 hasher into a partial file (one pass; nothing is read
//! back), resume an interrupted transfer with an HTTP `Range` request, retry a bounded number
//! of times, and report progress (bytes, total, rate). A digest mismatch deletes the partial
//! file and names both digests. Only verified files ever appear under their digest, so a
//! cache hit needs no network at all. Air-gap bundles pre-seed the cache ([`bundle`]).

pub mod bundle;
pub mod hub;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::host::Host;

/// Read and write buffer size for streaming.
const BUF: usize = 256 * 1024;

/// A file Cairn needs, identified by its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    pub url: String,
    pub sha256: [u8; 32],
}

impl ArtifactRef {
    pub fn hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("sha256 mismatch for {url}: expected {expected}, got {actual}; the partial file was deleted")]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("downloading {url} failed after {attempts} attempt(s): {last}")]
    Exhausted {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] crate::host::fs::FsError),
    #[error("{0}")]
    Invalid(String),
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ArtifactError + 'a {
    move |source| ArtifactError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Progress of one download.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub bytes: u64,
    pub total: Option<u64>,
    /// Bytes per second since this attempt started.
    pub rate: f64,
}

/// How downloads behave; the defaults suit an edge link.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub attempts: u32,
    pub connect_timeout: Duration,
    /// Longest wait for any one network operation (connect, headers, each read of the
    /// body) before the attempt is abandoned; `None` waits forever.
    pub idle_timeout: Option<Duration>,
    /// First pause between attempts; doubled each time.
    pub backoff: Duration,
    /// Minimum interval between progress reports.
    pub progress_every: Duration,
    /// CA certificates (PEM) trusted besides the system's: a site mirror's
    /// ([`crate::packs::Settings::ca_certs`]).
    pub ca_certs: Vec<String>,
    /// The hub whose mirror serves artifacts by digest, and the policy for falling back to
    /// the upstream URL ([`hub::ArtifactSource`]); `None`: upstream only.
    pub hub: Option<hub::HubSource>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            attempts: 5,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Some(Duration::from_secs(60)),
            backoff: Duration::from_secs(1),
            progress_every: Duration::from_millis(500),
            ca_certs: Vec::new(),
            hub: None,
        }
    }
}

/// The cache. Every file operation in it goes through a [`Host`] rooted at the cache
/// directory, so nothing planted inside the cache (a link at a partial file's name, a link
/// in place of `sha256/`) can make a write land outside it.
pub struct ArtifactCache {
    dir: PathBuf,
    fs: Host,
}

impl ArtifactCache {
    /// A cache rooted at `dir` (e.g. `/var/lib/cairn/artifacts`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        ArtifactCache {
            fs: Host::system(&dir),
            dir,
        }
    }

    /// The cache at `dir` inside a target (e.g. `/var/lib/cairn/artifacts`): the directory
    /// is created and resolved through the target's seam (inside its root, links budgeted),
    /// then used by its resolved host path.
    pub fn in_target(host: &Host, dir: &str) -> Result<Self, ArtifactError> {
        host.create_dir_all(dir)?;
        Ok(ArtifactCache::new(host.resolved_path(dir)?))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a verified artifact with this digest lives (a host path, for reading it and
    /// handing it to tar).
    pub fn path_of(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join("sha256").join(hex::encode(sha256))
    }

    fn rel_of(sha256: &[u8; 32]) -> String {
        format!("/sha256/{}", hex::encode(sha256))
    }

    fn partial_of(sha256: &[u8; 32]) -> String {
        format!("/partial/{}.part", hex::encode(sha256))
    }

    /// The cached file, if present.
    pub fn get(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        self.fs
            .is_file(&Self::rel_of(sha256))
            .then(|| self.path_of(sha256))
    }

    /// Open the cached file for reading, if present.
    pub fn open(&self, sha256: &[u8; 32]) -> Result<Option<File>, ArtifactError> {
        self.fs
            .open_read(&Self::rel_of(sha256))
            .map_err(ArtifactError::from)
    }

    /// The cache directory itself is configuration: create it by path (0755) if missing.
    fn ensure_dir(&self) -> Result<(), ArtifactError> {
        std::fs::create_dir_all(&self.dir).map_err(io("creating", &self.dir))
    }

    /// Move an already verified file (a name inside the cache) under its digest.
    fn commit(&self, from: &str, sha256: &[u8; 32]) -> Result<PathBuf, ArtifactError> {
        self.fs
            .rename(from, &Self::rel_of(sha256))
            .map_err(ArtifactError::from)?;
        Ok(self.path_of(sha256))
    }

    /// Verify a local file and copy it into the cache (air-gap bundles, USB sticks).
    pub fn import_file(&self, file: &Path, sha256: &[u8; 32]) -> Result<PathBuf, ArtifactError> {
        if let Some(p) = self.get(sha256) {
            return Ok(p);
        }
        self.ensure_dir()?;
        // A fresh temp file (random name, O_EXCL|O_NOFOLLOW) beside its final name, renamed
        // there once verified.
        let mut staged = self.fs.stage(&Self::rel_of(sha256))?;
        let shown = staged.shown().to_path_buf();
        let mut src = File::open(file).map_err(io("opening", file))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = src.read(&mut buf).map_err(io("reading", file))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            staged
                .file()
                .write_all(&buf[..n])
                .map_err(io("writing", &shown))?;
        }
        let got: [u8; 32] = hasher.finalize().into();
        if &got != sha256 {
            return Err(ArtifactError::Mismatch {
                url: file.display().to_string(),
                expected: hex::encode(sha256),
                actual: hex::encode(got),
            });
        }
        staged.commit(0o644, None)?;
        Ok(self.path_of(sha256))
    }

    /// Fetch `artifact` (or return the cached copy), verifying its sha256 while streaming.
    pub fn fetch(
        &self,
        artifact: &ArtifactRef,
        opts: &FetchOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<PathBuf, ArtifactError> {
        if let Some(p) = self.get(&artifact.sha256) {
            return Ok(p);
        }
        self.ensure_dir()?;
        // The partial file keeps its name across runs (an interrupted download resumes from
        // it); it is opened without following a link, created 0600 if missing.
        let partial = Self::partial_of(&artifact.sha256);
        let mut file = self
            .fs
            .open_rw(&partial, 0o600)
            .map_err(ArtifactError::from)?;
        let shown = self.fs.shown(&partial);
        let r = match opts.hub.as_ref() {
            Some(hub) if hub.policy != hub::ArtifactSource::Upstream => {
                match from_hub(hub, artifact, &mut file, &shown, opts, progress) {
                    Ok(d) => Ok(d),
                    Err(e) if hub.policy == hub::ArtifactSource::HubOnly => Err(e),
                    Err(e) => {
                        // Whatever the hub sent and was verified so far stays in the
                        // partial file: upstream resumes from it (same digest, same bytes).
                        tracing::warn!(
                            url = %artifact.url,
                            "the hub could not serve sha256 {}: {e}; fetching from upstream",
                            artifact.hex()
                        );
                        download_to(
                            &artifact.url,
                            &mut file,
                            &shown,
                            Some(&artifact.sha256),
                            opts,
                            progress,
                        )
                    }
                }
            }
            _ => download_to(
                &artifact.url,
                &mut file,
                &shown,
                Some(&artifact.sha256),
                opts,
                progress,
            ),
        };
        drop(file);
        if let Err(e) = r {
            if matches!(e, ArtifactError::Mismatch { .. }) {
                let _ = self.fs.remove_file(&partial);
            }
            return Err(e);
        }
        self.commit(&partial, &artifact.sha256)
    }
}

/// Download `artifact` from the hub's mirror into the partial `file` (resuming, verified
/// while streaming, at most two attempts: the upstream URL is the fallback).
fn from_hub(
    hub: &hub::HubSource,
    artifact: &ArtifactRef,
    file: &mut File,
    shown: &Path,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<[u8; 32], ArtifactError> {
    let client = hub
        .client(opts.connect_timeout, opts.idle_timeout)
        .map_err(ArtifactError::Invalid)?;
    let hub_opts = FetchOptions {
        attempts: opts.attempts.min(2),
        ..opts.clone()
    };
    download_with(
        &client,
        &hub.artifact_url(&artifact.hex()),
        Some(&hub.authorization()),
        file,
        shown,
        Some(&artifact.sha256),
        &hub_opts,
        progress,
    )
}

/// Download `url` into the open `file` (`shown` names it in messages) — resuming from what
/// an earlier attempt left in it, retrying with backoff — hashing while streaming. With
/// `expected`, a different digest empties the file and fails naming both digests. Returns
/// the digest; the complete file is synced, for the caller to move into place.
pub fn download_to(
    url: &str,
    file: &mut File,
    shown: &Path,
    expected: Option<&[u8; 32]>,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<[u8; 32], ArtifactError> {
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(opts.connect_timeout)
        // The blocking client applies this to connecting and to each read of the body,
        // so a stalled transfer is abandoned (and resumed) while a slow one goes on.
        .timeout(opts.idle_timeout);
    for pem in &opts.ca_certs {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| ArtifactError::Invalid(format!("a mirror CA certificate: {e}")))?;
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    let client = builder
        .build()
        .map_err(|e| ArtifactError::Invalid(format!("building the HTTP client: {e}")))?;
    download_with(&client, url, None, file, shown, expected, opts, progress)
}

/// [`download_to`] with a given client and `Authorization` header value.
#[allow(clippy::too_many_arguments)]
fn download_with(
    client: &reqwest::blocking::Client,
    url: &str,
    auth: Option<&str>,
    file: &mut File,
    shown: &Path,
    expected: Option<&[u8; 32]>,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<[u8; 32], ArtifactError> {
    let mut last = String::new();
    let mut delay = opts.backoff;
    // The body's length as the server last stated it: a resumed range that states another
    // one is a different file, and is never spliced onto what is already here.
    let mut known_total = None;
    for attempt_no in 1..=opts.attempts {
        match attempt(
            client,
            url,
            auth,
            file,
            shown,
            expected,
            opts,
            progress,
            &mut known_total,
        ) {
            Ok(digest) => return Ok(digest),
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Retry(msg)) => {
                tracing::warn!(%url, attempt = attempt_no, "download interrupted: {msg}");
                last = msg;
                if attempt_no < opts.attempts {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
    Err(ArtifactError::Exhausted {
        url: url.to_string(),
        attempts: opts.attempts,
        last,
    })
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], ArtifactError> {
    let f = File::open(path).map_err(io("reading", path))?;
    sha256_reader(f, path)
}

/// SHA-256 of an open file (`shown` names it in messages), streamed.
pub fn sha256_reader(mut f: impl Read, shown: &Path) -> Result<[u8; 32], ArtifactError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = f.read(&mut buf).map_err(io("reading", shown))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

#[allow(clippy::too_many_arguments)]
fn attempt(
    client: &reqwest::blocking::Client,
    url: &str,
    auth: Option<&str>,
    file: &mut File,
    partial: &Path,
    expected: Option<&[u8; 32]>,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
    known_total: &mut Option<u64>,
) -> Result<[u8; 32], AttemptError> {
    let have = file
        .metadata()
        .map_err(|e| AttemptError::Fatal(io("reading", partial)(e)))?
        .len();
    let mut req = client.get(url);
    if let Some(a) = auth {
        req = req.header(reqwest::header::AUTHORIZATION, a);
    }
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().map_err(|e| AttemptError::Retry(e.to_string()))?;
    let status = resp.status();
    let mut hasher = Sha256::new();
    let mut offset = 0;
    if status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0 {
        // Resume only when the server continues exactly where the partial file ends, and
        // the whole is as long as it said before.
        let range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok());
        let start = range.and_then(content_range_start);
        let range_total = range.and_then(content_range_total);
        if let (Some(before), Some(now)) = (*known_total, range_total) {
            if before != now {
                restart(file, partial)?;
                *known_total = Some(now);
                return Err(AttemptError::Retry(format!(
                    "the file on the server changed length ({before} bytes, now {now}); \
                     starting over"
                )));
            }
        }
        if start == Some(have) {
            hash_prefix(file, have, &mut hasher)
                .map_err(|e| AttemptError::Fatal(io("reading", partial)(e)))?;
            offset = have;
        } else {
            restart(file, partial)?;
            return Err(AttemptError::Retry(format!(
                "server resumed at {start:?}, not at byte {have}; starting over"
            )));
        }
    } else if status.is_success() {
        // A full body (the server ignored Range, or nothing was there): start from zero.
        restart(file, partial)?;
    } else if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        restart(file, partial)?;
        return Err(AttemptError::Retry(
            "server refused the range; starting over".into(),
        ));
    } else if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(AttemptError::Retry(format!("server answered {status}")));
    } else {
        return Err(AttemptError::Fatal(ArtifactError::Invalid(format!(
            "{url} answered {status}"
        ))));
    }
    let total = resp.content_length().map(|l| l + offset);
    if total.is_some() {
        *known_total = total;
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| AttemptError::Fatal(io("seeking", partial)(e)))?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut bytes = offset;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = file.sync_data();
                return Err(AttemptError::Retry(format!(
                    "reading the body at byte {bytes}: {e}"
                )));
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| AttemptError::Fatal(io("writing", partial)(e)))?;
        bytes += n as u64;
        if last_report.elapsed() >= opts.progress_every {
            last_report = Instant::now();
            let secs = started.elapsed().as_secs_f64().max(1e-6);
            progress(Progress {
                bytes,
                total,
                rate: (bytes - offset) as f64 / secs,
            });
        }
    }
    if let Some(t) = total {
        if bytes < t {
            let _ = file.sync_data();
            return Err(AttemptError::Retry(format!(
                "connection closed at byte {bytes} of {t}"
            )));
        }
    }
    let got: [u8; 32] = hasher.finalize().into();
    if let Some(want) = expected.filter(|w| **w != got) {
        // Emptied: what was downloaded is wrong and must not be resumed from.
        let _ = file.set_len(0);
        return Err(AttemptError::Fatal(ArtifactError::Mismatch {
            url: url.to_string(),
            expected: hex::encode(want),
            actual: hex::encode(got),
        }));
    }
    file.sync_all()
        .map_err(|e| AttemptError::Fatal(io("syncing", partial)(e)))?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    progress(Progress {
        bytes,
        total: Some(bytes),
        rate: (bytes - offset) as f64 / secs,
    });
    Ok(got)
}

enum AttemptError {
    Retry(String),
    Fatal(ArtifactError),
}

fn restart(file: &mut File, path: &Path) -> Result<(), AttemptError> {
    file.set_len(0)
        .and_then(|_| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .map_err(|e| AttemptError::Fatal(io("truncating", path)(e)))
}

/// Feed the first `len` bytes of the partial file to the hasher (the only re-read, and
/// only on resume).
fn hash_prefix(file: &mut File, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut buf = vec![0u8; BUF];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "partial file shorter than expected",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// The total length in a `Content-Range: bytes START-END/TOTAL` header (`None` for `*`).
fn content_range_total(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .rsplit_once('/')?
        .1
        .trim()
        .parse()
        .ok()
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// A text that is not a sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a sha256 (64 hexadecimal characters)")]
pub struct BadSha256(pub String);

/// Parse a 64-character hex digest.
pub fn parse_sha256(s: &str) -> Result<[u8; 32], BadSha256> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).map_err(|_| BadSha256(s.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_total("bytes 100-199/200"), Some(200));
        assert_eq!(content_range_total("bytes 100-199/*"), None);
        assert!(parse_sha256("zz").is_err());
    }
}
