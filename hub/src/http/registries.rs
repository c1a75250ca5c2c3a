//! Registries over HTTP: `/v1/admin/registries` for operators (never showing credentials)
//! and `GET /v1/hosts/{id}/registries` for agents (only what the host's profile uses).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use cairn_proto::registry::{HostRegistries, RegistryKind, RegistryRefs};
use cairn_proto::Profile;
use serde::Deserialize;

use super::admin::ScopeQuery;
use super::{Admin, ApiError, AppState, HostAuth, JsonBody, PathArgs as Path, Q as Query};
use crate::registry::{self, Credentials, RegistrySpec};
use crate::secret;
use crate::store::{NewRegistry, RegistryInfo, Store};

pub(crate) fn admin_routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/registries", get(list::<S>).post(create::<S>))
        .route("/registries/{name}", delete(remove::<S>))
}

/// `POST /v1/admin/registries`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    tenant: Option<String>,
    project: Option<String>,
    name: String,
    kind: RegistryKind,
    url: String,
    #[serde(default)]
    ca_pem: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

fn keys_missing() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_registry_key",
        "this hub has no registry key (it runs without a data directory): registries with \
         credentials cannot be stored or served",
    )
}

/// Seal and store a registry: shared by the admin API and `cairn-hub registry create`.
pub async fn create_registry<S: Store>(
    store: &S,
    keys: Option<&registry::Keyring>,
    spec: &RegistrySpec,
) -> Result<RegistryInfo, crate::StoreError> {
    registry::check(spec).map_err(crate::StoreError::Invalid)?;
    let id = secret::new_id("rg_")?;
    let sealed = if spec.credentials.is_empty() {
        None
    } else {
        let keys = keys.ok_or_else(|| {
            crate::StoreError::Invalid(
                "the hub has no registry key to encrypt credentials with (no data directory)"
                    .into(),
            )
        })?;
        Some(
            keys.seal(&id, &spec.credentials)
                .map_err(|e| crate::StoreError::Internal(e.to_string()))?,
        )
    };
    store
        .create_registry(&NewRegistry {
            id,
            scope: spec.scope.clone(),
            name: spec.name.clone(),
            kind: spec.kind,
            url: spec.url.clone(),
            ca_pem: spec.ca_pem.clone(),
            sealed,
        })
        .await
}

async fn create<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<(StatusCode, Json<RegistryInfo>), ApiError> {
    let q = ScopeQuery::new(body.tenant, body.project);
    let spec = RegistrySpec {
        scope: q.scope(),
        name: body.name,
        kind: body.kind,
        url: body.url,
        ca_pem: body.ca_pem,
        credentials: Credentials {
            username: body.username,
            password: body.password,
            token: body.token,
        },
    };
    if !spec.credentials.is_empty() && st.0.registry_keys.is_none() {
        return Err(keys_missing());
    }
    let info = create_registry(&st.0.store, st.0.registry_keys.as_deref(), &spec).await?;
    tracing::info!(registry = %info.name, tenant = %info.tenant, kind = info.kind.as_str(), credentials = info.has_credentials, "registry created");
    Ok((StatusCode::CREATED, Json(info)))
}

async fn list<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<RegistryInfo>>, ApiError> {
    let visible = q.filter();
    let tenant = if visible.is_none() {
        q.tenant_opt()
    } else {
        None
    };
    Ok(Json(
        st.0.store.list_registries(tenant, visible.as_ref()).await?,
    ))
}

async fn remove<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Path(name): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<RegistryInfo>, ApiError> {
    let info = st.0.store.delete_registry(&q.scope(), &name).await?;
    tracing::info!(registry = %info.name, tenant = %info.tenant, "registry deleted");
    Ok(Json(info))
}

/// `GET /v1/hosts/{id}/registries`: the registries the host's assigned profile references
/// (by `registry:` name, or an `oci://` repo on an OCI registry's host), credentials
/// opened; nothing for registries it does not reference. `Cache-Control: no-store`.
pub(crate) async fn for_host<S: Store>(
    State(state): State<AppState<S>>,
    HostAuth(host): HostAuth,
) -> Result<Response, ApiError> {
    let store = &state.0.store;
    let refs = match store.assigned_profile(&host.id).await? {
        None => RegistryRefs::default(),
        Some(record) => {
            let profile: Profile = serde_json::from_str(&record.body).map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the stored profile does not parse",
                )
            })?;
            RegistryRefs::of_profile(&profile)
        }
    };
    let mut out = HostRegistries::default();
    if !refs.is_empty() {
        for rec in store.host_registries(&host.id).await? {
            if !refs.wants(&rec.info.name, rec.info.kind, &rec.info.url) {
                continue;
            }
            let access = match &state.0.registry_keys {
                Some(keys) => registry::access(&rec, keys),
                None if rec.sealed.is_none() => registry::access(
                    &rec,
                    // No credentials to open: any key will do, none is used.
                    &registry::Keyring::ephemeral().map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
                    })?,
                ),
                None => return Err(keys_missing()),
            }
            .map_err(|e| {
                tracing::error!(registry = %rec.info.name, "{e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?;
            out.registries.push(access);
        }
    }
    tracing::debug!(host = %host.id, registries = out.registries.len(), "registries served");
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(out),
    )
        .into_response())
}
