//! The hub's `/v1` API as the agent uses it (docs/protocol.md; bodies in
//! `cairn_proto::protocol`), over reqwest's async client with rustls.
//!
//! TLS trusts the CA certificates of the `cairn:` block and nothing else (the system roots
//! only when the block names none). With a join string (`cairn.join`), it trusts exactly the
//! CA the string pins: [`HubClient::trust_pinned`] fetches it from `GET /v1/ca` (the one
//! request made without verifying the hub, and it carries nothing), checks its SHA-256
//! against the pin, keeps it in the state directory, and only then is any other request
//! possible. There is no way to turn verification off. Every request has connect and total
//! timeouts and every response body a size cap, so a slow or endless hub cannot hang the
//! agent; errors are classified so callers know whether to back off, wait for
//! `Retry-After`, or stop (401/403).

use std::sync::OnceLock;
use std::time::Duration;

use cairn_proto::protocol::{
    ErrorBody, EventAck, HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
    API_PREFIX,
};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::identity::{valid_host_id, Identity};
use super::settings::Settings;
use super::store::{self, StateDir};
use cairn_cli::report::redact_url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest profile the agent accepts from its hub.
pub const MAX_PROFILE_BYTES: usize = 8 * 1024 * 1024;
/// Largest answer to anything else.
const MAX_SMALL_BODY: usize = 256 * 1024;
/// Longest `Retry-After` honoured (a hub asking for more gets this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Largest answer to `GET /v1/ca`.
const MAX_CA_BYTES: usize = 64 * 1024;

/// Why a request did not succeed.
#[derive(Debug, Clone)]
pub enum HubError {
    /// No answer: DNS, connect, TLS, timeout, connection reset.
    Transport(String),
    /// 401 or 403: the token or credential is refused.
    Rejected {
        status: u16,
        reason: String,
        message: String,
    },
    /// 429 or 503: try again later, after `retry_after` when the hub said so.
    Busy {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Another 5xx.
    Server { status: u16, message: String },
    /// Another 4xx: this request will not succeed as it is.
    Refused {
        status: u16,
        reason: String,
        message: String,
    },
    /// A 2xx answer that does not parse or is too large.
    BadResponse(String),
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::Transport(m) => write!(f, "hub unreachable: {m}"),
            HubError::Rejected {
                status,
                reason,
                message,
            } => write!(f, "hub refused ({status} {reason}): {message}"),
            HubError::Busy {
                status,
                retry_after,
            } => match retry_after {
                Some(d) => write!(f, "hub busy ({status}); retry after {} s", d.as_secs()),
                None => write!(f, "hub busy ({status})"),
            },
            HubError::Server { status, message } => write!(f, "hub error {status}: {message}"),
            HubError::Refused {
                status,
                reason,
                message,
            } => write!(f, "hub refused the request ({status} {reason}): {message}"),
            HubError::BadResponse(m) => write!(f, "bad answer from the hub: {m}"),
        }
    }
}

/// Result of a profile fetch.
#[derive(Debug)]
pub enum ProfileFetch {
    /// 304: the profile held (its ETag was sent) is still the one assigned.
    NotModified,
    /// 404/204: nothing is assigned to this host.
    NoneAssigned,
    /// 200: a profile body (JSON) and its ETag.
    New { etag: String, body: Vec<u8> },
}

/// Why the pinned CA is not trusted (yet).
#[derive(Debug, Clone)]
pub enum TrustError {
    /// `GET /v1/ca` did not succeed; try again later.
    Hub(HubError),
    /// The hub's CA is not the one pinned (or not a certificate at all): nothing was sent.
    Mismatch(String),
}

impl std::fmt::Display for TrustError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustError::Hub(e) => write!(f, "fetching the hub's CA: {e}"),
            TrustError::Mismatch(m) => f.write_str(m),
        }
    }
}

pub struct HubClient {
    /// Set at construction, or once the pinned CA is established.
    http: OnceLock<reqwest::Client>,
    base: String,
    /// SHA-256 of the hub CA (DER), from the join string.
    pin: Option<[u8; 32]>,
    proxy: Option<String>,
}

