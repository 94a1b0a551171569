//! The transcode pipeline: one decode, a `tee` to every rung, every rung encoded in
//! parallel (each branch behind its own queue, so its own streaming thread), audio
//! encoded once and teed to every muxer.
//!
//! ```text
//! filesrc ! decodebin ─┬─ video: queue ! videorate ! [videoconvert → 8-bit BT.709] ! videoflip ! tee
//!                      │     └─ per rung: queue ! videoscale ! videoconvert ! x264enc ! tee
//!                      │            ├─ queue ! h264parse ! mp4mux ! filesink          (mp4)
//!                      │            └─ queue ! h264parse ! splitmuxsink(mpegtsmux)    (hls)
//!                      └─ audio: queue ! audioconvert ! audioresample ! audiorate ! avenc_aac ! aacparse ! tee
//!                                   └─ per output: queue ! (the muxer's audio pad)
//! ```
//!
//! Stills asked in the same job tap the video tee's input (see
//! `thumbnail::tap`): no second decode. Shoppable tags are burned in on each
//! rung's encoder input, at the rung's own size (see `overlay::blend`).
//!
//! Privacy: every tag event leaving the decoder is dropped, so nothing the input
//! carried (location, device make and model, creation time) reaches a muxer; the
//! rotation it carried is applied explicitly from the probe instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio_util::sync::CancellationToken;

use super::plan::{ColorPlan, Format, Plan, RungPlan};
use crate::media::run::{Finished, ProgressFn, run_to_eos};
use crate::media::{MediaError, timeline};

/// Depth of queues carrying compressed data to the muxers: enough to absorb the
/// encoder's lookahead and B-frame delay (about 1.5 s at 30 fps) and the audio
/// arriving ahead of it, so no muxer input starves another.
const QUEUE_TIME: gst::ClockTime = gst::ClockTime::from_seconds(10);
/// Raw frames queued before a scaler/encoder: a few decouple the threads; more only
/// cost memory (a 4K frame is 12 MB), since x264 keeps its own lookahead.
const RAW_QUEUE_FRAMES: u32 = 4;
/// x264's VBV buffer: 2 s of the target bit rate keeps segments near the rate the
/// playlist announces without starving quality at scene changes.
pub(crate) const VBV_BUFFER_MS: u32 = 2000;

/// Longest a last picture is held at the end (see `VideoPlan::end_ns`).
const MAX_LAST_FRAME_NS: u64 = 60_000_000_000;

/// How far every stream entering mp4mux is moved (see [`timeline::shift`]).
const MP4_SHIFT_NS: u64 = 1_000_000_000;

/// What one rung produced in the work dir.
#[derive(Debug, Clone)]
pub struct RungFiles {
    pub rung: RungPlan,
    pub mp4: Option<PathBuf>,
    pub hls: Option<HlsFiles>,
    /// RFC 6381 codec string of the video (`avc1.64001f`).
    pub video_codec: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HlsFiles {
    pub dir: PathBuf,
    pub segments: Vec<SegmentFile>,
}

#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub file_name: String,
    pub duration_s: f64,
    pub bytes: u64,
}

fn make(factory: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| MediaError::Internal(format!("GStreamer element `{factory}` is missing")))
}

fn raw_queue() -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make("queue")
        .property("max-size-buffers", RAW_QUEUE_FRAMES)
        .property("max-size-bytes", 0u32)
        .property("max-size-time", 0u64)
        .build()
        .map_err(|_| MediaError::Internal("GStreamer element `queue` is missing".into()))
}

fn queue() -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make("queue")
        .property("max-size-buffers", 0u32)
        .property("max-size-bytes", 0u32)
        .property("max-size-time", QUEUE_TIME.nseconds())
        .build()
        .map_err(|_| MediaError::Internal("GStreamer element `queue` is missing".into()))
}

fn capsfilter(caps: gst::Caps) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|_| MediaError::Internal("GStreamer element `capsfilter` is missing".into()))
}

fn link_err(what: &str) -> impl Fn(gst::glib::BoolError) -> MediaError + '_ {
    move |e| MediaError::Internal(format!("linking {what}: {e}"))
}

fn link_pads(src: &gst::Pad, sink: &gst::Pad, what: &str) -> Result<(), MediaError> {
    src.link(sink)
        .map(|_| ())
        .map_err(|e| MediaError::Internal(format!("linking {what}: {e:?}")))
}

fn request(element: &gst::Element, template: &str) -> Result<gst::Pad, MediaError> {
    element
        .request_pad_simple(template)
        .ok_or_else(|| MediaError::Internal(format!("{} has no `{template}` pad", element.name())))
}

