//! Encoding ladders (`pipelines/ladders/*.toml`).

use serde::{Deserialize, Serialize};

use super::{PresetError, invalid};

const X264_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];

const H264_LEVELS: &[&str] = &[
    "1", "1b", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "3", "3.0", "3.1", "3.2", "4", "4.0", "4.1",
    "4.2", "5", "5.0", "5.1", "5.2",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum H264Profile {
    Baseline,
    Main,
    High,
}

impl H264Profile {
    /// The profile name GStreamer caps use (`constrained-baseline`: what x264 makes
    /// for baseline, and what every player decodes).
    pub fn caps_name(self) -> &'static str {
        match self {
            H264Profile::Baseline => "constrained-baseline",
            H264Profile::Main => "main",
            H264Profile::High => "high",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rung {
    /// Name jobs use to pick the rung and that output keys carry (`720p`).
    pub name: String,
    /// Target size of the short side in pixels (portrait stays portrait).
    pub short_side: u32,
    pub video_kbps: u32,
    pub profile: H264Profile,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioPreset {
    pub bitrate_kbps: u32,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub x264_preset: String,
    pub max_fps: u32,
    pub keyframe_interval_s: f64,
    pub segment_s: f64,
    pub audio: AudioPreset,
    /// Largest first (sorted on load).
    pub rungs: Vec<Rung>,
}

impl Ladder {
    pub fn parse(name: &str, text: &str, source: &str) -> Result<Ladder, PresetError> {
        let mut ladder: Ladder =
            toml::from_str(text).map_err(|e| invalid(source, e.message().to_string()))?;
        ladder.name = name.to_string();
        ladder
            .rungs
            .sort_by_key(|r| std::cmp::Reverse(r.short_side));
        ladder.validate().map_err(|m| invalid(source, m))?;
        Ok(ladder)
    }

    fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "ladder name `{}` must be 1-32 of a-z, 0-9, '-' and '_'",
                self.name
            ));
        }
        check_x264_preset(&self.x264_preset)?;
        if !(1..=120).contains(&self.max_fps) {
            return Err("max_fps must be between 1 and 120".into());
        }
        if !(0.5..=10.0).contains(&self.keyframe_interval_s) {
            return Err("keyframe_interval_s must be between 0.5 and 10".into());
        }
        let ratio = self.segment_s / self.keyframe_interval_s;
        if !(1.0..=20.0).contains(&self.segment_s) || (ratio - ratio.round()).abs() > 1e-6 {
            return Err("segment_s must be 1-20 s and a whole number of keyframe intervals".into());
        }
        let a = &self.audio;
        if !(16..=512).contains(&a.bitrate_kbps) {
            return Err("audio.bitrate_kbps must be between 16 and 512".into());
        }
        if ![22050, 24000, 32000, 44100, 48000].contains(&a.sample_rate) {
            return Err("audio.sample_rate must be 22050, 24000, 32000, 44100 or 48000".into());
        }
        if !(1..=2).contains(&a.channels) {
            return Err("audio.channels must be 1 or 2".into());
        }
        if self.rungs.is_empty() {
            return Err("a ladder needs at least one rung".into());
        }
        let mut seen = std::collections::HashSet::new();
        for rung in &self.rungs {
            if !seen.insert(rung.name.as_str()) {
                return Err(format!("rung `{}`: duplicate name", rung.name));
            }
            rung.validate()?;
        }
        Ok(())
    }

    /// Frames between keyframes at `fps`.
    pub fn gop_frames(&self, fps: f64) -> u32 {
        ((self.keyframe_interval_s * fps).round() as u32).max(1)
    }
}

impl Rung {
    /// Checks one rung on its own (names, sizes, rates, level).
    pub(super) fn validate(&self) -> Result<(), String> {
        let at = format!("rung `{}`", self.name);
        if !valid_name(&self.name) {
            return Err(format!("{at}: names are 1-32 of a-z, 0-9, '-' and '_'"));
        }
        if !(64..=4320).contains(&self.short_side) || !self.short_side.is_multiple_of(2) {
            return Err(format!("{at}: short_side must be even, 64-4320"));
        }
        if !(50..=100_000).contains(&self.video_kbps) {
            return Err(format!("{at}: video_kbps must be 50-100000"));
        }
        if !H264_LEVELS.contains(&self.level.as_str()) {
            return Err(format!(
                "{at}: level `{}` is not an H.264 level",
                self.level
            ));
        }
        Ok(())
    }
}

/// Checks an x264 speed preset name.
pub(super) fn check_x264_preset(preset: &str) -> Result<(), String> {
    if X264_PRESETS.contains(&preset) {
        return Ok(());
    }
    Err(format!(
        "x264_preset `{preset}` is not one of {}",
        X264_PRESETS.join(", ")
    ))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../../pipelines/ladders/default.toml");

    fn parse(text: &str) -> Result<Ladder, String> {
        Ladder::parse("t", text, "test").map_err(|e| e.to_string())
    }

    #[test]
    fn rungs_are_sorted_largest_first() {
        let text = BASE.replace("short_side = 1080", "short_side = 240");
        let ladder = parse(&text).unwrap();
        assert_eq!(ladder.rungs.last().unwrap().short_side, 240);
        assert_eq!(ladder.gop_frames(30.0), 60);
        assert_eq!(ladder.gop_frames(29.97), 60);
    }

    #[test]
    fn invalid_ladders_say_what_is_wrong() {
        let cases = [
            (BASE.replace("veryfast", "warp"), "x264_preset"),
            (
                BASE.replace("segment_s = 4.0", "segment_s = 5.0"),
                "segment_s",
            ),
            (BASE.replace("short_side = 720", "short_side = 721"), "720p"),
            (BASE.replace("level = \"3.1\"", "level = \"9\""), "level"),
            (
                BASE.replace("name = \"480p\"", "name = \"720p\""),
                "duplicate",
            ),
            (BASE.replace("channels = 2", "channels = 6"), "channels"),
            (format!("{BASE}\nextra = 1\n"), "extra"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
