//! The optional small ladder of a live stream: renditions encoded on the node
//! next to the source, which is always relayed as published.
//!
//! ```text
//! publisher access units ──▶ appsrc ! h264parse ! avdec_h264 ! tee
//!   (one session per publisher connection)        └─ per rung: queue ! videoscale ! videoconvert
//!                                                      ! x264enc ! h264parse ! appsink ──▶ rung segmenter ──▶ relay
//! publisher AAC ────────────────────────────────────────────── (copied) ──────────┘
//! ```
//!
//! One decode feeds every rung. Audio is not re-encoded: each rung carries the
//! publisher's AAC, released to the rung's segmenter as its video comes out of
//! the encoder, so segments interleave as the source's do.
//!
//! Alignment: wherever the source's segmenter starts a segment, the rung
//! encoders are made to put a keyframe on that very frame (a force-key-unit
//! event on the encoder's sink pad) and the rung segmenters cut there and only
//! there ([`Segmenter::push_video_following`]). Segment N of every rendition
//! covers the same time, with the same sequence number, so players switch at
//! any boundary. A source whose keyframes are far apart still gets
//! independent rung segments, since the forced keyframes are the rungs' own.
//!
//! Threads: the appsrc's streaming thread decodes, each rung's queue gives it
//! an encoder thread (x264 with one thread: many small encodes on a small
//! machine share it better than a few wide ones). Encoded frames are muxed on
//! those threads (CPU only) and handed to the relay over a channel: no
//! blocking I/O on GStreamer threads.
//!
//! "When the machine has the CPU for it": a node encodes at most
//! `live.max_transcodes` streams; others with a transcoding profile are relayed
//! as the source alone. A session whose decoder falls more than a few seconds
//! behind real time is stopped (the rungs end their segment there) rather than
//! let the backlog grow; the source is never affected.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use tracing::{debug, info, warn};

use super::flv::AvcConfig;
use super::metrics::LiveMetrics;
use super::relay::{ClosedMedia, Relay};
use super::segmenter::{AudioFrame, ClosedSegment, Segmenter, SegmenterConfig, VideoFrame};
use crate::presets::live::LiveTranscode;

/// Frames waiting for the decoder before a session is declared overloaded
/// (4 s at 30 fps).
const MAX_BACKLOG_FRAMES: u64 = 120;
/// Audio frames a rung holds while its video is in the encoder (about 10 s
/// of AAC); only a stalled encoder reaches it.
const MAX_AUDIO_QUEUE: usize = 500;
/// Pipeline time of a session's first frame, so that timestamps stepping a
/// little back (B-frame DTS) stay positive.
const BASE_MARGIN_TICKS: i64 = 10 * 90_000;
/// A timestamp jump larger than this restarts the session.
const MAX_JUMP_TICKS: i64 = 10 * 90_000;
/// How long the encoders get to flush at the end of a session.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    #[error("the renditions' pipeline failed: {0}")]
    Pipeline(String),
    #[error("the rendition encoders fall behind real time")]
    Overloaded,
    #[error("the publisher's timestamps jumped")]
    TimestampJump,
    #[error("the first frame has no SPS")]
    NoSps,
    #[error("the stream is ending")]
    Ending,
}

impl LadderError {
    /// The `reason` label of `media_node_live_transcode_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            LadderError::Overloaded => "overloaded",
            LadderError::TimestampJump => "timestamp_jump",
            LadderError::NoSps | LadderError::Pipeline(_) => "pipeline",
            LadderError::Ending => "ending",
        }
    }
}

/// Wall clock of a rung segment's first frame (from the source's anchor, so
/// date ranges line up across renditions).
pub type Clock = Arc<dyn Fn(&ClosedSegment) -> DateTime<Utc> + Send + Sync>;

/// A rung as encoded, for the master playlist and the API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RungInfo {
    pub width: u32,
    pub height: u32,
    /// RFC 6381, from the encoder's SPS (`avc1.4d401e`).
    pub codec: Option<String>,
}

struct RungMedia {
    segmenter: Segmenter,
    /// The publisher's audio, waiting for the rung's video to catch up.
    audio: VecDeque<AudioFrame>,
    /// The session whose output this rung takes (0: none).
    session: u64,
    info: RungInfo,
}

/// One transcoded rendition: its segmenter (kept across publisher
/// reconnects, like the source's) and its relay.
pub struct LadderRung {
    pub name: String,
    pub video_kbps: u32,
    pub relay: Relay,
    media: Mutex<RungMedia>,
}

