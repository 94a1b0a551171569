//! The worker pool: N workers claim jobs with a lease, keep it alive by heartbeat,
//! run each job behind a panic boundary and a deadline, and record how it ended.
//!
//! Task layout (all tokio tasks, named in spans):
//! - `worker-{i}`: claim → run → finish, forever, until `stop_claiming`;
//! - per running job, a heartbeat task that renews the lease, stores progress and
//!   notices cancel requests and lost leases;
//! - `reaper`: settles jobs whose node died and that must not run again.
//!
//! Shutdown: [`WorkerPool::stop_claiming`] lets running jobs finish;
//! [`WorkerPool::abort_running`] stops them and hands them back to the queue
//! (`Finish::Release`, the attempt not counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::error::{ErrorCode, panic_message};
use super::model::{Job, JobErrorInfo};
use super::queue::{DynQueue, Finish, Heartbeat, Lease, Wakeups};
use super::runner::{self, JobContext, ProgressSink, RunError};
use super::spec::JobSpec;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::DynStore;

/// Attempts after which a job whose media process crashed fails (`media_crashed`).
const CRASHED_ATTEMPTS: u32 = 2;

#[derive(Clone)]
pub struct WorkerDeps {
    pub queue: DynQueue,
    pub store: DynStore,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Notified when a job is enqueued, on this node or (through the store)
    /// on another.
    pub wake: Wakeups,
    /// Identifies this node in leases.
    pub node_id: String,
    pub presets: Arc<crate::presets::Presets>,
}

pub struct WorkerPool {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    abort: CancellationToken,
}

impl WorkerPool {
    pub fn start(deps: WorkerDeps) -> WorkerPool {
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let count = deps.config.jobs.worker_count();
        for index in 0..count {
            let worker = Worker {
                deps: deps.clone(),
                owner: format!("{}/w{index}", deps.node_id),
                stop: stop.clone(),
                abort: abort.clone(),
            };
            tasks.spawn(
                worker
                    .run()
                    .instrument(info_span!("worker", worker = index)),
            );
        }
        tasks.spawn(reaper(deps.clone(), stop.clone()).instrument(info_span!("reaper")));
        info!(workers = count, node = %deps.node_id, "worker pool started");
        WorkerPool { tasks, stop, abort }
    }

    /// Stop taking new jobs; running ones go on.
    pub fn stop_claiming(&self) {
        self.stop.cancel();
    }

    /// Stop running jobs; they return to the queue for another node.
    pub fn abort_running(&self) {
        self.abort.cancel();
    }

    /// Waits until every worker has exited (after `stop_claiming`), up to `limit`.
    /// Returns whether they all did.
    pub async fn join(&mut self, limit: Duration) -> bool {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        tokio::time::timeout(limit, all).await.is_ok()
    }
}

