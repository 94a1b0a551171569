//! A small ops dashboard at `/`: readiness, job counts and recent jobs. The page is
//! static; it reads `/readyz` and, with a token typed into it (kept in the
//! browser's session storage), `/v1/jobs`.

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
