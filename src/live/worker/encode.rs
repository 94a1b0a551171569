//! The renditions' pipelines, in the stream's media process: one per
//! publisher session.
//!
//! ```text
//! access units ──▶ appsrc ! h264parse ! avdec_h264 ! tee
//!   (from the node)                                 └─ per rung: queue ! videoscale ! videoconvert
//!                                                      ! x264enc ! h264parse ! appsink ──▶ the node
//! ```
//!
//! One decode feeds every rung. Wherever the source's segmenter started a
//! segment (`cut`), the rung encoders are made to put a keyframe on that very
//! frame (a force-key-unit event on the encoder's sink pad), and the encoded
//! frame goes back marked `cut`, so the node's rung segmenters cut there and
//! only there: segment N of every rendition covers the same time.
//!
//! Threads: the appsrc's streaming thread decodes, each rung's queue gives it
//! an encoder thread (x264 with one thread: many small encodes on a small
//! machine share it better than a few wide ones). Encoded frames leave the
//! streaming threads through a bounded channel to the writer thread
//! (`try_send`: no streaming thread ever waits on the pipe to the node). A
//! session whose decoder falls behind, or whose output the node does not take,
//! ends `overloaded`; a bus thread per session reports its end.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use tracing::{debug, warn};

use super::wire::{FromWorker, SessionEnd};
use crate::presets::live::LiveTranscode;

/// Frames waiting for the decoder before a session is declared overloaded
/// (4 s at 30 fps).
const MAX_BACKLOG_FRAMES: u64 = 120;

/// A message for the node, with its payload.
pub type Outgoing = (FromWorker, Vec<u8>);

/// The pipelines of this stream's sessions.
pub struct Encoder {
    sessions: HashMap<u64, Running>,
    out: SyncSender<Outgoing>,
}

struct Running {
    src: gst_app::AppSrc,
    /// Per rung: pipeline times (ns) of frames the source cut at.
    cuts: Vec<Arc<Mutex<VecDeque<u64>>>>,
    end: Arc<Mutex<Option<SessionEnd>>>,
}

impl Encoder {
    pub fn new(out: SyncSender<Outgoing>) -> Encoder {
        Encoder {
            sessions: HashMap::new(),
            out,
        }
    }

    /// Starts session `session`: rung `i` encoded at `sizes[i]`.
    pub fn begin(&mut self, session: u64, spec: &LiveTranscode, sizes: &[(u32, u32)]) {
        if spec.rungs.len() != sizes.len() {
            self.over(session, failed(&"a size per rung"));
            return;
        }
        let end = Arc::new(Mutex::new(None));
        match build(spec, sizes, session, &self.out, &end) {
            Ok((pipeline, src, cuts)) => {
                if let Err(e) = watch(pipeline, session, self.out.clone(), end.clone()) {
                    self.over(session, failed(&e));
                    return;
                }
                debug!(session, "rendition session started");
                self.sessions.insert(session, Running { src, cuts, end });
            }
            Err(e) => self.over(session, failed(&e)),
        }
    }

    /// One source access unit of `session`.
    pub fn frame(
        &mut self,
        session: u64,
        pts_ns: u64,
        dts_ns: u64,
        keyframe: bool,
        cut: bool,
        data: Vec<u8>,
    ) {
        let Some(running) = self.sessions.get(&session) else {
            return;
        };
        if lock(&running.end).is_some() {
            // Over already (failed or overloaded): the bus thread reports it.
            self.sessions.remove(&session);
            return;
        }
        if running.src.current_level_buffers() > MAX_BACKLOG_FRAMES {
            stop(&running.src, &running.end, SessionEnd::Overloaded);
            self.sessions.remove(&session);
            return;
        }
        if cut {
            for queue in &running.cuts {
                lock(queue).push_back(pts_ns);
            }
        }
        let mut buffer = gst::Buffer::from_mut_slice(data);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts_ns));
            b.set_dts(gst::ClockTime::from_nseconds(dts_ns));
            if !keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        if let Err(e) = running.src.push_buffer(buffer) {
            stop(&running.src, &running.end, failed(&e));
            self.sessions.remove(&session);
        }
    }

    /// The node is done with `session`: the encoders flush, then the bus
    /// thread reports it drained.
    pub fn finish(&mut self, session: u64) {
        if let Some(running) = self.sessions.remove(&session) {
            let _ = running.src.end_of_stream();
        }
    }

    fn over(&self, session: u64, end: SessionEnd) {
        if let SessionEnd::Failed { message } = &end {
            warn!(session, error = %message, "rendition session failed");
        }
        let _ = self
            .out
            .send((FromWorker::Over { session, end }, Vec::new()));
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        for (_, running) in self.sessions.drain() {
            let _ = running.src.end_of_stream();
        }
    }
}

