//! `/v1/jobs`: enqueue, read, list and cancel jobs.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, Problem};
use super::extract::ValidJson;
use super::owner;
use crate::jobs::model::{JobStatus, JobView};
use crate::jobs::queue::{CancelOutcome, Enqueued, ListFilter, NewJob};
use crate::jobs::spec::{JobSpec, ValidationContext};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// Enqueue a job.
///
/// Answers 202 with the job. With an `Idempotency-Key` header, retries with the
/// same key and body return the same job (with `Idempotent-Replayed: true`); the
/// same key with another body is refused with 409.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = JobSpec,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: \
        1-255 visible ASCII characters", min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    responses(
        (status = 202, description = "Job accepted", body = JobView),
        (status = 400, description = "Invalid JSON or object key", body = Problem),
        (status = 401, description = "No or wrong bearer token", body = Problem),
        (status = 409, description = "Idempotency key reused with another body", body = Problem),
        (status = 422, description = "Invalid spec; `errors` names the fields", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    headers: HeaderMap,
    body: ValidJson<JobSpec>,
) -> Result<Response, ApiError> {
    let idempotency_key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty()
                        && k.len() <= MAX_IDEMPOTENCY_KEY_LEN
                        && k.bytes().all(|b| b.is_ascii_graphic())
                })
                .ok_or(ApiError::InvalidIdempotencyKey)?;
            Some(key.to_string())
        }
    };
    let mut spec = body.value;
    spec.owner = caller.owner_for(spec.owner.take())?;
    spec.validate(&ValidationContext {
        allow_private_callbacks: state.config.webhooks.allow_private,
        presets: &state.presets,
    })
    .map_err(ApiError::validation)?;
    // A bound token's job may read only its owner's objects; another's
    // answers exactly as a missing one.
    owner::check_objects(&caller, state.store.as_ref(), spec.objects()).await?;

    // The stored spec is the typed one re-serialised: canonical, and free of
    // anything the node did not accept.
    let spec_json = serde_json::to_value(&spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let idempotency = idempotency_key.map(|key| {
        let hash = hex::encode(Sha256::digest(canonical_json(&body.raw).as_bytes()));
        (key, hash)
    });
    let outcome = state
        .queue
        .enqueue(NewJob {
            id: Uuid::now_v7(),
            spec: spec_json,
            callback_url: spec.callback_url.clone(),
            max_attempts: state.config.jobs.max_attempts,
            owner: spec.owner.clone(),
            idempotency,
        })
        .await?;
    let (job, replayed) = match outcome {
        Enqueued::Created(job) => {
            state.wake_workers.notify_one();
            tracing::info!(job_id = %job.id, token = %caller.name, "job enqueued");
            (job, false)
        }
        Enqueued::Existing(job) => (job, true),
        Enqueued::Conflict(job) => return Err(ApiError::IdempotencyConflict(job.id)),
    };
    let mut response = (StatusCode::ACCEPTED, Json(JobView::from(&job))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Read one job.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = visible_job(&state, &caller, &id).await?;
    Ok(Json(JobView::from(&job)))
}

/// The job `id`, if it exists and the caller may see it; 404 otherwise.
async fn visible_job(
    state: &AppState,
    caller: &Principal,
    id: &str,
) -> Result<crate::jobs::model::Job, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::JobNotFound)?;
    state
        .queue
        .get(id)
        .await?
        .filter(|job| caller.sees(job.owner.as_deref()))
        .ok_or(ApiError::JobNotFound)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs in this status.
    status: Option<String>,
    /// Page size, 1-100 (default 20).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only this owner's jobs.
    #[param(pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    owner: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "Invalid query", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::InvalidQuery(format!(
                "status must be one of queued, running, succeeded, failed, canceled; got `{s}`"
            ))
        })?),
    };
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let before = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            Uuid::parse_str(c)
                .map_err(|_| ApiError::InvalidQuery("cursor is not one this API gave".into()))?,
        ),
    };
    let owner::ListScope::Owner(owner) = caller.list_scope(query.owner) else {
        // A bound token asking for another owner's jobs: there are none.
        return Ok(Json(JobList {
            jobs: Vec::new(),
            next_cursor: None,
        }));
    };
    let jobs = state
        .queue
        .list(&ListFilter {
            status,
            limit,
            before,
            owner,
        })
        .await?;
    let next_cursor = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(Json(JobList {
        jobs: jobs.iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

/// Cancel a job.
///
/// A queued job is canceled at once (200). A running job is asked to stop (202);
/// its status becomes `canceled` when the pipeline has stopped. Canceling a
/// canceled job is a no-op (200); a job that succeeded or failed answers 409.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Canceled", body = JobView),
        (status = 202, description = "Cancel requested; the job is stopping", body = JobView),
        (status = 404, description = "No such job", body = Problem),
        (status = 409, description = "The job already succeeded or failed", body = Problem),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Read first only for a caller bound to an owner, who must own it.
    let id = match caller.owner {
        Some(_) => visible_job(&state, &caller, &id).await?.id,
        None => Uuid::parse_str(&id).map_err(|_| ApiError::JobNotFound)?,
    };
    let outcome = state.queue.cancel(id).await?.ok_or(ApiError::JobNotFound)?;
    Ok(match outcome {
        CancelOutcome::Canceled(job) => (StatusCode::OK, Json(JobView::from(&job))).into_response(),
        CancelOutcome::Requested(job) => {
            (StatusCode::ACCEPTED, Json(JobView::from(&job))).into_response()
        }
        CancelOutcome::AlreadyFinished(job) if job.status == JobStatus::Canceled => {
            (StatusCode::OK, Json(JobView::from(&job))).into_response()
        }
        CancelOutcome::AlreadyFinished(job) => {
            return Err(ApiError::JobFinished(job.status.as_str()));
        }
    })
}

/// JSON with object keys sorted at every level, so that two bodies that differ only
/// in key order or whitespace hash the same.
fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", inner.join(","))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"probe": true, "input": {"key": "a"}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"input":{"key":"a"},"probe":true}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        let c: serde_json::Value =
            serde_json::from_str(r#"{"input":{"key":"b"},"probe":true}"#).unwrap();
        assert_ne!(canonical_json(&a), canonical_json(&c));
    }
}
