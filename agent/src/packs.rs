//! Packs on the device: a profile that names only a flavor/CNI and a version is completed
//! from the catalog of [`cairn_packs`] — every file its arch needs, from the project's
//! release layout (or the site's mirror of it) — and each file's digest is taken from a pin
//! or, just before fetching, from the checksum file of the same release, read over
//! verified TLS. Files the profile lists under `artifacts` are used as listed.
//!
//! [`complete`] runs inside [`crate::profile::validate`] and reads nothing: a file whose
//! digest comes from a checksum file enters the plan with the placeholder [`PENDING`] and
//! is remembered as pending. [`digests`] runs first thing in [`crate::profile::apply`] and
//! fetches those checksum files; only then are artifacts fetched (and verified against
//! them) and anything written. A checksum file that cannot be had, lacks the entry, or
//! names another digest than the file has stops the apply with the target untouched.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use cairn_packs::{ChecksumError, Mirrors, Planned, ResolveProblem, Verify};
use cairn_proto::profile::{Arch, Artifact, CniLayer, KubernetesLayer};
use serde::{Deserialize, Serialize};

use crate::artifacts::FetchOptions;

/// The site's pack settings on the machine running the agent (JSON, optional).
pub const SETTINGS_FILE: &str = "/etc/cairn/packs.json";

/// The digest a pending file carries in a plan until its checksum file is read.
pub const PENDING: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest checksum file read.
const MAX_CHECKSUM_FILE: u64 = 1024 * 1024;

/// Where packs come from: mirrors of the upstream release layouts (by source: `k3s`,
/// `rke2`, `kubernetes`, `containerd`, `runc`, `cni-plugins`, `crictl`, `helm`, `calico`,
/// `cilium`) and the CA certificates (PEM) that sign a mirror's TLS certificate, trusted
/// besides the system's for checksum files and artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub mirrors: Mirrors,
    #[serde(default)]
    pub ca_certs: Vec<String>,
    /// Where the daemon takes artifacts from when its hub assigned the profile:
    /// `hub-first` (default), `hub-only` or `upstream`
    /// ([`crate::artifacts::hub::ArtifactSource`]).
    #[serde(default)]
    pub artifact_source: crate::artifacts::hub::ArtifactSource,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Settings {
    /// Read `path` (JSON); its mirrors must name sources and be `https://` URLs.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: shown.clone(),
            source,
        })?;
        let s: Settings = serde_json::from_str(&text).map_err(|e| SettingsError::Invalid {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let problems = s.mirrors.problems();
        if !problems.is_empty() {
            return Err(SettingsError::Invalid {
                path: shown,
                message: problems.join("; "),
            });
        }
        Ok(s)
    }

    /// [`SETTINGS_FILE`] when it exists, else upstream everywhere.
    pub fn load_default() -> Result<Settings, SettingsError> {
        let path = Path::new(SETTINGS_FILE);
        if path.exists() {
            Settings::load(path)
        } else {
            Ok(Settings::default())
        }
    }
}

/// The layers completed for one arch, and the files whose digest is still to be read.
#[derive(Debug, Clone)]
pub struct Completed {
    pub kubernetes: KubernetesLayer,
    pub cni: Option<CniLayer>,
    /// Every file the catalog added, with how it is verified.
    pub planned: Vec<Planned>,
}

impl Completed {
    /// The added files whose digest comes from a checksum file.
    pub fn pending(&self) -> Vec<Planned> {
        self.planned
            .iter()
            .filter(|p| matches!(p.verify, Verify::ChecksumFile { .. }))
            .cloned()
            .collect()
    }
}

/// Complete `k` and `c` for `arch` with the catalog's files (reads nothing). A file the
/// layer lists itself is kept as listed.
pub fn complete(
    k: &KubernetesLayer,
    c: Option<&CniLayer>,
    arch: Arch,
    mirrors: &Mirrors,
) -> Result<Completed, Vec<ResolveProblem>> {
    let planned = cairn_packs::resolve(k, c, arch, mirrors)?;
    let mut kubernetes = k.clone();
    let mut cni = c.cloned();
    for p in &planned {
        let sha256 = match &p.verify {
            Verify::Pinned { sha256, .. } => sha256.clone(),
            Verify::ChecksumFile { .. } => PENDING.to_string(),
        };
        let artifact = Artifact {
            name: p.name.clone(),
            arch: p.arch,
            url: p.url.clone(),
            sha256,
            size: None,
        };
        match p.layer {
            cairn_packs::catalog::LayerKind::Kubernetes => kubernetes.artifacts.push(artifact),
            cairn_packs::catalog::LayerKind::Cni => {
                if let Some(c) = cni.as_mut() {
                    c.artifacts.push(artifact)
                }
            }
        }
    }
    Ok(Completed {
        kubernetes,
        cni,
        planned,
    })
}

