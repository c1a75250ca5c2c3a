//! Charts from the hub's registries, and the container runtime's registry credentials.
//!
//! The hub sends a host the registries its profile references
//! ([`cairn_proto::registry::HostRegistries`], docs/protocol.md "Registries"). Here:
//!
//! * [`chart_source`]: which registry (if any) a chart comes from — `registry: NAME`, or an
//!   `oci://HOST/…` repo whose host is an OCI registry's.
//! * [`resolve_charts`]: fetch those charts with the registry's credentials and CA and
//!   verify them before they enter the artifact cache: a Helm repository's `index.yaml`
//!   gives the chart archive's URL and its `digest` (sha256), which the archive must match;
//!   an OCI registry is asked through the distribution API (a bearer token from the realm
//!   its `WWW-Authenticate` challenge names, obtained with basic credentials; or the
//!   registry's own token), the manifest's helm chart layer
//!   (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`) names the blob's digest, and
//!   the blob must match it. The charts are then installed as chart artifacts are
//!   ([`super::addons`]).
//! * [`runtime_values`]: OCI registries' credentials and CAs as `values.registries.configs`
//!   (k3s/RKE2 `registries.yaml`; kubeadm containerd's CRI `registry.configs` auth and a
//!   `hosts.toml` with the CA), all written 0600 through the host seam by the flavors.
//!
//! No credential is put in a URL, an error message, an event or a log line.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::time::Duration;

use cairn_proto::profile::{AddonsLayer, Chart};
use cairn_proto::registry::{url_host, RegistryAccess, RegistryKind};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{HeaderMap, ACCEPT, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::artifacts::{ArtifactCache, ArtifactError, FetchOptions};

/// The OCI media type of a Helm chart's content layer.
pub const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Largest `index.yaml` read (the YAML reader's own budget).
pub const MAX_INDEX_BYTES: usize = cairn_userdata::yaml::MAX_DOCUMENT_BYTES;
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Largest chart archive fetched from a registry.
pub const MAX_CHART_BYTES: usize = 64 * 1024 * 1024;
/// Where registry CA files go on the device.
pub const CA_DIR: &str = "/etc/cairn/registries";

/// Why a registry chart could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "chart `{chart}` names registry `{name}`, which the hub did not send: no registry of \
         that name is visible to this host's project (or, with `cairn-agent apply`, none is \
         in the --registries file)"
    )]
    Unknown { chart: String, name: String },
    #[error("chart `{chart}`: registry `{name}` is a {kind} registry; {why}")]
    Kind {
        chart: String,
        name: String,
        kind: &'static str,
        why: &'static str,
    },
    #[error("registry `{registry}`: {what} {url}: {message}")]
    Transport {
        registry: String,
        what: &'static str,
        url: String,
        message: String,
    },
    #[error("registry `{registry}`: {what} {url} answered {status}{hint}")]
    Status {
        registry: String,
        what: &'static str,
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("registry `{registry}`: {what} is larger than {max} bytes")]
    TooLarge {
        registry: String,
        what: &'static str,
        max: usize,
    },
    #[error("registry `{registry}`: {message}")]
    Bad { registry: String, message: String },
    #[error("registry `{registry}` has no chart `{chart}` version `{version}`")]
    NotFound {
        registry: String,
        chart: String,
        version: String,
    },
    #[error(
        "registry `{registry}`: chart `{chart}` {version} does not match its digest: expected \
         sha256 {expected}, got {actual}; nothing was installed"
    )]
    Digest {
        registry: String,
        chart: String,
        version: String,
        expected: String,
        actual: String,
    },
    #[error("the artifact cache: {0}")]
    Cache(#[source] ArtifactError),
}

/// A registry chart fetched and verified into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The archive's file name where it is placed (`podinfo-6.7.1.tgz`).
    pub file: String,
    /// Where it came from (no credentials).
    pub url: String,
    pub sha256: String,
}

