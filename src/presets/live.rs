//! Live profiles (`pipelines/live/*.toml`): how a live stream is cut and kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ladder::{Rung, check_x264_preset};
use super::{PresetError, invalid};

/// Name of the rendition that is the publisher's own stream, relayed as is.
pub const SOURCE_RENDITION: &str = "source";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveProfile {
    #[serde(default)]
    pub description: String,
    /// Target HLS segment duration; segments are cut at the first keyframe at or
    /// after it.
    pub segment_s: f64,
    /// Longest segment when keyframes are further apart; 0: keyframes only.
    #[serde(default)]
    pub max_segment_s: f64,
    /// Segments in the live playlist's sliding window.
    pub window: usize,
    /// How long after a publisher leaves a reconnect continues the same stream.
    pub reconnect_window_s: f64,
    /// A publisher silent for this long is dropped.
    pub idle_timeout_s: f64,
    /// Seconds between live posters; 0 disables them.
    #[serde(default)]
    pub poster_interval_s: f64,
    #[serde(default = "default_poster_width")]
    pub poster_width: u32,
    /// Renditions encoded from the stream on this node, next to the source
    /// (which is always relayed as published). None: relay only.
    #[serde(default)]
    pub transcode: Option<LiveTranscode>,
}

/// The small ladder a live profile may add below the source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveTranscode {
    /// x264 speed preset; live needs `veryfast` or faster on most machines.
    #[serde(default = "default_live_x264_preset")]
    pub x264_preset: String,
    /// Largest first. A rung is never larger than the source: one whose short
    /// side exceeds the source's is encoded at the source's size.
    pub rungs: Vec<Rung>,
}

fn default_live_x264_preset() -> String {
    "veryfast".into()
}

/// Rungs a live profile may add (each costs a decode share and an encode).
const MAX_LIVE_RUNGS: usize = 3;

fn default_poster_width() -> u32 {
    640
}

impl LiveProfile {
    pub fn parse(text: &str, source: &str) -> Result<LiveProfile, PresetError> {
        let profile: LiveProfile =
            toml::from_str(text).map_err(|e| invalid(source, e.message().to_string()))?;
        profile.validate().map_err(|m| invalid(source, m))?;
        Ok(profile)
    }

    fn validate(&self) -> Result<(), String> {
        if !(0.5..=10.0).contains(&self.segment_s) {
            return Err("segment_s must be 0.5-10".into());
        }
        if self.max_segment_s != 0.0 && !(self.segment_s..=30.0).contains(&self.max_segment_s) {
            return Err("max_segment_s must be 0 (keyframes only) or segment_s-30".into());
        }
        if !(3..=30).contains(&self.window) {
            return Err("window must be 3-30 segments".into());
        }
        if !(0.0..=600.0).contains(&self.reconnect_window_s) {
            return Err("reconnect_window_s must be 0-600".into());
        }
        if !(1.0..=120.0).contains(&self.idle_timeout_s) {
            return Err("idle_timeout_s must be 1-120".into());
        }
        if !(self.poster_interval_s == 0.0 || (1.0..=3600.0).contains(&self.poster_interval_s)) {
            return Err("poster_interval_s must be 0 (off) or 1-3600".into());
        }
        if !(16..=3840).contains(&self.poster_width) {
            return Err("poster_width must be 16-3840".into());
        }
        if let Some(t) = &self.transcode {
            check_x264_preset(&t.x264_preset)?;
            if t.rungs.is_empty() || t.rungs.len() > MAX_LIVE_RUNGS {
                return Err(format!("transcode needs 1-{MAX_LIVE_RUNGS} rungs"));
            }
            let mut seen = std::collections::HashSet::new();
            for rung in &t.rungs {
                if rung.name == SOURCE_RENDITION || !seen.insert(rung.name.as_str()) {
                    return Err(format!(
                        "rung `{}`: duplicate name (`{SOURCE_RENDITION}` is the published stream)",
                        rung.name
                    ));
                }
                rung.validate()?;
            }
        }
        Ok(())
    }

