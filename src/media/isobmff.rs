//! What an MP4/MOV/3GP file's boxes say, read before any GStreamer element sees
//! the file: that every box fits in its parent (a file cut short is refused at
//! once), and the facts of the first video track that decide how players show it:
//! the track header's presentation size and display matrix, and the sample
//! entry's coded size and `pasp` pixel aspect.
//!
//! Why our own reader and not a crate: the crates read far more than this and
//! fail whole: `mp4-atom` 0.17 refused 3 of the 60 real MP4 files of the corpus
//! over boxes unrelated to geometry (an Annex-B `avcC`, a `meta`, an `esds`), and
//! `mp4parse` 0.17 does not read `pasp`. These are five fixed-layout fields; a box
//! this reader does not understand only means a field stays unknown, never that
//! the upload is refused.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::MediaError;

/// Largest `moov` read into memory for its track facts (a one-hour phone video
/// has a few MiB); a larger one is still walked for truncation, its facts left
/// to GStreamer.
const MAX_MOOV_BYTES: u64 = 64 * 1024 * 1024;

/// The display matrix's signs, as `(a, b, c, d)` of ISO/IEC 14496-12's
/// `[a b u; c d v; x y w]`, each -1, 0 or 1.
pub type MatrixSigns = (i8, i8, i8, i8);

/// What the boxes say about the first video track.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VideoTrack {
    /// `tkhd` width and height (whole pixels of the 16.16 values).
    pub presentation_size: Option<(u32, u32)>,
    pub matrix: Option<MatrixSigns>,
    /// The sample entry's four-character code (`avc1`, `hvc1`, ...).
    pub sample_entry: Option<String>,
    /// The sample entry's coded width and height.
    pub coded_size: Option<(u32, u32)>,
    /// `pasp`: horizontal and vertical spacing, reduced.
    pub pixel_aspect: Option<(u32, u32)>,
    /// The track has an edit list (`edts`).
    pub edit_list: bool,
    /// The largest chunk offset of `stco`/`co64`: where the last samples start.
    pub last_chunk_offset: Option<u64>,
    /// Samples in the `moov`'s tables (`stts`), and how long they last
    /// (`mdhd`), in seconds.
    pub frames: Option<u64>,
    pub media_duration_s: Option<f64>,
    /// GStreamer 1.22's qtdemux skips this track: in a file without fragments,
    /// a track under 20 % of the movie's duration is taken for a preview
    /// picture (see [`qtdemux_skips`]).
    pub skipped_by_demuxer: bool,
    /// The `moov` holds samples and fragments (`mvex`) follow: qtdemux in pull
    /// mode starts the tracks where the fragments start, so the node makes it
    /// read in push mode (see `super::source`).
    pub samples_then_fragments: bool,
}

struct BoxHeader {
    kind: String,
    offset: u64,
    header_len: u64,
    size: u64,
}

fn read_error(e: std::io::Error) -> MediaError {
    MediaError::Internal(format!("reading input: {e}"))
}

/// Walks the top-level boxes of an MP4/MOV file, and the boxes inside `moov`:
/// each must fit inside its parent. The Discoverer only reads headers, so a file
/// cut short after its `moov` would otherwise probe fine and fail only later, in
/// the middle of a transcode; and a `moov` whose boxes claim sizes past its end
/// can keep the Discoverer waiting until its timeout instead of failing.
///
/// Returns the first video track's facts, when the `moov` is small enough to
/// read and has one.
pub fn inspect(path: &Path, file_size: u64) -> Result<Option<VideoTrack>, MediaError> {
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let top = scan_boxes(&mut file, 0, file_size, None)?;
    if top.is_empty() {
        return Err(MediaError::NotMedia);
    }
    let mut track = None;
    for b in top.iter().filter(|b| b.kind == "moov") {
        let body = b.offset + b.header_len;
        let inside = scan_boxes(&mut file, body, b.offset + b.size, Some("moov"))?;
        // Without a movie header qtdemux sometimes fails at once and sometimes
        // waits for more data until the probe's timeout: refuse it here, alike
        // every time.
        if !inside.iter().any(|c| c.kind == "mvhd") {
            return Err(MediaError::Malformed(
                "the `moov` box has no movie header (`mvhd`)".into(),
            ));
        }
        let len = b.size - b.header_len;
        if track.is_none() && len <= MAX_MOOV_BYTES {
            let mut moov = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(body)).map_err(read_error)?;
            file.read_exact(&mut moov).map_err(read_error)?;
            track = first_video_track(&moov);
        }
    }
    // A file cut short whose `moov` comes last (a `moov` rewritten after an
    // interrupted copy, a test file cut at a round size): every box fits, but
    // the sample table points past the end.
    if let Some(at) = track.as_ref().and_then(|t| t.last_chunk_offset)
        && at >= file_size
    {
        return Err(MediaError::Malformed(format!(
            "truncated: the video's samples run to byte {at}, \
             but the file ends after {file_size} bytes"
        )));
    }
    Ok(track)
}

