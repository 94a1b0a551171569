//! `media-node process INPUT --spec job.json --out DIR`: the job code on local files,
//! without a server. Outputs land below DIR under the same keys a node would
//! write below its store; a progress bar shows on a terminal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::jobs::runner::{self, JobContext, ProgressSink, RunError};
use crate::jobs::spec::{JobSpec, ValidationContext};
use crate::media;
use crate::presets::Presets;
use crate::store::fs::FsStore;

/// Why a one-shot run failed: a stable code and a message.
#[derive(Debug)]
pub struct ProcessError {
    pub code: String,
    pub message: String,
}

impl ProcessError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        ProcessError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Reads the spec, with its `input` replaced by the local file.
fn read_spec(spec_path: &Path, presets: &Presets) -> Result<JobSpec, ProcessError> {
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| ProcessError::new("invalid_spec", format!("{}: {e}", spec_path.display())))?;
    let mut raw: Value = serde_json::from_str(&text)
        .map_err(|e| ProcessError::new("invalid_json", format!("{}: {e}", spec_path.display())))?;
    if let Some(obj) = raw.as_object_mut() {
        obj.insert("input".into(), serde_json::json!({"key": "input"}));
        // Callbacks belong to the server.
        obj.remove("callback_url");
    }
    let spec: JobSpec = serde_path_to_error::deserialize(raw)
        .map_err(|e| ProcessError::new("invalid_spec", format!("{}: {}", e.path(), e.inner())))?;
    if let Err(errors) = spec.validate(&ValidationContext {
        allow_private_callbacks: false,
        presets,
    }) {
        // Without a prefix, outputs go straight into the output folder.
        let errors: Vec<String> = errors
            .into_iter()
            .filter(|e| e.field != "output_prefix")
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        if !errors.is_empty() {
            return Err(ProcessError::new("invalid_spec", errors.join("; ")));
        }
    }
    Ok(spec)
}

/// The files of a one-shot run.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    /// The input media file.
    pub input: &'a Path,
    /// The job as JSON.
    pub spec: &'a Path,
    /// Where the outputs go.
    pub out: &'a Path,
}

/// Runs one job on `paths.input`, writing below `paths.out`. Returns the
/// job's result. `in_process` runs the media work unconfined in this process
/// (the isolation benchmark's reference; never for untrusted files).
pub async fn run(
    config: &Config,
    paths: Paths<'_>,
    in_process: bool,
    cancel: CancellationToken,
) -> Result<Value, ProcessError> {
    let Paths {
        input,
        spec: spec_path,
        out,
    } = paths;
    media::init().map_err(|e| match RunError::from(e) {
        RunError::Failed { code, message, .. } => ProcessError::new(code.as_str(), message),
        RunError::Canceled => ProcessError::new("canceled", "interrupted"),
    })?;
    let presets = Presets::load(config.pipelines_dir.as_deref())
        .map_err(|e| ProcessError::new("invalid_presets", e.to_string()))?;
    let spec = read_spec(spec_path, &presets)?;
    let input = std::path::absolute(input)
        .map_err(|e| ProcessError::new("input_not_found", e.to_string()))?;

    std::fs::create_dir_all(out)
        .map_err(|e| ProcessError::new("work_dir_error", format!("{}: {e}", out.display())))?;
    // Scratch space on the output's filesystem, so that finished files are renamed
    // into place; removed when done.
    let scratch = tempfile::Builder::new()
        .prefix(".media-node-")
        .tempdir_in(out)
        .map_err(|e| ProcessError::new("work_dir_error", e.to_string()))?;
    let store = FsStore::with_layout(
        out,
        &scratch.path().join("meta"),
        &scratch.path().join("tmp"),
    )
    .await
    .map_err(|e| ProcessError::new("work_dir_error", e.to_string()))?;
    let work_dir: PathBuf = scratch.path().join("work");
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| ProcessError::new("work_dir_error", e.to_string()))?;

    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(
        input
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
    );
    let progress = {
        let bar = bar.clone();
        ProgressSink::new(move |p| bar.set_position(u64::from(p).max(bar.position())))
    };
    let ctx = JobContext {
        job_id: uuid::Uuid::now_v7(),
        store: Arc::new(store),
        presets: Arc::new(presets),
        limits: config.limits.clone(),
        tag_fonts: config.tag_fonts.0.clone(),
        input_override: Some(input),
        work_dir,
        pipelines_dir: config.pipelines_dir.clone(),
        log: config.log.clone(),
        child: runner::ChildLimits::from_config(&config.jobs),
        media_in_process: in_process,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        progress,
        cancel,
    };
    let outcome = runner::execute(&spec, &ctx).await;
    bar.finish_and_clear();
    drop(scratch);
    match outcome {
        Ok(result) => Ok(result),
        Err(RunError::Canceled) => Err(ProcessError::new("canceled", "interrupted")),
        Err(RunError::Failed { code, message, .. }) => Err(ProcessError {
            code: code.as_str().to_string(),
            message,
        }),
    }
}
