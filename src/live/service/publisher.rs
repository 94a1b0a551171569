//! One connected publisher: the frames a protocol front end hands in, held
//! until the track list is settled, then cut into segments (and fed to the
//! renditions' encoder when the profile transcodes).

use std::sync::{Arc, Weak};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::{Active, LiveService};
use crate::live::ladder::{LadderError, Session};
use crate::live::poster::PosterTap;
use crate::live::registry::InputInfo;
use crate::live::segmenter::{AudioFrame, ClosedSegment, VideoFrame};

/// How long video waits at the start of a publisher for its audio
/// configuration (an FLV sequence header, a TS demuxer's first ADTS frame), so
/// that the first segment lists every track (a track appearing later would
/// start the second segment with a discontinuity). A stream without audio
/// starts this much later.
const AUDIO_WAIT_TICKS: i64 = 90_000;
/// Frames held at most meanwhile (a broken timestamp must not grow it).
const MAX_START_FRAMES: usize = 240;
/// Times a publisher connection starts the renditions again after the
/// stream's media process crashed; then it goes on as the source only.
const MAX_LADDER_RESTARTS: u32 = 3;

#[derive(Default)]
struct StartBuffer {
    video: Vec<VideoFrame>,
    audio: Vec<AudioFrame>,
}

/// One connected publisher: access units in (whatever the protocol), segments
/// out.
pub struct Publisher {
    service: Weak<LiveService>,
    active: Arc<Active>,
    connection: u64,
    kick: CancellationToken,
    poster: Option<PosterTap>,
    /// Frames held at the start until the audio configuration is known.
    starting: Option<StartBuffer>,
    metadata: InputInfo,
    closed: bool,
    /// This connection's rendition encoding, when the profile transcodes.
    session: Option<Session>,
    /// Encoding stopped for the rest of this connection (overloaded, failed).
    ladder_off: bool,
    /// Media process crashes during this connection's encoding.
    crashes: u32,
}

impl Publisher {
    pub(super) fn new(
        service: Weak<LiveService>,
        active: Arc<Active>,
        connection: u64,
        kick: CancellationToken,
        poster: Option<PosterTap>,
    ) -> Publisher {
        Publisher {
            service,
            active,
            connection,
            kick,
            poster,
            starting: Some(StartBuffer::default()),
            metadata: InputInfo::default(),
            closed: false,
            session: None,
            ladder_off: false,
            crashes: 0,
        }
    }

    pub fn stream_id(&self) -> Uuid {
        self.active.id
    }

    /// Cancelled when the service wants this publisher gone (stream deleted,
    /// node shutting down).
    pub fn kicked(&self) -> CancellationToken {
        self.kick.clone()
    }

    /// Idle timeout of the stream's profile.
    pub fn idle_timeout(&self) -> std::time::Duration {
        self.active.profile.idle_timeout()
    }

    /// What `onMetaData` said (size and frame rate).
    pub fn metadata(&mut self, width: Option<u32>, height: Option<u32>, frame_rate: Option<f64>) {
        self.metadata.width = width.or(self.metadata.width);
        self.metadata.height = height.or(self.metadata.height);
        self.metadata.frame_rate = frame_rate.or(self.metadata.frame_rate);
    }

    /// The codecs the publisher sends (RFC 6381 strings), once known. Audio
    /// goes into segments from the next one after its codec is known.
    pub fn set_codecs(&mut self, video: Option<String>, audio: Option<String>) {
        self.metadata.video_codec = video;
        self.metadata.audio_codec = audio;
    }

    /// One video access unit (H.264 Annex B, 90 kHz timestamps).
    pub fn video(&mut self, frame: VideoFrame) {
        if let Some(start) = &mut self.starting {
            let waited = start
                .video
                .first()
                .is_some_and(|first| frame.dts - first.dts >= AUDIO_WAIT_TICKS);
            start.video.push(frame);
            if waited || start.video.len() > MAX_START_FRAMES {
                self.start();
            }
            return;
        }
        self.push_video(frame);
    }

    /// One audio access unit (ADTS AAC, 90 kHz timestamps).
    pub fn audio(&mut self, frame: AudioFrame) {
        if let Some(start) = &mut self.starting {
            start.audio.push(frame);
            if self.metadata.audio_codec.is_some() {
                self.start();
            }
            return;
        }
        if let Some(ladder) = &self.active.ladder {
            ladder.audio(&frame);
        }
        let mut media = self.active.media.lock().unwrap_or_else(|p| p.into_inner());
        media.segmenter.push_audio(frame);
    }

