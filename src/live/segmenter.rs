//! Cuts a live stream into HLS MPEG-TS segments on keyframes, without
//! re-encoding.
//!
//! Input is shared by both ingest paths: RTMP (via [`super::flv`]) and SRT
//! (a TS demuxer) both deliver Annex B H.264 [`VideoFrame`]s and ADTS AAC
//! [`AudioFrame`]s with 90 kHz timestamps on the publisher's clock.
//!
//! Output timeline: the segmenter maps publisher time onto its own unbounded
//! 90 kHz timeline, which starts at [`SegmenterConfig::origin_ticks`] and runs
//! on without gaps across publisher reconnects ([`Segmenter::resume`]) and
//! across timestamp jumps inside a session. Segment start times and durations
//! are exact in 90 kHz: a segment lasts from its keyframe's DTS to the next
//! segment's keyframe DTS; the last one before a reconnect or the end lasts
//! until its last frame ends (audio included), and the next session starts
//! there, so no track overlaps or leaves a gap at the seam.
//!
//! Over-long segments: HLS segments must start with a keyframe, so a segment
//! is only ever cut at one. A publisher whose keyframe interval exceeds the
//! target gets longer segments, with their true duration recorded (the
//! playlist raises `EXT-X-TARGETDURATION` accordingly). Forcing a cut without
//! a keyframe would make undecodable segments; the relay can instead watch
//! [`Segmenter::open_duration_ticks`] and drop publishers that never send
//! keyframes.

use bytes::Bytes;

use super::ts::{TsError, TsMuxer};

/// One H.264 access unit in Annex B form (start codes; an AUD first, and for
/// keyframes the SPS and PPS, as [`super::flv`] produces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Decoding time, 90 kHz ticks.
    pub dts: i64,
    /// Presentation time, 90 kHz ticks.
    pub pts: i64,
    /// An IDR picture, where a segment may start.
    pub keyframe: bool,
    pub data: Bytes,
}

/// One or more AAC frames, each with its ADTS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Presentation time, 90 kHz ticks.
    pub pts: i64,
    pub data: Bytes,
}

/// How a [`Segmenter`] cuts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Target segment duration; a segment closes at the first keyframe at
    /// least this far (in DTS) after its start.
    pub target_ticks: u64,
    /// Longest segment when the publisher's keyframes are further apart than
    /// this: the segment is then cut at the first frame this far from its
    /// start, keyframe or not, so latency and segment size stay bounded (OBS's
    /// "auto" keyframe interval is about 8 s). `None`: only keyframes cut.
    pub max_ticks: Option<u64>,
    /// A video DTS that goes backwards, or forwards by more than this, within a
    /// session is a discontinuity: the timeline is rebased instead of
    /// producing a bogus duration. Audio further than this from the video is
    /// dropped.
    pub max_jump_ticks: u64,
    /// Output time of the first keyframe of the stream. Non-zero so that audio
    /// slightly ahead of video and the PCR (which runs behind the DTS) stay
    /// positive.
    pub origin_ticks: i64,
    /// Sequence number of the first segment.
    pub first_sequence: u64,
}

impl SegmenterConfig {
    /// Defaults (10 s jump limit, 10 s origin, sequence 0) for a target.
    pub fn new(target_ticks: u64) -> Self {
        Self {
            target_ticks,
            max_ticks: None,
            max_jump_ticks: 10 * 90_000,
            origin_ticks: 10 * 90_000,
            first_sequence: 0,
        }
    }
}

/// A finished segment, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedSegment {
    /// Media sequence number (consecutive from `first_sequence`).
    pub sequence: u64,
    /// Complete MPEG-TS: PAT, PMT, then PES packets starting with a keyframe.
    pub data: Bytes,
    /// DTS of the first keyframe, on the output timeline.
    pub start_dts: i64,
    /// Exact duration in 90 kHz ticks.
    pub duration_ticks: u64,
    /// Timestamps or codec parameters may not continue from the previous
    /// segment (publisher reconnect, timestamp jump, track list change):
    /// `EXT-X-DISCONTINUITY` goes before it.
    pub discontinuity: bool,
    /// Whether the segment's PMT lists an audio track.
    pub has_audio: bool,
    /// Whether it starts with a keyframe (decodable on its own). False only
    /// for segments cut at `max_ticks` inside a long GOP.
    pub independent: bool,
}

