//! Where the image comes from: a local file or an http(s) URL, hashed (sha256) as its bytes
//! are read, and decompressed while streaming when it is gzip or zstd (detected by magic
//! number, not by name). Also finds a digest published next to the image (`IMAGE.sha256`).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
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

/// Running sha256 and byte count of the raw (possibly compressed) image bytes. The hash is
/// computed on its own thread (bytes are handed over in a bounded queue), so reading,
/// hashing and writing the image overlap: one SHA-256 stream (about 1.4 GB/s with SHA-NI)
/// is otherwise as slow as a fast disk.
///
/// The hasher hands its buffers back once hashed (`spare`), so a copy lands in memory that
/// is already mapped: a fresh multi-MiB allocation per read costs a page fault per 4 KiB,
/// which was as expensive as the copy itself.
#[derive(Clone)]
pub struct Tally {
    bytes: Arc<AtomicU64>,
    tx: Arc<Mutex<Option<SyncSender<Vec<u8>>>>>,
    spare: Arc<Mutex<Receiver<Vec<u8>>>>,
    hasher: Arc<Mutex<Option<JoinHandle<String>>>>,
    digest: Arc<Mutex<Option<String>>>,
}

/// Chunks queued for the hasher.
const HASH_QUEUE: usize = 8;

impl Default for Tally {
    fn default() -> Self {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(HASH_QUEUE);
        let (spare_tx, spare_rx) = mpsc::channel::<Vec<u8>>();
        let hasher = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for chunk in rx {
                h.update(&chunk);
                let _ = spare_tx.send(chunk);
            }
            hex::encode(h.finalize())
        });
        Self {
            bytes: Arc::default(),
            tx: Arc::new(Mutex::new(Some(tx))),
            spare: Arc::new(Mutex::new(spare_rx)),
            hasher: Arc::new(Mutex::new(Some(hasher))),
            digest: Arc::default(),
        }
    }
}

impl Tally {
    /// Bytes of the source read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn feed(&self, data: &[u8]) {
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut chunk = self
            .spare
            .lock()
            .ok()
            .and_then(|rx| rx.try_recv().ok())
            .unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(data);
        if let Ok(tx) = self.tx.lock() {
            if let Some(tx) = tx.as_ref() {
                let _ = tx.send(chunk);
            }
        }
    }

    /// The hex digest of everything read. Ends the tally: call it once reading is over.
    pub fn hex(&self) -> String {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.hasher.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let d = handle.join().unwrap_or_default();
            if let Ok(mut slot) = self.digest.lock() {
                *slot = Some(d);
            }
        }
        self.digest
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .unwrap_or_default()
    }
}

struct Hashing<R> {
    inner: R,
    tally: Tally,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally.feed(&buf[..n]);
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

// String error: carried by `SourceError::Http`/`Sidecar`, which name the source.
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
            .map_err(|e| SourceError::Http(spec.into(), cairn_cli::report::error_chain(&e)))?;
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
