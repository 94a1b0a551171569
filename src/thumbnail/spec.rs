//! What a job asks of stills (`thumbnails`, `storyboard`), presets included, and
//! its validation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::encode::{StillFormat, parse_color};
use super::resize::{Filter, Fit, Size};
use crate::validation::FieldError;

const MAX_TIMES: usize = 32;
const MAX_SIZES: usize = 16;
const MAX_SIDE: u32 = 4096;
const MIN_SIDE: u32 = 16;

/// A time in the video: seconds, a percentage of the duration (`"50%"`), or
/// `"auto"` (the smart poster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TimeSpec {
    Seconds(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    Seconds(f64),
    Percent(f64),
    Auto,
}

impl TimeSpec {
    pub fn parse(&self) -> Result<Time, String> {
        match self {
            TimeSpec::Seconds(s) if s.is_finite() && *s >= 0.0 => Ok(Time::Seconds(*s)),
            TimeSpec::Seconds(_) => Err("seconds must be 0 or more".into()),
            TimeSpec::Text(t) if t == "auto" => Ok(Time::Auto),
            TimeSpec::Text(t) => {
                let p: f64 = t
                    .strip_suffix('%')
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or_else(|| format!("`{t}` is not seconds, a percentage or `auto`"))?;
                if (0.0..=100.0).contains(&p) {
                    Ok(Time::Percent(p))
                } else {
                    Err("percentages go from 0% to 100%".into())
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BoxSpec {
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub fit: Fit,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    pub jpeg: Option<u8>,
    pub webp: Option<u8>,
}

/// `thumbnails`: stills at some times and sizes. Fields left out come from the
/// preset (`default` unless named).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailsSpec {
    /// A preset from `pipelines/thumbnails/` (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Seconds, `"NN%"` or `"auto"`. Ignored for image inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>, example = json!(["auto", 1.0, "50%"]))]
    pub times: Option<Vec<TimeSpec>>,
    /// Output widths (height from the aspect ratio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<u32>>,
    /// Output boxes with a fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boxes: Option<Vec<BoxSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formats: Option<Vec<StillFormat>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualitySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// `#rrggbb` behind transparent pixels in JPEGs (default white).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
}

/// `storyboard`: tiles every `interval_s` in sprite sheets, with a WebVTT index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoryboardSpec {
    pub interval_s: f64,
    #[serde(default = "default_tile_width")]
    pub tile_width: u32,
    #[serde(default = "default_grid")]
    pub columns: u32,
    #[serde(default = "default_grid")]
    pub rows: u32,
    #[serde(default = "default_storyboard_format")]
    pub format: StillFormat,
    #[serde(default = "default_storyboard_quality")]
    pub quality: u8,
}

fn default_tile_width() -> u32 {
    160
}
fn default_grid() -> u32 {
    10
}
fn default_storyboard_format() -> StillFormat {
    StillFormat::Jpeg
}
fn default_storyboard_quality() -> u8 {
    75
}

/// Stills settings with the preset applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub times: Vec<Time>,
    pub sizes: Vec<Size>,
    pub formats: Vec<StillFormat>,
    pub jpeg_quality: u8,
    pub webp_quality: u8,
    pub filter: Filter,
    pub background: [u8; 3],
}

impl ThumbnailsSpec {
    /// Fills what the job left out from `preset`.
    pub fn with_preset(&self, preset: &ThumbnailsSpec) -> ThumbnailsSpec {
        ThumbnailsSpec {
            preset: None,
            times: self.times.clone().or_else(|| preset.times.clone()),
            // Sizes come as a set: widths and boxes from the job, or both from the preset.
            widths: if self.widths.is_some() || self.boxes.is_some() {
                self.widths.clone()
            } else {
                preset.widths.clone()
            },
            boxes: if self.widths.is_some() || self.boxes.is_some() {
                self.boxes.clone()
            } else {
                preset.boxes.clone()
            },
            formats: self.formats.clone().or_else(|| preset.formats.clone()),
            quality: Some(QualitySpec {
                jpeg: self
                    .quality
                    .as_ref()
                    .and_then(|q| q.jpeg)
                    .or_else(|| preset.quality.as_ref().and_then(|q| q.jpeg)),
                webp: self
                    .quality
                    .as_ref()
                    .and_then(|q| q.webp)
                    .or_else(|| preset.quality.as_ref().and_then(|q| q.webp)),
            }),
            filter: self.filter.or(preset.filter),
            background: self
                .background
                .clone()
                .or_else(|| preset.background.clone()),
        }
    }

    /// Checks the merged spec; `prefix` is the field path for errors.
    pub fn resolve(&self, prefix: &str, errors: &mut Vec<FieldError>) -> Option<Resolved> {
        let at = |f: &str| format!("{prefix}.{f}");
        let before = errors.len();
        let mut times = Vec::new();
        for (i, t) in self.times.iter().flatten().enumerate() {
            match t.parse() {
                Ok(t) => times.push(t),
                Err(e) => errors.push(FieldError::new(format!("{}[{i}]", at("times")), e)),
            }
        }
        if times.len() > MAX_TIMES {
            errors.push(FieldError::new(
                at("times"),
                format!("at most {MAX_TIMES} times"),
            ));
        }
        let mut sizes = Vec::new();
        for (i, w) in self.widths.iter().flatten().enumerate() {
            if !(MIN_SIDE..=MAX_SIDE).contains(w) {
                errors.push(FieldError::new(
                    format!("{}[{i}]", at("widths")),
                    format!("widths go from {MIN_SIDE} to {MAX_SIDE}"),
                ));
            }
            sizes.push(Size::Width(*w));
        }
        for (i, b) in self.boxes.iter().flatten().enumerate() {
            if !(MIN_SIDE..=MAX_SIDE).contains(&b.width)
                || !(MIN_SIDE..=MAX_SIDE).contains(&b.height)
            {
                errors.push(FieldError::new(
                    format!("{}[{i}]", at("boxes")),
                    format!("box sides go from {MIN_SIDE} to {MAX_SIDE}"),
                ));
            }
            sizes.push(Size::Box {
                width: b.width,
                height: b.height,
                fit: b.fit,
            });
        }
        if sizes.is_empty() {
            errors.push(FieldError::new(
                at("widths"),
                "give at least one width or box",
            ));
        }
        if sizes.len() > MAX_SIZES {
            errors.push(FieldError::new(
                at("widths"),
                format!("at most {MAX_SIZES} sizes"),
            ));
        }
        sizes.dedup();
        let mut formats = self.formats.clone().unwrap_or_default();
        formats.dedup();
        if formats.is_empty() {
            errors.push(FieldError::new(
                at("formats"),
                "give at least one of `jpeg`, `webp`",
            ));
        }
        let quality = self.quality.clone().unwrap_or_default();
        for (name, q) in [("jpeg", quality.jpeg), ("webp", quality.webp)] {
            if q.is_some_and(|q| !(1..=100).contains(&q)) {
                errors.push(FieldError::new(
                    format!("{}.{name}", at("quality")),
                    "1 to 100",
                ));
            }
        }
        let background = match &self.background {
            None => super::encode::DEFAULT_BACKGROUND,
            Some(c) => parse_color(c).unwrap_or_else(|| {
                errors.push(FieldError::new(at("background"), "a colour as `#rrggbb`"));
                super::encode::DEFAULT_BACKGROUND
            }),
        };
        (errors.len() == before).then(|| Resolved {
            times,
            sizes,
            formats,
            jpeg_quality: quality.jpeg.unwrap_or(82),
            webp_quality: quality.webp.unwrap_or(80),
            filter: self.filter.unwrap_or_default(),
            background,
        })
    }
}

impl StoryboardSpec {
    pub fn validate(&self, prefix: &str, errors: &mut Vec<FieldError>) {
        let at = |f: &str| format!("{prefix}.{f}");
        if !(self.interval_s.is_finite() && (0.25..=600.0).contains(&self.interval_s)) {
            errors.push(FieldError::new(at("interval_s"), "0.25 to 600 seconds"));
        }
        if !(32..=640).contains(&self.tile_width) {
            errors.push(FieldError::new(at("tile_width"), "32 to 640 pixels"));
        }
        for (name, v) in [("columns", self.columns), ("rows", self.rows)] {
            if !(1..=20).contains(&v) {
                errors.push(FieldError::new(at(name), "1 to 20"));
            }
        }
        if !(1..=100).contains(&self.quality) {
            errors.push(FieldError::new(at("quality"), "1 to 100"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_parse() {
        let t: Vec<TimeSpec> =
            serde_json::from_value(json!(["auto", 1.5, "50%", "x", -1.0, "120%"])).unwrap();
        let parsed: Vec<_> = t.iter().map(|t| t.parse()).collect();
        assert_eq!(parsed[0], Ok(Time::Auto));
        assert_eq!(parsed[1], Ok(Time::Seconds(1.5)));
        assert_eq!(parsed[2], Ok(Time::Percent(50.0)));
        assert!(parsed[3].is_err() && parsed[4].is_err() && parsed[5].is_err());
    }

    #[test]
    fn preset_fills_what_the_job_leaves_out() {
        let presets = crate::presets::Presets::builtin().unwrap();
        let preset = presets.thumbnails("default").unwrap();
        let job: ThumbnailsSpec = serde_json::from_value(
            json!({"times": [2.0], "formats": ["webp"], "quality": {"webp": 60}}),
        )
        .unwrap();
        let merged = job.with_preset(preset);
        let mut errors = Vec::new();
        let r = merged.resolve("thumbnails", &mut errors).unwrap();
        assert_eq!(r.times, [Time::Seconds(2.0)]);
        assert_eq!(
            r.sizes,
            [Size::Width(320), Size::Width(640), Size::Width(1280)]
        );
        assert_eq!(r.formats, [StillFormat::Webp]);
        assert_eq!((r.jpeg_quality, r.webp_quality), (82, 60));
    }

    #[test]
    fn errors_name_fields() {
        let job: ThumbnailsSpec = serde_json::from_value(json!({
            "times": ["soon"], "widths": [8], "formats": [], "background": "blue"
        }))
        .unwrap();
        let mut errors = Vec::new();
        assert!(job.resolve("thumbnails", &mut errors).is_none());
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "thumbnails.times[0]",
                "thumbnails.widths[0]",
                "thumbnails.formats",
                "thumbnails.background"
            ]
        );
    }
}