/// The boxes from byte `start` to `end` (the file, or the inside of `parent`).
fn scan_boxes(
    file: &mut std::fs::File,
    start: u64,
    end: u64,
    parent: Option<&str>,
) -> Result<Vec<BoxHeader>, MediaError> {
    let within = parent.map(|p| format!(" inside `{p}`")).unwrap_or_default();
    let mut offset = start;
    let mut boxes: Vec<BoxHeader> = Vec::new();
    // Phones and cameras append vendor data after the last box (Samsung's SEF
    // trailer, for one); players stop reading there, and so do we.
    let complete = |boxes: &[BoxHeader]| {
        parent.is_none()
            && boxes.iter().any(|b| b.kind == "moov")
            && boxes.iter().any(|b| b.kind == "mdat" || b.kind == "moof")
    };
    while end - offset >= 8 {
        let mut header = [0u8; 16];
        file.seek(SeekFrom::Start(offset)).map_err(read_error)?;
        file.read_exact(&mut header[..8]).map_err(read_error)?;
        let size32 = u32::from_be_bytes(header[0..4].try_into().unwrap_or_default());
        let kind = &header[4..8];
        // Inside `moov` any four bytes name a box (a damaged name only hides
        // that box, as FFmpeg skips it); at the top level, bytes that are no box
        // name are a trailer once the media is complete, garbage before that.
        let printable = kind.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
        if !printable && parent.is_none() {
            if complete(&boxes) {
                break;
            }
            return Err(MediaError::Malformed(format!(
                "unreadable box header at byte {offset}{within}"
            )));
        }
        let kind = String::from_utf8_lossy(kind).to_string();
        let (header_len, box_size) = match size32 {
            0 => (8, end - offset),
            1 => {
                if end - offset < 16 {
                    return Err(MediaError::Malformed(format!(
                        "`{kind}` box header cut short{within}"
                    )));
                }
                file.read_exact(&mut header[8..16]).map_err(read_error)?;
                (
                    16,
                    u64::from_be_bytes(header[8..16].try_into().unwrap_or_default()),
                )
            }
            n => (8, u64::from(n)),
        };
        if box_size < header_len {
            return Err(MediaError::Malformed(format!(
                "`{kind}` box at byte {offset}{within} has an impossible size"
            )));
        }
        if box_size > end - offset {
            if complete(&boxes) && kind != "mdat" && kind != "moof" {
                break;
            }
            return Err(MediaError::Malformed(match parent {
                None => format!(
                    "truncated: the `{kind}` box needs {box_size} bytes from byte {offset}, \
                     but the file ends after {} bytes",
                    end - offset
                ),
                Some(p) => format!(
                    "the `{kind}` box at byte {offset} claims {box_size} bytes, \
                     past the end of its `{p}` box"
                ),
            }));
        }
        boxes.push(BoxHeader {
            kind,
            offset,
            header_len,
            size: box_size,
        });
        offset += box_size;
    }
    Ok(boxes)
}

/// The child boxes of a box body held in memory, as `(kind, body)`. Stops at the
/// first header that does not fit (what follows is unknown, not an error).
fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes(rest[0..4].try_into().ok()?);
        let kind: [u8; 4] = rest[4..8].try_into().ok()?;
        let (header, size) = match size32 {
            0 => (8, rest.len() as u64),
            1 => (16, u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?)),
            n => (8, u64::from(n)),
        };
        if size < header || size > rest.len() as u64 {
            rest = &[];
            return None;
        }
        let (this, next) = rest.split_at(size as usize);
        rest = next;
        Some((kind, &this[header as usize..]))
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(data)
        .find(|(k, _)| k == kind)
        .map(|(_, body)| body)
}

