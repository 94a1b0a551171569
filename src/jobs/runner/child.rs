//! The media step in a child process: `media-node work --job ID --dir DIR`.
//!
//! GStreamer's demuxers and decoders are C code parsing whatever was uploaded.
//! The node re-executes its own binary for each job's media step, so a decoder
//! that crashes ends that child only: the API, the other jobs and the live
//! streams go on, and the run is failed (`media_crashed`) or retried.
//!
//! The protocol, all inside the job's work dir:
//! - the node writes `request.json` ([`Request`]) and starts the child with a
//!   clean environment (no `MEDIA_NODE_*`, no `AWS_*`, no token), in its own
//!   process group, with `no_new_privs` and a parent-death signal;
//! - the child confines itself ([`crate::sandbox`]) to the request's policy:
//!   it reads the work dir (the fetched input and tag images) and system
//!   files, and writes only below `media/` ([`MEDIA_DIR`]);
//! - it writes `progress N` lines on its stdout, logs on its stderr (the
//!   node's), and on success or failure `media/reply.json` ([`Reply`]), then
//!   exits 0;
//! - cancel is SIGTERM (the child stops its pipelines and replies `canceled`),
//!   then SIGKILL after [`KILL_GRACE`];
//! - a child that dies without a reply crashed; the signal names why. One at
//!   its memory limit replies `memory_limit` (from a fatal-signal handler if
//!   need be); one out of CPU time dies of SIGXCPU (`job_timeout`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};
use uuid::Uuid;

use super::fetch::Fetched;
use super::media::{self, Made, MediaContext};
use super::{JobContext, ProgressSink, RunError};
use crate::config::{LimitsConfig, LogConfig};
use crate::jobs::error::{ErrorCode, panic_message};
use crate::jobs::spec::JobSpec;
use crate::output::ProducedFile;
use crate::presets::Presets;
use crate::sandbox::{self, Enforced, Limits, Policy};

/// The request the node leaves for the child.
const REQUEST_FILE: &str = "request.json";
/// The child's answer, in [`MEDIA_DIR`].
const REPLY_FILE: &str = "reply.json";
/// The child's own folder in the work dir, the only one it may write: its
/// outputs, its stills, its reply, its temporary files.
pub const MEDIA_DIR: &str = "media";
/// Open files a child may hold (a 4-rung ladder with tags holds about 50).
const OPEN_FILES: u64 = 1024;
/// How long a child has after SIGTERM before it is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// What the child is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub job_id: Uuid,
    pub spec: JobSpec,
    pub input: PathBuf,
    pub tag_images: BTreeMap<String, PathBuf>,
    pub limits: LimitsConfig,
    pub tag_fonts: Vec<PathBuf>,
    pub pipelines_dir: Option<PathBuf>,
    pub log: LogConfig,
    /// What the child may touch, set before it reads the input.
    pub policy: Policy,
}

/// How the child's media step ended.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Reply {
    Done(Box<Made>),
    Failed {
        code: ErrorCode,
        message: String,
        transient: bool,
    },
    Canceled,
}

impl From<Result<Made, RunError>> for Reply {
    fn from(outcome: Result<Made, RunError>) -> Self {
        match outcome {
            Ok(made) => Reply::Done(Box::new(made)),
            Err(RunError::Canceled) => Reply::Canceled,
            Err(RunError::Failed {
                code,
                message,
                transient,
            }) => Reply::Failed {
                code,
                message,
                transient,
            },
        }
    }
}

