//! Probing an input: what container, streams and codecs it holds, how long it is,
//! and how it must be turned for display.
//!
//! All before any decoding: typefind on the first bytes (refusing anything
//! outside [`super::ALLOWED_CONTAINERS`], which also catches playlists and text
//! uploaded as media); for MP4/MOV, the box walk of [`super::isobmff`]; GStreamer's
//! Discoverer on the local file; and one pass over the first packets
//! ([`super::packets`]) for what the Discoverer's caps get wrong: the frame rate
//! comes from the frames' timestamps ([`super::timing`]) and the display
//! geometry from the rules of [`super::geometry`]. It all blocks, so
//! [`probe_file`] runs on tokio's blocking pool.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use gstreamer_pbutils::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::geometry::{self, Turn};
use super::isobmff::{self, VideoTrack};
use super::packets::{self, Packets};
use super::timing;
use super::{ALLOWED_CONTAINERS, MediaError, init};

/// The packet pass gets at most this long (it reads a few hundred frames).
const PACKETS_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes read for typefinding. MP4/MOV and Matroska announce themselves in the first
/// few hundred bytes; a generous head also lets MPEG-TS and text be recognised.
const TYPEFIND_HEAD_BYTES: usize = 256 * 1024;

/// What a probe records about an input (`result.probe` of a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Probe {
    /// `mp4`, `mov`, `3gp`, `m4a`, `webm`, `matroska` or `mpegts`.
    pub container: String,
    /// Typefind caps name, e.g. `video/quicktime`.
    pub mime: String,
    pub size_bytes: u64,
    pub duration_s: f64,
    /// Width and height of the first video stream's pictures, before the pixel
    /// aspect and rotation.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The size players show: pixel aspect applied, then rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_height: Option<u32>,
    /// An MP4 track header's presentation size, reported only when it disagrees
    /// with the pictures and their pixel aspect (players ignore it, and so does
    /// the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presentation_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presentation_height: Option<u32>,
    /// Degrees to turn the picture clockwise for display (0, 90, 180, 270).
    pub rotation: u32,
    /// After turning, the picture is also mirrored left to right for display.
    pub flipped: bool,
    /// Nominal frame rate of the first video stream, measured from its frames'
    /// timestamps (the median frame duration, snapped to a standard rate within
    /// 1 %); the container's claim only when there is nothing to measure.
    pub fps: Option<f64>,
    /// Frames per second on average over the measured frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_fps: Option<f64>,
    /// The frame rate the container declared (GStreamer's caps), right or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_fps: Option<f64>,
    /// Frame durations vary: `fps` is the rate most frames run at.
    #[serde(default)]
    pub variable_frame_rate: bool,
    /// The first picture is shown this long after the file's start (an MP4
    /// track without an edit list whose pictures are reordered: players show
    /// the first one at its composition time, and so does the output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_start_s: Option<f64>,
    /// When the first video stream's last picture ends, in seconds on the
    /// input's presentation timeline (edit lists applied; an MPEG-TS timeline
    /// starts at its first picture), from its packets' durations: decoders
    /// forget them, and the transcode holds the last picture until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_end_s: Option<f64>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    /// Overall bit rate in bits per second (size and duration).
    pub bitrate: Option<u64>,
    pub streams: Vec<StreamProbe>,
    /// A video track the file has but GStreamer does not read: qtdemux takes a
    /// track under 20 % of the movie's duration for a preview picture and
    /// skips it. Reported so that a refusal can say what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread_video: Option<UnreadVideo>,
}

/// A video track the demuxer skips, as the MP4 sample tables describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnreadVideo {
    /// The sample entry's code (`avc1`, `hvc1`, ...).
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frames: u64,
    pub duration_s: f64,
    /// Frames over the track's duration.
    pub fps: f64,
}

