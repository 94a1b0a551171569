//! Reading the job store's rows, once for every backend: the backends share
//! column names and kinds (text, 64-bit integers, a boolean), so one generic
//! decoder serves SQLite's and PostgreSQL's rows alike.

use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::{QueueError, QueueResult, WebhookDelivery};
use crate::jobs::error::ErrorCode;
use crate::jobs::model::{Job, JobErrorInfo, JobStatus};

/// The columns of a job row, in the order [`job_from_row`] reads them.
pub(super) const JOB_COLUMNS: &str = "id, spec, status, progress, attempts, max_attempts, \
    error_code, error_message, result, callback_url, cancel_requested, lease_owner, \
    lease_expires_at, run_after, created_at, updated_at, started_at, finished_at, node, owner";

/// The columns of a claimed webhook delivery.
pub(super) const DELIVERY_COLUMNS: &str = "id, job_id, url, attempts";

/// What a backend's rows must decode to: text, 64-bit integers and booleans.
pub(super) trait StoreRow {
    fn text(&self, column: &str) -> QueueResult<String>;
    fn opt_text(&self, column: &str) -> QueueResult<Option<String>>;
    fn int(&self, column: &str) -> QueueResult<i64>;
    fn opt_int(&self, column: &str) -> QueueResult<Option<i64>>;
    fn flag(&self, column: &str) -> QueueResult<bool>;
}

impl<R> StoreRow for R
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> QueueResult<String> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &str) -> QueueResult<Option<String>> {
        Ok(self.try_get(column)?)
    }
    fn int(&self, column: &str) -> QueueResult<i64> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &str) -> QueueResult<Option<i64>> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: &str) -> QueueResult<bool> {
        Ok(self.try_get(column)?)
    }
}

fn corrupt(what: &str, detail: impl ToString) -> QueueError {
    QueueError::Corrupt(format!("{what}: {}", detail.to_string()))
}

fn uuid(row: &impl StoreRow, column: &str) -> QueueResult<Uuid> {
    let text = row.text(column)?;
    Uuid::parse_str(&text).map_err(|e| corrupt(column, e))
}

fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// A job from a row holding [`JOB_COLUMNS`].
pub(super) fn job_from_row(row: &impl StoreRow) -> QueueResult<Job> {
    let status = row.text("status")?;
    let spec = row.text("spec")?;
    Ok(Job {
        id: uuid(row, "id")?,
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("spec", e))?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        progress: row.int("progress")?.clamp(0, 100) as u8,
        attempts: count(row.int("attempts")?),
        max_attempts: count(row.int("max_attempts")?),
        error: row.opt_text("error_code")?.map(|code| JobErrorInfo {
            // Codes are written by this binary; one it no longer knows (a
            // newer node's, say) reads as `internal` rather than failing the row.
            code: ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal),
            message: row
                .opt_text("error_message")
                .ok()
                .flatten()
                .unwrap_or_default(),
        }),
        result: row
            .opt_text("result")?
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt("result", e))?,
        callback_url: row.opt_text("callback_url")?,
        cancel_requested: row.flag("cancel_requested")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_expires_at: row.opt_int("lease_expires_at")?,
        run_after: row.int("run_after")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        started_at: row.opt_int("started_at")?,
        finished_at: row.opt_int("finished_at")?,
        node: row.opt_text("node")?,
        owner: row.opt_text("owner")?,
    })
}

/// A claimed delivery from a row holding [`DELIVERY_COLUMNS`].
pub(super) fn delivery_from_row(row: &impl StoreRow) -> QueueResult<WebhookDelivery> {
    Ok(WebhookDelivery {
        id: uuid(row, "id")?,
        job_id: uuid(row, "job_id")?,
        url: row.text("url")?,
        attempts: count(row.int("attempts")?),
    })
}
