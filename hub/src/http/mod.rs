//! The `/v1` HTTP API (docs/protocol.md): host endpoints authenticated by the host
//! credential, admin endpoints by the admin token, and `GET /v1/ca` (the hub's CA, which
//! devices check against the pin of their join string) open to all.

mod admin;
mod agent;
mod artifacts;
pub mod error;
pub mod fleet;
pub mod registries;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use cairn_proto::protocol::MAX_BODY_BYTES;
use serde::de::DeserializeOwned;

pub use admin::{expiry_from_lifetime, parse_tag, DEFAULT_PROJECT, DEFAULT_TENANT};
pub use error::ApiError;

use crate::secret;
use crate::store::{Host, Store};

/// Longest time a request may take by default, body upload included; then `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The CA devices pin and the address they use: served by `GET /v1/ca`, and made into
    /// a join string with each new token. `None` (plain HTTP): `GET /v1/ca` is `404`.
    pub trust: Option<crate::pki::Trust>,
    /// The admin token; `None` disables `/v1/admin/…`.
    pub admin_token: Option<String>,
    /// Heartbeat period asked of agents (seconds).
    pub heartbeat_interval_secs: u64,
    /// Longest time a request may take, body upload included; then `408`.
    pub request_timeout: Duration,
    /// The artifact mirror (`<data dir>/mirror`); `None` answers the artifact endpoints
    /// with `404 no_mirror`.
    pub mirror: Option<Arc<crate::mirror::Mirror>>,
    /// The registry key ([`crate::registry`]); `None`: registries with credentials can be
    /// neither created nor served.
    pub registry_keys: Option<Arc<crate::registry::Keyring>>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            trust: None,
            admin_token: None,
            heartbeat_interval_secs: cairn_proto::protocol::DEFAULT_HEARTBEAT_SECS,
            request_timeout: REQUEST_TIMEOUT,
            mirror: None,
            registry_keys: None,
        }
    }
}

pub(crate) struct Shared<S> {
    pub store: S,
    admin_sha256: Option<String>,
    pub heartbeat_interval_secs: u64,
    pub trust: Option<crate::pki::Trust>,
    pub registry_keys: Option<Arc<crate::registry::Keyring>>,
    /// The fleet page: change feed, sessions.
    pub(crate) fleet: fleet::Fleet,
    /// The artifact mirror, when the hub keeps one.
    pub(crate) mirror: Option<Arc<crate::mirror::Mirror>>,
}

/// State shared by the handlers.
pub struct AppState<S>(pub(crate) Arc<Shared<S>>);

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState(Arc::clone(&self.0))
    }
}

/// The complete API as a router.
pub fn router<S: Store>(store: S, config: ApiConfig) -> Router {
    let state = AppState(Arc::new(Shared {
        store,
        admin_sha256: config.admin_token.as_deref().map(secret::sha256_hex),
        heartbeat_interval_secs: config.heartbeat_interval_secs,
        trust: config.trust,
        registry_keys: config.registry_keys,
        fleet: fleet::Fleet::new(),
        mirror: config.mirror,
    }));
    let request_timeout = config.request_timeout;
    Router::new()
        .route("/v1/ca", get(ca::<S>))
        .route("/v1/register", post(agent::register::<S>))
        .route("/v1/hosts/{id}/heartbeat", post(agent::heartbeat::<S>))
        .route("/v1/hosts/{id}/profile", get(agent::profile::<S>))
        .route("/v1/hosts/{id}/events", post(agent::events::<S>))
        .route("/v1/hosts/{id}/artifacts", get(artifacts::list::<S>))
        .route(
            "/v1/hosts/{id}/artifacts/{sha256}",
            get(artifacts::get::<S>),
        )
        .route("/v1/hosts/{id}/registries", get(registries::for_host::<S>))
        .nest(
            "/v1/admin",
            admin::routes::<S>()
                .merge(registries::admin_routes::<S>())
                .merge(fleet::api_routes::<S>()),
        )
        .merge(fleet::page_routes::<S>())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            guard(request_timeout, req, next)
        }))
        .with_state(state)
}

