//! MPEG-TS from publishers (SRT ingest) turned into the access units the
//! segmenter takes: H.264 in Annex B ([`VideoFrame`]) and AAC in ADTS
//! ([`AudioFrame`]), with 90 kHz timestamps on an unwrapped `i64` timeline.
//!
//! Hand-written rather than `mpeg2ts`'s readers: those pull from a
//! `std::io::Read`, fail on the first packet of a PID they have not seen in a
//! PMT (every stream joined mid-way), let a PES without a length grow without
//! bound, and know nothing of continuity counters. Here input is pushed in
//! arbitrary chunks (an SRT message is normally 7 TS packets), and everything
//! is total on garbage:
//!
//! - The sync byte is tracked; on losing it the demuxer skips to the next
//!   plausible packet start and drops the access units in progress.
//! - PAT and PMT sections are reassembled (at most 1024 bytes) and their
//!   CRC checked. The first program is used; its first H.264 (stream type
//!   0x1B) and first ADTS AAC (0x0F) streams are demuxed, others ignored but
//!   listed in [`Program::ignored`].
//! - PES packets are reassembled per PID, bounded ([`MAX_VIDEO_PES`],
//!   [`MAX_AUDIO_PES`]). A continuity-counter gap, a transport error or a
//!   scrambled packet marks the PES in progress damaged: it is dropped and
//!   the PID waits for the next PES start.
//! - A video access unit is passed on as is when it starts with an AUD and,
//!   for an IDR, carries its SPS and PPS; otherwise it is rebuilt with an AUD
//!   first and, for an IDR, the last SPS/PPS seen inserted, which is what the
//!   segmenter needs for every segment to start decodable.
//! - A PES may carry several ADTS frames (ffmpeg packs ~3 per PES): each
//!   becomes its own [`AudioFrame`], timed from the PES's PTS plus the samples
//!   before it; a frame split across PES packets is carried over.
//! - 33-bit timestamps are unwrapped against the previous timestamp of either
//!   stream, so the audio and video stay on one timeline across the wrap
//!   (every 26.5 hours).

use bytes::{BufMut, Bytes, BytesMut};

use super::flv::{AAC_FREQUENCIES, AUD, AvcConfig, START_CODE};
use super::segmenter::{AudioFrame, VideoFrame};

/// Size of a transport stream packet.
pub const TS_PACKET_SIZE: usize = 188;
/// Largest video PES kept (an I-frame of a high-bitrate 4K stream is a few
/// MiB); larger ones are dropped.
pub const MAX_VIDEO_PES: usize = 8 * 1024 * 1024;
/// Largest audio PES kept (ffmpeg's are under 3 KiB).
pub const MAX_AUDIO_PES: usize = 256 * 1024;

const SYNC_BYTE: u8 = 0x47;
const NULL_PID: u16 = 0x1FFF;
const PAT_PID: u16 = 0;
/// A PSI section is at most 1021 bytes after its 3-byte header.
const MAX_SECTION: usize = 1024;
const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_ADTS: u8 = 0x0F;
/// Video stream types other than H.264: MPEG-1/2, MPEG-4 Visual, SVC/MVC,
/// JPEG 2000, HEVC (and its extensions), VVC, AVS, Dirac, VC-1.
const OTHER_VIDEO_STREAM_TYPES: [u8; 15] = [
    0x01, 0x02, 0x10, 0x1E, 0x1F, 0x20, 0x21, 0x24, 0x27, 0x32, 0x33, 0x42, 0xD1, 0xD2, 0xEA,
];
/// Timestamps are 33 bits.
const TIMESTAMP_MASK: u64 = (1 << 33) - 1;
/// Parameter sets larger than this are ignored (real ones are tens of bytes).
const MAX_PARAMETER_SET: usize = 4096;
/// Samples per AAC frame (per raw data block).
const AAC_SAMPLES: i64 = 1024;

/// One access unit out of the demuxer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Video(VideoFrame),
    Audio(AudioFrame),
}

/// What the PMT of the program in use lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Program {
    /// PID of the H.264 stream demuxed, if any.
    pub video_pid: Option<u16>,
    /// PID of the ADTS AAC stream demuxed, if any.
    pub audio_pid: Option<u16>,
    /// Stream types of the other elementary streams (ignored).
    pub ignored: Vec<u8>,
}

impl Program {
    /// The stream type of a video stream that is listed but cannot be used
    /// (HEVC is 0x24, MPEG-2 0x02, ...), when there is no H.264 stream.
    pub fn unsupported_video(&self) -> Option<u8> {
        if self.video_pid.is_some() {
            return None;
        }
        self.ignored
            .iter()
            .copied()
            .find(|t| OTHER_VIDEO_STREAM_TYPES.contains(t))
    }
}

/// Counters of what was skipped or repaired, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemuxStats {
    /// TS packets processed.
    pub packets: u64,
    /// Times the sync byte was lost and searched for again.
    pub resyncs: u64,
    /// Continuity counter gaps, transport errors and scrambled packets on the
    /// demuxed PIDs.
    pub continuity_errors: u64,
    /// PES packets dropped: damaged, oversized, truncated or malformed.
    pub dropped_pes: u64,
    /// PES packets dropped for lack of a usable timestamp.
    pub untimed: u64,
    /// PSI sections dropped (bad CRC, oversized, malformed).
    pub bad_sections: u64,
    /// Bytes of audio skipped while looking for an ADTS header.
    pub bad_adts_bytes: u64,
    /// IDR access units passed on as non-keyframes because no SPS/PPS was
    /// known to make them decodable.
    pub keyframes_without_parameters: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
}

/// Demuxes one publisher's transport stream. Create one per session.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    /// Bytes not yet processed (less than a packet, or input while resyncing).
    pending: Vec<u8>,
    pat: Section,
    pmt: Section,
    pmt_pid: Option<u16>,
    program: Option<Program>,
    video: Option<PesAssembler>,
    audio: Option<PesAssembler>,
    clock: Clock,
    avc: AvcState,
    aac: AacState,
    codecs_changed: bool,
    stats: DemuxStats,
}