impl UnreadVideo {
    fn of(track: &VideoTrack) -> Option<UnreadVideo> {
        if !track.skipped_by_demuxer {
            return None;
        }
        let (frames, duration_s) = (track.frames?, track.media_duration_s?);
        if duration_s <= 0.0 {
            return None;
        }
        Some(UnreadVideo {
            codec: track.sample_entry.clone(),
            width: track.coded_size.map(|s| s.0),
            height: track.coded_size.map(|s| s.1),
            frames,
            duration_s: round3(duration_s),
            fps: round3(frames as f64 / duration_s),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamProbe {
    /// `video`, `audio`, `subtitle` or `other`.
    pub kind: String,
    pub codec: Option<String>,
    /// The stream the node transcodes: the first video and the first audio
    /// stream, as players pick by default. Other tracks (a second angle or
    /// language, timecode, metadata, subtitles) are listed but not used.
    #[serde(default)]
    pub selected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Pixel aspect ratio as `n:d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pixel_aspect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colorimetry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u32>,
}

impl Probe {
    /// How long there are pictures: what stills, posters and storyboards are
    /// taken from. The whole duration, or less when the video ends before the
    /// audio (its last picture's end, `video_end_s`).
    pub fn pictures_s(&self) -> f64 {
        self.video_end_s
            .filter(|e| *e > 0.0)
            .map_or(self.duration_s, |e| e.min(self.duration_s))
    }
}

/// Probes a local file without blocking the async runtime.
pub async fn probe_file(path: &Path, timeout: Duration) -> Result<Probe, MediaError> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || probe_blocking(&path, timeout))
        .await
        .map_err(|e| MediaError::Internal(format!("probe task: {e}")))?
}

/// Typefinds the head of a file; refuses anything outside the container allow-list.
pub fn sniff_container(path: &Path) -> Result<gst::Caps, MediaError> {
    init()?;
    let mut head = Vec::with_capacity(TYPEFIND_HEAD_BYTES);
    std::fs::File::open(path)
        .and_then(|f| f.take(TYPEFIND_HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(|e| MediaError::Internal(format!("reading input: {e}")))?;
    if head.is_empty() {
        return Err(MediaError::NotMedia);
    }
    let (caps, probability) =
        gstreamer_base::functions::type_find_helper_for_data(None::<&gst::Object>, &head)
            .map_err(|_| MediaError::NotMedia)?;
    let name = caps
        .structure(0)
        .map(|s| s.name().to_string())
        .unwrap_or_default();
    if ALLOWED_CONTAINERS.contains(&name.as_str()) {
        if probability < gst::TypeFindProbability::Possible {
            return Err(MediaError::NotMedia);
        }
        return Ok(caps);
    }
    if name.starts_with("text/") || name == "application/xml" || name.is_empty() {
        Err(MediaError::NotMedia)
    } else {
        Err(MediaError::UnsupportedContainer(name))
    }
}

fn probe_blocking(path: &Path, timeout: Duration) -> Result<Probe, MediaError> {
    let size_bytes = std::fs::metadata(path)
        .map_err(|e| MediaError::Internal(format!("reading input: {e}")))?
        .len();
    let container_caps = sniff_container(path)?;
    let is_isobmff = container_caps.structure(0).is_some_and(|s| {
        matches!(
            s.name().as_str(),
            "video/quicktime" | "audio/x-m4a" | "application/x-3gp"
        )
    });
    let track = if is_isobmff {
        isobmff::inspect(path, size_bytes)?
    } else {
        None
    };
    let absolute =
        std::path::absolute(path).map_err(|e| MediaError::Internal(format!("input path: {e}")))?;
    let uri = gst::glib::filename_to_uri(&absolute, None)
        .map_err(|e| MediaError::Internal(format!("input path: {e}")))?;
    let timeout_ms = timeout.as_millis() as u64;
    let discoverer = pbutils::Discoverer::new(gst::ClockTime::from_mseconds(timeout_ms))
        .map_err(|e| MediaError::Internal(e.to_string()))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| classify_error(&e))?;
    match info.result() {
        pbutils::DiscovererResult::Ok => {}
        pbutils::DiscovererResult::Timeout => return Err(MediaError::Timeout(timeout_ms)),
        pbutils::DiscovererResult::MissingPlugins => {
            // Phones add metadata tracks nobody decodes; only missing audio and
            // video decoders matter.
            let missing: Vec<String> = info
                .missing_elements_installer_details()
                .iter()
                .filter_map(|d| missing_media_decoder(d))
                .collect();
            if !missing.is_empty() {
                return Err(MediaError::UnsupportedCodec(missing.join(", ")));
            }
        }
        other => return Err(MediaError::Malformed(format!("{other:?}"))),
    }
    let has_video = !info.video_streams().is_empty();
    // What the packets say refines the Discoverer's caps; without them (an error
    // in the first frames) the probe stands on the caps alone.
    let packets = has_video
        .then(|| packets::read(path, timeout.min(PACKETS_TIMEOUT)).ok())
        .flatten();
    let facts = Facts {
        isobmff: is_isobmff,
        track,
        packets,
    };
    build_probe(&info, &container_caps, size_bytes, &facts)
}

/// What the probe knows besides the Discoverer's caps.
struct Facts {
    isobmff: bool,
    track: Option<VideoTrack>,
    packets: Option<Packets>,
}

/// The first video stream's geometry and timing, by the rules of
/// [`geometry`] and [`timing`].
struct VideoFacts {
    pixel_aspect: (u32, u32),
    turn: Option<Turn>,
    timing: Option<timing::FrameTiming>,
}

fn to_u32_par((n, d): (i32, i32)) -> Option<(u32, u32)> {
    Some((u32::try_from(n).ok()?, u32::try_from(d).ok()?))
}

impl Facts {
    fn first_video(&self, caps_par: Option<(u32, u32)>) -> VideoFacts {
        let packets = self.packets.as_ref();
        // MP4's container claim is `pasp` alone: qtdemux's caps may carry one it
        // made up from the track header.
        let container = if self.isobmff {
            self.track.as_ref().and_then(|t| t.pixel_aspect)
        } else {
            packets.and_then(|p| p.container_par).and_then(to_u32_par)
        };
        let codec = match packets {
            Some(p) => p.codec_par.and_then(to_u32_par),
            None if self.isobmff => None,
            None => caps_par,
        };
        VideoFacts {
            pixel_aspect: geometry::pixel_aspect(container, codec),
            turn: self
                .track
                .as_ref()
                .and_then(|t| t.matrix)
                .and_then(geometry::turn_of_matrix),
            timing: packets.and_then(|p| timing::measure(&p.video_pts_ns)),
        }
    }
}

impl Facts {
    /// qtdemux starts an MP4 track that has no edit list at its first picture
    /// (its segment's zero moves there); FFmpeg, Chromium and Safari start it at
    /// zero and show that picture at its composition time, after the audio
    /// began. The transcode does as they do.
    fn video_start_s(&self) -> Option<f64> {
        self.track.as_ref().filter(|t| !t.edit_list)?;
        let shift = self.packets.as_ref()?.video_zero_shift_ns as f64 / 1e9;
        (shift > 0.0005 && shift < 10.0).then(|| round3(shift))
    }

    /// Where the video's last picture ends on the presentation timeline, when
    /// the packet pass read the whole input.
    fn video_end_s(&self, timing: Option<timing::FrameTiming>) -> Option<f64> {
        let p = self.packets.as_ref().filter(|p| p.complete)?;
        let frame_ns = timing.map_or(0, |t| (1e9 / t.fps) as u64);
        Some(round3(p.video?.end_with(frame_ns) as f64 / 1e9))
    }

    /// From the first packet shown to the end of the last one, when the packet
    /// pass read the whole input: what players play, where headers disagree
    /// (fragmented MP4 without a total, WebM from MediaRecorder, MPEG-TS).
    fn played_duration_s(&self, timing: Option<timing::FrameTiming>) -> Option<f64> {
        let p = self.packets.as_ref().filter(|p| p.complete)?;
        let frame_ns = timing.map_or(0, |t| (1e9 / t.fps) as u64);
        let video = p.video.map(|v| (v.start_ns, v.end_with(frame_ns)));
        let audio = p.audio.map(|a| (a.start_ns, a.end_ns));
        let (start, end) = [video, audio]
            .into_iter()
            .flatten()
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))?;
        (end > start).then(|| (end - start) as f64 / 1e9)
    }
}

/// A declared rate worth reporting as the rate when nothing could be measured.
const MAX_PLAUSIBLE_DECLARED_FPS: f64 = 1000.0;

/// The caps of a missing audio or video decoder, from an installer detail string
/// (`gstreamer|1.0|app|description|decoder-video/x-h265, ...`).
fn missing_media_decoder(detail: &str) -> Option<String> {
    let caps = detail.rsplit('|').next()?.strip_prefix("decoder-")?;
    (caps.starts_with("video/") || caps.starts_with("audio/")).then(|| caps.to_string())
}

fn classify_error(err: &gst::glib::Error) -> MediaError {
    if err.kind::<gst::CoreError>() == Some(gst::CoreError::MissingPlugin) {
        return MediaError::UnsupportedCodec(err.message().to_string());
    }
    if let Some(stream) = err.kind::<gst::StreamError>() {
        return match stream {
            gst::StreamError::CodecNotFound | gst::StreamError::WrongType => {
                MediaError::UnsupportedCodec(err.message().to_string())
            }
            _ => MediaError::Malformed(err.message().to_string()),
        };
    }
    MediaError::Malformed(err.message().to_string())
}

fn build_probe(
    info: &pbutils::DiscovererInfo,
    container_caps: &gst::Caps,
    size_bytes: u64,
    facts: &Facts,
) -> Result<Probe, MediaError> {
    let (mime, container) = container_name(container_caps);
    let duration_s = info
        .duration()
        .map(|d| d.nseconds() as f64 / 1e9)
        .unwrap_or(0.0);
    let mut streams = Vec::new();
    let mut turn = Turn {
        rotation: 0,
        flipped: false,
    };
    let mut first: Option<VideoFacts> = None;
    let mut declared_fps = None;

    for (index, video) in info.video_streams().iter().enumerate() {
        let caps = video.caps();
        let structure = caps
            .as_ref()
            .and_then(|c| c.structure(0).map(|s| s.to_owned()));
        let mut fps = fraction_to_f64(video.framerate());
        let par = video.par();
        let mut pixel_aspect = u32::try_from(par.numer())
            .ok()
            .zip(u32::try_from(par.denom()).ok())
            .and_then(geometry::reduced);
        if index == 0 {
            let tagged = video
                .tags()
                .and_then(|t| image_orientation(&t))
                .or_else(|| {
                    info.stream_info()
                        .and_then(|s| s.tags())
                        .and_then(|t| image_orientation(&t))
                })
                .map(|(rotation, flipped)| Turn { rotation, flipped });
            let v = facts.first_video(pixel_aspect);
            if let Some(t) = v.turn.or(tagged) {
                turn = t;
            }
            declared_fps = fps;
            fps = match v.timing {
                Some(t) => Some(t.fps),
                None => fps.filter(|f| *f <= MAX_PLAUSIBLE_DECLARED_FPS),
            };
            pixel_aspect = Some(v.pixel_aspect);
            first = Some(v);
        }
        streams.push(StreamProbe {
            kind: if video.is_image() { "image" } else { "video" }.into(),
            selected: false,
            codec: caps.as_ref().map(codec_name),
            width: Some(video.width()),
            height: Some(video.height()),
            fps,
            pixel_aspect: pixel_aspect.map(|(n, d)| format!("{n}:{d}")),
            bit_depth: structure
                .as_ref()
                .and_then(|s| s.get::<u32>("bit-depth-luma").ok())
                .or_else(|| (video.depth() > 0 && video.depth() <= 16).then(|| video.depth())),
            colorimetry: structure
                .as_ref()
                .and_then(|s| s.get::<String>("colorimetry").ok()),
            channels: None,
            sample_rate: None,
            bitrate: (video.bitrate() > 0).then(|| video.bitrate()),
        });
    }
    for audio in info.audio_streams() {
        streams.push(StreamProbe {
            kind: "audio".into(),
            selected: false,
            codec: audio.caps().as_ref().map(codec_name),
            width: None,
            height: None,
            fps: None,
            pixel_aspect: None,
            bit_depth: None,
            colorimetry: None,
            channels: Some(audio.channels()),
            sample_rate: Some(audio.sample_rate()),
            bitrate: (audio.bitrate() > 0).then(|| audio.bitrate()),
        });
    }
    for sub in info.subtitle_streams() {
        streams.push(StreamProbe {
            kind: "subtitle".into(),
            selected: false,
            codec: sub.caps().as_ref().map(codec_name),
            width: None,
            height: None,
            fps: None,
            pixel_aspect: None,
            bit_depth: None,
            colorimetry: None,
            channels: None,
            sample_rate: None,
            bitrate: None,
        });
    }
    for kind in ["video", "audio"] {
        if let Some(first) = streams.iter_mut().find(|s| s.kind == kind) {
            first.selected = true;
        }
    }
    if streams.is_empty() {
        return Err(MediaError::Malformed("no audio or video streams".into()));
    }

    let first_video = streams.iter().find(|s| s.kind == "video");
    let first_audio = streams.iter().find(|s| s.kind == "audio");
    let timing = first.as_ref().and_then(|v| v.timing);
    let duration_s = facts.played_duration_s(timing).unwrap_or(duration_s);
    let shown = first_video
        .zip(first.as_ref())
        .and_then(|(s, v)| Some((s.width?, s.height?, v.pixel_aspect)));
    let display = shown.map(|(w, h, par)| geometry::display_size(w, h, par, turn.rotation));
    // The track header's size, when it is not what the pictures show.
    let presentation = facts
        .track
        .as_ref()
        .and_then(|t| t.presentation_size)
        .zip(shown)
        .filter(|((pw, ph), (w, h, par))| {
            let (sw, sh) = geometry::display_size(*w, *h, *par, 0);
            pw.abs_diff(sw) > 2 || ph.abs_diff(sh) > 2
        })
        .map(|(p, _)| p);
    Ok(Probe {
        container,
        mime,
        size_bytes,
        duration_s: round3(duration_s),
        width: first_video.and_then(|v| v.width),
        height: first_video.and_then(|v| v.height),
        display_width: display.map(|d| d.0),
        display_height: display.map(|d| d.1),
        presentation_width: presentation.map(|p| p.0),
        presentation_height: presentation.map(|p| p.1),
        rotation: turn.rotation,
        flipped: turn.flipped,
        fps: first_video.and_then(|v| v.fps),
        mean_fps: timing.map(|t| t.mean_fps),
        declared_fps,
        variable_frame_rate: timing.is_some_and(|t| t.variable),
        video_start_s: facts.video_start_s(),
        video_end_s: facts.video_end_s(timing),
        video_codec: first_video.and_then(|v| v.codec.clone()),
        audio_codec: first_audio.and_then(|a| a.codec.clone()),
        bitrate: (duration_s > 0.0).then(|| (size_bytes as f64 * 8.0 / duration_s) as u64),
        unread_video: first_video
            .is_none()
            .then(|| facts.track.as_ref().and_then(UnreadVideo::of))
            .flatten(),
        streams,
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn fraction_to_f64(f: gst::Fraction) -> Option<f64> {
    (f.numer() > 0 && f.denom() > 0).then(|| round3(f.numer() as f64 / f.denom() as f64))
}

fn container_name(caps: &gst::Caps) -> (String, String) {
    let Some(s) = caps.structure(0) else {
        return (String::new(), "unknown".into());
    };
    let mime = s.name().to_string();
    let container = match mime.as_str() {
        "video/quicktime" => match s.get::<String>("variant").ok().as_deref() {
            Some("apple") | None => "mov",
            Some("3gpp") | Some("3g2") => "3gp",
            Some(_) => "mp4",
        },
        "audio/x-m4a" => "m4a",
        "application/x-3gp" => "3gp",
        "video/mpegts" => "mpegts",
        "video/webm" | "audio/webm" => "webm",
        "video/x-matroska" | "audio/x-matroska" => "matroska",
        _ => "unknown",
    };
    (mime, container.to_string())
}

/// A short, ffprobe-like codec name from stream caps.
pub fn codec_name(caps: &gst::Caps) -> String {
    let Some(s) = caps.structure(0) else {
        return "unknown".into();
    };
    let name = s.name().as_str();
    let known = match name {
        "video/x-h264" => "h264",
        "video/x-h265" => "hevc",
        "video/x-vp8" => "vp8",
        "video/x-vp9" => "vp9",
        "video/x-av1" => "av1",
        "video/x-prores" => "prores",
        "video/x-theora" => "theora",
        "video/x-divx" | "video/x-xvid" => "mpeg4",
        "video/mpeg" => match s.get::<i32>("mpegversion").unwrap_or(0) {
            4 => "mpeg4",
            2 => "mpeg2video",
            _ => "mpeg1video",
        },
        "image/jpeg" => "mjpeg",
        "audio/mpeg" => match (
            s.get::<i32>("mpegversion").unwrap_or(0),
            s.get::<i32>("layer").unwrap_or(0),
        ) {
            (2 | 4, _) => "aac",
            (1, 3) => "mp3",
            (1, 2) => "mp2",
            _ => "mpeg-audio",
        },
        "audio/x-opus" => "opus",
        "audio/x-vorbis" => "vorbis",
        "audio/x-flac" => "flac",
        "audio/x-ac3" => "ac3",
        "audio/x-eac3" => "eac3",
        "audio/x-alac" => "alac",
        "audio/x-raw" => "pcm",
        "audio/x-alaw" => "pcm_alaw",
        "audio/x-mulaw" => "pcm_mulaw",
        _ => "",
    };
    if known.is_empty() {
        name.rsplit('/')
            .next()
            .unwrap_or(name)
            .trim_start_matches("x-")
            .to_string()
    } else {
        known.to_string()
    }
}

/// Degrees clockwise and mirroring from an `image-orientation` tag.
fn image_orientation(tags: &gst::TagList) -> Option<(u32, bool)> {
    let value = tags.get::<gst::tags::ImageOrientation>()?;
    let value = value.get();
    let (flip, rest) = match value.strip_prefix("flip-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let degrees = rest.strip_prefix("rotate-")?.parse::<u32>().ok()?;
    matches!(degrees, 0 | 90 | 180 | 270).then_some((degrees, flip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(s: &str) -> gst::Caps {
        init().unwrap();
        s.parse().unwrap()
    }

    #[test]
    fn codec_names_follow_ffprobe() {
        assert_eq!(codec_name(&caps("video/x-h264, stream-format=avc")), "h264");
        assert_eq!(codec_name(&caps("video/x-h265")), "hevc");
        assert_eq!(codec_name(&caps("audio/mpeg, mpegversion=4")), "aac");
        assert_eq!(
            codec_name(&caps("audio/mpeg, mpegversion=1, layer=3")),
            "mp3"
        );
        assert_eq!(codec_name(&caps("audio/x-raw, format=S16LE")), "pcm");
        assert_eq!(codec_name(&caps("video/x-something-new")), "something-new");
    }

    #[test]
    fn only_missing_audio_and_video_decoders_matter() {
        assert_eq!(
            missing_media_decoder("gstreamer|1.0|app|meta decoder|decoder-meta/x-gst-fourcc-mebx"),
            None
        );
        assert_eq!(
            missing_media_decoder("gstreamer|1.0|app|H.266 decoder|decoder-video/x-h266"),
            Some("video/x-h266".into())
        );
    }

    #[test]
    fn container_names() {
        assert_eq!(
            container_name(&caps("video/quicktime, variant=iso")).1,
            "mp4"
        );
        assert_eq!(
            container_name(&caps("video/quicktime, variant=apple")).1,
            "mov"
        );
        assert_eq!(container_name(&caps("video/webm")).1, "webm");
    }

    #[test]
    fn orientation_tags() {
        init().unwrap();
        let mut tags = gst::TagList::new();
        tags.make_mut()
            .add::<gst::tags::ImageOrientation>(&"rotate-90", gst::TagMergeMode::Replace);
        assert_eq!(image_orientation(&tags), Some((90, false)));
        let mut tags = gst::TagList::new();
        tags.make_mut()
            .add::<gst::tags::ImageOrientation>(&"flip-rotate-180", gst::TagMergeMode::Replace);
        assert_eq!(image_orientation(&tags), Some((180, true)));
    }

    #[test]
    fn text_and_playlists_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.mp4");
        std::fs::write(&text, "hello, this is not a video\n".repeat(100)).unwrap();
        assert!(matches!(sniff_container(&text), Err(MediaError::NotMedia)));

        let playlist = dir.path().join("list.mp4");
        std::fs::write(
            &playlist,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nhttp://example.com/a.ts\n#EXT-X-ENDLIST\n",
        )
        .unwrap();
        let err = sniff_container(&playlist).unwrap_err();
        assert!(
            matches!(err, MediaError::UnsupportedContainer(ref m) if m == "application/x-hls"),
            "{err:?}"
        );

        let empty = dir.path().join("empty.mp4");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(sniff_container(&empty), Err(MediaError::NotMedia)));
    }
}
