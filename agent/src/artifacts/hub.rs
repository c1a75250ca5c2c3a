//! The hub as the artifact source (docs/kubernetes.md "The hub as the fleet's mirror"):
//! when the daemon applies a profile its hub assigned, every artifact is asked of the hub
//! first — `GET /v1/hosts/{id}/artifacts/{sha256}` over the same TLS trust as the hub
//! connection, with the host credential — and the pack files' digests too (`GET
//! /v1/hosts/{id}/artifacts`), so a device that reaches only its hub installs a profile
//! that names only versions. [`ArtifactSource`] says what happens when the hub cannot
//! serve a file.

use std::time::Duration;

use cairn_proto::protocol::{MirroredArtifacts, API_PREFIX};
use serde::{Deserialize, Serialize};

/// Where artifacts come from when a hub is known (`artifact_source` in
/// `/etc/cairn/packs.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactSource {
    /// The hub's mirror first; the upstream URL when the hub cannot serve a file (or its
    /// digest).
    #[default]
    HubFirst,
    /// The hub's mirror only: a file the hub cannot serve fails the apply (before anything
    /// is written). For sites whose devices must never reach the internet.
    HubOnly,
    /// Upstream only; the hub's mirror is not used.
    Upstream,
}

/// The hub an agent is registered with, as an artifact source.
#[derive(Clone)]
pub struct HubSource {
    /// `https://host[:port][/prefix]`, without a trailing slash.
    pub endpoint: String,
    pub host_id: String,
    /// The host credential (sent as a bearer token; never logged).
    pub credential: String,
    /// PEM CA certificates trusted for the hub — the pinned CA, or those of the hub
    /// settings; empty: the system's roots.
    pub ca_certs: Vec<String>,
    pub proxy: Option<String>,
    pub policy: ArtifactSource,
}

impl std::fmt::Debug for HubSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSource")
            .field("endpoint", &self.endpoint)
            .field("host_id", &self.host_id)
            .field("credential", &"<redacted>")
            .field("ca_certs", &self.ca_certs.len())
            .field("policy", &self.policy)
            .finish()
    }
}

/// Largest answer to `GET /v1/hosts/{id}/artifacts`.
const MAX_LIST: u64 = 8 << 20;

impl HubSource {
    /// Where the hub serves the file with digest `hex`.
    pub fn artifact_url(&self, hex: &str) -> String {
        format!(
            "{}{API_PREFIX}/hosts/{}/artifacts/{hex}",
            self.endpoint, self.host_id
        )
    }

    /// `Authorization` header value.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.credential)
    }

    /// A client that trusts the hub's CA (and only it, when one is given), HTTPS only.
    pub fn client(
        &self,
        connect_timeout: Duration,
        idle_timeout: Option<Duration>,
    ) -> Result<reqwest::blocking::Client, String> {
        let mut b = reqwest::blocking::Client::builder()
            .https_only(true)
            .connect_timeout(connect_timeout)
            .timeout(idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cairn-agent/", env!("CARGO_PKG_VERSION")));
        if !self.ca_certs.is_empty() {
            b = b.tls_built_in_root_certs(false);
        }
        for pem in &self.ca_certs {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| format!("the hub's CA certificate: {e}"))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some(p) = &self.proxy {
            let proxy = reqwest::Proxy::all(p)
                .map_err(|e| format!("proxy `{}`: {e}", cairn_cli::report::redact_url(p)))?;
            b = b.proxy(proxy);
        }
        b.build()
            .map_err(|e| format!("building the HTTPS client for the hub: {e}"))
    }

    /// `GET /v1/hosts/{id}/artifacts`: the files of the profile the hub assigns this host,
    /// with the digests the hub resolved.
    pub fn list(&self, connect_timeout: Duration) -> Result<MirroredArtifacts, String> {
        use std::io::Read;
        let client = self.client(connect_timeout, Some(Duration::from_secs(120)))?;
        let url = format!(
            "{}{API_PREFIX}/hosts/{}/artifacts",
            self.endpoint, self.host_id
        );
        let resp = client
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, self.authorization())
            .send()
            .map_err(|e| format!("asking the hub for the profile's artifacts: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!(
                "the hub answered {status} for the profile's artifacts"
            ));
        }
        let mut body = Vec::new();
        resp.take(MAX_LIST + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the hub's artifact list: {e}"))?;
        if body.len() as u64 > MAX_LIST {
            return Err(format!(
                "the hub's artifact list is larger than {MAX_LIST} bytes"
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("the hub's artifact list: {e}"))
    }
}
