//! HLS playlists (written with `m3u8-rs`): one media playlist per rendition and a
//! master playlist that announces each rendition's peak and average bandwidth,
//! resolution, frame rate and codecs.

use m3u8_rs::{
    ExtTag, MasterPlaylist, MediaPlaylist, MediaPlaylistType, MediaSegment, Resolution,
    VariantStream,
};

/// One segment of a media playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub uri: String,
    pub duration_s: f64,
    pub bytes: u64,
}

/// One rendition in a master playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// URI of its media playlist, relative to the master.
    pub uri: String,
    pub bandwidth: u64,
    pub average_bandwidth: u64,
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
}

/// `(peak, average)` bit rate of a list of segments, in bits per second. The peak
/// is the highest of any segment, which is what `BANDWIDTH` must announce.
pub fn bandwidth(segments: &[Segment]) -> (u64, u64) {
    let mut peak = 0.0f64;
    let (mut bytes, mut seconds) = (0u64, 0.0f64);
    for s in segments {
        if s.duration_s > 0.0 {
            // A short final segment is not representative of the stream's peak.
            let weight_ok = s.duration_s >= 1.0 || segments.len() == 1;
            if weight_ok {
                peak = peak.max(s.bytes as f64 * 8.0 / s.duration_s);
            }
        }
        bytes += s.bytes;
        seconds += s.duration_s;
    }
    let average = if seconds > 0.0 {
        bytes as f64 * 8.0 / seconds
    } else {
        0.0
    };
    (peak.max(average).ceil() as u64, average.ceil() as u64)
}

/// One `EXT-X-DATERANGE` of a media playlist: its start in media seconds (it is
/// written before the segment it starts in) and its attribute list.
#[derive(Debug, Clone, PartialEq)]
pub struct DateRange {
    pub start_s: f64,
    pub attributes: String,
}

/// Media time 0 as a date, announced with `EXT-X-PROGRAM-DATE-TIME` on the first
/// segment of playlists that carry date ranges (which need one). A fixed origin
/// keeps re-runs byte-identical.
const PROGRAM_DATE_ORIGIN_S: f64 = 0.0;

