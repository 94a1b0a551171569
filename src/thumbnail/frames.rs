//! Decoded video frames for stills, from one decoding pipeline per job.
//!
//! The pipeline (`filesrc ! decodebin ! videoconvert ! videoflip ! appsink`) is
//! kept in PAUSED: a flushing seek prerolls exactly one frame, which the appsink
//! hands over. Accurate seeks give the frame at a given time (decoding from the
//! previous keyframe only); key-unit seeks give the nearest keyframe without
//! decoding anything else, which is how storyboards and poster candidates stay
//! cheap. When keyframes are too sparse for that, one linear pass decodes the
//! stream once and samples it.
//!
//! Every call blocks (GStreamer state changes): run it on the blocking pool.
//! Frames come out upright (the display rotation is applied) as tightly packed
//! 8-bit I420.

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::skip::{self, Wanted};
use crate::media::MediaError;
use crate::media::transcode::plan::{ColorPlan, Orientation};

/// How long a seek may take to produce its frame.
const PREROLL_TIMEOUT: Duration = Duration::from_secs(20);

/// One upright 8-bit I420 frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Presentation time in seconds.
    pub time_s: f64,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// BT.601 matrix (SD) rather than BT.709.
    pub bt601: bool,
    /// Full-range (0-255) rather than video-range (16-235) values.
    pub full_range: bool,
    /// Pixel aspect of the upright frame (`n`, `d`): stills are made at the
    /// display aspect, `width * n / d` by `height`.
    pub pixel_aspect: (u32, u32),
}

