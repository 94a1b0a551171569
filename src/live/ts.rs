//! MPEG transport stream muxer for one program: H.264 video and optional AAC
//! (ADTS) audio, as HLS segments need them.
//!
//! Packet, PES and PSI serialisation is done by the `mpeg2ts` crate: its
//! writer takes a whole [`TsPacket`] value (header, adaptation field, payload
//! of up to 184 bytes) and fills the rest of the packet with adaptation-field
//! stuffing on its own, which is exactly the packetisation HLS wants. What it
//! does not do is split PES packets into TS packets, pick PCR values or keep
//! continuity counters; that policy lives here. Its costs are a few small
//! copies per 188-byte packet (no heap allocation) plus two small allocations
//! per PAT/PMT pair, i.e. per segment.
//!
//! Policy:
//! - PAT and PMT are written by [`TsMuxer::write_tables`], which the segmenter
//!   calls at the start of every segment, so each segment is decodable alone.
//! - The PCR is carried on the video PID, in the adaptation field of the
//!   first packet of *every* video PES (so also of every keyframe, together
//!   with `random_access_indicator`). That is at least every 100 ms at 10 fps
//!   or more; when video is sparser, audio PES packets are preceded by a
//!   PCR-only packet on the video PID whenever the last PCR is 100 ms old.
//!   PCR = DTS − [`PCR_DELAY_TICKS`], never decreasing.
//! - Continuity counters are per PID and live as long as the muxer, so they
//!   run on across segments of a stream.
//! - Timestamps are `i64` 90 kHz ticks on the caller's unbounded timeline and
//!   are written modulo 2³³, so they wrap the way the format requires.

use mpeg2ts::es::{StreamId, StreamType};
use mpeg2ts::pes::PesHeader;
use mpeg2ts::time::{ClockReference, Timestamp};
use mpeg2ts::ts::payload::{Bytes as TsBytes, Pat, Pes, Pmt};
use mpeg2ts::ts::{
    AdaptationField, ContinuityCounter, EsInfo, Pid, ProgramAssociation,
    TransportScramblingControl, TsHeader, TsPacket, TsPacketWriter, TsPayload, VersionNumber,
    WriteTsPacket,
};

/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 stream, which also carries the PCR.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the AAC stream.
pub const AUDIO_PID: u16 = 0x101;
/// The one program's number.
const PROGRAM_NUMBER: u16 = 1;

/// How far the PCR runs behind the video DTS (700 ms, as ffmpeg's default
/// `max_delay`): the decoder's buffering headroom.
pub const PCR_DELAY_TICKS: i64 = 63_000;
/// Longest gap between two PCRs before audio forces one (100 ms).
const PCR_INTERVAL_TICKS: i64 = 9_000;
/// TS payload bytes per packet.
const PAYLOAD_SIZE: usize = TsPacket::SIZE - 4;
/// Size of an adaptation field holding flags and a PCR.
const PCR_FIELD_SIZE: usize = 8;
/// PES header size with PTS only, and with PTS and DTS.
const PES_HEADER_PTS: usize = 14;
const PES_HEADER_PTS_DTS: usize = 19;

/// Why a packet could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TsError {
    /// An audio access unit larger than a PES packet can hold (64 KiB).
    #[error("audio access unit of {0} bytes does not fit one PES packet")]
    AudioTooLarge(usize),
    /// `mpeg2ts` refused a value; with the checks above this is a bug here.
    #[error("MPEG-TS serialisation failed: {0}")]
    Serialize(Box<mpeg2ts::Error>),
}

impl From<mpeg2ts::Error> for TsError {
    fn from(e: mpeg2ts::Error) -> Self {
        Self::Serialize(Box::new(e))
    }
}

/// Writes the packets of one stream's program into caller-provided buffers.
///
/// One muxer serves a whole stream (it outlives segments), so continuity
/// counters, the PMT version and the PCR run on from segment to segment.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    /// Last continuity counter per PID (15 at first, so the first packet
    /// carries 0).
    pat_cc: u8,
    pmt_cc: u8,
    video_cc: u8,
    audio_cc: u8,
    pmt_version: VersionNumber,
    /// Whether the last PMT listed audio; `None` before the first.
    pmt_audio: Option<bool>,
    /// Last PCR written, unwrapped 90 kHz ticks.
    last_pcr: Option<i64>,
}

impl Default for TsMuxer {
    fn default() -> Self {
        Self::new()
    }
}

