//! One pass over an input's packets, demuxed and parsed but never decoded
//! (`filesrc ! parsebin`, no decoders): the timestamps of the first video
//! frames (for [`super::timing`]), when video and audio start and end (the
//! duration players play, which headers often misstate: fragmented MP4, WebM
//! from a browser's MediaRecorder, MPEG-TS), and the pixel aspect each layer
//! claims. Times are running times: edit lists and priming the demuxer marks as
//! outside the segment do not count, as players do not show them.
//!
//! GStreamer's caps merge two claims into one `pixel-aspect-ratio`: qtdemux
//! puts one there (from `pasp`, or else made up from the track header's
//! presentation size), and the parser keeps it over the one the codec carries.
//! To hear the codec (H.264/HEVC VUI), a probe on the demuxer's video pad takes
//! the container's claim off the caps before the parser sees them, and keeps it.
//!
//! Blocks (state changes, pulling samples): run it on the blocking pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::MediaError;

/// Frames measured: enough for a stable median, few enough to stay cheap.
const MAX_FRAMES: usize = 600;
/// Or this much of the video, whichever comes first.
const MAX_SPAN: Duration = Duration::from_secs(30);

/// A pixel aspect ratio as `(n, d)`.
pub type Par = (i32, i32);

/// Where a stream's packets start and end (running time, nanoseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start_ns: u64,
    /// The latest end of a packet (start plus duration, when it has one).
    pub end_ns: u64,
    /// The latest start of a packet.
    pub last_start_ns: u64,
}

impl Span {
    fn extend(span: &mut Option<Span>, start_ns: u64, end_ns: u64) {
        let s = span.get_or_insert(Span {
            start_ns,
            end_ns,
            last_start_ns: start_ns,
        });
        s.start_ns = s.start_ns.min(start_ns);
        s.end_ns = s.end_ns.max(end_ns);
        s.last_start_ns = s.last_start_ns.max(start_ns);
    }

    /// The end, counting a last packet without a duration as lasting `frame_ns`.
    pub fn end_with(&self, frame_ns: u64) -> u64 {
        self.end_ns.max(self.last_start_ns + frame_ns)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packets {
    /// Presentation (or decoding, when a frame has no presentation) times of
    /// the first video frames, in nanoseconds, in arrival order.
    pub video_pts_ns: Vec<u64>,
    pub video: Option<Span>,
    pub audio: Option<Span>,
    /// The pass read the whole input (else the spans cover only its start).
    pub complete: bool,
    /// How far the demuxer moved the video's zero: its first segment's start
    /// minus its stream time, in nanoseconds (an MP4 edit list does this, and
    /// qtdemux does it to tracks without one, see `Probe::video_start_s`).
    pub video_zero_shift_ns: u64,
    /// What the demuxer's caps said (for MP4, possibly made up from `tkhd`).
    pub container_par: Option<Par>,
    /// What the codec's own headers say, after the parser (VUI).
    pub codec_par: Option<Par>,
}

#[derive(Default)]
struct Seen {
    container_par: Option<Par>,
    demuxer_video_pad: bool,
    /// The video as the demuxer hands it over: one buffer per frame with the
    /// container's own durations (parsers recompute durations from a frame
    /// rate, which a variable-rate file does not have).
    demuxed: Video,
    audio: Option<Span>,
}

/// A buffer's presentation span in running time; `None` outside the segment.
fn running_span(
    segment: &gst::FormattedSegment<gst::ClockTime>,
    buffer: &gst::BufferRef,
) -> Option<(u64, u64)> {
    let ts = buffer.pts().or(buffer.dts())?;
    let start = segment.to_running_time(ts)?;
    let end = buffer
        .duration()
        .and_then(|d| segment.to_running_time(ts + d))
        .unwrap_or(start);
    Some((start.nseconds(), end.nseconds()))
}

fn internal(e: impl std::fmt::Display) -> MediaError {
    MediaError::Internal(e.to_string())
}

fn par_of(s: &gst::StructureRef) -> Option<Par> {
    s.get::<gst::Fraction>("pixel-aspect-ratio")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .map(|f| (f.numer(), f.denom()))
}

fn is_video(caps: &gst::CapsRef) -> bool {
    caps.structure(0)
        .is_some_and(|s| s.name().starts_with("video/") || s.name().starts_with("image/"))
}

/// The container's pixel aspect of one picture. For stereo video packed in one
/// frame, Matroska's display size is one eye's view (so FFmpeg reads it): a
/// side-by-side frame is shown twice as wide as its display size says, a
/// top-bottom one twice as tall.
fn stereo_par(s: &gst::StructureRef) -> Option<Par> {
    let (n, d) = par_of(s)?;
    Some(match s.get::<&str>("multiview-mode").unwrap_or("mono") {
        "side-by-side" | "column-interleaved" | "checkerboard" => (n.saturating_mul(2), d),
        "top-bottom" | "row-interleaved" => (n, d.saturating_mul(2)),
        _ => (n, d),
    })
}

/// On the demuxer's first video pad: keep the container's pixel aspect and
/// take it off the caps, so the parser reports the codec's own.
fn strip_container_par(pad: &gst::Pad, seen: Arc<Mutex<Seen>>) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(c) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let caps = c.caps();
        if !is_video(caps) {
            return gst::PadProbeReturn::Remove;
        }
        let Some(par) = caps.structure(0).and_then(stereo_par) else {
            return gst::PadProbeReturn::Ok;
        };
        if let Ok(mut seen) = seen.lock() {
            seen.container_par.get_or_insert(par);
        }
        let mut stripped = caps.to_owned();
        if let Some(s) = stripped.make_mut().structure_mut(0) {
            s.remove_field("pixel-aspect-ratio");
        }
        info.data = Some(gst::PadProbeData::Event(gst::event::Caps::new(&stripped)));
        gst::PadProbeReturn::Ok
    });
}