fn static_pad(element: &gst::Element, name: &str) -> Result<gst::Pad, MediaError> {
    element
        .static_pad(name)
        .ok_or_else(|| MediaError::Internal(format!("{} has no `{name}` pad", element.name())))
}

/// Adds `elements` to the pipeline and links them in a chain.
fn chain(pipeline: &gst::Pipeline, elements: &[&gst::Element]) -> Result<(), MediaError> {
    pipeline
        .add_many(elements.iter().copied())
        .map_err(link_err("adding elements"))?;
    gst::Element::link_many(elements.iter().copied()).map_err(link_err("a branch"))
}

/// Swallows tag events: input metadata never reaches an output.
fn drop_tags(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && event.type_() == gst::EventType::Tag
        {
            // `Handled`, not `Drop`: a dropped sticky event stays pending and would
            // be pushed again before every buffer.
            info.data.take();
            return gst::PadProbeReturn::Handled;
        }
        gst::PadProbeReturn::Ok
    });
}

/// Records the RFC 6381 codec string of an `avc` stream from its caps.
fn capture_codec(pad: &gst::Pad, slot: Arc<Mutex<Option<String>>>) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && let gst::EventView::Caps(caps) = event.view()
            && let Some(codec) = avc_codec_string(caps.caps())
        {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(codec);
        }
        gst::PadProbeReturn::Ok
    });
}

/// `avc1.PPCCLL` from the `codec_data` (avcC) of H.264 caps.
pub fn avc_codec_string(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    let data = s.get::<gst::Buffer>("codec_data").ok()?;
    let map = data.map_readable().ok()?;
    let bytes = map.as_slice();
    (bytes.len() >= 4 && bytes[0] == 1)
        .then(|| format!("avc1.{:02x}{:02x}{:02x}", bytes[1], bytes[2], bytes[3]))
}

struct Built {
    pipeline: gst::Pipeline,
    rungs: Vec<RungFiles>,
    codecs: Vec<Arc<Mutex<Option<String>>>>,
    /// Decoded frames that reached the encoders.
    frames: Arc<AtomicU64>,
}

/// Counts the buffers that pass `pad`.
fn count_buffers(pad: &gst::Pad) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        counter.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    count
}

/// Called with the video tee's sink pad (upright, 8-bit I420, constant rate),
/// for whoever wants the decoded frames too (stills). Whatever it installs there
/// must let every buffer through.
pub type VideoTap = Box<dyn FnOnce(&gst::Pad) + Send>;

/// Called once per rung with the rung and its encoder's input pad (scaled,
/// 8-bit I420), for whoever draws into the frames (shoppable tags). Whatever it
/// installs there must let every buffer through.
pub type RungHook = Box<dyn Fn(&RungPlan, &gst::Pad) + Send>;

/// What a job adds to a plain transcode.
#[derive(Default)]
pub struct Hooks {
    pub tap: Option<VideoTap>,
    pub rung: Option<RungHook>,
    /// Convert every source to BT.709 limited range, not only HDR and wide-gamut
    /// ones (BT.601 and full-range sources otherwise keep their colours): for
    /// hooks that draw in known colours.
    pub bt709: bool,
}

