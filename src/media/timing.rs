//! A video's frame rate from its frames' timestamps, never from a header field.
//!
//! Containers declare rates that players ignore: a 90 kHz MP4 track whose first
//! sample lasts one tick "declares" 90000 fps, a Matroska track may declare none.
//! What players show is the timestamps, so the nominal rate is taken from them:
//! the mean of the frame durations near the median (robust to a dropped or
//! doubled frame and to millisecond timestamps), snapped to a standard rate when within 1 %. The input is
//! variable-rate when its average rate or its frame durations stray from that.
//! Pure functions, tested without GStreamer.

/// Frame rates a measured rate is snapped to when within [`SNAP_TOLERANCE`].
pub const STANDARD_RATES: &[(i32, i32)] = &[
    (12, 1),
    (15, 1),
    (24000, 1001),
    (24, 1),
    (25, 1),
    (30000, 1001),
    (30, 1),
    (48, 1),
    (50, 1),
    (60000, 1001),
    (60, 1),
    (90, 1),
    (100, 1),
    (120000, 1001),
    (120, 1),
    (240, 1),
];

/// Relative distance within which a measured rate is a standard one.
pub const SNAP_TOLERANCE: f64 = 0.01;
/// A frame duration this far from the median (relative) is irregular.
const IRREGULAR_DURATION: f64 = 0.25;
/// More than this share of irregular durations makes the input variable-rate.
const IRREGULAR_SHARE: f64 = 0.10;

/// What the timestamps of a video's first frames say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTiming {
    /// Frames measured.
    pub frames: usize,
    /// The nominal rate: from the frame durations near the median, snapped.
    pub fps: f64,
    /// Frames per second over the measured span.
    pub mean_fps: f64,
    /// Frame durations vary (a phone's variable rate, dropped frames, a screen
    /// recording): `fps` is the rate most frames run at, not a constant one.
    pub variable: bool,
}

/// The standard rate within [`SNAP_TOLERANCE`] of `fps`, if any.
pub fn snap(fps: f64) -> Option<(i32, i32)> {
    let error = |(n, d): &(i32, i32)| ((fps - f64::from(*n) / f64::from(*d)) / fps).abs();
    STANDARD_RATES
        .iter()
        .min_by(|a, b| error(a).total_cmp(&error(b)))
        .filter(|r| error(r) <= SNAP_TOLERANCE)
        .copied()
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Timing from presentation timestamps in nanoseconds (any order; duplicates,
/// which some demuxers give frames with no timestamp of their own, count once).
/// `None` with fewer than two distinct timestamps.
pub fn measure(pts_ns: &[u64]) -> Option<FrameTiming> {
    let mut pts = pts_ns.to_vec();
    pts.sort_unstable();
    pts.dedup();
    if pts.len() < 2 {
        return None;
    }
    let mut durations: Vec<u64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    durations.sort_unstable();
    let median = durations[durations.len() / 2] as f64 / 1e9;
    if median <= 0.0 {
        return None;
    }
    let span = (pts[pts.len() - 1] - pts[0]) as f64 / 1e9;
    let mean_fps = (pts.len() - 1) as f64 / span;
    let regular: Vec<f64> = durations
        .iter()
        .map(|d| *d as f64 / 1e9)
        .filter(|d| ((d - median) / median).abs() <= IRREGULAR_DURATION)
        .collect();
    // The mean of the regular durations, not the median itself: timestamps in
    // whole milliseconds (Matroska, WebM, FLV) give a 24 fps track durations of
    // 41 and 42 ms, whose median is neither.
    let measured = regular.len() as f64 / regular.iter().sum::<f64>();
    let fps = match snap(measured) {
        Some((n, d)) => f64::from(n) / f64::from(d),
        None => measured,
    };
    let irregular = durations
        .iter()
        .filter(|d| ((**d as f64 / 1e9 - median) / median).abs() > IRREGULAR_DURATION)
        .count();
    let variable = ((mean_fps - fps) / fps).abs() > SNAP_TOLERANCE
        || irregular as f64 > IRREGULAR_SHARE * durations.len() as f64;
    Some(FrameTiming {
        frames: pts.len(),
        fps: round3(fps),
        mean_fps: round3(mean_fps),
        variable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(durations_ns: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut t = 0;
        let mut out = vec![0];
        for d in durations_ns {
            t += d;
            out.push(t);
        }
        out
    }

    #[test]
    fn a_90khz_track_with_irregular_durations_is_about_29_97() {
        // 3003, 3000 and 3006 ticks of 90 kHz, as a handheld camera writes them.
        let ticks = [3003u64, 3000, 3006, 3003, 3003, 3000, 3006, 3003];
        let ns: Vec<u64> = ticks
            .iter()
            .cycle()
            .take(300)
            .map(|t| t * 1_000_000_000 / 90_000)
            .collect();
        let t = measure(&stamps(ns)).unwrap();
        assert_eq!(t.fps, 29.97);
        assert!(!t.variable, "{t:?}");
    }

    #[test]
    fn millisecond_timestamps_of_a_24_fps_track_are_24() {
        // Matroska rounds 41.67 ms to 41 or 42 ms; most durations are 42.
        let pts: Vec<u64> = (0..120u64).map(|i| i * 1000 / 24 * 1_000_000).collect();
        let t = measure(&pts).unwrap();
        assert_eq!(t.fps, 24.0, "{t:?}");
        assert!(!t.variable, "{t:?}");
    }

    #[test]
    fn b_frame_order_and_duplicates_do_not_matter() {
        let mut pts = stamps(std::iter::repeat_n(40_000_000, 50));
        pts.swap(3, 5);
        pts.push(pts[10]);
        let t = measure(&pts).unwrap();
        assert_eq!((t.fps, t.frames, t.variable), (25.0, 51, false));
    }

    #[test]
    fn dropped_frames_make_a_30_fps_phone_clip_variable() {
        // Every fifth frame lasts two: 30 nominal, 25 on average.
        let d = 33_333_333u64;
        let pts = stamps((0..100).map(|i| if i % 5 == 4 { 2 * d } else { d }));
        let t = measure(&pts).unwrap();
        assert_eq!(t.fps, 30.0);
        assert!(t.variable && t.mean_fps < 26.0, "{t:?}");
    }

    #[test]
    fn odd_rates_are_kept_and_one_frame_says_nothing() {
        let t = measure(&stamps(std::iter::repeat_n(1_000_000_000 / 7, 20))).unwrap();
        assert_eq!(t.fps, 7.0);
        assert_eq!(measure(&[5]), None);
        assert_eq!(measure(&[5, 5]), None);
    }

    #[test]
    fn snapping() {
        assert_eq!(snap(29.88), Some((30000, 1001)));
        assert_eq!(snap(59.9), Some((60000, 1001)));
        assert_eq!(snap(27.0), None);
    }
}
