//! Transcoding an input into H.264/AAC MP4 renditions and an HLS ladder from one
//! decode: [`plan`] decides sizes and settings, [`pipeline`] runs GStreamer, and
//! [`transcode`] turns what was written into publishable files and result entries.
//!
//! Output keys are deterministic below the job's output prefix, so a retried job
//! overwrites instead of duplicating:
//! `{prefix}/{rung}.mp4`, `{prefix}/hls/master.m3u8`,
//! `{prefix}/hls/{rung}/index.m3u8`, `{prefix}/hls/{rung}/seg_NNNNN.ts`.

pub mod pipeline;
pub mod plan;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::MediaError;
use super::hls;
use super::probe::{Probe, probe_file};
use super::run::ProgressFn;
pub use plan::{Format, Plan, Skipped};

use crate::output::{FileKind, ProducedFile, join_key};

/// AAC-LC, the only audio codec written.
const AAC_CODEC: &str = "mp4a.40.2";

/// One entry of `result.outputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Output {
    Mp4(Mp4Output),
    Hls(HlsOutput),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Mp4Output {
    pub key: String,
    pub rung: String,
    pub width: u32,
    pub height: u32,
    pub duration_s: f64,
    /// Overall bit rate in bits per second.
    pub bitrate: u64,
    pub video_codec: String,
    pub audio_codec: Option<String>,
    /// RFC 6381 codecs (`avc1.64001f,mp4a.40.2`).
    pub codecs: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HlsOutput {
    /// The master playlist.
    pub key: String,
    pub duration_s: f64,
    pub bytes: u64,
    pub video_codec: String,
    pub audio_codec: Option<String>,
    pub variants: Vec<HlsVariant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HlsVariant {
    pub rung: String,
    /// The variant's media playlist.
    pub key: String,
    pub width: u32,
    pub height: u32,
    /// Peak segment bit rate (`BANDWIDTH`).
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    pub segments: usize,
}

/// What a transcode produced.
#[derive(Debug, Clone)]
pub struct Produced {
    /// In upload order: media first, then media playlists, the master last, so a
    /// reader never finds a playlist before what it lists.
    pub files: Vec<ProducedFile>,
    pub outputs: Vec<Output>,
    pub skipped: Vec<Skipped>,
}

/// Runs `plan` on `input` in `work_dir` and describes the results with keys below
/// `prefix`. `Ok(None)` when canceled.
#[allow(clippy::too_many_arguments)]
pub async fn transcode(
    input: &Path,
    probe: &Probe,
    plan: &Plan,
    work_dir: &Path,
    prefix: &str,
    probe_timeout: Duration,
    cancel: &CancellationToken,
    progress: ProgressFn<'_>,
    hooks: pipeline::Hooks,
    dateranges: &[hls::DateRange],
) -> Result<Option<Produced>, MediaError> {
    let out_dir = work_dir.join("out");
    let duration = Duration::from_secs_f64(probe.duration_s.max(0.0));
    let Some(rungs) = pipeline::run(
        input,
        plan,
        &out_dir,
        Some(duration),
        cancel,
        progress,
        hooks,
    )
    .await?
    else {
        return Ok(None);
    };

    let audio_codec = plan.audio.as_ref().map(|_| "aac".to_string());
    let codecs_for = |video: &str| match &plan.audio {
        Some(_) => format!("{video},{AAC_CODEC}"),
        None => video.to_string(),
    };
    let fps = f64::from(plan.video.fps_n) / f64::from(plan.video.fps_d);
    let mut media = Vec::new();
    let mut playlists = Vec::new();
    let mut outputs = Vec::new();
    let mut variants = Vec::new();
    let mut hls_variant_entries = Vec::new();
    let (mut hls_bytes, mut hls_duration) = (0u64, 0.0f64);

    for rung in &rungs {
        let video_codec = rung
            .video_codec
            .clone()
            .ok_or_else(|| MediaError::Internal("the encoder announced no codec".into()))?;
        if let Some(path) = &rung.mp4 {
            let rel = format!("{}.mp4", rung.rung.name);
            let made = probe_file(path, probe_timeout).await?;
            let bytes = made.size_bytes;
            outputs.push(Output::Mp4(Mp4Output {
                key: join_key(prefix, &rel),
                rung: rung.rung.name.clone(),
                width: made.width.unwrap_or(rung.rung.width),
                height: made.height.unwrap_or(rung.rung.height),
                duration_s: made.duration_s,
                bitrate: made.bitrate.unwrap_or(0),
                video_codec: made.video_codec.clone().unwrap_or_else(|| "h264".into()),
                audio_codec: made.audio_codec.clone(),
                codecs: codecs_for(&video_codec),
                bytes,
            }));
            media.push(ProducedFile {
                rel_key: rel,
                path: path.clone(),
                kind: FileKind::Media,
            });
        }
        if let Some(files) = &rung.hls {
            let segments: Vec<hls::Segment> = files
                .segments
                .iter()
                .map(|s| hls::Segment {
                    uri: s.file_name.clone(),
                    duration_s: s.duration_s,
                    bytes: s.bytes,
                })
                .collect();
            for s in &files.segments {
                media.push(ProducedFile {
                    rel_key: format!("hls/{}/{}", rung.rung.name, s.file_name),
                    path: files.dir.join(&s.file_name),
                    kind: FileKind::Media,
                });
            }
            let playlist_path = files.dir.join("index.m3u8");
            std::fs::write(&playlist_path, hls::media_playlist(&segments, dateranges))
                .map_err(|e| MediaError::Io(e.to_string()))?;
            let rel = format!("hls/{}/index.m3u8", rung.rung.name);
            playlists.push(ProducedFile {
                rel_key: rel.clone(),
                path: playlist_path,
                kind: FileKind::Playlist,
            });
            let (peak, average) = hls::bandwidth(&segments);
            let codecs = codecs_for(&video_codec);
            variants.push(hls::Variant {
                uri: format!("{}/index.m3u8", rung.rung.name),
                bandwidth: peak,
                average_bandwidth: average,
                codecs: codecs.clone(),
                width: rung.rung.width,
                height: rung.rung.height,
                frame_rate: fps,
            });
            hls_variant_entries.push(HlsVariant {
                rung: rung.rung.name.clone(),
                key: join_key(prefix, &rel),
                width: rung.rung.width,
                height: rung.rung.height,
                bandwidth: peak,
                average_bandwidth: average,
                codecs,
                segments: segments.len(),
            });
            hls_bytes += segments.iter().map(|s| s.bytes).sum::<u64>();
            hls_duration = hls_duration.max(segments.iter().map(|s| s.duration_s).sum());
        }
    }
    if !variants.is_empty() {
        let master_path = out_dir.join("hls").join("master.m3u8");
        std::fs::write(&master_path, hls::master_playlist(&variants))
            .map_err(|e| MediaError::Io(e.to_string()))?;
        playlists.push(ProducedFile {
            rel_key: "hls/master.m3u8".into(),
            path: master_path,
            kind: FileKind::Playlist,
        });
        outputs.push(Output::Hls(HlsOutput {
            key: join_key(prefix, "hls/master.m3u8"),
            duration_s: (hls_duration * 1000.0).round() / 1000.0,
            bytes: hls_bytes,
            video_codec: "h264".into(),
            audio_codec,
            variants: hls_variant_entries,
        }));
    }
    media.extend(playlists);
    Ok(Some(Produced {
        files: media,
        outputs,
        skipped: plan.skipped.clone(),
    }))
}
