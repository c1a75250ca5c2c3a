//! The fleet page: every host, its profile, a progress bar through OS → Kubernetes → CNI →
//! add-ons, the failing step with its message; live over Server-Sent Events.
//!
//! * `GET /` and `GET /fleet` — the page (HTML, CSS and JS embedded in the binary, no
//!   external assets), or a login form when the browser has no session.
//! * `GET /fleet?token=<admin token>` and `POST /fleet/login` (form field `token`) — check
//!   the admin token once and set an HttpOnly, SameSite=Strict session cookie (`Secure`
//!   over TLS), then redirect to `/fleet` so the token leaves the address bar. Sessions live
//!   in the hub's memory for [`SESSION_LIFETIME`] (a restarted hub asks again).
//!   `POST /fleet/logout` ends the session.
//! * `GET /v1/admin/fleet` — the same data as JSON; `GET /v1/admin/fleet/stream` — the live
//!   feed (`text/event-stream`). Both take the admin token as a bearer token, or the
//!   session cookie. The cookie grants only these read-only views, never the rest of
//!   `/v1/admin`, so a session cannot be used to change anything.
//!
//! The feed: the API handlers publish a [`Change`] (host changed, host seen, host removed,
//! everything changed) on a broadcast channel; each stream collects them for
//! [`FLUSH_EVERY`] and sends one message: `hosts` (changed hosts re-read from the store),
//! `seen` (heartbeats: only `last_seen`), `removed`, or a full `snapshot` (at start, after an
//! assignment or profile change, when the stream fell behind, and every [`RESYNC_EVERY`] to
//! pick up changes made by the admin CLI directly on the database).
//!
//! Everything shown is untrusted (host names, tags, stage/step names, messages): the page's
//! script only ever sets `textContent`, never HTML, and a strict Content-Security-Policy
//! forbids inline script.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};

use super::{ApiError, AppState, Q};
use crate::secret;
use crate::server::ServeContext;
use crate::store::{self, FleetHost, Store, Timestamp, PHASES};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "cairn_fleet";
/// How long a fleet page session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest goes first.
const MAX_SESSIONS: usize = 1024;
/// Most live streams served at once (each re-reads changed hosts from the store).
pub const MAX_STREAMS: usize = 64;
/// How long a stream gathers changes before sending them.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How often a stream sends a full snapshot anyway.
pub const RESYNC_EVERY: Duration = Duration::from_secs(60);
/// Pending changed hosts beyond which a stream sends a snapshot instead.
const MAX_DIRTY: usize = 2000;
/// Changes buffered per stream before it counts as lagging (and resyncs).
const FEED_CAPACITY: usize = 8192;

const PAGE_HTML: &str = include_str!("fleet_page/fleet.html");
const LOGIN_HTML: &str = include_str!("fleet_page/login.html");
const PAGE_CSS: &str = include_str!("fleet_page/fleet.css");
const PAGE_JS: &str = include_str!("fleet_page/fleet.js");

/// Content-Security-Policy of the HTML pages: nothing but the hub's own script, style and
/// feed; no inline script; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// What changed, as the API handlers publish it.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Anything about this host (registered, events, inventory).
    Host(Arc<str>),
    /// Only `last_seen` (a heartbeat).
    Seen(Arc<str>, Timestamp),
    Removed(Arc<str>),
    /// Possibly every host (an assignment or a profile version changed).
    All,
}

/// The page's shared state: the change feed, sessions, the stream cap.
pub(crate) struct Fleet {
    feed: broadcast::Sender<Change>,
    /// SHA-256 of a session secret → when it expires.
    sessions: Mutex<HashMap<String, Instant>>,
    streams: Arc<Semaphore>,
}