/// The segment being written.
#[derive(Debug)]
struct OpenSegment {
    start_dts: i64,
    has_audio: bool,
    discontinuity: bool,
    independent: bool,
}

/// Turns frames into MPEG-TS segments; one per live stream, kept across
/// publisher reconnects.
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    mux: TsMuxer,
    /// The open segment's bytes; handed out (and replaced) when it closes.
    buf: Vec<u8>,
    open: Option<OpenSegment>,
    /// Whether audio is configured; applies from the next segment on.
    audio: bool,
    /// Output time = publisher time + offset; `None` until the session's first
    /// keyframe anchors it.
    offset: Option<i64>,
    /// End of the media written so far (the later of last video DTS + one
    /// frame interval and last audio PTS + one audio frame) on the output
    /// timeline: where a finished segment ends and where the next session (or
    /// a timestamp jump) continues, so that neither track overlaps.
    end: i64,
    /// Last video DTS of this session, on the output timeline.
    last_dts: Option<i64>,
    /// Latest video frame interval, for durations of the last segment and for
    /// rebasing.
    frame_interval: i64,
    /// Last audio PTS of this session and the latest audio frame interval.
    last_audio_pts: Option<i64>,
    audio_interval: i64,
    pending_discontinuity: bool,
    /// Whether the previous segment listed audio; `None` before the first.
    prev_has_audio: Option<bool>,
    sequence: u64,
    mux_errors: u64,
}

/// Frame intervals assumed until two frames have been seen: 30 fps video,
/// 1024-sample AAC frames at 48 kHz.
const DEFAULT_FRAME_INTERVAL: i64 = 3_000;
const DEFAULT_AUDIO_INTERVAL: i64 = 1_920;

impl Segmenter {
    /// A segmenter waiting for its first keyframe.
    pub fn new(config: SegmenterConfig) -> Self {
        Self {
            end: config.origin_ticks,
            sequence: config.first_sequence,
            config,
            mux: TsMuxer::new(),
            buf: Vec::new(),
            open: None,
            audio: false,
            offset: None,
            last_dts: None,
            frame_interval: DEFAULT_FRAME_INTERVAL,
            last_audio_pts: None,
            audio_interval: DEFAULT_AUDIO_INTERVAL,
            pending_discontinuity: false,
            prev_has_audio: None,
            mux_errors: 0,
        }
    }

    /// Declares whether the publisher's audio configuration is known. Takes
    /// effect at the next segment start: a segment's PMT lists audio only if
    /// it was known when the segment opened, and audio frames for a segment
    /// without audio are dropped.
    pub fn set_audio(&mut self, enabled: bool) {
        self.audio = enabled;
    }

    /// How long the open segment has run (last video DTS − start), if any.
    pub fn open_duration_ticks(&self) -> Option<u64> {
        let open = self.open.as_ref()?;
        Some(self.last_dts?.saturating_sub(open.start_dts).unsigned_abs())
    }

    /// Adds a video frame. Returns the segment this keyframe closed, if any.
    /// Frames before the session's first keyframe are dropped.
    pub fn push_video(&mut self, frame: VideoFrame) -> Option<ClosedSegment> {
        self.push(frame, None)
    }

    /// Adds a video frame of a rendition that follows another's cuts (a live
    /// ladder rung): a segment is cut before this frame exactly when `cut`
    /// says so (the source cut there, and the encoder was made to put a
    /// keyframe there), or when the open one reaches `max_ticks`; never on
    /// keyframes alone. A cut at a frame that is not a keyframe makes a
    /// segment that is not independent, as at `max_ticks`.
    pub fn push_video_following(&mut self, frame: VideoFrame, cut: bool) -> Option<ClosedSegment> {
        self.push(frame, Some(cut))
    }