fn be_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// What the movie header and `mvex` say about the whole movie.
struct Movie {
    /// `mvhd`'s timescale and duration.
    timing: Option<(u32, u64)>,
    fragmented: bool,
}

/// The first `trak` of `moov` (its body) whose handler is `vide`.
fn first_video_track(moov: &[u8]) -> Option<VideoTrack> {
    let movie = Movie {
        timing: child(moov, b"mvhd").and_then(timescale_and_duration),
        fragmented: child(moov, b"mvex").is_some(),
    };
    children(moov)
        .filter(|(k, _)| k == b"trak")
        .find_map(|(_, trak)| {
            let mdia = child(trak, b"mdia")?;
            // hdlr: version+flags (4), pre_defined (4), handler_type (4).
            let handler = child(mdia, b"hdlr")?.get(8..12)?;
            (handler == b"vide").then(|| video_track(trak, mdia, &movie))
        })
}

/// qtdemux's test for a preview picture: the track's duration is under 20 %
/// of the movie's, in integers as it computes it. Both are `(timescale,
/// duration)`.
pub fn qtdemux_skips(movie: (u32, u64), track: (u32, u64)) -> bool {
    let movie_in_track_units = u128::from(track.0) * u128::from(movie.1);
    let track_in_movie_units = u128::from(movie.0) * u128::from(track.1);
    movie_in_track_units != 0 && track_in_movie_units * 10 / movie_in_track_units < 2
}

/// `mvhd` and `mdhd` alike: version and flags (4), then creation and
/// modification times (4 or 8 each), the timescale (4) and the duration (4 or
/// 8).
fn timescale_and_duration(full_box: &[u8]) -> Option<(u32, u64)> {
    if full_box.first() == Some(&1) {
        let scale = be_u32(full_box, 20)?;
        let duration = u64::from_be_bytes(full_box.get(24..32)?.try_into().ok()?);
        Some((scale, duration))
    } else {
        Some((be_u32(full_box, 12)?, u64::from(be_u32(full_box, 16)?)))
    }
}

/// The number of samples `stts` lists: version and flags (4), entry count
/// (4), then (sample count, sample delta) pairs.
fn sample_count(stts: &[u8]) -> Option<u64> {
    let entries = be_u32(stts, 4)? as usize;
    Some(
        stts.get(8..)?
            .chunks_exact(8)
            .take(entries)
            .map(|e| u64::from(u32::from_be_bytes([e[0], e[1], e[2], e[3]])))
            .sum(),
    )
}

fn video_track(trak: &[u8], mdia: &[u8], movie: &Movie) -> VideoTrack {
    let mut track = VideoTrack {
        edit_list: child(trak, b"edts").is_some_and(|edts| child(edts, b"elst").is_some()),
        ..VideoTrack::default()
    };
    if let Some(tkhd) = child(trak, b"tkhd") {
        read_tkhd(tkhd, &mut track);
    }
    let stbl = child(mdia, b"minf").and_then(|minf| child(minf, b"stbl"));
    track.last_chunk_offset = stbl.and_then(last_chunk_offset);
    track.frames = stbl
        .and_then(|stbl| child(stbl, b"stts"))
        .and_then(sample_count);
    let media = child(mdia, b"mdhd").and_then(timescale_and_duration);
    track.media_duration_s = media.map(|(scale, d)| d as f64 / f64::from(scale.max(1)));
    track.skipped_by_demuxer = !movie.fragmented
        && movie
            .timing
            .zip(media)
            .is_some_and(|(m, t)| qtdemux_skips(m, t));
    track.samples_then_fragments = movie.fragmented
        && track.frames.is_some_and(|n| n > 0)
        && track.last_chunk_offset.is_some();
    let entry = stbl
        .and_then(|stbl| child(stbl, b"stsd"))
        // stsd: version+flags (4), entry_count (4), then the entries as boxes.
        .and_then(|stsd| stsd.get(8..))
        .and_then(|entries| children(entries).next());
    if let Some((kind, body)) = entry {
        read_sample_entry(kind, body, &mut track);
    }
    track
}

