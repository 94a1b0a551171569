//! Caps corrections on decoded video: the pixel aspect decoders announce is
//! GStreamer's (for MP4, possibly made up by qtdemux from the track header, see
//! [`super::geometry`]); the probe's is the one players use. A pad probe puts
//! the probe's on every caps event that passes, so scalers (which keep the
//! display aspect with borders) and encoders see the right shape.
//!
//! Audio gets one correction: channels without positions (a QuickTime `lpcm`
//! track of 8 channels, a WAV without a channel mask) get GStreamer's default
//! layout for their count, as ffmpeg and players assume, so they can be mixed
//! down to stereo instead of failing negotiation.

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

/// Gives multichannel audio caps without channel positions (`channel-mask`
/// 0 or absent, more than two channels) the default layout for their count.
pub fn position_unpositioned_channels(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(c) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(fixed) = with_default_positions(c.caps()) else {
            return gst::PadProbeReturn::Ok;
        };
        info.data = Some(gst::PadProbeData::Event(gst::event::Caps::new(&fixed)));
        gst::PadProbeReturn::Ok
    });
}

/// `caps` with the default channel mask, when they are unpositioned audio.
fn with_default_positions(caps: &gst::CapsRef) -> Option<gst::Caps> {
    let s = caps.structure(0)?;
    if s.name() != "audio/x-raw" {
        return None;
    }
    let channels = u32::try_from(s.get::<i32>("channels").ok()?).ok()?;
    let mask = s.get::<gst::Bitmask>("channel-mask").map_or(0, |m| m.0);
    if channels <= 2 || mask != 0 {
        return None;
    }
    let fallback = gstreamer_audio::AudioChannelPosition::fallback_mask(channels);
    if fallback == 0 {
        return None;
    }
    let mut fixed = caps.to_owned();
    fixed
        .make_mut()
        .structure_mut(0)?
        .set("channel-mask", gst::Bitmask::new(fallback));
    Some(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_unpositioned_channels_become_7_1() {
        super::super::init().unwrap();
        let caps = gst::Caps::builder("audio/x-raw")
            .field("channels", 8i32)
            .field("channel-mask", gst::Bitmask::new(0))
            .build();
        let fixed = with_default_positions(&caps).unwrap();
        let mask = fixed
            .structure(0)
            .unwrap()
            .get::<gst::Bitmask>("channel-mask");
        // FL FR FC LFE RL RR SL SR.
        assert_eq!(mask.unwrap().0, 0b1100_0011_1111);
        let stereo = gst::Caps::builder("audio/x-raw")
            .field("channels", 2i32)
            .build();
        assert!(with_default_positions(&stereo).is_none());
    }

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