impl Fleet {
    pub(crate) fn new() -> Fleet {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Fleet {
            feed,
            sessions: Mutex::new(HashMap::new()),
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }

    /// Publish a change; costs next to nothing when no page is open.
    pub(crate) fn notify(&self, change: Change) {
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(change);
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn new_session(&self) -> Result<String, ApiError> {
        let secret = secret::new_secret("cairn_fs_")?;
        let now = Instant::now();
        let mut sessions = self.sessions();
        sessions.retain(|_, expiry| *expiry > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(secret::sha256_hex(&secret), now + SESSION_LIFETIME);
        Ok(secret)
    }

    fn session_valid(&self, secret: &str) -> bool {
        let hash = secret::sha256_hex(secret);
        let mut sessions = self.sessions();
        match sessions.get(&hash) {
            Some(expiry) if *expiry > Instant::now() => true,
            Some(_) => {
                sessions.remove(&hash);
                false
            }
            None => false,
        }
    }

    fn end_session(&self, secret: &str) {
        self.sessions().remove(&secret::sha256_hex(secret));
    }
}

pub(crate) fn page_routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/", get(page::<S>))
        .route("/fleet", get(page::<S>))
        .route("/fleet/login", post(login::<S>))
        .route("/fleet/logout", post(logout::<S>))
        .route("/fleet/fleet.js", get(script))
        .route("/fleet/fleet.css", get(style))
}

/// Under `/v1/admin`.
pub(crate) fn api_routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/fleet", get(snapshot::<S>))
        .route("/fleet/stream", get(stream::<S>))
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Is this the admin token? `None` when the hub has no admin token at all.
fn admin_token_ok<S>(state: &AppState<S>, given: &str) -> Option<bool> {
    let expected = state.0.admin_sha256.as_ref()?;
    Some(secret::constant_time_eq(
        secret::sha256_hex(given).as_bytes(),
        expected.as_bytes(),
    ))
}

/// Someone allowed to see the fleet: the admin token as a bearer token, or a session cookie.
pub(crate) struct Viewer;

impl<S: Store> FromRequestParts<AppState<S>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self, ApiError> {
        if let Some(token) = super::bearer(parts) {
            return match admin_token_ok(state, token) {
                Some(true) => Ok(Viewer),
                Some(false) => Err(ApiError::unauthenticated("wrong admin token")),
                None => Err(admin_disabled()),
            };
        }
        match cookie_value(&parts.headers, SESSION_COOKIE) {
            Some(s) if state.0.fleet.session_valid(s) => Ok(Viewer),
            Some(_) => Err(ApiError::unauthenticated(
                "the fleet page session expired: log in again at /fleet",
            )),
            None => Err(ApiError::unauthenticated(
                "send the admin token as `Authorization: Bearer <token>`, or log in at /fleet",
            )),
        }
    }
}

fn admin_disabled() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "admin_disabled",
        "the admin API is disabled: start the hub with --admin-token-file or CAIRN_HUB_ADMIN_TOKEN",
    )
}

fn html(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = (status, body.into()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    security_headers(h);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The login URL may carry the token: never send it on as a referrer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The login form, with one of a few fixed notes (never text from the request).
fn login_page(status: StatusCode, note: &'static str) -> Response {
    html(status, LOGIN_HTML.replace("{{NOTE}}", note))
}

fn set_cookie(value: &str, max_age: u64, tls: bool) -> Result<HeaderValue, ApiError> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not build the session cookie",
        )
    })
}

fn redirect_to_page(cookie: HeaderValue) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/fleet"));
    h.insert(header::SET_COOKIE, cookie);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    resp
}

/// Check the admin token and start a session, or show the form again.
fn log_in<S>(state: &AppState<S>, token: &str, tls: bool) -> Result<Response, ApiError> {
    match admin_token_ok(state, token.trim()) {
        None => Ok(login_page(
            StatusCode::UNAUTHORIZED,
            "The admin API of this hub is disabled: start it with --admin-token-file.",
        )),
        Some(false) => Ok(login_page(StatusCode::UNAUTHORIZED, "Wrong admin token.")),
        Some(true) => {
            let session = state.0.fleet.new_session()?;
            let cookie = set_cookie(&session, SESSION_LIFETIME.as_secs(), tls)?;
            Ok(redirect_to_page(cookie))
        }
    }
}

fn is_tls(ctx: Option<&Extension<ServeContext>>) -> bool {
    ctx.is_some_and(|c| c.tls)
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    token: Option<String>,
}