/// Runs the media step of `spec` in a child process and waits for its reply.
pub async fn run(spec: &JobSpec, fetched: &Fetched, ctx: &JobContext) -> Result<Made, RunError> {
    let media_dir = ctx.work_dir.join(MEDIA_DIR);
    tokio::fs::create_dir_all(&media_dir)
        .await
        .map_err(|e| RunError::transient(ErrorCode::WorkDirError, e.to_string()))?;
    if ctx.media_in_process {
        return in_process(spec, fetched, ctx, media_dir).await;
    }
    let request = Request {
        job_id: ctx.job_id,
        spec: spec.clone(),
        input: fetched.input.clone(),
        tag_images: fetched.tag_images.clone(),
        limits: ctx.limits.clone(),
        tag_fonts: ctx.tag_fonts.clone(),
        pipelines_dir: ctx.pipelines_dir.clone(),
        log: ctx.log.clone(),
        policy: policy(ctx, &media_dir),
    };
    let json = serde_json::to_vec(&request)
        .map_err(|e| RunError::permanent(ErrorCode::Internal, e.to_string()))?;
    tokio::fs::write(ctx.work_dir.join(REQUEST_FILE), json)
        .await
        .map_err(|e| RunError::transient(ErrorCode::WorkDirError, e.to_string()))?;

    let mut child = command(ctx.job_id, &ctx.work_dir, &media_dir)?
        .spawn()
        .map_err(|e| {
            RunError::transient(
                ErrorCode::Internal,
                format!("cannot start the media process: {e}"),
            )
        })?;
    let pid = child.id();
    info!(pid, "media process started");
    let progress = child.stdout.take().map(|out| {
        let sink = ctx.progress.clone();
        tokio::spawn(read_progress(out, sink).in_current_span())
    });

    let mut stopping = false;
    let kill_at = tokio::time::sleep(Duration::MAX);
    tokio::pin!(kill_at);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = ctx.cancel.cancelled(), if !stopping => {
                stopping = true;
                sandbox::spawn::signal(pid, rustix::process::Signal::TERM);
                kill_at.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
            }
            _ = &mut kill_at, if stopping => {
                warn!(pid, "the media process ignored SIGTERM; killing it");
                let _ = child.start_kill();
                kill_at.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
        }
    }
    .map_err(|e| {
        RunError::transient(
            ErrorCode::Internal,
            format!("waiting for the media process: {e}"),
        )
    })?;
    if let Some(task) = progress {
        let _ = task.await;
    }
    match read_reply(&media_dir).await {
        Some(reply) => reply_outcome(reply),
        None if stopping => Err(RunError::Canceled),
        None => Err(died(status, ctx)),
    }
}

/// The media step in the node's own process, unconfined: the benchmark's
/// reference for what the child costs.
async fn in_process(
    spec: &JobSpec,
    fetched: &Fetched,
    ctx: &JobContext,
    media_dir: PathBuf,
) -> Result<Made, RunError> {
    warn!("running the media step in-process, without a sandbox (--debug-in-process)");
    let media = MediaContext {
        job_id: ctx.job_id,
        presets: ctx.presets.clone(),
        limits: ctx.limits.clone(),
        tag_fonts: ctx.tag_fonts.clone(),
        work_dir: media_dir,
        progress: ctx.progress.clone(),
        cancel: ctx.cancel.clone(),
    };
    media::run(spec, &fetched.input, &fetched.tag_images, &media).await
}

/// The child's sandbox: it reads the work dir, the node's GStreamer registry,
/// the tag fonts, the presets and its own binary (and system files); it
/// writes `media_dir`; its memory, CPU time, file sizes and open files are
/// limited.
fn policy(ctx: &JobContext, media_dir: &Path) -> Policy {
    let mut read = vec![ctx.work_dir.clone(), crate::media::registry::path()];
    read.extend(ctx.tag_fonts.iter().cloned());
    read.extend(ctx.pipelines_dir.iter().cloned());
    read.extend(std::env::current_exe().ok());
    Policy::new(
        read,
        vec![media_dir.to_path_buf()],
        child_limits(ctx.child, &ctx.limits),
    )
}

fn child_limits(child: super::ChildLimits, limits: &LimitsConfig) -> Limits {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    Limits {
        memory_bytes: (child.memory_limit_mb > 0).then_some(child.memory_limit_mb << 20),
        // The wall-time deadline on every core, and a little: the deadline
        // itself stops the job first, this catches a child that ignores it.
        cpu_seconds: Some(child.timeout_ms.div_ceil(1000) * cores + 10),
        // No rendition of an allowed input comes near this.
        file_bytes: Some((4 * limits.max_input_bytes).max(8 << 30)),
        open_files: Some(OPEN_FILES),
    }
}

/// `media-node work --job ID --dir DIR`, confined as every media process
/// starts ([`sandbox::spawn::command`]), in its own folder.
fn command(
    job_id: Uuid,
    work_dir: &Path,
    media_dir: &Path,
) -> Result<tokio::process::Command, RunError> {
    let job = job_id.to_string();
    let args = [OsStr::new("work"), OsStr::new("--job"), OsStr::new(&job)];
    let mut cmd = sandbox::spawn::command(args, media_dir).map_err(|e| {
        RunError::permanent(
            ErrorCode::Internal,
            format!("cannot find the node's binary: {e}"),
        )
    })?;
    cmd.arg("--dir").arg(work_dir);
    Ok(cmd)
}

