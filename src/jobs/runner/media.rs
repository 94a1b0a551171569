//! The media step of a job, in the child process: probe, transcode (with tags
//! burnt in and stills tapped from its decode), stills, storyboards, photos.
//!
//! It reads only the files [`super::fetch`] put in the work dir and writes its
//! outputs there; it knows no store, no queue and no secret. [`run`] returns
//! the job's result and the files to publish.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

use super::{ProgressSink, RunError};
use crate::config::LimitsConfig;
use crate::jobs::error::ErrorCode;
use crate::jobs::model::{JobOutput, JobResult};
use crate::jobs::spec::{JobSpec, RenditionsSpec};
use crate::media;
use crate::media::probe::Probe;
use crate::media::transcode;
use crate::output::{FileKind, ProducedFile};
use crate::overlay;
use crate::presets::Presets;
use crate::thumbnail::{self, StillsError, still::StillLimits};

/// What the media step may use.
#[derive(Clone)]
pub struct MediaContext {
    pub job_id: Uuid,
    pub presets: Arc<Presets>,
    pub limits: LimitsConfig,
    /// Fallback fonts for tag text (`tag_fonts`).
    pub tag_fonts: Vec<PathBuf>,
    /// The job's work dir: the fetched files are here, outputs go below `out/`.
    pub work_dir: PathBuf,
    pub progress: ProgressSink,
    /// Fires when the job is canceled.
    pub cancel: CancellationToken,
}

/// What the media step made: the job's result, and the files to publish below
/// the output prefix.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Made {
    pub result: JobResult,
    pub files: Vec<ProducedFile>,
}

/// Runs the media work of `spec` on the fetched `input` and `tag_images`.
pub async fn run(
    spec: &JobSpec,
    input: &Path,
    tag_images: &BTreeMap<String, PathBuf>,
    ctx: &MediaContext,
) -> Result<Made, RunError> {
    #[cfg(feature = "test-support")]
    if let Some(escape) = spec.test.as_ref().and_then(|t| t.escape.as_ref()) {
        let result = JobResult {
            escape: Some(super::escape::attempt(escape, input)),
            ..JobResult::default()
        };
        return Ok(Made {
            result,
            files: Vec::new(),
        });
    }
    let input = input.to_path_buf();

    let prefix = output_prefix(spec);
    let wants_stills = spec.thumbnails.is_some() || spec.storyboard.is_some();
    let photo = {
        let path = input.clone();
        tokio::task::spawn_blocking(move || thumbnail::is_photo(&path))
            .await
            .unwrap_or(false)
    };
    // An MPEG-TS upload whose clock GStreamer would misread is read from a
    // repaired copy in the work dir (see `media::mpegts`).
    let input = if photo {
        input
    } else {
        let dir = ctx.work_dir.clone();
        tokio::task::spawn_blocking(move || media::mpegts::readable_copy(&input, &dir))
            .await
            .map_err(|e| RunError::permanent(ErrorCode::Internal, e.to_string()))??
    };
    let mut result = JobResult::default();
    let mut outputs: Vec<JobOutput> = Vec::new();
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
        // Photos never need GStreamer; in a media child it starts here.
        media::init()?;
        let timeout = Duration::from_millis(ctx.limits.probe_timeout_ms);
        let probe = tokio::select! {
            probe = media::probe::probe_file(&input, timeout) => probe?,
            _ = ctx.cancel.cancelled() => return Err(RunError::Canceled),
        };
        result.probe = Some(probe.clone());
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
            let prepared = prepare_tags(spec, tag_images, probe, &plan, ctx).await?;
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
        outputs.extend(made.into_iter().map(JobOutput::Media));
        files.extend(produced);
        if let Some(tags) = &tags {
            let (entries, written) = write_tag_files(tags, &prefix, ctx)?;
            outputs.extend(entries.into_iter().map(JobOutput::Tags));
            files.extend(written);
        }
        result.skipped = Some(skipped);
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
        outputs.extend(stills.outputs.into_iter().map(JobOutput::Still));
        files.extend(stills.files);
        if let Some(t) = stills.poster_time_s {
            result.poster_time_s = Some((t * 1000.0).round() / 1000.0);
        }
    }
    if spec.renditions.is_some() || wants_stills {
        result.outputs = Some(outputs);
    }
    Ok(Made { result, files })
}

/// Where a job's outputs go: its `output_prefix`, or the store's root.
pub fn output_prefix(spec: &JobSpec) -> String {
    spec.output_prefix
        .as_ref()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default()
}

/// `thumbnails` with its preset applied.
fn resolve_stills(
    spec: &JobSpec,
    ctx: &MediaContext,
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

fn still_limits(ctx: &MediaContext) -> StillLimits {
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
    ctx: &MediaContext,
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
    ctx: &MediaContext,
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
    if let Some(unread) = &probe.unread_video
        && unread.fps > limits.max_fps
    {
        // GStreamer skips the track; were it read, the limit would refuse it.
        return Err(RunError::permanent(
            ErrorCode::FrameRateTooHigh,
            format!(
                "the video track runs at {} fps ({} frames in {} s); the limit is {} fps",
                unread.fps, unread.frames, unread.duration_s, limits.max_fps
            ),
        ));
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
    ctx: &MediaContext,
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
    ctx: &MediaContext,
) -> Result<
    (
        Vec<transcode::Output>,
        Vec<transcode::Skipped>,
        Vec<ProducedFile>,
    ),
    RunError,
> {
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
    Ok((produced.outputs, produced.skipped, produced.files))
}

/// Decodes the tags' product photos and draws the tags for `plan`'s renditions.
async fn prepare_tags(
    spec: &JobSpec,
    tag_images: &BTreeMap<String, PathBuf>,
    probe: &Probe,
    plan: &transcode::Plan,
    ctx: &MediaContext,
) -> Result<overlay::Prepared, RunError> {
    let images = decode_tag_images(tag_images, ctx).await?;
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
async fn decode_tag_images(
    files: &BTreeMap<String, PathBuf>,
    ctx: &MediaContext,
) -> Result<HashMap<String, overlay::card::ProductImage>, RunError> {
    let mut images = HashMap::new();
    for (key, path) in files {
        let (path, limits) = (path.clone(), still_limits(ctx));
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
        images.insert(key.clone(), product_image(decoded));
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
    ctx: &MediaContext,
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
