//! Live posters: every `poster_interval_s`, the next keyframe of a stream is
//! decoded and written, resized on the thumbnail hot path (planes resized with
//! SIMD, only the small result converted to RGB), as `poster.jpg` next to the
//! playlist, so shops can show what a stream looks like right now.
//!
//! Ingest only clones the keyframe's bytes (a reference count); the decode runs
//! in the stream's sandboxed media process ([`super::worker`], which calls
//! [`make_poster`]), at most [`MAX_CONCURRENT`] at once across all streams,
//! and a poster that cannot get a slot right away is simply skipped until the
//! next keyframe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use uuid::Uuid;

use super::metrics::LiveMetrics;
use super::relay::StreamKeys;
use super::segmenter::VideoFrame;
use super::worker::StreamWorker;
use crate::store::{DynStore, ObjectKey, PutOptions, Visibility};
use crate::thumbnail::encode::{DEFAULT_BACKGROUND, StillFormat, encode};
use crate::thumbnail::frames::{Frame, frame_from_buffer};
use crate::thumbnail::resize::{Filter, Size, geometry};
use crate::thumbnail::yuv::frame_to_rgb;

/// Poster decodes running at once on the node.
pub const MAX_CONCURRENT: usize = 2;
/// Posters change every few seconds.
pub const POSTER_CACHE: &str = "public, max-age=5";
const DECODE_TIMEOUT: Duration = Duration::from_secs(5);
const JPEG_QUALITY: u8 = 80;

/// What every stream's poster tap shares.
#[derive(Clone)]
pub struct PosterDeps {
    pub store: DynStore,
    pub metrics: LiveMetrics,
    pub slots: Arc<Semaphore>,
}

/// One publisher's poster schedule.
pub struct PosterTap {
    deps: PosterDeps,
    worker: Arc<StreamWorker>,
    stream: Uuid,
    interval: Duration,
    width: u32,
    next_due: Instant,
    busy: Arc<AtomicBool>,
}