/// Forwards the child's `progress N` lines until it closes its stdout.
async fn read_progress(out: tokio::process::ChildStdout, sink: ProgressSink) {
    let mut lines = tokio::io::BufReader::new(out).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = line
            .strip_prefix("progress ")
            .and_then(|p| p.trim().parse().ok())
        {
            sink.report(p);
        }
    }
}

async fn read_reply(media_dir: &Path) -> Option<Reply> {
    let bytes = tokio::fs::read(media_dir.join(REPLY_FILE)).await.ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(reply) => Some(reply),
        Err(e) => {
            warn!(error = %e, "the media process left an unreadable reply");
            None
        }
    }
}

fn reply_outcome(reply: Reply) -> Result<Made, RunError> {
    match reply {
        Reply::Done(made) => Ok(*made),
        Reply::Canceled => Err(RunError::Canceled),
        Reply::Failed {
            code,
            message,
            transient,
        } => Err(RunError::Failed {
            code,
            message,
            transient,
        }),
    }
}

/// The run error of a child that ended without a reply.
fn died(status: std::process::ExitStatus, ctx: &JobContext) -> RunError {
    match status.signal() {
        Some(libc::SIGXCPU) => {
            warn!("the media process used up its CPU time");
            RunError::permanent(
                ErrorCode::JobTimeout,
                format!(
                    "the media process used up its CPU time ({} s)",
                    child_limits(ctx.child, &ctx.limits)
                        .cpu_seconds
                        .unwrap_or_default()
                ),
            )
        }
        Some(sig) => {
            let name = sandbox::spawn::signal_name(sig);
            warn!(signal = name, "the media process crashed");
            ctx.metrics.observe_child_crash("job", &name);
            RunError::transient(
                ErrorCode::MediaCrashed,
                format!("the media process was killed by {name}"),
            )
        }
        // Ended early without a word (an abort handler, a library calling
        // exit): as much a crash of the media step as a signal.
        None => {
            warn!(%status, "the media process ended without a reply");
            ctx.metrics.observe_child_crash("job", "exit");
            RunError::transient(
                ErrorCode::MediaCrashed,
                format!("the media process ended with {status} without a reply"),
            )
        }
    }
}

/// The files of a reply, each checked to be a regular file inside `work_dir`
/// (a child could name any path; only its own outputs are published).
pub fn checked_files(
    files: Vec<ProducedFile>,
    work_dir: &Path,
) -> Result<Vec<ProducedFile>, RunError> {
    let root = work_dir
        .canonicalize()
        .map_err(|e| RunError::transient(ErrorCode::WorkDirError, e.to_string()))?;
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::symlink_metadata(&f.path);
            let inside = f.path.canonicalize().is_ok_and(|p| p.starts_with(&root));
            if inside && meta.is_ok_and(|m| m.file_type().is_file()) {
                Ok(f)
            } else {
                Err(RunError::permanent(
                    ErrorCode::Internal,
                    format!(
                        "the media process listed {}, which is no file of its work dir",
                        f.path.display()
                    ),
                ))
            }
        })
        .collect()
}