    fn push(&mut self, frame: VideoFrame, follow: Option<bool>) -> Option<ClosedSegment> {
        let offset = match self.offset {
            Some(offset) => offset,
            None if frame.keyframe => *self.offset.insert(self.end - frame.dts),
            None => return None,
        };
        let mut dts = frame.dts + offset;
        if let Some(last) = self.last_dts {
            let delta = dts - last;
            if delta < 0 || delta.unsigned_abs() > self.config.max_jump_ticks {
                // Continue right after the media written so far instead.
                self.offset = Some(offset + self.end - dts);
                dts = self.end;
                self.pending_discontinuity = true;
            } else if delta > 0 {
                self.frame_interval = delta;
            }
        }
        // H.264 never presents before decoding; clamp bogus composition offsets.
        let pts = (frame.pts - frame.dts).max(0) + dts;

        let mut closed = None;
        let (target, max, keyframe) = (
            self.config.target_ticks,
            self.config.max_ticks,
            frame.keyframe,
        );
        let due = |open: &OpenSegment, limit: u64| (dts - open.start_dts).unsigned_abs() >= limit;
        let cut_here = |open: &OpenSegment| {
            let over_max = max.is_some_and(|max| due(open, max));
            match follow {
                Some(cut) => cut || over_max,
                None if keyframe => due(open, target),
                None => over_max,
            }
        };
        if frame.keyframe {
            if let Some(open) = &self.open
                && (self.pending_discontinuity || cut_here(open))
            {
                closed = self.close(dts);
            }
            if self.open.is_none() {
                self.open_segment(dts, true);
            }
        } else if let Some(open) = &self.open {
            if !self.pending_discontinuity && cut_here(open) {
                closed = self.close(dts);
                self.open_segment(dts, false);
            }
        } else {
            return None;
        }
        self.last_dts = Some(dts);
        self.end = self.end.max(dts + self.frame_interval);
        self.write(|mux, buf| mux.write_video(buf, dts, pts, frame.keyframe, &frame.data));
        closed
    }

    /// Adds an audio frame to the open segment, in arrival order. Dropped if
    /// no segment is open yet (audio before the first keyframe), the segment
    /// has no audio track, or it lies implausibly far from the video.
    pub fn push_audio(&mut self, frame: AudioFrame) {
        let (Some(open), Some(offset), Some(last_dts)) = (&self.open, self.offset, self.last_dts)
        else {
            return;
        };
        let pts = frame.pts + offset;
        if !open.has_audio || (pts - last_dts).unsigned_abs() > self.config.max_jump_ticks {
            return;
        }
        self.write(|mux, buf| mux.write_audio(buf, pts, &frame.data));
        if let Some(delta) = self.last_audio_pts.map(|last| pts - last)
            && delta > 0
            && delta.unsigned_abs() <= self.config.max_jump_ticks
        {
            self.audio_interval = delta;
        }
        self.last_audio_pts = Some(pts);
        self.end = self.end.max(pts + self.audio_interval);
    }

    /// Closes the open segment, if any (end of stream, or the publisher
    /// left). Its duration runs to the end of its last frame: the last video
    /// frame plus one frame interval, or the last audio frame's end if the
    /// audio runs on longer.
    pub fn finish(&mut self) -> Option<ClosedSegment> {
        self.close(self.end)
    }

    /// Prepares for a new publisher session (a reconnect, or a stream resumed
    /// after a restart): its timestamps are rebased, from its first keyframe,
    /// to continue where the media written so far ends (see
    /// [`finish`](Self::finish)), and that keyframe starts a segment marked as
    /// a discontinuity. A segment still open is closed then, so nothing is
    /// lost; call `finish` first to have it right away.
    pub fn resume(&mut self) {
        self.offset = None;
        self.last_dts = None;
        self.last_audio_pts = None;
        self.pending_discontinuity = true;
    }

