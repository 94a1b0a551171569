//! FLV tag bodies, as an RTMP server hands them over (the tag *body*, without
//! the 11-byte FLV tag header), turned into access units the segmenter can mux
//! without re-encoding: H.264 in Annex B and AAC in ADTS.
//!
//! Only AVC video (codec id 7) and AAC audio (sound format 10) are accepted;
//! anything else, including Enhanced RTMP (HEVC, AV1, ...), is an error the
//! relay can report to the publisher. Every function here is total on
//! arbitrary input: malformed network data yields an [`FlvError`], never a
//! panic.

use bytes::{BufMut, BytesMut};

use super::segmenter::{AudioFrame, VideoFrame};

/// 90 kHz ticks per RTMP millisecond.
const TICKS_PER_MS: i64 = 90;

/// Start code written before every NAL unit.
pub(super) const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Access unit delimiter (NAL type 9, `primary_pic_type` 7 = any slice type),
/// written first in every access unit as HLS (and some decoders) expect.
pub(super) const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xF0];

/// Allocation size of the scratch buffer access units are built in; it is
/// reused as soon as the previous access unit has been dropped.
const SCRATCH_CAPACITY: usize = 64 * 1024;

/// AAC sampling frequencies by `sampling_frequency_index` (ISO 14496-3 1.6.3.4).
pub(super) const AAC_FREQUENCIES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Why an FLV tag body could not be turned into an access unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    /// The body ends before a field it announces.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// Not AVC, or an Enhanced RTMP (HEVC, AV1, VP9, ...) video tag.
    #[error("unsupported video codec (FLV codec id {codec_id}, enhanced RTMP: {enhanced})")]
    UnsupportedVideo { codec_id: u8, enhanced: bool },
    /// Not AAC.
    #[error("unsupported audio format {0} (only AAC, 10, is supported)")]
    UnsupportedAudio(u8),
    /// A video frame type FLV does not define.
    #[error("invalid video frame type {0}")]
    InvalidFrameType(u8),
    /// An `AVCPacketType` other than 0, 1 or 2.
    #[error("unknown AVC packet type {0}")]
    UnknownAvcPacketType(u8),
    /// An `AACPacketType` other than 0 or 1.
    #[error("unknown AAC packet type {0}")]
    UnknownAacPacketType(u8),
    /// The AVCDecoderConfigurationRecord is malformed.
    #[error("invalid AVC decoder configuration record: {0}")]
    InvalidAvcConfig(&'static str),
    /// The AudioSpecificConfig is malformed or cannot be carried in ADTS.
    #[error("invalid or unsupported AAC AudioSpecificConfig: {0}")]
    InvalidAacConfig(&'static str),
    /// Coded video arrived before the AVC sequence header.
    #[error("video frame before the AVC sequence header")]
    VideoBeforeConfig,
    /// A raw AAC frame arrived before the AAC sequence header.
    #[error("audio frame before the AAC sequence header")]
    AudioBeforeConfig,
    /// An AVCC length prefix points past the end of the frame.
    #[error("NAL unit length {len} exceeds the remaining {remaining} bytes")]
    BadNalLength { len: usize, remaining: usize },
    /// A raw AAC frame too large for ADTS's 13-bit frame length.
    #[error("AAC frame of {0} bytes is too large for ADTS")]
    AacFrameTooLarge(usize),
}

/// The AVCDecoderConfigurationRecord (`avcC`) from an AVC sequence header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// `AVCProfileIndication` (66 baseline, 77 main, 100 high, ...).
    pub profile: u8,
    /// `profile_compatibility` (the constraint flags).
    pub compatibility: u8,
    /// `AVCLevelIndication` (31 = level 3.1).
    pub level: u8,
    /// Size of the NAL length prefixes in coded frames: 1, 2, 3 or 4 bytes.
    pub nal_length_size: u8,
    /// Sequence parameter sets, without start codes.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets, without start codes.
    pub pps: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// Parses an AVCDecoderConfigurationRecord (ISO 14496-15 5.3.3.1).
    /// Trailing high-profile extension fields are ignored.
    pub fn parse(data: &[u8]) -> Result<Self, FlvError> {
        let mut r = Reader(data);
        let version = r.u8("avcC header")?;
        if version != 1 {
            return Err(FlvError::InvalidAvcConfig("configurationVersion is not 1"));
        }
        let profile = r.u8("avcC header")?;
        let compatibility = r.u8("avcC header")?;
        let level = r.u8("avcC header")?;
        let nal_length_size = (r.u8("avcC header")? & 0x03) + 1;
        let sps_count = r.u8("avcC SPS count")? & 0x1F;
        let sps = (0..sps_count)
            .map(|_| r.parameter_set("avcC SPS"))
            .collect::<Result<Vec<_>, _>>()?;
        let pps_count = r.u8("avcC PPS count")?;
        let pps = (0..pps_count)
            .map(|_| r.parameter_set("avcC PPS"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            profile,
            compatibility,
            level,
            nal_length_size,
            sps,
            pps,
        })
    }

    /// The configuration an SPS NAL unit (without start code) implies, for
    /// Annex B streams that carry no `avcC`.
    pub fn from_sps(nal: &[u8]) -> Option<Self> {
        (nal.len() >= 4).then(|| Self {
            profile: nal[1],
            compatibility: nal[2],
            level: nal[3],
            nal_length_size: 4,
            sps: vec![nal.to_vec()],
            pps: Vec::new(),
        })
    }

    /// RFC 6381 codec string for playlists and the API, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }

    /// Display width and height from the first SPS (cropping applied), or
    /// `None` when there is no SPS or it cannot be parsed.
    pub fn dimensions(&self) -> Option<(u32, u32)> {
        sps_dimensions(self.sps.first()?)
    }
}

