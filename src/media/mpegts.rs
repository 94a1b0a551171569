//! MPEG-TS uploads whose program clock GStreamer 1.22's `tsdemux` would
//! misread, and a repaired copy for it to read.
//!
//! `tsdemux` times every packet from the program clock (PCR): stream time is
//! the PTS minus the first PCR of its *PCR group*, plus the group's offset. A
//! PCR more than 500 ms after the previous one opens a new group, and the
//! packetizer takes that for a broken stream: it places the new group 500 ms
//! after the last PCR of the old one, whatever the real distance. The standard
//! asks for a PCR at least every 100 ms, but real files break that: a muxer that
//! writes the PCR only with each video frame, in a stream that drops to one
//! frame a second (a still scene, a phone saving power), has PCR gaps of a
//! second, and `tsdemux` squeezes each into 500 ms: 9.4 s of video come out as
//! 6.1 s, the audio alike. FFmpeg, Chromium, Safari and hls.js time from the
//! PTS, and show the 9.4 s.
//!
//! [`scan`] reads the packets' headers and finds every PCR gap `tsdemux` would
//! squeeze; [`repair`] writes a copy of the file with PCR-only packets (an
//! adaptation field and no payload, which a demuxer reads for the clock alone)
//! on the PCR PID, one every 100 ms through each gap, so that the copy keeps to
//! the standard and GStreamer times it from its PTS, seeks and durations
//! included. The upload itself is never changed. Gaps longer than
//! [`MAX_BRIDGED_GAP_NS`] stay as they are: there the clock itself jumped (a
//! recording paused, two recordings joined), and GStreamer closing the gap is
//! better than one picture frozen for that long.
//!
//! Hand-written like `crate::live::tsdemux`, and apart from it: that one turns
//! a live SRT feed into access units; this one only reads clock values and
//! where they sit in a file, never the payload.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::MediaError;

const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// `tsdemux` opens a new PCR group after a PCR gap over 500 ms.
const GROUP_GAP_TICKS: i64 = 45_000;
/// The standard's longest PCR interval: the repair's step through a gap.
const PCR_STEP_TICKS: i64 = 9_000;
/// Gaps up to this long are bridged; longer ones are a clock jump.
pub const MAX_BRIDGED_GAP_NS: i64 = 10_000_000_000;
const MAX_BRIDGED_GAP_TICKS: i64 = MAX_BRIDGED_GAP_NS / 100_000 * 9;
/// PCR bases are 33 bits of 90 kHz.
const WRAP_90K: i64 = 1 << 33;

/// Where a gap is bridged: before packet `before` (its index in the file),
/// PCR-only packets on `pid` with these PCR bases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub before: u64,
    pub pid: u16,
    /// The continuity counter the PID's packets stand at (a packet without
    /// payload repeats it).
    pub continuity: u8,
    pub pcrs: Vec<i64>,
}

/// The gaps of one file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gaps {
    pub bridges: Vec<Bridge>,
    /// The time `tsdemux` would have lost, in nanoseconds.
    pub squeezed_ns: i64,
}

/// The scan's state: the program's PCR PID and its last clock value.
#[derive(Default)]
struct Scanner {
    pmt_pid: Option<u16>,
    pcr_pid: Option<u16>,
    /// The last PCR, unwrapped, in 90 kHz ticks.
    last_pcr: Option<i64>,
    /// The PCR PID's continuity counter.
    continuity: u8,
    index: u64,
    gaps: Gaps,
}

/// `raw` (33 bits) unwrapped to lie within half a wrap of `previous`.
fn unwrap(raw: i64, previous: Option<i64>) -> i64 {
    let Some(prev) = previous else { return raw };
    let mut v = raw + (prev - prev.rem_euclid(WRAP_90K));
    if v - prev > WRAP_90K / 2 {
        v -= WRAP_90K;
    } else if prev - v > WRAP_90K / 2 {
        v += WRAP_90K;
    }
    v
}

/// Whether `path` looks like a transport stream of 188-byte packets.
pub fn is_transport_stream(path: &Path) -> bool {
    let mut head = [0u8; PACKET * 2 + 1];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head[0] == SYNC && head[PACKET] == SYNC && head[PACKET * 2] == SYNC)
}

/// The PCR gaps of `path` that `tsdemux` would squeeze; `None` when there are
/// none, or the file is not plain 188-byte packets (M2TS's 192-byte ones,
/// damage: left to the demuxer as they are).
pub fn scan(path: &Path) -> Result<Option<Gaps>, MediaError> {
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut scanner = Scanner::default();
    let mut packet = [0u8; PACKET];
    loop {
        match reader.read_exact(&mut packet) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(read_error(e)),
        }
        if packet[0] != SYNC {
            return Ok(None);
        }
        scanner.packet(&packet);
    }
    Ok(scanner.finish())
}

