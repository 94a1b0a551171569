//! PostgreSQL job store: many nodes on one database.
//!
//! What makes it safe to share:
//! - **One clock.** Every time the store compares or writes (leases, due
//!   times, backoff, row stamps) is the database's `now()` ([`NOW`]); a
//!   node's clock never enters, so nodes whose clocks drift still agree on
//!   which lease expired.
//! - **Claims skip, never wait**: the runnable row is picked `FOR UPDATE SKIP
//!   LOCKED` inside the claiming `UPDATE`, so concurrent workers on any node
//!   take different jobs without blocking each other, and each delivery
//!   attempt of a webhook is taken by one node.
//! - **Fenced writes**: heartbeats and finishes match the lease's owner and
//!   attempt ([`Lease`]); a reclaimed job has a new attempt, so its former
//!   holder's writes match nothing.
//! - **Wake-ups**: triggers `NOTIFY` on new queued work and new webhook
//!   deliveries, in the same transaction; every node `LISTEN`s
//!   ([`PostgresQueue::relay_wakeups`]). A lost notification (a dropped
//!   listener connection) costs at most one poll interval.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Postgres, Row, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use super::row::{DELIVERY_COLUMNS, JOB_COLUMNS, delivery_from_row, job_from_row};
use super::{
    CancelOutcome, DeliveryOutcome, Enqueued, Finish, Heartbeat, JobQueue, Lease, ListFilter,
    NewJob, QueueError, QueueResult, Wakeups, WebhookDelivery,
};
use crate::jobs::error::ErrorCode;
use crate::jobs::model::{Job, JobStatus};

/// The database's clock, in milliseconds since the Unix epoch.
const NOW: &str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";

/// The channels the triggers notify.
const JOBS_CHANNEL: &str = "media_node_jobs";
const WEBHOOKS_CHANNEL: &str = "media_node_webhooks";

/// Schema changes, applied in order once each. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    spec             TEXT NOT NULL,
    status           TEXT NOT NULL,
    progress         BIGINT NOT NULL DEFAULT 0,
    attempts         BIGINT NOT NULL DEFAULT 0,
    max_attempts     BIGINT NOT NULL,
    error_code       TEXT,
    error_message    TEXT,
    result           TEXT,
    callback_url     TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    run_after        BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    node             TEXT
);
CREATE INDEX jobs_runnable ON jobs (status, run_after);
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE TABLE webhook_deliveries (
    id              TEXT COLLATE "C" PRIMARY KEY,
    job_id          TEXT NOT NULL REFERENCES jobs (id),
    url             TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX webhook_due ON webhook_deliveries (status, next_attempt_at);
CREATE FUNCTION media_node_notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('media_node_jobs', '');
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_queued AFTER INSERT OR UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION media_node_notify_jobs();
CREATE FUNCTION media_node_notify_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('media_node_webhooks', '');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_added AFTER INSERT ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION media_node_notify_webhooks();
"#,
    r#"
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX jobs_owner_id ON jobs (owner, id);
"#,
];

/// How long the wake-up relay waits before listening again after an error.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

pub struct PostgresQueue {
    pool: PgPool,
}

impl PostgresQueue {
    pub async fn open(url: &str) -> QueueResult<PostgresQueue> {
        let pool = crate::db::open_postgres(url).await?;
        crate::db::migrate_postgres(&pool, "schema_migrations", MIGRATIONS).await?;
        Ok(PostgresQueue { pool })
    }

    async fn job_where(&self, condition: &str, value: &str) -> QueueResult<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {condition}");
        sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| job_from_row(&row))
            .transpose()
    }

    /// Relays notifications until `stop` (`Ok`) or an error.
    async fn listen(&self, wake: &Wakeups, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([JOBS_CHANNEL, WEBHOOKS_CHANNEL])
            .await?;
        // Work may have been added while nobody listened.
        wake.jobs.notify_one();
        wake.webhooks.notify_one();
        loop {
            let notification = tokio::select! {
                n = listener.try_recv() => n?,
                () = stop.cancelled() => return Ok(()),
            };
            match notification {
                Some(n) if n.channel() == JOBS_CHANNEL => wake.jobs.notify_one(),
                Some(_) => wake.webhooks.notify_one(),
                None => {
                    // The connection dropped (the listener reconnects on the
                    // next call); what was sent meanwhile is lost.
                    debug!("job store listener reconnecting");
                    wake.jobs.notify_one();
                    wake.webhooks.notify_one();
                }
            }
        }
    }
}