struct Worker {
    deps: WorkerDeps,
    owner: String,
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Worker {
    async fn run(self) {
        let poll = Duration::from_millis(self.deps.config.jobs.poll_ms);
        let lease = self.deps.config.jobs.lease();
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            match self.deps.queue.claim(&self.owner, lease).await {
                Ok(Some(job)) => {
                    let span = info_span!("job", job_id = %job.id, attempt = job.attempts);
                    self.run_job(job).instrument(span).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = self.deps.wake.jobs.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                        _ = self.stop.cancelled() => break,
                    }
                }
                Err(err) => {
                    warn!(error = %err, "cannot claim jobs");
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {}
                        _ = self.stop.cancelled() => break,
                    }
                }
            }
        }
    }

    async fn run_job(&self, job: Job) {
        let started = Instant::now();
        let deps = &self.deps;
        let metrics = &deps.metrics;
        metrics.jobs_running.inc();
        info!("job started");

        let finish = match serde_json::from_value::<JobSpec>(job.spec.clone()) {
            Ok(spec) => self.supervise(&job, spec).await,
            Err(err) => Some(Finish::Failed(JobErrorInfo {
                code: ErrorCode::SpecInvalid,
                message: format!("the stored spec no longer parses: {err}"),
            })),
        };
        metrics.jobs_running.dec();

        let Some(finish) = finish else {
            warn!("lease lost while running; another node owns the job now");
            return;
        };
        let outcome = match &finish {
            Finish::Succeeded(_) => "succeeded",
            Finish::Failed(_) => "failed",
            Finish::Canceled => "canceled",
            Finish::Retry { .. } => "retry",
            Finish::Release => "released",
        };
        match &finish {
            Finish::Failed(e) | Finish::Retry { error: e, .. } => {
                info!(outcome, code = %e.code, message = %e.message, "job ended")
            }
            _ => info!(
                outcome,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "job ended"
            ),
        }
        metrics.observe_job(outcome, started.elapsed());
        match &finish {
            Finish::Succeeded(result) => metrics.observe_outputs(result),
            Finish::Failed(e) => metrics.observe_failure(e.code.as_str()),
            _ => {}
        }
        match deps
            .queue
            .finish(&Lease::of(&job, &self.owner), finish)
            .await
        {
            Ok(true) => {}
            Ok(false) => warn!("lease lost before the outcome was recorded"),
            Err(err) => {
                error!(error = %err, "cannot record the job outcome; it will run again after its lease expires")
            }
        }
    }

    /// Runs the job with heartbeat, deadline and panic boundary. `None` when the
    /// lease was lost (the outcome must not be written).
    async fn supervise(&self, job: &Job, spec: JobSpec) -> Option<Finish> {
        let deps = &self.deps;
        let jobs_config = &deps.config.jobs;
        let cancel = CancellationToken::new();
        let progress = Arc::new(AtomicU8::new(0));
        let user_canceled = Arc::new(AtomicBool::new(false));
        let lease_lost = Arc::new(AtomicBool::new(false));

        let work_dir = deps.config.data_dir.join("work").join(job.id.to_string());
        if let Err(err) = tokio::fs::create_dir_all(&work_dir).await {
            return Some(Finish::Retry {
                error: JobErrorInfo {
                    code: ErrorCode::WorkDirUnavailable,
                    message: err.to_string(),
                },
                delay: retry_delay(jobs_config, job.attempts),
            });
        }

        let heartbeat = tokio::spawn(
            heartbeat(
                deps.clone(),
                Lease::of(job, &self.owner),
                progress.clone(),
                cancel.clone(),
                user_canceled.clone(),
                lease_lost.clone(),
            )
            .in_current_span(),
        );

        let progress_sink = {
            let progress = progress.clone();
            ProgressSink::new(move |p| {
                progress.fetch_max(p, Ordering::Relaxed);
            })
        };
        let ctx = JobContext {
            job_id: job.id,
            store: deps.store.clone(),
            presets: deps.presets.clone(),
            limits: deps.config.limits.clone(),
            tag_fonts: deps.config.tag_fonts.0.clone(),
            input_override: None,
            work_dir: work_dir.clone(),
            pipelines_dir: deps.config.pipelines_dir.clone(),
            log: deps.config.log.clone(),
            child: runner::ChildLimits::from_config(&deps.config.jobs),
            media_in_process: false,
            metrics: deps.metrics.clone(),
            progress: progress_sink,
            cancel: cancel.clone(),
        };
        #[cfg(feature = "test-support")]
        let run_started = crate::clock::now_ms();
        // The spawned task is the panic boundary: a panic ends that task only.
        let mut run = tokio::spawn(
            async move {
                std::panic::AssertUnwindSafe(runner::execute(&spec, &ctx))
                    .catch_unwind()
                    .await
            }
            .in_current_span(),
        );
        let deadline = tokio::time::sleep(Duration::from_millis(jobs_config.timeout_ms));
        tokio::pin!(deadline);
        let mut shutdown = false;
        let mut timed_out = false;
        let joined = loop {
            tokio::select! {
                joined = &mut run => break joined,
                _ = &mut deadline, if !timed_out => {
                    timed_out = true;
                    cancel.cancel();
                }
                _ = self.abort.cancelled(), if !shutdown => {
                    shutdown = true;
                    cancel.cancel();
                }
            }
        };
        heartbeat.abort();
        #[cfg(feature = "test-support")]
        record_run(job, &self.owner, run_started);
        if let Err(err) = tokio::fs::remove_dir_all(&work_dir).await {
            warn!(error = %err, dir = %work_dir.display(), "cannot remove work dir");
        }

        if lease_lost.load(Ordering::SeqCst) {
            return None;
        }
        let outcome = match joined {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(panic)) => Err(RunError::permanent(
                ErrorCode::InternalPanic,
                format!("the job panicked: {}", panic_message(&panic)),
            )),
            Err(join_err) => Err(RunError::permanent(
                ErrorCode::InternalPanic,
                format!("the job task failed: {join_err}"),
            )),
        };
        Some(match outcome {
            Ok(result) => Finish::Succeeded(result),
            Err(RunError::Canceled) if timed_out => self.failure(
                job,
                RunError::transient(
                    ErrorCode::JobTimeout,
                    format!("the job ran longer than {} ms", jobs_config.timeout_ms),
                ),
            ),
            Err(RunError::Canceled) if shutdown && !user_canceled.load(Ordering::SeqCst) => {
                Finish::Release
            }
            Err(RunError::Canceled) => Finish::Canceled,
            // A run torn down by a user's cancel may end in an error of the
            // teardown itself; the user asked for `canceled`, and a transient
            // error must not bring the job back to run again.
            Err(err) if user_canceled.load(Ordering::SeqCst) => {
                info!(error = %err, "the run failed after cancel was requested");
                Finish::Canceled
            }
            Err(err) => self.failure(job, err),
        })
    }

    fn failure(&self, job: &Job, err: RunError) -> Finish {
        let RunError::Failed {
            code,
            message,
            transient,
        } = err
        else {
            return Finish::Canceled;
        };
        // A crash is retried once: a decoder that crashed twice on the same
        // input will crash again.
        let crashed_enough = code == ErrorCode::MediaCrashed && job.attempts >= CRASHED_ATTEMPTS;
        let error = JobErrorInfo { code, message };
        if transient && job.attempts < job.max_attempts && !crashed_enough {
            Finish::Retry {
                error,
                delay: retry_delay(&self.deps.config.jobs, job.attempts),
            }
        } else {
            Finish::Failed(error)
        }
    }
}