/// The file GStreamer should read for the upload at `input`: a repaired copy
/// in `work_dir` when it is a transport stream with gaps to bridge, else
/// `input` itself. Blocks: run it on the blocking pool.
pub fn readable_copy(input: &Path, work_dir: &Path) -> Result<PathBuf, MediaError> {
    if !is_transport_stream(input) {
        return Ok(input.to_path_buf());
    }
    let Some(gaps) = scan(input)? else {
        return Ok(input.to_path_buf());
    };
    let to = work_dir.join("input.bridged.ts");
    repair(input, &gaps, &to)?;
    tracing::info!(
        gaps = gaps.bridges.len(),
        squeezed_ms = gaps.squeezed_ns / 1_000_000,
        "MPEG-TS input has PCR gaps GStreamer would squeeze; reading a copy with them bridged"
    );
    Ok(to)
}

/// Writes `path` to `to` with `gaps` bridged.
pub fn repair(path: &Path, gaps: &Gaps, to: &Path) -> Result<(), MediaError> {
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let out = std::fs::File::create(to).map_err(write_error)?;
    let mut writer = BufWriter::with_capacity(1 << 20, out);
    let mut bridges = gaps.bridges.iter().peekable();
    let mut packet = [0u8; PACKET];
    let mut index = 0u64;
    loop {
        match reader.read_exact(&mut packet) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(read_error(e)),
        }
        while let Some(b) = bridges.next_if(|b| b.before == index) {
            for &pcr in &b.pcrs {
                writer
                    .write_all(&pcr_packet(b.pid, b.continuity, pcr))
                    .map_err(write_error)?;
            }
        }
        writer.write_all(&packet).map_err(write_error)?;
        index += 1;
    }
    writer.flush().map_err(write_error)
}

fn read_error(e: std::io::Error) -> MediaError {
    MediaError::Internal(format!("reading input: {e}"))
}

fn write_error(e: std::io::Error) -> MediaError {
    MediaError::Io(format!("writing the repaired input: {e}"))
}

/// A packet on `pid` with an adaptation field carrying `pcr` and no payload.
fn pcr_packet(pid: u16, continuity: u8, pcr: i64) -> [u8; PACKET] {
    let base = pcr.rem_euclid(WRAP_90K);
    let mut p = [0xFFu8; PACKET];
    p[0] = SYNC;
    p[1] = (pid >> 8) as u8 & 0x1F;
    p[2] = pid as u8;
    // Adaptation field only; the counter is not incremented without payload.
    p[3] = 0x20 | (continuity & 0x0F);
    p[4] = (PACKET - 5) as u8;
    p[5] = 0x10;
    p[6] = (base >> 25) as u8;
    p[7] = (base >> 17) as u8;
    p[8] = (base >> 9) as u8;
    p[9] = (base >> 1) as u8;
    // The base's last bit, 6 reserved bits, a zero extension.
    p[10] = (((base & 1) << 7) as u8) | 0x7E;
    p[11] = 0;
    p
}

impl Scanner {
    fn finish(self) -> Option<Gaps> {
        (!self.gaps.bridges.is_empty()).then_some(self.gaps)
    }

    fn packet(&mut self, p: &[u8; PACKET]) {
        let index = self.index;
        self.index += 1;
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        let unit_start = p[1] & 0x40 != 0;
        let control = (p[3] >> 4) & 0x03;
        let mut payload_at = 4;
        if control & 0x02 != 0 {
            let len = usize::from(p[4]);
            if Some(pid) == self.pcr_pid
                && len >= 7
                && p[5] & 0x10 != 0
                && let Some(pcr) = pcr_base(&p[6..11])
            {
                self.pcr(index, pcr);
            }
            payload_at = 5 + len;
        }
        if Some(pid) == self.pcr_pid {
            // A packet without payload keeps the counter; the next bridge
            // repeats the last one seen.
            self.continuity = p[3] & 0x0F;
        }
        if control & 0x01 == 0 || payload_at >= PACKET || !unit_start {
            return;
        }
        let payload = &p[payload_at..];
        if pid == 0 {
            self.pat(payload);
        } else if Some(pid) == self.pmt_pid {
            self.pmt(payload);
        }
    }