fn build(input: &Path, plan: &Plan, out_dir: &Path, hooks: Hooks) -> Result<Built, MediaError> {
    let Hooks {
        tap,
        rung: rung_hook,
        bt709,
    } = hooks;
    let pipeline = gst::Pipeline::new();
    let decode = make("decodebin")?;
    pipeline.add(&decode).map_err(link_err("source"))?;
    crate::media::source::add(&pipeline, input, &decode)?;

    // Video: one constant-rate, upright, 8-bit stream, teed to every rung.
    let v = &plan.video;
    let v_queue = raw_queue()?;
    let rate = make("videorate")?;
    rate.set_property("skip-to-first", true);
    // Hold the last picture until the media's end (the segment's stop), however
    // long: GStreamer's default stops after one second.
    rate.set_property(
        "max-closing-segment-duplication-duration",
        MAX_LAST_FRAME_NS,
    );
    let rate_caps = capsfilter(
        gst::Caps::builder("video/x-raw")
            .field("framerate", gst::Fraction::new(v.fps_n, v.fps_d))
            .build(),
    )?;
    let flip = make("videoflip")?;
    flip.set_property_from_str("method", v.orientation.videoflip_method());
    let v_tee = make("tee")?;
    // Everything after this point works on 8-bit I420 (a no-op for most decoders'
    // output; RGB, 4:4:4 and 10-bit sources are converted once, here).
    let convert = make("videoconvert")?;
    let mut i420 = gst::Caps::builder("video/x-raw").field("format", "I420");
    if v.color != ColorPlan::Passthrough || bt709 {
        // To BT.709: matrix and primaries converted; the transfer function too
        // for PQ (see `ColorPlan`).
        if v.color == ColorPlan::ConvertPq {
            convert.set_property_from_str("gamma-mode", "remap");
        }
        convert.set_property_from_str("primaries-mode", "fast");
        i420 = i420.field("colorimetry", "bt709");
    }
    let mut video_chain = vec![
        v_queue.clone(),
        rate,
        rate_caps,
        convert,
        capsfilter(i420.build())?,
    ];
    video_chain.push(flip);
    video_chain.push(v_tee.clone());
    chain(&pipeline, &video_chain.iter().collect::<Vec<_>>())?;
    let frames = count_buffers(&static_pad(&v_tee, "sink")?);
    if let Some(tap) = tap {
        // On the tee's input: no extra branch, so nothing more to preroll (a
        // prerolling sink branch would hold the tee before x264's lookahead
        // filled and stall the pipeline).
        tap(&static_pad(&v_tee, "sink")?);
    }

    // Audio: encoded once.
    let audio = match &plan.audio {
        Some(a) => {
            let a_queue = queue()?;
            let convert = make("audioconvert")?;
            crate::media::caps::position_unpositioned_channels(&static_pad(&convert, "sink")?);
            let resample = make("audioresample")?;
            // One sample after another: demuxers hand over audio with gaps and
            // overlaps (timestamp jitter in MPEG-TS, fragments that overlap), and
            // the encoder stamps what it gets, so the muxers would see time go
            // backwards. Gaps become silence and overlaps are dropped; jitter
            // under 40 ms is left alone. It starts at the first sample, so a
            // late audio start keeps its offset.
            let rate = gst::ElementFactory::make("audiorate")
                .property("tolerance", 40_000_000u64)
                .property("skip-to-first", true)
                .build()
                .map_err(|_| MediaError::Internal("audiorate is missing".into()))?;
            let caps = capsfilter(
                gst::Caps::builder("audio/x-raw")
                    .field("rate", a.sample_rate as i32)
                    .field("channels", a.channels as i32)
                    .build(),
            )?;
            let enc = gst::ElementFactory::make("avenc_aac")
                .property("bitrate", i32::try_from(a.bitrate).unwrap_or(128_000))
                .build()
                .map_err(|_| MediaError::Internal("avenc_aac is missing".into()))?;
            let parse = make("aacparse")?;
            let a_tee = make("tee")?;
            chain(
                &pipeline,
                &[
                    &a_queue, &convert, &resample, &rate, &caps, &enc, &parse, &a_tee,
                ],
            )?;
            Some((a_queue, a_tee))
        }
        None => None,
    };

    let mut rungs = Vec::new();
    let mut codecs = Vec::new();
    for rung in &v.rungs {
        let scale_queue = raw_queue()?;
        let scale = make("videoscale")?;
        let size = capsfilter(
            gst::Caps::builder("video/x-raw")
                .field("width", rung.width as i32)
                .field("height", rung.height as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        )?;
        let convert = make("videoconvert")?;
        // I420: otherwise x264 may pick 4:4:4 (High 4:4:4), which phones and
        // browsers cannot play.
        let i420 = capsfilter(
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        )?;
        let enc = gst::ElementFactory::make("x264enc")
            .property("bitrate", rung.video_kbps)
            .property("key-int-max", v.gop_frames)
            .property("vbv-buf-capacity", VBV_BUFFER_MS)
            .property("bframes", 3u32)
            // Keyframes only every GOP, never on scene cuts: the same frames are
            // keyframes in every rung, so segments align across the ladder.
            .property(
                "option-string",
                format!(
                    "scenecut=0:keyint-min={}:level={}",
                    v.gop_frames, rung.level
                ),
            )
            .build()
            .map_err(|_| MediaError::Internal("x264enc is missing".into()))?;
        enc.set_property_from_str("speed-preset", &v.x264_preset);
        let h264_caps = capsfilter(
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .field("profile", rung.profile.caps_name())
                .build(),
        )?;
        let e_tee = make("tee")?;
        chain(
            &pipeline,
            &[
                &scale_queue,
                &scale,
                &size,
                &convert,
                &i420,
                &enc,
                &h264_caps,
                &e_tee,
            ],
        )?;
        link_pads(
            &request(&v_tee, "src_%u")?,
            &static_pad(&scale_queue, "sink")?,
            "video tee",
        )?;
        if let Some(hook) = &rung_hook {
            hook(rung, &static_pad(&enc, "sink")?);
        }
        let codec = Arc::new(Mutex::new(None));
        capture_codec(&static_pad(&h264_caps, "src")?, codec.clone());
        codecs.push(codec);

        let mut files = RungFiles {
            rung: rung.clone(),
            mp4: None,
            hls: None,
            video_codec: None,
        };
        for format in &plan.formats {
            let q = queue()?;
            let parse = make("h264parse")?;
            pipeline
                .add_many([&q, &parse])
                .map_err(link_err("parser"))?;
            q.link(&parse).map_err(link_err("parser"))?;
            link_pads(
                &request(&e_tee, "src_%u")?,
                &static_pad(&q, "sink")?,
                "encoder tee",
            )?;
            let muxer = match format {
                Format::Mp4 => {
                    let path = out_dir.join(format!("{}.mp4", rung.name));
                    let mux = gst::ElementFactory::make("mp4mux")
                        .property("faststart", true)
                        .property(
                            "faststart-file",
                            out_dir
                                .join(format!(".{}.moov", rung.name))
                                .to_string_lossy()
                                .to_string(),
                        )
                        .build()
                        .map_err(|_| MediaError::Internal("mp4mux is missing".into()))?;
                    let sink = gst::ElementFactory::make("filesink")
                        .property("location", path.to_string_lossy().to_string())
                        .build()
                        .map_err(|_| MediaError::Internal("filesink is missing".into()))?;
                    pipeline.add_many([&mux, &sink]).map_err(link_err("mp4"))?;
                    mux.link(&sink).map_err(link_err("mp4"))?;
                    let video_in = request(&mux, "video_%u")?;
                    timeline::shift(&video_in, MP4_SHIFT_NS);
                    link_pads(&static_pad(&parse, "src")?, &video_in, "mp4")?;
                    files.mp4 = Some(path);
                    (mux, "audio_%u")
                }
                Format::Hls => {
                    let dir = out_dir.join("hls").join(&rung.name);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| MediaError::Io(format!("{}: {e}", dir.display())))?;
                    let ts = make("mpegtsmux")?;
                    let split = gst::ElementFactory::make("splitmuxsink")
                        .property("muxer", &ts)
                        .property(
                            "location",
                            dir.join("seg_%05d.ts").to_string_lossy().to_string(),
                        )
                        .property("max-size-time", (plan.segment_s * 1e9).round() as u64)
                        .property("max-size-bytes", 0u64)
                        .build()
                        .map_err(|_| MediaError::Internal("splitmuxsink is missing".into()))?;
                    pipeline.add(&split).map_err(link_err("hls"))?;
                    link_pads(
                        &static_pad(&parse, "src")?,
                        &request(&split, "video")?,
                        "hls",
                    )?;
                    files.hls = Some(HlsFiles {
                        dir,
                        segments: Vec::new(),
                    });
                    (split, "audio_%u")
                }
            };
            if let Some((_, a_tee)) = &audio {
                let aq = queue()?;
                pipeline.add(&aq).map_err(link_err("audio"))?;
                link_pads(
                    &request(a_tee, "src_%u")?,
                    &static_pad(&aq, "sink")?,
                    "audio tee",
                )?;
                let audio_in = request(&muxer.0, muxer.1)?;
                if *format == Format::Mp4 {
                    timeline::shift(&audio_in, MP4_SHIFT_NS);
                }
                link_pads(&static_pad(&aq, "src")?, &audio_in, "audio")?;
            }
        }
        rungs.push(files);
    }

    // Decoded streams appear once the input is typefound and demuxed. The first
    // video and the first audio stream are used; others (data tracks, extra
    // angles) go to a fakesink.
    let video_entry = static_pad(&v_queue, "sink")?;
    crate::media::caps::override_pixel_aspect(&video_entry, v.pixel_aspect);
    timeline::to_running_time(&video_entry, v.video_delay_ns, v.end_ns);
    let audio_entry = match &audio {
        Some((q, _)) => Some(static_pad(q, "sink")?),
        None => None,
    };
    if let Some(pad) = &audio_entry {
        timeline::to_running_time(pad, 0, None);
    }
    let pipeline_weak = pipeline.downgrade();
    let (video_pad, audio_pad) = (video_entry.clone(), audio_entry.clone());
    decode.connect_pad_added(move |_, pad| {
        drop_tags(pad);
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let target = if name.starts_with("video/") && !video_pad.is_linked() {
            Some(&video_pad)
        } else if name.starts_with("audio/") {
            audio_pad.as_ref().filter(|p| !p.is_linked())
        } else {
            None
        };
        match target {
            Some(sink) => {
                if let Err(e) = pad.link(sink) {
                    tracing::warn!(error = ?e, caps = %name, "cannot link decoded stream");
                }
            }
            None => {
                let Some(pipeline) = pipeline_weak.upgrade() else {
                    return;
                };
                let Ok(sink) = gst::ElementFactory::make("fakesink")
                    .property("sync", false)
                    .property("async", false)
                    .build()
                else {
                    return;
                };
                if pipeline.add(&sink).is_ok() {
                    let _ = sink.sync_state_with_parent();
                    if let Some(sink_pad) = sink.static_pad("sink") {
                        let _ = pad.link(&sink_pad);
                    }
                }
            }
        }
    });
    // If a stream the probe announced never shows up, end its branch so that the
    // muxers do not wait for it forever.
    decode.connect_no_more_pads(move |_| {
        for pad in std::iter::once(&video_entry).chain(audio_entry.as_ref()) {
            if !pad.is_linked() {
                pad.send_event(gst::event::Eos::new());
            }
        }
    });

    Ok(Built {
        pipeline,
        rungs,
        codecs,
        frames,
    })
}

