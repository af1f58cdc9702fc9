//! The API's error type: every failure a client can see, with a stable code and HTTP status.
//!
//! Guarantees:
//! - A response body is always `{"error":{"code","message"}}`; internal causes are logged
//!   (without personal data) and never sent to the client.
//! - An error of a lower layer (store, keys, engine, search, a blocking task) reaches the
//!   client through one conversion, [`ApiProblem`]: the error type decides its status and
//!   code, never the call site. A store failure is `store_error`, a field that does not
//!   open is `integrity_error`, an index still building is `search_index_building`,
//!   wherever it happens.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds a client should wait before trying again (the `Retry-After` header).
    pub retry_after: Option<u32>,
}

/// The code of an error response, kept in the response's extensions so that the language
/// layer ([`super::messages::localize`]) can put the message in the reader's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Asks the client to try again after `seconds` (sent as `Retry-After`).
    pub fn retry_after(mut self, seconds: u32) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    /// The one answer for "no such record" and "not yours to see": identical on purpose.
    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no record with this id is visible to you",
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// An internal failure: the cause goes to the log, the client gets a generic message.
    pub fn internal(code: &'static str, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(code, cause = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            "the broker could not complete the request; the operators have the details",
        )
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

/// An error a handler may return with `?`: it knows its HTTP status, its stable code and
/// whether its own text may reach the client.
pub trait ApiProblem: std::fmt::Display {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
    fn code(&self) -> &'static str;
    /// The message for the client; `None` (the default) for internal failures, whose text
    /// goes to the log only.
    fn client_message(&self) -> Option<String> {
        None
    }
}

impl<E: ApiProblem> From<E> for ApiError {
    fn from(err: E) -> ApiError {
        let code = err.code();
        match err.client_message() {
            Some(message) => ApiError::new(err.status(), code, message),
            None => {
                let mut internal = ApiError::internal(code, &err);
                internal.status = err.status();
                internal
            }
        }
    }
}

impl ApiProblem for vault::store::StoreError {
    fn status(&self) -> StatusCode {
        match self {
            vault::store::StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            vault::store::StoreError::Corrupt { .. } => "integrity_error",
            vault::store::StoreError::Unavailable(_) => "store_unavailable",
            _ => "store_error",
        }
    }

    fn client_message(&self) -> Option<String> {
        matches!(self, vault::store::StoreError::Unavailable(_)).then(|| {
            "the broker's database is unreachable or busy; nothing was done: retry shortly"
                .to_owned()
        })
    }
}

impl ApiProblem for vault::crypto::CryptoError {
    fn code(&self) -> &'static str {
        use vault::crypto::CryptoError;
        match self {
            CryptoError::Open | CryptoError::Malformed | CryptoError::Unwrap => "integrity_error",
            _ => "key_error",
        }
    }
}