/// `START-DATE` of media time `s` (ISO 8601, milliseconds, UTC).
pub fn iso_date(s: f64) -> String {
    let ms = ((PROGRAM_DATE_ORIGIN_S + s.max(0.0)) * 1000.0).round() as i64;
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A complete (VOD) media playlist, with `ranges` as `EXT-X-DATERANGE` tags.
/// (m3u8-rs keeps one date range per segment and writes its attributes in hash
/// order, so they are written here as plain tags, in a fixed order.)
pub fn media_playlist(segments: &[Segment], ranges: &[DateRange]) -> String {
    let target = segments
        .iter()
        .map(|s| s.duration_s.round() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let playlist = MediaPlaylist {
        version: Some(3),
        target_duration: target,
        media_sequence: 0,
        segments: segments
            .iter()
            .enumerate()
            .map(|(i, s)| MediaSegment {
                uri: s.uri.clone(),
                duration: s.duration_s as f32,
                unknown_tags: segment_tags(segments, i, ranges),
                ..Default::default()
            })
            .collect(),
        end_list: true,
        playlist_type: Some(MediaPlaylistType::Vod),
        independent_segments: true,
        ..Default::default()
    };
    render(|w| playlist.write_to(w))
}

/// The date ranges starting in segment `i` (those past the end go to the last
/// one), after the program date-time on the first segment.
fn segment_tags(segments: &[Segment], i: usize, ranges: &[DateRange]) -> Vec<ExtTag> {
    if ranges.is_empty() {
        return Vec::new();
    }
    let start: f64 = segments[..i].iter().map(|s| s.duration_s).sum();
    let end = start + segments[i].duration_s;
    let last = i + 1 == segments.len();
    let mut tags = Vec::new();
    if i == 0 {
        tags.push(ExtTag {
            tag: "X-PROGRAM-DATE-TIME".into(),
            rest: Some(iso_date(0.0)),
        });
    }
    for r in ranges {
        let here = if i == 0 {
            r.start_s < end || last
        } else {
            r.start_s >= start && (r.start_s < end || last)
        };
        if here {
            tags.push(ExtTag {
                tag: "X-DATERANGE".into(),
                rest: Some(r.attributes.clone()),
            });
        }
    }
    tags
}

/// The master playlist, variants listed from the highest bandwidth down.
pub fn master_playlist(variants: &[Variant]) -> String {
    master(variants, true)
}

/// A master playlist; `independent`: every segment of every variant starts
/// with a keyframe (`EXT-X-INDEPENDENT-SEGMENTS`).
pub fn master(variants: &[Variant], independent: bool) -> String {
    let mut variants = variants.to_vec();
    variants.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
    let playlist = MasterPlaylist {
        version: Some(3),
        independent_segments: independent,
        variants: variants
            .iter()
            .map(|v| VariantStream {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth,
                average_bandwidth: Some(v.average_bandwidth),
                codecs: Some(v.codecs.clone()),
                resolution: (v.width > 0 && v.height > 0).then(|| Resolution {
                    width: u64::from(v.width),
                    height: u64::from(v.height),
                }),
                frame_rate: Some((v.frame_rate * 1000.0).round() / 1000.0),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    render(|w| playlist.write_to(w))
}

fn render(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments() -> Vec<Segment> {
        vec![
            Segment {
                uri: "seg_00000.ts".into(),
                duration_s: 4.0,
                bytes: 1_500_000,
            },
            Segment {
                uri: "seg_00001.ts".into(),
                duration_s: 4.0,
                bytes: 2_500_000,
            },
            Segment {
                uri: "seg_00002.ts".into(),
                duration_s: 1.2,
                bytes: 100_000,
            },
        ]
    }

    #[test]
    fn media_playlists_parse_back() {
        let text = media_playlist(&segments(), &[]);
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.target_duration, 4);
        assert!(parsed.end_list);
        assert_eq!(parsed.segments.len(), 3);
        assert_eq!(parsed.segments[1].uri, "seg_00001.ts");
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
    }

    #[test]
    fn date_ranges_go_before_the_segment_they_start_in() {
        let ranges = [
            DateRange {
                start_s: 5.0,
                attributes: "ID=\"b\",START-DATE=\"1970-01-01T00:00:05.000Z\",DURATION=1.000"
                    .into(),
            },
            DateRange {
                start_s: 0.5,
                attributes: "ID=\"a\",START-DATE=\"1970-01-01T00:00:00.500Z\",DURATION=2.000"
                    .into(),
            },
        ];
        let text = media_playlist(&segments(), &ranges);
        let lines: Vec<&str> = text.lines().collect();
        let at = |prefix: &str| lines.iter().position(|l| l.starts_with(prefix)).unwrap();
        assert!(at("#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:00.000Z") < at("#EXTINF"));
        assert!(at("#EXT-X-DATERANGE:ID=\"a\"") < at("seg_00000.ts"));
        let b = at("#EXT-X-DATERANGE:ID=\"b\"");
        assert!(b > at("seg_00000.ts") && b < at("seg_00001.ts"));
        let parsed = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.segments.len(), 3);
        assert!(parsed.segments[0].program_date_time.is_some());
        // A range starting past the announced durations still goes somewhere,
        // one segment or many.
        let late = [DateRange {
            start_s: 99.0,
            attributes: "ID=\"z\"".into(),
        }];
        for n in [1, 3] {
            let text = media_playlist(&segments()[..n], &late);
            assert!(text.contains("#EXT-X-DATERANGE:ID=\"z\""), "{text}");
        }
    }

    #[test]
    fn bandwidth_is_the_peak_segment_rate() {
        let (peak, avg) = bandwidth(&segments());
        assert_eq!(peak, 5_000_000);
        assert_eq!(avg, (4_100_000.0f64 * 8.0 / 9.2).ceil() as u64);
    }

    #[test]
    fn master_lists_variants_with_attributes() {
        let text = master_playlist(&[
            Variant {
                uri: "360p/index.m3u8".into(),
                bandwidth: 800_000,
                average_bandwidth: 700_000,
                codecs: "avc1.4d401e,mp4a.40.2".into(),
                width: 640,
                height: 360,
                frame_rate: 30.0,
            },
            Variant {
                uri: "720p/index.m3u8".into(),
                bandwidth: 3_300_000,
                average_bandwidth: 3_000_000,
                codecs: "avc1.64001f,mp4a.40.2".into(),
                width: 1280,
                height: 720,
                frame_rate: 30.0,
            },
        ]);
        let parsed = m3u8_rs::parse_master_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(parsed.variants[0].uri, "720p/index.m3u8");
        assert_eq!(parsed.variants[0].bandwidth, 3_300_000);
        assert!(text.contains("RESOLUTION=1280x720"));
        assert!(text.contains("CODECS=\"avc1.64001f,mp4a.40.2\""));
    }
}