impl Frame {
    /// The size the frame is shown at.
    pub fn display_size(&self) -> (u32, u32) {
        crate::media::geometry::display_size(self.width, self.height, self.pixel_aspect, 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekMode {
    /// The frame at the time (decodes from the previous keyframe).
    Accurate,
    /// The keyframe nearest to the time (decodes one frame).
    Keyframe,
}

pub struct FrameGrabber {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    /// Which frames the next seek or pass needs (the rest of the non-reference
    /// pictures are not decoded).
    wanted: Wanted,
    pub duration_s: f64,
}

fn internal(e: impl std::fmt::Display) -> MediaError {
    MediaError::Internal(e.to_string())
}

impl FrameGrabber {
    /// Opens `path` (lasting `duration_s`, from its probe) and prerolls its first
    /// frame.
    pub fn open(
        path: &Path,
        orientation: Orientation,
        pixel_aspect: (u32, u32),
        color: ColorPlan,
        duration_s: f64,
    ) -> Result<FrameGrabber, MediaError> {
        crate::media::init()?;
        let pipeline = gst::Pipeline::new();
        let decode = gst::ElementFactory::make("decodebin")
            .build()
            .map_err(internal)?;
        let convert = gst::ElementFactory::make("videoconvert")
            .build()
            .map_err(internal)?;
        let mut i420 = gst::Caps::builder("video/x-raw").field("format", "I420");
        if color != ColorPlan::Passthrough {
            if color == ColorPlan::ConvertPq {
                convert.set_property_from_str("gamma-mode", "remap");
            }
            convert.set_property_from_str("primaries-mode", "fast");
            i420 = i420.field("colorimetry", "bt709");
        }
        let caps = gst::ElementFactory::make("capsfilter")
            .property("caps", i420.build())
            .build()
            .map_err(internal)?;
        let flip = gst::ElementFactory::make("videoflip")
            .build()
            .map_err(internal)?;
        flip.set_property_from_str("method", orientation.videoflip_method());
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .max_buffers(2)
            .enable_last_sample(false)
            .build();
        pipeline
            .add_many([&decode, &convert, &caps, &flip, sink.upcast_ref()])
            .map_err(internal)?;
        crate::media::source::add(&pipeline, path, &decode)?;
        gst::Element::link_many([&convert, &caps, &flip, sink.upcast_ref()]).map_err(internal)?;

        // Non-reference H.264 pictures away from the wanted times are dropped
        // before the decoder (see `skip`).
        let wanted = Wanted::default();
        if let Some(bin) = decode.downcast_ref::<gst::Bin>() {
            let wanted = wanted.clone();
            bin.connect_element_added(move |_, element| {
                let is_h264_decoder = element.factory().is_some_and(|f| {
                    f.klass().contains("Decoder")
                        && f.static_pad_templates().iter().any(|t| {
                            t.direction() == gst::PadDirection::Sink
                                && t.caps().iter().any(|s| s.name() == "video/x-h264")
                        })
                });
                if is_h264_decoder && let Some(pad) = element.static_pad("sink") {
                    skip::install(&pad, wanted.clone());
                }
            });
        }

        let video_in = convert
            .static_pad("sink")
            .ok_or_else(|| internal("no sink pad"))?;
        crate::media::caps::override_pixel_aspect(&video_in, pixel_aspect);
        let weak = pipeline.downgrade();
        decode.connect_pad_added(move |_, pad| {
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let is_video = caps
                .structure(0)
                .is_some_and(|s| s.name().starts_with("video/"));
            if is_video && !video_in.is_linked() {
                let _ = pad.link(&video_in);
                return;
            }
            // Audio and everything else is not needed.
            let Some(pipeline) = weak.upgrade() else {
                return;
            };
            if let Ok(fake) = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
                && pipeline.add(&fake).is_ok()
            {
                let _ = fake.sync_state_with_parent();
                if let Some(sink_pad) = fake.static_pad("sink") {
                    let _ = pad.link(&sink_pad);
                }
            }
        });

        let grabber = FrameGrabber {
            pipeline,
            sink,
            wanted,
            duration_s,
        };
        grabber.settle(gst::State::Paused)?;
        Ok(grabber)
    }

    /// Changes state and waits for it, turning errors on the bus into `MediaError`.
    fn settle(&self, state: gst::State) -> Result<(), MediaError> {
        let change = self.pipeline.set_state(state);
        let (result, _, _) = self.pipeline.state(gst::ClockTime::from_nseconds(
            PREROLL_TIMEOUT.as_nanos() as u64,
        ));
        if change.is_err() || result.is_err() {
            return Err(self.bus_error().unwrap_or_else(|| {
                MediaError::Malformed("the video could not be decoded".into())
            }));
        }
        Ok(())
    }

    fn bus_error(&self) -> Option<MediaError> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(err) = msg.view() {
                return Some(MediaError::Malformed(err.error().message().to_string()));
            }
        }
        None
    }

    /// The frame at (or the keyframe nearest to) `time_s`.
    pub fn frame_at(&self, time_s: f64, mode: SeekMode) -> Result<Frame, MediaError> {
        // A seek at or past the end would reach EOS instead of a frame.
        let last = (self.duration_s - 0.05).max(0.0);
        let t = time_s.clamp(0.0, last);
        let flags = match mode {
            SeekMode::Accurate => {
                self.wanted.set(vec![t]);
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE
            }
            SeekMode::Keyframe => {
                self.wanted.all();
                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_NEAREST
            }
        };
        self.pipeline
            .seek_simple(flags, gst::ClockTime::from_nseconds((t * 1e9) as u64))
            .map_err(|_| MediaError::Malformed(format!("cannot seek to {t:.3} s")))?;
        self.settle(gst::State::Paused)?;
        let sample = self
            .sink
            .try_pull_preroll(gst::ClockTime::from_seconds(5))
            .ok_or_else(|| MediaError::Malformed(format!("no frame at {t:.3} s")))?;
        frame_from_sample(&sample)
    }

    /// Decodes the stream once from the start and hands `on_frame` the first frame
    /// at or after each of `times` (sorted ascending), with its index.
    pub fn scan(
        self,
        times: &[f64],
        mut on_frame: impl FnMut(usize, Frame) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        if times.is_empty() {
            return Ok(());
        }
        self.wanted.set(times.to_vec());
        self.pipeline
            .seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::ZERO)
            .map_err(|_| MediaError::Malformed("cannot rewind".into()))?;
        self.settle(gst::State::Playing)?;
        let mut next = 0usize;
        let mut previous: Option<Frame> = None;
        while next < times.len() {
            let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_seconds(10)) else {
                if self.sink.is_eos() {
                    break;
                }
                return Err(self
                    .bus_error()
                    .unwrap_or_else(|| MediaError::Malformed("decoding stalled".into())));
            };
            let frame = frame_from_sample(&sample)?;
            // Frames are roughly 1/fps apart; take the first one that reaches the
            // wanted time (with half a millisecond of slack for rounding).
            while next < times.len() && frame.time_s + 0.0005 >= times[next] {
                on_frame(next, frame.clone())?;
                next += 1;
            }
            previous = Some(frame);
        }
        // Times past the last frame get the last frame.
        if let Some(last) = previous {
            while next < times.len() {
                on_frame(next, last.clone())?;
                next += 1;
            }
        }
        Ok(())
    }
}