/// The child's side: `media-node work --job ID --dir DIR`. Reads the request,
/// runs the media step, writes the reply; exits 0 whenever it could reply.
pub fn work_main(job_id: Uuid, dir: &Path) -> ExitCode {
    let request: Request = match std::fs::read(dir.join(REQUEST_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("media-node work: cannot read {REQUEST_FILE}: {e}");
            return ExitCode::from(2);
        }
    };
    let media_dir = dir.join(MEDIA_DIR);
    // Confined while it has one thread, before it reads a byte of input.
    let enforced = match sandbox::enter(&request.policy) {
        Ok(enforced) => enforced,
        Err(e) => {
            let failed = RunError::permanent(ErrorCode::Internal, e.to_string());
            return write_reply(&media_dir, &Reply::from(Err(failed)));
        }
    };
    if let Ok(bytes) = serde_json::to_vec(&memory_limit_reply()) {
        sandbox::limits::on_fatal_signal_write(&media_dir.join(REPLY_FILE), bytes);
    }
    crate::telemetry::init(&request.log);
    let span = tracing::info_span!("job", job_id = %job_id);
    if enforced != Enforced::Fully {
        span.in_scope(|| {
            warn!(
                ?enforced,
                "this kernel confines the media process only in part"
            )
        });
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) if sandbox::limits::memory_limit_hit() => {
            eprintln!("media-node work: cannot start a runtime: {e}");
            return write_reply(&media_dir, &memory_limit_reply());
        }
        Err(e) => {
            eprintln!("media-node work: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    if let Err(e) = watch_memory(cancel.clone(), media_dir.clone()) {
        span.in_scope(|| warn!(error = %e, "cannot watch the media process's memory"));
    }
    let outcome = runtime.block_on(work(request, media_dir.clone(), cancel).instrument(span));
    let reply = match Reply::from(outcome) {
        Reply::Failed { .. } | Reply::Canceled if sandbox::limits::memory_limit_hit() => {
            memory_limit_reply()
        }
        reply => reply,
    };
    write_reply(&media_dir, &reply)
}

/// How often the child looks at its own peak memory.
const MEMORY_WATCH: Duration = Duration::from_millis(200);

/// A process at its memory limit does not always fail: a pipeline whose
/// thread could not start just stalls. A watchdog thread stops the run
/// (`cancel`) once the peak reaches the limit, and if the run has not ended
/// [`KILL_GRACE`] later, replies `memory_limit` and exits.
fn watch_memory(cancel: CancellationToken, media_dir: PathBuf) -> std::io::Result<()> {
    if sandbox::limits::memory_limit().is_none() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("memory-watch".into())
        .stack_size(64 << 10)
        .spawn(move || {
            while !sandbox::limits::memory_limit_hit() {
                std::thread::sleep(MEMORY_WATCH);
            }
            warn!("the media process reached its memory limit; stopping");
            cancel.cancel();
            std::thread::sleep(KILL_GRACE);
            write_reply(&media_dir, &memory_limit_reply());
            // SAFETY: ends the process without running exit handlers, which
            // could wait on the stalled threads.
            unsafe { libc::_exit(0) }
        })
        .map(drop)
}

/// The reply of a child that reached its memory limit.
fn memory_limit_reply() -> Reply {
    let limit = sandbox::limits::memory_limit().unwrap_or_default() >> 20;
    Reply::Failed {
        code: ErrorCode::MemoryLimit,
        message: format!(
            "the media process reached its memory limit of {limit} MiB (jobs.child_memory_limit_mb)"
        ),
        transient: false,
    }
}

/// Writes `reply` (atomically); exit 0 when it could.
fn write_reply(media_dir: &Path, reply: &Reply) -> ExitCode {
    let written = serde_json::to_vec(reply)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            let tmp = media_dir.join(format!("{REPLY_FILE}.tmp"));
            std::fs::write(&tmp, b)
                .and_then(|()| std::fs::rename(&tmp, media_dir.join(REPLY_FILE)))
                .map_err(|e| e.to_string())
        });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("media-node work: cannot write {REPLY_FILE}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn work(request: Request, dir: PathBuf, cancel: CancellationToken) -> Result<Made, RunError> {
    // GStreamer starts only for a video (media::run): photos never load it.
    let presets = Presets::load(request.pipelines_dir.as_deref())
        .map_err(|e| RunError::permanent(ErrorCode::SpecInvalid, e.to_string()))?;
    let on_term = cancel.clone();
    tokio::spawn(async move {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            term.recv().await;
            on_term.cancel();
        }
    });
    let ctx = MediaContext {
        job_id: request.job_id,
        presets: Arc::new(presets),
        limits: request.limits,
        tag_fonts: request.tag_fonts,
        work_dir: dir,
        progress: stdout_progress(),
        cancel,
    };
    let run = media::run(&request.spec, &request.input, &request.tag_images, &ctx);
    match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
        Ok(outcome) => outcome,
        Err(panic) => Err(RunError::permanent(
            ErrorCode::InternalPanic,
            format!("the job panicked: {}", panic_message(&panic)),
        )),
    }
}

/// Progress as `progress N` lines on stdout, each value once.
fn stdout_progress() -> ProgressSink {
    let last = std::sync::atomic::AtomicU8::new(0);
    ProgressSink::new(move |p| {
        if last.fetch_max(p, std::sync::atomic::Ordering::Relaxed) < p {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "progress {p}");
            let _ = out.flush();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_of_the_work_dir_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("a.mp4"), b"x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), out.join("link.mp4")).unwrap();
        let file = |p: PathBuf| ProducedFile {
            rel_key: "k".into(),
            path: p,
            kind: crate::output::FileKind::Media,
        };
        assert!(checked_files(vec![file(out.join("a.mp4"))], dir.path()).is_ok());
        for bad in [
            out.join("link.mp4"),
            outside.path().to_path_buf(),
            out.join("missing"),
            out.clone(),
        ] {
            assert!(
                checked_files(vec![file(bad.clone())], dir.path()).is_err(),
                "{bad:?}"
            );
        }
    }
}