impl TsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Demuxes the next bytes of the stream, appending completed access units
    /// to `out` in stream order.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        if self.pending.is_empty() {
            let whole = data.len() - data.len() % TS_PACKET_SIZE;
            let in_sync = data.chunks_exact(TS_PACKET_SIZE).all(|p| p[0] == SYNC_BYTE);
            if in_sync {
                // The common case (aligned SRT messages): no copy.
                for packet in data[..whole].chunks_exact(TS_PACKET_SIZE) {
                    self.packet(packet, out);
                }
                self.pending.extend_from_slice(&data[whole..]);
                return;
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut pos = 0;
        while pending.len() - pos >= TS_PACKET_SIZE {
            if pending[pos] == SYNC_BYTE {
                self.packet(&pending[pos..pos + TS_PACKET_SIZE], out);
                pos += TS_PACKET_SIZE;
                continue;
            }
            self.stats.resyncs += 1;
            self.lose_sync();
            // The next 0x47 that is followed by another one a packet later
            // (or is too close to the end to tell).
            pos = (pos + 1..pending.len())
                .find(|&i| {
                    pending[i] == SYNC_BYTE
                        && pending
                            .get(i + TS_PACKET_SIZE)
                            .is_none_or(|&b| b == SYNC_BYTE)
                })
                .unwrap_or(pending.len());
        }
        pending.drain(..pos);
        self.pending = pending;
    }

    /// The stream ended: passes on the access units still being collected
    /// that are known to be complete. A PES without a declared length (ffmpeg
    /// and OBS never declare video lengths) only completes when the next one
    /// starts, so the last video frame is dropped here: a caller going away
    /// often loses its last packets, and a truncated frame would end the
    /// last segment with a decoding error.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if let Some(pes) = self.video.as_mut().and_then(|v| v.take_complete(false)) {
            self.emit_video(pes, out);
        }
        if let Some(pes) = self.audio.as_mut().and_then(|a| a.take_complete(false)) {
            self.emit_audio(pes, out);
        }
        self.pending.clear();
    }

    /// The program in use, once its PMT arrived.
    pub fn program(&self) -> Option<&Program> {
        self.program.as_ref()
    }

    /// `avc1.PPCCLL` from the last SPS.
    pub fn video_codec(&self) -> Option<String> {
        self.avc.codec.clone()
    }

    /// `mp4a.40.<aot>` from the last ADTS header.
    pub fn audio_codec(&self) -> Option<String> {
        self.aac
            .header
            .map(|h| format!("mp4a.40.{}", h.object_type))
    }

    /// Picture size from the last SPS (cropping applied).
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        self.avc.size
    }

    /// Whether the codec strings or the picture size changed since the last
    /// call (they are first set by the first SPS and ADTS header).
    pub fn take_codecs_changed(&mut self) -> bool {
        std::mem::take(&mut self.codecs_changed)
    }

    pub fn stats(&self) -> &DemuxStats {
        &self.stats
    }

    /// Packets were lost: whatever was being collected is damaged.
    fn lose_sync(&mut self) {
        for pes in [&mut self.video, &mut self.audio].into_iter().flatten() {
            if pes.damage() {
                self.stats.dropped_pes += 1;
            }
            pes.cc = None;
        }
        self.pat.reset();
        self.pmt.reset();
        self.aac.carry.clear();
    }

    /// One 188-byte packet starting with the sync byte.
    fn packet(&mut self, p: &[u8], out: &mut Vec<Frame>) {
        self.stats.packets += 1;
        let transport_error = p[1] & 0x80 != 0;
        let unit_start = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        let scrambled = p[3] & 0xC0 != 0;
        let has_adaptation = p[3] & 0x20 != 0;
        let has_payload = p[3] & 0x10 != 0;
        let cc = p[3] & 0x0F;
        if pid == NULL_PID {
            return;
        }
        let mut offset = 4;
        let mut discontinuity = false;
        if has_adaptation {
            let len = usize::from(p[4]);
            if len > 0 {
                discontinuity = p[5] & 0x80 != 0;
            }
            offset = 5 + len;
        }
        let es = if self.video.as_ref().is_some_and(|v| v.pid == pid) {
            Some(Track::Video)
        } else if self.audio.as_ref().is_some_and(|a| a.pid == pid) {
            Some(Track::Audio)
        } else {
            None
        };
        if !has_payload || offset >= TS_PACKET_SIZE || transport_error || scrambled {
            if has_payload && es.is_some() {
                // A payload we cannot use (or an adaptation field that
                // swallows the packet): the PES in progress is incomplete.
                self.stats.continuity_errors += 1;
                let dropped = self.track(es).is_some_and(|pes| {
                    pes.cc = None;
                    pes.damage()
                });
                self.stats.dropped_pes += u64::from(dropped);
            }
            return;
        }
        let payload = &p[offset..];
        match es {
            Some(track) => self.es_packet(track, unit_start, cc, discontinuity, payload, out),
            None if pid == PAT_PID => self.psi(Table::Pat, unit_start, payload),
            None if Some(pid) == self.pmt_pid => self.psi(Table::Pmt, unit_start, payload),
            None => {}
        }
    }

    fn track(&mut self, track: Option<Track>) -> Option<&mut PesAssembler> {
        match track? {
            Track::Video => self.video.as_mut(),
            Track::Audio => self.audio.as_mut(),
        }
    }

    fn es_packet(
        &mut self,
        track: Track,
        unit_start: bool,
        cc: u8,
        discontinuity: bool,
        payload: &[u8],
        out: &mut Vec<Frame>,
    ) {
        let Some(pes) = self.track(Some(track)) else {
            return;
        };
        let (completed, event) = pes.push(unit_start, cc, discontinuity, payload);
        match event {
            PushEvent::None => {}
            PushEvent::Duplicate => return,
            PushEvent::ContinuityError { dropped } => {
                self.stats.continuity_errors += 1;
                self.stats.dropped_pes += u64::from(dropped);
            }
            PushEvent::Dropped => self.stats.dropped_pes += 1,
        }
        for pes in completed.into_iter().flatten() {
            match track {
                Track::Video => self.emit_video(pes, out),
                Track::Audio => self.emit_audio(pes, out),
            }
        }
    }

    // -- PSI ---------------------------------------------------------------

    fn psi(&mut self, table: Table, unit_start: bool, payload: &[u8]) {
        let section = match table {
            Table::Pat => &mut self.pat,
            Table::Pmt => &mut self.pmt,
        };
        let complete = section.push(unit_start, payload);
        let dropped = std::mem::take(&mut section.dropped);
        self.stats.bad_sections += u64::from(dropped);
        let Some(bytes) = complete else {
            return;
        };
        if crc32_mpeg2(&bytes) != Some(0) {
            self.stats.bad_sections += 1;
            return;
        }
        match table {
            Table::Pat => self.pat_section(&bytes),
            Table::Pmt => self.pmt_section(&bytes),
        }
    }

    fn pat_section(&mut self, s: &[u8]) {
        // table_id 0, section_syntax_indicator, current_next_indicator.
        if s.len() < 12 || s[0] != 0x00 || s[1] & 0x80 == 0 || s[5] & 0x01 == 0 {
            self.stats.bad_sections += 1;
            return;
        }
        let pmt_pid = s[8..s.len() - 4]
            .chunks_exact(4)
            .filter(|e| u16::from_be_bytes([e[0], e[1]]) != 0) // 0: network PID
            .map(|e| (u16::from(e[2] & 0x1F) << 8) | u16::from(e[3]))
            .next();
        if pmt_pid != self.pmt_pid {
            self.pmt_pid = pmt_pid;
            self.pmt.reset();
            self.program = None;
        }
    }

    fn pmt_section(&mut self, s: &[u8]) {
        if s.len() < 16 || s[0] != 0x02 || s[1] & 0x80 == 0 || s[5] & 0x01 == 0 {
            self.stats.bad_sections += 1;
            return;
        }
        let info_len = usize::from(u16::from_be_bytes([s[10] & 0x0F, s[11]]));
        let end = s.len() - 4;
        let mut i = 12 + info_len;
        let mut program = Program::default();
        while i + 5 <= end {
            let stream_type = s[i];
            let pid = (u16::from(s[i + 1] & 0x1F) << 8) | u16::from(s[i + 2]);
            let es_info_len = usize::from(u16::from_be_bytes([s[i + 3] & 0x0F, s[i + 4]]));
            i += 5 + es_info_len;
            let usable = pid != PAT_PID && pid != NULL_PID && Some(pid) != self.pmt_pid;
            match stream_type {
                STREAM_TYPE_H264 if usable && program.video_pid.is_none() => {
                    program.video_pid = Some(pid);
                }
                STREAM_TYPE_ADTS
                    if usable && program.audio_pid.is_none() && program.video_pid != Some(pid) =>
                {
                    program.audio_pid = Some(pid);
                }
                other => program.ignored.push(other),
            }
        }
        if self.video.as_ref().map(|v| v.pid) != program.video_pid {
            self.video = program
                .video_pid
                .map(|pid| PesAssembler::new(pid, MAX_VIDEO_PES));
        }
        if self.audio.as_ref().map(|a| a.pid) != program.audio_pid {
            self.audio = program
                .audio_pid
                .map(|pid| PesAssembler::new(pid, MAX_AUDIO_PES));
            self.aac.carry.clear();
        }
        self.program = Some(program);
    }

    // -- Video ---------------------------------------------------------------

    fn emit_video(&mut self, pes: Vec<u8>, out: &mut Vec<Frame>) {
        let Some(header) = PesHeader::parse(&pes) else {
            self.stats.dropped_pes += 1;
            return;
        };
        let Some(pts) = header.pts else {
            self.stats.untimed += 1;
            return;
        };
        let pts = self.clock.extend(pts);
        let dts = header.dts.map_or(pts, |dts| self.clock.extend(dts));
        let es = Bytes::from(pes).slice(header.payload_offset..);
        if let Some(frame) = self.video_access_unit(es, dts, pts) {
            self.stats.video_frames += 1;
            out.push(Frame::Video(frame));
        }
    }

    /// Checks an Annex B access unit and makes it what the segmenter expects:
    /// an AUD first and, for an IDR, SPS and PPS before the slices.
    fn video_access_unit(&mut self, es: Bytes, dts: i64, pts: i64) -> Option<VideoFrame> {
        let mut au = AuShape::default();
        for nal in nal_units(&es) {
            au.nals += 1;
            match nal[0] & 0x1F {
                5 => au.idr = true,
                7 => {
                    au.sps = true;
                    self.avc.sps_seen(nal, &mut self.codecs_changed);
                }
                8 => {
                    au.pps = true;
                    self.avc.pps_seen(nal);
                }
                9 => au.auds += 1,
                _ => {}
            }
        }
        if au.nals == au.auds {
            self.stats.dropped_pes += 1;
            return None;
        }
        let mut keyframe = au.idr;
        let has_sps = au.sps || self.avc.sps.is_some();
        let has_pps = au.pps || self.avc.pps.is_some();
        if keyframe && !(has_sps && has_pps) {
            // Not decodable on its own: a segment must not start here.
            self.stats.keyframes_without_parameters += 1;
            keyframe = false;
        }
        let insert_params = keyframe && !(au.sps && au.pps);
        let clean_start = es.starts_with(&[0, 0, 0, 1, 9]) || es.starts_with(&[0, 0, 1, 9]);
        let data = if clean_start && au.auds == 1 && !insert_params {
            es
        } else {
            self.rebuild(&es, keyframe)
        };
        Some(VideoFrame {
            dts,
            pts,
            keyframe,
            data,
        })
    }

    /// AUD, then for keyframes the SPS and PPS (the access unit's own, else
    /// the last seen), then the other NAL units in order.
    fn rebuild(&self, es: &[u8], keyframe: bool) -> Bytes {
        let mut out = BytesMut::with_capacity(es.len() + 64 + self.avc.parameter_sets_len());
        out.put_slice(&AUD);
        let put = |out: &mut BytesMut, nal: &[u8]| {
            out.put_slice(&START_CODE);
            out.put_slice(nal);
        };
        if keyframe {
            for wanted in [7, 8] {
                let mut own = false;
                for nal in nal_units(es).filter(|n| n[0] & 0x1F == wanted) {
                    put(&mut out, nal);
                    own = true;
                }
                let stored = if wanted == 7 {
                    &self.avc.sps
                } else {
                    &self.avc.pps
                };
                if let (false, Some(ps)) = (own, stored) {
                    put(&mut out, ps);
                }
            }
        }
        for nal in nal_units(es) {
            let kind = nal[0] & 0x1F;
            if kind != 9 && !(keyframe && (kind == 7 || kind == 8)) {
                put(&mut out, nal);
            }
        }
        out.freeze()
    }

    // -- Audio ---------------------------------------------------------------

    fn emit_audio(&mut self, pes: Vec<u8>, out: &mut Vec<Frame>) {
        let Some(header) = PesHeader::parse(&pes) else {
            self.stats.dropped_pes += 1;
            self.aac.carry.clear();
            return;
        };
        let pts = header.pts.map(|pts| self.clock.extend(pts));
        let mut es = Bytes::from(pes).slice(header.payload_offset..);

        // A frame begun in the previous PES: completed with the first bytes
        // of this one, timed where the previous PES's frames ended.
        if !self.aac.carry.is_empty() {
            let mut carry = std::mem::take(&mut self.aac.carry);
            let take = 7usize.saturating_sub(carry.len()).min(es.len());
            carry.extend_from_slice(&es[..take]);
            es = es.slice(take..);
            match AdtsHeader::parse(&carry) {
                None if carry.len() < 7 => {
                    self.aac.carry = carry; // still not even a header
                    return;
                }
                None => self.stats.bad_adts_bytes += carry.len() as u64,
                Some(h) => {
                    let take = h.frame_len.saturating_sub(carry.len()).min(es.len());
                    carry.extend_from_slice(&es[..take]);
                    es = es.slice(take..);
                    if carry.len() < h.frame_len {
                        self.aac.carry = carry; // still incomplete
                        return;
                    }
                    match self.aac.next_pts {
                        Some(next) => {
                            self.aac.next_pts = Some(next + h.samples * 90_000 / h.rate);
                            self.audio_frame(h, Bytes::from(carry), next, out);
                        }
                        None => self.stats.bad_adts_bytes += carry.len() as u64,
                    }
                }
            }
        }

        let Some(base) = pts.or(self.aac.next_pts) else {
            self.stats.untimed += 1;
            return;
        };
        let mut samples = 0i64;
        let mut pos = 0;
        while pos < es.len() {
            let rest = &es[pos..];
            match AdtsHeader::parse(rest) {
                Some(h) if h.frame_len <= rest.len() => {
                    let pts = base + samples * 90_000 / h.rate;
                    samples += h.samples;
                    let frame = es.slice(pos..pos + h.frame_len);
                    self.audio_frame(h, frame, pts, out);
                    // Where the next PES continues if it has no PTS.
                    self.aac.next_pts = Some(base + samples * 90_000 / h.rate);
                    pos += h.frame_len;
                }
                Some(h) if rest.len() < h.frame_len => {
                    // Continues in the next PES.
                    self.aac.next_pts = Some(base + samples * 90_000 / h.rate);
                    self.aac.carry = rest.to_vec();
                    break;
                }
                _ if rest.len() < 7 && rest.starts_with(&[0xFF]) => {
                    self.aac.next_pts = Some(base + samples * 90_000 / self.aac.rate());
                    self.aac.carry = rest.to_vec();
                    break;
                }
                _ => {
                    // Not a header: skip to the next sync word.
                    let skip = rest[1..]
                        .iter()
                        .position(|&b| b == 0xFF)
                        .map_or(rest.len(), |i| i + 1);
                    self.stats.bad_adts_bytes += skip as u64;
                    pos += skip;
                }
            }
        }
    }

    fn audio_frame(&mut self, h: AdtsHeader, data: Bytes, pts: i64, out: &mut Vec<Frame>) {
        let info = AacInfo {
            object_type: h.object_type,
            frequency_index: h.frequency_index,
            channels: h.channels,
        };
        if self.aac.header != Some(info) {
            self.aac.header = Some(info);
            self.codecs_changed = true;
        }
        self.stats.audio_frames += 1;
        out.push(Frame::Audio(AudioFrame { pts, data }));
    }
}

