//! Running one job: spec in, result out, progress through a callback.
//!
//! [`execute`] is the single boundary between the queue machinery (leases, retries,
//! webhooks) and media work. It touches nothing but its arguments, so it can later
//! move into a sandboxed child process without changing either side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::spec::JobSpec;
use crate::config::LimitsConfig;
use crate::media::{self, MediaError};
use crate::store::{DynStore, ObjectKey, StoreError};

/// Receives progress in percent (0-100) from a running job.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(u8) + Send + Sync>);

impl ProgressSink {
    pub fn new(f: impl Fn(u8) + Send + Sync + 'static) -> Self {
        ProgressSink(Arc::new(f))
    }
    pub fn discard() -> Self {
        ProgressSink::new(|_| {})
    }
    pub fn report(&self, percent: u8) {
        (self.0)(percent.min(100))
    }
}

/// Everything a job may use while it runs.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: Uuid,
    pub store: DynStore,
    pub limits: LimitsConfig,
    /// A directory of this run's own, removed when the run ends.
    pub work_dir: PathBuf,
    pub progress: ProgressSink,
    /// Fires when the job is canceled (by a user, a lost lease, a timeout or shutdown).
    pub cancel: CancellationToken,
}

/// How a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// Stopped on request; not an error of the job.
    #[error("canceled")]
    Canceled,
    #[error("{code}: {message}")]
    Failed {
        /// Stable machine-readable code.
        code: String,
        message: String,
        /// Worth another attempt (storage hiccup, timeout); otherwise the input or
        /// spec is at fault and retrying cannot help.
        transient: bool,
    },
}

impl RunError {
    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        RunError::Failed {
            code: code.into(),
            message: message.into(),
            transient: false,
        }
    }
    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        RunError::Failed {
            code: code.into(),
            message: message.into(),
            transient: true,
        }
    }
}

impl From<MediaError> for RunError {
    fn from(err: MediaError) -> Self {
        RunError::permanent(err.code(), err.to_string())
    }
}

/// Store errors while writing outputs or reading inputs other than the main one.
impl From<StoreError> for RunError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::NotFound(_) => RunError::permanent("object_not_found", err.to_string()),
            StoreError::TooLarge { .. } => RunError::permanent("object_too_large", err.to_string()),
            StoreError::InvalidKey(_) => RunError::permanent("invalid_key", err.to_string()),
            StoreError::Unavailable(_) | StoreError::Io(_) => {
                RunError::transient("store_unavailable", err.to_string())
            }
        }
    }
}

/// Runs one job to its result (the job's `result` JSON).
pub async fn execute(spec: &JobSpec, ctx: &JobContext) -> Result<Value, RunError> {
    #[cfg(feature = "test-support")]
    if let Some(test) = &spec.test {
        test_behaviour(test, ctx).await?;
    }

    let input = fetch_input(&spec.input.key, ctx).await?;
    ctx.progress.report(10);
    check_canceled(ctx)?;

    let mut result = Map::new();
    if spec.probe {
        let timeout = Duration::from_millis(ctx.limits.probe_timeout_ms);
        let probe = tokio::select! {
            probe = media::probe::probe_file(&input, timeout) => probe?,
            _ = ctx.cancel.cancelled() => return Err(RunError::Canceled),
        };
        result.insert(
            "probe".into(),
            serde_json::to_value(probe)
                .map_err(|e| RunError::permanent("internal", e.to_string()))?,
        );
    }
    ctx.progress.report(100);
    Ok(Value::Object(result))
}

fn check_canceled(ctx: &JobContext) -> Result<(), RunError> {
    if ctx.cancel.is_cancelled() {
        Err(RunError::Canceled)
    } else {
        Ok(())
    }
}

/// A local path to the input: the object itself when the store keeps it on local
/// disk, otherwise a copy in the work dir.
async fn fetch_input(key: &ObjectKey, ctx: &JobContext) -> Result<PathBuf, RunError> {
    let max = ctx.limits.max_input_bytes;
    let too_large = || {
        RunError::permanent(
            "input_too_large",
            format!("input `{key}` is larger than the limit of {max} bytes"),
        )
    };
    if let Some(path) = ctx.store.local_path(key) {
        return match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() && md.len() > max => Err(too_large()),
            Ok(md) if md.is_file() => Ok(path),
            _ => Err(input_not_found(key)),
        };
    }
    let dest = ctx.work_dir.join("input");
    match ctx.store.get_to_file(key, &dest, max).await {
        Ok(_) => Ok(dest),
        Err(StoreError::NotFound(_)) => Err(input_not_found(key)),
        Err(StoreError::TooLarge { .. }) => Err(too_large()),
        Err(other) => Err(other.into()),
    }
}

fn input_not_found(key: &ObjectKey) -> RunError {
    RunError::permanent("input_not_found", format!("no object at `{key}`"))
}

#[cfg(feature = "test-support")]
async fn test_behaviour(test: &super::spec::TestSpec, ctx: &JobContext) -> Result<(), RunError> {
    const STEP_MS: u64 = 50;
    let steps = test.sleep_ms / STEP_MS;
    for step in 0..steps {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(STEP_MS)) => {}
            _ = ctx.cancel.cancelled() => return Err(RunError::Canceled),
        }
        ctx.progress
            .report(((step + 1) * 100 / steps.max(1)).min(99) as u8);
    }
    if test.panic {
        panic!("test job asked to panic");
    }
    if test.fail_transient {
        return Err(RunError::transient(
            "test_transient",
            "test job asked to fail",
        ));
    }
    Ok(())
}
