//! Serving the API: TCP accept loop, TLS (rustls with the ring provider, TLS 1.2 and 1.3,
//! HTTP/2 and HTTP/1.1 by ALPN) or — only when asked for, for local tests — plain HTTP;
//! graceful shutdown. And what keeps slow or silent clients from holding connections: every
//! phase of a connection has a timer, for both protocols ([`Limits`], the table in
//! docs/protocol.md):
//!
//! * the TLS handshake ([`Limits::handshake_timeout`]);
//! * the first request's headers, counted from the end of the handshake
//!   ([`Limits::header_timeout`]): this also covers hyper's protocol sniff (it waits for the
//!   first bytes to tell HTTP/2 from HTTP/1.1 with no timer of its own), an HTTP/2 preface
//!   with nothing after it, and HEADERS without END_HEADERS; hyper times later HTTP/1.1
//!   headers with the same value;
//! * idleness: a connection with no open request for [`Limits::idle_timeout`] is closed
//!   gracefully (GOAWAY on HTTP/2); hyper has no HTTP/2 idle timeout, so every connection's
//!   requests are counted by a service wrapper, from the call until the response body is
//!   done or dropped;
//! * HTTP/2 keep-alive pings, answered within [`Limits::h2_keepalive_timeout`], and a cap
//!   on concurrent streams and on the header list;
//! * the request itself (body included) is bounded by the API's request timeout (`408`,
//!   `http::ApiConfig::request_timeout`); afterwards the connection is idle again.
//!
//! A graceful close the peer does not complete (no request open, yet the connection still
//! there after [`Limits::h2_keepalive_timeout`]) ends with the connection dropped.
//!
//! Caps: [`Limits::max_connections`] in all (sized from the open-files limit, which
//! [`raise_fd_limit`] raises first) and [`Limits::max_connections_per_ip`] per client
//! address. When the global cap is reached the hub does not stop accepting: it makes room by
//! closing connections that have waited longest without sending a request (never one
//! younger than [`MIN_AGE_TO_MAKE_ROOM`]), else the one idle longest, gracefully; a
//! connection with a request open is never closed for room.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// Time allowed for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed, after the handshake, for the first request's headers to arrive (and for
/// each later HTTP/1.1 request's headers).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no open request is closed after this long. Longer than the default
/// heartbeat period (30 s), so an agent keeps its connection between heartbeats.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// HTTP/2: a PING is sent after this long without a frame from the client.
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// HTTP/2: a PING not acknowledged within this closes the connection; also the time a peer
/// gets to finish a graceful close.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2: streams open at once on one connection (RFC 9113 suggests at least 100).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// HTTP/2: largest header list of one request (decoded), in bytes (hyper's default, made
/// explicit).
pub const H2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Connections from one client address (an IPv6 /64 counts as one address).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// The default global connection cap never exceeds this (memory: a TLS connection costs
/// tens of KiB).
pub const MAX_CONNECTIONS_CEILING: usize = 16_384;
/// File descriptors kept out of the default connection cap, for the database, the
/// listener, logs and the runtime (a quarter of the limit when that is smaller).
pub const FD_RESERVE: u64 = 128;
/// A connection is never closed to make room before it is this old: a newcomer gets the
/// time to send its request, and a flood cannot make the hub throw away handshakes it has
/// just done.
pub const MIN_AGE_TO_MAKE_ROOM: Duration = Duration::from_secs(1);
/// Time open connections get to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Caps and timeouts of [`serve`]. `Default` gives the documented defaults, with
/// [`MAX_CONNECTIONS_CEILING`] as the global cap (`cairn-hub serve` sizes it from the
/// open-files limit with [`default_max_connections`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one client address; 0: no per-address cap.
    pub max_connections_per_ip: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS_CEILING,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            h2_keepalive_interval: H2_KEEPALIVE_INTERVAL,
            h2_keepalive_timeout: H2_KEEPALIVE_TIMEOUT,
            h2_max_concurrent_streams: H2_MAX_CONCURRENT_STREAMS,
            h2_max_header_list_bytes: H2_MAX_HEADER_LIST_BYTES,
        }
    }
}

