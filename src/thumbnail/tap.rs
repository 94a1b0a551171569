//! Stills from a decode that runs anyway: when a job transcodes and asks for
//! stills, the transcode's upright 8-bit frames are tapped after its decoder
//! instead of decoding the input a second time.
//!
//! The tap is a pad probe on the input of the transcode's video tee. It looks at
//! each frame's time and copies only the first frame at or after each wanted time
//! (a few dozen of thousands); everything else passes by untouched. Copies go
//! through a small bounded channel to the thread making the stills, which runs
//! alongside the encoders.

use std::sync::Mutex;
use std::sync::mpsc::SyncSender;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::frames::{Frame, frame_from_buffer, pad_stream_seconds};

/// Frames in flight between the tap and the stills thread.
pub const CHANNEL_FRAMES: usize = 4;

/// Installs the tap on `pad` (the video tee's sink pad): for each
/// of `times` (sorted, stream seconds) the first frame at or after it is sent
/// with the time's index. The sender is dropped at end of stream, which tells the
/// receiver that no more frames come.
pub fn install(pad: &gst::Pad, times: Vec<f64>, sender: SyncSender<(usize, Frame)>) {
    struct State {
        next: usize,
        sender: Option<SyncSender<(usize, Frame)>>,
        /// The latest frame (a reference, not a copy) and its time: times past
        /// the last frame get it at end of stream.
        last: Option<(gst::Buffer, f64)>,
    }
    impl State {
        /// Sends `frame` for every wanted time it reaches.
        fn send_up_to(&mut self, times: &[f64], frame: &Frame, at: f64) {
            while self.next < times.len() && at + 0.0005 >= times[self.next] {
                let index = self.next;
                self.next += 1;
                let sent = self
                    .sender
                    .as_ref()
                    .is_some_and(|s| s.send((index, frame.clone())).is_ok());
                if !sent {
                    // The stills thread is gone (failed or canceled).
                    self.sender = None;
                    break;
                }
            }
        }
    }
    let state = Mutex::new(State {
        next: 0,
        sender: Some(sender),
        last: None,
    });
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |pad, info| {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            match &info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    if matches!(event.view(), gst::EventView::Eos(_)) {
                        if let (Some((buffer, at)), Some(caps)) =
                            (state.last.take(), pad.current_caps())
                            && let Ok(frame) = frame_from_buffer(&buffer, &caps, at)
                        {
                            state.send_up_to(&times, &frame, f64::INFINITY);
                        }
                        state.sender = None;
                    }
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    if state.next >= times.len() || state.sender.is_none() {
                        return gst::PadProbeReturn::Ok;
                    }
                    let Some(pts) = buffer.pts() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let at = pad_stream_seconds(pad, pts);
                    // Half a millisecond of slack for rounded timestamps.
                    if at + 0.0005 < times[state.next] {
                        state.last = Some((buffer.clone(), at));
                        return gst::PadProbeReturn::Ok;
                    }
                    state.last = None;
                    let Some(caps) = pad.current_caps() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let Ok(frame) = frame_from_buffer(buffer, &caps, at) else {
                        // Not I420: leave every time to the fallback (seeking).
                        state.sender = None;
                        return gst::PadProbeReturn::Ok;
                    };
                    state.send_up_to(&times, &frame, at);
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}
