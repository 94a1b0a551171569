//! The HTTP API (axum): routes, shared state and the middleware around them.
//!
//! - `/v1/...`: the job, object and live-stream API, bearer-token authenticated;
//! - `/healthz`, `/readyz`, `/metrics`: for ops, no token;
//! - `/media/{key}`: published outputs from the filesystem store, no token;
//! - `/openapi.json`, `/` (the dashboard) and `/player/` (the reference player).

pub mod auth;
mod dashboard;
pub mod error;
mod extract;
mod health;
mod jobs;
mod live;
mod media;
mod objects;
pub mod openapi;
mod owner;
mod player;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use tokio::sync::Notify;

pub use error::ApiError;

use crate::config::Config;
use crate::jobs::queue::DynQueue;
use crate::metrics::Metrics;
use crate::store::DynStore;

/// What every handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub queue: DynQueue,
    pub store: DynStore,
    pub metrics: Arc<Metrics>,
    /// Wakes an idle worker when a job is enqueued here.
    pub wake_workers: Arc<Notify>,
    /// The accepted bearer tokens (as digests) and who presents each.
    pub credentials: Arc<Vec<auth::Credential>>,
    /// Set on shutdown: readiness fails so that load balancers stop sending work.
    pub draining: Arc<AtomicBool>,
    /// GStreamer elements the node needs but cannot find.
    pub missing_elements: Arc<Vec<String>>,
    pub presets: Arc<crate::presets::Presets>,
    pub live: Arc<crate::live::service::LiveService>,
    pub ingest: Arc<Ingest>,
}

/// Where publishers connect, as the API tells them.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// `rtmp://HOST:PORT/live/`; the stream key follows.
    pub rtmp_base: String,
    /// `srt://HOST:PORT?streamid=`; the stream key follows.
    pub srt_base: String,
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/jobs", post(jobs::create).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/live/streams", post(live::create).get(live::list))
        .route("/live/streams/{id}", get(live::get).delete(live::delete))
        .route("/live/streams/{id}/pins", post(live::pin).get(live::pins))
        .route(
            "/live/streams/{id}/pins/{pin}",
            axum::routing::delete(live::unpin),
        )
        .route(
            "/objects/{*key}",
            // Uploads stream to the store and enforce their own limit.
            put(objects::put).layer(DefaultBodyLimit::disable()),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        ));

    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/media/{*key}",
            // The CORS layer answers preflights itself; an `OPTIONS` that is
            // not one is refused as before.
            get(media::get)
                .options(|| async { ApiError::MethodNotAllowed })
                .layer(media::cors(&state.config.media.cors_origins)),
        )
        .route("/openapi.json", get(openapi::serve))
        .route("/player", get(player::redirect))
        .route("/player/", get(player::index))
        .route("/player/{*file}", get(player::asset))
        .route("/", get(dashboard::page))
        .route("/dashboard/{*file}", get(dashboard::asset))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by route template, inside a span.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let started = Instant::now();
    let span = tracing::debug_span!("http", %method, route = %route);
    let response = tracing::Instrument::instrument(next.run(req), span).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .observe_http(&route, method.as_str(), status, elapsed);
    tracing::debug!(%method, route = %route, status, elapsed_ms = elapsed.as_millis() as u64, "request");
    response
}