/// The default global connection cap for a soft open-files limit of `nofile`: the limit
/// minus [`FD_RESERVE`] (or a quarter of it, when smaller), at most
/// [`MAX_CONNECTIONS_CEILING`], at least 1.
pub fn default_max_connections(nofile: u64) -> usize {
    usize::try_from(connections_that_fit(nofile))
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_CONNECTIONS_CEILING)
}

/// How many connections a soft open-files limit of `nofile` leaves room for, once
/// [`FD_RESERVE`] (or a quarter of the limit, when smaller) is set aside.
pub fn connections_that_fit(nofile: u64) -> u64 {
    nofile.saturating_sub(FD_RESERVE.min(nofile / 4))
}

/// The open-files limit (`RLIMIT_NOFILE`) before and after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process started with.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (unchanged).
    pub hard: u64,
}

/// Raise this process's soft open-files limit to its hard limit: each connection is a
/// file descriptor, and the common default soft limit (1024) would cap the hub far below
/// what the machine allows.
pub fn raise_fd_limit() -> Result<FdLimit, ServeError> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft_before, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|source| ServeError::FdLimit {
            step: "reading",
            source,
        })?;
    if soft_before < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|source| ServeError::FdLimit {
            step: "raising",
            source,
        })?;
    }
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|source| ServeError::FdLimit {
            step: "reading",
            source,
        })?;
    Ok(FdLimit {
        soft_before,
        soft,
        hard,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading {what} from {path}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("setting up TLS with {cert} and {key}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{step} the open-files limit (RLIMIT_NOFILE)")]
    FdLimit {
        step: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ServeError::Pem {
            what: "the certificate chain",
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(ServeError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|source| ServeError::Pem {
        what: "the private key",
        path: key.to_owned(),
        source,
    })?;
    let tls_err = |source| ServeError::Tls {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls_err)?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Is plain HTTP acceptable on this address? Only on loopback.
pub fn insecure_allowed(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// What a handler may want to know about how it is served, added to every request as an
/// extension by [`serve`]: whether the connection is TLS (cookies get `Secure`), and a
/// signal that flips to `true` when shutdown starts (long-lived streams end then, so
/// graceful shutdown does not wait for them).
#[derive(Debug, Clone)]
pub struct ServeContext {
    pub tls: bool,
    pub closing: tokio::sync::watch::Receiver<bool>,
}

/// Serve `app` on `listener` until `shutdown` resolves, then let open requests finish (for
/// at most [`DRAIN_TIMEOUT`]). `tls: None` serves plain HTTP.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let acceptor = tls.map(TlsAcceptor::from);
    let (closing_tx, closing) = watch::channel(false);
    let app = app.layer(axum::Extension(ServeContext {
        tls: acceptor.is_some(),
        closing: closing.clone(),
    }));
    let limits = Arc::new(limits.clone());
    let builder = Arc::new(http_builder(&limits));
    let capacity = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(capacity));
    let room_batch = (capacity / 32).clamp(1, 32);
    let registry = Arc::new(Registry::new(limits.max_connections_per_ip));
    let mut refused = Throttle::default();
    let mut evicted = Throttle::default();
    tokio::pin!(shutdown);
    'accept: loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(address_slot) = registry.reserve_address(peer.ip()) else {
            if let Some(n) = refused.hit() {
                tracing::warn!(
                    %peer,
                    refused = n,
                    cap = limits.max_connections_per_ip,
                    "refused connections over the per-address cap (--max-connections-per-ip)"
                );
            }
            drop(stream);
            continue;
        };
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => loop {
                // Full: make room by closing connections without a request (a batch, so
                // that a queue of new connections is not admitted one task switch at a
                // time) or an idle one, unless every connection has a request open; then
                // wait for one to end.
                if let Some((n, _)) = registry.make_room(room_batch) {
                    if let Some(total) = evicted.hit_many(n) {
                        tracing::warn!(
                            closed = total,
                            cap = capacity,
                            "connection cap reached: closed connections without an open request to admit new ones (--max-connections)"
                        );
                    }
                }
                tokio::select! {
                    p = Arc::clone(&slots).acquire_owned() => match p {
                        Ok(p) => break p,
                        Err(_) => break 'accept,
                    },
                    () = tokio::time::sleep(Duration::from_millis(50)) => {},
                    () = &mut shutdown => break 'accept,
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "setting TCP_NODELAY");
        }
        let state = Arc::new(ConnState::new(Instant::now()));
        let slot = Slot {
            _live: registry.register(Arc::clone(&state)),
            _address: address_slot,
            _permit: permit,
        };
        let task = Connection {
            state,
            limits: Arc::clone(&limits),
            builder: Arc::clone(&builder),
            app: app.clone(),
            closing: closing.clone(),
            peer,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let end = task.run(acceptor, stream).await;
            tracing::debug!(%peer, "connection ended: {end}");
        });
    }
    drop(listener);
    // Streams (the fleet page's live feed) end now; ordinary requests get to finish, and
    // connections without a request are closed.
    let _ = closing_tx.send(true);
    let all = u32::try_from(capacity).unwrap_or(u32::MAX);
    match tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            "connections still open after {} s; closing",
            DRAIN_TIMEOUT.as_secs()
        ),
    }
    Ok(())
}

