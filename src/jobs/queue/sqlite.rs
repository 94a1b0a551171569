//! SQLite job store: the embedded default, one file in the data dir, WAL mode.
//!
//! Every state change is one `UPDATE ... RETURNING` statement (SQLite runs each
//! statement atomically under its write lock), so concurrent workers can never claim
//! the same job. Transactions that also write the webhook outbox start with their
//! write, so they never need to upgrade a read lock (which SQLite cannot do without
//! failing with `SQLITE_BUSY`).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::row::{DELIVERY_COLUMNS, JOB_COLUMNS, job_from_row};
use super::{
    CancelOutcome, DeliveryOutcome, Enqueued, Finish, Heartbeat, JobQueue, Lease, ListFilter,
    NewJob, QueueError, QueueResult, WebhookDelivery,
};
use crate::clock::now_ms;
use crate::jobs::error::ErrorCode;
use crate::jobs::model::{Job, JobStatus};

/// Schema changes, applied in order once each. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    spec             TEXT NOT NULL,
    status           TEXT NOT NULL,
    progress         INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    error_code       TEXT,
    error_message    TEXT,
    result           TEXT,
    callback_url     TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    run_after        BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX jobs_runnable ON jobs (status, run_after);
CREATE INDEX jobs_status_id ON jobs (status, id);
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    job_id          TEXT NOT NULL REFERENCES jobs (id),
    url             TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX webhook_due ON webhook_deliveries (status, next_attempt_at);
"#,
    r#"
ALTER TABLE jobs ADD COLUMN node TEXT;
"#,
    r#"
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX jobs_owner_id ON jobs (owner, id);
"#,
];

pub struct SqliteQueue {
    pool: SqlitePool,
}

impl SqliteQueue {
    pub async fn open(url: &str) -> QueueResult<SqliteQueue> {
        let pool = crate::db::open_sqlite(url).await?;
        crate::db::migrate(&pool, "schema_migrations", MIGRATIONS).await?;
        Ok(SqliteQueue { pool })
    }

    async fn job_by(&self, column: &str, value: &str) -> QueueResult<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {column} = ?");
        sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| job_from_row(&row))
            .transpose()
    }
}