/// Why the digest of a pack's file could not be had. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PacksError {
    #[error("{name} ({arch}): fetching its checksum file {url} failed: {reason}")]
    Fetch {
        name: String,
        arch: &'static str,
        url: String,
        reason: String,
    },
    #[error("{name} ({arch}): checksum file {url}: {source}")]
    Checksum {
        name: String,
        arch: &'static str,
        url: String,
        #[source]
        source: ChecksumError,
    },
    #[error("the pack settings' CA certificates: {0}")]
    Ca(String),
}

fn arch_str(a: Arch) -> &'static str {
    a.as_str()
}

/// The HTTPS-only client checksum files are read with: the system's roots plus
/// `ca_certs`.
fn client(
    ca_certs: &[String],
    opts: &FetchOptions,
) -> Result<reqwest::blocking::Client, PacksError> {
    let mut b = reqwest::blocking::Client::builder()
        .https_only(true)
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.idle_timeout);
    for pem in ca_certs {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| PacksError::Ca(e.to_string()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| PacksError::Ca(format!("building the HTTPS client: {e}")))
}

// The error is only ever the `reason` text of `PacksError::Fetch` (after retries), never
// branched on: a string is the whole of what the caller needs.
fn get_text(client: &reqwest::blocking::Client, url: &str) -> Result<String, String> {
    let resp = client.get(url).send().map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        msg
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let mut body = Vec::new();
    resp.take(MAX_CHECKSUM_FILE + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() as u64 > MAX_CHECKSUM_FILE {
        return Err(format!("longer than {MAX_CHECKSUM_FILE} bytes"));
    }
    String::from_utf8(body).map_err(|_| "not text".to_string())
}

/// Read the digest of every pending file from its checksum file (each file fetched once,
/// over HTTPS, retried per `opts`): `(name, arch, url)` → sha256.
pub fn digests(
    pending: &[Planned],
    settings: &Settings,
    opts: &FetchOptions,
) -> Result<HashMap<(String, Arch, String), String>, PacksError> {
    let mut out = HashMap::new();
    if pending.is_empty() {
        return Ok(out);
    }
    let client = client(&settings.ca_certs, opts)?;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for p in pending {
        let Verify::ChecksumFile { url, format, entry } = &p.verify else {
            continue;
        };
        if !files.contains_key(url) {
            let mut last = String::new();
            let mut delay = opts.backoff;
            let mut text = None;
            for attempt in 1..=opts.attempts.max(1) {
                match get_text(&client, url) {
                    Ok(t) => {
                        text = Some(t);
                        break;
                    }
                    Err(e) => {
                        last = e;
                        if attempt < opts.attempts {
                            std::thread::sleep(delay);
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
            let text = text.ok_or_else(|| PacksError::Fetch {
                name: p.name.clone(),
                arch: arch_str(p.arch),
                url: url.clone(),
                reason: last,
            })?;
            files.insert(url.clone(), text);
        }
        let text = files.get(url).map(String::as_str).unwrap_or_default();
        let sha = cairn_packs::checksum::parse(*format, text, entry).map_err(|source| {
            PacksError::Checksum {
                name: p.name.clone(),
                arch: arch_str(p.arch),
                url: url.clone(),
                source,
            }
        })?;
        out.insert((p.name.clone(), p.arch, p.url.clone()), sha);
    }
    Ok(out)
}

/// `profile` with its kubernetes and cni layers completed from the catalog for `arches`
/// (when the profile has those layers), every digest known: pinned ones as pinned, the
/// others read from their releases' checksum files. What `cairn-agent bundle create` packs,
/// so an air-gapped device gets the files a version-only profile needs.
pub fn resolve_profile(
    profile: &cairn_proto::profile::Profile,
    arches: &[Arch],
    settings: &Settings,
    opts: &FetchOptions,
) -> Result<cairn_proto::profile::Profile, ResolveError> {
    use cairn_proto::profile::Layer;
    let k = profile.layers.iter().find_map(|l| match l {
        Layer::Kubernetes(k) => Some(k),
        _ => None,
    });
    let c = profile.layers.iter().find_map(|l| match l {
        Layer::Cni(c) => Some(c),
        _ => None,
    });
    let Some(k) = k else {
        return Ok(profile.clone());
    };
    let mut out = profile.clone();
    for arch in arches {
        let done = complete(k, c, *arch, &settings.mirrors).map_err(|problems| {
            ResolveError::Unresolved {
                arch: arch_str(*arch),
                problems: problems
                    .into_iter()
                    .map(|p| format!("{}: {}", p.field, p.message))
                    .collect(),
            }
        })?;
        let digests = digests(&done.pending(), settings, opts)?;
        let fill = |list: &mut Vec<Artifact>, from: &[Artifact]| {
            for a in from {
                if a.arch != *arch || list.iter().any(|x| x.name == a.name && x.arch == a.arch) {
                    continue;
                }
                let mut a = a.clone();
                if let Some(d) = digests.get(&(a.name.clone(), a.arch, a.url.clone())) {
                    a.sha256 = d.clone();
                }
                list.push(a);
            }
        };
        for layer in out.layers.iter_mut() {
            match layer {
                Layer::Kubernetes(kl) => fill(&mut kl.artifacts, &done.kubernetes.artifacts),
                Layer::Cni(cl) => {
                    if let Some(dc) = &done.cni {
                        fill(&mut cl.artifacts, &dc.artifacts)
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Why a profile's pack files could not all be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the profile's packs cannot be resolved for {arch}: {}", problems.join("; "))]
    Unresolved {
        arch: &'static str,
        problems: Vec<String>,
    },
    #[error(transparent)]
    Packs(#[from] PacksError),
}

/// How `cairn-agent plan` shows one file's verification.
pub fn describe(verify: &Verify) -> String {
    match verify {
        Verify::Pinned { sha256, origin } => format!(
            "sha256 {sha256} (pinned by the {})",
            match origin {
                cairn_packs::PinOrigin::Profile => "profile",
                cairn_packs::PinOrigin::Catalog => "catalog",
            }
        ),
        Verify::ChecksumFile { url, format, entry } => format!(
            "sha256 from `{entry}` in {url} ({}), read over verified TLS before the download",
            format.describe()
        ),
    }
}

/// One line of `cairn-agent plan`: a file the apply will fetch for `arch`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanEntry {
    pub arch: Arch,
    pub name: String,
    pub url: String,
    /// `pack` (the catalog added it), `profile` (listed under `artifacts`) or `registry` (a
    /// chart from a hub registry).
    pub from: &'static str,
    pub verify: serde_json::Value,
    /// The verification in words.
    pub how: String,
}

/// What `cairn-agent plan PROFILE` shows: every file the profile's apply fetches on each
/// of `arches`, from where, and how it is verified — or every problem, located, when the
/// profile cannot be applied on one of them. Reads nothing but the profile (already read).
pub fn plan_entries(
    checked: &cairn_userdata::profile::Checked,
    arches: &[Arch],
    settings: &Settings,
) -> Result<Vec<PlanEntry>, crate::profile::Invalid> {
    let mut out = Vec::new();
    for arch in arches {
        let plan = crate::profile::validate_with(
            checked,
            &crate::profile::Machine::of_arch(*arch),
            settings,
        )?;
        let Some(k) = &plan.kubernetes else { continue };
        let addon_fetch = k.addons.iter().flat_map(|a| a.fetch.iter());
        for f in k.node.fetch.iter().chain(addon_fetch) {
            let pack = k
                .packs
                .iter()
                .find(|p| p.name == f.name && p.arch == f.arch && p.url == f.url);
            let (from, verify, how) = match pack {
                Some(p) => (
                    "pack",
                    serde_json::to_value(&p.verify).unwrap_or(serde_json::Value::Null),
                    describe(&p.verify),
                ),
                None => (
                    "profile",
                    serde_json::json!({"by": "listed", "sha256": f.sha256}),
                    format!("sha256 {} (listed in the profile)", f.sha256),
                ),
            };
            out.push(PlanEntry {
                arch: f.arch,
                name: f.name.clone(),
                url: f.url.clone(),
                from,
                verify,
                how,
            });
        }
        // Charts from the hub's registries: where is known at apply (the hub sends the
        // registry with the profile), and so is the digest.
        let pending = k.addons.iter().flat_map(|a| a.pending.iter());
        for c in pending.filter_map(|i| k.addons_layer.as_ref()?.charts.get(*i)) {
            out.push(PlanEntry {
                arch: *arch,
                name: format!("chart {}", c.name),
                url: format!(
                    "registry {}: {} {}",
                    c.registry.as_deref().unwrap_or("?"),
                    c.chart,
                    c.version
                ),
                from: "registry",
                verify: serde_json::json!({"by": "registry_digest"}),
                how: "the digest its registry publishes (a Helm index's `digest`, an OCI \
                      manifest's chart layer), fetched at apply with the credentials the hub \
                      sends"
                    .into(),
            });
        }
    }
    Ok(out)
}

/// The human form of [`plan_entries`].
pub fn render_plan(entries: &[PlanEntry]) -> String {
    let mut s = String::new();
    let mut arch = None;
    for e in entries {
        if arch != Some(e.arch) {
            arch = Some(e.arch);
            s.push_str(&format!("{}:\n", arch_str(e.arch)));
        }
        s.push_str(&format!(
            "  {:<16} {}\n  {:<16} verified by {}\n",
            e.name, e.url, "", e.how
        ));
    }
    if entries.is_empty() {
        s.push_str("nothing to fetch\n");
    }
    s
}