/// hyper's connection builder with the HTTP/1.1 and HTTP/2 settings of `limits`.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes);
    builder
}

/// What a connection holds while it is open: its place in the registry, its client
/// address's count, and its share of the global cap.
struct Slot {
    _live: LiveGuard,
    _address: AddressGuard,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// How one connection ended (for the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    Error,
    HandshakeFailed,
    HandshakeTimeout,
    NoRequest,
    GraceOver,
    MadeRoom,
    ShuttingDown,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Done => "closed",
            End::Error => "closed with an error",
            End::HandshakeFailed => "TLS handshake failed",
            End::HandshakeTimeout => "TLS handshake timed out",
            End::NoRequest => "no request within the header timeout",
            End::GraceOver => "the peer did not finish a graceful close in time",
            End::MadeRoom => "closed to make room (connection cap reached)",
            End::ShuttingDown => "closed at shutdown",
        })
    }
}

/// One accepted connection, from the TLS handshake to its end.
struct Connection {
    state: Arc<ConnState>,
    limits: Arc<Limits>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    closing: watch::Receiver<bool>,
    peer: SocketAddr,
}

impl Connection {
    async fn run(mut self, acceptor: Option<TlsAcceptor>, stream: tokio::net::TcpStream) -> End {
        let Some(acceptor) = acceptor else {
            return self.drive(TokioIo::new(stream)).await;
        };
        let state = Arc::clone(&self.state);
        let handshake =
            tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(stream));
        let tls = tokio::select! {
            r = handshake => match r {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                    return End::HandshakeFailed;
                }
                Err(_) => return End::HandshakeTimeout,
            },
            () = state.until_evicted() => return End::MadeRoom,
            _ = self.closing.wait_for(|c| *c) => return End::ShuttingDown,
        };
        self.drive(TokioIo::new(tls)).await
    }

    /// Serve HTTP on `io` under the watch of the header, idle and grace timers.
    async fn drive<I>(mut self, io: I) -> End
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let ready = Instant::now();
        let st = Arc::clone(&self.state);
        st.set_ready();
        let service = Tracked {
            app: self.app.clone(),
            state: Arc::clone(&st),
        };
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let mut graceful_since: Option<Instant> = None;
        let mut closing_seen = false;
        loop {
            let now = Instant::now();
            let closing = *self.closing.borrow();
            let mut deadline = None;
            match graceful_since {
                None if !st.started() => {
                    if closing {
                        return End::ShuttingDown;
                    }
                    if st.evicted() {
                        return End::MadeRoom;
                    }
                    let at = ready + self.limits.header_timeout;
                    if now >= at {
                        return End::NoRequest;
                    }
                    deadline = Some(at);
                }
                None => {
                    let idle_at = st.idle_since().map(|t| t + self.limits.idle_timeout);
                    if closing || st.evicted() || idle_at.is_some_and(|at| now >= at) {
                        conn.as_mut().graceful_shutdown();
                        graceful_since = Some(now);
                        continue;
                    }
                    deadline = idle_at;
                }
                Some(since) => {
                    // Only while no request is open: those end by themselves (request
                    // timeout; streams end at shutdown).
                    if st.idle_since().is_some() {
                        let at = since + self.limits.h2_keepalive_timeout;
                        if now >= at {
                            return End::GraceOver;
                        }
                        deadline = Some(at);
                    }
                }
            }
            let wake_at = deadline.unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                r = conn.as_mut() => {
                    return match r {
                        Ok(()) => End::Done,
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "connection error");
                            End::Error
                        }
                    };
                }
                () = tokio::time::sleep_until(wake_at) => {}
                () = st.wake.notified() => {}
                _ = self.closing.changed(), if !closing_seen => closing_seen = true,
            }
        }
    }
}

