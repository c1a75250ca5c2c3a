//! A minimal hub for the daemon's tests: the `/v1` API of docs/protocol.md (bodies from
//! `cairn_proto::protocol`) over TLS on 127.0.0.1, with a test CA made by `rcgen`.
//!
//! It records every request and every event received (duplicates included), and can
//! assign profiles, answer 503 + Retry-After, or fail every other request with 500.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use cairn_proto::protocol::{
    ErrorBody, EventAck, EventBatch, HeartbeatRequest, HeartbeatResponse, Inventory,
    RegisterRequest, RegisterResponse,
};
use cairn_proto::Event;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpSocket;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone, Default)]
pub struct Token {
    pub revoked: bool,
    pub expired: bool,
}

#[derive(Debug, Clone)]
pub struct HostRec {
    pub id: String,
    pub credential: String,
    pub revoked: bool,
    pub inventory: Option<Inventory>,
    pub heartbeats: u32,
}

#[derive(Debug, Clone)]
pub struct RequestRec {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: Instant,
}

#[derive(Default)]
pub struct State {
    pub tokens: HashMap<String, Token>,
    pub hosts: Vec<HostRec>,
    /// Stored events per host, first arrival only (what the hub "shows").
    pub events: HashMap<String, Vec<Event>>,
    /// Every (host, seq) received, duplicates included.
    pub received: Vec<(String, u64)>,
    pub requests: Vec<RequestRec>,
    /// The profile assigned to every host, as served, and its ETag.
    pub profile: Option<(Value, String)>,
    /// Answer the next N requests with 503 and this Retry-After (seconds).
    pub busy: Option<(usize, u64)>,
    /// Fail every other request with 500; an event batch is stored first (a lost ack).
    pub flaky: bool,
    flaky_toggle: bool,
    flaky_events_toggle: bool,
    /// The CA of the certificate served (PEM).
    ca_pem: String,
    pub tls_failures: usize,
    /// What `GET /v1/ca` answers (PEM); `None`: the CA of the certificate served.
    pub ca_answer: Option<String>,
}

pub struct TestHub {
    pub addr: SocketAddr,
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    tls: TlsAcceptor,
    rt: tokio::runtime::Runtime,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

/// A test CA and a hub certificate for 127.0.0.1/localhost signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A CA (PEM) and a server certificate chain + key for 127.0.0.1/localhost signed by it.
pub fn make_pki() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let p = pki();
    (p.ca_pem, p.chain, p.key)
}

pub fn pki() -> Pki {
    pki_server_valid_from(None)
}

/// A test PKI whose server certificate becomes valid only at `not_before` (if given): what
/// a device whose clock is behind sees.
pub fn pki_server_valid_from(not_before: Option<time::OffsetDateTime>) -> Pki {
    pki_server(
        &["localhost"],
        true,
        not_before.map(|t| (t, t + time::Duration::days(365))),
    )
}

/// A test PKI whose server certificate names `names` (and 127.0.0.1 when `loopback_ip`),
/// valid over `validity` when given.
pub fn pki_server(
    names: &[&str],
    loopback_ip: bool,
    validity: Option<(time::OffsetDateTime, time::OffsetDateTime)>,
) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "Cairn test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    if loopback_ip {
        p.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
    p.distinguished_name.push(DnType::CommonName, "cairn-hub");
    if let Some((from, to)) = validity {
        p.not_before = from;
        p.not_after = to;
    }
    let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        chain: vec![CertificateDer::from(cert.der().to_vec())],
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &ErrorBody {
            error: code.into(),
            message: message.into(),
            problems: Vec::new(),
        },
    )
}

fn random_hex() -> String {
    format!(
        "{:016x}{:016x}",
        cairn_agent::daemon::backoff::random_u64(),
        cairn_agent::daemon::backoff::random_u64()
    )
}

impl TestHub {
    /// Start on a free port with the given valid registration tokens.
    pub fn start(tokens: &[&str]) -> TestHub {
        let (ca_pem, chain, key) = make_pki();
        Self::start_with(tokens, ca_pem, chain, key)
    }