    /// Frames the muxer refused (an audio frame over 64 KiB; anything else
    /// would be a bug). Such a frame is left out and the segment stays
    /// intact.
    pub fn mux_errors(&self) -> u64 {
        self.mux_errors
    }

    /// Runs one muxer write; if it fails, the segment and the muxer are left
    /// exactly as before.
    fn write(&mut self, write: impl FnOnce(&mut TsMuxer, &mut Vec<u8>) -> Result<(), TsError>) {
        let (len, saved) = (self.buf.len(), self.mux.clone());
        if write(&mut self.mux, &mut self.buf).is_err() {
            self.buf.truncate(len);
            self.mux = saved;
            self.mux_errors += 1;
        }
    }

    fn open_segment(&mut self, start_dts: i64, independent: bool) {
        let has_audio = self.audio;
        let discontinuity = std::mem::take(&mut self.pending_discontinuity)
            || self.prev_has_audio.is_some_and(|prev| prev != has_audio);
        self.write(|mux, buf| mux.write_tables(buf, has_audio));
        self.open = Some(OpenSegment {
            start_dts,
            has_audio,
            discontinuity,
            independent,
        });
    }

    fn close(&mut self, end_dts: i64) -> Option<ClosedSegment> {
        let open = self.open.take()?;
        // The next segment is likely about as large: reserve for it up front.
        let capacity = self.buf.len() + self.buf.len() / 8;
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(capacity));
        self.prev_has_audio = Some(open.has_audio);
        let sequence = self.sequence;
        self.sequence += 1;
        Some(ClosedSegment {
            sequence,
            data: Bytes::from(data),
            start_dts: open.start_dts,
            duration_ticks: (end_dts - open.start_dts).unsigned_abs(),
            discontinuity: open.discontinuity,
            has_audio: open.has_audio,
            independent: open.independent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 90_000;
    const FRAME: i64 = 3_000;

    fn video(dts: i64, keyframe: bool) -> VideoFrame {
        VideoFrame {
            dts,
            pts: dts + 2 * FRAME,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 9, 0xF0, 0, 0, 0, 1, 0x65, 0x88]),
        }
    }

    fn audio(pts: i64) -> AudioFrame {
        AudioFrame {
            pts,
            data: Bytes::from_static(&[0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x3F, 0xFC, 1, 2]),
        }
    }

    /// Feeds `frames` video frames at 30 fps from `start` (publisher time),
    /// a keyframe every `gop` frames, with audio every ~21 ms. Returns the
    /// closed segments.
    fn feed(s: &mut Segmenter, start: i64, frames: i64, gop: i64) -> Vec<ClosedSegment> {
        let mut out = Vec::new();
        let mut next_audio = start;
        for i in 0..frames {
            let dts = start + i * FRAME;
            while next_audio <= dts {
                s.push_audio(audio(next_audio));
                next_audio += 1_920;
            }
            out.extend(s.push_video(video(dts, i % gop == 0)));
        }
        out
    }