impl ApiProblem for engine::resolve::ResolveError {
    fn status(&self) -> StatusCode {
        match self {
            engine::resolve::ResolveError::Store(err) => err.status(),
            engine::resolve::ResolveError::Integrity { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn client_message(&self) -> Option<String> {
        match self {
            engine::resolve::ResolveError::Store(err) => err.client_message(),
            engine::resolve::ResolveError::Integrity { .. } => None,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            engine::resolve::ResolveError::Store(err) => err.code(),
            engine::resolve::ResolveError::Integrity { .. } => "integrity_error",
        }
    }
}

impl ApiProblem for engine::ingest::IngestError {
    fn status(&self) -> StatusCode {
        use engine::ingest::IngestError;
        match self {
            IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
            IngestError::TooManyRecords(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Store(err) => err.status(),
            IngestError::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn code(&self) -> &'static str {
        use engine::ingest::IngestError;
        match self {
            IngestError::Malformed(_) => "batch_malformed",
            IngestError::TooManyRecords(_) => "too_many_records",
            IngestError::Store(err) => err.code(),
            IngestError::Crypto(err) => err.code(),
        }
    }
    fn client_message(&self) -> Option<String> {
        use engine::ingest::IngestError;
        match self {
            IngestError::Malformed(_) | IngestError::TooManyRecords(_) => Some(self.to_string()),
            IngestError::Store(err) => err.client_message(),
            IngestError::Crypto(_) => None,
        }
    }
}

impl ApiProblem for ::search::SearchError {
    fn status(&self) -> StatusCode {
        use ::search::SearchError;
        match self {
            SearchError::NotReady | SearchError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            SearchError::Store(err) => err.status(),
            SearchError::Resolve(err) => err.status(),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn code(&self) -> &'static str {
        use ::search::SearchError;
        match self {
            SearchError::NotReady => "search_index_building",
            SearchError::Closed => "shutting_down",
            SearchError::Store(err) => err.code(),
            SearchError::Resolve(err) => err.code(),
            SearchError::Index(_) | SearchError::Io { .. } => "search_failed",
        }
    }
    fn client_message(&self) -> Option<String> {
        use ::search::SearchError;
        match self {
            SearchError::NotReady => Some(
                "the search index is being built from the store after a start; try again \
                 shortly (profiles by id can be read meanwhile)"
                    .to_owned(),
            ),
            SearchError::Closed => Some("the broker is shutting down; try again".to_owned()),
            SearchError::Store(err) => err.client_message(),
            SearchError::Resolve(err) => err.client_message(),
            _ => None,
        }
    }
}

impl ApiProblem for audit::AuditError {
    fn status(&self) -> StatusCode {
        match self {
            audit::AuditError::Unavailable | audit::AuditError::DiskFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            audit::AuditError::Unavailable | audit::AuditError::DiskFull { .. } => {
                "audit_unavailable"
            }
            _ => "audit_read_failed",
        }
    }
    fn client_message(&self) -> Option<String> {
        match self {
            audit::AuditError::Unavailable | audit::AuditError::DiskFull { .. } => {
                Some("the audit log cannot be written; try again when /readyz is ready".to_owned())
            }
            _ => None,
        }
    }
}

/// The policy files a replacement would leave do not compile.
impl ApiProblem for policies::authz::PolicyError {
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    fn code(&self) -> &'static str {
        "policy_invalid"
    }
    fn client_message(&self) -> Option<String> {
        Some(self.to_string())
    }
}

/// A blocking task that panicked or was cancelled.
impl ApiProblem for tokio::task::JoinError {
    fn code(&self) -> &'static str {
        "task_failed"
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault::crypto::CryptoError;
    use vault::store::StoreError;

    fn answer(err: ApiError) -> (u16, &'static str, String) {
        (err.status.as_u16(), err.code, err.message)
    }

    #[test]
    fn each_error_type_decides_its_status_and_code_and_internal_text_stays_inside() {
        let corrupt = StoreError::Corrupt {
            key: "gongan/resident/110105198003121238".to_owned(),
            reason: "bad json".to_owned(),
        };
        let (status, code, message) = answer(corrupt.into());
        assert_eq!((status, code), (500, "integrity_error"));
        assert!(!message.contains("110105"), "no internal detail: {message}");

        let newer = StoreError::NewerFormat {
            found: 9,
            supported: 2,
        };
        assert_eq!(answer(newer.into()).1, "store_error");

        let sealed = engine::resolve::ResolveError::Integrity {
            department: model::Department::Weijian,
            field: "diagnosis".to_owned(),
            source: CryptoError::Open,
        };
        assert_eq!(answer(sealed.into()).1, "integrity_error");
        let stored = engine::resolve::ResolveError::Store(StoreError::NewerFormat {
            found: 9,
            supported: 2,
        });
        assert_eq!(
            answer(stored.into()).1,
            "store_error",
            "a store failure is not integrity"
        );

        let (status, code, message) = answer(::search::SearchError::NotReady.into());
        assert_eq!((status, code), (503, "search_index_building"));
        assert!(message.contains("try again"), "{message}");

        let malformed = engine::ingest::IngestError::Malformed("line 3 is not JSON".to_owned());
        let (status, code, message) = answer(malformed.into());
        assert_eq!((status, code), (400, "batch_malformed"));
        assert!(
            message.contains("line 3"),
            "the publisher learns what to fix: {message}"
        );
        let too_many = engine::ingest::IngestError::TooManyRecords(200_000);
        assert_eq!(answer(too_many.into()).0, 413);

        // A database that went away is 503 with the retry advice, however deep it surfaced.
        let lost = || StoreError::Unavailable("pool timed out (secret host)".to_owned());
        for answered in [
            answer(lost().into()),
            answer(engine::ingest::IngestError::Store(lost()).into()),
            answer(engine::resolve::ResolveError::Store(lost()).into()),
            answer(::search::SearchError::Store(lost()).into()),
            answer(
                ::search::SearchError::Resolve(engine::resolve::ResolveError::Store(lost())).into(),
            ),
        ] {
            let (status, code, message) = answered;
            assert_eq!((status, code), (503, "store_unavailable"));
            assert!(message.contains("retry"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }

        let (status, code, _) = answer(audit::AuditError::Unavailable.into());
        assert_eq!((status, code), (503, "audit_unavailable"));
        assert_eq!(
            answer(audit::AuditError::NotFound(7).into()).1,
            "audit_read_failed"
        );
    }
}
