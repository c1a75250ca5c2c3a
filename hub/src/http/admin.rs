//! `/v1/admin/…`: what the admin commands do, over HTTP, behind the admin token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_proto::protocol::Problem;
use serde::{Deserialize, Serialize};

use super::fleet::Change;
use super::{Admin, ApiError, AppState, JsonBody, LimitedBody, PathArgs as Path, Q as Query};
use crate::store::{
    self, Assignment, CreatedToken, Host, NewToken, ProfileInfo, Project, ProjectRef, Published,
    Scope, Store, StoredEvent, Target, Tenant, TokenInfo,
};

/// Tenant and project used when a request names none.
pub const DEFAULT_TENANT: &str = "default";
pub const DEFAULT_PROJECT: &str = "default";
/// Longest token lifetime accepted (ten years).
const MAX_TOKEN_LIFETIME_SECS: u64 = 10 * 366 * 24 * 3600;
/// Most events one listing returns.
const MAX_EVENTS_LISTED: u32 = 10_000;

pub(crate) fn routes<S: Store>() -> Router<AppState<S>> {
    Router::new()
        .route("/tenants", get(list_tenants::<S>).post(create_tenant::<S>))
        .route(
            "/projects",
            get(list_projects::<S>).post(create_project::<S>),
        )
        .route("/tokens", get(list_tokens::<S>).post(create_token::<S>))
        .route("/tokens/{id}/revoke", post(revoke_token::<S>))
        .route(
            "/profiles",
            get(list_profiles::<S>).post(upload_profile::<S>),
        )
        .route("/profiles/{name}", get(show_profile::<S>))
        .route(
            "/assignments",
            get(list_assignments::<S>)
                .post(assign::<S>)
                .delete(unassign::<S>),
        )
        .route("/hosts", get(list_hosts::<S>))
        .route("/hosts/{id}", get(show_host::<S>).delete(remove_host::<S>))
        .route("/hosts/{id}/events", get(host_events::<S>))
}

/// `?tenant=…&project=…`
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ScopeQuery {
    tenant: Option<String>,
    project: Option<String>,
}

impl ScopeQuery {
    pub(crate) fn new(tenant: Option<String>, project: Option<String>) -> Self {
        ScopeQuery { tenant, project }
    }

    pub(crate) fn tenant_opt(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// Tenant scope without `project`, else the project's.
    pub(crate) fn scope(&self) -> Scope {
        match &self.project {
            None => Scope::Tenant(self.tenant().to_string()),
            Some(_) => Scope::Project(self.project()),
        }
    }

    fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// The named project (default `default/default`).
    fn project(&self) -> ProjectRef {
        ProjectRef::new(
            self.tenant(),
            self.project.as_deref().unwrap_or(DEFAULT_PROJECT),
        )
    }

    /// A project filter: only when `project` is given.
    pub(crate) fn filter(&self) -> Option<ProjectRef> {
        self.project.as_ref().map(|_| self.project())
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct NameBody {
    name: String,
}

async fn list_tenants<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    Ok(Json(st.0.store.list_tenants().await?))
}

async fn create_tenant<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(st.0.store.create_tenant(&body.name).await?),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProjectBody {
    tenant: Option<String>,
    name: String,
}

async fn list_projects<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<Project>>, ApiError> {
    Ok(Json(st.0.store.list_projects(q.tenant.as_deref()).await?))
}

async fn create_project<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    JsonBody(body): JsonBody<ProjectBody>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let p = ProjectRef::new(body.tenant.as_deref().unwrap_or(DEFAULT_TENANT), body.name);
    Ok((
        StatusCode::CREATED,
        Json(st.0.store.create_project(&p).await?),
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenBody {
    tenant: Option<String>,
    project: Option<String>,
    #[serde(default)]
    name: String,
    /// Lifetime in seconds from now; absent = never expires.
    expires_in_secs: Option<u64>,
    max_uses: Option<u32>,
}

async fn list_tokens<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(st.0.store.list_tokens(q.filter().as_ref()).await?))
}

/// Absolute expiry from a lifetime, refusing zero and absurd values.
// String error: the text of a 400 answer (`ApiError::invalid`) or of the CLI's error.
pub fn expiry_from_lifetime(secs: Option<u64>) -> Result<Option<store::Timestamp>, String> {
    match secs {
        None => Ok(None),
        Some(0) => Err("a token lifetime must be at least one second".into()),
        Some(s) if s > MAX_TOKEN_LIFETIME_SECS => Err(format!(
            "a token lifetime is at most {MAX_TOKEN_LIFETIME_SECS} seconds (ten years)"
        )),
        Some(s) => Ok(Some(
            store::now().saturating_add(i64::try_from(s).unwrap_or(i64::MAX)),
        )),
    }
}

async fn create_token<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    JsonBody(body): JsonBody<TokenBody>,
) -> Result<axum::response::Response, ApiError> {
    let q = ScopeQuery {
        tenant: body.tenant,
        project: body.project,
    };
    let new = NewToken {
        project: q.project(),
        name: body.name,
        expires_at: expiry_from_lifetime(body.expires_in_secs).map_err(ApiError::invalid)?,
        max_uses: body.max_uses,
    };
    let created: CreatedToken = st.0.store.create_token(&new).await?;
    let join = st.0.trust.as_ref().map(|t| t.join(&created.token));
    let answer = Json(super::WithJoin {
        created: &created,
        join,
    });
    Ok(axum::response::IntoResponse::into_response((
        StatusCode::CREATED,
        answer,
    )))
}

async fn revoke_token<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    Ok(Json(st.0.store.revoke_token(&id).await?))
}