fn failed(e: &dyn std::fmt::Display) -> SessionEnd {
    SessionEnd::Failed {
        message: e.to_string(),
    }
}

/// Ends a session early with `why` (the first reason stays).
fn stop(src: &gst_app::AppSrc, end: &Mutex<Option<SessionEnd>>, why: SessionEnd) {
    lock(end).get_or_insert(why);
    let _ = src.end_of_stream();
}

/// A thread that waits for the session's end of stream or error, reports it
/// and tears the pipeline down.
fn watch(
    pipeline: gst::Pipeline,
    session: u64,
    out: SyncSender<Outgoing>,
    end: Arc<Mutex<Option<SessionEnd>>>,
) -> std::io::Result<()> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| std::io::Error::other("pipeline without a bus"))?;
    std::thread::Builder::new()
        .name(format!("session-{session}"))
        .spawn(move || {
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::NONE,
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
            let reported = match msg.as_ref().map(|m| m.view()) {
                Some(gst::MessageView::Error(e)) => failed(&e.error()),
                _ => SessionEnd::Drained,
            };
            let why = lock(&end).take().unwrap_or(reported);
            if let SessionEnd::Failed { message } = &why {
                warn!(session, error = %message, "rendition pipeline failed");
            }
            let _ = pipeline.set_state(gst::State::Null);
            let _ = out.send((FromWorker::Over { session, end: why }, Vec::new()));
        })
        .map(drop)
}

type Built = (
    gst::Pipeline,
    gst_app::AppSrc,
    Vec<Arc<Mutex<VecDeque<u64>>>>,
);

fn build(
    spec: &LiveTranscode,
    sizes: &[(u32, u32)],
    session: u64,
    out: &SyncSender<Outgoing>,
    end: &Arc<Mutex<Option<SessionEnd>>>,
) -> Result<Built, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|e| format!("{name}: {e}"))
    };
    let caps = crate::live::poster::annex_b_caps();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(true)
        // Never blocks the reader: the backlog check in `frame` bounds it.
        .block(false)
        .max_bytes(0)
        .build();
    let parse = make("h264parse")?;
    let decode = make("avdec_h264")?;
    decode.set_property_from_str("max-threads", "1");
    let tee = make("tee")?;
    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many([src.upcast_ref::<gst::Element>(), &parse, &decode, &tee])
        .map_err(|e| err(&e))?;
    gst::Element::link_many([src.upcast_ref::<gst::Element>(), &parse, &decode, &tee])
        .map_err(|e| err(&e))?;

    let mut cuts = Vec::new();
    for (index, (rung, &(width, height))) in spec.rungs.iter().zip(sizes).enumerate() {
        let queue = gst::ElementFactory::make("queue")
            .property("max-size-buffers", 4u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .build()
            .map_err(|e| err(&e))?;
        let scale = make("videoscale")?;
        let size = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", width as i32)
                    .field("height", height as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            )
            .build()
            .map_err(|e| err(&e))?;
        let convert = make("videoconvert")?;
        let i420 = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .build(),
            )
            .build()
            .map_err(|e| err(&e))?;
        let enc = gst::ElementFactory::make("x264enc")
            .property("bitrate", rung.video_kbps)
            .property(
                "vbv-buf-capacity",
                crate::media::transcode::pipeline::VBV_BUFFER_MS,
            )
            .property("bframes", 0u32)
            .property("threads", 1u32)
            .property("key-int-max", 600u32)
            // Keyframes where the source cuts (forced), not on scene cuts.
            .property("option-string", format!("scenecut=0:level={}", rung.level))
            .build()
            .map_err(|_| "x264enc is missing".to_string())?;
        enc.set_property_from_str("speed-preset", &spec.x264_preset);
        enc.set_property_from_str("tune", "zerolatency");
        let profile = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("profile", rung.profile.caps_name())
                    .build(),
            )
            .build()
            .map_err(|e| err(&e))?;
        // SPS and PPS before every keyframe: each segment decodes alone.
        let reparse = gst::ElementFactory::make("h264parse")
            .property("config-interval", -1i32)
            .build()
            .map_err(|e| err(&e))?;
        let sink = gst_app::AppSink::builder().caps(&caps).sync(false).build();
        let chain = [
            &queue,
            &scale,
            &size,
            &convert,
            &i420,
            &enc,
            &profile,
            &reparse,
            sink.upcast_ref::<gst::Element>(),
        ];
        pipeline.add_many(chain).map_err(|e| err(&e))?;
        gst::Element::link_many(chain).map_err(|e| err(&e))?;
        let tee_pad = tee
            .request_pad_simple("src_%u")
            .ok_or_else(|| "tee pad".to_string())?;
        let queue_pad = queue
            .static_pad("sink")
            .ok_or_else(|| "queue pad".to_string())?;
        tee_pad.link(&queue_pad).map_err(|e| err(&e))?;

        let rung_cuts = Arc::new(Mutex::new(VecDeque::new()));
        force_keyframes(&enc, rung_cuts.clone())?;
        sink.set_callbacks(rung_output(
            index,
            session,
            rung_cuts.clone(),
            out.clone(),
            (src.clone(), end.clone()),
        ));
        cuts.push(rung_cuts);
    }
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| err(&e))?;
    Ok((pipeline, src, cuts))
}

