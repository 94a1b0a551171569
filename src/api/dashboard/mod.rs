//! The ops dashboard at `/`: readiness per check, the queue, recent jobs with
//! live progress, failures with their codes, a job's outputs (posters shown,
//! renditions playable), live streams with a preview player. The page and its
//! script are static files built into the binary (hls.js comes from the
//! reference player's vendored copy at `/player/vendor/`); they hold no data
//! and nothing secret: the token is typed once per browser session and kept in
//! its session storage.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::player::built_in;

const INDEX: &[u8] = include_bytes!("index.html");

/// `(path under /dashboard/, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("dashboard.css"),
    ),
];

/// `/`
pub async fn page() -> Response {
    built_in("text/html; charset=utf-8", INDEX)
}

/// `/dashboard/{file}`
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, ty, bytes)) => built_in(ty, bytes),
        None => ApiError::RouteNotFound.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_the_node_serves() {
        let page = std::str::from_utf8(INDEX).unwrap();
        for (name, _, _) in ASSETS {
            assert!(page.contains(&format!("\"/dashboard/{name}\"")), "{name}");
        }
        assert!(page.contains("\"/player/vendor/hls.min.js\""));
        assert!(super::super::player::file("vendor/hls.min.js").is_some());
        assert!(!page.contains("https://"), "no CDN");
    }
}
