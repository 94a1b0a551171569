//! `/healthz` (the process is alive), `/readyz` (it can do its work) and `/metrics`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// A readiness check that hangs counts as failed after this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    pub checks: Vec<Check>,
    /// Names of the failing checks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<&'static str>,
}

/// Liveness: answers as long as the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn check<F, E>(name: &'static str, fut: F) -> Check
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
        Ok(Ok(())) => Check {
            name,
            ok: true,
            error: None,
        },
        Ok(Err(e)) => Check {
            name,
            ok: false,
            error: Some(e.to_string()),
        },
        Err(_) => Check {
            name,
            ok: false,
            error: Some(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
        },
    }
}

/// Readiness: job store, object store and GStreamer elements; 503 listing what fails.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; `failing` names the checks", body = Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (job_store, object_store) = tokio::join!(
        check("job_store", state.queue.ping()),
        check("object_store", state.store.check()),
    );
    let gstreamer = Check {
        name: "gstreamer",
        ok: state.missing_elements.is_empty(),
        error: (!state.missing_elements.is_empty())
            .then(|| format!("missing elements: {}", state.missing_elements.join(", "))),
    };
    let mut checks = vec![job_store, object_store, gstreamer];
    if state.draining.load(Ordering::Relaxed) {
        checks.push(Check {
            name: "draining",
            ok: false,
            error: Some("the node is shutting down".into()),
        });
    }
    let failing: Vec<&'static str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let (status, word) = if failing.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        status,
        Json(Readiness {
            status: word,
            checks,
            failing,
        }),
    )
        .into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Metrics", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.queue.status_counts().await {
        Ok(counts) => state.metrics.set_job_counts(&counts),
        Err(err) => tracing::warn!(error = %err, "cannot read job counts for metrics"),
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
