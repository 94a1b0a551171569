//! Live profiles (`pipelines/live/*.toml`): how a live stream is cut and kept.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{PresetError, invalid};

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
}

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
        assert_eq!(p.max_segment_ticks(), Some(270_000));
        assert_eq!(p.target_s(), 2);
        assert_eq!(p.window, 6);
        assert!(p.poster_interval().is_some());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let base = include_str!("../../pipelines/live/default.toml");
        for (from, to) in [
            ("segment_s = 2.0", "segment_s = 0.1"),
            ("window = 6", "window = 2"),
            ("max_segment_s = 3.0", "max_segment_s = 1.0"),
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
