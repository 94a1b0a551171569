//! One timeline for every decoded stream of a transcode: running time, from the
//! input's zero.
//!
//! Demuxers hand each stream over with a segment of its own (MPEG-TS starts them
//! at the program's first timestamp, MP4 edit lists move them), and the encoders
//! do not all keep a stream's offset from its segment start: x264enc puts the
//! first frame at its output segment's start, so video that began 100 ms after
//! the audio came out beginning with it. A probe on each branch's entry turns
//! every timestamp into running time (plus a per-stream correction, see
//! [`super::probe::Probe::video_offset_s`]) and announces a segment from zero, so
//! what comes after sees each stream where it really starts.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

type Segment = gst::FormattedSegment<gst::ClockTime>;

/// Rewrites every buffer, gap and segment reaching `pad` to running time plus
/// `offset_ns`. Buffers outside their segment (clipped away) are dropped. The
/// new segment ends at `stop_ns` when given: where the media ends, so that
/// videorate holds the last picture until then, as players do (decoders drop
/// the last frame's duration, and a screen recording's last frame may last
/// seconds).
pub fn to_running_time(pad: &gst::Pad, offset_ns: u64, stop_ns: Option<u64>) {
    let upstream: Arc<Mutex<Option<Segment>>> = Arc::new(Mutex::new(None));
    let offset = gst::ClockTime::from_nseconds(offset_ns);
    pad.add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
        move |_, info| {
            let Ok(mut segment) = upstream.lock() else {
                return gst::PadProbeReturn::Ok;
            };
            match &mut info.data {
                Some(gst::PadProbeData::Event(event)) => match event.view() {
                    gst::EventView::Segment(s) => {
                        let Ok(time) = s.segment().clone().downcast::<gst::ClockTime>() else {
                            return gst::PadProbeReturn::Ok;
                        };
                        let first = segment.is_none();
                        *segment = Some(time);
                        if !first {
                            // Downstream keeps the first one: times are running
                            // time already, and a new segment would make
                            // videorate close the old one (qtdemux sends one
                            // where a file's fragments begin). `Handled`, not
                            // `Drop`: a dropped sticky event would be pushed
                            // again before the next buffer.
                            info.data.take();
                            return gst::PadProbeReturn::Handled;
                        }
                        let mut zero = Segment::new();
                        zero.set_stop(stop_ns.map(gst::ClockTime::from_nseconds));
                        *event = gst::event::Segment::builder(&zero)
                            .seqnum(event.seqnum())
                            .build();
                        gst::PadProbeReturn::Ok
                    }
                    gst::EventView::Gap(g) => {
                        let (ts, duration) = g.get();
                        match segment.as_ref().and_then(|s| s.to_running_time(ts)) {
                            Some(rt) => {
                                *event = gst::event::Gap::builder(rt + offset)
                                    .duration(duration)
                                    .build();
                                gst::PadProbeReturn::Ok
                            }
                            None => gst::PadProbeReturn::Drop,
                        }
                    }
                    _ => gst::PadProbeReturn::Ok,
                },
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let Some(seg) = segment.as_ref() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let pts = buffer.pts().map(|t| seg.to_running_time(t));
                    if pts == Some(None) {
                        return gst::PadProbeReturn::Drop;
                    }
                    let dts = buffer.dts().and_then(|t| seg.to_running_time(t));
                    let b = buffer.make_mut();
                    b.set_pts(pts.flatten().map(|t| t + offset));
                    b.set_dts(dts.map(|t| t + offset));
                    gst::PadProbeReturn::Ok
                }
                _ => gst::PadProbeReturn::Ok,
            }
        },
    );
}

/// Moves every buffer that passes `pad` `by_ns` later.
///
/// Before mp4mux: it writes a late-starting stream as an empty edit, but
/// measures the lateness net of the shift it applies to decoding times that
/// would fall before zero (B-frames), so a video starting up to its B-frame
/// delay after the audio lost its offset. With every stream of the muxer moved
/// by the same second no decoding time falls before zero; the muxer takes the
/// earliest start as the file's zero, so the second itself leaves no trace.
pub fn shift(pad: &gst::Pad, by_ns: u64) {
    let by = gst::ClockTime::from_nseconds(by_ns);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            match &mut info.data {
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let b = buffer.make_mut();
                    b.set_pts(b.pts().map(|t| t + by));
                    b.set_dts(b.dts().map(|t| t + by));
                }
                // The segment's end moves with the buffers, or the muxer would
                // clip the last second.
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Segment(s) = event.view()
                        && let Ok(mut segment) = s.segment().clone().downcast::<gst::ClockTime>()
                        && let Some(stop) = segment.stop()
                    {
                        segment.set_stop(stop + by);
                        *event = gst::event::Segment::builder(&segment)
                            .seqnum(event.seqnum())
                            .build();
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_app as gst_app;

    /// A segment starting at 1 s with a buffer at 1.5 s comes out as a segment
    /// from zero with the buffer at 0.5 s, plus the offset.
    #[test]
    fn timestamps_become_running_time() {
        super::super::init().unwrap();
        let src = gst_app::AppSrc::builder()
            .caps(&gst::Caps::builder("audio/x-raw").build())
            .format(gst::Format::Time)
            .build();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        pipeline
            .add_many([src.upcast_ref::<gst::Element>(), sink.upcast_ref()])
            .unwrap();
        src.link(&sink).unwrap();
        to_running_time(&sink.static_pad("sink").unwrap(), 20_000_000, None);
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut seg = Segment::new();
        seg.set_start(gst::ClockTime::from_seconds(1));
        seg.set_time(gst::ClockTime::from_seconds(1));
        src.send_event(gst::event::Segment::new(&seg));
        let mut buffer = gst::Buffer::with_size(4).unwrap();
        buffer
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(1500));
        // Before the segment: clipped.
        let mut early = gst::Buffer::with_size(4).unwrap();
        early
            .get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(500));
        src.push_buffer(early).unwrap();
        src.push_buffer(buffer).unwrap();
        src.end_of_stream().unwrap();
        let sample = sink.pull_sample().unwrap();
        let pts = sample.buffer().unwrap().pts().unwrap();
        let start = sample
            .segment()
            .unwrap()
            .clone()
            .downcast::<gst::ClockTime>()
            .unwrap()
            .start();
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(pts, gst::ClockTime::from_mseconds(520));
        assert_eq!(start, Some(gst::ClockTime::ZERO));
    }
}
