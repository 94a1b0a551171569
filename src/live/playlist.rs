//! Live and replay media playlists (RFC 8216), written with m3u8-rs.
//!
//! The relay calls these with segments that are already stored, so a playlist
//! can never list a missing segment. Every segment carries
//! `EXT-X-PROGRAM-DATE-TIME` (the wall clock of its first frame), which anchors
//! pins (`EXT-X-DATERANGE`) and survives discontinuities. A publisher that
//! reconnects continues the same playlist after an `EXT-X-DISCONTINUITY`.

use chrono::{DateTime, SecondsFormat, Utc};
use m3u8_rs::{ExtTag, MediaPlaylist, MediaPlaylistType, MediaSegment};

/// `CLASS` of pinned-product date ranges (the same as VOD tags).
pub const PIN_CLASS: &str = crate::overlay::timed::DATERANGE_CLASS;

/// A segment in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSegment {
    /// Media sequence number: 0, 1, 2, ... over the whole stream.
    pub sequence: u64,
    /// URI relative to the playlist.
    pub uri: String,
    pub duration_s: f64,
    /// The first segment after the publisher reconnected.
    pub discontinuity: bool,
    /// Starts with a keyframe. Playlists claim `EXT-X-INDEPENDENT-SEGMENTS`
    /// only when every segment they list does.
    pub independent: bool,
    /// Wall clock of its first frame.
    pub started_at: DateTime<Utc>,
}

impl LiveSegment {
    fn ends_at(&self) -> DateTime<Utc> {
        self.started_at + chrono::Duration::milliseconds((self.duration_s * 1000.0).round() as i64)
    }
}

/// A product pinned from `start` until `end` (open while still pinned).
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    /// Safe alphabet (see `overlay::spec`), quoted as is.
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    /// Client attributes, already formatted (`X-PRODUCT-ID="p-42",...`).
    pub attributes: String,
}