/// The AudioSpecificConfig from an AAC sequence header (ISO 14496-3 1.6.2.1),
/// restricted to what an ADTS header can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type as signalled: 2 = AAC-LC, 5 = HE-AAC (SBR),
    /// 29 = HE-AACv2 (SBR+PS).
    pub object_type: u8,
    /// `samplingFrequencyIndex`; 15 means the frequency was given explicitly.
    pub sampling_frequency_index: u8,
    /// Sampling frequency in Hz of the AAC core (half the output rate with SBR).
    pub sampling_frequency: u32,
    /// `channelConfiguration` (1 = mono, 2 = stereo, ... 7 = 7.1).
    pub channel_config: u8,
    /// ADTS `profile` (core object type − 1).
    adts_profile: u8,
    /// ADTS `sampling_frequency_index` (never 15: ADTS has no escape).
    adts_frequency_index: u8,
}

impl AacConfig {
    /// Parses an AudioSpecificConfig, including the 24-bit explicit frequency
    /// (index 15) and explicit SBR/PS signalling (object types 5 and 29, whose
    /// AAC core is what ADTS describes). Configurations ADTS cannot describe
    /// (core object types above 4, channel configuration 0 with a PCE, an
    /// explicit frequency outside the ADTS table) are rejected here, once, not
    /// per frame.
    pub fn parse(data: &[u8]) -> Result<Self, FlvError> {
        let truncated = || FlvError::Truncated("AudioSpecificConfig");
        let mut r = BitReader::new(data);
        let object_type = read_object_type(&mut r).ok_or_else(truncated)?;
        let (sampling_frequency_index, sampling_frequency) = read_frequency(&mut r)?;
        let channel_config = r.bits(4).ok_or_else(truncated)? as u8;
        let core_type = if object_type == 5 || object_type == 29 {
            read_frequency(&mut r)?; // the SBR output rate
            read_object_type(&mut r).ok_or_else(truncated)?
        } else {
            object_type
        };
        if !(1..=4).contains(&core_type) {
            return Err(FlvError::InvalidAacConfig(
                "object type not representable in ADTS",
            ));
        }
        if !(1..=7).contains(&channel_config) {
            return Err(FlvError::InvalidAacConfig(
                "channel configuration 0 (PCE) or reserved",
            ));
        }
        let adts_frequency_index = AAC_FREQUENCIES
            .iter()
            .position(|&f| f == sampling_frequency)
            .ok_or(FlvError::InvalidAacConfig(
                "sampling frequency not representable in ADTS",
            ))? as u8;
        Ok(Self {
            object_type,
            sampling_frequency_index,
            sampling_frequency,
            channel_config,
            adts_profile: core_type - 1,
            adts_frequency_index,
        })
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The 7-byte ADTS header (no CRC) for a raw frame of `payload_len` bytes.
    pub fn adts_header(&self, payload_len: usize) -> Result<[u8; 7], FlvError> {
        let len = payload_len + 7;
        if len > 0x1FFF {
            return Err(FlvError::AacFrameTooLarge(payload_len));
        }
        let ch = self.channel_config;
        Ok([
            0xFF,
            0xF1, // sync word, MPEG-4, layer 0, no CRC
            (self.adts_profile << 6) | (self.adts_frequency_index << 2) | (ch >> 2),
            ((ch & 0x03) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len as u8 & 0x07) << 5) | 0x1F, // buffer fullness 0x7FF: VBR
            0xFC,
        ])
    }
}