/// What the timers and the registry need to know about one connection: whether a request
/// has started yet, how many are open and since when none is.
struct ConnState {
    accepted: Instant,
    /// When HTTP began (the TLS handshake done), in nanoseconds after `accepted`; 0 before.
    ready_ns: AtomicU64,
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last open request ended, in nanoseconds after `accepted`.
    idle_since_ns: AtomicU64,
    evicted: AtomicBool,
    /// Woken when the last open request ends, and on eviction.
    wake: Notify,
}

impl ConnState {
    fn new(accepted: Instant) -> ConnState {
        ConnState {
            accepted,
            ready_ns: AtomicU64::new(0),
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ns: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    fn set_ready(&self) {
        let ns = u64::try_from(self.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.ready_ns.store(ns.max(1), Ordering::SeqCst);
    }

    /// Since when HTTP runs on this connection (the TLS handshake done); `None` before.
    fn ready_since(&self) -> Option<Instant> {
        match self.ready_ns.load(Ordering::SeqCst) {
            0 => None,
            ns => Some(self.accepted + Duration::from_nanos(ns)),
        }
    }

    fn evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Since when no request is open; `None` while one is, or before the first.
    fn idle_since(&self) -> Option<Instant> {
        if !self.started() || self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(self.accepted + Duration::from_nanos(self.idle_since_ns.load(Ordering::SeqCst)))
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.started.store(true, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    async fn until_evicted(&self) {
        while !self.evicted() {
            self.wake.notified().await;
        }
    }
}

/// An open request: from the service call until its response body is done or dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let st = &self.0;
        let ns = u64::try_from(st.accepted.elapsed().as_nanos()).unwrap_or(u64::MAX);
        st.idle_since_ns.store(ns, Ordering::SeqCst);
        if st.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            st.wake.notify_one();
        }
    }
}

/// The router, counting the connection's open requests.
#[derive(Clone)]
struct Tracked {
    app: Router,
    state: Arc<ConnState>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let open = self.state.request_started();
        let response = self.app.clone().oneshot(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody { body, _open: open }))
        })
    }
}