    /// The track list is settled: what waited goes to the segmenter, in time
    /// order.
    fn start(&mut self) {
        let Some(start) = self.starting.take() else {
            return;
        };
        let mut audio = start.audio.into_iter().peekable();
        for frame in start.video {
            while let Some(a) = audio.next_if(|a| a.pts <= frame.dts) {
                self.audio(a);
            }
            self.push_video(frame);
        }
        for a in audio {
            self.audio(a);
        }
    }

    fn push_video(&mut self, frame: VideoFrame) {
        if let Some(poster) = &mut self.poster {
            poster.offer(&frame);
        }
        let copy = self.active.ladder.is_some().then(|| frame.clone());
        let audio = self.metadata.audio_codec.is_some();
        let closed = {
            let mut media = self.active.media.lock().unwrap_or_else(|p| p.into_inner());
            media.segmenter.set_audio(audio);
            media.segmenter.push_video(frame)
        };
        if let Some(frame) = copy {
            // The source's lock is released: rung output takes it for the
            // wall clock.
            self.encode(&frame, closed.is_some(), audio);
        }
        if let Some(segment) = closed {
            self.closed_segment(segment);
        }
    }

    /// Feeds the renditions' encoder; `cut` when the source started a segment
    /// with this frame.
    fn encode(&mut self, frame: &VideoFrame, cut: bool, audio: bool) {
        let Some(ladder) = self.active.ladder.clone() else {
            return;
        };
        if self.ladder_off || !ladder.encodes() {
            return;
        }
        ladder.set_audio(audio);
        let stream_id = self.active.id;
        let mut cut = cut;
        if self.session.is_none() {
            if !frame.keyframe {
                return;
            }
            match ladder.begin(frame) {
                Ok(session) => self.session = Some(session),
                Err(e) => {
                    self.ladder_stopped(e);
                    return;
                }
            }
            cut = true;
        }
        let Some(session) = &mut self.session else {
            return;
        };
        if let Err(e) = session.push(frame, cut) {
            if let Some(session) = self.session.take() {
                session.finish();
            }
            match e {
                LadderError::TimestampJump => {
                    // A new session starts at the next keyframe.
                    info!(stream_id = %stream_id, "timestamps jumped; renditions restart at the next keyframe");
                }
                LadderError::Crashed(_) if self.crashes < MAX_LADDER_RESTARTS => {
                    self.crashes += 1;
                    if let Some(service) = self.service.upgrade() {
                        service.metrics.transcode_failed(e.reason());
                    }
                    warn!(stream_id = %stream_id, error = %e, restart = self.crashes,
                        "renditions restart at the next keyframe; the source goes on");
                }
                e => self.ladder_stopped(e),
            }
        }
    }

    fn ladder_stopped(&mut self, e: LadderError) {
        self.ladder_off = true;
        if matches!(e, LadderError::Ending) {
            return;
        }
        if let Some(ladder) = &self.active.ladder {
            ladder.pause();
        }
        if let Some(service) = self.service.upgrade() {
            service.metrics.transcode_failed(e.reason());
        }
        warn!(stream_id = %self.active.id, error = %e, "renditions stopped for this connection; the source goes on");
    }

    fn closed_segment(&mut self, segment: ClosedSegment) {
        let Some(service) = self.service.upgrade() else {
            return;
        };
        let report = {
            let mut media = self.active.media.lock().unwrap_or_else(|p| p.into_inner());
            !std::mem::replace(&mut media.input_reported, true)
        };
        if report {
            let mut input = self.metadata.clone();
            if segment.duration_ticks > 0 {
                input.bitrate_kbps = Some(
                    (segment.data.len() as u64 * 8 * 90 / segment.duration_ticks.max(1)) as u32,
                );
            }
            let registry = service.registry.clone();
            let id = self.active.id;
            tokio::spawn(async move {
                if let Err(e) = registry.set_input(id, &input).await {
                    warn!(stream_id = %id, error = %e, "cannot record the stream's input");
                }
            });
        }
        service.hand_over(&self.active, segment);
    }

    /// The publisher is gone (clean stop, dropped connection, idle, kicked).
    pub fn leave(mut self, reason: &str) {
        info!(stream_id = %self.active.id, reason, "publisher gone");
        self.finish();
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        // A publisher gone within its first second still leaves its media.
        self.start();
        if let Some(session) = self.session.take() {
            session.finish();
        }
        if let Some(service) = self.service.upgrade() {
            service.publisher_left(&self.active, self.connection);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.finish();
    }
}
