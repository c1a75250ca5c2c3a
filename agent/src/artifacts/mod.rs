//! The artifact cache: files keyed by their sha256 under `<state>/artifacts/`.
//!
//! Downloads stream through a SHA-256 hasher into a partial file (one pass; nothing is read
//! back), resume an interrupted transfer with an HTTP `Range` request, retry a bounded number
//! of times, and report progress (bytes, total, rate). A digest mismatch deletes the partial
//! file and names both digests. Only verified files ever appear under their digest, so a
//! cache hit needs no network at all. Air-gap bundles pre-seed the cache ([`bundle`]).

pub mod bundle;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

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
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            attempts: 5,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Some(Duration::from_secs(60)),
            backoff: Duration::from_secs(1),
            progress_every: Duration::from_millis(500),
        }
    }
}

pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// A cache rooted at `dir` (e.g. `/var/lib/cairn/artifacts`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ArtifactCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a verified artifact with this digest lives.
    pub fn path_of(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir.join("sha256").join(hex::encode(sha256))
    }

    fn partial_of(&self, sha256: &[u8; 32]) -> PathBuf {
        self.dir
            .join("partial")
            .join(format!("{}.part", hex::encode(sha256)))
    }

    /// The cached file, if present.
    pub fn get(&self, sha256: &[u8; 32]) -> Option<PathBuf> {
        let p = self.path_of(sha256);
        p.is_file().then_some(p)
    }

    /// Move an already verified file into the cache under its digest.
    fn commit(&self, from: &Path, sha256: &[u8; 32]) -> Result<PathBuf, ArtifactError> {
        let dest = self.path_of(sha256);
        let dir = dest.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        std::fs::rename(from, &dest).map_err(io("moving into the cache", &dest))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(dest)
    }

    /// Verify a local file and copy it into the cache (air-gap bundles, USB sticks).
    pub fn import_file(&self, file: &Path, sha256: &[u8; 32]) -> Result<PathBuf, ArtifactError> {
        if let Some(p) = self.get(sha256) {
            return Ok(p);
        }
        let tmp_dir = self.dir.join("partial");
        std::fs::create_dir_all(&tmp_dir).map_err(io("creating", &tmp_dir))?;
        let tmp = tmp_dir.join(format!("{}.import", hex::encode(sha256)));
        let mut src = File::open(file).map_err(io("opening", file))?;
        let mut dst = File::create(&tmp).map_err(io("creating", &tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; BUF];
        loop {
            let n = src.read(&mut buf).map_err(io("reading", file))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            dst.write_all(&buf[..n]).map_err(io("writing", &tmp))?;
        }
        let got: [u8; 32] = hasher.finalize().into();
        if &got != sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(ArtifactError::Mismatch {
                url: file.display().to_string(),
                expected: hex::encode(sha256),
                actual: hex::encode(got),
            });
        }
        dst.sync_all().map_err(io("syncing", &tmp))?;
        self.commit(&tmp, sha256)
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
        let partial = self.partial_of(&artifact.sha256);
        download_to(
            &artifact.url,
            &partial,
            Some(&artifact.sha256),
            opts,
            progress,
        )?;
        self.commit(&partial, &artifact.sha256)
    }
}

/// Download `url` into `partial` — resuming what an earlier attempt left there, retrying
/// with backoff — hashing while streaming. With `expected`, a different digest deletes the
/// partial file and fails naming both digests. Returns the digest; the complete, synced
/// file is left at `partial` for the caller to move into place.
pub fn download_to(
    url: &str,
    partial: &Path,
    expected: Option<&[u8; 32]>,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<[u8; 32], ArtifactError> {
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(opts.connect_timeout)
        // The blocking client applies this to connecting and to each read of the body,
        // so a stalled transfer is abandoned (and resumed) while a slow one goes on.
        .timeout(opts.idle_timeout)
        .build()
        .map_err(|e| ArtifactError::Invalid(format!("building the HTTP client: {e}")))?;
    if let Some(dir) = partial.parent() {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    let mut last = String::new();
    let mut delay = opts.backoff;
    for attempt_no in 1..=opts.attempts {
        match attempt(&client, url, partial, expected, opts, progress) {
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
    let mut f = File::open(path).map_err(io("reading", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = f.read(&mut buf).map_err(io("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn attempt(
    client: &reqwest::blocking::Client,
    url: &str,
    partial: &Path,
    expected: Option<&[u8; 32]>,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<[u8; 32], AttemptError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(partial)
        .map_err(|e| AttemptError::Fatal(io("opening", partial)(e)))?;
    let have = file
        .metadata()
        .map_err(|e| AttemptError::Fatal(io("reading", partial)(e)))?
        .len();
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().map_err(|e| AttemptError::Retry(e.to_string()))?;
    let status = resp.status();
    let mut hasher = Sha256::new();
    let mut offset = 0;
    if status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0 {
        // Resume only when the server continues exactly where the partial file ends.
        let start = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range_start);
        if start == Some(have) {
            hash_prefix(&mut file, have, &mut hasher)
                .map_err(|e| AttemptError::Fatal(io("reading", partial)(e)))?;
            offset = have;
        } else {
            restart(&mut file, partial)?;
            return Err(AttemptError::Retry(format!(
                "server resumed at {start:?}, not at byte {have}; starting over"
            )));
        }
    } else if status.is_success() {
        // A full body (the server ignored Range, or nothing was there): start from zero.
        restart(&mut file, partial)?;
    } else if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        restart(&mut file, partial)?;
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
        drop(file);
        let _ = std::fs::remove_file(partial);
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

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// Parse a 64-character hex digest.
pub fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out)
        .map_err(|_| format!("`{s}` is not a sha256 (64 hexadecimal characters)"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        assert!(parse_sha256("zz").is_err());
    }
}
