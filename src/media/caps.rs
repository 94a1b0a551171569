//! Caps corrections on decoded video: the pixel aspect decoders announce is
//! GStreamer's (for MP4, possibly made up by qtdemux from the track header, see
//! [`super::geometry`]); the probe's is the one players use. A pad probe puts
//! the probe's on every caps event that passes, so scalers (which keep the
//! display aspect with borders) and encoders see the right shape.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Sets `pixel-aspect-ratio` to `par` on every video caps event reaching `pad`.
pub fn override_pixel_aspect(pad: &gst::Pad, par: (u32, u32)) {
    let (Ok(n), Ok(d)) = (i32::try_from(par.0), i32::try_from(par.1)) else {
        return;
    };
    let fraction = gst::Fraction::new(n, d);
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(c) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let caps = c.caps();
        let current = caps
            .structure(0)
            .and_then(|s| s.get::<gst::Fraction>("pixel-aspect-ratio").ok());
        if current == Some(fraction) {
            return gst::PadProbeReturn::Ok;
        }
        let mut fixed = caps.to_owned();
        if let Some(s) = fixed.make_mut().structure_mut(0) {
            s.set("pixel-aspect-ratio", fraction);
        }
        info.data = Some(gst::PadProbeData::Event(gst::event::Caps::new(&fixed)));
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_events_get_the_pixel_aspect() {
        super::super::init().unwrap();
        let pipeline = gst::parse::launch(
            "videotestsrc num-buffers=1 ! video/x-raw,width=68,height=120,pixel-aspect-ratio=27/64 \
             ! identity name=fix ! fakesink name=sink",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let fix = pipeline.by_name("fix").unwrap();
        override_pixel_aspect(&fix.static_pad("sink").unwrap(), (1, 1));
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(10),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .unwrap();
        assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap();
        let caps = sink.current_caps().unwrap();
        let par = caps
            .structure(0)
            .unwrap()
            .get::<gst::Fraction>("pixel-aspect-ratio");
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(par.unwrap(), gst::Fraction::new(1, 1));
    }
}