impl HubClient {
    /// Build the client for `settings`; refuses bad CA certificates or proxy URLs. With a
    /// pinned CA, no request can be made before [`HubClient::trust_pinned`] succeeded.
    // String error: the daemon prints it and exits 1 (`run`); nobody branches on it.
    pub fn new(settings: &Settings) -> Result<HubClient, String> {
        let client = HubClient {
            http: OnceLock::new(),
            base: settings.endpoint.trim_end_matches('/').to_string(),
            pin: settings.ca_pin,
            proxy: settings.proxy.clone(),
        };
        if client.pin.is_some() {
            let _ = client.builder()?; // the proxy URL is checked now
        } else {
            let mut b = client
                .builder()?
                // The CAs given in the hub settings are the only ones trusted for the hub:
                // a public CA (or one an attacker planted in the OS store) cannot vouch for
                // an impostor. Without them, the system's roots (a hub with a public
                // certificate); never a bundled copy.
                .tls_built_in_native_certs(settings.ca_certs.is_empty());
            for (i, pem) in settings.ca_certs.iter().enumerate() {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| format!("CA certificate {} of the hub settings: {e}", i + 1))?;
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            let http = b
                .build()
                .map_err(|e| format!("setting up the HTTPS client: {}", chain(&e)))?;
            let _ = client.http.set(http);
        }
        Ok(client)
    }