#[derive(Debug, Clone, Copy)]
enum Track {
    Video,
    Audio,
}

#[derive(Debug, Clone, Copy)]
enum Table {
    Pat,
    Pmt,
}

// ---------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------

/// Extends 33-bit timestamps to `i64`: each is placed at the signed 33-bit
/// distance from the previous one (of either stream), so a wrap keeps
/// counting up while B-frame reordering and audio/video interleaving stay
/// small steps.
#[derive(Debug, Clone, Default)]
struct Clock {
    last: Option<(u64, i64)>,
}

impl Clock {
    fn extend(&mut self, raw: u64) -> i64 {
        let raw = raw & TIMESTAMP_MASK;
        let extended = match self.last {
            None => raw as i64,
            Some((last_raw, last)) => {
                let delta = raw.wrapping_sub(last_raw) & TIMESTAMP_MASK;
                let delta = if delta >= 1 << 32 {
                    delta as i64 - (1 << 33)
                } else {
                    delta as i64
                };
                last + delta
            }
        };
        self.last = Some((raw, extended));
        extended
    }
}

// ---------------------------------------------------------------------------
// PSI sections
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Section {
    buf: Vec<u8>,
    active: bool,
    /// Sections given up on since last asked (oversized, malformed pointer).
    dropped: u32,
}

