#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Connections that never send a request, or never finish one, cannot take the hub down.
//!
//! The `cairn-hub` binary runs with its open-files limit pinned to 1024 (soft and hard, via
//! util-linux's `prlimit`), so raising soft to hard gains nothing and only the hub's caps
//! and timeouts stand between 2,000 hostile connections and file-descriptor exhaustion.
//! Hostile connections come from 127.0.0.2… (Linux routes all of 127/8 to `lo`), the
//! agents' heartbeats (reqwest over TLS, as an agent sends them) from 127.0.0.1, so the
//! per-address cap can refuse the former without touching the latter. Every figure is
//! measured here: heartbeat latency (p99 < 1 s) and how long each hostile connection lived
//! (within the configured timeout). Short timeouts come from the command line; the defaults
//! are checked by the unit tests in `src/server.rs` and `src/cli.rs`.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_cairn-hub");
const ADMIN: &str = "conn-limits-admin-token-0123456";

/// The load tests share two cores; run them one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test process holds thousands of sockets too: raise its own soft limit.
fn raise_own_fd_limit(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= need,
        "this test needs {need} open files; the hard limit is {hard} (raise it, e.g. `ulimit -Hn {need}` as root)"
    );
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
}

// --------------------------------------------------------------------------------------
// The hub process

