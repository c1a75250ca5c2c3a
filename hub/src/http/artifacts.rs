//! The mirror's host endpoints (docs/protocol.md "Artifacts"):
//!
//! * `GET /v1/hosts/{id}/artifacts` — every file of the host's assigned profile (both
//!   arches), its digest resolved by the hub, and whether the hub holds it;
//! * `GET /v1/hosts/{id}/artifacts/{sha256}` — the file, with `Range` (`206` +
//!   `Content-Range`, `416` past the end), downloaded from upstream first when the hub
//!   does not hold it yet (once for all concurrent requests).
//!
//! Both are authenticated by the host credential, as every host endpoint.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_proto::protocol::MirroredArtifacts;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{ApiError, AppState, HostAuth, PathArgs};
use crate::mirror::{is_sha256, Mirror, MirrorError};
use crate::store::Store;

/// Read size when streaming a file out.
const CHUNK: usize = 256 * 1024;

fn mirror<S>(st: &AppState<S>) -> Result<&Mirror, ApiError> {
    st.0.mirror.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_mirror",
            "this hub keeps no artifact mirror (it has no data directory)",
        )
    })
}

impl From<MirrorError> for ApiError {
    fn from(e: MirrorError) -> Self {
        let (status, code) = match &e {
            MirrorError::Unknown(_) => (StatusCode::NOT_FOUND, "not_found"),
            MirrorError::Upstream { .. } | MirrorError::Mismatch { .. } => {
                (StatusCode::BAD_GATEWAY, "upstream")
            }
            MirrorError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, "mirror_full"),
            MirrorError::Io { .. } | MirrorError::Invalid(_) | MirrorError::Store(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        if status.is_server_error() {
            // The detail (upstream URLs, client error chains, the hub's paths) stays in the
            // hub's log; a host learns what kind of failure it was.
            tracing::warn!("mirror: {e}");
            let message = match code {
                "upstream" => "the hub could not fetch or verify this file from its upstream (see the hub's log)",
                "mirror_full" => "the hub's mirror has no room for this file",
                _ => "the hub's mirror failed (see the hub's log)",
            };
            return ApiError::new(status, code, message.to_string());
        }
        ApiError::new(status, code, e.to_string())
    }
}

/// `GET /v1/hosts/{id}/artifacts`.
pub(crate) async fn list<S: Store>(
    State(st): State<AppState<S>>,
    HostAuth(host): HostAuth,
) -> Result<Json<MirroredArtifacts>, ApiError> {
    let m = mirror(&st)?;
    let Some(record) = st.0.store.assigned_profile(&host.id).await? else {
        return Ok(Json(MirroredArtifacts::default()));
    };
    let profile: cairn_proto::profile::Profile = serde_json::from_str(&record.body)
        .map_err(|e| MirrorError::Store(format!("the assigned profile does not parse: {e}")))?;
    // The network only for what the index does not know (a profile never synced); a
    // checksum file that cannot be read leaves those files out, and the agent reads them
    // itself.
    let artifacts = match m.resolve(&profile, true).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(
                "mirror: resolving {} v{}: {e}",
                profile.name,
                profile.version
            );
            m.resolve(&profile, false).await?
        }
    };
    Ok(Json(MirroredArtifacts {
        profile: record.info.name.clone(),
        version: record.info.version,
        artifacts,
    }))
}

/// A `Range` header's one range, resolved against `len`: `Ok(None)` for the whole file
/// (no header, several ranges, or a form this server ignores), `Err(())` when it starts
/// past the end (`416`).
fn range(headers: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // The last N bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 {
            return Err(());
        }
        return Ok(Some((len.saturating_sub(n), len.saturating_sub(1))));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(len.saturating_sub(1)),
            _ => return Ok(None),
        }
    };
    if start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn not_named(sha: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("this host's assigned profile names no artifact {sha}"),
    )
}

/// `GET /v1/hosts/{id}/artifacts/{sha256}`.
pub(crate) async fn get<S: Store>(
    State(st): State<AppState<S>>,
    HostAuth(host): HostAuth,
    PathArgs((_id, sha)): PathArgs<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !is_sha256(&sha) {
        return Err(ApiError::bad_request(format!(
            "`{sha}` is not a sha256 (64 lower-case hexadecimal characters)"
        )));
    }
    let m = mirror(&st)?;
    // A host gets the files its own assigned profile names (what `GET …/artifacts` lists),
    // nothing another tenant's profile names, and cannot make the hub fetch anything else.
    let Some(record) = st.0.store.assigned_profile(&host.id).await? else {
        return Err(not_named(&sha));
    };
    let profile: cairn_proto::profile::Profile = serde_json::from_str(&record.body)
        .map_err(|e| MirrorError::Store(format!("the assigned profile does not parse: {e}")))?;
    if !m
        .resolve(&profile, false)
        .await?
        .iter()
        .any(|a| a.sha256 == sha)
    {
        return Err(not_named(&sha));
    }
    let path = m.ensure(&sha, &st.0.store).await?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| MirrorError::Invalid(format!("opening {}: {e}", path.display())))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| MirrorError::Invalid(format!("reading {}: {e}", path.display())))?
        .len();
    let etag =
        HeaderValue::from_str(&format!("\"{sha}\"")).unwrap_or(HeaderValue::from_static("\"\""));
    let common = [
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::ETAG, etag),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=31536000, immutable"),
        ),
    ];
    let (status, start, end) = match range(&headers, len) {
        Err(()) => {
            let cr = HeaderValue::from_str(&format!("bytes */{len}"))
                .unwrap_or(HeaderValue::from_static("bytes */0"));
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                common,
                [(header::CONTENT_RANGE, cr)],
            )
                .into_response());
        }
        Ok(None) => (StatusCode::OK, 0, len.saturating_sub(1)),
        Ok(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| MirrorError::Invalid(format!("seeking in {}: {e}", path.display())))?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), CHUNK);
    let mut resp = (status, common, Body::from_stream(stream)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(
            header::RANGE,
            HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("")),
        );
        range(&h, len)
    }

    #[test]
    fn range_forms() {
        assert_eq!(r("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(r("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=90-500", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(r("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(r("bytes=100-", 100), Err(()));
        assert_eq!(r("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(r("items=0-1", 100), Ok(None));
        assert_eq!(r("bytes=5-1", 100), Ok(None));
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
    }
}