fn date(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Pin {
    fn line(&self, closed_at: Option<DateTime<Utc>>) -> ExtTag {
        let mut rest = format!(
            "ID=\"{}\",CLASS=\"{PIN_CLASS}\",START-DATE=\"{}\"",
            self.id,
            date(self.start)
        );
        if let Some(end) = self.end.or(closed_at) {
            let end = end.max(self.start);
            rest.push_str(&format!(",END-DATE=\"{}\"", date(end)));
        }
        if !self.attributes.is_empty() {
            rest.push(',');
            rest.push_str(&self.attributes);
        }
        ExtTag {
            tag: "X-DATERANGE".into(),
            rest: Some(rest),
        }
    }
}

/// `EXT-X-TARGETDURATION`: the profile's target, or more if a segment ran
/// longer (a publisher's keyframe interval decides where segments can be cut).
fn target_duration(segments: &[LiveSegment], target_s: u64) -> u64 {
    segments
        .iter()
        .map(|s| s.duration_s.round() as u64)
        .fold(target_s.max(1), u64::max)
}

fn render(
    segments: &[LiveSegment],
    shown: &[LiveSegment],
    target_s: u64,
    pins: &[Pin],
    ended: bool,
) -> String {
    let discontinuities_before = segments[..segments.len() - shown.len()]
        .iter()
        .filter(|s| s.discontinuity)
        .count() as u64;
    let window_start = shown.first().map(|s| s.started_at);
    let last_end = shown.last().map(LiveSegment::ends_at);
    let mut media = Vec::with_capacity(shown.len());
    for (i, s) in shown.iter().enumerate() {
        let mut tags = Vec::new();
        for pin in pins {
            // Pins still relevant to this window, before the first segment that
            // ends after they start (pins older than the window go first).
            let relevant = match (pin.end, window_start) {
                (Some(end), Some(start)) => end >= start,
                _ => true,
            };
            let here = if i == 0 {
                pin.start < s.ends_at() || shown.len() == 1
            } else {
                pin.start >= shown[i - 1].ends_at()
                    && (pin.start < s.ends_at() || i + 1 == shown.len())
            };
            if relevant && here {
                tags.push(pin.line(if ended { last_end } else { None }));
            }
        }
        media.push(MediaSegment {
            uri: s.uri.clone(),
            duration: s.duration_s as f32,
            discontinuity: s.discontinuity && i > 0,
            program_date_time: Some(s.started_at.fixed_offset()),
            unknown_tags: tags,
            ..Default::default()
        });
    }
    let playlist = MediaPlaylist {
        version: Some(3),
        target_duration: target_duration(shown, target_s),
        // Players number a segment by its position after this: counted in
        // stored segments, not storage sequence numbers (a segment given up,
        // or left in a lost node's spool, leaves a hole in those), so the
        // numbering stays the same from one playlist to the next.
        media_sequence: (segments.len() - shown.len()) as u64,
        discontinuity_sequence: discontinuities_before,
        segments: media,
        end_list: ended,
        playlist_type: ended.then_some(MediaPlaylistType::Vod),
        independent_segments: shown.iter().all(|s| s.independent),
        ..Default::default()
    };
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = playlist.write_to(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The live playlist: the last `window` of the stream's stored `segments` (all
/// of them, in order), with the pins that matter to that window.
pub fn live(segments: &[LiveSegment], window: usize, target_s: u64, pins: &[Pin]) -> String {
    let shown = &segments[segments.len().saturating_sub(window.max(1))..];
    render(segments, shown, target_s, pins, false)
}

/// The replay: every segment of the stream, every pin (closed at the end of the
/// stream if it was still open), `EXT-X-ENDLIST`.
pub fn replay(segments: &[LiveSegment], target_s: u64, pins: &[Pin]) -> String {
    render(segments, segments, target_s, pins, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: f64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + (s * 1000.0) as i64).unwrap()
    }

    /// 2 s segments from t=0, with a reconnect (and a 5 s hole) before `gap_at`.
    fn segments(n: u64, gap_at: Option<u64>) -> Vec<LiveSegment> {
        (0..n)
            .map(|i| {
                let hole = gap_at.is_some_and(|g| i >= g) as u64 as f64 * 5.0;
                LiveSegment {
                    sequence: i,
                    uri: format!("seg_{i:05}.ts"),
                    duration_s: 2.0,
                    discontinuity: gap_at == Some(i),
                    independent: true,
                    started_at: at(i as f64 * 2.0 + hole),
                }
            })
            .collect()
    }

    fn pin(id: &str, start: f64, end: Option<f64>) -> Pin {
        Pin {
            id: id.into(),
            start: at(start),
            end: end.map(at),
            attributes: format!("X-PRODUCT-ID=\"p-{id}\""),
        }
    }

    #[test]
    fn a_hole_in_storage_sequences_keeps_media_sequence_numbers_stable() {
        // Segment 3 never reached the store (given up, or in a lost node's spool).
        let mut stored = segments(10, Some(4));
        stored.remove(3);
        let first = live(&stored[..6], 4, 2, &[]);
        let later = live(&stored, 4, 2, &[]);
        let first = m3u8_rs::parse_media_playlist_res(first.as_bytes()).unwrap();
        let later = m3u8_rs::parse_media_playlist_res(later.as_bytes()).unwrap();
        // The same segment has the same number in both playlists.
        let number = |p: &m3u8_rs::MediaPlaylist, uri: &str| {
            let at = p.segments.iter().position(|s| s.uri == uri).unwrap();
            p.media_sequence + at as u64
        };
        assert_eq!(
            number(&first, "seg_00006.ts"),
            number(&later, "seg_00006.ts")
        );
        assert_eq!(later.media_sequence, 5);
    }

    #[test]
    fn the_live_window_slides_with_its_sequence_numbers() {
        let text = live(&segments(10, None), 6, 2, &[]);
        let p = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert_eq!(p.media_sequence, 4);
        assert_eq!(p.segments.len(), 6);
        assert_eq!(p.segments[0].uri, "seg_00004.ts");
        assert!(!p.end_list);
        assert!(p.segments.iter().all(|s| s.program_date_time.is_some()));
        assert!(!text.contains("PLAYLIST-TYPE"));
    }

    #[test]
    fn a_reconnect_is_a_discontinuity_counted_once_it_leaves_the_window() {
        let all = segments(10, Some(5));
        let text = live(&all, 6, 2, &[]);
        let p = m3u8_rs::parse_media_playlist_res(text.as_bytes()).unwrap();
        assert!(p.segments[1].discontinuity, "seg 5 follows the reconnect");
        assert_eq!(p.discontinuity_sequence, 0);
        let later = live(&all, 3, 2, &[]);
        let p = m3u8_rs::parse_media_playlist_res(later.as_bytes()).unwrap();
        assert_eq!(p.discontinuity_sequence, 1);
        assert!(p.segments.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn pins_appear_while_relevant_and_stay_in_the_replay() {
        let all = segments(10, None);
        let pins = [pin("a", 1.0, Some(3.0)), pin("b", 15.0, None)];
        let text = live(&all, 4, 2, &pins);
        assert!(
            !text.contains("ID=\"a\""),
            "a ended before the window: {text}"
        );
        let b = text.find("ID=\"b\"").unwrap();
        assert!(
            b > text.find("seg_00006.ts").unwrap() && b < text.find("seg_00007.ts").unwrap(),
            "{text}"
        );
        assert!(
            !text[b..].lines().next().unwrap().contains("END-DATE"),
            "b is still pinned"
        );

        let replay = replay(&all, 2, &pins);
        let p = m3u8_rs::parse_media_playlist_res(replay.as_bytes()).unwrap();
        assert!(p.end_list);
        assert_eq!(p.segments.len(), 10);
        assert!(replay.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
        let a = replay.lines().find(|l| l.contains("ID=\"a\"")).unwrap();
        assert!(a.contains("END-DATE=\"2027-01-15T08:00:03.000Z\""), "{a}");
        let b = replay.lines().find(|l| l.contains("ID=\"b\"")).unwrap();
        assert!(
            b.contains("END-DATE=\"2027-01-15T08:00:20.000Z\""),
            "closed at the end: {b}"
        );
        assert!(b.contains("X-PRODUCT-ID=\"p-b\""));
    }

    #[test]
    fn a_long_segment_raises_the_target_duration() {
        let mut all = segments(3, None);
        all[1].duration_s = 4.6;
        let p = m3u8_rs::parse_media_playlist_res(live(&all, 6, 2, &[]).as_bytes()).unwrap();
        assert_eq!(p.target_duration, 5);
    }
}
