//! The tags as timed data, from the same placed tags the burn-in draws: a JSON
//! sidecar, a WebVTT metadata track whose cues carry the same JSON, and HLS
//! `EXT-X-DATERANGE` lines for the media playlists.

use serde::Serialize;

use super::layout::Rect;
use super::spec::TagSpec;
use crate::media::hls::{DateRange, iso_date};

/// `CLASS` of the date ranges, so players can tell product tags from other
/// date ranges (ads, chapters).
pub const DATERANGE_CLASS: &str = "com.media-node.product-tag";

/// A tag as published: where and when it was drawn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimedTag {
    pub id: String,
    pub product_id: String,
    pub title: String,
    pub price: Price,
    pub sponsored: bool,
    /// Seconds from the start of the video.
    pub start: f64,
    pub end: f64,
    /// Where the card was drawn, normalised to the frame (the same in every
    /// rendition).
    pub rect: Rect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Price {
    pub amount: String,
    pub currency: String,
    /// As shown on the card (`$49.99`).
    pub display: String,
}

impl TimedTag {
    pub fn new(spec: &TagSpec, price_display: String, start: f64, end: f64, rect: Rect) -> Self {
        let r4 = |v: f64| (v * 10_000.0).round() / 10_000.0;
        TimedTag {
            id: spec.id.clone(),
            product_id: spec.product_id.clone(),
            title: spec.title.clone(),
            price: Price {
                amount: spec.price.amount.clone(),
                currency: spec.price.currency.clone(),
                display: price_display,
            },
            sponsored: spec.sponsored,
            start: (start * 1000.0).round() / 1000.0,
            end: (end * 1000.0).round() / 1000.0,
            rect: Rect {
                x: r4(rect.x),
                y: r4(rect.y),
                w: r4(rect.w),
                h: r4(rect.h),
            },
            image: spec.image.as_ref().map(|k| k.as_str().to_string()),
        }
    }
}

#[derive(Serialize)]
struct Sidecar<'a> {
    version: u32,
    /// Width / height of the frame the rectangles are normalised to.
    frame_aspect: f64,
    tags: &'a [TimedTag],
}

/// The JSON sidecar (`tags.json`).
pub fn sidecar(tags: &[TimedTag], frame_w: u32, frame_h: u32) -> String {
    let aspect = f64::from(frame_w) / f64::from(frame_h.max(1));
    let doc = Sidecar {
        version: 1,
        frame_aspect: (aspect * 10_000.0).round() / 10_000.0,
        tags,
    };
    // Serialising plain data cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// `HH:MM:SS.mmm`
fn vtt_time(s: f64) -> String {
    let ms = (s.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A WebVTT metadata track: one cue per tag, identified `tag-{id}`, whose
/// payload is the tag's JSON on one line.
pub fn webvtt(tags: &[TimedTag]) -> String {
    let mut out = String::from("WEBVTT - media-node product tags\n\n");
    let mut sorted: Vec<&TimedTag> = tags.iter().collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.id.cmp(&b.id)));
    for tag in sorted {
        // A cue payload ends at a blank line and must not contain `-->`:
        // compact JSON has no line breaks, and `>` inside strings is escaped.
        let json = serde_json::to_string(tag)
            .unwrap_or_default()
            .replace('>', "\\u003e");
        // Cue ids are prefixed: a block starting with `NOTE`, `STYLE` or
        // `REGION` would be read as something else by some parsers.
        out.push_str(&format!(
            "tag-{}\n{} --> {}\n{}\n\n",
            tag.id,
            vtt_time(tag.start),
            vtt_time(tag.end),
            json
        ));
    }
    out
}

/// Date ranges for `tags`. Quoted values are ids from a safe alphabet (see
/// `validation::check_id`); the title stays in the sidecar, where any text is safe.
pub fn dateranges(tags: &[TimedTag]) -> Vec<DateRange> {
    let mut out: Vec<DateRange> = tags
        .iter()
        .map(|t| DateRange {
            start_s: t.start,
            attributes: format!(
                "ID=\"{}\",CLASS=\"{DATERANGE_CLASS}\",START-DATE=\"{}\",DURATION={:.3},\
                 X-PRODUCT-ID=\"{}\",X-RECT-X={:.4},X-RECT-Y={:.4},X-RECT-W={:.4},X-RECT-H={:.4},\
                 X-SPONSORED=\"{}\"",
                t.id,
                iso_date(t.start),
                t.end - t.start,
                t.product_id,
                t.rect.x,
                t.rect.y,
                t.rect.w,
                t.rect.h,
                if t.sponsored { "YES" } else { "NO" }
            ),
        })
        .collect();
    out.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags() -> Vec<TimedTag> {
        let spec: TagSpec = serde_json::from_value(serde_json::json!({
            "id": "t1", "product_id": "p-42", "title": "Blender --> Pro \"3000\"",
            "price": {"amount": "49.99", "currency": "USD"}, "sponsored": true,
            "start": 2.0, "end": 6.0, "position": {"x": 0.05, "y": 0.7}
        }))
        .unwrap();
        let rect = Rect {
            x: 0.05,
            y: 0.7,
            w: 0.4,
            h: 0.123_456,
        };
        vec![TimedTag::new(&spec, "$49.99".into(), 2.0, 6.0, rect)]
    }

    #[test]
    fn the_sidecar_lists_id_window_and_rect() {
        let v: serde_json::Value = serde_json::from_str(&sidecar(&tags(), 640, 360)).unwrap();
        let t = &v["tags"][0];
        assert_eq!(t["id"], "t1");
        assert_eq!(t["start"], 2.0);
        assert_eq!(t["end"], 6.0);
        assert_eq!(t["rect"]["h"], 0.1235);
        assert_eq!(t["price"]["display"], "$49.99");
    }

    #[test]
    fn vtt_cues_carry_the_json_safely() {
        let text = webvtt(&tags());
        assert!(text.starts_with("WEBVTT"));
        let cue: Vec<&str> = text.split("\n\n").nth(1).unwrap().lines().collect();
        assert_eq!(cue[0], "tag-t1");
        assert_eq!(cue[1], "00:00:02.000 --> 00:00:06.000");
        assert_eq!(cue.len(), 3);
        assert!(!cue[2].contains("-->"));
        let back: serde_json::Value = serde_json::from_str(cue[2]).unwrap();
        assert_eq!(back["title"], "Blender --> Pro \"3000\"");
    }

    #[test]
    fn dateranges_have_dates_and_client_attributes() {
        let d = &dateranges(&tags())[0];
        assert_eq!(d.start_s, 2.0);
        assert!(
            d.attributes.starts_with(
                "ID=\"t1\",CLASS=\"com.media-node.product-tag\",START-DATE=\"1970-01-01T00:00:02.000Z\",DURATION=4.000,X-PRODUCT-ID=\"p-42\",X-RECT-X=0.0500"
            ),
            "{}",
            d.attributes
        );
    }
}