/// Transcodes `input` as `plan` says into `out_dir`. `Ok(None)` when canceled.
pub async fn run(
    input: &Path,
    plan: &Plan,
    out_dir: &Path,
    duration: Option<Duration>,
    cancel: &CancellationToken,
    progress: ProgressFn<'_>,
    hooks: Hooks,
) -> Result<Option<Vec<RungFiles>>, MediaError> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| MediaError::Io(format!("{}: {e}", out_dir.display())))?;
    let Built {
        pipeline,
        mut rungs,
        codecs,
        frames,
    } = build(input, plan, out_dir, hooks)?;

    // Segment boundaries, from splitmuxsink's messages: location → (start, end).
    let mut fragments: HashMap<String, (Option<u64>, Option<u64>)> = HashMap::new();
    let finished = run_to_eos(&pipeline, cancel, duration, progress, |s| {
        let opened = s.name() == "splitmuxsink-fragment-opened";
        let closed = s.name() == "splitmuxsink-fragment-closed";
        if !(opened || closed) {
            return;
        }
        let (Ok(location), Ok(time)) = (s.get::<String>("location"), s.get::<u64>("running-time"))
        else {
            return;
        };
        let entry = fragments.entry(location).or_default();
        if opened {
            entry.0 = Some(time);
        } else {
            entry.1 = Some(time);
        }
    })
    .await?;
    if finished == Finished::Canceled {
        return Ok(None);
    }
    // A file whose headers promise video its samples do not hold (cut short
    // after its `moov`, an empty sample table) decodes to nothing.
    if frames.load(Ordering::Relaxed) == 0 {
        return Err(MediaError::Malformed(
            "no video frame could be decoded: the file holds no picture its headers promise".into(),
        ));
    }

    for (files, codec) in rungs.iter_mut().zip(codecs) {
        files.video_codec = codec.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hls) = &mut files.hls {
            // (file name, start, closed-at) in order.
            let mut found: Vec<(String, u64, u64)> = fragments
                .iter()
                .filter(|(location, _)| Path::new(location).parent() == Some(hls.dir.as_path()))
                .filter_map(|(location, (start, end))| {
                    let name = Path::new(location)
                        .file_name()?
                        .to_string_lossy()
                        .to_string();
                    Some((name, (*start)?, (*end)?))
                })
                .collect();
            found.sort();
            // A segment lasts until the next one starts; the last one until the end
            // of the media (splitmuxsink reports the last frame's start, not its end).
            let media_end = duration.map(|d| d.as_nanos() as u64).unwrap_or(0);
            let mut segments = Vec::new();
            for (i, (name, start, closed)) in found.iter().enumerate() {
                let end = match found.get(i + 1) {
                    Some((_, next_start, _)) => *next_start,
                    None => (*closed).max(media_end),
                };
                let bytes = std::fs::metadata(hls.dir.join(name))
                    .map(|m| m.len())
                    .unwrap_or(0);
                if bytes > 0 {
                    segments.push(SegmentFile {
                        file_name: name.clone(),
                        duration_s: end.saturating_sub(*start) as f64 / 1e9,
                        bytes,
                    });
                }
            }
            hls.segments = segments;
            if hls.segments.is_empty() {
                return Err(MediaError::Internal(format!(
                    "no HLS segments were written for {}",
                    files.rung.name
                )));
            }
        }
    }
    Ok(Some(rungs))
}
