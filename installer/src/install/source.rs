//! Where the image comes from: a local file or an http(s) URL, hashed (sha256) as its bytes
//! are read, and decompressed while streaming when it is gzip or zstd (detected by magic
//! number, not by name). Also finds a digest published next to the image (`IMAGE.sha256`).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Errors opening or reading the image.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("opening image {0}: {1}")]
    Open(String, io::Error),
    #[error("fetching image {0}: {1}")]
    Http(String, String),
    #[error("fetching image {0}: the server answered {1}")]
    Status(String, reqwest::StatusCode),
    #[error("reading {0}: {1}")]
    Sidecar(String, String),
}

/// Compression of the image, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else {
            Self::None
        }
    }
}

/// Running sha256 and byte count of the raw (possibly compressed) image bytes.
#[derive(Clone, Default)]
pub struct Tally {
    hash: Arc<Mutex<Sha256>>,
    bytes: Arc<AtomicU64>,
}

impl Tally {
    /// Bytes of the source read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The hex digest of everything read so far.
    pub fn hex(&self) -> String {
        let h = self.hash.lock().map(|h| h.clone()).unwrap_or_default();
        hex::encode(h.finalize())
    }
}

struct Hashing<R> {
    inner: R,
    tally: Tally,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.tally.hash.lock() {
            h.update(&buf[..n]);
        }
        self.tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened image.
pub struct Image {
    /// The name to show (path or URL).
    pub name: String,
    /// Length of the raw source in bytes, when known (file size, Content-Length).
    pub source_len: Option<u64>,
    /// The local file, when the source is one (so it can be verified before writing).
    pub file: Option<File>,
    url: Option<reqwest::blocking::Response>,
}

/// Is `spec` a URL rather than a path?
pub fn is_url(spec: &str) -> bool {
    spec.starts_with("https://") || spec.starts_with("http://")
}

fn client() -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        // Images are large: no overall deadline; a stalled connection still fails on TCP.
        .timeout(None)
        .user_agent(concat!("cairn-installer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// Open a local file or start fetching a URL.
pub fn open(spec: &str) -> Result<Image, SourceError> {
    if is_url(spec) {
        let client = client().map_err(|e| SourceError::Http(spec.into(), e))?;
        let resp = client
            .get(spec)
            .send()
            .map_err(|e| SourceError::Http(spec.into(), error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(SourceError::Status(spec.into(), resp.status()));
        }
        Ok(Image {
            name: spec.into(),
            source_len: resp.content_length(),
            file: None,
            url: Some(resp),
        })
    } else {
        let file = File::open(spec).map_err(|e| SourceError::Open(spec.into(), e))?;
        let meta = file
            .metadata()
            .map_err(|e| SourceError::Open(spec.into(), e))?;
        if meta.is_dir() {
            return Err(SourceError::Open(
                spec.into(),
                io::Error::other("is a directory"),
            ));
        }
        Ok(Image {
            name: spec.into(),
            source_len: Some(meta.len()),
            file: Some(file),
            url: None,
        })
    }
}

/// A digest published next to the image: `IMAGE.sha256` holding `HEX` or `HEX  NAME`.
/// `Ok(None)` when there is none.
pub fn sidecar_digest(spec: &str) -> Result<Option<String>, SourceError> {
    let side = format!("{spec}.sha256");
    let text = if is_url(spec) {
        let client = client().map_err(|e| SourceError::Sidecar(side.clone(), e))?;
        let resp = match client.get(&side).send() {
            Ok(r) => r,
            // The image itself will be fetched next and give the real error.
            Err(_) => return Ok(None),
        };
        if !resp.status().is_success() {
            return Ok(None);
        }
        let mut body = String::new();
        resp.take(4096)
            .read_to_string(&mut body)
            .map_err(|e| SourceError::Sidecar(side.clone(), e.to_string()))?;
        body
    } else {
        match std::fs::read_to_string(&side) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SourceError::Sidecar(side, e.to_string())),
        }
    };
    let word = text.split_whitespace().next().unwrap_or("");
    match normalize_digest(word) {
        Some(d) => Ok(Some(d)),
        None => Err(SourceError::Sidecar(
            side,
            "does not start with a sha256 (64 hex digits)".into(),
        )),
    }
}

/// Lower-case a sha256 given as 64 hex digits (an optional `sha256:` prefix is allowed).
pub fn normalize_digest(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

impl Image {
    /// The raw byte stream (hashed into `tally`), decompressed when compressed.
    pub fn into_reader(
        self,
        tally: &Tally,
    ) -> Result<(Box<dyn Read + Send>, Compression), SourceError> {
        let raw: Box<dyn Read + Send> = match (self.file, self.url) {
            (Some(f), _) => Box::new(f),
            (None, Some(r)) => Box::new(r),
            (None, None) => {
                return Err(SourceError::Open(self.name, io::Error::other("no source")))
            }
        };
        let hashing = Hashing {
            inner: raw,
            tally: tally.clone(),
        };
        let mut buf = BufReader::with_capacity(1 << 20, hashing);
        let head = buf
            .fill_buf()
            .map_err(|e| SourceError::Open(self.name.clone(), e))?;
        let kind = Compression::sniff(head);
        let reader: Box<dyn Read + Send> = match kind {
            Compression::None => Box::new(buf),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
            Compression::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(buf)
                    .map_err(|e| SourceError::Open(self.name.clone(), io::Error::other(e)))?,
            ),
            Compression::Xz => {
                return Err(SourceError::Open(
                    self.name,
                    io::Error::other(
                        "xz-compressed images are not supported; use gzip or zstd (zstd -T0 IMAGE), or decompress it first",
                    ),
                ))
            }
        };
        Ok((reader, kind))
    }
}

/// The error and its causes on one line (reqwest hides the useful part in `source()`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Hash a local file from its start, reporting bytes hashed; leaves the offset at the end.
pub fn hash_file(file: &mut File, mut progress: impl FnMut(u64)) -> io::Result<String> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex::encode(h.finalize()))
}