/// Extends RTMP's 32-bit millisecond timestamps (which wrap after ~49.7
/// days) to `i64`: each timestamp is placed at the signed 32-bit distance
/// from the previous one, so a wrap keeps counting up while the small
/// backward steps of interleaved audio and video stay small.
#[derive(Debug, Clone, Default)]
pub struct RtmpClock {
    last: Option<(u32, i64)>,
}

impl RtmpClock {
    /// The extended value of `timestamp`, in milliseconds.
    pub fn extend(&mut self, timestamp: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(timestamp),
            Some((raw, ext)) => ext + i64::from(timestamp.wrapping_sub(raw) as i32),
        };
        self.last = Some((timestamp, extended));
        extended
    }
}

/// Turns one publisher's FLV audio and video tag bodies into access units.
///
/// Keeps the latest AVC and AAC configuration (sequence headers may be
/// repeated or changed mid-stream) and one timestamp clock shared by audio
/// and video. Create a new one per publisher session.
#[derive(Debug, Default)]
pub struct FlvDepacketizer {
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    clock: RtmpClock,
    /// Access units are built here and split off; once the segmenter drops
    /// one, its allocation is reclaimed for the next.
    scratch: BytesMut,
}

impl FlvDepacketizer {
    /// A depacketizer that has seen no sequence header yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current AVC configuration, once a sequence header arrived.
    pub fn avc_config(&self) -> Option<&AvcConfig> {
        self.avc.as_ref()
    }

    /// The current AAC configuration, once a sequence header arrived.
    pub fn aac_config(&self) -> Option<&AacConfig> {
        self.aac.as_ref()
    }

    /// Video codec string (`avc1.PPCCLL`) for the API and master playlist.
    pub fn video_codec(&self) -> Option<String> {
        self.avc.as_ref().map(AvcConfig::codec_string)
    }

    /// Audio codec string (`mp4a.40.<aot>`) for the API and master playlist.
    pub fn audio_codec(&self) -> Option<String> {
        self.aac.as_ref().map(AacConfig::codec_string)
    }