/// Watches every demuxer parsebin plugs.
fn watch_demuxers(parsebin: &gst::Bin, seen: Arc<Mutex<Seen>>) {
    parsebin.connect_deep_element_added(move |_, _, element| {
        let demuxer = element
            .factory()
            .is_some_and(|f| f.klass().contains("Demux"));
        if !demuxer {
            return;
        }
        let seen = seen.clone();
        element.connect_pad_added(move |_, pad| {
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let first_video = is_video(&caps)
                && seen.lock().is_ok_and(|mut s| {
                    let first = !s.demuxer_video_pad;
                    s.demuxer_video_pad = true;
                    first
                });
            if first_video {
                strip_container_par(pad, seen.clone());
                watch_video(pad, seen.clone());
            }
        });
    });
}

/// Records where the audio that passes `pad` starts and ends.
fn watch_audio(pad: &gst::Pad, seen: Arc<Mutex<Seen>>) {
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(buffer) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        let segment = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|e| e.segment().clone().downcast::<gst::ClockTime>().ok());
        if let Some((start, end)) = segment.and_then(|s| running_span(&s, buffer))
            && let Ok(mut s) = seen.lock()
        {
            Span::extend(&mut s.audio, start, end);
        }
        gst::PadProbeReturn::Ok
    });
}

fn fakesink() -> Option<gst::Element> {
    gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .ok()
}

/// Reads the first packets of `path`, for at most `timeout`.
pub fn read(path: &std::path::Path, timeout: Duration) -> Result<Packets, MediaError> {
    super::init()?;
    let pipeline = gst::Pipeline::new();
    let parse = gst::ElementFactory::make("parsebin")
        .build()
        .map_err(internal)?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(64)
        .enable_last_sample(false)
        .build();
    sink.set_property("async", false);
    pipeline
        .add_many([&parse, sink.upcast_ref()])
        .map_err(internal)?;
    super::source::add(&pipeline, path, &parse)?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    if let Some(bin) = parse.downcast_ref::<gst::Bin>() {
        watch_demuxers(bin, seen.clone());
    }
    let video_in = sink
        .static_pad("sink")
        .ok_or_else(|| internal("no sink pad"))?;
    let weak = pipeline.downgrade();
    let audio_seen = seen.clone();
    parse.connect_pad_added(move |_, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        if is_video(&caps) && !video_in.is_linked() {
            let _ = pad.link(&video_in);
            return;
        }
        if caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("audio/"))
        {
            watch_audio(pad, audio_seen.clone());
        }
        let (Some(pipeline), Some(fake)) = (weak.upgrade(), fakesink()) else {
            return;
        };
        if pipeline.add(&fake).is_ok() {
            let _ = fake.sync_state_with_parent();
            if let Some(sink_pad) = fake.static_pad("sink") {
                let _ = pad.link(&sink_pad);
            }
        }
    });

    let result = pull(&pipeline, &sink, timeout);
    let _ = pipeline.set_state(gst::State::Null);
    let parsed = result?;
    let mut seen = seen.lock().map_err(internal)?;
    // The demuxer's view when there is one (its durations are the container's).
    let video = if seen.demuxed.span.is_some() {
        std::mem::take(&mut seen.demuxed)
    } else {
        Video {
            pts: parsed.pts,
            zero_shift_ns: parsed.zero_shift_ns,
            span: parsed.span,
            ..Video::default()
        }
    };
    Ok(Packets {
        video_pts_ns: video.pts,
        video: video.span,
        audio: seen.audio,
        complete: parsed.complete,
        video_zero_shift_ns: video.zero_shift_ns,
        container_par: seen.container_par,
        codec_par: parsed.codec_par,
    })
}