impl Section {
    fn reset(&mut self) {
        self.buf.clear();
        self.active = false;
    }

    /// Adds a packet's payload; returns a complete section (header to CRC).
    fn push(&mut self, unit_start: bool, payload: &[u8]) -> Option<Vec<u8>> {
        if unit_start {
            let pointer = usize::from(payload[0]);
            let Some(tail) = payload.get(1..1 + pointer) else {
                self.dropped += 1;
                self.reset();
                return None;
            };
            // The bytes before the pointer end the previous section.
            let previous = if self.active {
                self.buf.extend_from_slice(tail);
                self.complete()
            } else {
                None
            };
            self.buf.clear();
            self.buf.extend_from_slice(&payload[1 + pointer..]);
            self.active = true;
            return previous.or_else(|| self.complete());
        }
        if !self.active {
            return None;
        }
        self.buf.extend_from_slice(payload);
        self.complete()
    }

    fn complete(&mut self) -> Option<Vec<u8>> {
        if self.buf.first() == Some(&0xFF) {
            self.reset(); // stuffing: no section
            return None;
        }
        if self.buf.len() < 3 {
            return None;
        }
        let len = 3 + usize::from(u16::from_be_bytes([self.buf[1] & 0x0F, self.buf[2]]));
        if len > MAX_SECTION {
            self.dropped += 1;
            self.reset();
            return None;
        }
        if self.buf.len() < len {
            return None;
        }
        let section = self.buf[..len].to_vec();
        self.reset();
        Some(section)
    }
}

/// CRC-32/MPEG-2 of `data`; 0 over a whole section means it is intact.
/// `None` for input too short to hold a CRC.
fn crc32_mpeg2(data: &[u8]) -> Option<u32> {
    if data.len() < 4 {
        return None;
    }
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    Some(crc)
}

