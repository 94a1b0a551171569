//! Running one job: spec in, result out, progress through a callback.
//!
//! [`execute`] is the single boundary between the queue machinery (leases, retries,
//! webhooks) and media work. It touches nothing but its arguments, so it can later
//! move into a sandboxed child process without changing either side.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

use super::error::ErrorCode;
pub use super::error::RunError;
use super::spec::{JobSpec, RenditionsSpec};
use crate::config::LimitsConfig;
use crate::media;
use crate::media::probe::Probe;
use crate::media::transcode;
use crate::output::{FileKind, ProducedFile};
use crate::overlay;
use crate::presets::Presets;
use crate::store::{DynStore, ObjectKey, PutOptions, StoreError, Visibility, content_type_for};
use crate::thumbnail::{self, StillsError, still::StillLimits};

/// Uploads of one job's outputs in flight at once.
const UPLOAD_CONCURRENCY: usize = 8;
/// Published media never changes under its key (a re-run writes the same bytes).
const MEDIA_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// VOD playlists may be rewritten by a re-run; keep them short-lived in caches.
const PLAYLIST_CACHE_CONTROL: &str = "public, max-age=60";

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
    pub progress: ProgressSink,
    /// Fires when the job is canceled (by a user, a lost lease, a timeout or shutdown).
    pub cancel: CancellationToken,
}

/// Runs one job to its result (the job's `result` JSON).
pub async fn execute(spec: &JobSpec, ctx: &JobContext) -> Result<Value, RunError> {
    #[cfg(feature = "test-support")]
    if let Some(test) = &spec.test {
        test_behaviour(test, ctx).await?;
    }

    let input = fetch_input(&spec.input.key, ctx).await?;
    ctx.progress.report(2);
    check_canceled(ctx)?;

    let prefix = spec
        .output_prefix
        .as_ref()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let wants_stills = spec.thumbnails.is_some() || spec.storyboard.is_some();
    let photo = {
        let path = input.clone();
        tokio::task::spawn_blocking(move || thumbnail::is_photo(&path))
            .await
            .unwrap_or(false)
    };
    let mut result = Map::new();
    let mut outputs: Vec<Value> = Vec::new();
    let mut files: Vec<ProducedFile> = Vec::new();

    let probe = if photo {
        if spec.renditions.is_some() || spec.storyboard.is_some() {
            return Err(RunError::permanent(
                ErrorCode::NotAVideo,
                "the input is a photo: renditions and storyboards need a video",
            ));
        }
        None
    } else if spec.probe || spec.renditions.is_some() || wants_stills {
        let timeout = Duration::from_millis(ctx.limits.probe_timeout_ms);
        let probe = tokio::select! {
            probe = media::probe::probe_file(&input, timeout) => probe?,
            _ = ctx.cancel.cancelled() => return Err(RunError::Canceled),
        };
        result.insert("probe".into(), to_json(&probe)?);
        if spec.renditions.is_some() || wants_stills {
            check_limits(&probe, &ctx.limits)?;
        }
        if wants_stills && probe.width.is_none() {
            return Err(RunError::permanent(
                ErrorCode::NoVideo,
                "the input has no video stream to take stills from",
            ));
        }
        Some(probe)
    } else {
        None
    };
    ctx.progress.report(5);

    // Progress: the transcode up to 75 % (90 % alone or with stills tapped from
    // its decode), stills to 90 %, publishing the rest.
    let mut stills = None;
    let mut poster_windows = Vec::new();
    if let (Some(renditions), Some(probe)) = (&spec.renditions, &probe) {
        let plan = plan_transcode(probe, renditions, ctx)?;
        let tags = if spec.tags.is_empty() {
            None
        } else {
            let prepared = prepare_tags(spec, probe, &plan, ctx).await?;
            poster_windows = prepared.windows();
            Some(prepared)
        };
        // Stills of a transcoded video come from the transcode's own decode.
        let tapped = if wants_stills {
            Some(start_tapped_stills(
                &input,
                probe,
                spec,
                &prefix,
                poster_windows.clone(),
                ctx,
            )?)
        } else {
            None
        };
        let (tap, task) = match tapped {
            Some((tap, task, stop)) => (Some(tap), Some((task, stop))),
            None => (None, None),
        };
        let hooks = transcode::pipeline::Hooks {
            tap,
            rung: tags.as_ref().map(burn_in_hook),
            // Cards are converted to BT.709 limited range: the frames they are
            // drawn into must be too.
            bt709: tags.is_some(),
        };
        let dateranges = tags
            .as_ref()
            .map(|t| overlay::timed::dateranges(&t.tags))
            .unwrap_or_default();
        let transcoded =
            run_transcode(&input, probe, &plan, &prefix, 90, hooks, &dateranges, ctx).await;
        let (made, skipped, produced) = match transcoded {
            Ok(done) => done,
            Err(e) => {
                if let Some((task, stop)) = task {
                    stop.cancel();
                    let _ = task.await;
                }
                return Err(e);
            }
        };
        if let Some((task, _)) = task {
            let made = task
                .await
                .map_err(|e| RunError::permanent(ErrorCode::InternalPanic, e.to_string()))?;
            stills = Some(made.map_err(RunError::from)?);
        }
        outputs.extend(made);
        files.extend(produced);
        if let Some(tags) = &tags {
            let (entries, written) = write_tag_files(tags, &prefix, ctx)?;
            for o in &entries {
                outputs.push(to_json(o)?);
            }
            files.extend(written);
        }
        result.insert("skipped".into(), to_json(&skipped)?);
    }
    if wants_stills {
        let stills = match stills {
            Some(made) => made,
            None => {
                run_stills(
                    &input,
                    probe.as_ref(),
                    spec,
                    &prefix,
                    5,
                    poster_windows,
                    ctx,
                )
                .await?
            }
        };
        for o in &stills.outputs {
            outputs.push(to_json(o)?);
        }
        files.extend(stills.files);
        if let Some(t) = stills.poster_time_s {
            result.insert(
                "poster_time_s".into(),
                Value::from((t * 1000.0).round() / 1000.0),
            );
        }
    }
    if !files.is_empty() {
        ctx.progress.report(90);
        publish(&files, &prefix, ctx).await?;
    }
    if spec.renditions.is_some() || wants_stills {
        result.insert("outputs".into(), Value::Array(outputs));
    }
    ctx.progress.report(100);
    Ok(Value::Object(result))
}