impl PosterTap {
    /// `None` when the profile has posters off.
    pub fn new(
        deps: PosterDeps,
        worker: Arc<StreamWorker>,
        stream: Uuid,
        interval: Option<Duration>,
        width: u32,
    ) -> Option<PosterTap> {
        Some(PosterTap {
            deps,
            worker,
            stream,
            interval: interval?,
            width,
            next_due: Instant::now(),
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Sees every video frame; takes a keyframe when a poster is due.
    pub fn offer(&mut self, frame: &VideoFrame) {
        if !frame.keyframe || Instant::now() < self.next_due {
            return;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(permit) = self.deps.slots.clone().try_acquire_owned() else {
            self.busy.store(false, Ordering::Release);
            return;
        };
        self.next_due = Instant::now() + self.interval;
        let data = frame.data.clone();
        let (deps, worker, stream, width, busy) = (
            self.deps.clone(),
            self.worker.clone(),
            self.stream,
            self.width,
            self.busy.clone(),
        );
        tokio::spawn(async move {
            let made = worker.poster(data, width).await;
            drop(permit);
            match made {
                Ok(jpeg) => store_poster(&deps, stream, jpeg).await,
                Err(e) => warn!(stream_id = %stream, error = %e, "live poster failed"),
            }
            busy.store(false, Ordering::Release);
        });
    }
}

async fn store_poster(deps: &PosterDeps, stream: Uuid, jpeg: Bytes) {
    let Ok(key) = ObjectKey::parse(StreamKeys::poster(stream)) else {
        return;
    };
    let opts = PutOptions {
        content_type: Some("image/jpeg".into()),
        cache_control: Some(POSTER_CACHE.into()),
        visibility: Visibility::Public,
        owner: None,
    };
    let bytes = jpeg.len();
    match deps.store.put_bytes(&key, jpeg, &opts).await {
        Ok(()) => {
            deps.metrics.posters.inc();
            debug!(stream_id = %stream, bytes, "live poster stored");
        }
        // The next one comes in a few seconds; the relay's retries are for
        // segments, not posters.
        Err(e) => debug!(stream_id = %stream, error = %e, "live poster not stored"),
    }
}

/// Decodes one H.264 keyframe (Annex B with its SPS/PPS) and encodes it as a
/// JPEG `width` pixels wide (never upscaled). Blocking; runs in the stream's
/// media process.
pub fn make_poster(keyframe: &[u8], width: u32) -> Result<Vec<u8>, String> {
    let frame = decode_keyframe(keyframe)?;
    let geo = geometry(frame.width, frame.height, Size::Width(width));
    let rgb = frame_to_rgb(&frame, &geo, Filter::Lanczos3)?;
    encode(
        &rgb,
        geo.width,
        geo.height,
        3,
        StillFormat::Jpeg,
        JPEG_QUALITY,
        DEFAULT_BACKGROUND,
    )
}

/// Caps of the access units ingest produces (H.264 Annex B, one access unit
/// per buffer), for the GStreamer pipelines that decode them.
pub fn annex_b_caps() -> gst::Caps {
    gst::Caps::builder("video/x-h264")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build()
}

/// One access unit through `h264parse ! avdec_h264` (single-threaded: posters
/// must not compete with ingest for cores) to I420.
fn decode_keyframe(keyframe: &[u8]) -> Result<Frame, String> {
    crate::media::init().map_err(|e| e.to_string())?;
    let caps = annex_b_caps();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|e| format!("{name}: {e}"))
    };
    let parse = make("h264parse")?;
    let decode = make("avdec_h264")?;
    decode.set_property_from_str("max-threads", "1");
    let convert = make("videoconvert")?;
    let sink = gst_app::AppSink::builder()
        .caps(
            &gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        )
        .sync(false)
        .max_buffers(1)
        .build();
    let pipeline = gst::Pipeline::new();
    let elements = [
        src.upcast_ref::<gst::Element>(),
        &parse,
        &decode,
        &convert,
        sink.upcast_ref(),
    ];
    pipeline.add_many(elements).map_err(|e| e.to_string())?;
    gst::Element::link_many(elements).map_err(|e| e.to_string())?;
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("cannot start the decoder: {e}"))?;
        let mut buffer = gst::Buffer::from_slice(keyframe.to_vec());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::ZERO);
        }
        src.push_buffer(buffer).map_err(|e| format!("push: {e}"))?;
        src.end_of_stream().map_err(|e| format!("eos: {e}"))?;
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_nseconds(
                DECODE_TIMEOUT.as_nanos() as u64
            ))
            .ok_or_else(|| "the keyframe did not decode".to_string())?;
        let buffer = sample.buffer().ok_or("sample without buffer")?;
        let caps = sample.caps().ok_or("sample without caps")?;
        frame_from_buffer(buffer, caps, 0.0).map_err(|e| e.to_string())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real x264 keyframe (Annex B with SPS/PPS), from GStreamer.
    fn keyframe(width: u32, height: u32) -> Vec<u8> {
        crate::media::init().unwrap();
        let desc = format!(
            "videotestsrc num-buffers=1 pattern=smpte ! video/x-raw,width={width},height={height} \
             ! x264enc ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink"
        );
        let pipeline = gst::parse::launch(&desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let sample = sink.pull_sample().unwrap();
        let data = sample.buffer().unwrap().map_readable().unwrap().to_vec();
        pipeline.set_state(gst::State::Null).unwrap();
        data
    }

    #[test]
    fn a_keyframe_becomes_a_jpeg_of_the_asked_width() {
        let jpeg = make_poster(&keyframe(640, 360), 320).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (320, 180));
        // Never upscaled.
        let jpeg = make_poster(&keyframe(160, 90), 320).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (160, 90));
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        assert!(make_poster(&[0, 0, 0, 1, 0x65, 1, 2, 3], 320).is_err());
    }
}