// ---------------------------------------------------------------------------
// PES reassembly
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct PesAssembler {
    pid: u16,
    limit: usize,
    /// Continuity counter of the last packet with payload.
    cc: Option<u8>,
    /// The PES being collected (from its start code on).
    data: Vec<u8>,
    collecting: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum PushEvent {
    None,
    /// A repeated packet (same continuity counter), ignored.
    Duplicate,
    /// Packets are missing; `dropped` if a PES in progress was lost with them.
    ContinuityError {
        dropped: bool,
    },
    /// The PES in progress grew over the limit or was truncated.
    Dropped,
}

impl PesAssembler {
    fn new(pid: u16, limit: usize) -> Self {
        Self {
            pid,
            limit,
            cc: None,
            data: Vec::new(),
            collecting: false,
        }
    }

    /// Drops the PES in progress; whether there was one.
    fn damage(&mut self) -> bool {
        let was = self.collecting;
        self.collecting = false;
        self.data.clear();
        was
    }

    /// The PES in progress if it is plausibly complete (its length, when
    /// given, reached; `ended`: the next PES has started).
    fn take_complete(&mut self, ended: bool) -> Option<Vec<u8>> {
        if !self.collecting {
            return None;
        }
        self.collecting = false;
        let data = std::mem::take(&mut self.data);
        match declared_len(&data) {
            Some(len) if data.len() < len => None,
            None if !ended => None,
            _ => Some(data),
        }
    }

    /// Adds one packet's payload. Returns up to two completed PES packets
    /// (the previous one ended by this start, and this one if its declared
    /// length is already reached) and what else happened.
    fn push(
        &mut self,
        unit_start: bool,
        cc: u8,
        discontinuity: bool,
        payload: &[u8],
    ) -> ([Option<Vec<u8>>; 2], PushEvent) {
        let mut event = PushEvent::None;
        if let Some(last) = self.cc
            && !discontinuity
        {
            if cc == last {
                return ([None, None], PushEvent::Duplicate);
            }
            if cc != (last + 1) & 0x0F {
                event = PushEvent::ContinuityError {
                    dropped: self.damage(),
                };
            }
        }
        self.cc = Some(cc);

        let mut completed = [None, None];
        if unit_start {
            if self.collecting {
                let previous = self.data.len();
                completed[0] = self.take_complete(true);
                if completed[0].is_none() && previous > 0 {
                    event = PushEvent::Dropped; // shorter than declared
                }
                // Reuse about the right capacity for the next one.
                self.data = Vec::with_capacity(previous.min(self.limit));
            }
            self.data.clear();
            self.data.extend_from_slice(payload);
            self.collecting = true;
        } else if self.collecting {
            if self.data.len() + payload.len() > self.limit {
                self.damage();
                return (completed, PushEvent::Dropped);
            }
            self.data.extend_from_slice(payload);
        } else {
            return (completed, event); // waiting for a PES start
        }
        if let Some(len) = declared_len(&self.data)
            && self.data.len() >= len
        {
            self.data.truncate(len);
            completed[1] = self.take_complete(true);
        }
        (completed, event)
    }
}

/// Total size of a PES from its `PES_packet_length`, if given (0 means
/// unbounded, as video usually is).
fn declared_len(pes: &[u8]) -> Option<usize> {
    let len = usize::from(u16::from_be_bytes([*pes.get(4)?, *pes.get(5)?]));
    (len != 0).then_some(6 + len)
}

/// The parts of a PES header used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PesHeader {
    pts: Option<u64>,
    dts: Option<u64>,
    payload_offset: usize,
}

impl PesHeader {
    /// Parses an audio/video PES header (with the optional header); `None`
    /// for anything else or anything malformed.
    fn parse(pes: &[u8]) -> Option<PesHeader> {
        if pes.len() < 9 || pes[..3] != [0, 0, 1] {
            return None;
        }
        let stream_id = pes[3];
        // Audio (0xC0-0xDF), video (0xE0-0xEF) or private stream 1.
        if !(stream_id == 0xBD || (0xC0..=0xEF).contains(&stream_id)) {
            return None;
        }
        if pes[6] & 0xC0 != 0x80 {
            return None;
        }
        let flags = pes[7] >> 6;
        let header_len = usize::from(pes[8]);
        let payload_offset = 9 + header_len;
        if payload_offset > pes.len() {
            return None;
        }
        let timestamp = |at: usize| -> Option<u64> {
            let b = pes.get(at..at + 5)?;
            Some(
                (u64::from(b[0] >> 1 & 0x07) << 30)
                    | (u64::from(b[1]) << 22)
                    | (u64::from(b[2] >> 1) << 15)
                    | (u64::from(b[3]) << 7)
                    | u64::from(b[4] >> 1),
            )
        };
        let (pts, dts) = match flags {
            0b10 if header_len >= 5 => (timestamp(9), None),
            0b11 if header_len >= 10 => (timestamp(9), timestamp(14)),
            0b00 => (None, None),
            _ => return None,
        };
        Some(PesHeader {
            pts,
            dts,
            payload_offset,
        })
    }
}

// ---------------------------------------------------------------------------
// H.264
// ---------------------------------------------------------------------------

/// What an access unit holds.
#[derive(Debug, Default)]
struct AuShape {
    nals: usize,
    auds: usize,
    idr: bool,
    sps: bool,
    pps: bool,
}

#[derive(Debug, Default)]
struct AvcState {
    /// Last SPS and PPS seen, without start codes.
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    codec: Option<String>,
    size: Option<(u32, u32)>,
}

impl AvcState {
    fn sps_seen(&mut self, nal: &[u8], changed: &mut bool) {
        if nal.len() < 4 || nal.len() > MAX_PARAMETER_SET || self.sps.as_deref() == Some(nal) {
            return;
        }
        self.sps = Some(Bytes::copy_from_slice(nal));
        let Some(config) = AvcConfig::from_sps(nal) else {
            return;
        };
        let (codec, size) = (Some(config.codec_string()), config.dimensions());
        if codec != self.codec || size != self.size {
            self.codec = codec;
            self.size = size;
            *changed = true;
        }
    }

    fn pps_seen(&mut self, nal: &[u8]) {
        if nal.len() < 2 || nal.len() > MAX_PARAMETER_SET || self.pps.as_deref() == Some(nal) {
            return;
        }
        self.pps = Some(Bytes::copy_from_slice(nal));
    }

    fn parameter_sets_len(&self) -> usize {
        [&self.sps, &self.pps]
            .into_iter()
            .flatten()
            .map(|ps| ps.len() + START_CODE.len())
            .sum()
    }
}

/// The non-empty NAL units of an Annex B byte stream (without start codes
/// or trailing zero bytes); bytes before the first start code are skipped.
pub(crate) fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = find_start_code(data).map_or(&[][..], |(_, end)| &data[end..]);
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let (nal, next) = match find_start_code(rest) {
                Some((start, end)) => (&rest[..start], &rest[end..]),
                None => (rest, &[][..]),
            };
            rest = next;
            let trimmed = nal.len() - nal.iter().rev().take_while(|&&b| b == 0).count();
            if trimmed > 0 {
                return Some(&nal[..trimmed]);
            }
        }
    })
}

