//! The optional small ladder of a live stream: renditions encoded next to the
//! source, which is always relayed as published.
//!
//! ```text
//! publisher access units ──▶ stream's media process (decode once, x264 per rung) ──▶ rung segmenter ──▶ relay
//!   (one session per publisher connection)             ([`super::worker`])                 ▲
//! publisher AAC ──────────────────────────────────────── (copied) ─────────────────────────┘
//! ```
//!
//! The decode and the encodes run in the stream's sandboxed media process
//! ([`super::worker`]); this module keeps what outlives it: the rungs'
//! segmenters and relays, the sessions, and the audio. Audio is not
//! re-encoded: each rung carries the publisher's AAC, released to the rung's
//! segmenter as its video comes back from the encoder, so segments interleave
//! as the source's do.
//!
//! Alignment: wherever the source's segmenter starts a segment, the rung
//! encoders put a keyframe on that very frame and the rung segmenters cut
//! there and only there ([`Segmenter::push_video_following`]). Segment N of
//! every rendition covers the same time, with the same sequence number, so
//! players switch at any boundary.
//!
//! "When the machine has the CPU for it": a node encodes at most
//! `live.max_transcodes` streams; others with a transcoding profile are relayed
//! as the source alone. A session whose decoder falls more than a few seconds
//! behind real time is stopped (the rungs end their segment there) rather than
//! let the backlog grow; the source is never affected. Neither is it when the
//! media process crashes: the session ends `Crashed`, and the publisher's
//! connection starts a new one (and a new process) at the next keyframe, a
//! few times at most.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use super::flv::AvcConfig;
use super::metrics::LiveMetrics;
use super::relay::{ClosedMedia, Relay};
use super::segmenter::{AudioFrame, ClosedSegment, Segmenter, SegmenterConfig, VideoFrame};
use super::worker::wire::SessionEnd;
use super::worker::{Ended, RungSink, SessionLink, SessionStart, StreamWorker, WorkerError};
use crate::presets::live::LiveTranscode;
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

#[derive(Debug, Clone, thiserror::Error)]
pub enum LadderError {
    #[error("the renditions' pipeline failed: {0}")]
    Pipeline(String),
    #[error("the rendition encoders fall behind real time")]
    Overloaded,
    #[error("the stream's media process crashed ({0})")]
    Crashed(String),
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
            LadderError::Crashed(_) => "crashed",
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
    /// The stream's media process, where the encoders run.
    worker: Arc<StreamWorker>,
    /// Encoding stopped for the publisher connected now (overloaded, failed,
    /// crashed too often): the rungs get no new segments.
    paused: AtomicBool,
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
    pub worker: Arc<StreamWorker>,
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
            worker: start.worker,
            paused: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// Whether this node encodes the renditions (it had a transcode slot).
    pub fn encodes(&self) -> bool {
        self.permit.is_some()
    }

    /// Whether the rungs are being encoded now (`renditions[].encoded`).
    pub fn encoding(&self) -> bool {
        self.encodes() && !self.paused.load(Ordering::Acquire)
    }