    /// The target duration in 90 kHz ticks (MPEG-TS time).
    pub fn segment_ticks(&self) -> u64 {
        (self.segment_s * 90_000.0).round() as u64
    }

    /// The forced-cut limit in 90 kHz ticks, if any.
    pub fn max_segment_ticks(&self) -> Option<u64> {
        (self.max_segment_s > 0.0).then(|| (self.max_segment_s * 90_000.0).round() as u64)
    }

    /// `EXT-X-TARGETDURATION` to start from (segments may push it up).
    pub fn target_s(&self) -> u64 {
        self.segment_s.ceil() as u64
    }

    pub fn reconnect_window(&self) -> Duration {
        Duration::from_secs_f64(self.reconnect_window_s)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.idle_timeout_s)
    }

    /// Renditions of a stream with this profile: empty when it only relays,
    /// else `source` then the transcoded rungs.
    pub fn renditions(&self) -> Vec<String> {
        match &self.transcode {
            None => Vec::new(),
            Some(t) => std::iter::once(SOURCE_RENDITION.to_string())
                .chain(t.rungs.iter().map(|r| r.name.clone()))
                .collect(),
        }
    }

    pub fn poster_interval(&self) -> Option<Duration> {
        (self.poster_interval_s > 0.0).then(|| Duration::from_secs_f64(self.poster_interval_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_parses() {
        let p = LiveProfile::parse(include_str!("../../pipelines/live/default.toml"), "default")
            .unwrap();
        assert_eq!(p.segment_ticks(), 180_000);
        // Keyframes only: players cannot start on a segment without one.
        assert_eq!(p.max_segment_ticks(), None);
        assert_eq!(p.target_s(), 2);
        assert_eq!(p.window, 6);
        assert!(p.poster_interval().is_some());
        let text = include_str!("../../pipelines/live/default.toml")
            .replace("max_segment_s = 0.0", "max_segment_s = 3.0");
        let forced = LiveProfile::parse(&text, "forced").unwrap();
        assert_eq!(forced.max_segment_ticks(), Some(270_000));
    }

    #[test]
    fn the_ladder_profile_parses_and_names_its_renditions() {
        let p =
            LiveProfile::parse(include_str!("../../pipelines/live/ladder.toml"), "ladder").unwrap();
        assert_eq!(p.renditions(), ["source", "480p", "240p"]);
        let relay_only =
            LiveProfile::parse(include_str!("../../pipelines/live/default.toml"), "d").unwrap();
        assert!(relay_only.renditions().is_empty());
        for (from, to) in [
            ("name = \"240p\"", "name = \"source\""),
            ("name = \"240p\"", "name = \"480p\""),
            ("x264_preset = \"veryfast\"", "x264_preset = \"warp\""),
            ("short_side = 240", "short_side = 241"),
        ] {
            let text = include_str!("../../pipelines/live/ladder.toml").replace(from, to);
            assert!(LiveProfile::parse(&text, "x.toml").is_err(), "{to}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let base = include_str!("../../pipelines/live/default.toml");
        for (from, to) in [
            ("segment_s = 2.0", "segment_s = 0.1"),
            ("window = 6", "window = 2"),
            ("max_segment_s = 0.0", "max_segment_s = 1.0"),
            ("idle_timeout_s = 10.0", "idle_timeout_s = 0.0"),
            ("poster_width = 640", "poster_width = 8"),
        ] {
            let text = base.replace(from, to);
            let err = LiveProfile::parse(&text, "x.toml").unwrap_err().to_string();
            assert!(err.contains("x.toml"), "{err}");
        }
        let err = LiveProfile::parse("segment_s = 2.0\nbogus = 1\n", "y.toml").unwrap_err();
        assert!(err.to_string().contains("y.toml"));
    }
}