    /// Handles a video tag body with its RTMP timestamp (the DTS, in ms).
    ///
    /// Returns `Ok(None)` for sequence headers (which update
    /// [`avc_config`](Self::avc_config)), end-of-sequence markers, info frames
    /// and frames without NAL units.
    pub fn video(&mut self, timestamp: u32, body: &[u8]) -> Result<Option<VideoFrame>, FlvError> {
        let dts_ms = self.clock.extend(timestamp);
        let [b0, rest @ ..] = body else {
            return Err(FlvError::Truncated("video tag header"));
        };
        let (frame_type, codec_id) = (b0 >> 4, b0 & 0x0F);
        if b0 & 0x80 != 0 {
            return Err(FlvError::UnsupportedVideo {
                codec_id,
                enhanced: true,
            });
        }
        if frame_type == 5 {
            return Ok(None); // video info / command frame: no picture
        }
        if codec_id != 7 {
            return Err(FlvError::UnsupportedVideo {
                codec_id,
                enhanced: false,
            });
        }
        let keyframe = match frame_type {
            1 => true,
            // 3 = disposable inter frame, 4 = server-generated keyframe
            // (not a random access point for a decoder).
            2..=4 => false,
            other => return Err(FlvError::InvalidFrameType(other)),
        };
        let [packet_type, c0, c1, c2, payload @ ..] = rest else {
            return Err(FlvError::Truncated("AVC packet header"));
        };
        match packet_type {
            0 => {
                self.avc = Some(AvcConfig::parse(payload)?);
                Ok(None)
            }
            1 => {
                let config = self.avc.as_ref().ok_or(FlvError::VideoBeforeConfig)?;
                // Signed 24-bit composition time offset: shift into the top of
                // an i32 and back to sign-extend.
                let cts_ms = i32::from_be_bytes([*c0, *c1, *c2, 0]) >> 8;
                if !avcc_to_annexb(config, keyframe, payload, &mut self.scratch)? {
                    return Ok(None);
                }
                let dts = dts_ms * TICKS_PER_MS;
                Ok(Some(VideoFrame {
                    dts,
                    pts: dts + i64::from(cts_ms) * TICKS_PER_MS,
                    keyframe,
                    data: self.scratch.split().freeze(),
                }))
            }
            2 => Ok(None), // end of sequence
            &other => Err(FlvError::UnknownAvcPacketType(other)),
        }
    }

    /// Handles an audio tag body with its RTMP timestamp (the PTS, in ms).
    ///
    /// Returns `Ok(None)` for sequence headers (which update
    /// [`aac_config`](Self::aac_config)) and empty frames.
    pub fn audio(&mut self, timestamp: u32, body: &[u8]) -> Result<Option<AudioFrame>, FlvError> {
        let pts_ms = self.clock.extend(timestamp);
        let [b0, rest @ ..] = body else {
            return Err(FlvError::Truncated("audio tag header"));
        };
        if b0 >> 4 != 10 {
            return Err(FlvError::UnsupportedAudio(b0 >> 4));
        }
        let [packet_type, payload @ ..] = rest else {
            return Err(FlvError::Truncated("AAC packet type"));
        };
        match packet_type {
            0 => {
                self.aac = Some(AacConfig::parse(payload)?);
                Ok(None)
            }
            1 => {
                let config = self.aac.as_ref().ok_or(FlvError::AudioBeforeConfig)?;
                if payload.is_empty() {
                    return Ok(None);
                }
                let header = config.adts_header(payload.len())?;
                self.scratch.clear();
                self.scratch
                    .reserve((header.len() + payload.len()).max(SCRATCH_CAPACITY));
                self.scratch.put_slice(&header);
                self.scratch.put_slice(payload);
                Ok(Some(AudioFrame {
                    pts: pts_ms * TICKS_PER_MS,
                    data: self.scratch.split().freeze(),
                }))
            }
            &other => Err(FlvError::UnknownAacPacketType(other)),
        }
    }
}