async fn page<S: Store>(
    State(st): State<AppState<S>>,
    ctx: Option<Extension<ServeContext>>,
    Q(q): Q<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = q.token {
        return log_in(&st, &token, is_tls(ctx.as_ref()));
    }
    if st.0.admin_sha256.is_none() {
        return Ok(login_page(
            StatusCode::UNAUTHORIZED,
            "The admin API of this hub is disabled: start it with --admin-token-file.",
        ));
    }
    match cookie_value(&headers, SESSION_COOKIE) {
        Some(s) if st.0.fleet.session_valid(s) => Ok(html(StatusCode::OK, PAGE_HTML)),
        Some(_) => Ok(login_page(
            StatusCode::UNAUTHORIZED,
            "Your session expired: enter the admin token again.",
        )),
        None => Ok(login_page(StatusCode::UNAUTHORIZED, "")),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login<S: Store>(
    State(st): State<AppState<S>>,
    ctx: Option<Extension<ServeContext>>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let Ok(Form(form)) = form else {
        return Ok(login_page(
            StatusCode::BAD_REQUEST,
            "Send the form with the admin token.",
        ));
    };
    log_in(&st, &form.token, is_tls(ctx.as_ref()))
}

async fn logout<S: Store>(
    State(st): State<AppState<S>>,
    ctx: Option<Extension<ServeContext>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(s) = cookie_value(&headers, SESSION_COOKIE) {
        st.0.fleet.end_session(s);
    }
    Ok(redirect_to_page(set_cookie("", 0, is_tls(ctx.as_ref()))?))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    resp
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

/// `GET /v1/admin/fleet` and the stream's `snapshot` message.
#[derive(Debug, Serialize)]
pub struct FleetSnapshot {
    /// The hub's clock (Unix seconds), so the page shows "ago" without trusting its own.
    pub now: Timestamp,
    pub heartbeat_interval_secs: u64,
    pub phases: [&'static str; 4],
    pub hosts: Vec<FleetHost>,
}

async fn snapshot<S: Store>(
    _: Viewer,
    State(st): State<AppState<S>>,
) -> Result<Json<FleetSnapshot>, ApiError> {
    Ok(Json(read_snapshot(&st).await?))
}

async fn read_snapshot<S: Store>(st: &AppState<S>) -> Result<FleetSnapshot, ApiError> {
    Ok(FleetSnapshot {
        now: store::now(),
        heartbeat_interval_secs: st.0.heartbeat_interval_secs,
        phases: PHASES,
        hosts: st.0.store.fleet(None).await?,
    })
}

/// An mpsc receiver as the stream of SSE events axum sends.
struct Events(mpsc::Receiver<SseEvent>);

impl futures_core::Stream for Events {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

async fn stream<S: Store>(
    _: Viewer,
    State(st): State<AppState<S>>,
    ctx: Option<Extension<ServeContext>>,
) -> Result<Response, ApiError> {
    let Ok(permit) = Arc::clone(&st.0.fleet.streams).try_acquire_owned() else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("at most {MAX_STREAMS} fleet streams are served at once; retry later"),
        )
        .into_response();
        e.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return Ok(e);
    };
    // Subscribe before the first snapshot is read: no change can fall in between.
    let changes = st.0.fleet.feed.subscribe();
    let first = read_snapshot(&st).await?;
    let (tx, rx) = mpsc::channel(16);
    let closing = ctx.map(|Extension(c)| c.closing);
    tokio::spawn(feed_stream(st, first, changes, tx, closing, permit));
    let mut resp = Sse::new(Events(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    security_headers(h);
    Ok(resp)
}

/// Changes gathered since the last message of one stream.
#[derive(Default)]
struct Pending {
    all: bool,
    dirty: HashSet<Arc<str>>,
    seen: HashMap<Arc<str>, Timestamp>,
    removed: HashSet<Arc<str>>,
}

impl Pending {
    fn add(&mut self, c: Change) {
        match c {
            Change::All => self.all = true,
            Change::Host(id) => {
                self.removed.remove(&id);
                self.dirty.insert(id);
                if self.dirty.len() > MAX_DIRTY {
                    self.all = true;
                }
            }
            Change::Seen(id, t) => {
                self.seen.insert(id, t);
            }
            Change::Removed(id) => {
                self.dirty.remove(&id);
                self.seen.remove(&id);
                self.removed.insert(id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.dirty.is_empty() && self.seen.is_empty() && self.removed.is_empty()
    }
}

#[derive(Serialize)]
struct HostsMsg {
    now: Timestamp,
    hosts: Vec<FleetHost>,
}

#[derive(Serialize)]
struct SeenMsg {
    now: Timestamp,
    seen: HashMap<Arc<str>, Timestamp>,
}

#[derive(Serialize)]
struct RemovedMsg {
    ids: Vec<Arc<str>>,
}

fn sse<T: Serialize>(kind: &'static str, body: &T) -> Option<SseEvent> {
    match serde_json::to_string(body) {
        Ok(json) => Some(SseEvent::default().event(kind).data(json)),
        Err(e) => {
            tracing::warn!(error = %e, "encoding a fleet stream message");
            None
        }
    }
}

/// Turn what changed into the messages to send; `Err` leaves `p` as it was (retry later).
async fn messages<S: Store>(st: &AppState<S>, p: &mut Pending) -> Result<Vec<SseEvent>, ApiError> {
    let mut out = Vec::new();
    if p.all {
        out.extend(sse("snapshot", &read_snapshot(st).await?));
        *p = Pending::default();
        return Ok(out);
    }
    if !p.dirty.is_empty() {
        let ids: Vec<String> = p.dirty.iter().map(|s| s.to_string()).collect();
        let hosts = st.0.store.fleet(Some(&ids)).await?;
        let found: HashSet<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
        // A host that changed and is gone by now was removed.
        for id in &p.dirty {
            if !found.contains(&**id) {
                p.removed.insert(Arc::clone(id));
            }
        }
        for id in &p.dirty {
            p.seen.remove(id);
        }
        out.extend(sse(
            "hosts",
            &HostsMsg {
                now: store::now(),
                hosts,
            },
        ));
        p.dirty.clear();
    }
    if !p.seen.is_empty() {
        out.extend(sse(
            "seen",
            &SeenMsg {
                now: store::now(),
                seen: std::mem::take(&mut p.seen),
            },
        ));
    }
    if !p.removed.is_empty() {
        out.extend(sse(
            "removed",
            &RemovedMsg {
                ids: p.removed.drain().collect(),
            },
        ));
    }
    Ok(out)
}

/// One live stream: the first snapshot, then gathered changes, until the page goes away,
/// the hub shuts down, or the feed closes.
async fn feed_stream<S: Store>(
    st: AppState<S>,
    first: FleetSnapshot,
    mut changes: broadcast::Receiver<Change>,
    tx: mpsc::Sender<SseEvent>,
    closing: Option<tokio::sync::watch::Receiver<bool>>,
    _permit: OwnedSemaphorePermit,
) {
    let hello = SseEvent::default().retry(Duration::from_secs(2));
    if tx.send(hello).await.is_err() {
        return;
    }
    let Some(first) = sse("snapshot", &first) else {
        return;
    };
    if tx.send(first).await.is_err() {
        return;
    }
    let closing = async move {
        match closing {
            Some(mut c) => {
                let _ = c.wait_for(|v| *v).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(closing);
    let mut pending = Pending::default();
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync =
        tokio::time::interval_at(tokio::time::Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    loop {
        tokio::select! {
            r = changes.recv() => match r {
                Ok(c) => pending.add(c),
                Err(broadcast::error::RecvError::Lagged(_)) => pending.all = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = flush.tick(), if !pending.is_empty() => {
                match messages(&st, &mut pending).await {
                    Ok(msgs) => {
                        for m in msgs {
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message, "reading the fleet for a live stream");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            _ = resync.tick() => pending.all = true,
            () = tx.closed() => return,
            () = &mut closing => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; cairn_fleet=xyz"),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("xyz"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("cairn_fleet=abc"));
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie_value(&HeaderMap::new(), SESSION_COOKIE), None);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("xcairn_fleet=abc"));
        assert_eq!(cookie_value(&h, SESSION_COOKIE), None);
    }

    #[test]
    fn sessions_expire_and_end() {
        let f = Fleet::new();
        let s = f.new_session().unwrap_or_default();
        assert!(s.starts_with("cairn_fs_"));
        assert!(f.session_valid(&s));
        assert!(!f.session_valid("cairn_fs_other"));
        f.end_session(&s);
        assert!(!f.session_valid(&s));
        // Bounded: the oldest session goes when the table is full.
        let first = f.new_session().unwrap_or_default();
        for _ in 0..MAX_SESSIONS {
            f.new_session().unwrap_or_default();
        }
        assert!(!f.session_valid(&first));
        assert!(f.sessions().len() <= MAX_SESSIONS);
    }

    #[test]
    fn pending_changes_coalesce() {
        let mut p = Pending::default();
        assert!(p.is_empty());
        let a: Arc<str> = Arc::from("h_a");
        p.add(Change::Seen(Arc::clone(&a), 5));
        p.add(Change::Seen(Arc::clone(&a), 7));
        assert_eq!(p.seen.get(&a), Some(&7));
        p.add(Change::Host(Arc::clone(&a)));
        p.add(Change::Removed(Arc::clone(&a)));
        assert!(p.dirty.is_empty() && p.seen.is_empty());
        assert!(p.removed.contains(&a));
        p.add(Change::Host(Arc::clone(&a)));
        assert!(!p.removed.contains(&a));
        assert!(!p.all);
        for i in 0..=MAX_DIRTY {
            p.add(Change::Host(Arc::from(format!("h_{i}").as_str())));
        }
        assert!(p.all);
    }
}
