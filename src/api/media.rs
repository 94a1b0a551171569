//! `GET /media/{key}`: what the node published (job outputs, live playlists and
//! segments), read-only, from the filesystem store, with `Range` support so MP4 and
//! HLS play straight from the node.
//!
//! Only objects written as [`Visibility::Public`] are served; uploads and work files
//! answer 404 exactly like missing objects, so their existence is not revealed.
//!
//! Players on other origins (hls.js and Shaka Player on a shop's page) read it
//! with scripts, so every answer carries CORS headers, errors included (a
//! player can then read why it failed): [`cors`] is `tower-http`'s layer,
//! which also answers preflight `OPTIONS` (a `Range` request needs one) and
//! exposes the headers a player reads for ranges.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeFile;

use super::AppState;
use super::error::ApiError;
use super::objects::parse_key;
use crate::config::CorsOrigins;
use crate::store::{Visibility, content_type_for};

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// CORS for `/media`: reads (`GET`, `HEAD`) from `origins`, with the request
/// headers players send for ranges and revalidation, and the response headers
/// they read. With a list of origins the answer names the caller's origin and
/// says `Vary: Origin` (and the preflight headers), so caches keep one answer
/// per origin; with `*` it is the same for everybody.
pub fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(
            list.iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        ),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([
            header::RANGE,
            header::IF_RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ])
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
            header::ETAG,
        ])
        .max_age(PREFLIGHT_MAX_AGE)
}

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
