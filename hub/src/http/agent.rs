//! Endpoints the agent calls: register, heartbeat, profile, events.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_proto::protocol::{
    EventAck, EventBatch, HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
    MAX_EVENTS_PER_BATCH,
};

use super::fleet::Change;
use super::{ApiError, AppState, HostAuth, JsonBody};
use crate::store::{self, Registration, Store};

pub(crate) async fn register<S: Store>(
    State(state): State<AppState<S>>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    let reg = Registration {
        token: req.token,
        name: req.name,
        tags: req.tags,
        inventory: req.inventory,
        registration_key: req.registration_key,
    };
    let done = state.0.store.register_host(&reg).await?;
    if done.repeated {
        // The first answer did not reach the agent: the same one again (the same status too,
        // so a retry cannot be told from the first attempt by its answer).
        tracing::info!(host = %done.host.id, name = %done.host.name, project = %done.host.project, "registration repeated with its registration key; same identity");
    } else {
        tracing::info!(host = %done.host.id, name = %done.host.name, project = %done.host.project, "registered");
        state
            .0
            .fleet
            .notify(Change::Host(done.host.id.as_str().into()));
    }
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse {
            host_id: done.host.id,
            credential: done.credential,
            heartbeat_interval_secs: state.0.heartbeat_interval_secs,
        }),
    ))
}

pub(crate) async fn heartbeat<S: Store>(
    State(state): State<AppState<S>>,
    HostAuth(host): HostAuth,
    JsonBody(req): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let store = &state.0.store;
    store.heartbeat(&host.id, req.inventory.as_ref()).await?;
    state.0.fleet.notify(if req.inventory.is_some() {
        Change::Host(host.id.as_str().into())
    } else {
        Change::Seen(host.id.as_str().into(), store::now())
    });
    let assigned = store.assigned_profile(&host.id).await?;
    Ok(Json(HeartbeatResponse {
        profile_version: assigned.as_ref().map(|p| p.info.version),
        profile_name: assigned.as_ref().map(|p| p.info.name.clone()),
        profile_etag: assigned.as_ref().map(|p| p.info.etag()),
        heartbeat_interval_secs: state.0.heartbeat_interval_secs,
    }))
}

/// Does an `If-None-Match` header value match `etag`? Handles lists, `*` and weak tags.
fn none_match(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

pub(crate) async fn profile<S: Store>(
    State(state): State<AppState<S>>,
    HostAuth(host): HostAuth,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(record) = state.0.store.assigned_profile(&host.id).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let etag = record.info.etag();
    let etag_value = HeaderValue::from_str(&etag).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unusable ETag",
        )
    })?;
    let not_modified = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| none_match(v, &etag));
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if not_modified {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), cache],
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            cache,
        ],
        record.body,
    )
        .into_response())
}

pub(crate) async fn events<S: Store>(
    State(state): State<AppState<S>>,
    HostAuth(host): HostAuth,
    JsonBody(batch): JsonBody<EventBatch>,
) -> Result<Json<EventAck>, ApiError> {
    if batch.events.is_empty() {
        return Err(ApiError::invalid("an event batch holds at least one event"));
    }
    if batch.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(ApiError::invalid(format!(
            "an event batch holds at most {MAX_EVENTS_PER_BATCH} events, this one has {}",
            batch.events.len()
        )));
    }
    let outcome = state.0.store.record_events(&host.id, &batch.events).await?;
    state.0.fleet.notify(Change::Host(host.id.as_str().into()));
    Ok(Json(EventAck {
        acked_seq: outcome.acked_seq,
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    }))
}

#[cfg(test)]
mod tests {
    use super::none_match;

    #[test]
    fn if_none_match_forms() {
        let tag = "\"abc\"";
        assert!(none_match("\"abc\"", tag));
        assert!(none_match("\"x\", \"abc\"", tag));
        assert!(none_match("W/\"abc\"", tag));
        assert!(none_match("*", tag));
        assert!(!none_match("\"abd\"", tag));
        assert!(!none_match("abc", tag));
    }
}