async fn heartbeat(
    deps: WorkerDeps,
    held: Lease,
    progress: Arc<AtomicU8>,
    cancel: CancellationToken,
    user_canceled: Arc<AtomicBool>,
    lease_lost: Arc<AtomicBool>,
) {
    let period = deps.config.jobs.heartbeat();
    let lease = deps.config.jobs.lease();
    // The first beat comes quickly so that progress and cancel are seen early.
    let mut next = Duration::from_millis(200).min(period);
    loop {
        tokio::time::sleep(next).await;
        next = period;
        let p = progress.load(Ordering::Relaxed);
        match deps.queue.heartbeat(&held, lease, p).await {
            Ok(Heartbeat::Held { cancel_requested }) => {
                if cancel_requested && !user_canceled.swap(true, Ordering::SeqCst) {
                    info!("cancel requested");
                    cancel.cancel();
                }
            }
            Ok(Heartbeat::Lost) => {
                lease_lost.store(true, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Err(err) => warn!(error = %err, "heartbeat failed"),
        }
    }
}

/// Exponential backoff with ±20 % jitter so that retries of many jobs spread out.
pub fn retry_delay(config: &crate::config::JobsConfig, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let base = config.retry_base_ms.saturating_mul(1u64 << exp);
    let capped = base.min(config.retry_max_ms);
    let jitter = rand::random_range(0.8..1.2);
    Duration::from_millis((capped as f64 * jitter) as u64)
}

async fn reaper(deps: WorkerDeps, stop: CancellationToken) {
    let period = (deps.config.jobs.lease() / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.cancelled() => return,
        }
        match deps.queue.reap_expired().await {
            Ok(0) => {}
            Ok(n) => info!(jobs = n, "settled jobs whose node died"),
            Err(err) => warn!(error = %err, "reaper failed"),
        }
    }
}

/// Test builds only: every run of a job, appended as one JSON line to the
/// file named by `TEST_MEDIA_NODE_RUNS` (the fleet test proves no two runs of
/// a job overlap).
#[cfg(feature = "test-support")]
fn record_run(job: &Job, owner: &str, started_ms: i64) {
    use std::io::Write;
    let Some(path) = std::env::var_os("TEST_MEDIA_NODE_RUNS") else {
        return;
    };
    let line = serde_json::json!({
        "job": job.id,
        "node": super::queue::node_of(owner),
        "worker": owner,
        "attempt": job.attempts,
        "start_ms": started_ms,
        "end_ms": crate::clock::now_ms(),
    });
    // One write of one short line to a file opened for appending: lines of
    // nodes writing at once do not interleave.
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = appended {
        warn!(error = %e, "cannot record the run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_cap() {
        let config = crate::config::JobsConfig {
            retry_base_ms: 1000,
            retry_max_ms: 10_000,
            ..Default::default()
        };
        let d1 = retry_delay(&config, 1).as_millis();
        let d3 = retry_delay(&config, 3).as_millis();
        let d9 = retry_delay(&config, 9).as_millis();
        assert!((800..=1200).contains(&d1), "{d1}");
        assert!((3200..=4800).contains(&d3), "{d3}");
        assert!((8000..=12000).contains(&d9), "{d9}");
    }
}