/// Which registry a chart comes from, and the chart's name there (Helm: the index entry;
/// OCI: the repository path). `None`: not from a registry object.
pub fn chart_source<'a>(
    c: &Chart,
    regs: &'a [RegistryAccess],
) -> Result<Option<(&'a RegistryAccess, String)>, RegistryError> {
    if let Some(name) = &c.registry {
        let r = regs
            .iter()
            .find(|r| &r.name == name)
            .ok_or_else(|| RegistryError::Unknown {
                chart: c.name.clone(),
                name: name.clone(),
            })?;
        return Ok(Some((r, c.chart.trim_matches('/').to_string())));
    }
    let Some(repo) = c.repo.as_deref().filter(|r| r.starts_with("oci://")) else {
        return Ok(None);
    };
    let Some(host) = url_host(repo) else {
        return Ok(None);
    };
    let Some(r) = regs
        .iter()
        .find(|r| r.kind == RegistryKind::Oci && r.host().as_deref() == Some(host.as_str()))
    else {
        return Ok(None);
    };
    let path = repo
        .split_once("://")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, p)| p.trim_matches('/'))
        .unwrap_or("");
    let chart = c.chart.trim_matches('/');
    Ok(Some((
        r,
        if path.is_empty() {
            chart.to_string()
        } else {
            format!("{path}/{chart}")
        },
    )))
}

/// The charts of `a` that come from registries, fetched, verified and put in `cache`;
/// keyed by their index in `a.charts`.
pub fn resolve_charts(
    a: &AddonsLayer,
    regs: &[RegistryAccess],
    cache: &ArtifactCache,
    opts: &FetchOptions,
) -> Result<BTreeMap<usize, Resolved>, RegistryError> {
    let mut out = BTreeMap::new();
    for (i, c) in a.charts.iter().enumerate() {
        let Some((reg, name)) = chart_source(c, regs)? else {
            continue;
        };
        let client = client(reg, opts)?;
        let (bytes, resolved) = match reg.kind {
            RegistryKind::Helm => helm_chart(&client, reg, &name, &c.version)?,
            RegistryKind::Oci => oci_chart(&client, reg, &name, &c.version)?,
        };
        let sha = hex_digest(&bytes);
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let tmp = tempfile::NamedTempFile::new().map_err(|e| {
            RegistryError::Cache(ArtifactError::Invalid(format!("a temporary file: {e}")))
        })?;
        std::fs::write(tmp.path(), &bytes).map_err(|e| {
            RegistryError::Cache(ArtifactError::Invalid(format!("a temporary file: {e}")))
        })?;
        cache
            .import_file(tmp.path(), &digest)
            .map_err(RegistryError::Cache)?;
        tracing::info!(registry = %reg.name, chart = %name, version = %c.version, sha256 = %sha, "chart fetched from its registry and verified");
        out.insert(
            i,
            Resolved {
                sha256: sha,
                ..resolved
            },
        );
    }
    Ok(out)
}

fn hex_digest(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn client(reg: &RegistryAccess, opts: &FetchOptions) -> Result<Client, RegistryError> {
    let bad = |message: String| RegistryError::Bad {
        registry: reg.name.clone(),
        message,
    };
    let mut b = Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.idle_timeout.map(|d| d.max(Duration::from_secs(1))));
    for pem in reg.ca_pem.iter().chain(opts.ca_certs.iter()) {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| bad(format!("its CA certificate does not parse: {e}")))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| bad(format!("building the HTTP client: {e}")))
}

#[derive(Clone)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Auth {
    fn apply(&self, rb: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::None => rb,
            Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
            Auth::Bearer(t) => rb.bearer_auth(t),
        }
    }
}

