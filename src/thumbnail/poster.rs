//! Choosing the `auto` poster: candidate frames are scored on their luma (mean,
//! contrast) and sharpness (variance of the Laplacian); black, white, near-uniform
//! (fades, title cards) and blurry frames lose. Deterministic: the same input gives
//! the same poster.

use super::frames::Frame;
use super::resize::{Filter, Geometry, Size, geometry, resize};

/// Frames are scored at this width: enough for blur and contrast, cheap.
const SCORE_WIDTH: u32 = 256;
/// Mean luma (0-255, video range ~16-235) below which a frame is black.
const BLACK_MEAN: f64 = 32.0;
const WHITE_MEAN: f64 = 230.0;
/// Luma standard deviation below which a frame is near-uniform.
const FLAT_STD: f64 = 14.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub mean: f64,
    pub std: f64,
    /// Variance of the Laplacian (higher is sharper).
    pub sharpness: f64,
    /// Not black, white or flat.
    pub usable: bool,
    pub value: f64,
}

/// Scores the luma plane of a frame.
pub fn score(frame: &Frame) -> Score {
    let g: Geometry = geometry(frame.width, frame.height, Size::Width(SCORE_WIDTH));
    let y = resize(&frame.y, frame.width, frame.height, 1, &g, Filter::Bilinear)
        .unwrap_or_else(|_| frame.y.clone());
    let (w, h) = if y.len() == frame.y.len() {
        (frame.width as usize, frame.height as usize)
    } else {
        (g.width as usize, g.height as usize)
    };
    score_luma(&y, w, h)
}

pub fn score_luma(y: &[u8], w: usize, h: usize) -> Score {
    let n = (w * h).max(1) as f64;
    let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = y
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    let mut lap_sum = 0.0;
    let mut lap_sq = 0.0;
    let mut count = 0.0;
    for row in 1..h.saturating_sub(1) {
        for col in 1..w.saturating_sub(1) {
            let c = |r: usize, c: usize| f64::from(y[r * w + c]);
            let l = c(row - 1, col) + c(row + 1, col) + c(row, col - 1) + c(row, col + 1)
                - 4.0 * c(row, col);
            lap_sum += l;
            lap_sq += l * l;
            count += 1.0;
        }
    }
    let sharpness = if count > 0.0 {
        lap_sq / count - (lap_sum / count).powi(2)
    } else {
        0.0
    };
    let usable = mean > BLACK_MEAN && mean < WHITE_MEAN && std > FLAT_STD;
    // Sharp, contrasted, well-exposed frames win; unusable ones only as a last resort.
    let exposure = 1.0 - ((mean - 128.0).abs() / 128.0) * 0.5;
    let value = (1.0 + sharpness).ln() * (std / 64.0).min(1.0) * exposure
        - if usable { 0.0 } else { 1000.0 };
    Score {
        mean,
        std,
        sharpness,
        usable,
        value,
    }
}

/// Index of the best of `scores` (the earliest on ties).
pub fn best(scores: &[Score]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, s) in scores.iter().enumerate() {
        if best.is_none_or(|(_, v)| s.value > v) {
            best = Some((i, s.value));
        }
    }
    best.map(|(i, _)| i)
}

/// Candidate times spread over the video, avoiding its very start and end;
/// inside `preferred` windows when there are any (e.g. shoppable-tag windows).
pub fn candidate_times(duration_s: f64, count: usize, preferred: &[(f64, f64)]) -> Vec<f64> {
    let spread = |from: f64, to: f64, n: usize| -> Vec<f64> {
        (0..n)
            .map(|i| from + (to - from) * (i as f64 + 0.5) / n as f64)
            .collect()
    };
    let windows: Vec<(f64, f64)> = preferred
        .iter()
        .map(|(a, b)| (a.max(0.0), b.min(duration_s)))
        .filter(|(a, b)| b > a)
        .collect();
    if windows.is_empty() {
        return spread(duration_s * 0.05, duration_s * 0.95, count);
    }
    let total: f64 = windows.iter().map(|(a, b)| b - a).sum();
    let mut times = Vec::new();
    for (a, b) in windows {
        let n = ((count as f64 * (b - a) / total).round() as usize).max(1);
        times.extend(spread(a, b, n));
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(v: u8, w: usize, h: usize) -> Vec<u8> {
        vec![v; w * h]
    }

    fn checker(w: usize, h: usize) -> Vec<u8> {
        (0..w * h)
            .map(|i| {
                if ((i % w) / 4 + (i / w) / 4).is_multiple_of(2) {
                    40
                } else {
                    200
                }
            })
            .collect()
    }

    #[test]
    fn black_white_and_flat_frames_lose() {
        let black = score_luma(&flat(16, 64, 36), 64, 36);
        let white = score_luma(&flat(235, 64, 36), 64, 36);
        let grey = score_luma(&flat(120, 64, 36), 64, 36);
        let detail = score_luma(&checker(64, 36), 64, 36);
        assert!(!black.usable && !white.usable && !grey.usable);
        assert!(detail.usable);
        assert_eq!(best(&[black, grey, detail, white]), Some(2));
    }

    #[test]
    fn sharper_wins() {
        let sharp = checker(64, 36);
        // A blurred copy: average of 4x4 blocks (flat inside, so less Laplacian).
        let mut soft = sharp.clone();
        for (i, v) in soft.iter_mut().enumerate() {
            let (x, y) = (i % 64, i / 64);
            *v = if (x / 16 + y / 16).is_multiple_of(2) {
                100
            } else {
                140
            };
        }
        let a = score_luma(&sharp, 64, 36);
        let b = score_luma(&soft, 64, 36);
        assert!(a.value > b.value);
    }

    #[test]
    fn candidates_prefer_windows() {
        let plain = candidate_times(10.0, 4, &[]);
        assert_eq!(plain.len(), 4);
        assert!(plain[0] > 0.4 && plain[3] < 9.6);
        let tagged = candidate_times(10.0, 6, &[(2.0, 4.0)]);
        assert!(tagged.iter().all(|t| (2.0..=4.0).contains(t)), "{tagged:?}");
    }
}