async fn list_profiles<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<ProfileInfo>>, ApiError> {
    let visible = q.filter();
    let tenant = if visible.is_none() {
        q.tenant.as_deref()
    } else {
        None
    };
    Ok(Json(
        st.0.store.list_profiles(tenant, visible.as_ref()).await?,
    ))
}

/// Answer to an upload: the stored version and whether it is new.
#[derive(Debug, Serialize)]
pub(crate) struct UploadAnswer {
    #[serde(flatten)]
    info: ProfileInfo,
    created: bool,
    /// Warnings about the document (an unknown key in the os layer's user-data…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<Problem>,
}

async fn upload_profile<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<ScopeQuery>,
    LimitedBody(body): LimitedBody,
) -> Result<(StatusCode, Json<UploadAnswer>), ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the profile is not UTF-8: {e}")))?;
    // The same reader and checks the agent applies, os layer included: a profile the hub
    // accepts is one every device accepts.
    let checked = cairn_userdata::profile::read("upload", text).map_err(|refused| {
        let problems: Vec<Problem> = refused.errors().map(Problem::from).collect();
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_profile",
            format!("the profile has {} problem(s)", problems.len()),
        );
        e.problems = problems;
        e
    })?;
    let warnings: Vec<Problem> = checked.warnings.iter().map(Problem::from).collect();
    let profile = checked.profile;
    let scope = match &q.project {
        Some(_) => Scope::Project(q.project()),
        None => Scope::Tenant(q.tenant().to_owned()),
    };
    Ok(match st.0.store.publish_profile(&scope, &profile).await? {
        Published::Created(info) => {
            // Hosts following the latest version now have a newer one assigned.
            st.0.fleet.notify(Change::All);
            (
                StatusCode::CREATED,
                Json(UploadAnswer {
                    info,
                    created: true,
                    warnings,
                }),
            )
        }
        Published::Unchanged(info) => (
            StatusCode::OK,
            Json(UploadAnswer {
                info,
                created: false,
                warnings,
            }),
        ),
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ShowQuery {
    tenant: Option<String>,
    version: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProfileAnswer {
    info: ProfileInfo,
    profile: serde_json::Value,
}

async fn show_profile<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Path(name): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<ProfileAnswer>, ApiError> {
    let tenant = q.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let rec = st.0.store.get_profile(tenant, &name, q.version).await?;
    let profile = serde_json::from_str(&rec.body).map_err(|e| {
        ApiError::from(crate::StoreError::Corrupt {
            context: format!("parsing stored profile {name}"),
            source: e,
        })
    })?;
    Ok(Json(ProfileAnswer {
        info: rec.info,
        profile,
    }))
}

/// Parse a `key=value` tag selector.
// String error: the text of a 400 answer (`ApiError::invalid`) or of the CLI's error.
pub fn parse_tag(s: &str) -> Result<Target, String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok(Target::Tag {
            key: k.to_owned(),
            value: v.to_owned(),
        }),
        _ => Err(format!("`{s}` is not a tag selector of the form key=value")),
    }
}

fn target_of(host: Option<String>, tag: Option<String>) -> Result<Target, ApiError> {
    match (host, tag) {
        (Some(h), None) => Ok(Target::Host(h)),
        (None, Some(t)) => parse_tag(&t).map_err(ApiError::invalid),
        _ => Err(ApiError::invalid(
            "name exactly one of `host` (id or name) and `tag` (key=value)",
        )),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AssignBody {
    tenant: Option<String>,
    project: Option<String>,
    host: Option<String>,
    tag: Option<String>,
    profile: String,
    /// Pin a version; absent = follow the latest.
    version: Option<u64>,
    /// Add-on profiles attached on top, in order: `NAME@VERSION` or `NAME`.
    #[serde(default)]
    addons: Vec<String>,
}

async fn list_assignments<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<Assignment>>, ApiError> {
    Ok(Json(
        st.0.store.list_assignments(q.filter().as_ref()).await?,
    ))
}

async fn assign<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    JsonBody(body): JsonBody<AssignBody>,
) -> Result<Json<Assignment>, ApiError> {
    let q = ScopeQuery {
        tenant: body.tenant,
        project: body.project,
    };
    let target = target_of(body.host, body.tag)?;
    let addons = body
        .addons
        .iter()
        .map(|s| store::parse_addon_ref(s))
        .collect::<Result<Vec<_>, _>>()?;
    st.0.store
        .check_addons(&q.project(), &body.profile, body.version, &addons)
        .await?;
    let done =
        st.0.store
            .assign(&q.project(), &target, &body.profile, body.version)
            .await?;
    st.0.store
        .attach_addons(&q.project(), &target, &addons)
        .await?;
    st.0.fleet.notify(Change::All);
    Ok(Json(done))
}

#[derive(Debug, Deserialize)]
pub(crate) struct UnassignQuery {
    tenant: Option<String>,
    project: Option<String>,
    host: Option<String>,
    tag: Option<String>,
}

async fn unassign<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<UnassignQuery>,
) -> Result<StatusCode, ApiError> {
    let scope = ScopeQuery {
        tenant: q.tenant,
        project: q.project,
    };
    let target = target_of(q.host, q.tag)?;
    if st.0.store.unassign(&scope.project(), &target).await? {
        st.0.fleet.notify(Change::All);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "that target has no assignment",
        ))
    }
}

async fn list_hosts<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Vec<Host>>, ApiError> {
    Ok(Json(st.0.store.list_hosts(q.filter().as_ref()).await?))
}

async fn show_host<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<Host>, ApiError> {
    Ok(Json(st.0.store.get_host(&id, None).await?))
}

async fn remove_host<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<Host>, ApiError> {
    let host = st.0.store.remove_host(&id).await?;
    st.0.fleet.notify(Change::Removed(host.id.as_str().into()));
    Ok(Json(host))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

async fn host_events<S: Store>(
    _: Admin,
    State(st): State<AppState<S>>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Vec<StoredEvent>>, ApiError> {
    let limit = q.limit.unwrap_or(1000).min(MAX_EVENTS_LISTED);
    // Unknown host → 404 rather than an empty list.
    st.0.store.get_host(&id, None).await?;
    Ok(Json(st.0.store.list_events(&id, q.after, limit).await?))
}