fn basic(reg: &RegistryAccess) -> Auth {
    match (&reg.username, &reg.password) {
        (Some(u), Some(p)) => Auth::Basic(u.clone(), p.clone()),
        _ => Auth::None,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn get(
    client: &Client,
    reg: &RegistryAccess,
    what: &'static str,
    url: &str,
    auth: &Auth,
    accept: Option<&str>,
    max: usize,
) -> Result<Answer, RegistryError> {
    let transport = |e: &dyn std::fmt::Display| RegistryError::Transport {
        registry: reg.name.clone(),
        what,
        url: url.to_string(),
        message: e.to_string(),
    };
    let mut rb = auth.apply(client.get(url));
    if let Some(a) = accept {
        rb = rb.header(ACCEPT, a);
    }
    let resp = rb.send().map_err(|e| transport(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(RegistryError::TooLarge {
            registry: reg.name.clone(),
            what,
            max,
        });
    }
    let mut body = Vec::new();
    resp.take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| transport(&e))?;
    if body.len() > max {
        return Err(RegistryError::TooLarge {
            registry: reg.name.clone(),
            what,
            max,
        });
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn refused(
    reg: &RegistryAccess,
    what: &'static str,
    url: &str,
    status: StatusCode,
) -> RegistryError {
    RegistryError::Status {
        registry: reg.name.clone(),
        what,
        url: url.to_string(),
        status: status.as_u16(),
        hint: match status.as_u16() {
            401 | 403 => " (the registry refused the credentials the hub holds for it)",
            404 => " (not there: check the chart's name and version)",
            _ => "",
        },
    }
}

// ---- Helm repositories ----

fn helm_chart(
    client: &Client,
    reg: &RegistryAccess,
    chart: &str,
    version: &str,
) -> Result<(Vec<u8>, Resolved), RegistryError> {
    let bad = |message: String| RegistryError::Bad {
        registry: reg.name.clone(),
        message,
    };
    let base = reg.url.trim_end_matches('/');
    let index_url = format!("{base}/index.yaml");
    let auth = basic(reg);
    let a = get(
        client,
        reg,
        "the index",
        &index_url,
        &auth,
        None,
        MAX_INDEX_BYTES,
    )?;
    if !a.status.is_success() {
        return Err(refused(reg, "the index", &index_url, a.status));
    }
    let text = String::from_utf8(a.body).map_err(|_| bad("index.yaml is not UTF-8".into()))?;
    let docs = cairn_userdata::yaml::parse(&text)
        .map_err(|e| bad(format!("index.yaml:{}:{}: {e}", e.pos.line, e.pos.col)))?;
    let entries = docs
        .first()
        .and_then(|d| d.get("entries"))
        .ok_or_else(|| bad("index.yaml has no `entries`".into()))?;
    let not_found = || RegistryError::NotFound {
        registry: reg.name.clone(),
        chart: chart.to_string(),
        version: version.to_string(),
    };
    let list = match &entries.get(chart).ok_or_else(not_found)?.kind {
        cairn_userdata::yaml::NodeKind::Seq(l) => l,
        _ => return Err(bad(format!("index.yaml: `entries.{chart}` is not a list"))),
    };
    let want = version.trim_start_matches('v');
    let entry = list
        .iter()
        .find(|e| {
            e.get("version")
                .and_then(|v| v.scalar())
                .is_some_and(|v| v.trim_start_matches('v') == want)
        })
        .ok_or_else(not_found)?;
    let digest = entry
        .get("digest")
        .and_then(|d| d.scalar())
        .map(|d| d.trim_start_matches("sha256:").to_ascii_lowercase())
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            bad(format!(
                "index.yaml gives chart `{chart}` {version} no sha256 `digest`: it cannot be verified"
            ))
        })?;
    let first_url = match entry.get("urls").map(|u| &u.kind) {
        Some(cairn_userdata::yaml::NodeKind::Seq(l)) => l.first().and_then(|u| u.scalar()),
        _ => None,
    }
    .ok_or_else(|| {
        bad(format!(
            "index.yaml gives chart `{chart}` {version} no `urls`"
        ))
    })?;
    let url = if first_url.contains("://") {
        first_url.to_string()
    } else {
        format!("{base}/{}", first_url.trim_start_matches('/'))
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(bad(format!("the chart URL `{url}` is not http(s)")));
    }
    // Credentials go only to the repository's own host and scheme (as helm does by
    // default): never to another host, never over plain HTTP from an HTTPS repository.
    let chart_auth = if same_origin(&url, &reg.url) {
        auth
    } else {
        Auth::None
    };
    let a = get(
        client,
        reg,
        "the chart",
        &url,
        &chart_auth,
        None,
        MAX_CHART_BYTES,
    )?;
    if !a.status.is_success() {
        return Err(refused(reg, "the chart", &url, a.status));
    }
    let actual = hex_digest(&a.body);
    if actual != digest {
        return Err(RegistryError::Digest {
            registry: reg.name.clone(),
            chart: chart.to_string(),
            version: version.to_string(),
            expected: digest,
            actual,
        });
    }
    let file = safe_file_name(&super::url_file_name(&url))
        .unwrap_or_else(|| format!("{}-{want}.tgz", last_segment(chart)));
    Ok((
        a.body,
        Resolved {
            file,
            url,
            sha256: digest,
        },
    ))
}

/// Same scheme, host and port, as the HTTP client parses them (a hand split would read
/// `https://evil\\@repo/x` as the repository while the client connects to `evil`); a URL
/// carrying a user name or password never counts as the same origin.
fn same_origin(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (reqwest::Url::parse(a), reqwest::Url::parse(b)) else {
        return false;
    };
    a.username().is_empty()
        && a.password().is_none()
        && a.scheme() == b.scheme()
        && a.host_str().is_some()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn safe_file_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    ok.then(|| name.to_string())
}

// ---- OCI registries ----

/// The `Bearer` challenge's parameters, or `None` for another scheme.
fn bearer_challenge(headers: &HeaderMap) -> Option<BTreeMap<String, String>> {
    let h = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?;
    let (scheme, rest) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(k.trim().to_ascii_lowercase(), v.to_string());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

struct OciSession<'a> {
    client: &'a Client,
    reg: &'a RegistryAccess,
    auth: Auth,
}

impl OciSession<'_> {
    /// GET with the session's auth; on a 401, authenticate as the challenge asks and retry.
    fn get(
        &mut self,
        what: &'static str,
        url: &str,
        accept: Option<&str>,
        max: usize,
    ) -> Result<Answer, RegistryError> {
        let a = get(self.client, self.reg, what, url, &self.auth, accept, max)?;
        if a.status != StatusCode::UNAUTHORIZED {
            return Ok(a);
        }
        match bearer_challenge(&a.headers) {
            Some(params) => self.token(&params)?,
            None => {
                let b = basic(self.reg);
                if matches!(b, Auth::None) {
                    return Ok(a);
                }
                self.auth = b;
            }
        }
        get(self.client, self.reg, what, url, &self.auth, accept, max)
    }

    fn token(&mut self, params: &BTreeMap<String, String>) -> Result<(), RegistryError> {
        let bad = |message: String| RegistryError::Bad {
            registry: self.reg.name.clone(),
            message,
        };
        let realm = params
            .get("realm")
            .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
            .ok_or_else(|| bad("its Bearer challenge names no http(s) realm".into()))?;
        // Credentials of an HTTPS registry never travel over plain HTTP.
        if self.reg.url.starts_with("https://") && !realm.starts_with("https://") {
            return Err(bad(format!(
                "its token realm `{realm}` is not HTTPS; the credentials are not sent there"
            )));
        }
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| bad(format!("its token realm `{realm}`: {e}")))?;
        for k in ["service", "scope"] {
            if let Some(v) = params.get(k) {
                url.query_pairs_mut().append_pair(k, v);
            }
        }
        // Basic credentials are exchanged for a token; a registry token is offered as is.
        let cred = match (basic(self.reg), &self.reg.token) {
            (b @ Auth::Basic(..), _) => b,
            (_, Some(t)) => Auth::Bearer(t.clone()),
            _ => Auth::None,
        };
        let a = get(
            self.client,
            self.reg,
            "the token service",
            url.as_str(),
            &cred,
            None,
            MAX_TOKEN_BYTES,
        )?;
        if !a.status.is_success() {
            return Err(refused(self.reg, "the token service", realm, a.status));
        }
        let v: Value = serde_json::from_slice(&a.body)
            .map_err(|_| bad("the token service's answer is not JSON".into()))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the token service's answer has no token".into()))?;
        self.auth = Auth::Bearer(token.to_string());
        Ok(())
    }
}