    fn pids(segment: &ClosedSegment) -> Vec<u16> {
        segment
            .data
            .chunks(188)
            .map(|p| (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]))
            .collect()
    }

    #[test]
    fn cuts_on_keyframes_at_target_with_exact_durations() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        s.set_audio(true);
        // 1.5 s GOPs: cuts at 3 s, 6 s; the 2 s target is never hit exactly.
        let mut segs = feed(&mut s, 12_345, 300, 45);
        segs.extend(s.finish());
        let durations: Vec<_> = segs.iter().map(|s| s.duration_ticks).collect();
        assert_eq!(durations, [270_000, 270_000, 270_000, 90_000]);
        let mut expected_start = 10 * SECOND;
        for (i, seg) in segs.iter().enumerate() {
            assert_eq!(seg.sequence, i as u64);
            assert_eq!(seg.start_dts, expected_start);
            assert!(!seg.discontinuity && seg.has_audio);
            expected_start += seg.duration_ticks as i64;
            let pids = pids(seg);
            assert_eq!(&pids[..3], &[0, 0x1000, 0x100], "PAT, PMT, keyframe");
            assert!(pids.contains(&0x101));
        }
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_following_rendition_cuts_only_where_told() {
        let mut config = SegmenterConfig::new(u64::MAX / 4);
        config.max_ticks = Some(6 * SECOND as u64);
        let mut s = Segmenter::new(config);
        // Keyframes every second, but cuts asked at 2 s, 4.5 s (not a
        // keyframe) and nowhere after: the 6 s guard cuts at 10.5 s (not one either).
        let mut segs = Vec::new();
        for i in 0..360 {
            let dts = i * FRAME;
            let cut = [60, 135].contains(&i);
            segs.extend(s.push_video_following(video(dts, i % 30 == 0), cut));
        }
        segs.extend(s.finish());
        let shape: Vec<_> = segs
            .iter()
            .map(|s| (s.duration_ticks as i64 / FRAME, s.independent))
            .collect();
        assert_eq!(shape, [(60, true), (75, true), (180, false), (45, false)]);
    }

    #[test]
    fn long_gops_are_cut_at_the_maximum_and_marked_dependent() {
        let mut config = SegmenterConfig::new(2 * SECOND as u64);
        config.max_ticks = Some(3 * SECOND as u64);
        let mut s = Segmenter::new(config);
        s.set_audio(true);
        // 8 s GOPs (OBS "auto"): cuts at 3 s and 6 s inside the GOP, then at
        // the keyframe at 8 s (2 s after the last cut), and so on.
        let mut segs = feed(&mut s, 0, 480, 240);
        segs.extend(s.finish());
        let shape: Vec<_> = segs
            .iter()
            .map(|s| (s.duration_ticks / 1_000, s.independent))
            .collect();
        assert_eq!(
            shape,
            [
                (270, true),
                (270, false),
                (180, false),
                (270, true),
                (270, false),
                (180, false)
            ]
        );
        let total: u64 = segs.iter().map(|s| s.duration_ticks).sum();
        assert_eq!(total, 480 * FRAME as u64);
        assert!(segs.iter().all(|s| !s.discontinuity));
        // Keyframe-aligned publishers are never cut early.
        let mut config = SegmenterConfig::new(2 * SECOND as u64);
        config.max_ticks = Some(3 * SECOND as u64);
        let mut s = Segmenter::new(config);
        let segs = feed(&mut s, 0, 300, 60);
        assert!(
            segs.iter()
                .all(|s| s.independent && s.duration_ticks == 180_000)
        );
    }

    #[test]
    fn drops_frames_before_first_keyframe_and_audio_without_track() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        s.push_audio(audio(0));
        assert_eq!(s.push_video(video(0, false)), None);
        assert_eq!(s.open_duration_ticks(), None);
        assert_eq!(s.push_video(video(FRAME, true)), None);
        s.push_audio(audio(FRAME)); // audio not configured: dropped
        s.set_audio(true); // only from the next segment on
        s.push_video(video(2 * FRAME, false));
        assert_eq!(s.open_duration_ticks(), Some(FRAME as u64));
        let first = s.push_video(video(3 * SECOND, true)).expect("cut");
        assert!(!first.has_audio && !pids(&first).contains(&0x101));
        assert_eq!(first.start_dts, 10 * SECOND);
        assert_eq!(first.duration_ticks, (3 * SECOND - FRAME) as u64);
        s.push_audio(audio(3 * SECOND));
        let second = s.finish().expect("flush");
        assert!(second.has_audio && pids(&second).contains(&0x101));
        assert!(second.discontinuity, "track list changed");
    }

    #[test]
    fn resume_rebases_the_next_session_after_the_last_segment() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        s.set_audio(true);
        let mut segs = feed(&mut s, 0, 90, 30);
        segs.extend(s.finish());
        s.resume();
        let end = segs.last().map(|s| s.start_dts + s.duration_ticks as i64);
        assert_eq!(end, Some(10 * SECOND + 90 * FRAME));
        // The new publisher starts at an unrelated clock, and with audio first.
        let mut next = feed(&mut s, 5_000_000, 90, 30);
        // This one leaves without `finish`: the next session closes its segment.
        s.resume();
        next.extend(feed(&mut s, 77, 30, 30));
        next.extend(s.finish());
        assert_eq!(Some(next[0].start_dts), end);
        let discontinuities: Vec<_> = next.iter().map(|s| s.discontinuity).collect();
        assert_eq!(discontinuities, [true, false, true]);
        assert_eq!(next[0].sequence, segs.len() as u64);
        let all: Vec<_> = segs.iter().chain(&next).collect();
        assert_eq!(all.len(), 5);
        for pair in all.windows(2) {
            let end = pair[0].start_dts + pair[0].duration_ticks as i64;
            assert_eq!(end, pair[1].start_dts);
        }
        assert_eq!(s.mux_errors(), 0);
    }

    #[test]
    fn audio_running_past_the_video_moves_the_seam() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        s.set_audio(true);
        feed(&mut s, 0, 30, 30);
        let last_video = 10 * SECOND + 29 * FRAME;
        for i in 1..=3 {
            s.push_audio(audio(29 * FRAME + i * 1_920));
        }
        let seg = s.finish().expect("segment");
        let audio_end = last_video + 4 * 1_920;
        assert_eq!(seg.start_dts + seg.duration_ticks as i64, audio_end);
        s.resume();
        let next = feed(&mut s, 0, 61, 30);
        assert_eq!(next[0].start_dts, audio_end);
    }

    #[test]
    fn resumed_stream_starts_with_a_discontinuity() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        s.resume(); // e.g. after a node restart, with segments already stored
        let segs = feed(&mut s, 0, 61, 30);
        assert!(segs[0].discontinuity);
        assert_eq!(s.finish().map(|s| s.discontinuity), Some(false));
    }

    #[test]
    fn oversized_audio_is_left_out_and_the_segment_stays_intact() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        s.set_audio(true);
        s.push_video(video(0, true));
        s.push_audio(AudioFrame {
            pts: 0,
            data: Bytes::from(vec![0; 70_000]),
        });
        s.push_audio(audio(0));
        assert_eq!(s.mux_errors(), 1);
        let seg = s.finish().expect("segment");
        assert_eq!(pids(&seg), [0, 0x1000, 0x100, 0x101]);
        // Continuity counter of the one audio packet is the first, 0.
        assert_eq!(seg.data[3 * 188 + 3] & 0x0F, 0);
    }

    #[test]
    fn timestamp_jumps_are_rebased_not_bogus_durations() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        let mut segs = feed(&mut s, 0, 60, 30);
        // The publisher's clock jumps 1 h ahead, then 30 s back.
        segs.extend(feed(&mut s, 3_600 * SECOND, 60, 30));
        segs.extend(feed(&mut s, 3_570 * SECOND, 60, 30));
        segs.extend(s.finish());
        assert!(segs.iter().all(|s| s.duration_ticks == 2 * SECOND as u64));
        let discontinuities: Vec<_> = segs.iter().map(|s| s.discontinuity).collect();
        assert_eq!(discontinuities, [false, true, true]);
    }

    #[test]
    fn long_gop_is_recorded_truthfully() {
        let mut s = Segmenter::new(SegmenterConfig::new(2 * SECOND as u64));
        let segs = feed(&mut s, 0, 300, 240);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].duration_ticks, 8 * SECOND as u64);
        assert_eq!(s.open_duration_ticks(), Some(59 * FRAME as u64));
    }
}