/// Rung `index`'s appsink: each encoded frame to the node, at the running
/// time that matches the input's timestamps, marked where the source cut.
fn rung_output(
    index: usize,
    session: u64,
    cuts: Arc<Mutex<VecDeque<u64>>>,
    out: SyncSender<Outgoing>,
    (src, end): (gst_app::AppSrc, Arc<Mutex<Option<SessionEnd>>>),
) -> gst_app::AppSinkCallbacks {
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let Some(buffer) = sample.buffer() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            // x264enc moves its output 1000 hours on (room for negative DTS)
            // in a new segment: running time is what matches the input.
            let running = sample
                .segment()
                .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                .zip(buffer.pts())
                .and_then(|(segment, pts)| segment.to_running_time(pts));
            let Some(ns) = running.map(gst::ClockTime::nseconds) else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let cut = {
                let mut queue = lock(&cuts);
                while queue.front().is_some_and(|&c| c < ns) {
                    queue.pop_front();
                }
                queue.front() == Some(&ns) && queue.pop_front().is_some()
            };
            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
            let frame = FromWorker::Rung {
                session,
                index,
                pts_ns: ns,
                keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                cut,
            };
            match out.try_send((frame, map.as_slice().to_vec())) {
                Ok(()) => Ok(gst::FlowSuccess::Ok),
                // The node does not keep up with this stream's output.
                Err(TrySendError::Full(_)) => {
                    stop(&src, &end, SessionEnd::Overloaded);
                    Err(gst::FlowError::Eos)
                }
                Err(TrySendError::Disconnected(_)) => Err(gst::FlowError::Eos),
            }
        })
        .build()
}

/// Before a frame the source cut at reaches the encoder, asks it for a
/// keyframe there.
fn force_keyframes(enc: &gst::Element, cuts: Arc<Mutex<VecDeque<u64>>>) -> Result<(), String> {
    let pad = enc
        .static_pad("sink")
        .ok_or_else(|| "encoder pad".to_string())?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Some(pts) = buffer.pts()
            && lock(&cuts).contains(&pts.nseconds())
        {
            // "As soon as possible", i.e. this very buffer: a running time
            // would be compared with the encoder's own idea of it, which x264enc
            // moves 1000 hours on.
            let event = gst_video::DownstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            pad.send_event(event);
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