fn oci_chart(
    client: &Client,
    reg: &RegistryAccess,
    repository: &str,
    version: &str,
) -> Result<(Vec<u8>, Resolved), RegistryError> {
    let bad = |message: String| RegistryError::Bad {
        registry: reg.name.clone(),
        message,
    };
    let valid_path = !repository.is_empty()
        && repository.split('/').all(|s| {
            !s.is_empty()
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
        });
    // OCI tags cannot hold `+`; helm pushes `1.0.0+x` as `1.0.0_x`.
    let tag = version.replace('+', "_");
    let valid_tag = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid_path || !valid_tag {
        return Err(bad(format!(
            "`{repository}:{version}` is not an OCI repository and tag"
        )));
    }
    let base = reg.url.trim_end_matches('/');
    let mut s = OciSession {
        client,
        reg,
        auth: match &reg.token {
            Some(t) => Auth::Bearer(t.clone()),
            None => Auth::None,
        },
    };
    let manifest_url = format!("{base}/v2/{repository}/manifests/{tag}");
    let a = s.get(
        "the manifest",
        &manifest_url,
        Some(OCI_MANIFEST),
        MAX_MANIFEST_BYTES,
    )?;
    if a.status == StatusCode::NOT_FOUND {
        return Err(RegistryError::NotFound {
            registry: reg.name.clone(),
            chart: repository.to_string(),
            version: version.to_string(),
        });
    }
    if !a.status.is_success() {
        return Err(refused(reg, "the manifest", &manifest_url, a.status));
    }
    // A manifest named by tag is checked against the digest the registry states for it.
    if let Some(d) = a
        .headers
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        let got = format!("sha256:{}", hex_digest(&a.body));
        if d.starts_with("sha256:") && d != got {
            return Err(bad(format!(
                "the manifest of {repository}:{tag} does not match its digest {d} (got {got})"
            )));
        }
    }
    let m: Value = serde_json::from_slice(&a.body)
        .map_err(|_| bad(format!("the manifest of {repository}:{tag} is not JSON")))?;
    let layer = m
        .get("layers")
        .and_then(Value::as_array)
        .and_then(|l| {
            l.iter()
                .find(|x| x.get("mediaType").and_then(Value::as_str) == Some(HELM_CHART_LAYER))
        })
        .ok_or_else(|| {
            bad(format!(
                "{repository}:{tag} is not a Helm chart (no `{HELM_CHART_LAYER}` layer)"
            ))
        })?;
    let digest = layer
        .get("digest")
        .and_then(Value::as_str)
        .and_then(|d| d.strip_prefix("sha256:"))
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            bad(format!(
                "the chart layer of {repository}:{tag} has no sha256 digest"
            ))
        })?;
    if layer
        .get("size")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > MAX_CHART_BYTES as u64)
    {
        return Err(RegistryError::TooLarge {
            registry: reg.name.clone(),
            what: "the chart",
            max: MAX_CHART_BYTES,
        });
    }
    let blob_url = format!("{base}/v2/{repository}/blobs/sha256:{digest}");
    let a = s.get("the chart", &blob_url, None, MAX_CHART_BYTES)?;
    if !a.status.is_success() {
        return Err(refused(reg, "the chart", &blob_url, a.status));
    }
    let actual = hex_digest(&a.body);
    if actual != digest {
        return Err(RegistryError::Digest {
            registry: reg.name.clone(),
            chart: repository.to_string(),
            version: version.to_string(),
            expected: digest,
            actual,
        });
    }
    Ok((
        a.body,
        Resolved {
            file: format!("{}-{}.tgz", last_segment(repository), tag),
            url: blob_url,
            sha256: digest,
        },
    ))
}

