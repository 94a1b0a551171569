//! The durable job queue: jobs, their leases, and the webhook outbox.
//!
//! Semantics (the same for every backend):
//! - a job is committed before anyone is told about it; after a crash it simply runs
//!   again;
//! - a worker *claims* a job with a lease (owner + expiry) and renews it by
//!   heartbeat; a lease that expires (its node died) makes the job claimable again,
//!   and each claim counts one attempt;
//! - every transition into a terminal state of a job with a `callback_url` adds a
//!   webhook delivery in the same transaction (outbox), so no notification is lost
//!   and none is sent for a state that was not committed.
//!
//! [`sqlite::SqliteQueue`] is the embedded backend. SQL is kept portable where it
//! costs nothing, so that a Postgres backend is one more file behind this trait.

pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use super::model::{Job, JobErrorInfo, JobStatus};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job store unavailable: {0}")]
    Unavailable(String),
    #[error("job store holds a row it cannot read: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for QueueError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                QueueError::Corrupt(err.to_string())
            }
            other => QueueError::Unavailable(other.to_string()),
        }
    }
}

pub type QueueResult<T> = Result<T, QueueError>;

/// A job to add.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub spec: Value,
    pub callback_url: Option<String>,
    pub max_attempts: u32,
    /// Client-chosen key making the submission idempotent, with the hash of the body
    /// it came with.
    pub idempotency: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub enum Enqueued {
    Created(Job),
    /// Same idempotency key and same body: the job made the first time.
    Existing(Job),
    /// Same idempotency key, different body.
    Conflict(Job),
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<JobStatus>,
    pub limit: u32,
    /// Return jobs older than this one (ids are time-ordered UUIDv7).
    pub before: Option<Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Held {
        cancel_requested: bool,
    },
    /// The lease is no longer ours (expired and reclaimed, or the job was finished):
    /// stop and write nothing.
    Lost,
}

/// How a run ended, as the worker reports it.
#[derive(Debug, Clone)]
pub enum Finish {
    Succeeded(Value),
    Failed(JobErrorInfo),
    Canceled,
    /// Transient failure: queue again after `delay`, keeping the error visible.
    Retry {
        error: JobErrorInfo,
        delay: Duration,
    },
    /// Graceful shutdown: hand the job back without counting the attempt.
    Release,
}

#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The job was queued and is now canceled.
    Canceled(Job),
    /// The job is running; its worker will stop it.
    Requested(Job),
    /// Nothing to cancel.
    AlreadyFinished(Job),
}

/// A webhook delivery claimed for sending.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub job_id: Uuid,
    pub url: String,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    Delivered,
    RetryAfter { error: String, delay: Duration },
    GaveUp { error: String },
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn enqueue(&self, job: NewJob) -> QueueResult<Enqueued>;
    async fn get(&self, id: Uuid) -> QueueResult<Option<Job>>;
    /// Newest first.
    async fn list(&self, filter: &ListFilter) -> QueueResult<Vec<Job>>;

    /// Takes the oldest runnable job (queued and due, or running with an expired
    /// lease) for `owner`, counting one attempt.
    async fn claim(&self, owner: &str, lease: Duration) -> QueueResult<Option<Job>>;
    /// Renews the lease and records progress.
    async fn heartbeat(
        &self,
        id: Uuid,
        owner: &str,
        lease: Duration,
        progress: u8,
    ) -> QueueResult<Heartbeat>;
    /// Records how a run ended. `false` when the lease was no longer ours.
    async fn finish(&self, id: Uuid, owner: &str, finish: Finish) -> QueueResult<bool>;
    async fn cancel(&self, id: Uuid) -> QueueResult<Option<CancelOutcome>>;
    /// Settles jobs whose lease expired and that must not run again: cancel was
    /// requested, or every attempt is used. Returns how many.
    async fn reap_expired(&self) -> QueueResult<u64>;

    async fn status_counts(&self) -> QueueResult<Vec<(JobStatus, u64)>>;
    async fn ping(&self) -> QueueResult<()>;

    async fn claim_webhook(&self, lease: Duration) -> QueueResult<Option<WebhookDelivery>>;
    async fn finish_webhook(&self, id: Uuid, outcome: DeliveryOutcome) -> QueueResult<()>;
}

pub type DynQueue = Arc<dyn JobQueue>;

/// Opens the job store a URL names (`sqlite://path`).
pub async fn open(url: &str) -> QueueResult<DynQueue> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteQueue::open(url).await?))
    } else {
        Err(QueueError::Unavailable(format!(
            "unsupported job store URL scheme in `{}`",
            url.split(':').next().unwrap_or_default()
        )))
    }
}