impl TsMuxer {
    /// A muxer whose first packet on each PID will carry continuity counter 0.
    pub fn new() -> Self {
        Self {
            pat_cc: 15,
            pmt_cc: 15,
            video_cc: 15,
            audio_cc: 15,
            pmt_version: VersionNumber::new(),
            pmt_audio: None,
            last_pcr: None,
        }
    }

    /// Appends a PAT and a PMT listing video and, if `with_audio`, audio.
    /// The PMT version changes whenever the track list does.
    pub fn write_tables(&mut self, out: &mut Vec<u8>, with_audio: bool) -> Result<(), TsError> {
        if self.pmt_audio.is_some_and(|a| a != with_audio) {
            self.pmt_version.increment();
        }
        self.pmt_audio = Some(with_audio);

        let pat = Pat {
            transport_stream_id: 1,
            version_number: VersionNumber::new(),
            table: vec![ProgramAssociation {
                program_num: PROGRAM_NUMBER,
                program_map_pid: Pid::new(PMT_PID)?,
            }],
        };
        write_packet(out, 0, &mut self.pat_cc, None, Some(TsPayload::Pat(pat)))?;

        let mut es_info = vec![EsInfo {
            stream_type: StreamType::H264,
            elementary_pid: Pid::new(VIDEO_PID)?,
            descriptors: Vec::new(),
        }];
        if with_audio {
            es_info.push(EsInfo {
                stream_type: StreamType::AdtsAac,
                elementary_pid: Pid::new(AUDIO_PID)?,
                descriptors: Vec::new(),
            });
        }
        let pmt = Pmt {
            program_num: PROGRAM_NUMBER,
            pcr_pid: Some(Pid::new(VIDEO_PID)?),
            version_number: self.pmt_version,
            program_info: Vec::new(),
            es_info,
        };
        write_packet(
            out,
            PMT_PID,
            &mut self.pmt_cc,
            None,
            Some(TsPayload::Pmt(pmt)),
        )
    }

    /// Appends one H.264 access unit (Annex B) as a PES packet (stream id
    /// 0xE0, PTS and, when it differs, DTS). Its first TS packet carries a
    /// PCR and, for keyframes, `random_access_indicator`.
    pub fn write_video(
        &mut self,
        out: &mut Vec<u8>,
        dts: i64,
        pts: i64,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), TsError> {
        let pcr = self.last_pcr.map_or(dts - PCR_DELAY_TICKS, |last| {
            last.max(dts - PCR_DELAY_TICKS)
        });
        self.last_pcr = Some(pcr);
        let header = PesHeader {
            stream_id: StreamId::new(0xE0),
            priority: false,
            data_alignment_indicator: true,
            copyright: false,
            original_or_copy: false,
            pts: Some(timestamp(pts)?),
            dts: if dts == pts {
                None
            } else {
                Some(timestamp(dts)?)
            },
            escr: None,
        };
        let header_len = if dts == pts {
            PES_HEADER_PTS
        } else {
            PES_HEADER_PTS_DTS
        };
        // Video may leave PES_packet_length 0 (unbounded) when it does not fit.
        let pes_len = u16::try_from(header_len - 6 + data.len()).unwrap_or(0);
        let field = adaptation_field(Some(pcr), keyframe)?;
        write_pes(
            out,
            VIDEO_PID,
            &mut self.video_cc,
            (header, header_len, pes_len),
            Some((field, PCR_FIELD_SIZE)),
            data,
        )
    }

    /// Appends one ADTS AAC frame (or several back to back) as a PES packet
    /// (stream id 0xC0, PTS), preceded by a PCR-only packet on the video PID
    /// if the last PCR is more than 100 ms behind.
    pub fn write_audio(&mut self, out: &mut Vec<u8>, pts: i64, data: &[u8]) -> Result<(), TsError> {
        let pes_len = u16::try_from(PES_HEADER_PTS - 6 + data.len())
            .map_err(|_| TsError::AudioTooLarge(data.len()))?;
        if let Some(last) = self.last_pcr {
            let pcr = pts - PCR_DELAY_TICKS;
            if pcr - last >= PCR_INTERVAL_TICKS {
                self.last_pcr = Some(pcr);
                let field = adaptation_field(Some(pcr), false)?;
                write_packet(out, VIDEO_PID, &mut self.video_cc, Some(field), None)?;
            }
        }
        let header = PesHeader {
            stream_id: StreamId::new(0xC0),
            priority: false,
            data_alignment_indicator: true,
            copyright: false,
            original_or_copy: false,
            pts: Some(timestamp(pts)?),
            dts: None,
            escr: None,
        };
        write_pes(
            out,
            AUDIO_PID,
            &mut self.audio_cc,
            (header, PES_HEADER_PTS, pes_len),
            None,
            data,
        )
    }
}