    /// The first program's PMT PID, from a PAT that starts in this packet.
    fn pat(&mut self, payload: &[u8]) {
        if self.pmt_pid.is_some() {
            return;
        }
        let Some(s) = section(payload, 0x00) else {
            return;
        };
        // After the 8-byte header: (program_number, PID) pairs, then the CRC;
        // program 0 points at the network table.
        let entries = s.get(8..s.len().saturating_sub(4)).unwrap_or_default();
        self.pmt_pid = entries
            .chunks_exact(4)
            .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
            .map(|e| (u16::from(e[2] & 0x1F) << 8) | u16::from(e[3]));
    }

    fn pmt(&mut self, payload: &[u8]) {
        if self.pcr_pid.is_some() {
            return;
        }
        if let Some(s) = section(payload, 0x02)
            && s.len() >= 10
        {
            self.pcr_pid = Some((u16::from(s[8] & 0x1F) << 8) | u16::from(s[9]));
        }
    }

    /// One PCR of the program, in packet `index`: a gap `tsdemux` would
    /// squeeze is bridged before it.
    fn pcr(&mut self, index: u64, raw: i64) {
        let pcr = unwrap(raw, self.last_pcr);
        let Some(last) = self.last_pcr.replace(pcr) else {
            return;
        };
        let gap = pcr - last;
        if gap <= GROUP_GAP_TICKS || gap > MAX_BRIDGED_GAP_TICKS {
            return;
        }
        let pcrs = (1..)
            .map(|k| last + k * PCR_STEP_TICKS)
            .take_while(|&t| t < pcr)
            .collect();
        self.gaps.squeezed_ns += (gap - GROUP_GAP_TICKS) * 100_000 / 9;
        self.gaps.bridges.push(Bridge {
            before: index,
            pid: self.pcr_pid.unwrap_or_default(),
            continuity: self.continuity,
            pcrs,
        });
    }
}

/// A PSI section with `table_id` starting in this payload (pointer field
/// first), cut to its declared length.
fn section(payload: &[u8], table_id: u8) -> Option<&[u8]> {
    let pointer = usize::from(*payload.first()?);
    let s = payload.get(1 + pointer..)?;
    if *s.first()? != table_id {
        return None;
    }
    let len = (usize::from(s.get(1)? & 0x0F) << 8) | usize::from(*s.get(2)?);
    s.get(..3 + len).or(Some(s))
}