impl LadderRung {
    pub fn info(&self) -> RungInfo {
        self.lock().info.clone()
    }

    fn lock(&self) -> MutexGuard<'_, RungMedia> {
        self.media.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct State {
    /// The session whose frames the rungs take (0: none).
    current: u64,
    /// Sessions finishing (encoders flushing).
    draining: usize,
    /// The stream is over: relays end once nothing drains.
    ending: bool,
    ended: bool,
}

/// The renditions of one stream.
pub struct Ladder {
    stream: uuid::Uuid,
    spec: LiveTranscode,
    pub rungs: Vec<LadderRung>,
    state: Mutex<State>,
    next_session: AtomicU64,
    clock: Clock,
    metrics: LiveMetrics,
    /// A transcode slot of this node (`live.max_transcodes`); without one the
    /// rungs only finish what an earlier run left.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    me: Weak<Ladder>,
}

pub struct LadderStart {
    pub stream: uuid::Uuid,
    pub spec: LiveTranscode,
    /// A relay per rung, in the spec's order.
    pub relays: Vec<Relay>,
    /// Whether the stream had segments already (after a restart): the rungs
    /// continue after a discontinuity.
    pub resumed: bool,
    /// The source's segmenter settings; rungs follow its cuts, with its
    /// maximum as a guard.
    pub segmenter: SegmenterConfig,
    pub clock: Clock,
    pub metrics: LiveMetrics,
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Ladder {
    pub fn new(start: LadderStart) -> Arc<Ladder> {
        let mut config = start.segmenter;
        // Cuts come from the source; the guard keeps a rung bounded if they
        // stop coming (e.g. a forced keyframe got lost).
        config.max_ticks = Some(config.max_ticks.unwrap_or(config.target_ticks) * 2);
        config.target_ticks = u64::MAX / 4;
        let rungs = start
            .spec
            .rungs
            .iter()
            .zip(start.relays)
            .map(|(rung, relay)| {
                let mut segmenter = Segmenter::new(config.clone());
                if start.resumed {
                    segmenter.resume();
                }
                LadderRung {
                    name: rung.name.clone(),
                    video_kbps: rung.video_kbps,
                    relay,
                    media: Mutex::new(RungMedia {
                        segmenter,
                        audio: VecDeque::new(),
                        session: 0,
                        info: RungInfo::default(),
                    }),
                }
            })
            .collect();
        if start.permit.is_some() {
            start.metrics.transcodes.inc();
        }
        Arc::new_cyclic(|me| Ladder {
            stream: start.stream,
            spec: start.spec,
            rungs,
            state: Mutex::new(State::default()),
            next_session: AtomicU64::new(1),
            clock: start.clock,
            metrics: start.metrics,
            permit: start.permit,
            me: me.clone(),
        })
    }

    /// Whether this node encodes the renditions (it had a transcode slot).
    pub fn encodes(&self) -> bool {
        self.permit.is_some()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts encoding from `first`, a keyframe of a new publisher session.
    pub fn begin(&self, first: &VideoFrame) -> Result<Session, LadderError> {
        let ladder = self.me.upgrade().ok_or(LadderError::Ending)?;
        let (width, height) = sps(&first.data)
            .and_then(|c| c.dimensions())
            .ok_or(LadderError::NoSps)?;
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = self.state();
            if state.ending {
                return Err(LadderError::Ending);
            }
            state.current = id;
        }
        let mut sizes = Vec::new();
        for (rung, spec) in self.rungs.iter().zip(&self.spec.rungs) {
            let size = rung_size(width, height, spec.short_side);
            sizes.push(size);
            let mut media = rung.lock();
            if media.session != 0 {
                // An earlier session is still flushing: what it has not
                // delivered yet is left out.
                self.flush(rung, &mut media);
            }
            media.session = id;
            media.info.width = size.0;
            media.info.height = size.1;
        }
        let composition = (first.pts - first.dts).max(0);
        let base = first.dts - BASE_MARGIN_TICKS;
        let built = build(self, &ladder, id, &sizes, base, composition);
        let (pipeline, src, cuts) = match built {
            Ok(built) => built,
            Err(e) => {
                self.drained(id, false);
                return Err(e);
            }
        };
        let failed = Arc::new(AtomicBool::new(false));
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(watch(
            ladder,
            id,
            pipeline.clone(),
            failed.clone(),
            finish_rx,
        ));
        info!(stream_id = %self.stream, session = id, width, height, "encoding renditions");
        Ok(Session {
            src,
            base,
            last_dts: first.dts,
            cuts,
            failed,
            finish: Some(finish_tx),
        })
    }

    /// The publisher's audio configuration is known (or not); applies from
    /// each rung's next segment, as for the source.
    pub fn set_audio(&self, enabled: bool) {
        for rung in &self.rungs {
            rung.lock().segmenter.set_audio(enabled);
        }
    }

    /// One audio access unit of the publisher, for every rung.
    pub fn audio(&self, frame: &AudioFrame) {
        for rung in &self.rungs {
            let mut media = rung.lock();
            if media.session == 0 {
                continue;
            }
            if media.audio.len() >= MAX_AUDIO_QUEUE {
                media.audio.pop_front();
            }
            media.audio.push_back(frame.clone());
        }
    }

    /// The stream is over: once no session is flushing, each rung closes its
    /// last segment and its relay writes the rung's replay.
    pub fn end(&self) {
        let mut state = self.state();
        state.ending = true;
        self.maybe_end(&mut state);
    }

    /// Waits for every rung's relay to finish, at most `limit` each.
    pub async fn join(&self, limit: Duration) {
        for rung in &self.rungs {
            rung.relay.join(limit).await;
        }
    }

    pub fn pins_changed(&self) {
        for rung in &self.rungs {
            rung.relay.pins_changed();
        }
    }

    /// An encoded frame of rung `index` from session `session`.
    fn output(&self, index: usize, session: u64, frame: VideoFrame, cut: bool) {
        let rung = &self.rungs[index];
        let closed = {
            let mut media = rung.lock();
            if media.session != session {
                return;
            }
            if media.info.codec.is_none() && frame.keyframe {
                media.info.codec = sps(&frame.data).map(|c| c.codec_string());
            }
            while let Some(a) = media.audio.front()
                && a.pts <= frame.dts
            {
                let a = media.audio.pop_front().expect("peeked");
                media.segmenter.push_audio(a);
            }
            media.segmenter.push_video_following(frame, cut)
        };
        if let Some(segment) = closed {
            self.hand_over(rung, segment);
        }
    }

    /// Session `session` is over (its encoders flushed, failed or timed out).
    fn drained(&self, session: u64, counted: bool) {
        for rung in &self.rungs {
            let mut media = rung.lock();
            if media.session == session {
                self.flush(rung, &mut media);
            }
        }
        let mut state = self.state();
        if counted {
            state.draining = state.draining.saturating_sub(1);
        }
        if state.current == session {
            state.current = 0;
        }
        self.maybe_end(&mut state);
    }

    /// Closes what the rung holds of its session: the rest of the audio, the
    /// open segment; the next session continues after a discontinuity.
    fn flush(&self, rung: &LadderRung, media: &mut RungMedia) {
        while let Some(a) = media.audio.pop_front() {
            media.segmenter.push_audio(a);
        }
        let last = media.segmenter.finish();
        media.segmenter.resume();
        media.session = 0;
        if let Some(segment) = last {
            self.hand_over(rung, segment);
        }
    }

    fn maybe_end(&self, state: &mut State) {
        if !state.ending || state.ended || state.draining > 0 || state.current != 0 {
            return;
        }
        state.ended = true;
        for rung in &self.rungs {
            let mut media = rung.lock();
            if media.session != 0 {
                self.flush(rung, &mut media);
            }
            drop(media);
            rung.relay.end();
        }
    }

    fn hand_over(&self, rung: &LadderRung, segment: ClosedSegment) {
        let started_at = (self.clock)(&segment);
        rung.relay.segment(ClosedMedia {
            duration_us: segment.duration_ticks * 100 / 9,
            started_at,
            discontinuity: segment.discontinuity,
            independent: segment.independent,
            data: segment.data,
        });
    }
}

impl Drop for Ladder {
    fn drop(&mut self) {
        if self.permit.is_some() {
            self.metrics.transcodes.dec();
        }
    }
}

/// One publisher connection's encoding: frames in, rung frames out through
/// [`Ladder::output`]. Dropping it finishes it.
pub struct Session {
    src: gst_app::AppSrc,
    /// Publisher time (90 kHz) at pipeline time 0.
    base: i64,
    last_dts: i64,
    /// Per rung: pipeline times (ns) of frames the source cut at.
    cuts: Vec<Arc<Mutex<VecDeque<u64>>>>,
    failed: Arc<AtomicBool>,
    finish: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Session {
    /// One source access unit; `cut` when the source's segmenter started a
    /// segment with it. An error ends the session (the caller finishes it).
    pub fn push(&mut self, frame: &VideoFrame, cut: bool) -> Result<(), LadderError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(LadderError::Pipeline("stopped".into()));
        }
        let step = frame.dts - self.last_dts;
        if !(-MAX_JUMP_TICKS..=MAX_JUMP_TICKS).contains(&step) || frame.dts < self.base {
            return Err(LadderError::TimestampJump);
        }
        self.last_dts = self.last_dts.max(frame.dts);
        if self.src.current_level_buffers() > MAX_BACKLOG_FRAMES {
            return Err(LadderError::Overloaded);
        }
        let pts = to_ns(frame.pts.max(frame.dts) - self.base);
        let dts = to_ns(frame.dts - self.base);
        if cut {
            for queue in &self.cuts {
                lock(queue).push_back(pts);
            }
        }
        let mut buffer = gst::Buffer::from_slice(frame.data.clone());
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::from_nseconds(dts));
            if !frame.keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        self.src
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| LadderError::Pipeline(e.to_string()))
    }

    /// Ends the session: the encoders flush what they hold into the rungs
    /// (in the background), then the rungs close their segments.
    pub fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(tx) = self.finish.take() {
            let _ = self.src.end_of_stream();
            let _ = tx.send(());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Watches a session's bus until it drains (end of stream after
/// [`Session::finish`]), fails, or the flush times out; then the rungs close
/// their segments and the pipeline is torn down off the runtime.
async fn watch(
    ladder: Arc<Ladder>,
    session: u64,
    pipeline: gst::Pipeline,
    failed: Arc<AtomicBool>,
    finish: tokio::sync::oneshot::Receiver<()>,
) {
    let Some(bus) = pipeline.bus() else {
        ladder.drained(session, false);
        return;
    };
    let mut messages = bus.stream();
    let mut finish = std::pin::pin!(finish);
    let mut finishing = false;
    let deadline = tokio::time::sleep(Duration::MAX / 4);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            msg = messages.next() => match msg.as_ref().map(|m| m.view()) {
                None | Some(gst::MessageView::Eos(_)) => break,
                Some(gst::MessageView::Error(e)) => {
                    warn!(stream_id = %ladder.stream, session, error = %e.error(), "rendition pipeline failed");
                    ladder.metrics.transcode_failed("pipeline");
                    failed.store(true, Ordering::Release);
                    break;
                }
                _ => {}
            },
            _ = &mut finish, if !finishing => {
                finishing = true;
                ladder.state().draining += 1;
                deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = &mut deadline, if finishing => {
                warn!(stream_id = %ladder.stream, session, "rendition encoders did not flush in time");
                break;
            }
        }
    }
    failed.store(true, Ordering::Release);
    ladder.drained(session, finishing);
    debug!(stream_id = %ladder.stream, session, "rendition session over");
    // Stopping joins the streaming threads: not on the runtime.
    tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    });
}