/// Rewrites one AVCC frame (length-prefixed NAL units) as an Annex B access
/// unit into `out`: an AUD first, then, for keyframes that do not carry both
/// themselves, the configuration's SPS and PPS, then the frame's NAL units
/// (any AUD of its own dropped). The frame is validated before anything is
/// written. Returns `false` (and writes nothing) if the frame holds no NAL
/// unit besides AUDs.
fn avcc_to_annexb(
    config: &AvcConfig,
    keyframe: bool,
    frame: &[u8],
    out: &mut BytesMut,
) -> Result<bool, FlvError> {
    let nals = || Nals::new(frame, config.nal_length_size);
    let (mut has_sps, mut has_pps, mut size) = (false, false, AUD.len());
    let mut any = false;
    for nal in nals() {
        let nal = nal?;
        match nal[0] & 0x1F {
            7 => has_sps = true,
            8 => has_pps = true,
            9 => continue,
            _ => {}
        }
        any = true;
        size += START_CODE.len() + nal.len();
    }
    if !any {
        return Ok(false);
    }
    let insert_params = keyframe && !(has_sps && has_pps);
    if insert_params {
        size += config
            .sps
            .iter()
            .chain(&config.pps)
            .map(|p| START_CODE.len() + p.len())
            .sum::<usize>();
    }

    out.clear();
    out.reserve(size.max(SCRATCH_CAPACITY));
    out.put_slice(&AUD);
    if insert_params {
        for ps in config.sps.iter().chain(&config.pps) {
            out.put_slice(&START_CODE);
            out.put_slice(ps);
        }
    }
    // Already validated above, so errors cannot occur here.
    for nal in nals().flatten() {
        if nal[0] & 0x1F != 9 {
            out.put_slice(&START_CODE);
            out.put_slice(nal);
        }
    }
    Ok(true)
}

/// Iterator over the non-empty NAL units of an AVCC frame; stops after the
/// first error.
struct Nals<'a> {
    rest: &'a [u8],
    length_size: usize,
}

impl<'a> Nals<'a> {
    fn new(frame: &'a [u8], length_size: u8) -> Self {
        Self {
            rest: frame,
            length_size: usize::from(length_size),
        }
    }
}

impl<'a> Iterator for Nals<'a> {
    type Item = Result<&'a [u8], FlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let Some((prefix, rest)) = self.rest.split_at_checked(self.length_size) else {
                self.rest = &[];
                return Some(Err(FlvError::Truncated("NAL length prefix")));
            };
            let len = prefix
                .iter()
                .fold(0usize, |n, &b| (n << 8) | usize::from(b));
            let Some((nal, rest)) = rest.split_at_checked(len) else {
                self.rest = &[];
                return Some(Err(FlvError::BadNalLength {
                    len,
                    remaining: rest.len(),
                }));
            };
            self.rest = rest;
            if !nal.is_empty() {
                return Some(Ok(nal));
            }
        }
    }
}

/// Big-endian byte reader over a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, FlvError> {
        let [b, rest @ ..] = self.0 else {
            return Err(FlvError::Truncated(what));
        };
        self.0 = rest;
        Ok(*b)
    }

    /// A parameter set with a 16-bit length prefix; empty ones are invalid.
    fn parameter_set(&mut self, what: &'static str) -> Result<Vec<u8>, FlvError> {
        let len = u16::from_be_bytes([self.u8(what)?, self.u8(what)?]);
        let (ps, rest) = self
            .0
            .split_at_checked(usize::from(len))
            .ok_or(FlvError::Truncated(what))?;
        if ps.is_empty() {
            return Err(FlvError::InvalidAvcConfig("empty parameter set"));
        }
        self.0 = rest;
        Ok(ps.to_vec())
    }
}

/// MSB-first bit reader; every read returns `None` past the end.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.pos / 8)?;
        self.pos += 1;
        Some(u32::from(byte >> (7 - (self.pos - 1) % 8)) & 1)
    }

    /// `n` ≤ 32 bits as an unsigned number.
    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |v, _| Some((v << 1) | self.bit()?))
    }

    /// Unsigned Exp-Golomb code, `ue(v)`.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        u32::try_from((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)).ok()
    }

    /// Signed Exp-Golomb code, `se(v)`.
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -k / 2 })
    }
}

