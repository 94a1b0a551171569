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
//! - heartbeats and the end of a run are fenced by the [`Lease`] (owner *and*
//!   attempt): a worker that lost its lease, say after a long stall, writes
//!   nothing over the run that replaced it.
//!
//! [`sqlite::SqliteQueue`] is the embedded backend (one node, so the node's
//! clock is the store's); [`postgres::PostgresQueue`] serves a fleet, on the
//! database's clock, with `SKIP LOCKED` claims and `LISTEN/NOTIFY` wake-ups.
//! Both read their rows with one decoder ([`row`]).

pub mod postgres;
mod row;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
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
    /// Whose job it is (`shop:42`), for owner-bound tokens and erasure.
    pub owner: Option<String>,
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
    /// Only this owner's jobs.
    pub owner: Option<String>,
}

/// The node of a lease owner: owners are `{node id}/{worker}`.
pub fn node_of(owner: &str) -> &str {
    owner.rsplit_once('/').map_or(owner, |(node, _)| node)
}

/// A claim on a job: who holds it and which attempt the claim counted. Every
/// write of a run names its lease, and the store takes it only while that
/// lease is the job's current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job: Uuid,
    pub owner: String,
    pub attempt: u32,
}

impl Lease {
    /// The lease `owner` got by claiming `job`.
    pub fn of(job: &Job, owner: &str) -> Lease {
        Lease {
            job: job.id,
            owner: owner.to_string(),
            attempt: job.attempts,
        }
    }
}

/// What a node's workers and webhook sender wait on between polls, so that
/// new work starts at once rather than at the next poll.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    pub jobs: Arc<Notify>,
    pub webhooks: Arc<Notify>,
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
    /// lease) for `owner` (`{node}/{worker}`), counting one attempt; the job's
    /// `node` becomes the owner's node.
    async fn claim(&self, owner: &str, lease: Duration) -> QueueResult<Option<Job>>;
    /// Renews the lease for `duration` and records progress.
    async fn heartbeat(
        &self,
        lease: &Lease,
        duration: Duration,
        progress: u8,
    ) -> QueueResult<Heartbeat>;
    /// Records how a run ended. `false` when the lease was no longer ours.
    async fn finish(&self, lease: &Lease, finish: Finish) -> QueueResult<bool>;
    async fn cancel(&self, id: Uuid) -> QueueResult<Option<CancelOutcome>>;
    /// Settles jobs whose lease expired and that must not run again: cancel was
    /// requested, or every attempt is used. Returns how many.
    async fn reap_expired(&self) -> QueueResult<u64>;

    async fn status_counts(&self) -> QueueResult<Vec<(JobStatus, u64)>>;
    async fn ping(&self) -> QueueResult<()>;

    /// Takes the oldest due webhook delivery for `lease`, counting one attempt.
    async fn claim_webhook(&self, lease: Duration) -> QueueResult<Option<WebhookDelivery>>;
    /// Records an attempt's outcome; `false` (nothing written) when the
    /// delivery was claimed again meanwhile (this attempt's lease ran out).
    async fn finish_webhook(
        &self,
        delivery: &WebhookDelivery,
        outcome: DeliveryOutcome,
    ) -> QueueResult<bool>;

    /// Relays the store's own wake-ups (work that another node added) to
    /// `wake` until `stop`. A store without them returns at once: the
    /// workers then rely on their polling alone.
    async fn relay_wakeups(&self, _wake: Wakeups, _stop: CancellationToken) {}
}

pub type DynQueue = Arc<dyn JobQueue>;

/// Opens the job store a URL names (`sqlite://path` or `postgres://…`).
pub async fn open(url: &str) -> QueueResult<DynQueue> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteQueue::open(url).await?))
    } else if crate::db::is_postgres(url) {
        Ok(Arc::new(postgres::PostgresQueue::open(url).await?))
    } else {
        Err(QueueError::Unavailable(format!(
            "unsupported job store URL scheme in `{}`",
            url.split(':').next().unwrap_or_default()
        )))
    }
}