/// The largest offset in `stco` (32-bit) or `co64` (64-bit): version and
/// flags (4), entry count (4), then the offsets. `None` without entries (a
/// fragmented file keeps its samples in fragments).
fn last_chunk_offset(stbl: &[u8]) -> Option<u64> {
    let (table, width) = match child(stbl, b"stco") {
        Some(t) => (t, 4),
        None => (child(stbl, b"co64")?, 8),
    };
    let count = be_u32(table, 4)? as usize;
    let entries = table.get(8..)?;
    entries
        .chunks_exact(width)
        .take(count)
        .map(|e| match width {
            4 => u64::from(u32::from_be_bytes(e.try_into().unwrap_or_default())),
            _ => u64::from_be_bytes(e.try_into().unwrap_or_default()),
        })
        .max()
}

/// `tkhd` body: version and flags, times and ids (20 or 32 bytes), then
/// reserved (8), layer, alternate group, volume, reserved (8), the matrix
/// (36) and width and height (16.16 each).
fn read_tkhd(tkhd: &[u8], track: &mut VideoTrack) {
    let fixed = if tkhd.first() == Some(&1) { 36 } else { 24 };
    let matrix_at = fixed + 16;
    let sign = |at: usize| be_u32(tkhd, at).map(|v| (v as i32).signum() as i8);
    if let (Some(a), Some(b), Some(c), Some(d)) = (
        sign(matrix_at),
        sign(matrix_at + 4),
        sign(matrix_at + 12),
        sign(matrix_at + 16),
    ) {
        track.matrix = Some((a, b, c, d));
    }
    let size_at = matrix_at + 36;
    if let (Some(w), Some(h)) = (be_u32(tkhd, size_at), be_u32(tkhd, size_at + 4)) {
        track.presentation_size = Some((w >> 16, h >> 16));
    }
}

/// A visual sample entry: SampleEntry (8), then pre_defined/reserved (16),
/// width, height, resolutions, reserved, frame count, compressor name, depth,
/// pre_defined (78 in all), then child boxes (`avcC`, `pasp`, `colr`, ...).
fn read_sample_entry(kind: [u8; 4], body: &[u8], track: &mut VideoTrack) {
    track.sample_entry = Some(String::from_utf8_lossy(&kind).to_string());
    if let (Some(w), Some(h)) = (be_u16(body, 24), be_u16(body, 26)) {
        track.coded_size = Some((u32::from(w), u32::from(h)));
    }
    let pasp = body.get(78..).and_then(|boxes| child(boxes, b"pasp"));
    if let Some(pasp) = pasp
        && let (Some(h), Some(v)) = (be_u32(pasp, 0), be_u32(pasp, 4))
        && h > 0
        && v > 0
    {
        let g = gcd(h, v);
        track.pixel_aspect = Some((h / g, v / g));
    }
}