/// `GetAudioObjectType()`: 5 bits, 31 escapes to 32 + 6 more bits.
fn read_object_type(r: &mut BitReader) -> Option<u8> {
    match r.bits(5)? {
        31 => Some(32 + r.bits(6)? as u8),
        aot => Some(aot as u8),
    }
}

/// `samplingFrequencyIndex`, and for index 15 the explicit 24-bit frequency.
fn read_frequency(r: &mut BitReader) -> Result<(u8, u32), FlvError> {
    let truncated = FlvError::Truncated("AudioSpecificConfig");
    let index = r.bits(4).ok_or(truncated.clone())? as u8;
    let frequency = match index {
        15 => r.bits(24).ok_or(truncated)?,
        i => *AAC_FREQUENCIES
            .get(usize::from(i))
            .ok_or(FlvError::InvalidAacConfig(
                "reserved sampling frequency index",
            ))?,
    };
    if frequency == 0 {
        return Err(FlvError::InvalidAacConfig("zero sampling frequency"));
    }
    Ok((index, frequency))
}

/// Width and height from an SPS NAL unit (H.264 7.3.2.1.1), cropping applied.
/// Runs once per sequence header, so the one allocation (to drop emulation
/// prevention bytes) does not matter.
fn sps_dimensions(nal: &[u8]) -> Option<(u32, u32)> {
    let mut rbsp = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
    }
    let mut r = BitReader::new(&rbsp);
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let (mut chroma_format, mut separate_planes) = (1, false);
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            separate_planes = r.bit()? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            for i in 0..if chroma_format == 3 { 12 } else { 8 } {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let mut crop = [0u64; 4]; // left, right, top, bottom
    if r.bit()? == 1 {
        for c in &mut crop {
            *c = u64::from(r.ue()?);
        }
    }
    let (sub_width, sub_height) = match (chroma_format, separate_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1), // monochrome, 4:4:4 or separate colour planes
    };
    let crop_x = sub_width * (crop[0] + crop[1]);
    let crop_y = sub_height * (2 - frame_mbs_only) * (crop[2] + crop[3]);
    let width = (width_mbs * 16).checked_sub(crop_x)?;
    let height = ((2 - frame_mbs_only) * height_units * 16).checked_sub(crop_y)?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
}

