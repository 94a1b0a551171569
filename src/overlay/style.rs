//! Tag card styles: `pipelines/tags/<name>.toml` parsed into a validated [`TagStyle`].
//!
//! Every size is a fraction of the card width, so one style draws the same card (same
//! shape, same line breaks, same proportions) at every rendition size from 360p to 1080p.
//! Colours are written `"#RRGGBB"` or `"#RRGGBBAA"` (straight, non-premultiplied alpha).
//! [`TagStyle::validate`] keeps values in ranges that give a legible card, and insists that
//! the "Sponsored" disclosure pill is opaque and has enough contrast to be read.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A tag style from `pipelines/tags/<name>.toml`. All sizes are fractions of the card width
/// (so a card looks the same at 360p and 1080p); colours are "#RRGGBB" or "#RRGGBBAA" strings in TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagStyle {
    /// Free text for people reading the file; not drawn.
    #[serde(default)]
    pub description: String,
    /// Card background (usually dark and slightly translucent).
    pub background: Color,
    /// Product title text.
    pub title_color: Color,
    /// Price text.
    pub price_color: Color,
    /// Text of the "Sponsored" pill. Must be opaque.
    pub label_color: Color,
    /// Fill of the "Sponsored" pill. Must be opaque and contrast with `label_color`.
    pub label_background: Color,
    /// Radius of the card's corners.
    pub corner_radius: f32,
    /// Space between the card's edge and its content (and between image and text).
    pub padding: f32,
    /// Title font size (em size).
    pub title_size: f32,
    /// Price font size (em size).
    pub price_size: f32,
    /// "Sponsored" font size (em size).
    pub label_size: f32,
    /// The title wraps to at most this many lines; the last one ends in "…" when cut.
    pub max_title_lines: u32,
    /// Side of the square product-image slot on the left.
    pub image_size: f32,
    /// Card width as a fraction of the frame width when the tag gives none.
    pub default_width: f32,
    /// Never draw a card narrower than this many pixels (text legibility at 360p portrait).
    pub min_width_px: u32,
    /// Fade in and fade out duration in milliseconds.
    pub fade_ms: u32,
    /// Where cards may not go (app chrome of short-video players).
    pub safe_margins: SafeMargins,
    /// The disclosure drawn on sponsored tags.
    #[serde(default = "default_sponsored_text")]
    pub sponsored_text: String,
}

fn default_sponsored_text() -> String {
    "Sponsored".to_owned()
}

/// Parts of the frame kept free of cards: fractions of the frame height (top, bottom)
/// and of the frame width (left, right).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeMargins {
    /// Fraction of the frame height.
    pub top: f32,
    /// Fraction of the frame height.
    pub bottom: f32,
    /// Fraction of the frame width.
    pub left: f32,
    /// Fraction of the frame width.
    pub right: f32,
}

/// An sRGB colour with straight (non-premultiplied) alpha; `"#RRGGBB"` or `"#RRGGBBAA"` in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    /// Red.
    pub r: u8,
    /// Green.
    pub g: u8,
    /// Blue.
    pub b: u8,
    /// Alpha (255 = opaque).
    pub a: u8,
}

impl Color {
    /// WCAG 2 relative luminance of the colour (alpha ignored).
    pub fn luminance(&self) -> f64 {
        fn lin(c: u8) -> f64 {
            let c = f64::from(c) / 255.0;
            if c <= 0.040_45 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        }
        0.2126 * lin(self.r) + 0.7152 * lin(self.g) + 0.0722 * lin(self.b)
    }

    /// WCAG 2 contrast ratio between two colours (1.0 ..= 21.0, alpha ignored).
    pub fn contrast(&self, other: &Color) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        (a.max(b) + 0.05) / (a.min(b) + 0.05)
    }
}

impl FromStr for Color {
    type Err = String;

    fn from_str(s: &str) -> Result<Color, String> {
        let bad = || format!("invalid colour {s:?}: expected \"#RRGGBB\" or \"#RRGGBBAA\"");
        let hex = s.strip_prefix('#').ok_or_else(bad)?;
        if !(hex.len() == 6 || hex.len() == 8) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        // All ASCII hex digits, so slicing by byte is safe.
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad());
        Ok(Color {
            r: byte(0)?,
            g: byte(2)?,
            b: byte(4)?,
            a: if hex.len() == 8 { byte(6)? } else { 255 },
        })
    }
}