type Built = (
    gst::Pipeline,
    gst_app::AppSrc,
    Vec<Arc<Mutex<VecDeque<u64>>>>,
);

fn build(
    ladder: &Ladder,
    strong: &Arc<Ladder>,
    session: u64,
    sizes: &[(u32, u32)],
    base: i64,
    composition: i64,
) -> Result<Built, LadderError> {
    crate::media::init().map_err(|e| LadderError::Pipeline(e.to_string()))?;
    let err = |e: &dyn std::fmt::Display| LadderError::Pipeline(e.to_string());
    let make = |name: &str| {
        gst::ElementFactory::make(name)
            .build()
            .map_err(|e| LadderError::Pipeline(format!("{name}: {e}")))
    };
    let caps = super::poster::annex_b_caps();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(true)
        // Never blocks ingest: the backlog check in `push` bounds it.
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
    for (index, (spec, &(width, height))) in ladder.spec.rungs.iter().zip(sizes).enumerate() {
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
            .property("bitrate", spec.video_kbps)
            .property(
                "vbv-buf-capacity",
                crate::media::transcode::pipeline::VBV_BUFFER_MS,
            )
            .property("bframes", 0u32)
            .property("threads", 1u32)
            .property("key-int-max", 600u32)
            // Keyframes where the source cuts (forced), not on scene cuts.
            .property("option-string", format!("scenecut=0:level={}", spec.level))
            .build()
            .map_err(|_| LadderError::Pipeline("x264enc is missing".into()))?;
        enc.set_property_from_str("speed-preset", &ladder.spec.x264_preset);
        enc.set_property_from_str("tune", "zerolatency");
        let profile = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("profile", spec.profile.caps_name())
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
            .ok_or_else(|| LadderError::Pipeline("tee pad".into()))?;
        let queue_pad = queue
            .static_pad("sink")
            .ok_or_else(|| LadderError::Pipeline("queue pad".into()))?;
        tee_pad.link(&queue_pad).map_err(|e| err(&e))?;

        let rung_cuts = Arc::new(Mutex::new(VecDeque::new()));
        force_keyframes(&enc, rung_cuts.clone())?;
        let weak = Arc::downgrade(strong);
        let out_cuts = rung_cuts.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(ladder) = weak.upgrade() else {
                        return Err(gst::FlowError::Eos);
                    };
                    let Some(buffer) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    // x264enc moves its output 1000 hours on (room for
                    // negative DTS) in a new segment: running time is what
                    // matches the input's timestamps.
                    let running = sample
                        .segment()
                        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
                        .zip(buffer.pts())
                        .and_then(|(segment, pts)| segment.to_running_time(pts));
                    let Some(ns) = running.map(gst::ClockTime::nseconds) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let cut = {
                        let mut queue = lock(&out_cuts);
                        while queue.front().is_some_and(|&c| c < ns) {
                            queue.pop_front();
                        }
                        queue.front() == Some(&ns) && queue.pop_front().is_some()
                    };
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let pts = base + from_ns(ns);
                    let frame = VideoFrame {
                        pts,
                        dts: pts - composition,
                        keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                        data: bytes::Bytes::copy_from_slice(map.as_slice()),
                    };
                    ladder.output(index, session, frame, cut);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        cuts.push(rung_cuts);
    }
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| err(&e))?;
    Ok((pipeline, src, cuts))
}

