//! `GET /media/{key}`: what the node published (job outputs, live playlists and
//! segments), read-only, from the filesystem store, with `Range` support so MP4 and
//! HLS play straight from the node.
//!
//! Only objects written as [`Visibility::Public`] are served; uploads and work files
//! answer 404 exactly like missing objects, so their existence is not revealed.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::AppState;
use super::error::ApiError;
use super::objects::parse_key;
use crate::store::{Visibility, content_type_for};

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let key = parse_key(path)?;
    let Some(file) = state.store.local_path(&key) else {
        return Err(ApiError::MediaNotServed);
    };
    let info = state.store.head(&key).await?;
    let info = match info {
        Some(info) if info.visibility == Visibility::Public => info,
        _ => return Err(ApiError::ObjectNotFound),
    };
    let content_type = info
        .content_type
        .clone()
        .unwrap_or_else(|| content_type_for(key.as_str()).to_string());
    let mime: mime::Mime = content_type
        .parse()
        .unwrap_or(mime::APPLICATION_OCTET_STREAM);
    let response = ServeFile::new_with_mime(file, &mime)
        .oneshot(req)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = response.into_response();
    let headers = response.headers_mut();
    // Players on other origins (hls.js, web shops) read published media.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(cc) = info
        .cache_control
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::CACHE_CONTROL, cc);
    }
    Ok(response)
}