impl fmt::Display for Color {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02X}{:02X}{:02X}", self.r, self.g, self.b)?;
        if self.a != 255 {
            write!(f, "{:02X}", self.a)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Color {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Color, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Minimum WCAG contrast between the "Sponsored" text and its pill (the AA level for normal text).
pub const MIN_LABEL_CONTRAST: f64 = 4.5;

/// `Ok` when `v` is in `lo..=hi` (`lo_open`: strictly above `lo`); NaN is refused.
fn range(field: &str, v: f32, lo: f32, lo_open: bool, hi: f32, what: &str) -> Result<(), String> {
    let above = if lo_open { v > lo } else { v >= lo };
    if above && v <= hi {
        Ok(())
    } else {
        let op = if lo_open { ">" } else { ">=" };
        Err(format!(
            "{field}: must be {op} {lo} and <= {hi} ({what}), got {v}"
        ))
    }
}

impl TagStyle {
    /// TOML text -> validated style. The message names the offending field (and its line).
    pub fn parse(text: &str) -> Result<TagStyle, String> {
        let style: TagStyle = toml::from_str(text).map_err(|e| toml_message(text, &e))?;
        style.validate()?;
        Ok(style)
    }

    /// Checks every value is in a range that gives a legible card; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        const W: &str = "a fraction of the card width";
        range("corner_radius", self.corner_radius, 0.0, false, 0.5, W)?;
        range("padding", self.padding, 0.0, false, 0.2, W)?;
        range("title_size", self.title_size, 0.0, true, 0.2, W)?;
        range("price_size", self.price_size, 0.0, true, 0.25, W)?;
        range("label_size", self.label_size, 0.0, true, 0.15, W)?;
        range("image_size", self.image_size, 0.0, true, 0.6, W)?;
        // The text column right of the image must keep a usable width.
        let column = 1.0 - self.image_size - 3.0 * self.padding;
        if column < 0.25 {
            return Err(format!(
                "image_size: with padding {} the text column is only {column:.3} of the card \
                 width; make image_size + 3 * padding <= 0.75",
                self.padding
            ));
        }
        range(
            "default_width",
            self.default_width,
            0.05,
            false,
            1.0,
            "a fraction of the frame width",
        )?;
        if !(48..=4096).contains(&self.min_width_px) {
            return Err(format!(
                "min_width_px: must be 48..=4096 pixels, got {}",
                self.min_width_px
            ));
        }
        if !(1..=4).contains(&self.max_title_lines) {
            return Err(format!(
                "max_title_lines: must be 1..=4, got {}",
                self.max_title_lines
            ));
        }
        if self.fade_ms > 2000 {
            return Err(format!(
                "fade_ms: must be <= 2000 milliseconds, got {}",
                self.fade_ms
            ));
        }
        let m = &self.safe_margins;
        for (name, v) in [
            ("top", m.top),
            ("bottom", m.bottom),
            ("left", m.left),
            ("right", m.right),
        ] {
            range(
                &format!("safe_margins.{name}"),
                v,
                0.0,
                false,
                0.45,
                "a fraction of the frame",
            )?;
        }
        let text = self.sponsored_text.trim();
        if text.is_empty() || text.chars().count() > 40 || text.chars().any(char::is_control) {
            return Err(format!(
                "sponsored_text: must be 1..=40 characters without control characters, got {:?}",
                self.sponsored_text
            ));
        }
        // The disclosure must be readable on any video: an opaque pill with AA contrast.
        for (name, c) in [
            ("label_color", self.label_color),
            ("label_background", self.label_background),
        ] {
            if c.a != 255 {
                return Err(format!(
                    "{name}: must be opaque (the disclosure must stay readable), got {c}"
                ));
            }
        }
        let contrast = self.label_color.contrast(&self.label_background);
        if contrast < MIN_LABEL_CONTRAST {
            return Err(format!(
                "label_color: contrast with label_background is {contrast:.2}:1, needs at least \
                 {MIN_LABEL_CONTRAST}:1 so the disclosure is readable"
            ));
        }
        Ok(())
    }
}

/// One line: "line 3: background: invalid colour ...", naming the `table.key` where known.
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return msg };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match line.split_once('=') {
        Some((key, _)) if !line.starts_with('[') => {
            let key = key.trim();
            let key = table.map_or_else(|| key.to_owned(), |t| format!("{t}.{key}"));
            format!("line {line_no}: {key}: {msg}")
        }
        // A span from the very start is about the whole document (e.g. a missing field).
        _ if start == 0 => msg,
        _ => format!("line {line_no}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../pipelines/tags/default.toml");
    const LIGHT: &str = include_str!("../../pipelines/tags/light.toml");

    #[test]
    fn shipped_styles_parse_and_validate() {
        for text in [DEFAULT, LIGHT] {
            let s = TagStyle::parse(text).expect("shipped style");
            assert_eq!(s.sponsored_text, "Sponsored");
            assert!(s.label_color.contrast(&s.label_background) >= MIN_LABEL_CONTRAST);
        }
        let s = TagStyle::parse(DEFAULT).unwrap();
        assert_eq!(s.fade_ms, 250);
        assert_eq!(
            s.background,
            Color {
                r: 0x11,
                g: 0x11,
                b: 0x11,
                a: 0xE0
            }
        );
    }

    #[test]
    fn colour_forms() {
        assert_eq!(
            "#FF8000".parse::<Color>(),
            Ok(Color {
                r: 255,
                g: 128,
                b: 0,
                a: 255
            })
        );
        assert_eq!(
            "#ff800080".parse::<Color>(),
            Ok(Color {
                r: 255,
                g: 128,
                b: 0,
                a: 128
            })
        );
        for bad in ["FF8000", "#FF80", "#GG8000", "#FF80001", "#ＦＦ8000", ""] {
            assert!(bad.parse::<Color>().is_err(), "{bad}");
        }
        assert_eq!(
            Color {
                r: 1,
                g: 2,
                b: 255,
                a: 255
            }
            .to_string(),
            "#0102FF"
        );
        let white = Color {
            r: 255,
            g: 255,
            b: 255,
            a: 255,
        };
        let black = Color {
            r: 0,
            g: 0,
            b: 0,
            a: 255,
        };
        assert!((white.contrast(&black) - 21.0).abs() < 1e-9);
    }

    fn with(key: &str, value: &str) -> String {
        DEFAULT
            .lines()
            .map(|l| {
                if l.split('=').next().map(str::trim) == Some(key) {
                    format!("{key} = {value}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn bad_colour_names_the_field() {
        let e = TagStyle::parse(&with("background", "\"#12345\"")).unwrap_err();
        assert!(
            e.contains("background") && e.contains("invalid colour"),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = TagStyle::parse(&format!("fade_msec = 1\n{DEFAULT}")).unwrap_err();
        assert!(e.starts_with("line 1: fade_msec: unknown field"), "{e}");
        let e = TagStyle::parse(&format!("{DEFAULT}\nmiddle = 0.1\n")).unwrap_err();
        assert!(
            e.contains("safe_margins.middle") && e.contains("unknown field"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        let text: String = DEFAULT
            .lines()
            .filter(|l| !l.starts_with("price_color"))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = TagStyle::parse(&text).unwrap_err();
        assert_eq!(e, "missing field `price_color`");
        let e = TagStyle::parse(&with("min_width_px", "-1")).unwrap_err();
        assert!(e.contains("min_width_px"), "{e}");
        let e = TagStyle::parse(&with("top", "\"high\"")).unwrap_err();
        assert!(e.contains("safe_margins.top"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let e = TagStyle::parse(&with("top", "0.5")).unwrap_err();
        assert!(e.starts_with("safe_margins.top:"), "{e}");
        let e = TagStyle::parse(&with("left", "-0.01")).unwrap_err();
        assert!(e.starts_with("safe_margins.left:"), "{e}");
        let e = TagStyle::parse(&with("title_size", "nan")).unwrap_err();
        assert!(e.starts_with("title_size:"), "{e}");
        let e = TagStyle::parse(&with("max_title_lines", "0")).unwrap_err();
        assert!(e.starts_with("max_title_lines:"), "{e}");
        let e = TagStyle::parse(&with("fade_ms", "2500")).unwrap_err();
        assert!(e.starts_with("fade_ms:"), "{e}");
        let e = TagStyle::parse(&with("image_size", "0.62")).unwrap_err();
        assert!(e.starts_with("image_size:"), "{e}");
        let e = TagStyle::parse(&with("sponsored_text", "\"  \"")).unwrap_err();
        assert!(e.starts_with("sponsored_text:"), "{e}");
    }

    #[test]
    fn unreadable_disclosure_is_refused() {
        let e = TagStyle::parse(&with("label_background", "\"#EEEEEE\"")).unwrap_err();
        assert!(
            e.starts_with("label_color:") && e.contains("contrast"),
            "{e}"
        );
        let e = TagStyle::parse(&with("label_background", "\"#2563EB80\"")).unwrap_err();
        assert!(
            e.starts_with("label_background:") && e.contains("opaque"),
            "{e}"
        );
    }
}