    /// What every client to the hub has: TLS 1.2+, https only, no bundled roots, timeouts,
    /// no redirects, the proxy.
    fn builder(&self) -> Result<reqwest::ClientBuilder, String> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_webpki_certs(false)
            .tls_built_in_native_certs(false)
            .https_only(true)
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .read_timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cairn-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(p) = &self.proxy {
            let proxy =
                reqwest::Proxy::all(p).map_err(|e| format!("proxy `{}`: {e}", redact_url(p)))?;
            b = b.proxy(proxy);
        }
        Ok(b)
    }

    /// Trust the CA the join string pins, and nothing else: the copy kept in the state
    /// directory when it still matches the pin, else the one `GET /v1/ca` answers, checked
    /// against the pin before it is kept or used. Nothing secret is sent until this
    /// succeeds. Does nothing without a pin, or once done.
    pub async fn trust_pinned(&self, state: &StateDir) -> Result<(), TrustError> {
        let Some(pin) = self.pin else {
            return Ok(());
        };
        if self.http.get().is_some() {
            return Ok(());
        }
        let kept = std::fs::read(state.hub_ca()).ok();
        let der = match kept.as_deref().and_then(first_certificate) {
            Some(der) if pin_matches(&der, &pin) => der,
            _ => {
                let der = self.fetch_ca().await?;
                if !pin_matches(&der, &pin) {
                    return Err(TrustError::Mismatch(format!(
                        "the hub at {} presented a CA certificate ({}) that is not the one its \
                         join string pins; nothing was sent to it. Check that `cairn.join` is \
                         for this hub (`cairn-hub token create` prints it) and that nothing \
                         between this device and the hub intercepts TLS",
                        self.base,
                        subject(&der)
                    )));
                }
                if let Err(e) = store::write_atomic(&state.hub_ca(), pem(&der).as_bytes()) {
                    tracing::warn!("keeping the hub's CA in {}: {e}", state.hub_ca().display());
                }
                tracing::info!(
                    "the hub's CA ({}) matches the pin of the join string; trusting it, and \
                     only it, for the hub",
                    subject(&der)
                );
                der
            }
        };
        let ca = reqwest::Certificate::from_der(&der)
            .map_err(|e| TrustError::Mismatch(format!("the hub's CA is unusable: {e}")))?;
        let http = self
            .builder()
            .map_err(|e| TrustError::Hub(HubError::Transport(e)))?
            .add_root_certificate(ca)
            .build()
            .map_err(|e| {
                TrustError::Hub(HubError::Transport(format!(
                    "setting up the HTTPS client: {}",
                    chain(&e)
                )))
            })?;
        let _ = self.http.set(http);
        Ok(())
    }

    /// `GET /v1/ca` without verifying the hub (there is nothing to verify it with yet):
    /// no credential, no token, no body goes with it, and the answer is only a candidate
    /// until it matches the pin.
    async fn fetch_ca(&self) -> Result<Vec<u8>, TrustError> {
        let http = self
            .builder()
            .map_err(|e| TrustError::Hub(HubError::Transport(e)))?
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| TrustError::Hub(HubError::Transport(chain(&e))))?;
        let (_, _, body) = self
            .send_with(
                &http,
                Method::GET,
                &self.url("/ca"),
                None,
                None,
                &[],
                MAX_CA_BYTES,
            )
            .await
            .map_err(TrustError::Hub)?;
        first_certificate(&body).ok_or_else(|| {
            TrustError::Mismatch(format!(
                "the hub at {} answered GET {API_PREFIX}/ca with no PEM certificate, so nothing \
                 matches the pin of the join string; nothing was sent to it",
                self.base
            ))
        })
    }

    fn http(&self) -> Result<&reqwest::Client, HubError> {
        self.http.get().ok_or_else(|| {
            HubError::Transport("the hub's CA is not established yet (join string)".into())
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    /// `POST /v1/register`.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, HubError> {
        let body = serde_json::to_vec(req).map_err(|e| HubError::BadResponse(e.to_string()))?;
        let (_, _, bytes) = self
            .send(Method::POST, &self.url("/register"), None, Some(body), &[])
            .await?;
        let resp: RegisterResponse = parse(&bytes)?;
        if !valid_host_id(&resp.host_id) || resp.credential.is_empty() {
            return Err(HubError::BadResponse(
                "registration answer has no usable host id or credential".into(),
            ));
        }
        Ok(resp)
    }

    /// `POST /v1/hosts/{id}/heartbeat`.
    pub async fn heartbeat(
        &self,
        id: &Identity,
        req: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, HubError> {
        let body = serde_json::to_vec(req).map_err(|e| HubError::BadResponse(e.to_string()))?;
        let url = self.url(&format!("/hosts/{}/heartbeat", id.host_id));
        let (_, _, bytes) = self
            .send(Method::POST, &url, Some(id), Some(body), &[])
            .await?;
        parse(&bytes)
    }

    /// `GET /v1/hosts/{id}/profile` with `If-None-Match` when a profile is held.
    pub async fn profile(
        &self,
        id: &Identity,
        etag: Option<&str>,
    ) -> Result<ProfileFetch, HubError> {
        let url = self.url(&format!("/hosts/{}/profile", id.host_id));
        let mut extra = Vec::new();
        if let Some(e) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
            extra.push((IF_NONE_MATCH, e));
        }
        match self.send(Method::GET, &url, Some(id), None, &extra).await {
            Ok((StatusCode::NOT_MODIFIED, _, _)) => Ok(ProfileFetch::NotModified),
            Ok((StatusCode::NO_CONTENT, _, _)) => Ok(ProfileFetch::NoneAssigned),
            Ok((_, headers, body)) => {
                let digest = hex::encode(Sha256::digest(&body));
                let etag = headers
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("\"{digest}\""));
                // The hub's ETag is the SHA-256 of the body (docs/protocol.md): a body that
                // does not match it was damaged on the way.
                let tag = etag.trim_start_matches("W/").trim_matches('"');
                if tag.len() == 64 && tag.bytes().all(|b| b.is_ascii_hexdigit()) && tag != digest {
                    return Err(HubError::BadResponse(format!(
                        "the profile body does not match its ETag {etag} (sha256 {digest})"
                    )));
                }
                Ok(ProfileFetch::New { etag, body })
            }
            Err(HubError::Refused { status: 404, .. }) => Ok(ProfileFetch::NoneAssigned),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/hosts/{id}/registries`: the chart registries the assigned profile uses,
    /// with their credentials (docs/protocol.md, "Registries"). Never logged.
    pub async fn registries(
        &self,
        id: &Identity,
    ) -> Result<cairn_proto::registry::HostRegistries, HubError> {
        let url = self.url(&format!("/hosts/{}/registries", id.host_id));
        let (_, _, bytes) = self.send(Method::GET, &url, Some(id), None, &[]).await?;
        parse(&bytes)
    }

    /// `POST /v1/hosts/{id}/events` with a body already serialized (`{"events":[…]}`).
    pub async fn events(&self, id: &Identity, body: Vec<u8>) -> Result<EventAck, HubError> {
        let url = self.url(&format!("/hosts/{}/events", id.host_id));
        let (_, _, bytes) = self
            .send(Method::POST, &url, Some(id), Some(body), &[])
            .await?;
        parse(&bytes)
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        auth: Option<&Identity>,
        body: Option<Vec<u8>>,
        extra: &[(reqwest::header::HeaderName, HeaderValue)],
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), HubError> {
        let max = if method == Method::GET {
            MAX_PROFILE_BYTES
        } else {
            MAX_SMALL_BODY
        };
        self.send_with(self.http()?, method, url, auth, body, extra, max)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_with(
        &self,
        http: &reqwest::Client,
        method: Method,
        url: &str,
        auth: Option<&Identity>,
        body: Option<Vec<u8>>,
        extra: &[(reqwest::header::HeaderName, HeaderValue)],
        max: usize,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), HubError> {
        let mut req = http.request(method, url);
        if let Some(id) = auth {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", id.credential.expose()))
                .map_err(|_| {
                    HubError::BadResponse("the stored credential is not a header value".into())
                })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        for (k, v) in extra {
            req = req.header(k, v.clone());
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(b);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| HubError::Transport(chain(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| HubError::Transport(chain(&e)))?
        {
            if bytes.len() + chunk.len() > max {
                return Err(HubError::BadResponse(format!(
                    "the answer to {} is larger than {max} bytes",
                    path_of(url)
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            return Ok((status, headers, bytes));
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            error: status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase(),
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            problems: Vec::new(),
        });
        let code = status.as_u16();
        Err(match code {
            401 | 403 => HubError::Rejected {
                status: code,
                reason: err.error,
                message: err.message,
            },
            429 | 503 => HubError::Busy {
                status: code,
                retry_after: headers
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after),
            },
            500..=599 => HubError::Server {
                status: code,
                message: err.message,
            },
            _ => HubError::Refused {
                status: code,
                reason: err.error,
                message: err.message,
            },
        })
    }
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map_while(Result::ok)
        .find(|b| b.label == "CERTIFICATE")
        .map(|b| b.contents)
}

/// Does SHA-256(`der`) equal `pin`? (Compared in constant time.)
fn pin_matches(der: &[u8], pin: &[u8; 32]) -> bool {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .zip(pin)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A certificate's subject for messages: at most 120 printable characters (it comes from
/// whoever answered).
fn subject(der: &[u8]) -> String {
    let s = match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => c.subject().to_string(),
        Err(_) => return "not a certificate".into(),
    };
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(120)
        .collect();
    if clean.is_empty() {
        "no subject".into()
    } else {
        clean
    }
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HubError> {
    serde_json::from_slice(bytes).map_err(|e| HubError::BadResponse(e.to_string()))
}

fn path_of(url: &str) -> &str {
    url.find(API_PREFIX).map_or(url, |i| &url[i..])
}

/// `Retry-After`: delay-seconds or an HTTP-date; capped at an hour.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when =
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
        let secs = (when - time::OffsetDateTime::now_utc()).whole_seconds();
        Duration::from_secs(secs.max(0) as u64)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// An error and its causes on one line, with a hint when TLS failed on the clock.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    // rustls spells it `NotValidYet` (Debug) or "certificate not valid yet" (Display).
    if s.contains("NotValidYet") || s.contains("not valid yet") {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        s.push_str(&format!(
            " (the hub's certificate is not valid yet: is this device's clock right? it reads {now})"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