    /// Encoding stops for the publisher connected now; a new session
    /// (e.g. a reconnect) starts it again.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
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
        let sink: Weak<dyn RungSink> = self.me.clone();
        let started = self.worker.begin(SessionStart {
            session: id,
            spec: &self.spec,
            sizes,
            base,
            composition,
            sink,
        });
        let (link, over) = match started {
            Ok(started) => started,
            Err(e) => {
                self.drained(id, false);
                return Err(match e {
                    WorkerError::Busy => LadderError::Overloaded,
                    e => LadderError::Pipeline(e.to_string()),
                });
            }
        };
        self.paused.store(false, Ordering::Release);
        let ended = Arc::new(Mutex::new(None));
        let (finish_tx, finish_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(watch(ladder, id, over, ended.clone(), finish_rx));
        info!(stream_id = %self.stream, session = id, width, height, "encoding renditions");
        Ok(Session {
            link,
            base,
            last_dts: first.dts,
            ended,
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

impl RungSink for Ladder {
    fn rung_frame(&self, index: usize, session: u64, frame: VideoFrame, cut: bool) {
        if index < self.rungs.len() {
            self.output(index, session, frame, cut);
        }
    }
}

/// One publisher connection's encoding: frames in, rung frames out through
/// [`Ladder::output`]. Dropping it finishes it.
pub struct Session {
    link: SessionLink,
    /// Publisher time (90 kHz) at pipeline time 0.
    base: i64,
    last_dts: i64,
    /// Why the session is over, once it is.
    ended: Arc<Mutex<Option<LadderError>>>,
    finish: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Session {
    /// One source access unit; `cut` when the source's segmenter started a
    /// segment with it. An error ends the session (the caller finishes it).
    /// Never waits: a media process that does not keep up is `Overloaded`.
    pub fn push(&mut self, frame: &VideoFrame, cut: bool) -> Result<(), LadderError> {
        if let Some(e) = lock(&self.ended).clone() {
            return Err(e);
        }
        let step = frame.dts - self.last_dts;
        if !(-MAX_JUMP_TICKS..=MAX_JUMP_TICKS).contains(&step) || frame.dts < self.base {
            return Err(LadderError::TimestampJump);
        }
        self.last_dts = self.last_dts.max(frame.dts);
        self.link.frame(frame, cut).map_err(|e| match e {
            WorkerError::Busy => LadderError::Overloaded,
            WorkerError::Gone => LadderError::Crashed("gone".into()),
            e => LadderError::Pipeline(e.to_string()),
        })
    }

    /// Ends the session: the encoders flush what they hold into the rungs
    /// (in the background), then the rungs close their segments.
    pub fn finish(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(tx) = self.finish.take() {
            self.link.finish();
            let _ = tx.send(());
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits for a session to end in the media process (drained after
/// [`Session::finish`], failed, overloaded, crashed) or for its flush to time
/// out; then the rungs close their segments.
async fn watch(
    ladder: Arc<Ladder>,
    session: u64,
    over: tokio::sync::oneshot::Receiver<Ended>,
    ended: Arc<Mutex<Option<LadderError>>>,
    finish: tokio::sync::oneshot::Receiver<()>,
) {
    let mut over = std::pin::pin!(over);
    let mut finish = std::pin::pin!(finish);
    let mut finishing = false;
    let deadline = tokio::time::sleep(Duration::MAX / 4);
    let mut deadline = std::pin::pin!(deadline);
    let why = loop {
        tokio::select! {
            end = &mut over => break match end {
                Ok(Ended::Child(SessionEnd::Drained)) => None,
                Ok(Ended::Child(SessionEnd::Overloaded)) => Some(LadderError::Overloaded),
                Ok(Ended::Child(SessionEnd::Failed { message })) => {
                    warn!(stream_id = %ladder.stream, session, error = %message, "rendition pipeline failed");
                    ladder.metrics.transcode_failed("pipeline");
                    Some(LadderError::Pipeline(message))
                }
                Ok(Ended::Crashed(why)) => Some(LadderError::Crashed(why)),
                Err(_) => Some(LadderError::Crashed("gone".into())),
            },
            _ = &mut finish, if !finishing => {
                finishing = true;
                ladder.state().draining += 1;
                deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = &mut deadline, if finishing => {
                warn!(stream_id = %ladder.stream, session, "rendition encoders did not flush in time");
                ladder.worker.forget(session);
                break None;
            }
        }
    };
    lock(&ended).get_or_insert(why.unwrap_or_else(|| LadderError::Pipeline("stopped".into())));
    ladder.drained(session, finishing);
    debug!(stream_id = %ladder.stream, session, "rendition session over");
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    fn rungs_keep_the_aspect_and_never_upscale() {
        assert_eq!(rung_size(1280, 720, 480), (854, 480));
        assert_eq!(rung_size(720, 1280, 240), (240, 426));
        assert_eq!(rung_size(640, 360, 480), (640, 360));
        assert_eq!(rung_size(641, 361, 240), (426, 240));
    }
}