/// A response body that keeps its request counted as open until it is done or dropped
/// (the fleet page's live feed is one long response).
struct TrackedBody {
    body: Body,
    _open: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The address a per-address cap counts against: IPv4 addresses (also when mapped into
/// IPv6) one by one, IPv6 by /64, the smallest block one client usually gets.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The open connections: how many per client address, and each one's state (to choose
/// which to close when the global cap is reached).
struct Registry {
    per_address_cap: usize,
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    per_address: HashMap<IpAddr, usize>,
    live: HashMap<u64, Arc<ConnState>>,
}

/// Why a connection was chosen to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// It has not sent a request yet (closed at once).
    NoRequest,
    /// It has no request open (closed gracefully).
    Idle,
}

impl Registry {
    fn new(per_address_cap: usize) -> Registry {
        Registry {
            per_address_cap,
            inner: Mutex::new(RegistryInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count one more connection from `ip`, unless its address is at the cap.
    fn reserve_address(self: &Arc<Self>, ip: IpAddr) -> Option<AddressGuard> {
        let key = address_key(ip);
        let mut inner = self.lock();
        let n = inner.per_address.entry(key).or_insert(0);
        if self.per_address_cap != 0 && *n >= self.per_address_cap {
            if *n == 0 {
                inner.per_address.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(AddressGuard {
            registry: Arc::clone(self),
            key,
        })
    }

    fn register(self: &Arc<Self>, state: Arc<ConnState>) -> LiveGuard {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.insert(id, state);
        LiveGuard {
            registry: Arc::clone(self),
            id,
        }
    }

    /// Ask connections to close to make room: the `batch` without a request that have
    /// waited longest — first those past the TLS handshake (a client sends its request
    /// right after it; one still in its handshake may be a slow agent), by time since the
    /// handshake, then those in it, by age — closed at once; or, if there are none, the
    /// one idle longest, closed gracefully. Connections with a request open, and those
    /// younger than [`MIN_AGE_TO_MAKE_ROOM`], are never chosen. How many were asked, and
    /// of which kind; `None`: nothing to close.
    fn make_room(&self, batch: usize) -> Option<(usize, Victim)> {
        let inner = self.lock();
        let now = Instant::now();
        let mut no_request: Vec<(bool, Instant, &Arc<ConnState>)> = Vec::new();
        let mut idle: Option<(Instant, &Arc<ConnState>)> = None;
        for st in inner.live.values() {
            if st.evicted() || now < st.accepted + MIN_AGE_TO_MAKE_ROOM {
                continue;
            }
            if !st.started() {
                no_request.push(match st.ready_since() {
                    Some(ready) => (false, ready, st),
                    None => (true, st.accepted, st),
                });
            } else if let Some(since) = st.idle_since() {
                if idle.is_none_or(|(t, _)| since < t) {
                    idle = Some((since, st));
                }
            }
        }
        if !no_request.is_empty() {
            let n = batch.clamp(1, no_request.len());
            if n < no_request.len() {
                no_request.select_nth_unstable_by_key(n - 1, |&(in_handshake, since, _)| {
                    (in_handshake, since)
                });
            }
            for (_, _, st) in &no_request[..n] {
                st.evict();
            }
            return Some((n, Victim::NoRequest));
        }
        let (_, st) = idle?;
        st.evict();
        Some((1, Victim::Idle))
    }
}

struct AddressGuard {
    registry: Arc<Registry>,
    key: IpAddr,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        if let Some(n) = inner.per_address.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.per_address.remove(&self.key);
            }
        }
    }
}

struct LiveGuard {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.registry.lock().live.remove(&self.id);
    }
}

/// At most one warning per interval for something that can happen thousands of times a
/// second under attack; `hit` returns how many happened since the last warning when one is
/// due.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(10);

    fn hit(&mut self) -> Option<u64> {
        self.hit_many(1)
    }

    fn hit_many(&mut self, n: usize) -> Option<u64> {
        self.count += u64::try_from(n).unwrap_or(u64::MAX);
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + Self::EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "listening for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        let l = Limits::default();
        assert_eq!(l.handshake_timeout, Duration::from_secs(10));
        assert_eq!(l.header_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_timeout, Duration::from_secs(90));
        assert_eq!(l.h2_keepalive_interval, Duration::from_secs(20));
        assert_eq!(l.h2_keepalive_timeout, Duration::from_secs(10));
        assert_eq!(l.h2_max_concurrent_streams, 100);
        assert_eq!(l.h2_max_header_list_bytes, 16_384);
        assert_eq!(l.max_connections_per_ip, 64);
        assert_eq!(l.max_connections, 16_384);
        assert_eq!(DRAIN_TIMEOUT, Duration::from_secs(10));
        // Idle connections outlive the default heartbeat period, so agents reuse them.
        assert!(l.idle_timeout.as_secs() > cairn_proto::protocol::DEFAULT_HEARTBEAT_SECS);
    }