/// The first `00 00 01`: (its offset, the offset just after it).
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    let mut i = 2;
    while i < data.len() {
        match data[i] {
            1 if data[i - 1] == 0 && data[i - 2] == 0 => return Some((i - 2, i + 1)),
            0 => i += 1,
            _ => i += 3,
        }
    }
    None
}

// ---------------------------------------------------------------------------
// AAC (ADTS)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AacInfo {
    object_type: u8,
    frequency_index: u8,
    channels: u8,
}

#[derive(Debug, Default)]
struct AacState {
    header: Option<AacInfo>,
    /// Start of an ADTS frame that continues in the next PES.
    carry: Vec<u8>,
    /// Where the audio written so far ends.
    next_pts: Option<i64>,
}

impl AacState {
    fn rate(&self) -> i64 {
        self.header
            .and_then(|h| AAC_FREQUENCIES.get(usize::from(h.frequency_index)))
            .map_or(48_000, |&rate| i64::from(rate))
    }
}

/// An ADTS header (ISO 14496-3 1.A.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdtsHeader {
    object_type: u8,
    frequency_index: u8,
    channels: u8,
    rate: i64,
    /// Whole frame, header included.
    frame_len: usize,
    /// PCM samples it decodes to.
    samples: i64,
}

impl AdtsHeader {
    fn parse(b: &[u8]) -> Option<AdtsHeader> {
        let b: &[u8; 7] = b.get(..7)?.try_into().ok()?;
        // Sync word, layer 0.
        if b[0] != 0xFF || b[1] & 0xF6 != 0xF0 {
            return None;
        }
        let protection_absent = b[1] & 0x01 != 0;
        let frequency_index = (b[2] >> 2) & 0x0F;
        let rate = i64::from(*AAC_FREQUENCIES.get(usize::from(frequency_index))?);
        let frame_len =
            (usize::from(b[3] & 0x03) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
        let header_len = if protection_absent { 7 } else { 9 };
        if frame_len <= header_len {
            return None;
        }
        Some(AdtsHeader {
            object_type: (b[2] >> 6) + 1,
            frequency_index,
            channels: ((b[2] & 0x01) << 2) | (b[3] >> 6),
            rate,
            frame_len,
            samples: AAC_SAMPLES * (i64::from(b[6] & 0x03) + 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::ts::TsMuxer;

    const SPS: [u8; 26] = [
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: [u8; 6] = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        out
    }

    /// One AAC-LC stereo ADTS frame at 48 kHz with `payload` bytes.
    fn adts(payload: usize) -> Vec<u8> {
        let len = payload + 7;
        let mut frame = vec![
            0xFF,
            0xF1,
            (1 << 6) | (3 << 2),
            (2 << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len as u8 & 0x07) << 5) | 0x1F,
            0xFC,
        ];
        frame.extend((0..payload).map(|i| i as u8));
        frame
    }

    fn demux_all(data: &[u8]) -> (Vec<Frame>, TsDemuxer) {
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        d.push(data, &mut out);
        d.finish(&mut out);
        (out, d)
    }

    fn videos(frames: &[Frame]) -> Vec<&VideoFrame> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Video(v) => Some(v),
                Frame::Audio(_) => None,
            })
            .collect()
    }

    fn audios(frames: &[Frame]) -> Vec<&AudioFrame> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Audio(a) => Some(a),
                Frame::Video(_) => None,
            })
            .collect()
    }

    fn nal_types(data: &[u8]) -> Vec<u8> {
        nal_units(data).map(|n| n[0] & 0x1F).collect()
    }

    #[test]
    fn synthetic_stream_round_trips_with_parameter_sets_inserted() {
        let mut mux = TsMuxer::new();
        let mut ts = Vec::new();
        mux.write_tables(&mut ts, true).unwrap();
        let idr = [0x65, 0x88, 0x84, 0x00];
        let p = [0x41, 0x9a, 0x02];
        // First keyframe carries its parameter sets and no AUD; the second
        // has neither; the P frame has an AUD but not first.
        let k1 = annexb(&[&SPS, &PPS, &idr]);
        let k2 = annexb(&[&[0x06, 0x05, 0x01], &idr]);
        let p1 = annexb(&[&p, &[0x09, 0xF0]]);
        mux.write_video(&mut ts, 1_000, 4_000, true, &k1).unwrap();
        let mut two = adts(100);
        two.extend(adts(50));
        mux.write_audio(&mut ts, 1_000, &two).unwrap();
        mux.write_video(&mut ts, 4_000, 7_000, false, &p1).unwrap();
        mux.write_video(&mut ts, 7_000, 7_000, true, &k2).unwrap();
        let (frames, d) = demux_all(&ts);
        let v = videos(&frames);
        assert_eq!(v.len(), 3);
        assert_eq!((v[0].dts, v[0].pts, v[0].keyframe), (1_000, 4_000, true));
        assert_eq!(nal_types(&v[0].data), [9, 7, 8, 5]);
        assert_eq!(nal_types(&v[1].data), [9, 1]);
        assert!(!v[1].keyframe);
        assert_eq!((v[2].dts, v[2].pts, v[2].keyframe), (7_000, 7_000, true));
        assert_eq!(nal_types(&v[2].data), [9, 7, 8, 6, 5]);
        assert!(v[2].data.starts_with(&AUD));
        let a = audios(&frames);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].pts, a[0].data.len()), (1_000, 107));
        assert_eq!((a[1].pts, a[1].data.len()), (1_000 + 1_920, 57));
        assert_eq!(d.video_codec().as_deref(), Some("avc1.64001e"));
        assert_eq!(d.audio_codec().as_deref(), Some("mp4a.40.2"));
        assert_eq!(d.dimensions(), Some((640, 360)));
        assert_eq!(d.stats().dropped_pes, 0);
        let program = d.program().unwrap();
        assert_eq!(
            (program.video_pid, program.audio_pid),
            (Some(0x100), Some(0x101))
        );
    }

    #[test]
    fn keyframe_without_any_parameter_sets_is_not_a_keyframe() {
        let mut mux = TsMuxer::new();
        let mut ts = Vec::new();
        mux.write_tables(&mut ts, false).unwrap();
        mux.write_video(&mut ts, 0, 0, true, &annexb(&[&[0x65, 1, 2]]))
            .unwrap();
        let (frames, d) = demux_all(&ts);
        assert!(!videos(&frames)[0].keyframe);
        assert_eq!(d.stats().keyframes_without_parameters, 1);
    }

    #[test]
    fn timestamps_unwrap_across_33_bits() {
        let mut mux = TsMuxer::new();
        let mut ts = Vec::new();
        mux.write_tables(&mut ts, true).unwrap();
        let start = (1i64 << 33) - 2 * 3_000;
        let k = annexb(&[&SPS, &PPS, &[0x65, 1]]);
        for i in 0..4 {
            let dts = start + i * 3_000;
            mux.write_video(&mut ts, dts, dts + 6_000, i == 0, &k)
                .unwrap();
            mux.write_audio(&mut ts, dts, &adts(10)).unwrap();
        }
        let (frames, _) = demux_all(&ts);
        let dts: Vec<_> = videos(&frames).iter().map(|v| v.dts).collect();
        // The first timestamp seen (the keyframe's PTS, already wrapped to 0)
        // anchors the timeline; from there it counts on through the wrap.
        let first = dts[0];
        assert_eq!(first.rem_euclid(1 << 33), start);
        assert_eq!(
            dts,
            [first, first + 3_000, first + 6_000, first + 9_000],
            "past 2^33 the count goes on"
        );
        let pts: Vec<_> = videos(&frames).iter().map(|v| v.pts - v.dts).collect();
        assert_eq!(pts, [6_000; 4]);
        let audio: Vec<_> = audios(&frames).iter().map(|a| a.pts).collect();
        assert_eq!(audio, dts);
    }

    #[test]
    fn adts_frame_split_across_pes_packets_is_carried_over() {
        let mut mux = TsMuxer::new();
        let mut ts = Vec::new();
        mux.write_tables(&mut ts, true).unwrap();
        mux.write_video(&mut ts, 0, 0, true, &annexb(&[&SPS, &PPS, &[0x65, 1]]))
            .unwrap();
        let (f1, f2, f3) = (adts(200), adts(300), adts(100));
        let mut first = f1.clone();
        first.extend_from_slice(&f2[..120]);
        let mut second = f2[120..].to_vec();
        second.extend_from_slice(&f3);
        mux.write_audio(&mut ts, 90_000, &first).unwrap();
        mux.write_audio(&mut ts, 90_000 + 2 * 1_920, &second)
            .unwrap();
        let (frames, d) = demux_all(&ts);
        let a = audios(&frames);
        let got: Vec<_> = a.iter().map(|a| (a.pts, a.data.len())).collect();
        assert_eq!(
            got,
            [(90_000, 207), (91_920, 307), (90_000 + 2 * 1_920, 107)]
        );
        assert_eq!(&a[1].data[..], &f2[..]);
        assert_eq!(d.stats().bad_adts_bytes, 0);
    }

    #[test]
    fn clock_places_each_timestamp_nearest_the_previous() {
        let mut c = Clock::default();
        assert_eq!(c.extend(100), 100);
        assert_eq!(c.extend(50), 50, "small steps back stay back");
        assert_eq!(c.extend(TIMESTAMP_MASK), -1, "just before 0, wrapped");
        assert_eq!(c.extend(10), 10);
        let mut c = Clock::default();
        assert_eq!(c.extend(TIMESTAMP_MASK - 10), TIMESTAMP_MASK as i64 - 10);
        assert_eq!(c.extend(5), TIMESTAMP_MASK as i64 + 6);
    }

    #[test]
    fn nal_units_skip_junk_and_trailing_zeros() {
        let data = [
            9, 9, 0, 0, 1, 0x67, 1, 0, 0, 0, 0, 1, 0x68, 2, 0, 0, 1, 0, 0, 1, 0x65,
        ];
        let nals: Vec<_> = nal_units(&data).collect();
        assert_eq!(nals, [&[0x67, 1][..], &[0x68, 2], &[0x65]]);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn section_crc_is_checked() {
        let mut mux = TsMuxer::new();
        let mut ts = Vec::new();
        mux.write_tables(&mut ts, true).unwrap();
        ts[2 * 188 - 10] ^= 0x01; // inside the PMT (sections end their packet)
        let (_, d) = demux_all(&ts);
        assert!(d.program().is_none());
        assert_eq!(d.stats().bad_sections, 1);
    }

    // -- Real streams from ffmpeg ------------------------------------------

    /// An H.264 (B-frames, GOP 30) + AAC transport stream from ffmpeg, or
    /// `None` when ffmpeg is not installed.
    fn ffmpeg_ts(seconds: u32, extra: &[&str]) -> Option<Vec<u8>> {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tsdemux-{}-{call}-{seconds}s.ts",
            std::process::id()
        ));
        let t = seconds.to_string();
        let mut args = vec![
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            &t,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "30",
            "-c:a",
            "aac",
        ];
        args.extend_from_slice(extra);
        args.extend(["-f", "mpegts"]);
        let path_str = path.to_str()?.to_owned();
        args.push(&path_str);
        let status = std::process::Command::new("ffmpeg").args(&args).status();
        match status {
            Ok(s) if s.success() => {
                let ts = std::fs::read(&path).ok();
                let _ = std::fs::remove_file(&path);
                ts
            }
            Ok(s) => panic!("ffmpeg failed: {s}"),
            Err(_) => {
                eprintln!("ffmpeg not found: skipping");
                None
            }
        }
    }

    /// `(stream index, pts, dts, keyframe, size)` of every packet.
    fn ffprobe_packets(ts: &[u8]) -> Vec<(u32, i64, i64, bool, usize)> {
        let path = std::env::temp_dir().join(format!("tsdemux-probe-{}.ts", std::process::id()));
        std::fs::write(&path, ts).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_entries"])
            .arg("packet=stream_index,pts,dts,flags,size")
            .args(["-of", "csv=p=0"])
            .arg(&path)
            .output()
            .expect("ffprobe");
        let _ = std::fs::remove_file(&path);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let f: Vec<_> = line.split(',').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[4].starts_with('K'),
                    f[3].parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn ffmpeg_stream_matches_ffprobe_packet_for_packet() {
        let Some(ts) = ffmpeg_ts(3, &[]) else { return };
        let probe = ffprobe_packets(&ts);
        let (frames, d) = demux_all(&ts);
        let v = videos(&frames);
        let a = audios(&frames);
        let probe_video: Vec<_> = probe
            .iter()
            .filter(|p| p.0 == 0)
            .map(|p| (p.1, p.2, p.3, p.4))
            .collect();
        let ours: Vec<_> = v
            .iter()
            .map(|f| (f.pts, f.dts, f.keyframe, f.data.len()))
            .collect();
        // All but the last, whose end `finish` cannot know (no PES length).
        assert_eq!(ours, probe_video[..probe_video.len() - 1]);
        assert_eq!(v.len(), 89);
        assert_eq!(v.iter().filter(|f| f.keyframe).count(), 3);
        assert!(v.iter().all(|f| f.data.starts_with(&AUD)));
        let probe_audio: Vec<_> = probe
            .iter()
            .filter(|p| p.0 == 1)
            .map(|p| (p.1, p.4))
            .collect();
        assert_eq!(a.len(), probe_audio.len());
        for (ours, probe) in a.iter().zip(&probe_audio) {
            // ffmpeg adds rounded frame durations (2090, 2090, 2089 ticks at
            // 44.1 kHz) to each PES's PTS; here the exact sample count is
            // converted, so the two differ by at most one tick.
            assert!(
                (ours.pts - probe.0).abs() <= 1,
                "{} vs {}",
                ours.pts,
                probe.0
            );
            assert_eq!(ours.data.len(), probe.1);
        }
        assert_eq!(d.video_codec().as_deref(), Some("avc1.64000d"));
        assert_eq!(d.audio_codec().as_deref(), Some("mp4a.40.2"));
        assert_eq!(d.dimensions(), Some((320, 240)));
        let s = d.stats();
        assert_eq!(
            (s.resyncs, s.continuity_errors, s.dropped_pes, s.untimed),
            (0, 0, 0, 0)
        );
    }

    /// Tiny deterministic generator for the fuzz tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn arbitrary_chunking_gives_the_same_frames() {
        let Some(ts) = ffmpeg_ts(2, &[]) else { return };
        let (whole, _) = demux_all(&ts);
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5 {
            let mut d = TsDemuxer::new();
            let mut out = Vec::new();
            let mut rest = &ts[..];
            while !rest.is_empty() {
                let n = (1 + rng.below(3000)).min(rest.len());
                d.push(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            d.finish(&mut out);
            assert_eq!(out, whole);
        }
    }

    #[test]
    fn lost_packets_drop_only_the_damaged_access_units() {
        let Some(ts) = ffmpeg_ts(2, &[]) else { return };
        let (clean, _) = demux_all(&ts);
        // Drop one video packet that is not a PES start, mid-stream.
        let packets: Vec<_> = ts.chunks(188).collect();
        let victim = (packets.len() / 2..packets.len())
            .find(|&i| {
                let p = packets[i];
                let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
                pid == 0x100 && p[1] & 0x40 == 0 && p[3] & 0x10 != 0
            })
            .unwrap();
        let damaged: Vec<u8> = packets
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != victim)
            .flat_map(|(_, p)| p.iter().copied())
            .collect();
        let (frames, d) = demux_all(&damaged);
        assert_eq!(d.stats().continuity_errors, 1);
        assert_eq!(d.stats().dropped_pes, 1);
        let clean_v = videos(&clean);
        let got_v = videos(&frames);
        assert_eq!(got_v.len(), clean_v.len() - 1);
        assert!(got_v.iter().all(|f| clean_v.contains(f)), "others intact");
        assert_eq!(audios(&frames), audios(&clean));
    }

    #[test]
    fn garbage_truncation_and_bit_flips_never_panic() {
        let Some(ts) = ffmpeg_ts(2, &[]) else { return };
        let (clean, _) = demux_all(&ts);
        let clean_video = videos(&clean).len();
        let mut rng = XorShift(12345);
        for round in 0..200 {
            let mut data = ts.clone();
            match round % 4 {
                0 => {
                    for _ in 0..1 + rng.below(50) {
                        let i = rng.below(data.len());
                        data[i] ^= 1 << rng.below(8);
                    }
                }
                1 => data.truncate(rng.below(data.len())),
                2 => {
                    let at = rng.below(data.len());
                    let junk: Vec<u8> = (0..rng.below(1000)).map(|_| rng.next() as u8).collect();
                    data.splice(at..at, junk);
                }
                _ => {
                    for _ in 0..1 + rng.below(20) {
                        let at = rng.below(data.len());
                        let len = rng.below(2000).min(data.len() - at);
                        data.drain(at..at + len);
                    }
                }
            }
            let mut d = TsDemuxer::new();
            let mut out = Vec::new();
            for chunk in data.chunks(1316) {
                d.push(chunk, &mut out);
            }
            d.finish(&mut out);
            let v = videos(&out);
            assert!(v.len() <= clean_video + 2, "round {round}: {}", v.len());
            for f in v {
                assert!(f.data.starts_with(&[0, 0, 1]) || f.data.starts_with(&[0, 0, 0, 1]));
                assert_eq!(nal_types(&f.data)[0], 9, "an AUD first");
                if f.keyframe {
                    let types = nal_types(&f.data);
                    assert!(types.contains(&7) && types.contains(&8) && types.contains(&5));
                }
            }
            for a in audios(&out) {
                assert!(AdtsHeader::parse(&a.data).is_some_and(|h| h.frame_len == a.data.len()));
            }
        }
        // Pure noise.
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        for _ in 0..200 {
            let chunk: Vec<u8> = (0..1316)
                .map(|i| if i % 188 == 0 { 0x47 } else { rng.next() as u8 })
                .collect();
            d.push(&chunk, &mut out);
        }
        d.finish(&mut out);
        assert!(d.pending.len() < TS_PACKET_SIZE);
    }

    #[test]
    fn oversized_pes_is_dropped_and_memory_stays_bounded() {
        let mut mux = TsMuxer::new();
        let mut ts = Vec::new();
        mux.write_tables(&mut ts, false).unwrap();
        let huge = annexb(&[&SPS, &PPS, &vec![0x65; MAX_VIDEO_PES + 1000]]);
        mux.write_video(&mut ts, 0, 0, true, &huge).unwrap();
        let k = annexb(&[&SPS, &PPS, &[0x65, 1]]);
        mux.write_video(&mut ts, 3_000, 3_000, true, &k).unwrap();
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        for chunk in ts.chunks(1316) {
            d.push(chunk, &mut out);
            assert!(
                d.video
                    .as_ref()
                    .is_none_or(|v| v.data.len() <= MAX_VIDEO_PES)
            );
        }
        d.finish(&mut out);
        let v = videos(&out);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].dts, 3_000);
        assert_eq!(d.stats().dropped_pes, 1);
    }

    #[test]
    fn hevc_only_program_is_reported_unsupported() {
        let Some(ts) = ffmpeg_ts(1, &["-c:v", "libx265", "-x265-params", "log-level=error"]) else {
            return;
        };
        let (frames, d) = demux_all(&ts);
        assert!(videos(&frames).is_empty());
        assert!(!audios(&frames).is_empty());
        let program = d.program().unwrap();
        assert_eq!(program.unsupported_video(), Some(0x24));
    }
}