/// A 90 kHz timestamp modulo 2³³.
fn timestamp(ticks: i64) -> Result<Timestamp, mpeg2ts::Error> {
    Timestamp::new(wrap33(ticks))
}

fn wrap33(ticks: i64) -> u64 {
    ticks.rem_euclid(1 << 33) as u64
}

/// An adaptation field with an optional PCR (90 kHz ticks, wrapped).
fn adaptation_field(pcr: Option<i64>, random_access: bool) -> Result<AdaptationField, TsError> {
    Ok(AdaptationField {
        discontinuity_indicator: false,
        random_access_indicator: random_access,
        es_priority_indicator: false,
        pcr: pcr
            .map(|t| ClockReference::new(wrap33(t) * 300))
            .transpose()?,
        opcr: None,
        splice_countdown: None,
        transport_private_data: Vec::new(),
        extension: None,
    })
}

/// Splits one PES packet over TS packets. `header` is the PES header with its
/// serialised size and `PES_packet_length`; `first_field` an adaptation field
/// for the first packet with its serialised size. `mpeg2ts` stuffs the last
/// packet through its adaptation field.
fn write_pes(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    (header, header_len, pes_len): (PesHeader, usize, u16),
    first_field: Option<(AdaptationField, usize)>,
    data: &[u8],
) -> Result<(), TsError> {
    let (field, field_len) = first_field.map_or((None, 0), |(f, n)| (Some(f), n));
    let (head, mut rest) = data.split_at(data.len().min(PAYLOAD_SIZE - field_len - header_len));
    let pes = Pes {
        header,
        pes_packet_len: pes_len,
        data: TsBytes::new(head)?,
    };
    write_packet(out, pid, cc, field, Some(TsPayload::PesStart(pes)))?;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(PAYLOAD_SIZE));
        let payload = TsPayload::PesContinuation(TsBytes::new(chunk)?);
        write_packet(out, pid, cc, None, Some(payload))?;
        rest = tail;
    }
    Ok(())
}