impl Drop for FrameGrabber {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The buffer's position in the stream (edit lists and B-frame delays shift
/// raw timestamps; the segment maps them back), in seconds.
fn stream_time_s(sample: &gst::SampleRef, pts: Option<gst::ClockTime>) -> f64 {
    let Some(pts) = pts else { return 0.0 };
    to_stream_seconds(sample.segment(), pts)
}

/// [`stream_time_s`] for a buffer of `pad`, from the pad's current segment.
pub(crate) fn pad_stream_seconds(pad: &gst::Pad, pts: gst::ClockTime) -> f64 {
    let segment = pad.sticky_event::<gst::event::Segment>(0);
    to_stream_seconds(segment.as_ref().map(|e| e.segment()), pts)
}

fn to_stream_seconds(segment: Option<&gst::Segment>, pts: gst::ClockTime) -> f64 {
    segment
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_stream_time(pts))
        .unwrap_or(pts)
        .nseconds() as f64
        / 1e9
}

fn frame_from_sample(sample: &gst::SampleRef) -> Result<Frame, MediaError> {
    let buffer = sample
        .buffer()
        .ok_or_else(|| internal("sample without buffer"))?;
    let caps = sample
        .caps()
        .ok_or_else(|| internal("sample without caps"))?;
    frame_from_buffer(buffer, caps, stream_time_s(sample, buffer.pts()))
}

/// Copies an I420 buffer described by `caps` into a tightly packed [`Frame`].
pub(crate) fn frame_from_buffer(
    buffer: &gst::BufferRef,
    caps: &gst::CapsRef,
    time_s: f64,
) -> Result<Frame, MediaError> {
    let info = gst_video::VideoInfo::from_caps(caps).map_err(internal)?;
    if info.format() != gst_video::VideoFormat::I420 {
        return Err(internal(format!("expected I420, got {:?}", info.format())));
    }
    let frame =
        gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(internal)?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let plane = |index: u32, pw: usize, ph: usize| -> Result<Vec<u8>, MediaError> {
        let stride = frame.plane_stride()[index as usize] as usize;
        let data = frame.plane_data(index).map_err(internal)?;
        let mut out = Vec::with_capacity(pw * ph);
        for row in 0..ph {
            out.extend_from_slice(&data[row * stride..row * stride + pw]);
        }
        Ok(out)
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let colorimetry = info.colorimetry();
    let par = info.par();
    Ok(Frame {
        pixel_aspect: u32::try_from(par.numer())
            .ok()
            .zip(u32::try_from(par.denom()).ok())
            .and_then(crate::media::geometry::reduced)
            .unwrap_or((1, 1)),
        bt601: colorimetry.matrix() == gst_video::VideoColorMatrix::Bt601,
        full_range: colorimetry.range() == gst_video::VideoColorRange::Range0_255,
        width: w as u32,
        height: h as u32,
        time_s,
        y: plane(0, w, h)?,
        u: plane(1, cw, ch)?,
        v: plane(2, cw, ch)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(dir: &Path) -> std::path::PathBuf {
        crate::media::init().unwrap();
        let path = dir.join("clip.mp4");
        // 3 s at 10 fps, a keyframe every second: frames are numbered by time.
        let desc = format!(
            "videotestsrc num-buffers=30 pattern=ball ! video/x-raw,width=160,height=90,framerate=10/1 \
             ! x264enc key-int-max=10 ! mp4mux ! filesink location={}",
            path.display()
        );
        let p = gst::parse::launch(&desc).unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let bus = p.bus().unwrap();
        bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos])
            .unwrap();
        p.set_state(gst::State::Null).unwrap();
        path
    }

    #[test]
    fn accurate_keyframe_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = clip(dir.path());
        let g = FrameGrabber::open(
            &path,
            Orientation::Clockwise90,
            (1, 1),
            ColorPlan::Passthrough,
            3.0,
        )
        .unwrap();
        let f = g.frame_at(1.25, SeekMode::Accurate).unwrap();
        // The frame shown at 1.25 s starts at 1.2 s; the decoder clips its start
        // to the seek position.
        assert!((1.19..=1.251).contains(&f.time_s), "{}", f.time_s);
        // Rotated: 90 wide, 160 high.
        assert_eq!((f.width, f.height), (90, 160));
        assert_eq!(f.y.len(), 90 * 160);
        assert_eq!(f.u.len(), 45 * 80);
        let k = g.frame_at(1.4, SeekMode::Keyframe).unwrap();
        assert!((k.time_s - 1.0).abs() < 0.01, "{}", k.time_s);
        let mut got = Vec::new();
        g.scan(&[0.0, 0.55, 2.0, 9.0], |i, f| {
            got.push((i, f.time_s));
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 4);
        assert!((got[1].1 - 0.6).abs() < 0.01, "{got:?}");
        assert!(got[3].1 > 2.8, "{got:?}");
    }
}