    /// docs/protocol.md's table of timeouts and caps gives these same defaults.
    #[test]
    fn the_protocol_page_documents_these_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
        let page = std::fs::read_to_string(path).unwrap();
        let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("| ")).collect();
        let s = |d: Duration| format!("| {} s", d.as_secs());
        let l = Limits::default();
        for (row, value) in [
            ("`--tls-handshake-timeout`", s(l.handshake_timeout)),
            ("| first request's headers", s(l.header_timeout)),
            ("| later HTTP/1.1 request headers", s(l.header_timeout)),
            ("`--request-timeout`", s(crate::http::REQUEST_TIMEOUT)),
            ("`--idle-timeout`", s(l.idle_timeout)),
            (
                "| a graceful close the client does not complete",
                s(l.h2_keepalive_timeout),
            ),
            ("`--h2-keepalive-interval`", s(l.h2_keepalive_interval)),
            ("| HTTP/2 PING acknowledgement", s(l.h2_keepalive_timeout)),
            (
                "| HTTP/2 streams open at once",
                format!("| {} |", l.h2_max_concurrent_streams),
            ),
            (
                "| request headers",
                format!("HTTP/2: {} KiB", l.h2_max_header_list_bytes / 1024),
            ),
            (
                "`--max-connections-per-ip`",
                format!("| {} |", l.max_connections_per_ip),
            ),
            ("`--max-connections`", format!("limit − {FD_RESERVE}")),
            ("`--max-connections`", "at most 16 384".to_string()),
            (
                "`--max-connections`",
                format!("{} with the common 1024", default_max_connections(1024)),
            ),
            (
                "`--max-connections`",
                format!("younger than {} s", MIN_AGE_TO_MAKE_ROOM.as_secs()),
            ),
            ("| shutdown", s(DRAIN_TIMEOUT)),
        ] {
            assert!(
                rows.iter().any(|r| r.contains(row) && r.contains(&value)),
                "docs/protocol.md: no table row with {row:?} and {value:?}"
            );
        }
        assert_eq!(MAX_CONNECTIONS_CEILING, 16_384);
    }

    #[test]
    fn default_connection_cap_leaves_room_for_files() {
        assert_eq!(default_max_connections(1024), 896);
        assert_eq!(default_max_connections(4096), 3968);
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(20_000), 16_384);
        assert_eq!(default_max_connections(1 << 20), 16_384);
        assert_eq!(default_max_connections(u64::MAX), 16_384);
        assert_eq!(default_max_connections(0), 1);
        assert_eq!(connections_that_fit(1 << 20), (1 << 20) - 128);
    }

    #[test]
    fn addresses_are_counted_by_ipv4_address_and_ipv6_64() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    }

    #[test]
    fn per_address_cap_counts_and_releases() {
        let r = Arc::new(Registry::new(2));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = r.reserve_address(a).unwrap();
        let _a2 = r.reserve_address(a).unwrap();
        assert!(r.reserve_address(a).is_none(), "third from one address");
        let _b1 = r.reserve_address(b).unwrap();
        drop(a1);
        let _a3 = r.reserve_address(a).unwrap();
        assert!(r.reserve_address(a).is_none());
        let unlimited = Arc::new(Registry::new(0));
        let held: Vec<_> = (0..1000).map(|_| unlimited.reserve_address(a)).collect();
        assert!(held.iter().all(Option::is_some));
    }

    #[test]
    fn room_is_made_from_request_less_then_idle_connections_never_busy_ones() {
        let now = Instant::now();
        let ago = |s| now - Duration::from_secs(s);
        let r = Arc::new(Registry::new(0));
        let busy = Arc::new(ConnState::new(ago(10)));
        let _open = busy.request_started();
        let _g1 = r.register(Arc::clone(&busy));
        let idle_old = Arc::new(ConnState::new(ago(4)));
        drop(idle_old.request_started());
        let _g2 = r.register(Arc::clone(&idle_old));
        std::thread::sleep(Duration::from_millis(2));
        let idle_new = Arc::new(ConnState::new(ago(9)));
        drop(idle_new.request_started());
        let _g3 = r.register(Arc::clone(&idle_new));
        let fresh_old = Arc::new(ConnState::new(ago(3)));
        let _g4 = r.register(Arc::clone(&fresh_old));
        let fresh_new = Arc::new(ConnState::new(ago(2)));
        let _g5 = r.register(Arc::clone(&fresh_new));

        assert_eq!(r.make_room(1), Some((1, Victim::NoRequest)));
        assert!(fresh_old.evicted() && !fresh_new.evicted());
        assert_eq!(r.make_room(1), Some((1, Victim::NoRequest)));
        assert!(fresh_new.evicted());
        assert_eq!(
            r.make_room(8),
            Some((1, Victim::Idle)),
            "idle: one at a time"
        );
        assert!(
            idle_old.evicted() && !idle_new.evicted(),
            "idle longest first"
        );
        assert_eq!(r.make_room(1), Some((1, Victim::Idle)));
        assert_eq!(r.make_room(1), None, "only the busy connection is left");
        assert!(!busy.evicted());
        drop(_g1);
        assert_eq!(r.lock().live.len(), 4);
    }

    #[test]
    fn room_is_made_in_batches_of_the_oldest_request_less_connections() {
        let now = Instant::now();
        let r = Arc::new(Registry::new(0));
        let conns: Vec<_> = (1..11u64)
            .map(|age| {
                let st = Arc::new(ConnState::new(now - Duration::from_secs(age)));
                (Arc::clone(&st), r.register(st))
            })
            .collect();
        assert_eq!(r.make_room(4), Some((4, Victim::NoRequest)));
        let evicted: Vec<bool> = conns.iter().map(|(st, _)| st.evicted()).collect();
        assert_eq!(
            evicted,
            [false, false, false, false, false, false, true, true, true, true],
            "the four oldest"
        );
        assert_eq!(r.make_room(100), Some((6, Victim::NoRequest)));
        assert_eq!(r.make_room(1), None);
        let newcomer = Arc::new(ConnState::new(now - MIN_AGE_TO_MAKE_ROOM / 2));
        let _g = r.register(Arc::clone(&newcomer));
        assert_eq!(r.make_room(1), None, "too young to be closed for room");
    }

    #[test]
    fn connections_past_the_handshake_without_a_request_go_before_those_in_it() {
        let r = Arc::new(Registry::new(0));
        let old_in_handshake = Arc::new(ConnState::new(Instant::now() - Duration::from_secs(5)));
        let _g1 = r.register(Arc::clone(&old_in_handshake));
        let silent = Arc::new(ConnState::new(Instant::now() - Duration::from_secs(2)));
        silent.set_ready();
        let _g2 = r.register(Arc::clone(&silent));
        assert_eq!(r.make_room(1), Some((1, Victim::NoRequest)));
        assert!(silent.evicted() && !old_in_handshake.evicted());
        assert_eq!(r.make_room(1), Some((1, Victim::NoRequest)));
        assert!(old_in_handshake.evicted());
    }

    #[test]
    fn idle_since_follows_open_requests() {
        let st = Arc::new(ConnState::new(Instant::now()));
        assert_eq!(st.idle_since(), None, "no request yet");
        let one = st.request_started();
        let two = st.request_started();
        drop(one);
        assert_eq!(st.idle_since(), None, "one still open");
        std::thread::sleep(Duration::from_millis(20));
        let before = Instant::now();
        drop(two);
        let since = st.idle_since().unwrap();
        assert!(since >= before && since <= Instant::now(), "{since:?}");
        let three = st.request_started();
        assert_eq!(st.idle_since(), None);
        drop(three);
        assert!(st.idle_since().unwrap() >= since);
    }

    #[test]
    fn throttle_reports_counts_at_most_every_interval() {
        let mut t = Throttle::default();
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        t.last = t.last.map(|l| l - Throttle::EVERY);
        assert_eq!(t.hit(), Some(3));
    }
}