struct HubProcess {
    child: Child,
    port: u16,
    ca_pem: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HubProcess {
    /// Start `cairn-hub serve` over TLS on a free 127.0.0.1 port, under `prlimit
    /// --nofile=SOFT:HARD` when `nofile` is given.
    async fn start(nofile: Option<(u64, u64)>, flags: &[&str]) -> HubProcess {
        let dir = tempfile::tempdir().unwrap();
        let pki = common::tls::make(dir.path());
        let admin_file = dir.path().join("admin-token");
        std::fs::write(&admin_file, ADMIN).unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&admin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("hub.log");
        let mut cmd = match nofile {
            Some((soft, hard)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={soft}:{hard}")).arg("--").arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("--db")
            .arg(dir.path().join("hub.db"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .arg("--admin-token-file")
            .arg(&admin_file)
            .args(flags)
            .env_remove("CAIRN_HUB_DB")
            .env_remove("CAIRN_HUB_ADMIN_TOKEN")
            .env("CAIRN_HUB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("starting the hub (prlimit comes with util-linux, BIN {BIN}): {e}")
        });
        let mut hub = HubProcess {
            child,
            port,
            ca_pem: pki.ca_pem,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = hub.child.try_wait().unwrap() {
                panic!(
                    "cairn-hub serve exited early ({status}):\n{}",
                    hub.log_text()
                );
            }
            // An HTTPS request, not a bare TCP connect: listening and serving.
            if let Ok(r) = common::tls::client(&hub.ca_pem)
                .get(hub.url("/v1/nope"))
                .send()
                .await
            {
                assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
                break;
            }
            assert!(Instant::now() < deadline, "the hub did not start serving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hub
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Register `n` hosts; their ids and credentials.
    async fn register(&self, n: usize) -> Vec<Agent> {
        let client = common::tls::client(&self.ca_pem);
        let r = client
            .post(self.url("/v1/admin/tokens"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(json!({"name": "load"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        let token: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        let token = token["token"].as_str().unwrap().to_owned();
        let mut agents = Vec::new();
        for i in 0..n {
            let r = client
                .post(self.url("/v1/register"))
                .header("content-type", "application/json")
                .body(
                    json!({"token": token, "name": format!("edge-{i}"),
                           "inventory": {"cpu": {"model": "Test", "cores": 2}, "arch": "amd64",
                                         "agent_version": "0.1.0"}})
                    .to_string(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), reqwest::StatusCode::CREATED);
            let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            agents.push(Agent {
                id: body["host_id"].as_str().unwrap().to_owned(),
                credential: body["credential"].as_str().unwrap().to_owned(),
            });
        }
        agents
    }
}

// --------------------------------------------------------------------------------------
// Agents: heartbeats over TLS, timed

fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = (v.len() * p).div_ceil(100).clamp(1, v.len().max(1)) - 1;
    v.get(i).copied().unwrap_or_default()
}

#[derive(Clone)]
struct Agent {
    id: String,
    credential: String,
}

#[derive(Default)]
struct Heartbeats {
    latencies: Vec<Duration>,
    /// Those over a new connection.
    fresh: Vec<Duration>,
    failures: Vec<String>,
}

impl Heartbeats {
    fn percentile(&self, p: usize) -> Duration {
        percentile(&self.latencies, p)
    }

    fn summary(&self) -> String {
        format!(
            "{} heartbeats, {} failed; p50 {:?}, p99 {:?}, max {:?} (over a new connection: p50 {:?}, p99 {:?})",
            self.latencies.len(),
            self.failures.len(),
            self.percentile(50),
            self.percentile(99),
            self.latencies.iter().max().unwrap(),
            percentile(&self.fresh, 50),
            percentile(&self.fresh, 99),
        )
    }
}

/// Until `stop` flips: each agent heartbeats every 100 ms, half of them over one kept
/// connection (as the agent does), half over a new connection each time (a new TLS
/// handshake has to get through the accept queue).
async fn heartbeat_until(
    hub_url: String,
    ca_pem: String,
    agents: Vec<Agent>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Heartbeats {
    let mut tasks = Vec::new();
    for (i, agent) in agents.into_iter().enumerate() {
        let fresh_each_time = i % 2 == 1;
        let url = format!("{hub_url}/v1/hosts/{}/heartbeat", agent.id);
        let ca_pem = ca_pem.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Heartbeats::default();
            let kept = common::tls::client(&ca_pem);
            while !*stop.borrow() {
                let client = if fresh_each_time {
                    common::tls::client(&ca_pem)
                } else {
                    kept.clone()
                };
                let started = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(&agent.credential)
                    .header("content-type", "application/json")
                    .body("{}")
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await;
                let result = match r {
                    Ok(r) if r.status().is_success() => r.bytes().await.map(|_| ()),
                    Ok(r) => {
                        out.failures.push(format!("status {}", r.status()));
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    out.failures.push(format!("{e:?}"));
                }
                out.latencies.push(started.elapsed());
                if fresh_each_time {
                    out.fresh.push(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            out
        }));
    }
    let mut all = Heartbeats::default();
    for t in tasks {
        let h = t.await.unwrap();
        all.latencies.extend(h.latencies);
        all.fresh.extend(h.fresh);
        all.failures.extend(h.failures);
    }
    all
}

// --------------------------------------------------------------------------------------
// Hostile connections, written frame by frame

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// TLS with ALPN `h2`, then not a byte.
    TlsH2Silent,
    /// TLS with ALPN `http/1.1`, then not a byte.
    TlsHttp11Silent,
    /// The HTTP/2 preface and a SETTINGS frame, then nothing (PINGs unanswered).
    PrefaceSettings,
    /// HEADERS without END_HEADERS (a CONTINUATION that never comes).
    HeadersNoEnd,
    /// A request whose body never ends; PINGs and SETTINGS answered like a live client.
    BodyNeverEndsLive,
    /// A request whose body never ends, and nothing answered.
    BodyNeverEndsSilent,
    /// HTTP/1.1 (by ALPN): half a request head, then nothing.
    Http11HalfHead,
    /// One complete HTTP/2 request, then idle (PINGs answered): the idle timer.
    H2IdleAfterRequest,
}

const KINDS: [Kind; 8] = [
    Kind::TlsH2Silent,
    Kind::TlsHttp11Silent,
    Kind::PrefaceSettings,
    Kind::HeadersNoEnd,
    Kind::BodyNeverEndsLive,
    Kind::BodyNeverEndsSilent,
    Kind::Http11HalfHead,
    Kind::H2IdleAfterRequest,
];

impl Kind {
    fn http11(self) -> bool {
        matches!(self, Kind::TlsHttp11Silent | Kind::Http11HalfHead)
    }

    /// Answers PINGs and SETTINGS like a live HTTP/2 client.
    fn live(self) -> bool {
        matches!(self, Kind::BodyNeverEndsLive | Kind::H2IdleAfterRequest)
    }
}

/// The hub's timeouts in the load tests.
struct Timeouts {
    header: u64,
    idle: u64,
    request: u64,
    ping_every: u64,
    ping_within: u64,
}

impl Timeouts {
    fn flags(&self) -> Vec<String> {
        [
            ("--tls-handshake-timeout", self.header),
            ("--header-timeout", self.header),
            ("--idle-timeout", self.idle),
            ("--request-timeout", self.request),
            ("--h2-keepalive-interval", self.ping_every),
            ("--h2-keepalive-timeout", self.ping_within),
        ]
        .iter()
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect()
    }

    /// How long a hostile connection of `kind` may live after its last byte, by the rules
    /// of src/server.rs, and the shortest it must (where one timer alone decides).
    fn bounds(&self, kind: Kind) -> (Duration, Duration) {
        let s = Duration::from_secs;
        match kind {
            // No request: the header timer.
            Kind::TlsH2Silent
            | Kind::TlsHttp11Silent
            | Kind::PrefaceSettings
            | Kind::HeadersNoEnd
            | Kind::Http11HalfHead => (s(self.header) - Duration::from_millis(300), s(self.header)),
            // The idle timer, then a graceful close the client completes. (The client's
            // clock starts when its request is written, the server's timer when the answer
            // is; a few ms of timer rounding can make the lifetime seen here a hair shorter.)
            Kind::H2IdleAfterRequest => (
                s(self.idle) - Duration::from_millis(50),
                s(self.idle + self.ping_within),
            ),
            // 408 at the request timeout, then idle, then a graceful close the client
            // completes, or the grace period ends it.
            Kind::BodyNeverEndsLive => (
                s(self.request),
                s(self.request + self.idle + self.ping_within),
            ),
            // Unanswered PINGs end it at the latest.
            Kind::BodyNeverEndsSilent => (
                Duration::ZERO,
                s(self.ping_every + self.ping_within)
                    .min(s(self.request + self.idle + self.ping_within)),
            ),
        }
    }
}

/// Time the hub is allowed beyond a timer, on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// HPACK for `POST https://localhost/v1/register`, `content-type: application/json`:
/// static-table methods and scheme, literal path, authority and content type.
fn register_headers() -> Vec<u8> {
    hpack(
        0x83,
        &[
            (4, b"/v1/register"),
            (1, b"localhost"),
            (31, b"application/json"),
        ],
    )
}

/// HPACK for `GET https://localhost/v1/nope` (a 404).
fn nope_headers() -> Vec<u8> {
    hpack(0x82, &[(4, b"/v1/nope"), (1, b"localhost")])
}

/// An HPACK block: `method` (an indexed static-table field), `:scheme https`, and literal
/// values for static-table names.
fn hpack(method: u8, fields: &[(u8, &[u8])]) -> Vec<u8> {
    let mut b = vec![method, 0x87];
    for &(index, value) in fields {
        b.push(0x40 | index);
        b.push(u8::try_from(value.len()).unwrap());
        b.extend_from_slice(value);
    }
    b
}

fn tls_connector(ca_pem: &str, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

struct Attacker {
    hub: SocketAddr,
    h2: TlsConnector,
    http11: TlsConnector,
    /// Connections through their TLS handshake, or refused.
    settled: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug)]
enum Attack {
    /// The hub closed the connection before or during the TLS handshake.
    Refused,
    /// It served the handshake, then closed the connection this long after the last byte
    /// sent.
    Closed(Duration),
}

impl Attacker {
    fn new(hub: SocketAddr, ca_pem: &str) -> Attacker {
        Attacker {
            hub,
            h2: tls_connector(ca_pem, b"h2"),
            http11: tls_connector(ca_pem, b"http/1.1"),
            settled: Arc::default(),
        }
    }

    /// One hostile connection of `kind` from `source`, held until the hub closes it.
    async fn once(&self, kind: Kind, source: Ipv4Addr) -> Attack {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let settled = || {
            self.settled
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        };
        let Ok(tcp) = socket.connect(self.hub).await else {
            settled();
            return Attack::Refused;
        };
        let connector = if kind.http11() {
            &self.http11
        } else {
            &self.h2
        };
        let name = ServerName::try_from("localhost").unwrap();
        let handshake = connector.connect(name, tcp).await;
        settled();
        let Ok(mut tls) = handshake else {
            return Attack::Refused;
        };
        let want: &[u8] = if kind.http11() { b"http/1.1" } else { b"h2" };
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(want));
        let settings = frame(SETTINGS, 0, 0, &[]);
        let bytes: Vec<u8> = match kind {
            Kind::TlsH2Silent | Kind::TlsHttp11Silent => Vec::new(),
            Kind::PrefaceSettings => [PREFACE, &settings].concat(),
            Kind::HeadersNoEnd => [
                PREFACE,
                &settings,
                &frame(HEADERS, 0, 1, &register_headers()),
            ]
            .concat(),
            Kind::Http11HalfHead => {
                b"POST /v1/register HTTP/1.1\r\nHost: localhost\r\nContent-Ty".to_vec()
            }
            Kind::H2IdleAfterRequest => [
                PREFACE,
                &settings,
                &frame(HEADERS, END_HEADERS | END_STREAM, 1, &nope_headers()),
            ]
            .concat(),
            Kind::BodyNeverEndsLive | Kind::BodyNeverEndsSilent => [
                PREFACE,
                &settings,
                &frame(HEADERS, END_HEADERS, 1, &register_headers()),
                &frame(DATA, 0, 1, b"{\"tok"),
            ]
            .concat(),
        };
        if tls.write_all(&bytes).await.is_err() || tls.flush().await.is_err() {
            return Attack::Refused;
        }
        let last_sent = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return Attack::Closed(last_sent.elapsed()),
                Ok(n) if kind.live() => {
                    pending.extend_from_slice(&buf[..n]);
                    // Answer PINGs and SETTINGS, ignore the rest (the 408, RST_STREAM,
                    // GOAWAY, WINDOW_UPDATE).
                    while pending.len() >= 9 {
                        let len = usize::from(pending[0]) << 16
                            | usize::from(pending[1]) << 8
                            | usize::from(pending[2]);
                        if pending.len() < 9 + len {
                            break;
                        }
                        let (ty, flags) = (pending[3], pending[4]);
                        let payload = pending[9..9 + len].to_vec();
                        pending.drain(..9 + len);
                        let answer = match ty {
                            PING if flags & ACK == 0 => frame(PING, ACK, 0, &payload),
                            SETTINGS if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
                            _ => continue,
                        };
                        if tls.write_all(&answer).await.is_err() {
                            return Attack::Closed(last_sent.elapsed());
                        }
                    }
                }
                Ok(_) => {}
            }
        }
    }
}

/// What a batch of hostile connections saw.
#[derive(Debug, Default)]
struct AttackReport {
    refused: usize,
    lived: BTreeMap<Kind, Vec<Duration>>,
}

impl AttackReport {
    fn served(&self) -> usize {
        self.lived.values().map(Vec::len).sum()
    }

    fn summary(&self) -> String {
        let mut s = format!("{} refused", self.refused);
        for (kind, v) in &self.lived {
            s.push_str(&format!(
                "; {kind:?}: {} closed after {:?}…{:?}",
                v.len(),
                v.iter().min().unwrap(),
                v.iter().max().unwrap()
            ));
        }
        s
    }

    /// Every served connection of each kind was closed within its bounds (+ slack).
    fn assert_within(&self, t: &Timeouts) {
        for (kind, v) in &self.lived {
            let (at_least, at_most) = t.bounds(*kind);
            let (min, max) = (*v.iter().min().unwrap(), *v.iter().max().unwrap());
            assert!(
                max <= at_most + SLACK,
                "{kind:?}: a connection lived {max:?}, more than {at_most:?} (+{SLACK:?}); {}",
                self.summary()
            );
            assert!(
                min >= at_least,
                "{kind:?}: a connection closed after {min:?}, before its timer ({at_least:?}); {}",
                self.summary()
            );
        }
    }
}

/// `count` hostile connections, kinds in turn, from 127.0.0.2 onwards, `per_source` per
/// address, run on a thread of their own (their TLS work does not delay the agents'
/// timing). Until `until` (if given), each one reconnects once closed or refused, after
/// `pause`; then the thread waits for the last ones to be closed.
fn attack(
    attacker: Attacker,
    kinds: &'static [Kind],
    count: usize,
    per_source: usize,
    until: Option<Instant>,
    pause: Duration,
) -> std::thread::JoinHandle<AttackReport> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let attacker = Arc::new(attacker);
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..count {
                let kind = kinds[i % kinds.len()];
                let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / per_source).unwrap());
                let attacker = Arc::clone(&attacker);
                tasks.spawn(async move {
                    let mut seen = Vec::new();
                    loop {
                        seen.push(attacker.once(kind, source).await);
                        if until.is_none_or(|u| Instant::now() >= u) {
                            return (kind, seen);
                        }
                        tokio::time::sleep(pause).await;
                    }
                });
            }
            let mut report = AttackReport::default();
            while let Some(done) = tasks.join_next().await {
                let (kind, seen) = done.unwrap();
                for a in seen {
                    match a {
                        Attack::Refused => report.refused += 1,
                        Attack::Closed(d) => report.lived.entry(kind).or_default().push(d),
                    }
                }
            }
            report
        })
    })
}

fn assert_heartbeats_kept_up(h: &Heartbeats, hub: &HubProcess) {
    assert!(h.latencies.len() > 100, "{}", h.summary());
    assert!(
        h.failures.is_empty(),
        "{}: {:?}\n{}",
        h.summary(),
        &h.failures[..h.failures.len().min(5)],
        hub.log_text()
    );
    assert!(h.percentile(99) < Duration::from_secs(1), "{}", h.summary());
}

// --------------------------------------------------------------------------------------
// The tests

/// 2,000 idle and half-open connections (TLS then silence with ALPN h2 or http/1.1, an h2
/// preface and SETTINGS then silence, HEADERS without END_HEADERS, request bodies that
/// never end, with and without answers to PINGs, half an HTTP/1.1 request head, an HTTP/2
/// connection idle after one request) against a hub limited to 1024 open files:
/// heartbeats keep succeeding, p99 < 1 s, and every hostile connection is closed within its
/// timeout. The per-address cap (default 64) turns most of them away at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_do_not_starve_heartbeats() {
    let _heavy = HEAVY.lock().await;
    raise_own_fd_limit(4096);
    let t = Timeouts {
        header: 2,
        idle: 3,
        request: 3,
        ping_every: 2,
        ping_within: 2,
    };
    let flags = t.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let hub = HubProcess::start(Some((1024, 1024)), &flags).await;
    let log = hub.log_text();
    assert!(
        log.contains("soft 1024 raised to 1024 (hard 1024)")
            && log.contains("at most 896 connections (64 per address)"),
        "{log}"
    );
    let agents = hub.register(16).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let beats = tokio::spawn(heartbeat_until(
        hub.url(""),
        hub.ca_pem.clone(),
        agents,
        stopped,
    ));

    // Phase 1: a few of each kind (within the caps), to time each timer.
    let started = Instant::now();
    let timers = attack(
        Attacker::new(hub.addr(), &hub.ca_pem),
        &KINDS,
        360,
        36,
        None,
        Duration::ZERO,
    );
    let timers = tokio::task::spawn_blocking(move || timers.join().unwrap())
        .await
        .unwrap();
    eprintln!("timers ({:?}): {}", started.elapsed(), timers.summary());
    assert_eq!(timers.refused, 0, "{}", timers.summary());
    assert_eq!(timers.served(), 360);
    timers.assert_within(&t);

    // Phase 2: 2,000 at once from ten addresses, each reconnecting 0.5 s after being
    // closed or refused, for 8 s.
    let started = Instant::now();
    let flood = attack(
        Attacker::new(hub.addr(), &hub.ca_pem),
        &KINDS,
        2000,
        200,
        Some(started + Duration::from_secs(8)),
        Duration::from_millis(500),
    );
    let flood = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    stop.send(true).unwrap();
    let beats = beats.await.unwrap();
    eprintln!("flood ({:?}): {}", started.elapsed(), flood.summary());
    eprintln!("heartbeats: {}", beats.summary());
    assert!(
        flood.refused >= 2000 - 640,
        "the per-address cap turns most away: {}",
        flood.summary()
    );
    assert!(flood.served() >= 640, "{}", flood.summary());
    flood.assert_within(&t);
    assert_heartbeats_kept_up(&beats, &hub);
}

/// With no per-address cap, 2,000 connections that never send a request fill the global
/// cap (896 under 1024 open files). Once they have, new agent connections are still served
/// at once: the hub closes the ones that have waited longest without a request to admit
/// them, instead of leaving them in the accept queue until the header timeout (10 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_less_connections_make_room_when_the_cap_is_reached() {
    let _heavy = HEAVY.lock().await;
    raise_own_fd_limit(4096);
    let hub = HubProcess::start(
        Some((1024, 1024)),
        &[
            "--max-connections-per-ip",
            "0",
            "--header-timeout",
            "10",
            "--tls-handshake-timeout",
            "10",
        ],
    )
    .await;
    let agents = hub.register(16).await;
    static NO_REQUEST: [Kind; 5] = [
        Kind::TlsH2Silent,
        Kind::TlsHttp11Silent,
        Kind::PrefaceSettings,
        Kind::HeadersNoEnd,
        Kind::Http11HalfHead,
    ];
    let attacker = Attacker::new(hub.addr(), &hub.ca_pem);
    let settled = Arc::clone(&attacker.settled);
    let started = Instant::now();
    let flood = attack(attacker, &NO_REQUEST, 2000, 200, None, Duration::ZERO);
    // Every hostile connection through its handshake (or closed to make room), and one
    // second more, so that the ones held are all old enough to be closed for room.
    while settled.load(std::sync::atomic::Ordering::SeqCst) < 2000 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the flood did not settle: {}",
            settled.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled_after = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let beats = tokio::spawn(heartbeat_until(
        hub.url(""),
        hub.ca_pem.clone(),
        agents,
        stopped,
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.send(true).unwrap();
    let beats = beats.await.unwrap();
    let flood = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    eprintln!(
        "flood (settled after {settled_after:?}, over after {:?}): {}",
        started.elapsed(),
        flood.summary()
    );
    eprintln!("heartbeats: {}", beats.summary());
    let lived: Vec<Duration> = flood.lived.values().flatten().copied().collect();
    let made_room = lived
        .iter()
        .filter(|d| **d < Duration::from_secs(9))
        .count()
        + flood.refused;
    assert!(
        made_room >= 2000 - 896,
        "connections closed for room: {made_room}; {}",
        flood.summary()
    );
    assert!(
        lived.iter().max().unwrap() <= &(Duration::from_secs(10) + SLACK),
        "{}",
        flood.summary()
    );
    assert!(
        hub.log_text().contains("connection cap reached"),
        "{}",
        hub.log_text()
    );
    assert_heartbeats_kept_up(&beats, &hub);
}

/// The per-address cap refuses the 2,001st connection from 127.0.0.2 (cap 2000) at once,
/// while 127.0.0.3 and 127.0.0.1 are still served; a slot freed is a slot reusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_cap_refuses_one_address_and_serves_the_others() {
    let _heavy = HEAVY.lock().await;
    raise_own_fd_limit(8192);
    let hub = HubProcess::start(
        None,
        &[
            "--max-connections-per-ip",
            "2000",
            "--max-connections",
            "4000",
            "--header-timeout",
            "60",
        ],
    )
    .await;
    let agents = hub.register(1).await;
    let attacker = Arc::new(Attacker::new(hub.addr(), &hub.ca_pem));
    let source = Ipv4Addr::new(127, 0, 0, 2);
    let connect = |attacker: Arc<Attacker>, source: Ipv4Addr| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let tcp = socket.connect(attacker.hub).await.unwrap();
        attacker
            .h2
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    };
    // 2,000 TLS connections from one address, all served and held.
    let mut held = Vec::new();
    for batch in 0..20 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            tasks.spawn(connect(Arc::clone(&attacker), source));
        }
        while let Some(r) = tasks.join_next().await {
            held.push(
                r.unwrap()
                    .unwrap_or_else(|e| panic!("batch {batch}: a connection under the cap: {e}")),
            );
        }
    }
    assert_eq!(held.len(), 2000);
    // The 2,001st is closed before its handshake completes.
    let started = Instant::now();
    let refused = connect(Arc::clone(&attacker), source).await;
    assert!(
        refused.is_err(),
        "the 2,001st connection from one address was served"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Other addresses are served: a bare TLS connection from 127.0.0.3, heartbeats from
    // 127.0.0.3 and 127.0.0.1.
    connect(Arc::clone(&attacker), Ipv4Addr::new(127, 0, 0, 3))
        .await
        .unwrap();
    for from in [Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::LOCALHOST] {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(hub.ca_pem.as_bytes()).unwrap())
            .local_address(IpAddr::V4(from))
            .build()
            .unwrap();
        let r = client
            .post(hub.url(&format!("/v1/hosts/{}/heartbeat", agents[0].id)))
            .bearer_auth(&agents[0].credential)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "from {from}");
    }
    // One closed: the address may connect once more, not twice.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        match connect(Arc::clone(&attacker), source).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the freed slot was not given back: {e}"),
        }
    };
    assert!(connect(Arc::clone(&attacker), source).await.is_err());
    drop(again);
    let log = hub.log_text();
    assert!(
        log.contains("refused connections over the per-address cap"),
        "{log}"
    );
}

/// At start the hub raises its soft open-files limit to the hard one, logs both, and sizes
/// its connection cap from the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_files_limit_is_raised_to_the_hard_limit_at_start() {
    let hard = {
        use nix::sys::resource::{getrlimit, Resource};
        getrlimit(Resource::RLIMIT_NOFILE).unwrap().1.min(4096)
    };
    assert!(
        hard > 1024,
        "this test needs a hard open-files limit above 1024 ({hard})"
    );
    let hub = HubProcess::start(Some((1024, hard)), &[]).await;
    let log = hub.log_text();
    assert!(
        log.contains(&format!("soft 1024 raised to {hard} (hard {hard})")),
        "{log}"
    );
    let cap = hard - 128;
    assert!(log.contains(&format!("at most {cap} connections")), "{log}");
    // The kernel's view of the running process agrees.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", hub.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let values: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(values[3..5], [hard.to_string(), hard.to_string()], "{line}");
}
