//! The hub as the fleet's artifact mirror (docs/kubernetes.md "The hub as the fleet's
//! mirror").
//!
//! Files are kept content-addressed under `<data dir>/mirror/sha256/<hex>`: downloaded into
//! `mirror/tmp/`, hashed while streaming, and renamed under their digest only once the
//! digest matches — so a file under its name is always verified, and a crash leaves at most
//! a temp file (removed at the next start).
//!
//! Where a digest comes from upstream is learnt from the published profiles: [`Mirror::resolve`]
//! turns a profile into every file it needs on amd64 and arm64 — the files it lists, and the
//! pack files of its `kubernetes`/`cni` layers through the catalog of [`cairn_packs`] (with
//! the hub's own mirror settings), their digests pinned or read from the release's checksum
//! file — and records `url → sha256` in `mirror/index.json`. A request for a digest the hub
//! does not hold downloads it from that URL once: concurrent requests for the same digest
//! wait for the one download (single flight). A digest no referenced profile (or imported
//! bundle) names is never fetched: the hub is not an open proxy.
//!
//! Storage is bounded ([`MirrorConfig::max_bytes`]) and garbage-collected ([`Mirror::gc`]) by
//! what published profiles still reference: the latest version of every profile, and every
//! version an assignment pins.

pub mod cli;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_packs::{Mirrors, Verify};
use cairn_proto::profile::{Arch, Layer, Profile};
use cairn_proto::protocol::MirroredArtifact;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use crate::store::Store;

/// Default bound of the mirror's storage: 50 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 50 << 30;
/// Longest checksum file read.
const MAX_CHECKSUM_FILE: usize = 1024 * 1024;
/// The arches every profile is resolved for.
pub const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

/// The hub's pack settings: the same JSON as the agent's `/etc/cairn/packs.json` — mirrors
/// of the upstream release layouts (by source) and the CA certificates (PEM) trusted for
/// them besides the system's. Other keys of the agent's file (`artifact_source`) are read
/// and ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PackSettings {
    #[serde(default)]
    pub mirrors: Mirrors,
    #[serde(default)]
    pub ca_certs: Vec<String>,
}

impl PackSettings {
    /// Read `path`; its mirrors must name sources and be `https://` URLs.
    pub fn load(path: &Path) -> Result<PackSettings, MirrorError> {
        let text = std::fs::read_to_string(path).map_err(|e| MirrorError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source: Arc::new(e),
        })?;
        let s: PackSettings = serde_json::from_str(&text)
            .map_err(|e| MirrorError::Invalid(format!("{}: {e}", path.display())))?;
        let problems = s.mirrors.problems();
        if !problems.is_empty() {
            return Err(MirrorError::Invalid(format!(
                "{}: {}",
                path.display(),
                problems.join("; ")
            )));
        }
        Ok(s)
    }
}

/// How the mirror is set up.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// `<data dir>/mirror`.
    pub dir: PathBuf,
    /// Most bytes the stored files may take.
    pub max_bytes: u64,
    pub settings: PackSettings,
    /// Connect timeout and longest wait for each read of an upstream download.
    pub timeout: Duration,
}

impl MirrorConfig {
    pub fn new(data_dir: &Path, max_bytes: u64, settings: PackSettings) -> MirrorConfig {
        MirrorConfig {
            dir: data_dir.join("mirror"),
            max_bytes,
            settings,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// No referenced profile or imported bundle names this digest.
    #[error("no published profile the hub keeps names an artifact with sha256 {0}")]
    Unknown(String),
    #[error("downloading {url}: {reason}")]
    Upstream { url: String, reason: String },
    #[error("{url}: sha256 mismatch: expected {expected}, got {actual}; nothing was stored")]
    Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    /// Storing the file would exceed the bound, even after garbage collection.
    #[error(
        "the mirror is full: {needed} more bytes do not fit in {max} (in use: {used}); raise \
         --mirror-max-bytes or unpublish profiles"
    )]
    Full { needed: u64, used: u64, max: u64 },
    #[error("{0}")]
    Invalid(String),
    #[error("reading the published profiles: {0}")]
    Store(String),
}

impl MirrorError {
    fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> MirrorError + 'a {
        move |e| MirrorError::Io {
            action,
            path: path.to_path_buf(),
            source: Arc::new(e),
        }
    }
}