/// Adds a webhook delivery for a job that just became terminal, in `tx`.
async fn enqueue_webhook(
    tx: &mut Transaction<'_, Sqlite>,
    job_id: &str,
    callback_url: Option<String>,
    now: i64,
) -> QueueResult<()> {
    let Some(url) = callback_url else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, job_id, url, status, attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(job_id)
    .bind(url)
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends the lease guard: only the current lease of a running job may
/// finish it (bind the lease's job, owner and attempt last).
macro_rules! guarded {
    ($($sql:literal)+) => {
        concat!($($sql,)+ " WHERE id = ? AND lease_owner = ? AND attempts = ? AND status = 'running' RETURNING callback_url")
    };
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn enqueue(&self, job: NewJob) -> QueueResult<Enqueued> {
        let now = now_ms();
        let (key, hash) = match &job.idempotency {
            Some((k, h)) => (Some(k.clone()), Some(h.clone())),
            None => (None, None),
        };
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, spec, status, progress, attempts, max_attempts, callback_url, \
             cancel_requested, idempotency_key, request_hash, run_after, created_at, updated_at, \
             owner) \
             VALUES (?, ?, 'queued', 0, 0, ?, ?, 0, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(job.id.to_string())
        .bind(job.spec.to_string())
        .bind(i64::from(job.max_attempts))
        .bind(&job.callback_url)
        .bind(&key)
        .bind(&hash)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(&job.owner)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            let created = self
                .get(job.id)
                .await?
                .ok_or_else(|| QueueError::Corrupt("inserted job vanished".into()))?;
            return Ok(Enqueued::Created(created));
        }
        // Only an idempotency key can conflict.
        let key = key.ok_or_else(|| QueueError::Corrupt("insert ignored without a key".into()))?;
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS}, request_hash FROM jobs WHERE idempotency_key = ?"
        ))
        .bind(&key)
        .fetch_one(&self.pool)
        .await?;
        let existing_hash: Option<String> = row.try_get("request_hash")?;
        let existing = job_from_row(&row)?;
        if existing_hash == hash {
            Ok(Enqueued::Existing(existing))
        } else {
            Ok(Enqueued::Conflict(existing))
        }
    }

    async fn get(&self, id: Uuid) -> QueueResult<Option<Job>> {
        self.job_by("id", &id.to_string()).await
    }

    async fn list(&self, filter: &ListFilter) -> QueueResult<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR id < ?2) \
                 AND (?4 IS NULL OR owner = ?4) \
             ORDER BY id DESC LIMIT ?3"
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
        let now = now_ms();
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, progress = 0, \
                 lease_owner = ?1, lease_expires_at = ?2, started_at = COALESCE(started_at, ?3), \
                 updated_at = ?3, node = ?4 \
             WHERE id = ( \
                 SELECT id FROM jobs \
                 WHERE cancel_requested = 0 AND attempts < max_attempts AND ( \
                     (status = 'queued' AND run_after <= ?3) \
                     OR (status = 'running' AND lease_expires_at < ?3)) \
                 ORDER BY run_after, id LIMIT 1) \
             RETURNING {JOB_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(owner)
            .bind(now + ms(lease))
            .bind(now)
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
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = ?, progress = MAX(progress, ?), updated_at = ? \
             WHERE id = ? AND lease_owner = ? AND attempts = ? AND status = 'running' \
             RETURNING cancel_requested",
        )
        .bind(now + ms(duration))
        .bind(i64::from(progress.min(100)))
        .bind(now)
        .bind(lease.job.to_string())
        .bind(&lease.owner)
        .bind(i64::from(lease.attempt))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Heartbeat::Held {
                cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
            },
            None => Heartbeat::Lost,
        })
    }

    async fn finish(&self, lease: &Lease, finish: Finish) -> QueueResult<bool> {
        let now = now_ms();
        let id_text = lease.job.to_string();
        let mut tx = self.pool.begin().await?;
        let (query, terminal) = match &finish {
            Finish::Succeeded(result) => (
                sqlx::query(guarded!(
                    "UPDATE jobs SET status = 'succeeded', result = ?, error_code = NULL, \
                     error_message = NULL, progress = 100, lease_owner = NULL, \
                     lease_expires_at = NULL, finished_at = ?, updated_at = ?"
                ))
                .bind(result.to_string())
                .bind(now)
                .bind(now),
                true,
            ),
            Finish::Failed(error) => (
                sqlx::query(guarded!(
                    "UPDATE jobs SET status = 'failed', error_code = ?, error_message = ?, \
                     lease_owner = NULL, lease_expires_at = NULL, finished_at = ?, \
                     updated_at = ?"
                ))
                .bind(error.code.as_str())
                .bind(&error.message)
                .bind(now)
                .bind(now),
                true,
            ),
            Finish::Canceled => (
                sqlx::query(guarded!(
                    "UPDATE jobs SET status = 'canceled', lease_owner = NULL, \
                     lease_expires_at = NULL, finished_at = ?, updated_at = ?"
                ))
                .bind(now)
                .bind(now),
                true,
            ),
            Finish::Retry { error, delay } => (
                sqlx::query(guarded!(
                    "UPDATE jobs SET status = 'queued', error_code = ?, error_message = ?, \
                     lease_owner = NULL, lease_expires_at = NULL, run_after = ?, \
                     updated_at = ?"
                ))
                .bind(error.code.as_str())
                .bind(&error.message)
                .bind(now + ms(*delay))
                .bind(now),
                false,
            ),
            Finish::Release => (
                sqlx::query(guarded!(
                    "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), \
                     progress = 0, lease_owner = NULL, lease_expires_at = NULL, run_after = ?, \
                     updated_at = ?"
                ))
                .bind(now)
                .bind(now),
                false,
            ),
        };
        let row = query
            .bind(&id_text)
            .bind(&lease.owner)
            .bind(i64::from(lease.attempt))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        if terminal {
            enqueue_webhook(&mut tx, &id_text, row.try_get("callback_url")?, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel(&self, id: Uuid) -> QueueResult<Option<CancelOutcome>> {
        let now = now_ms();
        let id_text = id.to_string();
        let mut tx = self.pool.begin().await?;
        let canceled = sqlx::query(&format!(
            "UPDATE jobs SET status = 'canceled', cancel_requested = 1, finished_at = ?, updated_at = ? \
             WHERE id = ? AND status = 'queued' RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(now)
        .bind(&id_text)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = canceled {
            let job = job_from_row(&row)?;
            enqueue_webhook(&mut tx, &id_text, job.callback_url.clone(), now).await?;
            tx.commit().await?;
            return Ok(Some(CancelOutcome::Canceled(job)));
        }
        let requested = sqlx::query(&format!(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ? \
             WHERE id = ? AND status = 'running' RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
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
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let canceled = sqlx::query(
            "UPDATE jobs SET status = 'canceled', lease_owner = NULL, lease_expires_at = NULL, \
             finished_at = ?1, updated_at = ?1 \
             WHERE status = 'running' AND lease_expires_at < ?1 AND cancel_requested = 1 \
             RETURNING id, callback_url",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let exhausted = sqlx::query(
            "UPDATE jobs SET status = 'failed', error_code = ?2, \
             error_message = 'the job stopped without finishing (its node died) on every attempt', \
             lease_owner = NULL, lease_expires_at = NULL, finished_at = ?1, updated_at = ?1 \
             WHERE status = 'running' AND lease_expires_at < ?1 AND attempts >= max_attempts \
             RETURNING id, callback_url",
        )
        .bind(now)
        .bind(ErrorCode::AttemptsExhausted.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let count = (canceled.len() + exhausted.len()) as u64;
        for row in canceled.iter().chain(exhausted.iter()) {
            let id: String = row.try_get("id")?;
            enqueue_webhook(&mut tx, &id, row.try_get("callback_url")?, now).await?;
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
        let now = now_ms();
        let sql = format!(
            "UPDATE webhook_deliveries SET next_attempt_at = ?1, attempts = attempts + 1, updated_at = ?2 \
             WHERE id = ( \
                 SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ?2 \
                 ORDER BY next_attempt_at LIMIT 1) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        sqlx::query(&sql)
            .bind(now + ms(lease))
            .bind(now)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| super::row::delivery_from_row(&row))
            .transpose()
    }

    async fn finish_webhook(
        &self,
        delivery: &WebhookDelivery,
        outcome: DeliveryOutcome,
    ) -> QueueResult<bool> {
        let now = now_ms();
        let (status, error, next) = match outcome {
            DeliveryOutcome::Delivered => ("delivered", None, now),
            DeliveryOutcome::RetryAfter { error, delay } => {
                ("pending", Some(error), now + ms(delay))
            }
            DeliveryOutcome::GaveUp { error } => ("failed", Some(error), now),
        };
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET status = ?, last_error = ?, next_attempt_at = ?, updated_at = ? \
             WHERE id = ? AND attempts = ? AND status = 'pending'",
        )
        .bind(status)
        .bind(error)
        .bind(next)
        .bind(now)
        .bind(delivery.id.to_string())
        .bind(i64::from(delivery.attempts))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }
}
