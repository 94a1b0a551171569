//! `PUT /v1/objects/{key}`: stream a request body into the object store, so a local
//! user can upload inputs without S3 tools. Uploads are private: `/media` never
//! serves them.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, Problem};
use crate::store::{ObjectKey, PutOptions, Visibility, content_type_for};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ObjectView {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// Whose upload it is (`shop:42`). A token bound to an owner uploads for
    /// it, whatever is given here (another owner is refused with 403).
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    owner: Option<String>,
}

/// The bytes of an upload, as they are. A type for the OpenAPI document
/// only: [`put`] streams the body into the store.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct UploadBody(#[expect(dead_code, reason = "documents the body")] Vec<u8>);

pub(super) fn parse_key(path: Result<Path<String>, PathRejection>) -> Result<ObjectKey, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::InvalidKey {
        field: None,
        message: e.body_text(),
    })?;
    ObjectKey::parse(raw).map_err(|e| ApiError::InvalidKey {
        field: None,
        message: e.to_string(),
    })
}

/// Upload an object (e.g. a video to process).
#[utoipa::path(
    put, path = "/v1/objects/{key}", tag = "objects",
    params(("key" = String, Path, description = "Object key, e.g. `uploads/clip.mp4`: \
        `/`-separated segments, none empty, `.` or `..`, over 250 bytes, or with a backslash \
        or a control character; at most 900 bytes", max_length = 900, pattern = r"^(?:[^./\\\u0000-\u001f\u007f-\u009f][^/\\\u0000-\u001f\u007f-\u009f]*|\.[^./\\\u0000-\u001f\u007f-\u009f][^/\\\u0000-\u001f\u007f-\u009f]*|\.\.[^/\\\u0000-\u001f\u007f-\u009f]+)(?:/(?:[^./\\\u0000-\u001f\u007f-\u009f][^/\\\u0000-\u001f\u007f-\u009f]*|\.[^./\\\u0000-\u001f\u007f-\u009f][^/\\\u0000-\u001f\u007f-\u009f]*|\.\.[^/\\\u0000-\u001f\u007f-\u009f]+))*$"), PutQuery),
    request_body(content = UploadBody, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = ObjectView),
        (status = 400, description = "Invalid key", body = Problem),
        (status = 409, description = "`key_conflict`: the key is a folder of an existing key, or has one as its folder (the filesystem store cannot hold `a` beside `a/b`), or, for a token bound to an owner, another owner's object", body = Problem),
        (status = 413, description = "Larger than `limits.max_upload_bytes`", body = Problem),
        (status = 503, description = "Object store unavailable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ObjectView>), ApiError> {
    let key = parse_key(path)?;
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    if let Some(owner) = &query.owner {
        crate::validation::check_id(owner)
            .map_err(|e| ApiError::InvalidQuery(format!("owner: {e}")))?;
    }
    let owner = caller.owner_for(query.owner)?;
    // A bound token may not replace another owner's object.
    if caller.owner.is_some()
        && let Some(existing) = state.store.head(&key).await?
        && !caller.sees(existing.owner.as_deref())
    {
        return Err(ApiError::KeyConflict(format!(
            "the key `{key}` is taken: upload below a key of your own"
        )));
    }
    let max = state.config.limits.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(ApiError::PayloadTooLarge(max));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && *v != "application/x-www-form-urlencoded")
        .map(str::to_string)
        .unwrap_or_else(|| content_type_for(key.as_str()).to_string());
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let size = state
        .store
        .put_stream(
            &key,
            Box::pin(stream),
            max,
            &PutOptions {
                content_type: Some(content_type),
                cache_control: None,
                visibility: Visibility::Private,
                owner: owner.clone(),
            },
        )
        .await?;
    tracing::info!(key = %key, size, owner = owner.as_deref().unwrap_or(""), token = %caller.name, "object uploaded");
    Ok((
        StatusCode::CREATED,
        Json(ObjectView {
            key: key.to_string(),
            size,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented pattern (segments of characters other than `/`, `\\`
    /// and controls, none `.` or `..`) takes exactly the keys the node takes,
    /// lengths aside.
    #[test]
    fn the_key_pattern_agrees_with_the_parser() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::super::openapi::ApiDoc::openapi()).unwrap();
        let param = &doc["paths"]["/v1/objects/{key}"]["put"]["parameters"][0];
        let pattern = regex::Regex::new(param["schema"]["pattern"].as_str().unwrap()).unwrap();
        let keys = [
            "a",
            "uploads/clip.mp4",
            "shop 1/ünïcødé/クリップ.mov",
            "a/b/c/.hidden",
            "a..b/c",
            "..a/...",
            "",
            "/a",
            "a/",
            "a\\b",
            "a\nb",
            "a\u{85}b",
            "a\u{7f}",
            ".",
            "..",
            "a/./b",
            "a/../b",
            "a//b",
        ];
        for key in keys {
            assert_eq!(
                pattern.is_match(key),
                ObjectKey::parse(key).is_ok(),
                "{key:?}"
            );
        }
    }
}
