//! `/player/`: the reference shoppable player of `examples/player/` (plain HTML
//! and JS with hls.js vendored), built into the binary so that a newcomer sees
//! tags and pins work against their own node: `/player/?src=/media/...`.

use axum::extract::{OriginalUri, Path};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;

/// `(path under /player/, content type, bytes)`.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "",
        "text/html; charset=utf-8",
        include_bytes!("../../examples/player/index.html"),
    ),
    (
        "player.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../examples/player/player.js"),
    ),
    (
        "player.css",
        "text/css; charset=utf-8",
        include_bytes!("../../examples/player/player.css"),
    ),
    (
        "vendor/hls.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../examples/player/vendor/hls.min.js"),
    ),
];

/// The bytes and content type of `path`, if it is one of the player's files.
pub fn file(path: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(name, _, _)| *name == path)
        .map(|(_, ty, bytes)| (*ty, *bytes))
}

fn serve(path: &str) -> Response {
    match file(path) {
        Some((content_type, bytes)) => built_in(content_type, bytes),
        None => ApiError::RouteNotFound.into_response(),
    }
}

/// A file built into the binary (the player's, the dashboard's).
pub(super) fn built_in(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // A node upgrade changes the files at the same URLs.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// `/player/` (the page).
pub async fn index() -> Response {
    serve("")
}

/// `/player/{file}` (its scripts and style).
pub async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

/// `/player` → `/player/`, query kept: the page's files are relative to it.
pub async fn redirect(OriginalUri(uri): OriginalUri) -> Redirect {
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Redirect::permanent(&format!("/player/{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served() {
        let page = std::str::from_utf8(file("").unwrap().1).unwrap();
        for needed in ["player.css", "vendor/hls.min.js", "player.js"] {
            assert!(page.contains(&format!("\"{needed}\"")), "{needed}");
            assert!(file(needed).is_some(), "{needed}");
        }
        assert!(file("../Cargo.toml").is_none());
        assert!(file("vendor/").is_none());
    }
}
