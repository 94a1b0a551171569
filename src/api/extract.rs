//! Request extractors that validate at the edge and answer with problem JSON.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::store::INVALID_KEY_PREFIX;
use crate::validation::FieldError;

/// A JSON body: `application/json`, within the size limit, syntactically valid
/// (else 400), and matching `T` exactly (else 422 naming the field; 400 for object
/// keys). Keeps the parsed JSON value too, e.g. for idempotency hashing.
pub struct ValidJson<T> {
    pub value: T,
    pub raw: Value,
}

impl<T: DeserializeOwned> FromRequest<AppState> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == mime::APPLICATION
                    && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.config.limits.max_json_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(limit as u64))?;
        let raw: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        let value = serde_path_to_error::deserialize(raw.clone()).map_err(field_error)?;
        Ok(ValidJson { value, raw })
    }
}

fn field_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let message = err.inner().to_string();
    if let Some(rest) = message.strip_prefix(INVALID_KEY_PREFIX) {
        return ApiError::InvalidKey {
            field: Some(path),
            message: rest.to_string(),
        };
    }
    // Make sure an unknown field is named itself, not only its parent.
    let field = match unknown_field_name(&message) {
        Some(name) if path.is_empty() => name.to_string(),
        Some(name) if path != name && !path.ends_with(&format!(".{name}")) => {
            format!("{path}.{name}")
        }
        _ => path,
    };
    ApiError::Validation {
        code: if message.starts_with("unknown field") {
            "unknown_field"
        } else {
            "invalid_spec"
        },
        errors: vec![FieldError::new(field, message)],
    }
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
    }
    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
        key: Option<crate::store::ObjectKey>,
    }

    fn err(v: Value) -> ApiError {
        field_error(serde_path_to_error::deserialize::<_, Outer>(v).unwrap_err())
    }

    #[test]
    fn errors_name_the_field() {
        let ApiError::Validation { code, errors } =
            err(serde_json::json!({"inner": {"n": 1, "extra": 2}}))
        else {
            panic!()
        };
        assert_eq!(code, "unknown_field");
        assert_eq!(errors[0].field, "inner.extra");

        let ApiError::Validation { code, errors } = err(serde_json::json!({"inner": {"n": "x"}}))
        else {
            panic!()
        };
        assert_eq!(code, "invalid_spec");
        assert_eq!(errors[0].field, "inner.n");

        let ApiError::Validation { errors, .. } =
            err(serde_json::json!({"inner": {"n": 1}, "top": 1}))
        else {
            panic!()
        };
        assert_eq!(errors[0].field, "top");
    }

    #[test]
    fn bad_keys_are_400_with_their_field() {
        let e = err(serde_json::json!({"inner": {"n": 1, "key": "a/../b"}}));
        assert_eq!(e.status(), 400);
        let ApiError::InvalidKey { field, .. } = e else {
            panic!()
        };
        assert_eq!(field.as_deref(), Some("inner.key"));
    }
}