/// A new token with its join string, as `token create` and `POST /v1/admin/tokens` show it
/// (once).
#[derive(serde::Serialize)]
pub struct WithJoin<'a> {
    #[serde(flatten)]
    pub created: &'a crate::store::CreatedToken,
    /// `cairn1:<CA sha256>:<token>@<endpoint>`; absent when the hub's CA is not known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
}

/// `GET /v1/ca`: the CA certificate devices pin (PEM). Public: it is what a TLS handshake
/// shows anyway, and a device checks it against its pin before trusting it.
async fn ca<S: Store>(axum::extract::State(st): axum::extract::State<AppState<S>>) -> Response {
    match &st.0.trust {
        Some(t) => (
            [(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/x-pem-file"),
            )],
            t.ca_pem.clone(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this hub serves plain HTTP and has no CA",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see docs/protocol.md)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method (see docs/protocol.md)",
    )
}

/// Request timeout and access log.
async fn guard(request_timeout: Duration, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    // An artifact the mirror does not hold yet is downloaded from upstream before its
    // answer starts: that may take longer than any other request.
    let limit = if is_artifact_download(&path) {
        ARTIFACT_TIMEOUT.max(request_timeout)
    } else {
        request_timeout
    };
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs_f64()),
        )
        .into_response(),
    };
    let status = resp.status();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), ms, "request");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), ms, "request");
    }
    resp
}

/// Longest time before the answer to `GET /v1/hosts/{id}/artifacts/{sha256}` starts (the
/// hub's own upstream download included; the body then streams without a limit).
pub const ARTIFACT_TIMEOUT: Duration = Duration::from_secs(3600);

fn is_artifact_download(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    matches!(
        (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next()
        ),
        (
            Some("v1"),
            Some("hosts"),
            Some(_),
            Some("artifacts"),
            Some(_),
            None
        )
    )
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A host authenticated by `Authorization: Bearer <credential>` for the `{id}` in the path.
/// Runs before the body is read: a stranger cannot make the hub buffer a body.
pub(crate) struct HostAuth(pub Host);

impl<S: Store> FromRequestParts<AppState<S>> for HostAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self, ApiError> {
        // By name: the artifact endpoint's path has a second parameter.
        let PathArgs(params) =
            PathArgs::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await?;
        let id = params.get("id").cloned().unwrap_or_default();
        let credential = bearer(parts).ok_or_else(|| {
            ApiError::unauthenticated(
                "send the host credential as `Authorization: Bearer <credential>`",
            )
        })?;
        Ok(HostAuth(
            state.0.store.authenticate_host(&id, credential).await?,
        ))
    }
}

/// An operator authenticated by the admin token.
pub(crate) struct Admin;

impl<S: Store> FromRequestParts<AppState<S>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self, ApiError> {
        let Some(expected) = &state.0.admin_sha256 else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "admin_disabled",
                "the admin API is disabled: start the hub with --admin-token-file or CAIRN_HUB_ADMIN_TOKEN",
            ));
        };
        let given = bearer(parts).ok_or_else(|| {
            ApiError::unauthenticated("send the admin token as `Authorization: Bearer <token>`")
        })?;
        if secret::constant_time_eq(secret::sha256_hex(given).as_bytes(), expected.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthenticated("wrong admin token"))
        }
    }
}

// The extractors below are the only ones handlers use for the path, the query and the
// body: each turns axum's plain-text rejection into the JSON error body of docs/protocol.md,
// through the `From<…Rejection> for ApiError` conversions of `error.rs`. clippy.toml
// forbids axum's own `Path` and `Query` elsewhere.

/// Path parameters, with a JSON `400` when they do not decode (bad percent-encoding, not
/// UTF-8, not the expected type).
pub(crate) struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    #[allow(clippy::disallowed_types)]
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(PathArgs(v))
    }
}

/// Query parameters, with a JSON `400` when they do not parse.
pub(crate) struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    #[allow(clippy::disallowed_types)]
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::try_from_uri(&parts.uri)?;
        Ok(Q(v))
    }
}

/// The raw body within the size limit (`413` beyond it).
pub(crate) struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Ok(LimitedBody(Bytes::from_request(req, state).await?))
    }
}

/// A JSON body (an empty body reads as `{}`), with parse errors as `400` naming line and
/// column.
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let LimitedBody(bytes) = LimitedBody::from_request(req, state).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("the body is not the expected JSON: {e}")))
    }
}