/// What was seen of the video, at the demuxer or after the parser.
#[derive(Default)]
struct Video {
    pts: Vec<u64>,
    zero_shift_ns: u64,
    span: Option<Span>,
    codec_par: Option<Par>,
    complete: bool,
}

impl Video {
    /// Takes one frame into account.
    fn record(&mut self, segment: &gst::FormattedSegment<gst::ClockTime>, buffer: &gst::BufferRef) {
        let Some((start, end)) = running_span(segment, buffer) else {
            return;
        };
        if self.span.is_none() {
            self.zero_shift_ns = segment
                .start()
                .zip(segment.time())
                .map_or(0, |(s, t)| s.nseconds().saturating_sub(t.nseconds()));
        }
        Span::extend(&mut self.span, start, end);
        let first = self.pts.first().copied().unwrap_or(start);
        if self.pts.len() < MAX_FRAMES && start.saturating_sub(first) <= MAX_SPAN.as_nanos() as u64
        {
            self.pts.push(start);
        }
    }
}

/// Records the frames that pass the demuxer's video `pad`, against the
/// segment as it goes downstream (`super::source` may replace the demuxer's;
/// the pad's sticky event stays the demuxer's own).
fn watch_video(pad: &gst::Pad, seen: Arc<Mutex<Seen>>) {
    let segment = Mutex::new(None::<gst::FormattedSegment<gst::ClockTime>>);
    let kinds = gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM;
    pad.add_probe(kinds, move |_, info| {
        let Ok(mut segment) = segment.lock() else {
            return gst::PadProbeReturn::Ok;
        };
        match &info.data {
            Some(gst::PadProbeData::Event(event)) => {
                if let gst::EventView::Segment(s) = event.view() {
                    *segment = s.segment().clone().downcast::<gst::ClockTime>().ok();
                }
            }
            Some(gst::PadProbeData::Buffer(buffer)) => {
                if let Some(segment) = segment.as_ref()
                    && let Ok(mut s) = seen.lock()
                {
                    s.demuxed.record(segment, buffer);
                }
            }
            _ => {}
        }
        gst::PadProbeReturn::Ok
    });
}

/// Plays the pipeline and pulls every video sample until EOS, an error or
/// `timeout`; the first frames' times are kept for the frame rate.
fn pull(
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    timeout: Duration,
) -> Result<Video, MediaError> {
    pipeline.set_state(gst::State::Playing).map_err(|_| {
        bus_error(pipeline).unwrap_or_else(|| internal("the pipeline would not start"))
    })?;
    let deadline = Instant::now() + timeout;
    let mut video = Video::default();
    while Instant::now() < deadline {
        if let Some(err) = bus_error(pipeline) {
            // Whatever came before the error is still a measurement.
            if video.pts.is_empty() {
                return Err(err);
            }
            return Ok(video);
        }
        let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) else {
            if sink.is_eos() {
                video.complete = true;
                break;
            }
            continue;
        };
        if video.codec_par.is_none() {
            video.codec_par = sample.caps().and_then(|c| c.structure(0)).and_then(par_of);
        }
        let segment = sample
            .segment()
            .and_then(|s| s.clone().downcast::<gst::ClockTime>().ok());
        if let (Some(buffer), Some(segment)) = (sample.buffer(), segment) {
            video.record(&segment, buffer);
        }
    }
    Ok(video)
}

fn bus_error(pipeline: &gst::Pipeline) -> Option<MediaError> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(MediaError::Malformed(err.error().message().to_string()));
        }
    }
    None
}
