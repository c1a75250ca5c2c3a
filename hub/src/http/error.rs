//! Every refusal the API gives, as a status code plus the JSON body of docs/protocol.md.

use axum::extract::rejection::{
    BytesRejection, FormRejection, JsonRejection, PathRejection, QueryRejection,
};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_proto::protocol::{ErrorBody, Problem, MAX_BODY_BYTES};

use crate::error::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub problems: Vec<Problem>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::TokenRejected(_) => StatusCode::UNAUTHORIZED,
            StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            StoreError::Database { .. }
            | StoreError::Migrate { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Random(_)
            | StoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %cairn_cli::report::error_chain(&e), "request failed");
            "internal error; the hub's log has the details".to_owned()
        } else {
            e.to_string()
        };
        ApiError::new(status, e.code(), message)
    }
}

impl ApiError {
    /// An extractor's refusal: `what` did not decode. axum's own answer would be plain
    /// text; this keeps its status and message in the JSON body.
    fn rejected(what: &str, status: StatusCode, text: String) -> ApiError {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(MAX_BODY_BYTES),
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::invalid(format!("{what}: {text}")),
            s if s.is_server_error() => {
                tracing::error!(status = s.as_u16(), "reading {what}: {text}");
                ApiError::new(
                    s,
                    "internal",
                    "internal error; the hub's log has the details",
                )
            }
            s => ApiError::new(s, "bad_request", format!("{what}: {text}")),
        }
    }
}

/// Every axum extractor rejection the API can meet, converted in one place (the
/// extractors in `http/mod.rs` use these through `?`).
macro_rules! from_rejection {
    ($($rejection:ty => $what:literal),* $(,)?) => {$(
        impl From<$rejection> for ApiError {
            fn from(e: $rejection) -> Self {
                ApiError::rejected($what, e.status(), e.body_text())
            }
        }
    )*};
}

from_rejection! {
    PathRejection => "the path",
    QueryRejection => "the query string",
    JsonRejection => "the JSON body",
    FormRejection => "the form",
    BytesRejection => "the body",
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
            problems: self.problems,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