/// Adds a webhook delivery for a job that just became terminal, in `tx`.
async fn enqueue_webhook(
    tx: &mut Transaction<'_, Postgres>,
    job_id: &str,
    callback_url: Option<String>,
) -> QueueResult<()> {
    let Some(url) = callback_url else {
        return Ok(());
    };
    sqlx::query(&format!(
        "INSERT INTO webhook_deliveries (id, job_id, url, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, 'pending', 0, {NOW}, {NOW}, {NOW})"
    ))
    .bind(Uuid::now_v7().to_string())
    .bind(job_id)
    .bind(url)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `UPDATE jobs SET {set}` for the current lease of a running job: `$1` is
/// the job, `$2` the owner, `$3` the attempt; `set` numbers its own
/// parameters from `$4`.
fn guarded(set: &str) -> String {
    format!(
        "UPDATE jobs SET {set}, lease_owner = NULL, lease_expires_at = NULL, updated_at = {NOW} \
         WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running' \
         RETURNING callback_url"
    )
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobQueue for PostgresQueue {
    async fn enqueue(&self, job: NewJob) -> QueueResult<Enqueued> {
        let (key, hash) = job.idempotency.clone().unzip();
        let inserted = sqlx::query(&format!(
            "INSERT INTO jobs (id, spec, status, max_attempts, callback_url, idempotency_key, \
                 request_hash, run_after, created_at, updated_at, owner) \
             VALUES ($1, $2, 'queued', $3, $4, $5, $6, {NOW}, {NOW}, {NOW}, $7) \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING {JOB_COLUMNS}"
        ))
        .bind(job.id.to_string())
        .bind(job.spec.to_string())
        .bind(i64::from(job.max_attempts))
        .bind(&job.callback_url)
        .bind(&key)
        .bind(&hash)
        .bind(&job.owner)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = inserted {
            return Ok(Enqueued::Created(job_from_row(&row)?));
        }
        // Only an idempotency key can conflict; the first insert committed
        // before ours gave up (the unique index waits for it).
        let key = key.ok_or_else(|| QueueError::Corrupt("insert ignored without a key".into()))?;
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS}, request_hash FROM jobs WHERE idempotency_key = $1"
        ))
        .bind(&key)
        .fetch_one(&self.pool)
        .await?;
        let existing_hash: Option<String> = row.try_get("request_hash")?;
        let existing = job_from_row(&row)?;
        Ok(if existing_hash == hash {
            Enqueued::Existing(existing)
        } else {
            Enqueued::Conflict(existing)
        })
    }

    async fn get(&self, id: Uuid) -> QueueResult<Option<Job>> {
        self.job_where("id = $1", &id.to_string()).await
    }

    async fn list(&self, filter: &ListFilter) -> QueueResult<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::TEXT IS NULL OR id < $2) \
                 AND ($4::TEXT IS NULL OR owner = $4) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(filter.status.map(JobStatus::as_str))
            .bind(filter.before.map(|id| id.to_string()))
            .bind(i64::from(filter.limit))
            .bind(&filter.owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn claim(&self, owner: &str, lease: Duration) -> QueueResult<Option<Job>> {
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, progress = 0, \
                 lease_owner = $1, lease_expires_at = {NOW} + $2, node = $3, \
                 started_at = COALESCE(started_at, {NOW}), updated_at = {NOW} \
             WHERE id = ( \
                 SELECT id FROM jobs \
                 WHERE NOT cancel_requested AND attempts < max_attempts AND ( \
                     (status = 'queued' AND run_after <= {NOW}) \
                     OR (status = 'running' AND lease_expires_at < {NOW})) \
                 ORDER BY run_after, id LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) \
             RETURNING {JOB_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(owner)
            .bind(ms(lease))
            .bind(super::node_of(owner))
            .fetch_optional(&self.pool)
            .await?
            .map(|row| job_from_row(&row))
            .transpose()
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        duration: Duration,
        progress: u8,
    ) -> QueueResult<Heartbeat> {
        let row = sqlx::query(&format!(
            "UPDATE jobs SET lease_expires_at = {NOW} + $4, progress = GREATEST(progress, $5), \
                 updated_at = {NOW} \
             WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND status = 'running' \
             RETURNING cancel_requested"
        ))
        .bind(lease.job.to_string())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .bind(ms(duration))
        .bind(i64::from(progress.min(100)))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Heartbeat::Held {
                cancel_requested: row.try_get("cancel_requested")?,
            },
            None => Heartbeat::Lost,
        })
    }

    async fn finish(&self, lease: &Lease, finish: Finish) -> QueueResult<bool> {
        let id = lease.job.to_string();
        let terminal = !matches!(finish, Finish::Retry { .. } | Finish::Release);
        let sql = match &finish {
            Finish::Succeeded(_) => guarded(&format!(
                "status = 'succeeded', result = $4, error_code = NULL, error_message = NULL, \
                 progress = 100, finished_at = {NOW}"
            )),
            Finish::Failed(_) => guarded(&format!(
                "status = 'failed', error_code = $4, error_message = $5, finished_at = {NOW}"
            )),
            Finish::Canceled => guarded(&format!("status = 'canceled', finished_at = {NOW}")),
            Finish::Retry { .. } => guarded(&format!(
                "status = 'queued', error_code = $4, error_message = $5, run_after = {NOW} + $6"
            )),
            Finish::Release => guarded(&format!(
                "status = 'queued', attempts = GREATEST(attempts - 1, 0), progress = 0, \
                 run_after = {NOW}"
            )),
        };
        let mut query = sqlx::query(&sql)
            .bind(&id)
            .bind(&lease.owner)
            .bind(i64::from(lease.attempt));
        query = match finish {
            Finish::Succeeded(result) => query.bind(result.to_string()),
            Finish::Failed(error) => query.bind(error.code.as_str()).bind(error.message),
            Finish::Retry { error, delay } => query
                .bind(error.code.as_str())
                .bind(error.message)
                .bind(ms(delay)),
            Finish::Canceled | Finish::Release => query,
        };
        let mut tx = self.pool.begin().await?;
        let Some(row) = query.fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        if terminal {
            enqueue_webhook(&mut tx, &id, row.try_get("callback_url")?).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel(&self, id: Uuid) -> QueueResult<Option<CancelOutcome>> {
        let id_text = id.to_string();
        let mut tx = self.pool.begin().await?;
        let canceled = sqlx::query(&format!(
            "UPDATE jobs SET status = 'canceled', cancel_requested = TRUE, finished_at = {NOW}, \
                 updated_at = {NOW} \
             WHERE id = $1 AND status = 'queued' RETURNING {JOB_COLUMNS}"
        ))
        .bind(&id_text)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = canceled {
            let job = job_from_row(&row)?;
            enqueue_webhook(&mut tx, &id_text, job.callback_url.clone()).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Canceled(job)));
        }
        let requested = sqlx::query(&format!(
            "UPDATE jobs SET cancel_requested = TRUE, updated_at = {NOW} \
             WHERE id = $1 AND status = 'running' RETURNING {JOB_COLUMNS}"
        ))
        .bind(&id_text)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Some(row) = requested {
            return Ok(Some(CancelOutcome::Requested(job_from_row(&row)?)));
        }
        Ok(self.get(id).await?.map(CancelOutcome::AlreadyFinished))
    }

    async fn reap_expired(&self) -> QueueResult<u64> {
        let mut tx = self.pool.begin().await?;
        // Skips rows a claim holds this instant: the next sweep sees them.
        let canceled = sqlx::query(&format!(
            "UPDATE jobs SET status = 'canceled', lease_owner = NULL, lease_expires_at = NULL, \
                 finished_at = {NOW}, updated_at = {NOW} \
             WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < {NOW} \
                 AND cancel_requested FOR UPDATE SKIP LOCKED) \
             RETURNING id, callback_url"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let exhausted = sqlx::query(&format!(
            "UPDATE jobs SET status = 'failed', error_code = $1, \
                 error_message = 'the job stopped without finishing (its node died) on every attempt', \
                 lease_owner = NULL, lease_expires_at = NULL, finished_at = {NOW}, updated_at = {NOW} \
             WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND lease_expires_at < {NOW} \
                 AND attempts >= max_attempts FOR UPDATE SKIP LOCKED) \
             RETURNING id, callback_url"
        ))
        .bind(ErrorCode::AttemptsExhausted.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let count = (canceled.len() + exhausted.len()) as u64;
        for row in canceled.iter().chain(exhausted.iter()) {
            let id: String = row.try_get("id")?;
            enqueue_webhook(&mut tx, &id, row.try_get("callback_url")?).await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    async fn status_counts(&self) -> QueueResult<Vec<(JobStatus, u64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(JobStatus, u64)> = JobStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| s.as_str() == status) {
                slot.1 = n.max(0) as u64;
            }
        }
        Ok(counts)
    }

    async fn ping(&self) -> QueueResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn claim_webhook(&self, lease: Duration) -> QueueResult<Option<WebhookDelivery>> {
        let sql = format!(
            "UPDATE webhook_deliveries SET next_attempt_at = {NOW} + $1, attempts = attempts + 1, \
                 updated_at = {NOW} \
             WHERE id = ( \
                 SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= {NOW} \
                 ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(ms(lease))
            .fetch_optional(&self.pool)
            .await?
            .map(|row| delivery_from_row(&row))
            .transpose()
    }

    async fn finish_webhook(
        &self,
        delivery: &WebhookDelivery,
        outcome: DeliveryOutcome,
    ) -> QueueResult<bool> {
        let (status, error, delay) = match outcome {
            DeliveryOutcome::Delivered => ("delivered", None, Duration::ZERO),
            DeliveryOutcome::RetryAfter { error, delay } => ("pending", Some(error), delay),
            DeliveryOutcome::GaveUp { error } => ("failed", Some(error), Duration::ZERO),
        };
        let updated = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET status = $3, last_error = $4, \
                 next_attempt_at = {NOW} + $5, updated_at = {NOW} \
             WHERE id = $1 AND attempts = $2 AND status = 'pending'"
        ))
        .bind(delivery.id.to_string())
        .bind(i64::from(delivery.attempts))
        .bind(status)
        .bind(error)
        .bind(ms(delay))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn relay_wakeups(&self, wake: Wakeups, stop: CancellationToken) {
        loop {
            match self.listen(&wake, &stop).await {
                Ok(()) => return,
                Err(err) => warn!(error = %err, "cannot listen for job store wake-ups; polling"),
            }
            tokio::select! {
                () = tokio::time::sleep(LISTEN_RETRY) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}