pub fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn tkhd(matrix: [i32; 4], w: u32, h: u32) -> Vec<u8> {
        let mut body = vec![0u8; 24 + 16];
        let [a, b, c, d] = matrix;
        for v in [a, b, 0, c, d, 0, 0, 0, 1 << 30] {
            body.extend_from_slice(&v.to_be_bytes());
        }
        body.extend_from_slice(&(w << 16).to_be_bytes());
        body.extend_from_slice(&(h << 16).to_be_bytes());
        boxed(b"tkhd", &body)
    }

    fn video_trak(tkhd_box: Vec<u8>, w: u16, h: u16, pasp: Option<(u32, u32)>) -> Vec<u8> {
        let mut entry = vec![0u8; 78];
        entry[24..26].copy_from_slice(&w.to_be_bytes());
        entry[26..28].copy_from_slice(&h.to_be_bytes());
        entry.extend(boxed(b"avcC", &[1, 2, 3]));
        if let Some((hs, vs)) = pasp {
            let mut p = hs.to_be_bytes().to_vec();
            p.extend_from_slice(&vs.to_be_bytes());
            entry.extend(boxed(b"pasp", &p));
        }
        let mut stsd = vec![0, 0, 0, 0, 0, 0, 0, 1];
        stsd.extend(boxed(b"avc1", &entry));
        let stbl = boxed(b"stbl", &boxed(b"stsd", &stsd));
        let minf = boxed(b"minf", &stbl);
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(b"vide");
        hdlr.extend_from_slice(&[0u8; 12]);
        let mut mdia = boxed(b"hdlr", &hdlr);
        mdia.extend(minf);
        let mut trak = tkhd_box;
        trak.extend(boxed(b"mdia", &mdia));
        boxed(b"trak", &trak)
    }

    fn write_boxes(path: &Path, boxes: &[(&[u8; 4], u32, usize)]) {
        let mut data = Vec::new();
        for (kind, declared, actual) in boxes {
            data.extend_from_slice(&declared.to_be_bytes());
            data.extend_from_slice(*kind);
            if *kind == b"moov" && *actual >= 16 {
                // One child filling it, as a real `moov` has (`mvhd`, `trak`...).
                data.extend_from_slice(&(*actual as u32 - 8).to_be_bytes());
                data.extend_from_slice(b"mvhd");
                data.extend(std::iter::repeat_n(0u8, actual - 16));
            } else {
                data.extend(std::iter::repeat_n(0u8, actual - 8));
            }
        }
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn isobmff_box_walk_finds_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();

        write_boxes(
            &path,
            &[
                (b"ftyp", 16, 16),
                (b"moov", 100, 100),
                (b"mdat", 1000, 1000),
            ],
        );
        inspect(&path, size(&path)).unwrap();

        write_boxes(
            &path,
            &[(b"ftyp", 16, 16), (b"moov", 100, 100), (b"mdat", 1000, 400)],
        );
        let err = inspect(&path, size(&path)).unwrap_err();
        assert!(
            matches!(err, MediaError::Malformed(ref m) if m.contains("mdat")),
            "{err:?}"
        );

        write_boxes(&path, &[(b"ftyp", 16, 16), (b"moov", 0xffff_ff00, 100)]);
        assert!(inspect(&path, size(&path)).is_err());

        write_boxes(&path, &[(b"ftyp", 16, 16), (b"mdat", 0, 500)]);
        inspect(&path, size(&path)).unwrap();

        // A `moov` whose first child claims more than the `moov` holds (a
        // damaged header): refused at once, not left to the Discoverer, which
        // may wait for its timeout on such a file.
        write_boxes(&path, &[(b"ftyp", 16, 16), (b"moov", 100, 100)]);
        let mut data = std::fs::read(&path).unwrap();
        data[24..28].copy_from_slice(&0xABAB_ABABu32.to_be_bytes());
        std::fs::write(&path, data).unwrap();
        let err = inspect(&path, size(&path)).unwrap_err();
        assert!(
            matches!(err, MediaError::Malformed(ref m) if m.contains("past the end of its `moov`")),
            "{err:?}"
        );
    }

    #[test]
    fn a_trailer_after_the_media_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mp4");
        write_boxes(
            &path,
            &[(b"ftyp", 16, 16), (b"moov", 100, 100), (b"mdat", 100, 100)],
        );
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(b"\x00\x00\x10\x00SEFH\x01\x02 vendor trailer, no box");
        std::fs::write(&path, &data).unwrap();
        inspect(&path, data.len() as u64).unwrap();
        // Garbage before the media is complete still is an error.
        write_boxes(&path, &[(b"ftyp", 16, 16), (b"moov", 100, 100)]);
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(&[0, 0, 0, 16, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0]);
        std::fs::write(&path, &data).unwrap();
        assert!(inspect(&path, data.len() as u64).is_err());
    }

    #[test]
    fn a_track_under_a_fifth_of_the_movie_is_what_qtdemux_skips() {
        // The VobSub sample: 784/16000 s of video in a 1240/1000 s movie.
        assert!(qtdemux_skips((1000, 1240), (16000, 784)));
        assert!(!qtdemux_skips((1000, 1240), (16000, 4000)));
        assert!(!qtdemux_skips((1000, 0), (16000, 784)));
    }

    #[test]
    fn reads_header_times_and_sample_counts() {
        let mut v0 = vec![0u8; 12];
        v0.extend(600u32.to_be_bytes());
        v0.extend(1200u32.to_be_bytes());
        assert_eq!(timescale_and_duration(&v0), Some((600, 1200)));
        let mut v1 = vec![1u8, 0, 0, 0];
        v1.extend([0u8; 16]);
        v1.extend(90_000u32.to_be_bytes());
        v1.extend((1u64 << 40).to_be_bytes());
        assert_eq!(timescale_and_duration(&v1), Some((90_000, 1 << 40)));
        let mut stts = vec![0u8; 4];
        stts.extend(2u32.to_be_bytes());
        for (count, delta) in [(29u32, 512u32), (1, 300)] {
            stts.extend(count.to_be_bytes());
            stts.extend(delta.to_be_bytes());
        }
        assert_eq!(sample_count(&stts), Some(30));
    }

    #[test]
    fn reads_the_first_video_track() {
        let one = 1 << 16;
        let mut sound = vec![0u8; 8];
        sound.extend_from_slice(b"soun");
        let sound_trak = boxed(b"trak", &boxed(b"mdia", &boxed(b"hdlr", &sound)));
        let mut moov = sound_trak;
        moov.extend(video_trak(
            tkhd([0, one, -one, 0], 68, 120),
            160,
            120,
            Some((64, 48)),
        ));
        let track = first_video_track(&moov).unwrap();
        assert_eq!(track.presentation_size, Some((68, 120)));
        assert_eq!(track.matrix, Some((0, 1, -1, 0)));
        assert_eq!(track.sample_entry.as_deref(), Some("avc1"));
        assert_eq!(track.coded_size, Some((160, 120)));
        assert_eq!(track.pixel_aspect, Some((4, 3)));
        assert_eq!(track.last_chunk_offset, None);
    }

    #[test]
    fn a_moov_without_a_header_or_with_samples_past_the_end_is_refused() {
        let stbl = |kind: &[u8; 4], offsets: &[u64]| {
            let mut t = vec![0, 0, 0, 0];
            t.extend((offsets.len() as u32).to_be_bytes());
            for o in offsets {
                match kind {
                    b"stco" => t.extend((*o as u32).to_be_bytes()),
                    _ => t.extend(o.to_be_bytes()),
                }
            }
            boxed(kind, &t)
        };
        assert_eq!(
            last_chunk_offset(&stbl(b"stco", &[48, 9000, 700])),
            Some(9000)
        );
        assert_eq!(
            last_chunk_offset(&stbl(b"co64", &[1 << 33, 48])),
            Some(1 << 33)
        );
        assert_eq!(last_chunk_offset(&stbl(b"stco", &[])), None);

        // mdat and moov both fit, but the samples start past the end of the file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.mp4");
        let mut trak_body = Vec::new();
        let mut hdlr = vec![0u8; 8];
        hdlr.extend_from_slice(b"vide");
        let minf = boxed(b"minf", &boxed(b"stbl", &stbl(b"stco", &[16, 1_000_000])));
        let mut mdia = boxed(b"hdlr", &hdlr);
        mdia.extend(minf);
        trak_body.extend(boxed(b"mdia", &mdia));
        let mut file = boxed(b"ftyp", b"isom\0\0\0\0");
        file.extend(boxed(b"mdat", &[0u8; 64]));
        let headless = [file.clone(), boxed(b"moov", &boxed(b"trak", &trak_body))].concat();
        std::fs::write(&path, &headless).unwrap();
        let err = inspect(&path, headless.len() as u64).unwrap_err();
        assert!(
            matches!(&err, MediaError::Malformed(m) if m.contains("no movie header")),
            "{err:?}"
        );
        let mut moov = boxed(b"mvhd", &[0u8; 100]);
        moov.extend(boxed(b"trak", &trak_body));
        file.extend(boxed(b"moov", &moov));
        std::fs::write(&path, &file).unwrap();
        let err = inspect(&path, file.len() as u64).unwrap_err();
        assert!(
            matches!(&err, MediaError::Malformed(m) if m.contains("run to byte 1000000")),
            "{err:?}"
        );
    }

    #[test]
    fn a_damaged_inner_box_is_no_error() {
        let one = 1 << 16;
        let mut trak = video_trak(tkhd([one, 0, 0, one], 10, 10), 10, 10, None);
        // An mdia claiming more than its trak holds hides the track's facts.
        let at = trak.windows(4).position(|w| w == b"mdia").unwrap() - 4;
        trak[at..at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
        assert_eq!(first_video_track(&trak), None);
        let ok = video_trak(tkhd([one, 0, 0, one], 10, 10), 10, 10, None);
        let track = first_video_track(&ok).unwrap();
        assert_eq!(track.pixel_aspect, None);
        assert_eq!(track.matrix, Some((1, 0, 0, 1)));
    }
}