// ---- the container runtime ----

/// OCI registries' credentials and CAs merged into `values.registries.configs` (entries the
/// profile writes itself win), and the CA files to write. The flavors turn these into
/// `registries.yaml` (k3s/RKE2) or containerd's config and `hosts.toml` (kubeadm).
pub fn runtime_values(values: &mut Value, regs: &[RegistryAccess]) -> Vec<(String, String)> {
    let mut ca_files = Vec::new();
    for r in regs.iter().filter(|r| r.kind == RegistryKind::Oci) {
        let Some(host) = r.host() else { continue };
        let mut cfg = serde_json::Map::new();
        match (&r.username, &r.password, &r.token) {
            (Some(u), Some(p), _) => {
                cfg.insert("auth".into(), json!({"username": u, "password": p}));
            }
            (_, _, Some(t)) => {
                cfg.insert("auth".into(), json!({"identity_token": t}));
            }
            _ => {}
        }
        // The name becomes a file name: only a valid registry name does (the hub checks it
        // too; a `--registries` file or a hub of another make may not have).
        if r.ca_pem.is_some() && cairn_proto::profile::check_name(&r.name).is_err() {
            tracing::warn!(
                "registry {:?} is not a valid registry name: its CA is not written",
                r.name
            );
        }
        if let Some(ca) = r
            .ca_pem
            .as_ref()
            .filter(|_| cairn_proto::profile::check_name(&r.name).is_ok())
        {
            let path = format!("{CA_DIR}/{}-ca.pem", r.name);
            cfg.insert("tls".into(), json!({"ca_file": path}));
            ca_files.push((path, ca.clone()));
        }
        if cfg.is_empty() {
            continue;
        }
        if !values.is_object() {
            *values = json!({});
        }
        let Some(v) = values.as_object_mut() else {
            continue;
        };
        let regs_v = v.entry("registries").or_insert_with(|| json!({}));
        let Some(regs_m) = regs_v.as_object_mut() else {
            continue;
        };
        let configs = regs_m.entry("configs").or_insert_with(|| json!({}));
        if let Some(c) = configs.as_object_mut() {
            c.entry(host).or_insert(Value::Object(cfg));
        }
    }
    ca_files
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_go_only_to_the_origin_the_client_connects_to() {
        let repo = "https://r.example/charts";
        assert!(same_origin("https://r.example/charts/a-1.tgz", repo));
        assert!(same_origin("https://r.example:443/a.tgz", repo));
        assert!(!same_origin("https://evil.example\\@r.example/x.tgz", repo));
        assert!(!same_origin("https://user@r.example/x.tgz", repo));
        assert!(!same_origin("http://r.example/x.tgz", repo));
        assert!(!same_origin("https://r.example:8443/x.tgz", repo));
        assert!(!same_origin("https://r.example.evil/x.tgz", repo));
    }

    #[test]
    fn credentials_stay_on_their_origin() {
        assert!(same_origin(
            "https://r.example/charts/a.tgz",
            "https://r.example/stable"
        ));
        assert!(!same_origin("http://r.example/a.tgz", "https://r.example"));
        assert!(!same_origin(
            "https://cdn.example/a.tgz",
            "https://r.example"
        ));
        assert!(!same_origin(
            "https://r.example:8443/a.tgz",
            "https://r.example"
        ));
    }

    #[test]
    fn bearer_challenges_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            WWW_AUTHENTICATE,
            "Bearer realm=\"https://auth.example/token\",service=\"reg.example\",scope=\"repository:charts/a:pull\""
                .parse()
                .unwrap(),
        );
        let p = bearer_challenge(&h).unwrap();
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "reg.example");
        assert_eq!(p["scope"], "repository:charts/a:pull");
        h.insert(WWW_AUTHENTICATE, "Basic realm=\"x\"".parse().unwrap());
        assert!(bearer_challenge(&h).is_none());
    }

    #[test]
    fn oci_registries_become_runtime_configs_and_the_profile_wins() {
        let reg = |name: &str, url: &str| RegistryAccess {
            name: name.into(),
            kind: RegistryKind::Oci,
            url: url.into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
            username: Some("u".into()),
            password: Some("p".into()),
            token: None,
        };
        let mut values = json!({"registries": {"configs": {"mine.example": {"auth": {"username": "x", "password": "y"}}}}});
        let cas = runtime_values(
            &mut values,
            &[
                reg("a", "https://a.example:5000"),
                reg("m", "https://mine.example"),
            ],
        );
        assert_eq!(
            values["registries"]["configs"]["a.example:5000"]["auth"]["password"],
            "p"
        );
        assert_eq!(
            values["registries"]["configs"]["a.example:5000"]["tls"]["ca_file"],
            "/etc/cairn/registries/a-ca.pem"
        );
        assert_eq!(
            values["registries"]["configs"]["mine.example"]["auth"]["username"],
            "x"
        );
        assert_eq!(cas.len(), 2);
    }
}
