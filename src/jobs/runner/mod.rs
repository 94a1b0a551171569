//! Running one job: fetch, media, publish.
//!
//! [`execute`] is the single boundary between the queue machinery (leases,
//! retries, webhooks) and media work, in three steps:
//!
//! 1. [`fetch`] (in the node): the input and the tags' product photos become
//!    files in the job's work dir;
//! 2. [`media`] (in a child process, see [`child`]): probe, transcode, tags and
//!    stills read only the work dir and write their outputs there; every decode
//!    of untrusted bytes happens here, so a decoder that crashes takes down
//!    that child alone;
//! 3. [`publish`] (in the node): the outputs the child listed are checked to
//!    be files of the work dir and uploaded to the store.

pub mod child;
#[cfg(feature = "test-support")]
mod escape;
pub mod fetch;
pub mod media;
pub mod publish;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::error::ErrorCode;
pub use super::error::RunError;
use super::spec::JobSpec;
use crate::config::{JobsConfig, LimitsConfig, LogConfig};
use crate::metrics::Metrics;
use crate::presets::Presets;
use crate::store::DynStore;

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
    pub presets: std::sync::Arc<Presets>,
    pub limits: LimitsConfig,
    /// Fallback fonts for tag text (`tag_fonts`).
    pub tag_fonts: Vec<PathBuf>,
    /// Read the input from this local file instead of the store (`media-node
    /// process`).
    pub input_override: Option<PathBuf>,
    /// A directory of this run's own, removed when the run ends.
    pub work_dir: PathBuf,
    /// Where the media child loads its presets from (the node's
    /// `pipelines_dir`: the built-in presets plus these).
    pub pipelines_dir: Option<PathBuf>,
    /// How the media child logs (the node's own settings).
    pub log: LogConfig,
    /// How the media child is confined.
    pub child: ChildLimits,
    /// Run the media step in this process, without a child or a sandbox: only
    /// `media-node process --debug-in-process`, the isolation benchmark's
    /// reference.
    pub media_in_process: bool,
    /// Where the media child's crashes are counted.
    pub metrics: Arc<Metrics>,
    pub progress: ProgressSink,
    /// Fires when the job is canceled (by a user, a lost lease, a timeout or shutdown).
    pub cancel: CancellationToken,
}

/// The resource limits of a job's media child, from `jobs.*`.
#[derive(Debug, Clone, Copy)]
pub struct ChildLimits {
    /// `jobs.child_memory_limit_mb` (0: unlimited).
    pub memory_limit_mb: u64,
    /// `jobs.timeout_ms`: the child's CPU time is capped at this wall time on
    /// every core.
    pub timeout_ms: u64,
}

impl ChildLimits {
    pub fn from_config(jobs: &JobsConfig) -> ChildLimits {
        ChildLimits {
            memory_limit_mb: jobs.child_memory_limit_mb,
            timeout_ms: jobs.timeout_ms,
        }
    }
}

/// Runs one job to its result (the job's `result` JSON).
pub async fn execute(spec: &JobSpec, ctx: &JobContext) -> Result<Value, RunError> {
    #[cfg(feature = "test-support")]
    if let Some(test) = &spec.test {
        test_behaviour(test, ctx).await?;
    }
    let fetched = fetch::fetch(spec, ctx).await?;
    ctx.progress.report(2);
    check_canceled(ctx)?;
    let made = child::run(spec, &fetched, ctx).await?;
    let files = child::checked_files(made.files, &ctx.work_dir)?;
    if !files.is_empty() {
        ctx.progress.report(90);
        // The prefix comes from the spec, never from the child's reply: a
        // child cannot publish under another job's keys.
        publish::publish(&files, &media::output_prefix(spec), ctx).await?;
    }
    ctx.progress.report(100);
    serde_json::to_value(&made.result)
        .map_err(|e| RunError::permanent(ErrorCode::Internal, e.to_string()))
}

fn check_canceled(ctx: &JobContext) -> Result<(), RunError> {
    if ctx.cancel.is_cancelled() {
        Err(RunError::Canceled)
    } else {
        Ok(())
    }
}

#[cfg(feature = "test-support")]
async fn test_behaviour(test: &super::spec::TestSpec, ctx: &JobContext) -> Result<(), RunError> {
    const STEP_MS: u64 = 50;
    let steps = test.sleep_ms / STEP_MS;
    for step in 0..steps {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(STEP_MS)) => {}
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
            ErrorCode::StoreUnavailable,
            "test job asked to fail",
        ));
    }
    Ok(())
}
