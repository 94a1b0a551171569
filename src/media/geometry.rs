//! How a video is shown, the way players agree on it (FFmpeg's
//! `av_guess_sample_aspect_ratio`, which Chromium's demuxer follows, and
//! FFmpeg's and Chromium's reading of the display matrix):
//!
//! 1. Pixel aspect: the container's (`pasp` in MP4/MOV, the display size in
//!    Matroska/WebM) when it has one, else the codec's (H.264/HEVC VUI), else
//!    square. An MP4 track header's presentation size is not a pixel aspect: it
//!    is reported, never used.
//! 2. Display size: the picture's width scaled by the pixel aspect, then turned
//!    by the display rotation.
//! 3. Rotation and mirroring: from the MP4 display matrix (the eight axis-aligned
//!    ones; any other matrix is shown unturned, as players do), else from the
//!    container's orientation tag.
//!
//! Pure functions, tested without GStreamer.

use super::isobmff::{MatrixSigns, gcd};

/// How to show the picture: turn it this many degrees clockwise, then mirror it
/// left to right when `flipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    pub rotation: u32,
    pub flipped: bool,
}

/// The turn an MP4 display matrix `[a b; c d]` asks for (points map as
/// `x' = a x + c y`, `y' = b x + d y`), for the eight axis-aligned matrices.
pub fn turn_of_matrix((a, b, c, d): MatrixSigns) -> Option<Turn> {
    let (rotation, flipped) = match (a, b, c, d) {
        (1, 0, 0, 1) => (0, false),
        (0, 1, -1, 0) => (90, false),
        (-1, 0, 0, -1) => (180, false),
        (0, -1, 1, 0) => (270, false),
        (-1, 0, 0, 1) => (0, true),
        // Turned 90 degrees clockwise, then mirrored: the transpose.
        (0, 1, 1, 0) => (90, true),
        (1, 0, 0, -1) => (180, true),
        (0, -1, -1, 0) => (270, true),
        _ => return None,
    };
    Some(Turn { rotation, flipped })
}

/// A pixel aspect reduced, or `None` when either side is zero.
pub fn reduced((n, d): (u32, u32)) -> Option<(u32, u32)> {
    (n > 0 && d > 0).then(|| (n / gcd(n, d), d / gcd(n, d)))
}

/// The pixel aspect players use: the container's, else the codec's, else 1:1.
pub fn pixel_aspect(container: Option<(u32, u32)>, codec: Option<(u32, u32)>) -> (u32, u32) {
    container
        .and_then(reduced)
        .or_else(|| codec.and_then(reduced))
        .unwrap_or((1, 1))
}

/// Width and height as shown: `width` scaled by `par`, then turned.
pub fn display_size(width: u32, height: u32, par: (u32, u32), rotation: u32) -> (u32, u32) {
    let shown = (f64::from(width) * f64::from(par.0) / f64::from(par.1)).round() as u32;
    if rotation == 90 || rotation == 270 {
        (height, shown.max(1))
    } else {
        (shown.max(1), height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices() {
        let turn = |m| turn_of_matrix(m).map(|t| (t.rotation, t.flipped));
        assert_eq!(turn((1, 0, 0, 1)), Some((0, false)));
        // A phone held upright.
        assert_eq!(turn((0, 1, -1, 0)), Some((90, false)));
        assert_eq!(turn((0, -1, 1, 0)), Some((270, false)));
        assert_eq!(turn((-1, 0, 0, -1)), Some((180, false)));
        // androidx/media's sample_rotate_and_reflect.mp4.
        assert_eq!(turn((0, 1, 1, 0)), Some((90, true)));
        assert_eq!(turn((-1, 0, 0, 1)), Some((0, true)));
        assert_eq!(turn((1, 1, 0, 1)), None);
    }

    #[test]
    fn the_container_wins_then_the_codec() {
        assert_eq!(pixel_aspect(Some((64, 48)), Some((2, 1))), (4, 3));
        assert_eq!(pixel_aspect(Some((1, 1)), Some((64, 45))), (1, 1));
        assert_eq!(pixel_aspect(None, Some((64, 45))), (64, 45));
        assert_eq!(pixel_aspect(Some((0, 1)), None), (1, 1));
        assert_eq!(pixel_aspect(None, None), (1, 1));
    }

    #[test]
    fn display_sizes() {
        assert_eq!(display_size(640, 360, (2, 1), 0), (1280, 360));
        assert_eq!(display_size(800, 640, (64, 45), 0), (1138, 640));
        assert_eq!(display_size(1920, 1080, (1, 1), 90), (1080, 1920));
        assert_eq!(display_size(160, 120, (1, 1), 0), (160, 120));
    }
}