/// Appends one 188-byte packet. `cc` holds the PID's last continuity
/// counter; it advances only for packets with a payload.
fn write_packet(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    adaptation_field: Option<AdaptationField>,
    payload: Option<TsPayload>,
) -> Result<(), TsError> {
    if payload.is_some() {
        *cc = (*cc + 1) & 0x0F;
    }
    let packet = TsPacket {
        header: TsHeader {
            transport_error_indicator: false,
            transport_priority: false,
            pid: Pid::new(pid)?,
            transport_scrambling_control: TransportScramblingControl::NotScrambled,
            continuity_counter: ContinuityCounter::from_u8(*cc)?,
        },
        adaptation_field,
        payload,
    };
    TsPacketWriter::new(out).write_ts_packet(&packet)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed view of one TS packet, enough to check the muxer's policy.
    #[derive(Debug)]
    struct Packet<'a> {
        pid: u16,
        start: bool,
        cc: u8,
        random_access: bool,
        pcr: Option<u64>,
        payload: &'a [u8],
    }

    fn packets(ts: &[u8]) -> Vec<Packet<'_>> {
        assert_eq!(ts.len() % 188, 0);
        ts.chunks(188)
            .map(|p| {
                assert_eq!(p[0], 0x47);
                let control = (p[3] >> 4) & 3;
                let mut offset = 4;
                let (mut random_access, mut pcr) = (false, None);
                if control & 2 != 0 {
                    let len = usize::from(p[4]);
                    if len > 0 {
                        random_access = p[5] & 0x40 != 0;
                        if p[5] & 0x10 != 0 {
                            let b = &p[6..12];
                            let base = (u64::from(b[0]) << 25)
                                | (u64::from(b[1]) << 17)
                                | (u64::from(b[2]) << 9)
                                | (u64::from(b[3]) << 1)
                                | u64::from(b[4] >> 7);
                            pcr = Some(base);
                        }
                    }
                    offset += 1 + len;
                }
                Packet {
                    pid: (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]),
                    start: p[1] & 0x40 != 0,
                    cc: p[3] & 0x0F,
                    random_access,
                    pcr,
                    payload: if control & 1 != 0 { &p[offset..] } else { &[] },
                }
            })
            .collect()
    }

    fn pes_pts(payload: &[u8]) -> u64 {
        let b = &payload[9..14];
        (u64::from(b[0] >> 1 & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1)
    }

    #[test]
    fn pes_roundtrip_with_pcr_rai_and_stuffing() {
        let mut mux = TsMuxer::new();
        let mut out = Vec::new();
        mux.write_tables(&mut out, true).unwrap();
        let frame: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        mux.write_video(&mut out, 900_000, 903_000, true, &frame)
            .unwrap();
        mux.write_audio(&mut out, 900_000, &[0xFF, 0xF1, 1, 2, 3])
            .unwrap();
        let ps = packets(&out);
        assert_eq!((ps[0].pid, ps[1].pid), (0, PMT_PID));

        let video: Vec<_> = ps.iter().filter(|p| p.pid == VIDEO_PID).collect();
        assert!(video[0].start && video[0].random_access);
        assert_eq!(video[0].pcr, Some(900_000 - PCR_DELAY_TICKS as u64));
        assert!(video[1..].iter().all(|p| !p.start && p.pcr.is_none()));
        assert_eq!(
            video.iter().map(|p| p.cc).collect::<Vec<_>>(),
            (0..video.len() as u8).collect::<Vec<_>>()
        );
        let pes: Vec<u8> = video
            .iter()
            .flat_map(|p| p.payload.iter().copied())
            .collect();
        assert_eq!(&pes[..4], &[0, 0, 1, 0xE0]);
        assert_eq!(pes[7] >> 6, 0b11, "PTS and DTS");
        assert_eq!(pes_pts(&pes), 903_000);
        assert_eq!(&pes[19..], &frame[..]);
        let pes_len = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
        assert_eq!(pes_len, pes.len() - 6);

        let audio: Vec<_> = ps.iter().filter(|p| p.pid == AUDIO_PID).collect();
        assert_eq!(audio.len(), 1);
        assert_eq!(&audio[0].payload[..4], &[0, 0, 1, 0xC0]);
        assert_eq!(&audio[0].payload[14..], &[0xFF, 0xF1, 1, 2, 3]);
    }

    #[test]
    fn every_payload_size_packetises() {
        let mut mux = TsMuxer::new();
        let mut out = Vec::new();
        for len in 1..800 {
            out.clear();
            let data = vec![0xAB; len];
            mux.write_video(&mut out, 0, 0, len % 2 == 0, &data)
                .unwrap();
            let payload: Vec<u8> = packets(&out)
                .iter()
                .flat_map(|p| p.payload.iter().copied())
                .collect();
            assert_eq!(&payload[PES_HEADER_PTS..], &data[..], "len {len}");
        }
    }

    #[test]
    fn continuity_counters_and_pmt_version_run_across_segments() {
        let mut mux = TsMuxer::new();
        let mut out = Vec::new();
        for (i, audio) in [false, false, true].into_iter().enumerate() {
            out.clear();
            mux.write_tables(&mut out, audio).unwrap();
            let ps = packets(&out);
            assert_eq!((ps[0].cc, ps[1].cc), (i as u8, i as u8));
            // PMT version: byte 5 of the section (after the pointer field).
            assert_eq!((ps[1].payload[6] >> 1) & 0x1F, u8::from(audio));
            assert_eq!(ps[1].payload[1], 2, "table id");
        }
    }

    #[test]
    fn timestamps_wrap_at_33_bits_and_pcr_fills_gaps() {
        let mut mux = TsMuxer::new();
        let mut out = Vec::new();
        let t = (1i64 << 33) + 90_000;
        mux.write_video(&mut out, t, t, true, &[1; 10]).unwrap();
        // Audio 300 ms later with no video in between: a PCR-only packet.
        mux.write_audio(&mut out, t + 27_000, &[2; 10]).unwrap();
        let ps = packets(&out);
        assert_eq!(pes_pts(ps[0].payload), 90_000);
        assert_eq!(ps[0].pcr, Some((90_000 - PCR_DELAY_TICKS) as u64));
        assert_eq!((ps[1].pid, ps[1].payload.len()), (VIDEO_PID, 0));
        assert_eq!(ps[1].pcr, Some((90_000 + 27_000 - PCR_DELAY_TICKS) as u64));
        assert_eq!(ps[1].cc, ps[0].cc, "no payload, no increment");
        assert_eq!(pes_pts(ps[2].payload), 90_000 + 27_000);
        // A negative timestamp wraps too.
        assert_eq!(wrap33(-1), (1 << 33) - 1);
    }

    #[test]
    fn oversized_audio_is_rejected() {
        let mut out = Vec::new();
        let r = TsMuxer::new().write_audio(&mut out, 0, &vec![0; 70_000]);
        assert!(matches!(r, Err(TsError::AudioTooLarge(70_000))));
        assert!(out.is_empty());
    }
}