    pub fn start_with(
        tokens: &[&str],
        ca_pem: String,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> TestHub {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut state = State {
            ca_pem: ca_pem.clone(),
            ..State::default()
        };
        for t in tokens {
            state.tokens.insert(t.to_string(), Token::default());
        }
        let mut hub = TestHub {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ca_pem,
            state: Arc::new(Mutex::new(state)),
            tls: TlsAcceptor::from(Arc::new(config)),
            rt,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        hub.listen();
        hub
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listen(&mut self) {
        let addr = self.addr;
        let listener = self.rt.block_on(async move {
            let sock = TcpSocket::new_v4().unwrap();
            sock.set_reuseaddr(true).unwrap();
            sock.bind(addr).unwrap();
            sock.listen(64).unwrap()
        });
        self.addr = listener.local_addr().unwrap();
        let tls = self.tls.clone();
        let state = self.state.clone();
        let tasks = self.tasks.clone();
        let accept = self.rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let tls = tls.clone();
                let state = state.clone();
                let conn = tokio::spawn(async move {
                    let stream = match tls.accept(tcp).await {
                        Ok(s) => s,
                        Err(_) => {
                            state.lock().unwrap().tls_failures += 1;
                            return;
                        }
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Assign a profile (the JSON a hub serves) to every host.
    pub fn assign(&self, profile: Value) {
        let etag = format!("\"{}-{}\"", profile["version"], &random_hex()[..8]);
        self.state().profile = Some((profile, etag));
    }

    pub fn hosts(&self) -> Vec<HostRec> {
        self.state().hosts.clone()
    }

    pub fn events(&self, host: &str) -> Vec<Event> {
        self.state().events.get(host).cloned().unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<RequestRec> {
        self.state().requests.clone()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let if_none_match = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large"),
    };
    let mut st = state.lock().unwrap();
    let resp = route(
        &mut st,
        &method,
        &path,
        auth.as_deref(),
        if_none_match.as_deref(),
        &body,
    );
    st.requests.push(RequestRec {
        method,
        path,
        status: resp.status().as_u16(),
        at: Instant::now(),
    });
    resp
}

fn route(
    st: &mut State,
    method: &str,
    path: &str,
    auth: Option<&str>,
    if_none_match: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if let Some((n, secs)) = st.busy {
        st.busy = if n > 1 { Some((n - 1, secs)) } else { None };
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "busy", "try later");
        r.headers_mut()
            .insert("retry-after", secs.to_string().parse().unwrap());
        return r;
    }
    // Event batches and other requests alternate separately, so the first batch always
    // fails (after being stored) and the first registration too.
    let is_events = path.ends_with("/events");
    let fail = st.flaky && {
        let t = if is_events {
            &mut st.flaky_events_toggle
        } else {
            &mut st.flaky_toggle
        };
        *t = !*t;
        *t
    };
    if fail && !is_events {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "flaky");
    }
    let resp = serve(st, method, path, auth, if_none_match, body);
    if fail {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "flaky (batch stored)",
        );
    }
    resp
}

fn serve(
    st: &mut State,
    method: &str,
    path: &str,
    auth: Option<&str>,
    if_none_match: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["v1", "ca"]) => {
            let pem = st.ca_answer.clone().unwrap_or_else(|| st.ca_pem.clone());
            Response::new(Full::new(Bytes::from(pem)))
        }
        ("POST", ["v1", "register"]) => {
            let Ok(req) = serde_json::from_slice::<RegisterRequest>(body) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "not a register request",
                );
            };
            match st.tokens.get(&req.token) {
                None => error(StatusCode::UNAUTHORIZED, "token_rejected", "unknown token"),
                Some(t) if t.revoked => error(
                    StatusCode::UNAUTHORIZED,
                    "token_rejected",
                    "the token was revoked",
                ),
                Some(t) if t.expired => error(
                    StatusCode::UNAUTHORIZED,
                    "token_rejected",
                    "the token has expired",
                ),
                Some(_) => {
                    let host = HostRec {
                        id: format!("h{}", st.hosts.len() + 1),
                        credential: random_hex(),
                        revoked: false,
                        inventory: Some(req.inventory),
                        heartbeats: 0,
                    };
                    let resp = RegisterResponse {
                        host_id: host.id.clone(),
                        credential: host.credential.clone(),
                        heartbeat_interval_secs: 1,
                    };
                    st.hosts.push(host);
                    json_response(StatusCode::CREATED, &resp)
                }
            }
        }
        (_, ["v1", "hosts", id, what]) => {
            let Some(host) = st.hosts.iter_mut().find(|h| h.id == *id) else {
                return error(StatusCode::FORBIDDEN, "forbidden", "not your host");
            };
            if host.revoked || auth != Some(host.credential.as_str()) {
                return error(StatusCode::UNAUTHORIZED, "unauthorized", "bad credential");
            }
            let id = host.id.clone();
            match (method, *what) {
                ("POST", "heartbeat") => {
                    let Ok(req) = serde_json::from_slice::<HeartbeatRequest>(body) else {
                        return error(StatusCode::BAD_REQUEST, "bad_request", "not a heartbeat");
                    };
                    host.heartbeats += 1;
                    if let Some(inv) = req.inventory {
                        host.inventory = Some(inv);
                    }
                    let (version, name, etag) = match &st.profile {
                        Some((p, e)) => (
                            p["version"].as_u64(),
                            p["name"].as_str().map(str::to_string),
                            Some(e.clone()),
                        ),
                        None => (None, None, None),
                    };
                    json_response(
                        StatusCode::OK,
                        &HeartbeatResponse {
                            profile_version: version,
                            profile_name: name,
                            profile_etag: etag,
                            heartbeat_interval_secs: 1,
                        },
                    )
                }
                ("GET", "profile") => match &st.profile {
                    None => error(StatusCode::NOT_FOUND, "no_profile", "nothing assigned"),
                    Some((_, e)) if if_none_match == Some(e.as_str()) => {
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::NOT_MODIFIED;
                        r.headers_mut().insert("etag", e.parse().unwrap());
                        r
                    }
                    Some((p, e)) => {
                        let mut r = json_response(StatusCode::OK, p);
                        r.headers_mut().insert("etag", e.parse().unwrap());
                        r
                    }
                },
                ("POST", "events") => {
                    let Ok(batch) = serde_json::from_slice::<EventBatch>(body) else {
                        return error(StatusCode::BAD_REQUEST, "bad_request", "not an event batch");
                    };
                    let mut ack = EventAck::default();
                    for ev in batch.events {
                        st.received.push((id.clone(), ev.seq));
                        ack.acked_seq = ack.acked_seq.max(ev.seq);
                        let stored = st.events.entry(id.clone()).or_default();
                        if stored.iter().any(|e| e.seq == ev.seq) {
                            ack.duplicates += 1;
                        } else {
                            ack.accepted += 1;
                            stored.push(ev);
                        }
                    }
                    json_response(StatusCode::OK, &ack)
                }
                _ => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such route"),
    }
}
