//! API errors: one enum, one table from error to HTTP status and stable code, and
//! one `application/problem+json` (RFC 9457) rendering.
//!
//! Lower layers have their own error enums ([`QueueError`], [`StoreError`]); they
//! become `ApiError`s here and nowhere else.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::jobs::queue::QueueError;
use crate::live::registry::RegistryError;
use crate::live::service::LiveError;
use crate::store::StoreError;
use crate::validation::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The caller's token may not do this; says why (its role, its owner).
    #[error("{0}")]
    Forbidden(String),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body must be `application/json`")]
    UnsupportedMediaType,
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(u64),
    #[error("the request has invalid fields")]
    Validation {
        code: &'static str,
        errors: Vec<FieldError>,
    },
    #[error("invalid object key: {message}")]
    InvalidKey {
        field: Option<String>,
        message: String,
    },
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("the `Idempotency-Key` header must be 1-255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("this `Idempotency-Key` was used with a different body (job {0})")]
    IdempotencyConflict(uuid::Uuid),
    #[error("job not found")]
    JobNotFound,
    #[error("the job already ended as `{0}`")]
    JobFinished(&'static str),
    #[error("object not found")]
    ObjectNotFound,
    #[error("{0}")]
    KeyConflict(String),
    #[error("live stream not found")]
    StreamNotFound,
    #[error("the live stream has ended")]
    StreamEnded,
    #[error("a pin with this id exists on the stream")]
    PinExists,
    #[error("no such pin on the stream")]
    PinNotFound,
    #[error("at most {0} pins may be open on a stream at once")]
    TooManyPins(usize),
    #[error("this node serves `/media` only with the filesystem store")]
    MediaNotServed,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the object store is unavailable: {0}")]
    StoreUnavailable(String),
    #[error("the job store is unavailable: {0}")]
    QueueUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The problem document (RFC 9457) every error answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:media-node:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Field-level details of validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    /// The table: status, stable code and title of every error.
    fn describe(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", "Invalid JSON"),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            Validation { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code, "Invalid request"),
            InvalidKey { .. } => (StatusCode::BAD_REQUEST, "invalid_key", "Invalid object key"),
            InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query", "Invalid query"),
            InvalidIdempotencyKey => (
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Invalid idempotency key",
            ),
            IdempotencyConflict(_) => (
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "Idempotency key reused",
            ),
            JobNotFound => (StatusCode::NOT_FOUND, "job_not_found", "Job not found"),
            JobFinished(_) => (StatusCode::CONFLICT, "job_finished", "Job already finished"),
            ObjectNotFound => (
                StatusCode::NOT_FOUND,
                "object_not_found",
                "Object not found",
            ),
            KeyConflict(_) => (StatusCode::CONFLICT, "key_conflict", "Key conflict"),
            StreamNotFound => (
                StatusCode::NOT_FOUND,
                "stream_not_found",
                "Live stream not found",
            ),
            StreamEnded => (StatusCode::CONFLICT, "stream_ended", "Live stream ended"),
            PinExists => (StatusCode::CONFLICT, "pin_exists", "Pin exists"),
            PinNotFound => (StatusCode::NOT_FOUND, "pin_not_found", "Pin not found"),
            TooManyPins(_) => (StatusCode::CONFLICT, "too_many_pins", "Too many pins"),
            MediaNotServed => (
                StatusCode::NOT_FOUND,
                "media_not_served",
                "Media not served by this node",
            ),
            RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found", "Not found"),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "Object store unavailable",
            ),
            QueueUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "job_store_unavailable",
                "Job store unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    pub fn code(&self) -> &'static str {
        self.describe().1
    }

    pub fn status(&self) -> StatusCode {
        self.describe().0
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        ApiError::Validation {
            code: "invalid_spec",
            errors,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.describe();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let errors = match &self {
            ApiError::Validation { errors, .. } => errors.clone(),
            ApiError::InvalidKey {
                field: Some(field),
                message,
            } => vec![FieldError::new(field.clone(), message.clone())],
            _ => Vec::new(),
        };
        let problem = Problem {
            kind: format!("urn:media-node:problem:{code}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            code,
            errors,
        };
        let mut response = (status, Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"media-node\""),
            );
        }
        response
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Unavailable(e) => ApiError::QueueUnavailable(e),
            QueueError::Corrupt(e) => ApiError::Internal(e),
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(err: LiveError) -> Self {
        match err {
            LiveError::NotFound => ApiError::StreamNotFound,
            LiveError::Ended => ApiError::StreamEnded,
            LiveError::PinExists => ApiError::PinExists,
            LiveError::PinNotFound => ApiError::PinNotFound,
            LiveError::TooManyPins(n) => ApiError::TooManyPins(n),
            LiveError::UnknownProfile(name) => ApiError::validation(vec![FieldError::new(
                "profile",
                format!("unknown live profile `{name}`"),
            )]),
            LiveError::Registry(RegistryError::Unavailable(e)) => ApiError::QueueUnavailable(e),
            LiveError::Registry(RegistryError::Corrupt(e)) => ApiError::Internal(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(_) => ApiError::ObjectNotFound,
            StoreError::TooLarge { limit, .. } => ApiError::PayloadTooLarge(limit),
            StoreError::InvalidKey(e) => ApiError::InvalidKey {
                field: None,
                message: e.to_string(),
            },
            e @ StoreError::Conflict(_) => ApiError::KeyConflict(e.to_string()),
            StoreError::Unavailable(e) => ApiError::StoreUnavailable(e),
            StoreError::Io(e) => ApiError::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every kind. The match makes a new variant fail to compile
    /// here until it is added to the list (and so to the README's table).
    fn one_of_each() -> Vec<ApiError> {
        use ApiError::*;
        let all = vec![
            Unauthorized,
            Forbidden(String::new()),
            InvalidJson(String::new()),
            UnsupportedMediaType,
            PayloadTooLarge(0),
            ApiError::validation(vec![]),
            Validation {
                code: "unknown_field",
                errors: vec![],
            },
            InvalidKey {
                field: None,
                message: String::new(),
            },
            InvalidQuery(String::new()),
            InvalidIdempotencyKey,
            IdempotencyConflict(uuid::Uuid::nil()),
            JobNotFound,
            JobFinished(""),
            ObjectNotFound,
            KeyConflict(String::new()),
            StreamNotFound,
            StreamEnded,
            PinExists,
            PinNotFound,
            TooManyPins(0),
            MediaNotServed,
            RouteNotFound,
            MethodNotAllowed,
            StoreUnavailable(String::new()),
            QueueUnavailable(String::new()),
            Internal(String::new()),
        ];
        for e in &all {
            match e {
                Unauthorized
                | Forbidden(_)
                | InvalidJson(_)
                | UnsupportedMediaType
                | PayloadTooLarge(_)
                | Validation { .. }
                | InvalidKey { .. }
                | InvalidQuery(_)
                | InvalidIdempotencyKey
                | IdempotencyConflict(_)
                | JobNotFound
                | JobFinished(_)
                | ObjectNotFound
                | KeyConflict(_)
                | StreamNotFound
                | StreamEnded
                | PinExists
                | PinNotFound
                | TooManyPins(_)
                | MediaNotServed
                | RouteNotFound
                | MethodNotAllowed
                | StoreUnavailable(_)
                | QueueUnavailable(_)
                | Internal(_) => {}
            }
        }
        all
    }

    /// The README's table of API error codes has a row for every code, with
    /// its status, and names no other.
    #[test]
    fn the_readme_lists_every_api_error_code() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = readme
            .find("### Error codes")
            .expect("the README's error code table");
        let table = &readme[start..];
        let table = &table[table.find("|---").unwrap()..];
        let table = &table[..table.find("\n\n").unwrap_or(table.len())];
        let mut rows = Vec::new();
        for line in table.lines().skip(1) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let status: u16 = cells[1].parse().unwrap();
            for code in cells[2].split('`').skip(1).step_by(2) {
                rows.push((status, code.to_string()));
            }
        }
        let all = one_of_each();
        for e in &all {
            let row = (e.status().as_u16(), e.code().to_string());
            assert!(rows.contains(&row), "README lacks {row:?}");
        }
        for (status, code) in rows {
            assert!(
                all.iter()
                    .any(|e| e.code() == code && e.status().as_u16() == status),
                "README lists {status} `{code}`, which no error answers"
            );
        }
    }

    #[test]
    fn codes_are_stable_and_statuses_match() {
        assert_eq!(ApiError::Unauthorized.status(), 401);
        assert_eq!(ApiError::InvalidJson("x".into()).code(), "invalid_json");
        assert_eq!(ApiError::validation(vec![]).status(), 422);
        assert_eq!(
            ApiError::InvalidKey {
                field: None,
                message: "..".into()
            }
            .status(),
            400
        );
        assert_eq!(
            ApiError::IdempotencyConflict(uuid::Uuid::nil()).status(),
            409
        );
    }
}
