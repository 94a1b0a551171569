//! Not decoding what no still needs: H.264 pictures that no other picture refers
//! to (`nal_ref_idc` = 0, typically two B-frames out of three with x264's
//! defaults) are dropped before the decoder unless they are near a wanted time.
//! Reaching a frame by an accurate seek means decoding everything from the
//! previous keyframe; skipping the non-reference pictures on the way cuts that
//! work by a fifth to a third on common encodes, and cannot change any other
//! picture since nothing refers to them.
//!
//! HEVC is left alone: its "sub-layer non-reference" pictures may still be
//! referenced from higher temporal layers, which phones use.

use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::frames::pad_stream_seconds;

/// Frames this close before a wanted time are always decoded (one frame at
/// 10 fps: the frame shown at the time starts at most one frame before it).
const BEFORE_S: f64 = 0.1;
/// ... and this far after it (a linear pass takes the first frame at or after
/// the time).
const AFTER_S: f64 = 0.25;

/// The times the next frames are wanted for, shared with the decoder's pad probe.
#[derive(Clone, Default)]
pub struct Wanted(Arc<Mutex<Option<Vec<f64>>>>);

impl Wanted {
    /// Only frames near `times` (stream time, seconds) need to be complete.
    pub fn set(&self, times: Vec<f64>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(times);
    }

    /// Every frame is wanted (keyframe seeks, prerolls).
    pub fn all(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn needed(&self, at: f64) -> bool {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            None => true,
            Some(times) => times
                .iter()
                .any(|t| at >= t - BEFORE_S && at <= t + AFTER_S),
        }
    }
}

/// How NAL units are delimited in the decoder's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `avc`/`avc3`: each NAL unit prefixed by its length in this many bytes.
    Length(usize),
    /// Annex B start codes.
    StartCodes,
}

fn framing(caps: &gst::CapsRef) -> Option<Framing> {
    let s = caps.structure(0)?;
    if s.name() != "video/x-h264" {
        return None;
    }
    match s.get::<&str>("stream-format").ok()? {
        "byte-stream" => Some(Framing::StartCodes),
        "avc" | "avc3" => {
            let codec_data = s.get::<gst::Buffer>("codec_data").ok()?;
            let map = codec_data.map_readable().ok()?;
            // avcC: lengthSizeMinusOne in the low two bits of byte 4.
            let size = usize::from(*map.get(4)? & 3) + 1;
            (size != 3).then_some(Framing::Length(size))
        }
        _ => None,
    }
}

/// The NAL header bytes of each NAL unit in an access unit.
fn nal_headers(data: &[u8], framing: Framing) -> Vec<u8> {
    let mut headers = Vec::new();
    match framing {
        Framing::Length(size) => {
            let mut at = 0usize;
            while at + size < data.len() {
                let len = data[at..at + size]
                    .iter()
                    .fold(0usize, |n, b| (n << 8) | usize::from(*b));
                headers.push(data[at + size]);
                at = at.saturating_add(size).saturating_add(len);
            }
        }
        Framing::StartCodes => {
            let mut i = 0usize;
            while i + 3 < data.len() {
                if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
                    headers.push(data[i + 3]);
                    i += 3;
                } else {
                    i += 1;
                }
            }
        }
    }
    headers
}

/// Whether an H.264 access unit is a picture nothing refers to: it has coded
/// slices (type 1) and all of them have `nal_ref_idc` 0.
fn is_non_reference(data: &[u8], framing: Framing) -> bool {
    let slices: Vec<u8> = nal_headers(data, framing)
        .into_iter()
        .filter(|h| matches!(h & 0x1f, 1 | 5))
        .collect();
    !slices.is_empty() && slices.iter().all(|h| h & 0x60 == 0 && h & 0x1f == 1)
}

/// Watches the sink pad of an H.264 decoder and drops the non-reference
/// pictures that `wanted` does not need.
pub fn install(decoder_sink: &gst::Pad, wanted: Wanted) {
    let state: Mutex<Option<Framing>> = Mutex::new(None);
    decoder_sink.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |pad, info| {
            let mut framing = state.lock().unwrap_or_else(|e| e.into_inner());
            match &info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    if let gst::EventView::Caps(caps) = event.view() {
                        *framing = self::framing(caps.caps());
                    }
                    gst::PadProbeReturn::Ok
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let Some(f) = *framing else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let Some(pts) = buffer.pts() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let at = pad_stream_seconds(pad, pts);
                    if wanted.needed(at) {
                        return gst::PadProbeReturn::Ok;
                    }
                    let droppable = buffer
                        .map_readable()
                        .map(|map| is_non_reference(&map, f))
                        .unwrap_or(false);
                    if droppable {
                        // Taking the buffer and answering `Handled` drops it; a
                        // plain `Drop` makes GStreamer unref a buffer the
                        // bindings already released.
                        info.data.take();
                        gst::PadProbeReturn::Handled
                    } else {
                        gst::PadProbeReturn::Ok
                    }
                }
                _ => gst::PadProbeReturn::Ok,
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            out.extend_from_slice(nal);
        }
        out
    }

    #[test]
    fn non_reference_slices_are_recognised() {
        let f = Framing::Length(4);
        // SEI (6) then a non-reference slice (ref_idc 0, type 1).
        assert!(is_non_reference(&avc(&[&[0x06, 1, 2], &[0x01, 9, 9]]), f));
        // A reference B/P slice (ref_idc 2).
        assert!(!is_non_reference(&avc(&[&[0x41, 9, 9]]), f));
        // IDR.
        assert!(!is_non_reference(&avc(&[&[0x65, 9]]), f));
        // Only parameter sets: not a picture.
        assert!(!is_non_reference(&avc(&[&[0x67, 1], &[0x68, 1]]), f));
        // Annex B: 00 00 01 then 00 00 00 01.
        let annex_b = [0, 0, 1, 0x09, 0x10, 0, 0, 0, 1, 0x01, 7, 7];
        assert!(is_non_reference(&annex_b, Framing::StartCodes));
        let annex_b_ref = [0, 0, 1, 0x21, 7, 7];
        assert!(!is_non_reference(&annex_b_ref, Framing::StartCodes));
    }

    #[test]
    fn only_frames_near_wanted_times_are_kept() {
        let w = Wanted::default();
        assert!(w.needed(3.0));
        w.set(vec![7.5]);
        assert!(!w.needed(6.0));
        assert!(!w.needed(7.3));
        assert!(w.needed(7.45));
        assert!(w.needed(7.6));
        assert!(!w.needed(8.0));
        w.all();
        assert!(w.needed(6.0));
    }
}