/// `url → sha256` of every file the hub has resolved or imported.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    urls: BTreeMap<String, String>,
    /// Modification time of `index.json` when read: the admin commands (`pack sync`,
    /// `mirror import`) write it from another process, and the serving hub reads it again
    /// when it changed.
    #[serde(skip)]
    loaded: Option<std::time::SystemTime>,
}

/// One download in progress: every request for its digest waits on the cell.
type Flight = Arc<OnceCell<Result<(), MirrorError>>>;

/// The hub's artifact mirror.
pub struct Mirror {
    dir: PathBuf,
    max_bytes: u64,
    settings: PackSettings,
    client: reqwest::Client,
    index: tokio::sync::Mutex<Index>,
    /// Downloads in progress, by digest: every request for one waits on the same cell.
    inflight: std::sync::Mutex<HashMap<String, Flight>>,
    /// Upstream downloads started since the hub started (for logs and tests).
    downloads: AtomicU64,
    /// Held while a profile is resolved with the network: concurrent resolutions of the
    /// same profile read each checksum file once, the later ones from the index.
    resolving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// What a sync, an import or a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Files downloaded or imported into the mirror.
    pub added: usize,
    /// Files the mirror already held.
    pub present: usize,
    /// Files removed (garbage collection).
    pub removed: usize,
    pub bytes_added: u64,
    pub bytes_removed: u64,
    /// Bytes held afterwards.
    pub bytes_used: u64,
}

