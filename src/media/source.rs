//! The head of every pipeline that reads an upload: `filesrc`, and the one
//! repair GStreamer 1.22's qtdemux needs to read some files as players do.
//!
//! An MP4 whose `moov` holds samples and whose fragments follow (a recorder
//! that wrote a normal movie, then kept appending fragments) is read by qtdemux
//! with every packet at its right time, but with segments that start where the
//! fragments start and stop at the `moov`'s duration: decoders drop every
//! picture and sound before the fragments (133 ms of a phone clip) and after
//! the header's duration. FFmpeg and browsers play all of it. For such
//! files only, qtdemux's segments on each of its pads are replaced by one from
//! zero and open-ended, as qtdemux gives any other file, until the first seek;
//! a seek's segments pass as they are. Reading in push mode instead (a `queue`
//! before the demuxer) was tried: qtdemux then closes a segment at the end of
//! every fragment, and pictures reordered across fragments are dropped.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{MediaError, isobmff};

/// Adds a `filesrc` for `path` to `pipeline`, linked to `to` (a `decodebin` or
/// `parsebin` already in the pipeline), with the repair `path` needs.
pub fn add(pipeline: &gst::Pipeline, path: &Path, to: &gst::Element) -> Result<(), MediaError> {
    let internal = |e: &dyn std::fmt::Display| MediaError::Internal(e.to_string());
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_string_lossy().to_string())
        .build()
        .map_err(|e| internal(&e))?;
    pipeline.add(&src).map_err(|e| internal(&e))?;
    src.link(to).map_err(|e| internal(&e))?;
    if samples_then_fragments(path)
        && let Some(bin) = to.downcast_ref::<gst::Bin>()
    {
        bin.connect_deep_element_added(|_, _, element| {
            if element.factory().is_some_and(|f| f.name() == "qtdemux") {
                element.connect_pad_added(|_, pad| start_at_zero(pad));
            }
        });
    }
    Ok(())
}

/// Whether `path` is an MP4 with samples in its `moov` and fragments after.
fn samples_then_fragments(path: &Path) -> bool {
    let Ok(size) = std::fs::metadata(path).map(|m| m.len()) else {
        return false;
    };
    isobmff::inspect(path, size)
        .ok()
        .flatten()
        .is_some_and(|t| t.samples_then_fragments)
}

/// Replaces qtdemux's segments on `pad` by one from zero, without a stop,
/// until the first seek: the one it sends when it exposes the pad and the one
/// it sends where the fragments start (from there, again without the pictures
/// before that point).
fn start_at_zero(pad: &gst::Pad) {
    let kinds = gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::EVENT_FLUSH;
    pad.add_probe(kinds, |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let segment = match event.view() {
            // A seek: its segments are right.
            gst::EventView::FlushStop(_) => return gst::PadProbeReturn::Remove,
            gst::EventView::Segment(s) => s.segment().clone().downcast::<gst::ClockTime>(),
            _ => return gst::PadProbeReturn::Ok,
        };
        let Ok(mut from_zero) = segment else {
            return gst::PadProbeReturn::Ok;
        };
        from_zero.set_start(gst::ClockTime::ZERO);
        from_zero.set_time(gst::ClockTime::ZERO);
        from_zero.set_position(gst::ClockTime::ZERO);
        from_zero.set_stop(gst::ClockTime::NONE);
        from_zero.set_base(gst::ClockTime::ZERO);
        let seqnum = event.seqnum();
        info.data = Some(gst::PadProbeData::Event(
            gst::event::Segment::builder(&from_zero)
                .seqnum(seqnum)
                .build(),
        ));
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus")
            .join(name)
    }

    #[test]
    fn only_an_mp4_with_samples_then_fragments_is_repaired() {
        assert!(samples_then_fragments(&corpus(
            "androidx-sample_partially_fragmented.mp4"
        )));
        assert!(!samples_then_fragments(&corpus(
            "androidx-sample_fragmented.mp4"
        )));
        assert!(!samples_then_fragments(&corpus("androidx-sample_h264.ts")));
    }
}