/// Before a frame the source cut at reaches the encoder, asks it for a
/// keyframe there.
fn force_keyframes(enc: &gst::Element, cuts: Arc<Mutex<VecDeque<u64>>>) -> Result<(), LadderError> {
    let pad = enc
        .static_pad("sink")
        .ok_or_else(|| LadderError::Pipeline("encoder pad".into()))?;
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

/// 90 kHz ticks (≥ 0) to nanoseconds, rounded up so that [`from_ns`] gives
/// the ticks back exactly.
fn to_ns(ticks: i64) -> u64 {
    ((ticks.max(0) as u128 * 100_000).div_ceil(9)) as u64
}

fn from_ns(ns: u64) -> i64 {
    (ns as u128 * 9 / 100_000) as i64
}

/// The first SPS of an Annex B access unit.
fn sps(data: &[u8]) -> Option<AvcConfig> {
    super::tsdemux::nal_units(data)
        .filter(|n| n[0] & 0x1F == 7)
        .find_map(AvcConfig::from_sps)
}

/// A rung's frame size: `short_side` on the source's short side (never more
/// than the source's), the other side in proportion, both even.
pub fn rung_size(width: u32, height: u32, short_side: u32) -> (u32, u32) {
    let even = |v: f64| ((v / 2.0).round() as u32).max(1) * 2;
    let short = width.min(height).max(1);
    let target = short_side.min(short) as f64;
    let scale = target / short as f64;
    (even(width as f64 * scale), even(height as f64 * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_survive_the_trip_through_nanoseconds() {
        for ticks in [0, 1, 2, 3, 8, 9, 3003, 90_000, 123_456_789, 8_589_934_591] {
            assert_eq!(from_ns(to_ns(ticks)), ticks, "{ticks}");
        }
    }

    #[test]
    fn rungs_keep_the_aspect_and_never_upscale() {
        assert_eq!(rung_size(1280, 720, 480), (854, 480));
        assert_eq!(rung_size(720, 1280, 240), (240, 426));
        assert_eq!(rung_size(640, 360, 480), (640, 360));
        assert_eq!(rung_size(641, 361, 240), (426, 240));
    }
}