/// Is `s` a lower-case sha256 in hex?
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Mirror {
    /// Open (create) the mirror directory; leftovers of interrupted downloads are removed
    /// once they are a day old (an admin command opening the mirror while `serve` runs must
    /// not delete the server's downloads in flight).
    pub fn open(config: MirrorConfig) -> Result<Mirror, MirrorError> {
        let dir = config.dir;
        for sub in ["sha256", "tmp"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(MirrorError::io("creating", &p))?;
        }
        let tmp = dir.join("tmp");
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(24 * 3600));
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let index_path = dir.join("index.json");
        // The index is a cache of what was learnt (URL → digest): one that does not parse
        // (a crash mid-write on an older hub) is started afresh, not a reason not to start.
        let index = match std::fs::read(&index_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: {e}; starting with an empty index",
                    index_path.display()
                );
                Index::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(MirrorError::io("reading", &index_path)(e)),
        };
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .user_agent(concat!("cairn-hub/", env!("CARGO_PKG_VERSION")));
        for pem in &config.settings.ca_certs {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| MirrorError::Invalid(format!("a pack mirror CA certificate: {e}")))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| MirrorError::Invalid(format!("building the HTTPS client: {e}")))?;
        Ok(Mirror {
            dir,
            max_bytes: config.max_bytes,
            settings: config.settings,
            client,
            index: tokio::sync::Mutex::new(index),
            inflight: std::sync::Mutex::new(HashMap::new()),
            downloads: AtomicU64::new(0),
            resolving: tokio::sync::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Upstream downloads started since this mirror was opened.
    pub fn upstream_downloads(&self) -> u64 {
        self.downloads.load(Ordering::SeqCst)
    }

    /// Where the file with digest `hex` lives (whether or not it is there).
    pub fn path_of(&self, hex: &str) -> PathBuf {
        self.dir.join("sha256").join(hex)
    }

    /// The file with digest `hex`, if held.
    pub fn get(&self, hex: &str) -> Option<PathBuf> {
        let p = self.path_of(hex);
        p.is_file().then_some(p)
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.held().values().sum()
    }

    fn held(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.join("sha256")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if is_sha256(&name) {
                    out.insert(name, e.metadata().map(|m| m.len()).unwrap_or(0));
                }
            }
        }
        out
    }

    /// The index, read again from disk when another process changed it.
    async fn fresh_index(&self) -> tokio::sync::MutexGuard<'_, Index> {
        let mut index = self.index.lock().await;
        let path = self.dir.join("index.json");
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime != index.loaded {
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
            {
                Some(mut on_disk) => {
                    // Nothing learnt here is lost: what this process knows is kept too.
                    for (u, s) in std::mem::take(&mut index.urls) {
                        on_disk.urls.entry(u).or_insert(s);
                    }
                    index.urls = on_disk.urls;
                    index.loaded = mtime;
                }
                None => tracing::warn!(
                    "mirror: {} is unreadable; kept the index in memory",
                    path.display()
                ),
            }
        }
        index
    }

    async fn save_index(&self, index: &Index) -> Result<(), MirrorError> {
        let path = self.dir.join("index.json");
        let json = serde_json::to_vec_pretty(index)
            .map_err(|e| MirrorError::Invalid(format!("encoding the index: {e}")))?;
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("index.{}", std::process::id()));
        // Durable before it replaces the old one: written, fsynced, renamed, directory
        // fsynced.
        let (tmp2, dir) = (tmp.clone(), self.dir.clone());
        let write = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp2)?;
            f.write_all(&json)?;
            f.sync_all()?;
            Ok(())
        });
        match write.await {
            Ok(r) => r.map_err(MirrorError::io("writing", &tmp))?,
            Err(e) => return Err(MirrorError::Invalid(format!("writing the index: {e}"))),
        }
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(MirrorError::io("replacing", &path))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Record `url → sha256` pairs (and write the index when something is new).
    async fn remember(&self, pairs: &[(String, String)]) -> Result<(), MirrorError> {
        let mut index = self.fresh_index().await;
        let mut changed = false;
        for (url, sha) in pairs {
            if index.urls.get(url) != Some(sha) {
                index.urls.insert(url.clone(), sha.clone());
                changed = true;
            }
        }
        if changed {
            self.save_index(&index).await?;
            index.loaded = std::fs::metadata(self.dir.join("index.json"))
                .and_then(|m| m.modified())
                .ok();
        }
        Ok(())
    }

    async fn url_of(&self, hex: &str) -> Option<String> {
        let index = self.fresh_index().await;
        index
            .urls
            .iter()
            .find(|(_, sha)| sha.as_str() == hex)
            .map(|(url, _)| url.clone())
    }

    /// Every file `profile` needs on amd64 and arm64, each digest known: listed and pinned
    /// as written, the others from the index or (with `network`) from their release's
    /// checksum file, read over verified TLS. A pack file whose digest cannot be had
    /// without the network is left out when `network` is false. What is learnt is recorded.
    pub async fn resolve(
        &self,
        profile: &Profile,
        network: bool,
    ) -> Result<Vec<MirroredArtifact>, MirrorError> {
        let mut out: Vec<MirroredArtifact> = Vec::new();
        let listed = |a: &cairn_proto::profile::Artifact| MirroredArtifact {
            name: a.name.clone(),
            arch: a.arch,
            version: String::new(),
            url: a.url.clone(),
            sha256: a.sha256.to_ascii_lowercase(),
            cached: false,
        };
        let (mut k, mut c) = (None, None);
        for layer in &profile.layers {
            match layer {
                Layer::Kubernetes(x) => {
                    k = Some(x);
                    out.extend(x.artifacts.iter().map(listed));
                }
                Layer::Cni(x) => {
                    c = Some(x);
                    out.extend(x.artifacts.iter().map(listed));
                }
                Layer::Addons(x) => addon_files(x, &mut out),
                Layer::Os(_) => {}
            }
        }
        // Attached add-on profiles (served with the profile) are the host's files too.
        for attached in &profile.addon_profiles {
            addon_files(&attached.addons, &mut out);
        }
        let _one_at_a_time = if network {
            Some(self.resolving.lock().await)
        } else {
            None
        };
        if let Some(k) = k {
            let mut texts: HashMap<String, String> = HashMap::new();
            for arch in ARCHES {
                // An arch the profile cannot be completed for (a pack without that arch)
                // has nothing to mirror there.
                let Ok(planned) = cairn_packs::resolve(k, c, arch, &self.settings.mirrors) else {
                    continue;
                };
                for p in planned {
                    let sha = match &p.verify {
                        Verify::Pinned { sha256, .. } => Some(sha256.to_ascii_lowercase()),
                        Verify::ChecksumFile { url, format, entry } => {
                            let known = self.fresh_index().await.urls.get(&p.url).cloned();
                            match known {
                                Some(s) => Some(s),
                                None if network => {
                                    if !texts.contains_key(url) {
                                        let t = self.get_text(url).await?;
                                        texts.insert(url.clone(), t);
                                    }
                                    let text = texts.get(url).map(String::as_str).unwrap_or("");
                                    Some(
                                        cairn_packs::checksum::parse(*format, text, entry)
                                            .map_err(|e| MirrorError::Upstream {
                                                url: url.clone(),
                                                reason: format!(
                                                    "{} ({}): {e}",
                                                    p.name,
                                                    arch.as_str()
                                                ),
                                            })?,
                                    )
                                }
                                None => None,
                            }
                        }
                    };
                    if let Some(sha256) = sha {
                        out.push(MirroredArtifact {
                            name: p.name.clone(),
                            arch,
                            version: p.version.clone(),
                            url: p.url.clone(),
                            sha256,
                            cached: false,
                        });
                    }
                }
            }
        }
        out.retain(|a| is_sha256(&a.sha256));
        let pairs: Vec<(String, String)> = out
            .iter()
            .map(|a| (a.url.clone(), a.sha256.clone()))
            .collect();
        self.remember(&pairs).await?;
        for a in out.iter_mut() {
            a.cached = self.get(&a.sha256).is_some();
        }
        Ok(out)
    }

    async fn get_text(&self, url: &str) -> Result<String, MirrorError> {
        let fail = |reason: String| MirrorError::Upstream {
            url: url.to_string(),
            reason,
        };
        if !url.starts_with("https://") {
            return Err(fail("checksum files are read over HTTPS only".into()));
        }
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(chain(&e)))?;
        // A redirect must not take a checksum file off HTTPS.
        if resp.url().scheme() != "https" {
            return Err(fail(format!(
                "redirected to {}: checksum files are read over HTTPS only",
                resp.url()
            )));
        }
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(chain(&e)))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CHECKSUM_FILE {
                return Err(fail(format!("longer than {MAX_CHECKSUM_FILE} bytes")));
            }
        }
        String::from_utf8(body).map_err(|_| fail("not text".into()))
    }

    /// The profiles whose files the mirror keeps: the latest version of every profile and
    /// every version an assignment pins.
    pub async fn referenced_profiles<S: Store>(store: &S) -> Result<Vec<Profile>, MirrorError> {
        let st = |e: crate::StoreError| MirrorError::Store(e.to_string());
        let infos = store.list_profiles(None, None).await.map_err(st)?;
        let mut keep: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        for i in &infos {
            let versions = keep.entry((i.tenant.clone(), i.name.clone())).or_default();
            let latest = versions.iter().next_back().copied().unwrap_or(0);
            if i.version > latest {
                versions.clear();
                versions.insert(i.version);
            }
        }
        for a in store.list_assignments(None).await.map_err(st)? {
            if let Some(v) = a.version {
                keep.entry((a.tenant.clone(), a.profile.clone()))
                    .or_default()
                    .insert(v);
            }
        }
        let mut out = Vec::new();
        for ((tenant, name), versions) in keep {
            for v in versions {
                let rec = match store.get_profile(&tenant, &name, Some(v)).await {
                    Ok(r) => r,
                    Err(crate::StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(st(e)),
                };
                let p: Profile = serde_json::from_str(&rec.body).map_err(|e| {
                    MirrorError::Store(format!("profile {name} v{v} does not parse: {e}"))
                })?;
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The file with digest `hex`, downloaded from upstream first when not held (once,
    /// however many ask at the same time). `store` tells where it comes from.
    pub async fn ensure<S: Store>(&self, hex: &str, store: &S) -> Result<PathBuf, MirrorError> {
        if let Some(p) = self.get(hex) {
            return Ok(p);
        }
        let cell = {
            let mut inflight = self
                .inflight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(inflight.entry(hex.to_string()).or_default())
        };
        let result = cell
            .get_or_init(|| async {
                let r = self.fetch_upstream(hex, store).await;
                self.inflight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(hex);
                r
            })
            .await
            .clone();
        result?;
        self.get(hex)
            .ok_or_else(|| MirrorError::Unknown(hex.to_string()))
    }

    async fn fetch_upstream<S: Store>(&self, hex: &str, store: &S) -> Result<(), MirrorError> {
        // A waiter that arrives after the download finished finds the file.
        if self.get(hex).is_some() {
            return Ok(());
        }
        let url = match self.url_of(hex).await {
            Some(u) => u,
            None => {
                // Learn the sources of the profiles published since.
                for p in Self::referenced_profiles(store).await? {
                    if let Err(e) = self.resolve(&p, true).await {
                        tracing::warn!("mirror: resolving profile {}: {e}", p.name);
                    }
                }
                self.url_of(hex)
                    .await
                    .ok_or_else(|| MirrorError::Unknown(hex.to_string()))?
            }
        };
        self.download(&url, hex, Some(store)).await.map(|_| ())
    }

    /// Make room for `needed` more bytes: garbage-collect when over the bound (with the
    /// store), then refuse if it still does not fit.
    async fn room<S: Store>(&self, needed: u64, store: Option<&S>) -> Result<(), MirrorError> {
        let used = self.used();
        if used.saturating_add(needed) <= self.max_bytes {
            return Ok(());
        }
        if let Some(store) = store {
            self.gc(store).await?;
        }
        let used = self.used();
        if used.saturating_add(needed) > self.max_bytes {
            return Err(MirrorError::Full {
                needed,
                used,
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Download `url` into the mirror under `hex`, verified while streaming.
    async fn download<S: Store>(
        &self,
        url: &str,
        hex: &str,
        store: Option<&S>,
    ) -> Result<u64, MirrorError> {
        let fail = |reason: String| MirrorError::Upstream {
            url: url.to_string(),
            reason,
        };
        self.downloads.fetch_add(1, Ordering::SeqCst);
        tracing::info!(%url, sha256 = hex, "mirror: downloading from upstream");
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(chain(&e)))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let announced = resp.content_length();
        self.room(announced.unwrap_or(0), store).await?;
        let (tmp, mut file) = self.temp_file().await?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(chain(&e)))? {
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            if announced.is_none() && self.used().saturating_add(bytes) > self.max_bytes {
                return Err(MirrorError::Full {
                    needed: bytes,
                    used: self.used(),
                    max: self.max_bytes,
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(MirrorError::io("writing", &tmp))?;
        }
        if let Some(n) = announced.filter(|n| *n != bytes) {
            return Err(fail(format!("connection closed at byte {bytes} of {n}")));
        }
        self.commit(file, &tmp, hasher, hex, url).await?;
        drop(guard);
        Ok(bytes)
    }

    async fn temp_file(&self) -> Result<(PathBuf, tokio::fs::File), MirrorError> {
        let mut rnd = [0u8; 12];
        getrandom::getrandom(&mut rnd)
            .map_err(|e| MirrorError::Invalid(format!("random temp name: {e}")))?;
        let tmp = self.dir.join("tmp").join(hex::encode(rnd));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(MirrorError::io("creating", &tmp))?;
        Ok((tmp, file))
    }

    /// Check the digest, sync, and rename the temp file under its digest.
    async fn commit(
        &self,
        mut file: tokio::fs::File,
        tmp: &Path,
        hasher: Sha256,
        hex: &str,
        shown: &str,
    ) -> Result<(), MirrorError> {
        let got = hex::encode(hasher.finalize());
        if got != hex {
            return Err(MirrorError::Mismatch {
                url: shown.to_string(),
                expected: hex.to_string(),
                actual: got,
            });
        }
        file.flush()
            .await
            .map_err(MirrorError::io("writing", tmp))?;
        file.sync_all()
            .await
            .map_err(MirrorError::io("syncing", tmp))?;
        drop(file);
        let dest = self.path_of(hex);
        tokio::fs::rename(tmp, &dest)
            .await
            .map_err(MirrorError::io("storing", &dest))?;
        Ok(())
    }

    /// Pre-fetch every file of `profile` (both arches): checksum files read, each file
    /// downloaded once and verified. `progress` is told about each file.
    pub async fn sync<S: Store>(
        &self,
        profile: &Profile,
        store: &S,
        progress: &mut (dyn FnMut(&MirroredArtifact, &str) + Send),
    ) -> Result<Report, MirrorError> {
        let files = self.resolve(profile, true).await?;
        let mut report = Report::default();
        let mut seen = BTreeSet::new();
        for f in &files {
            if !seen.insert(f.sha256.clone()) {
                continue;
            }
            if self.get(&f.sha256).is_some() {
                report.present += 1;
                progress(f, "present");
                continue;
            }
            progress(f, "downloading");
            self.ensure(&f.sha256, store).await?;
            report.added += 1;
            report.bytes_added += std::fs::metadata(self.path_of(&f.sha256))
                .map(|m| m.len())
                .unwrap_or(0);
            progress(f, "stored");
        }
        report.bytes_used = self.used();
        Ok(report)
    }

    /// Import an air-gap bundle (a directory or a `.tar` of one with `manifest.json`, as
    /// `cairn-agent bundle create` writes it): every file verified against the manifest and
    /// stored; the URLs it records are remembered, so version-only profiles resolve with
    /// no network.
    pub async fn import_bundle(&self, bundle: &Path) -> Result<Report, MirrorError> {
        let bundle = bundle.to_path_buf();
        let (manifest, files) = if bundle.is_dir() {
            let text = std::fs::read_to_string(bundle.join("manifest.json"))
                .map_err(MirrorError::io("reading", &bundle.join("manifest.json")))?;
            let m: BundleManifest = serde_json::from_str(&text).map_err(|e| {
                MirrorError::Invalid(format!("{}/manifest.json: {e}", bundle.display()))
            })?;
            (m, None)
        } else {
            let m = tar_manifest(&bundle)?;
            (m, Some(()))
        };
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        let mut pairs = Vec::new();
        for e in &manifest.artifacts {
            let sha = e.sha256.trim().to_ascii_lowercase();
            if !is_sha256(&sha) {
                return Err(MirrorError::Invalid(format!(
                    "{}: `{}` is not a sha256",
                    bundle.display(),
                    e.sha256
                )));
            }
            let rel = Path::new(&e.file);
            if rel.is_absolute()
                || rel
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(MirrorError::Invalid(format!(
                    "bundle file `{}` must be a relative path inside the bundle",
                    e.file
                )));
            }
            wanted.insert(normalize(&e.file), sha.clone());
            if !e.url.is_empty() {
                pairs.push((e.url.clone(), sha));
            }
        }
        let mut report = Report::default();
        if files.is_none() {
            for (file, sha) in &wanted {
                if self.get(sha).is_some() {
                    report.present += 1;
                    continue;
                }
                let path = bundle.join(file);
                let f = tokio::fs::File::open(&path)
                    .await
                    .map_err(MirrorError::io("opening", &path))?;
                let n = self
                    .store_reader(f, sha, &path.display().to_string())
                    .await?;
                report.added += 1;
                report.bytes_added += n;
            }
        } else {
            let me = self;
            let path = bundle.clone();
            // A tar is read in order: each member the manifest names is streamed in.
            let file = std::fs::File::open(&path).map_err(MirrorError::io("opening", &path))?;
            let mut archive = tar::Archive::new(std::io::BufReader::new(file));
            let entries = archive
                .entries()
                .map_err(MirrorError::io("reading", &path))?;
            let mut found = BTreeSet::new();
            for entry in entries {
                let mut entry = entry.map_err(MirrorError::io("reading", &path))?;
                let name = entry
                    .path()
                    .map_err(MirrorError::io("reading", &path))?
                    .to_string_lossy()
                    .into_owned();
                let Some(sha) = wanted.get(&normalize(&name)).cloned() else {
                    continue;
                };
                found.insert(normalize(&name));
                if me.get(&sha).is_some() {
                    report.present += 1;
                    continue;
                }
                me.room_blocking(entry.size())?;
                let (tmp, file) = me.temp_file().await?;
                let guard = RemoveOnDrop(Some(tmp.clone()));
                let mut std_file = file.into_std().await;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                let mut n_total = 0u64;
                loop {
                    let n = std::io::Read::read(&mut entry, &mut buf)
                        .map_err(MirrorError::io("reading", &path))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    std::io::Write::write_all(&mut std_file, &buf[..n])
                        .map_err(MirrorError::io("writing", &tmp))?;
                    n_total += n as u64;
                }
                me.commit(
                    tokio::fs::File::from_std(std_file),
                    &tmp,
                    hasher,
                    &sha,
                    &format!("{}:{name}", path.display()),
                )
                .await?;
                drop(guard);
                report.added += 1;
                report.bytes_added += n_total;
            }
            if let Some(missing) = wanted.keys().find(|k| !found.contains(*k)) {
                return Err(MirrorError::Invalid(format!(
                    "{}: the manifest names `{missing}`, which the bundle does not hold",
                    path.display()
                )));
            }
        }
        self.remember(&pairs).await?;
        report.bytes_used = self.used();
        Ok(report)
    }

    fn room_blocking(&self, needed: u64) -> Result<(), MirrorError> {
        let used = self.used();
        if used.saturating_add(needed) > self.max_bytes {
            return Err(MirrorError::Full {
                needed,
                used,
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    async fn store_reader(
        &self,
        mut src: tokio::fs::File,
        hex: &str,
        shown: &str,
    ) -> Result<u64, MirrorError> {
        use tokio::io::AsyncReadExt;
        let len = src.metadata().await.map(|m| m.len()).unwrap_or(0);
        self.room_blocking(len)?;
        let (tmp, mut file) = self.temp_file().await?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = src
                .read(&mut buf)
                .await
                .map_err(MirrorError::io("reading", Path::new(shown)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .await
                .map_err(MirrorError::io("writing", &tmp))?;
            total += n as u64;
        }
        self.commit(file, &tmp, hasher, hex, shown).await?;
        drop(guard);
        Ok(total)
    }

    /// Remove every held file no referenced profile needs (resolved without the network:
    /// what the index knows).
    pub async fn gc<S: Store>(&self, store: &S) -> Result<Report, MirrorError> {
        let mut keep = BTreeSet::new();
        for p in Self::referenced_profiles(store).await? {
            for a in self.resolve(&p, false).await? {
                keep.insert(a.sha256);
            }
        }
        let mut report = Report::default();
        for (hex, len) in self.held() {
            if keep.contains(&hex) {
                report.present += 1;
                continue;
            }
            let p = self.path_of(&hex);
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    report.removed += 1;
                    report.bytes_removed += len;
                    tracing::info!(sha256 = %hex, bytes = len, "mirror: removed (no profile references it)");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(MirrorError::io("removing", &p)(e)),
            }
        }
        report.bytes_used = self.used();
        Ok(report)
    }
}

/// Removes a temp file unless disarmed (dropped after a successful rename, when the file
/// is gone anyway).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `manifest.json` of an air-gap bundle (agent/src/artifacts/bundle.rs).
#[derive(Debug, Default, Deserialize)]
struct BundleManifest {
    artifacts: Vec<BundleEntry>,
}

#[derive(Debug, Deserialize)]
struct BundleEntry {
    file: String,
    sha256: String,
    #[serde(default)]
    url: String,
}

fn normalize(name: &str) -> String {
    name.trim_start_matches("./").to_string()
}

fn tar_manifest(path: &Path) -> Result<BundleManifest, MirrorError> {
    let file = std::fs::File::open(path).map_err(MirrorError::io("opening", path))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    for entry in archive
        .entries()
        .map_err(MirrorError::io("reading", path))?
    {
        let entry = entry.map_err(MirrorError::io("reading", path))?;
        let name = entry
            .path()
            .map_err(MirrorError::io("reading", path))?
            .to_string_lossy()
            .into_owned();
        if normalize(&name) == "manifest.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(entry, 4 << 20), &mut text)
                .map_err(MirrorError::io("reading", path))?;
            return serde_json::from_str(&text).map_err(|e| {
                MirrorError::Invalid(format!("{}: manifest.json: {e}", path.display()))
            });
        }
    }
    Err(MirrorError::Invalid(format!(
        "{}: no manifest.json",
        path.display()
    )))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The files an add-ons layer lists (artifacts, and manifests fetched by URL), for both
/// architectures.
fn addon_files(x: &cairn_proto::profile::AddonsLayer, out: &mut Vec<MirroredArtifact>) {
    out.extend(x.artifacts.iter().map(|a| MirroredArtifact {
        name: a.name.clone(),
        arch: a.arch,
        version: String::new(),
        url: a.url.clone(),
        sha256: a.sha256.to_ascii_lowercase(),
        cached: false,
    }));
    for m in &x.manifests {
        if let (Some(url), Some(sha)) = (&m.url, &m.sha256) {
            for arch in ARCHES {
                out.push(MirroredArtifact {
                    name: m.name.clone(),
                    arch,
                    version: String::new(),
                    url: url.clone(),
                    sha256: sha.to_ascii_lowercase(),
                    cached: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lower_case_hex_of_64() {
        assert!(is_sha256(&"ab".repeat(32)));
        assert!(!is_sha256(&"AB".repeat(32)));
        assert!(!is_sha256("ab"));
        assert!(!is_sha256(&"zz".repeat(32)));
    }
}