/// The 33-bit base of a PCR field (its 9-bit extension does not matter for
/// gaps of half a second).
fn pcr_base(b: &[u8]) -> Option<i64> {
    let b: &[u8; 5] = b.get(..5)?.try_into().ok()?;
    Some(
        (i64::from(b[0]) << 25)
            | (i64::from(b[1]) << 17)
            | (i64::from(b[2]) << 9)
            | (i64::from(b[3]) << 1)
            | (i64::from(b[4]) >> 7),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PMT_PID: u16 = 0x1000;
    const VIDEO_PID: u16 = 0x100;

    fn header(pid: u16, unit_start: bool, control: u8) -> [u8; PACKET] {
        let mut p = [0xFFu8; PACKET];
        p[0] = SYNC;
        p[1] = (if unit_start { 0x40 } else { 0 }) | (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = control << 4;
        p
    }

    fn psi(pid: u16, table_id: u8, body: &[u8]) -> [u8; PACKET] {
        let mut p = header(pid, true, 1);
        let len = body.len() + 5 + 4;
        let mut s = vec![
            0,
            table_id,
            0xB0 | (len >> 8) as u8,
            len as u8,
            0,
            1,
            0xC1,
            0,
            0,
        ];
        s.extend_from_slice(body);
        s.extend_from_slice(&[0, 0, 0, 0]);
        p[4..4 + s.len()].copy_from_slice(&s);
        p
    }

    fn pat() -> [u8; PACKET] {
        psi(0, 0, &[0, 1, 0xE0 | (PMT_PID >> 8) as u8, PMT_PID as u8])
    }

    fn pmt() -> [u8; PACKET] {
        // PCR PID, program info length 0, one H.264 stream.
        psi(
            PMT_PID,
            2,
            &[
                0xE0 | (VIDEO_PID >> 8) as u8,
                VIDEO_PID as u8,
                0xF0,
                0,
                0x1B,
                0xE0 | (VIDEO_PID >> 8) as u8,
                VIDEO_PID as u8,
                0xF0,
                0,
            ],
        )
    }

    /// A video PES start whose packet carries a PCR equal to its PTS (as the
    /// file that showed the problem does), `ms` milliseconds in.
    fn frame(ms: i64) -> [u8; PACKET] {
        let t = ms * 90;
        let mut p = header(VIDEO_PID, true, 3);
        p[4] = 7;
        p[5] = 0x10;
        p[6] = (t >> 25) as u8;
        p[7] = (t >> 17) as u8;
        p[8] = (t >> 9) as u8;
        p[9] = (t >> 1) as u8;
        p[10] = ((t & 1) << 7) as u8;
        p[11] = 0;
        let pes = [
            0,
            0,
            1,
            0xE0,
            0,
            0,
            0x80,
            0x80,
            5,
            0x21 | ((t >> 29) & 0x0E) as u8,
            (t >> 22) as u8,
            0x01 | ((t >> 14) & 0xFE) as u8,
            (t >> 7) as u8,
            0x01 | ((t << 1) & 0xFE) as u8,
        ];
        p[12..12 + pes.len()].copy_from_slice(&pes);
        p
    }

    fn scan_packets(packets: &[[u8; PACKET]]) -> Option<Gaps> {
        let mut s = Scanner::default();
        for p in packets {
            s.packet(p);
        }
        s.finish()
    }

    fn stream(times_ms: &[i64]) -> Vec<[u8; PACKET]> {
        let mut packets = vec![pat(), pmt()];
        packets.extend(times_ms.iter().map(|&t| frame(t)));
        packets
    }

    #[test]
    fn a_stream_with_pcrs_close_enough_is_left_alone() {
        let times: Vec<i64> = (0..50).map(|i| i * 40).collect();
        assert_eq!(scan_packets(&stream(&times)), None);
        // 500 ms is still one group for tsdemux.
        assert_eq!(scan_packets(&stream(&[0, 500, 1000])), None);
    }

    #[test]
    fn a_gap_tsdemux_would_squeeze_is_bridged_every_100_ms() {
        let gaps = scan_packets(&stream(&[0, 40, 80, 1080, 1120])).expect("a gap of a second");
        assert_eq!(gaps.bridges.len(), 1);
        let b = &gaps.bridges[0];
        // Before the fourth frame (after PAT and PMT), on the PCR PID.
        assert_eq!((b.before, b.pid), (5, VIDEO_PID));
        let ms: Vec<i64> = b.pcrs.iter().map(|t| t / 90).collect();
        assert_eq!(ms, [180, 280, 380, 480, 580, 680, 780, 880, 980]);
        assert_eq!(gaps.squeezed_ns, 500_000_000);
    }

    #[test]
    fn a_clock_jump_and_a_reset_are_left_to_the_demuxer() {
        assert_eq!(scan_packets(&stream(&[0, 40, 60_040, 60_080])), None);
        assert_eq!(scan_packets(&stream(&[5_000, 5_040, 10, 50])), None);
    }

    #[test]
    fn timestamps_unwrap_across_33_bits() {
        assert_eq!(unwrap(5, Some(WRAP_90K - 5)), WRAP_90K + 5);
        assert_eq!(unwrap(WRAP_90K - 5, Some(WRAP_90K + 5)), WRAP_90K - 5);
        assert_eq!(unwrap(100, None), 100);
    }

    #[test]
    fn the_repaired_copy_has_every_packet_and_the_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("in.ts"), dir.path().join("out.ts"));
        let packets = stream(&[0, 40, 1040, 1080]);
        std::fs::write(&from, packets.concat()).unwrap();
        assert!(is_transport_stream(&from));
        let gaps = scan(&from).unwrap().expect("a gap");
        repair(&from, &gaps, &to).unwrap();
        let out = std::fs::read(&to).unwrap();
        let bridged = gaps.bridges[0].pcrs.len();
        assert_eq!(bridged, 9);
        assert_eq!(out.len(), (packets.len() + bridged) * PACKET);
        // The copy is the original with the PCR packets before the late frame;
        // reading it again finds nothing to bridge.
        assert_eq!(out[..4 * PACKET], packets[..4].concat()[..]);
        assert_eq!(out[(4 + bridged) * PACKET..], packets[4..].concat()[..]);
        let first = &out[4 * PACKET..5 * PACKET];
        assert_eq!(pcr_base(&first[6..11]), Some(140 * 90));
        assert_eq!(first[3], 0x20 | (packets[3][3] & 0x0F));
        assert_eq!(scan(&to).unwrap(), None);
    }

    #[test]
    fn not_a_transport_stream_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.ts");
        std::fs::write(&path, vec![0u8; PACKET * 4]).unwrap();
        assert!(!is_transport_stream(&path));
        assert_eq!(scan(&path).unwrap(), None);
    }
}