/// Skips a `scaling_list()` of `size` coefficients.
fn skip_scaling_list(r: &mut BitReader, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's SPS for 640x360 high profile (crop of 8 lines).
    const SPS_640X360: [u8; 26] = [
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: [u8; 6] = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn avcc_record() -> Vec<u8> {
        let mut v = vec![1, 0x64, 0x00, 0x1e, 0xFF, 0xE1];
        v.extend_from_slice(&(SPS_640X360.len() as u16).to_be_bytes());
        v.extend_from_slice(&SPS_640X360);
        v.push(1);
        v.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        v.extend_from_slice(&PPS);
        v
    }

    fn video_tag(frame_type: u8, packet_type: u8, cts: i32, payload: &[u8]) -> Vec<u8> {
        let c = cts.to_be_bytes();
        let mut v = vec![(frame_type << 4) | 7, packet_type, c[1], c[2], c[3]];
        v.extend_from_slice(payload);
        v
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for nal in nals {
            v.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            v.extend_from_slice(nal);
        }
        v
    }

    fn configured() -> FlvDepacketizer {
        let mut d = FlvDepacketizer::new();
        assert_eq!(d.video(0, &video_tag(1, 0, 0, &avcc_record())), Ok(None));
        assert_eq!(d.audio(0, &[0xAF, 0x00, 0x11, 0x90]), Ok(None));
        d
    }

    #[test]
    fn parses_avc_config_and_codec_strings() {
        let d = configured();
        let avc = d.avc_config().expect("config");
        assert_eq!((avc.profile, avc.level, avc.nal_length_size), (100, 30, 4));
        assert_eq!(avc.sps, vec![SPS_640X360.to_vec()]);
        assert_eq!(avc.pps, vec![PPS.to_vec()]);
        assert_eq!(avc.dimensions(), Some((640, 360)));
        assert_eq!(d.video_codec().as_deref(), Some("avc1.64001e"));
        assert_eq!(d.audio_codec().as_deref(), Some("mp4a.40.2"));
        let aac = d.aac_config().expect("config");
        assert_eq!((aac.sampling_frequency, aac.channel_config), (48_000, 2));
    }

    #[test]
    fn keyframe_gets_aud_and_parameter_sets_with_pts() {
        let mut d = configured();
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let sei: &[u8] = &[0x06, 0x05, 0x01];
        let body = video_tag(1, 1, 67, &avcc(&[&[0x09, 0xF0], sei, idr]));
        let frame = d.video(1000, &body).unwrap().expect("frame");
        assert!(frame.keyframe);
        assert_eq!(frame.dts, 90_000);
        assert_eq!(frame.pts, 90_000 + 67 * 90);
        let mut want = AUD.to_vec();
        for nal in [&SPS_640X360[..], &PPS, sei, idr] {
            want.extend_from_slice(&START_CODE);
            want.extend_from_slice(nal);
        }
        assert_eq!(&frame.data[..], &want[..]);
    }

    #[test]
    fn keyframe_with_inband_parameter_sets_is_not_doubled() {
        let mut d = configured();
        let body = video_tag(1, 1, 0, &avcc(&[&SPS_640X360, &PPS, &[0x65, 1]]));
        let frame = d.video(0, &body).unwrap().expect("frame");
        assert_eq!(frame.data.len(), AUD.len() + 3 * 4 + 26 + 6 + 2);
    }

    #[test]
    fn inter_frame_and_negative_cts() {
        let mut d = configured();
        let frame = d
            .video(100, &video_tag(2, 1, -33, &avcc(&[&[0x41, 0x9a]])))
            .unwrap()
            .expect("frame");
        assert!(!frame.keyframe);
        assert_eq!(frame.pts - frame.dts, -33 * 90);
        assert_eq!(
            &frame.data[..],
            &[0, 0, 0, 1, 9, 0xF0, 0, 0, 0, 1, 0x41, 0x9a]
        );
    }

    #[test]
    fn aac_frame_becomes_adts() {
        let mut d = configured();
        let frame = d
            .audio(21, &[0xAF, 0x01, 0xDE, 0xAD])
            .unwrap()
            .expect("frame");
        assert_eq!(frame.pts, 21 * 90);
        // LC (profile 1), 48 kHz (index 3), stereo, frame length 9.
        assert_eq!(
            &frame.data[..],
            &[0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x3F, 0xFC, 0xDE, 0xAD]
        );
    }

    #[test]
    fn explicit_frequency_and_he_aac() {
        // AOT 2, index 15, 44100 Hz explicit, mono.
        let mut bits = 0u64;
        for (v, n) in [(2u64, 5), (15, 4), (44_100, 24), (1, 4)] {
            bits = (bits << n) | v;
        }
        let bytes = (bits << (64 - 37)).to_be_bytes();
        let c = AacConfig::parse(&bytes[..5]).unwrap();
        assert_eq!(
            (
                c.sampling_frequency_index,
                c.sampling_frequency,
                c.channel_config
            ),
            (15, 44_100, 1)
        );
        assert_eq!(c.adts_header(0).unwrap()[2], (1 << 6) | (4 << 2));
        // Explicit frequency that ADTS cannot carry.
        let bits = (((2u64 << 28) | (15 << 24) | 44_000) << 4) | 1;
        let bytes = (bits << (64 - 37)).to_be_bytes();
        assert!(matches!(
            AacConfig::parse(&bytes[..5]),
            Err(FlvError::InvalidAacConfig(_))
        ));
        // HE-AAC: AOT 5, 24 kHz core, stereo, 48 kHz SBR, core AOT 2.
        let bits = (5u32 << 27) | (6 << 23) | (2 << 19) | (3 << 15) | (2 << 10);
        let c = AacConfig::parse(&bits.to_be_bytes()).unwrap();
        assert_eq!(c.codec_string(), "mp4a.40.5");
        assert_eq!(c.adts_header(0).unwrap()[2], (1 << 6) | (6 << 2));
    }

    #[test]
    fn rtmp_clock_unwraps() {
        let mut clock = RtmpClock::default();
        assert_eq!(clock.extend(u32::MAX - 10), i64::from(u32::MAX) - 10);
        assert_eq!(clock.extend(5), i64::from(u32::MAX) + 6);
        assert_eq!(clock.extend(3), i64::from(u32::MAX) + 4); // small step back
        assert_eq!(clock.extend(u32::MAX), i64::from(u32::MAX)); // back over the wrap
    }

    #[test]
    fn rejects_unsupported_and_early_frames() {
        let mut d = FlvDepacketizer::new();
        assert_eq!(
            d.video(0, &video_tag(2, 1, 0, &avcc(&[&[0x41]]))),
            Err(FlvError::VideoBeforeConfig)
        );
        assert_eq!(
            d.audio(0, &[0xAF, 0x01, 0x00]),
            Err(FlvError::AudioBeforeConfig)
        );
        assert_eq!(
            d.video(0, &[0x1C, 0, 0, 0, 0]),
            Err(FlvError::UnsupportedVideo {
                codec_id: 12,
                enhanced: false
            })
        );
        assert_eq!(
            d.video(0, &[0x90, b'h', b'v', b'c', b'1']),
            Err(FlvError::UnsupportedVideo {
                codec_id: 0,
                enhanced: true
            })
        );
        assert_eq!(
            d.audio(0, &[0x2F, 0x00]),
            Err(FlvError::UnsupportedAudio(2))
        );
        assert_eq!(d.video(0, &[0x57, 0x00]), Ok(None)); // info frame
    }

    #[test]
    fn bad_nal_length_is_an_error_and_writes_nothing() {
        let mut d = configured();
        let mut payload = avcc(&[&[0x41, 1, 2]]);
        payload.extend_from_slice(&[0, 0, 0, 9, 0x41]);
        assert_eq!(
            d.video(0, &video_tag(2, 1, 0, &payload)),
            Err(FlvError::BadNalLength {
                len: 9,
                remaining: 1
            })
        );
        assert_eq!(d.video(0, &video_tag(2, 1, 0, &[])), Ok(None));
    }

    /// Every prefix and many corruptions of valid bodies must give a result,
    /// never a panic.
    #[test]
    fn truncated_and_garbage_bodies_never_panic() {
        let mut d = configured();
        let bodies = [
            video_tag(1, 0, 0, &avcc_record()),
            video_tag(1, 1, 40, &avcc(&[&SPS_640X360, &PPS, &[0x65, 0x88]])),
            vec![0xAF, 0x00, 0x11, 0x90],
            vec![0xAF, 0x01, 1, 2, 3],
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for body in &bodies {
            for len in 0..=body.len() {
                let _ = d.video(len as u32, &body[..len]);
                let _ = d.audio(len as u32, &body[..len]);
                let _ = AvcConfig::parse(&body[..len]).map(|c| c.dimensions());
                let _ = AacConfig::parse(&body[..len]);
            }
            for _ in 0..2000 {
                let mut garbage = body.clone();
                for _ in 0..3 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let i = (seed % garbage.len() as u64) as usize;
                    garbage[i] = (seed >> 32) as u8;
                }
                let _ = d.video(seed as u32, &garbage);
                let _ = d.audio(seed as u32, &garbage);
                let _ = AvcConfig::parse(&garbage).map(|c| c.dimensions());
                let _ = sps_dimensions(&garbage);
            }
        }
    }
}
