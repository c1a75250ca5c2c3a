//! Errors of the hub library. Each variant says what kind of refusal it is, so the HTTP
//! layer maps it to a status code and the CLI to an exit code, and its message says what
//! to do about it. Messages never contain a secret.

/// Why a storage operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist (tenant, project, token, host, profile…).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (a name taken, an immutable version).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (bad name, bad tag).
    #[error("{0}")]
    Invalid(String),
    /// A registration token that is unknown, expired, revoked or used up.
    #[error("{0}")]
    TokenRejected(String),
    /// A host credential that does not belong to the host named in the request.
    #[error("the credential is not valid for host {0}")]
    Forbidden(String),
    #[error("{context}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("{context}")]
    Migrate {
        context: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A JSON document stored by the hub no longer parses (hand-edited database?).
    #[error("{context}")]
    Corrupt {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("reading random bytes from the operating system: {0}")]
    Random(String),
    /// A background task of the store failed (details in the message, for the log).
    #[error("{0}")]
    Internal(String),
}

impl StoreError {
    /// Stable machine-readable reason, used as `error` in HTTP answers.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Conflict(_) => "conflict",
            StoreError::Invalid(_) => "invalid",
            StoreError::TokenRejected(_) => "token_rejected",
            StoreError::Forbidden(_) => "forbidden",
            StoreError::Database { .. }
            | StoreError::Migrate { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Random(_)
            | StoreError::Internal(_) => "internal",
        }
    }
}

/// `.map_err(db("doing X"))`: wrap a database error with what the store was doing.
pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Database { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_distinct_public_code() {
        let cases = [
            (StoreError::NotFound("x".into()), "not_found"),
            (StoreError::Conflict("x".into()), "conflict"),
            (StoreError::Invalid("x".into()), "invalid"),
            (StoreError::TokenRejected("x".into()), "token_rejected"),
            (StoreError::Forbidden("h_1".into()), "forbidden"),
            (StoreError::Random("x".into()), "internal"),
            (db("reading")(sqlx::Error::RowNotFound), "internal"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
        // Context first, cause reachable through `source()` (no duplication in chains).
        let e = db("listing hosts")(sqlx::Error::RowNotFound);
        assert_eq!(e.to_string(), "listing hosts");
        assert!(std::error::Error::source(&e).is_some());
    }
}
