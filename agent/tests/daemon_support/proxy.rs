//! A proxy between `cairn-agent run` and the real hub that can lose answers: it terminates
//! the agent's TLS (its own test CA, on 127.0.0.1), forwards every request to the hub over
//! TLS, and hands the hub's answer back — or, for `POST /v1/register` when told to, reads
//! the hub's answer (so the hub has committed) and closes the agent's connection without
//! forwarding it: what a dropped link or a crash of the hub right after its commit looks
//! like from the device. It logs every exchange.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

/// One request the agent sent through the proxy.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    /// The hub's status; `None` when the hub could not be reached.
    pub status: Option<u16>,
    /// Whether the agent got the answer.
    pub delivered: bool,
}

/// A `POST /v1/register` answer held back: the test learns the hub's status on `answered`,
/// does what it wants (kill the hub), then sends on `release`; the answer is then dropped.
struct Hold {
    answered: mpsc::Sender<u16>,
    release: tokio::sync::oneshot::Receiver<()>,
}

#[derive(Default)]
struct State {
    drop_register_answers: u32,
    hold: Option<Hold>,
    log: Vec<Exchange>,
}

pub struct Proxy {
    pub port: u16,
    /// The CA the agent must trust to reach the proxy.
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    _rt: tokio::runtime::Runtime,
}

/// What the proxy does with the agent's connection when it drops an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer dropped by the test proxy")
    }
}

impl std::error::Error for Dropped {}

impl Proxy {
    /// Listen on a free port of 127.0.0.1 and forward to the hub at `upstream` (an
    /// `https://` endpoint whose certificate `upstream_ca_pem` signed).
    pub fn start(upstream: &str, upstream_ca_pem: &str) -> Proxy {
        let pki = crate::hub::pki();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.chain, pki.key)
            .unwrap();
        let tls = TlsAcceptor::from(Arc::new(config));
        let mut client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        for c in reqwest::Certificate::from_pem_bundle(upstream_ca_pem.as_bytes()).unwrap() {
            client = client.add_root_certificate(c);
        }
        let client = client.build().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                0,
            ))))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.trim_end_matches('/').to_string();
        let (st, tk) = (state.clone(), tasks.clone());
        let accept = rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (tls, state, client, upstream) =
                    (tls.clone(), st.clone(), client.clone(), upstream.clone());
                let conn = tokio::spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let (state, client, upstream) =
                            (state.clone(), client.clone(), upstream.clone());
                        async move { forward(req, &state, &client, &upstream).await }
                    });
                    // A `Dropped` error ends the connection without an answer.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                tk.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Proxy {
            port,
            ca_pem: pki.ca_pem,
            state,
            tasks,
            _rt: rt,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drop the hub's answer to the next `n` registrations.
    pub fn drop_register_answers(&self, n: u32) {
        self.state().drop_register_answers = n;
    }

    /// Hold the hub's answer to the next registration: the returned receiver gets the hub's
    /// status once the answer is in the proxy's hands; sending on the returned sender drops
    /// the answer (closes the agent's connection). If the agent closes the connection first,
    /// the answer is gone already and the send fails.
    pub fn hold_next_register(&self) -> (mpsc::Receiver<u16>, tokio::sync::oneshot::Sender<()>) {
        let (answered, seen) = mpsc::channel();
        let (go, release) = tokio::sync::oneshot::channel();
        self.state().hold = Some(Hold { answered, release });
        (seen, go)
    }

    pub fn log(&self) -> Vec<Exchange> {
        self.state().log.clone()
    }

    /// The exchanges for `path_end` (e.g. `/register`, `/heartbeat`).
    pub fn exchanges(&self, path_end: &str) -> Vec<Exchange> {
        self.log()
            .into_iter()
            .filter(|e| e.path.ends_with(path_end))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

const FORWARDED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "if-none-match",
    "user-agent",
];
const RETURNED_HEADERS: &[&str] = &["content-type", "etag", "cache-control", "retry-after"];

async fn forward(
    req: Request<Incoming>,
    state: &Mutex<State>,
    client: &reqwest::Client,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut out = client.request(
        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
        format!("{upstream}{path}"),
    );
    for name in FORWARDED_HEADERS {
        if let Some(v) = req.headers().get(*name) {
            out = out.header(*name, v.as_bytes());
        }
    }
    let body = Limited::new(req.into_body(), 2 << 20)
        .collect()
        .await
        .map_err(|_| Dropped)?
        .to_bytes();
    let record = |status: Option<u16>, delivered: bool| {
        state.lock().unwrap().log.push(Exchange {
            method: method.to_string(),
            path: path.clone(),
            status,
            delivered,
        });
    };
    // The hub unreachable (killed): the agent sees its connection closed, as it would.
    let answer = match out.body(body.to_vec()).send().await {
        Ok(a) => a,
        Err(_) => {
            record(None, false);
            return Err(Dropped);
        }
    };
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let Ok(bytes) = answer.bytes().await else {
        record(Some(status), false);
        return Err(Dropped);
    };
    if method == hyper::Method::POST && path.ends_with("/v1/register") {
        let hold = {
            let mut st = state.lock().unwrap();
            if let Some(hold) = st.hold.take() {
                Some(hold)
            } else if st.drop_register_answers > 0 {
                st.drop_register_answers -= 1;
                drop(st);
                record(Some(status), false);
                return Err(Dropped);
            } else {
                None
            }
        };
        if let Some(hold) = hold {
            // Logged now: if the agent goes away meanwhile, hyper drops this future.
            record(Some(status), false);
            let _ = hold.answered.send(status);
            let _ = hold.release.await;
            return Err(Dropped);
        }
    }
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    for name in RETURNED_HEADERS {
        if let Some(v) = headers.get(*name) {
            resp.headers_mut().insert(
                *name,
                hyper::header::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
    }
    record(Some(status), true);
    Ok(resp)
}