/// `thumbnails` with its preset applied.
fn resolve_stills(
    spec: &JobSpec,
    ctx: &JobContext,
) -> Result<Option<thumbnail::spec::Resolved>, RunError> {
    if spec.thumbnails.is_none() {
        return Ok(None);
    }
    let mut errors = Vec::new();
    spec.resolve_thumbnails(&ctx.presets, &mut errors)
        .map(Some)
        .ok_or_else(|| {
            RunError::permanent(
                ErrorCode::SpecInvalid,
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
}

fn still_limits(ctx: &JobContext) -> StillLimits {
    StillLimits {
        max_pixels: ctx.limits.max_image_pixels,
        max_bytes: ctx.limits.max_image_bytes,
    }
}

type StillsTask = tokio::task::JoinHandle<Result<thumbnail::Produced, StillsError>>;

/// Starts making a video's stills from frames the transcode will tap from its
/// decode; returns the tap for the transcode, the task, and a token that stops
/// the task if the transcode fails.
fn start_tapped_stills(
    input: &std::path::Path,
    probe: &Probe,
    spec: &JobSpec,
    prefix: &str,
    poster_windows: Vec<(f64, f64)>,
    ctx: &JobContext,
) -> Result<(transcode::pipeline::VideoTap, StillsTask, CancellationToken), RunError> {
    let thumbnails = resolve_stills(spec, ctx)?;
    let captures = thumbnail::captures(
        thumbnails.as_ref(),
        spec.storyboard.as_ref(),
        &poster_windows,
        probe.pictures_s(),
    );
    let (sender, frames) = std::sync::mpsc::sync_channel(thumbnail::tap::CHANNEL_FRAMES);
    let times = captures.times.clone();
    let tap: transcode::pipeline::VideoTap =
        Box::new(move |pad| thumbnail::tap::install(pad, times, sender));
    let stop = ctx.cancel.child_token();
    let (input, probe, storyboard) = (input.to_path_buf(), probe.clone(), spec.storyboard.clone());
    let (work_dir, prefix, cancel) = (ctx.work_dir.clone(), prefix.to_string(), stop.clone());
    let limits = still_limits(ctx);
    let task = tokio::task::spawn_blocking(move || {
        thumbnail::make_from_frames(
            &thumbnail::Request {
                input: &input,
                probe: Some(&probe),
                thumbnails: thumbnails.as_ref(),
                storyboard: storyboard.as_ref(),
                poster_windows,
                limits,
                work_dir: &work_dir,
                prefix: &prefix,
                cancel: &cancel,
                progress: &|_| {},
            },
            &probe,
            &captures,
            frames,
        )
    });
    Ok((tap, task, stop))
}

/// Makes the stills on the blocking pool, one stills job per core at a time.
async fn run_stills(
    input: &std::path::Path,
    probe: Option<&Probe>,
    spec: &JobSpec,
    prefix: &str,
    progress_start: u8,
    poster_windows: Vec<(f64, f64)>,
    ctx: &JobContext,
) -> Result<thumbnail::Produced, RunError> {
    let thumbnails = resolve_stills(spec, ctx)?;
    let _permit = thumbnail::PERMITS
        .acquire()
        .await
        .map_err(|e| RunError::transient(ErrorCode::Internal, e.to_string()))?;
    let (input, probe, storyboard) = (input.to_path_buf(), probe.cloned(), spec.storyboard.clone());
    let (work_dir, prefix, cancel) = (ctx.work_dir.clone(), prefix.to_string(), ctx.cancel.clone());
    let limits = still_limits(ctx);
    let sink = ctx.progress.clone();
    let span = (90 - progress_start) as f64;
    let outcome = tokio::task::spawn_blocking(move || {
        let progress = move |done: f64| sink.report(progress_start + (done * span) as u8);
        thumbnail::make(&thumbnail::Request {
            input: &input,
            probe: probe.as_ref(),
            thumbnails: thumbnails.as_ref(),
            storyboard: storyboard.as_ref(),
            poster_windows,
            limits,
            work_dir: &work_dir,
            prefix: &prefix,
            cancel: &cancel,
            progress: &progress,
        })
    })
    .await
    .map_err(|e| RunError::permanent(ErrorCode::InternalPanic, e.to_string()))?;
    outcome.map_err(RunError::from)
}

fn to_json(value: &impl serde::Serialize) -> Result<Value, RunError> {
    serde_json::to_value(value).map_err(|e| RunError::permanent(ErrorCode::Internal, e.to_string()))
}

/// Refuses inputs over the configured limits before any decoding.
fn check_limits(probe: &Probe, limits: &LimitsConfig) -> Result<(), RunError> {
    if probe.duration_s > limits.max_duration_s {
        return Err(RunError::permanent(
            ErrorCode::InputTooLong,
            format!(
                "the input lasts {:.1} s; the limit is {:.0} s",
                probe.duration_s, limits.max_duration_s
            ),
        ));
    }
    if let (Some(w), Some(h)) = (probe.width, probe.height) {
        let pixels = u64::from(w) * u64::from(h);
        if pixels > limits.max_pixels {
            return Err(RunError::permanent(
                ErrorCode::ResolutionTooLarge,
                format!(
                    "the input is {w}x{h} ({pixels} pixels); the limit is {} pixels",
                    limits.max_pixels
                ),
            ));
        }
    }
    if let Some(fps) = probe.fps
        && fps > limits.max_fps
    {
        return Err(RunError::permanent(
            ErrorCode::FrameRateTooHigh,
            format!(
                "the input runs at {fps} fps; the limit is {} fps",
                limits.max_fps
            ),
        ));
    }
    Ok(())
}

/// The transcode plan for `spec`'s ladder.
fn plan_transcode(
    probe: &Probe,
    spec: &RenditionsSpec,
    ctx: &JobContext,
) -> Result<transcode::Plan, RunError> {
    let ladder = ctx.presets.ladder(&spec.ladder).ok_or_else(|| {
        RunError::permanent(
            ErrorCode::SpecInvalid,
            format!("ladder `{}` is no longer configured", spec.ladder),
        )
    })?;
    let plan = transcode::plan::plan(probe, ladder, spec.rungs.as_deref(), &spec.formats)
        .map_err(|e| RunError::permanent(ErrorCode::NoVideo, e.to_string()))?;
    info!(
        rungs = ?plan.video.rungs.iter().map(|r| format!("{}={}x{}", r.name, r.width, r.height)).collect::<Vec<_>>(),
        skipped = plan.skipped.len(),
        fps = format!("{}/{}", plan.video.fps_n, plan.video.fps_d),
        "transcode planned"
    );
    Ok(plan)
}

/// Transcodes; returns the result entries, the skipped rungs and the files to
/// publish.
#[allow(clippy::too_many_arguments)]
async fn run_transcode(
    input: &std::path::Path,
    probe: &Probe,
    plan: &transcode::Plan,
    prefix: &str,
    progress_end: u8,
    hooks: transcode::pipeline::Hooks,
    dateranges: &[crate::media::hls::DateRange],
    ctx: &JobContext,
) -> Result<(Vec<Value>, Vec<transcode::Skipped>, Vec<ProducedFile>), RunError> {
    // The pipeline's position maps to 5 % .. `progress_end`.
    let sink = ctx.progress.clone();
    let span = f64::from(progress_end.saturating_sub(5));
    let progress = move |done: f64| sink.report(5 + (done * span) as u8);
    let produced = transcode::transcode(
        input,
        probe,
        plan,
        &ctx.work_dir,
        prefix,
        Duration::from_millis(ctx.limits.probe_timeout_ms),
        &ctx.cancel,
        &progress,
        hooks,
        dateranges,
    )
    .await?
    .ok_or(RunError::Canceled)?;
    let outputs = produced
        .outputs
        .iter()
        .map(to_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((outputs, produced.skipped, produced.files))
}

/// Fetches the tags' product photos and draws the tags for `plan`'s renditions.
async fn prepare_tags(
    spec: &JobSpec,
    probe: &Probe,
    plan: &transcode::Plan,
    ctx: &JobContext,
) -> Result<overlay::Prepared, RunError> {
    let images = fetch_tag_images(spec, ctx).await?;
    let targets: Vec<overlay::Target> = plan
        .video
        .rungs
        .iter()
        .map(|r| overlay::Target {
            name: r.name.clone(),
            width: r.width,
            height: r.height,
        })
        .collect();
    let (tags, presets, fonts) = (
        spec.tags.clone(),
        ctx.presets.clone(),
        ctx.tag_fonts.clone(),
    );
    let duration = probe.duration_s;
    let started = std::time::Instant::now();
    let prepared = tokio::task::spawn_blocking(move || {
        overlay::prepare(&tags, &presets, &fonts, &images, &targets, duration)
    })
    .await
    .map_err(|e| RunError::permanent(ErrorCode::InternalPanic, e.to_string()))?
    .map_err(RunError::from)?;
    info!(
        tags = prepared.tags.len(),
        renditions = prepared.burn_ins.len(),
        ms = started.elapsed().as_millis() as u64,
        "tag cards drawn"
    );
    Ok(prepared)
}

/// The tags' product photos, decoded, by store key.
async fn fetch_tag_images(
    spec: &JobSpec,
    ctx: &JobContext,
) -> Result<HashMap<String, overlay::card::ProductImage>, RunError> {
    let mut images = HashMap::new();
    for (i, key) in spec
        .tags
        .iter()
        .filter_map(|t| t.image.as_ref())
        .enumerate()
    {
        if images.contains_key(key.as_str()) {
            continue;
        }
        let path = ctx.work_dir.join(format!("tag-image-{i}"));
        match ctx
            .store
            .get_to_file(key, &path, ctx.limits.max_image_bytes)
            .await
        {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                return Err(RunError::permanent(
                    ErrorCode::TagImageNotFound,
                    format!("no product photo at `{key}`"),
                ));
            }
            Err(StoreError::TooLarge { .. }) => {
                return Err(RunError::permanent(
                    ErrorCode::TagImageInvalid,
                    format!(
                        "product photo `{key}` is larger than {} bytes",
                        ctx.limits.max_image_bytes
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let limits = still_limits(ctx);
        let decoded = tokio::task::spawn_blocking(move || {
            // A card shows the photo a few hundred pixels wide at most.
            let size = thumbnail::resize::Size::Box {
                width: TAG_IMAGE_MAX_SIDE,
                height: TAG_IMAGE_MAX_SIDE,
                fit: thumbnail::resize::Fit::Cover,
            };
            thumbnail::still::load(&path, &limits, &[size])
        })
        .await
        .map_err(|e| RunError::permanent(ErrorCode::InternalPanic, e.to_string()))?
        .map_err(|e| {
            RunError::permanent(
                ErrorCode::TagImageInvalid,
                format!("product photo `{key}`: {e}"),
            )
        })?;
        images.insert(key.as_str().to_string(), product_image(decoded));
    }
    Ok(images)
}

/// Largest side a product photo is decoded at (JPEGs shrink while decoding).
const TAG_IMAGE_MAX_SIDE: u32 = 512;

fn product_image(p: thumbnail::still::Picture) -> overlay::card::ProductImage {
    let rgba = if p.channels == 4 {
        p.data
    } else {
        p.data
            .chunks_exact(3)
            .flat_map(|c| [c[0], c[1], c[2], 255])
            .collect()
    };
    overlay::card::ProductImage {
        width: p.width,
        height: p.height,
        rgba,
    }
}

/// The transcode hook that burns each rendition's cards into its frames.
fn burn_in_hook(tags: &overlay::Prepared) -> transcode::pipeline::RungHook {
    let burn_ins = tags.burn_ins.clone();
    Box::new(move |rung, pad| {
        if let Some(burn) = burn_ins.get(&rung.name) {
            burn.clone().install(pad, rung.width, rung.height);
        }
    })
}

/// Writes the JSON sidecar and the WebVTT track to the work dir.
fn write_tag_files(
    tags: &overlay::Prepared,
    prefix: &str,
    ctx: &JobContext,
) -> Result<(Vec<overlay::TagOutput>, Vec<ProducedFile>), RunError> {
    let dir = ctx.work_dir.join("out").join("tags");
    std::fs::create_dir_all(&dir)
        .map_err(|e| RunError::transient(ErrorCode::WorkDirError, e.to_string()))?;
    let (w, h) = tags.frame;
    let docs = [
        ("tags.json", overlay::timed::sidecar(&tags.tags, w, h)),
        ("tags.vtt", overlay::timed::webvtt(&tags.tags)),
    ];
    let mut outputs = Vec::new();
    let mut files = Vec::new();
    for (name, text) in docs {
        let path = dir.join(name);
        std::fs::write(&path, &text)
            .map_err(|e| RunError::transient(ErrorCode::WorkDirError, e.to_string()))?;
        let rel = format!("tags/{name}");
        let entry = overlay::TagsOutput {
            key: crate::output::join_key(prefix, &rel),
            tags: tags.tags.len(),
            bytes: text.len() as u64,
        };
        outputs.push(if name.ends_with(".json") {
            overlay::TagOutput::TagsJson(entry)
        } else {
            overlay::TagOutput::TagsVtt(entry)
        });
        files.push(ProducedFile {
            rel_key: rel,
            path,
            kind: FileKind::Playlist,
        });
    }
    Ok((outputs, files))
}

/// Uploads files in order (media, then media playlists, then the master), media in
/// parallel. On failure or cancel, what was uploaded is removed again, so no
/// partial output stays visible.
async fn publish(files: &[ProducedFile], prefix: &str, ctx: &JobContext) -> Result<(), RunError> {
    let keyed: Vec<(ObjectKey, &ProducedFile)> = files
        .iter()
        .map(|f| {
            let key = if prefix.is_empty() {
                ObjectKey::parse(f.rel_key.clone())
            } else {
                ObjectKey::parse(format!("{prefix}/{}", f.rel_key))
            };
            key.map(|k| (k, f))
                .map_err(|e| RunError::permanent(ErrorCode::InvalidKey, e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let state = PublishState {
        total: keyed.len().max(1),
        done: std::sync::atomic::AtomicUsize::new(0),
        uploaded: std::sync::Mutex::new(Vec::new()),
    };
    let (media, mut playlists): (Vec<_>, Vec<_>) =
        keyed.iter().partition(|(_, f)| f.kind == FileKind::Media);
    // Master playlists last (a stable sort keeps the rest in order), so a reader
    // never finds a master before everything the job publishes.
    playlists.sort_by_key(|(key, _)| key.as_str().ends_with("master.m3u8"));
    // Collected first: a stream holding the closure would not be `Send`.
    let uploads: Vec<_> = media
        .into_iter()
        .map(|(key, file)| upload_one(ctx, &state, key.clone(), file))
        .collect();
    let mut outcome = futures_util::stream::iter(uploads)
        .buffer_unordered(UPLOAD_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ());
    if outcome.is_ok() {
        // Playlists one by one, in order: the master comes last.
        for (key, file) in playlists {
            if let Err(e) = upload_one(ctx, &state, key.clone(), file).await {
                outcome = Err(e);
                break;
            }
        }
    }
    if let Err(err) = outcome {
        let written =
            std::mem::take(&mut *state.uploaded.lock().unwrap_or_else(|p| p.into_inner()));
        for key in written.iter().rev() {
            if let Err(e) = ctx.store.delete(key).await {
                tracing::warn!(key = %key, error = %e, "cannot remove a partial output");
            }
        }
        return Err(err);
    }
    Ok(())
}

struct PublishState {
    total: usize,
    done: std::sync::atomic::AtomicUsize,
    uploaded: std::sync::Mutex<Vec<ObjectKey>>,
}

async fn upload_one(
    ctx: &JobContext,
    state: &PublishState,
    key: ObjectKey,
    file: &ProducedFile,
) -> Result<(), RunError> {
    if ctx.cancel.is_cancelled() {
        return Err(RunError::Canceled);
    }
    let opts = PutOptions {
        content_type: Some(content_type_for(key.as_str()).to_string()),
        cache_control: Some(
            match file.kind {
                FileKind::Media => MEDIA_CACHE_CONTROL,
                FileKind::Playlist => PLAYLIST_CACHE_CONTROL,
            }
            .to_string(),
        ),
        visibility: Visibility::Public,
    };
    ctx.store.put_file(&key, &file.path, &opts).await?;
    state
        .uploaded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(key);
    let n = state
        .done
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    ctx.progress.report(90 + (n * 9 / state.total) as u8);
    Ok(())
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
    if let Some(path) = &ctx.input_override {
        return match tokio::fs::metadata(path).await {
            Ok(md) if md.len() > max => Err(RunError::permanent(
                ErrorCode::InputTooLarge,
                format!("input is larger than the limit of {max} bytes"),
            )),
            Ok(md) if md.is_file() => Ok(path.clone()),
            _ => Err(RunError::permanent(
                ErrorCode::InputNotFound,
                format!("no file at {}", path.display()),
            )),
        };
    }
    let too_large = || {
        RunError::permanent(
            ErrorCode::InputTooLarge,
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
    RunError::permanent(ErrorCode::InputNotFound, format!("no object at `{key}`"))
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
            ErrorCode::StoreUnavailable,
            "test job asked to fail",
        ));
    }
    Ok(())
}
