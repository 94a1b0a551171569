//! Encoding stills: JPEG (`jpeg-encoder`, SIMD) and lossy WebP (libwebp). Nothing
//! but pixels is written: no EXIF, GPS, XMP, ICC or maker data.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StillFormat {
    Jpeg,
    Webp,
}

impl StillFormat {
    pub fn extension(self) -> &'static str {
        match self {
            StillFormat::Jpeg => "jpg",
            StillFormat::Webp => "webp",
        }
    }
}

/// Background for transparent pixels in formats without alpha (JPEG).
pub const DEFAULT_BACKGROUND: [u8; 3] = [255, 255, 255];

/// Encodes RGB (`channels` 3) or RGBA (4) pixels. JPEG flattens alpha onto
/// `background`; WebP keeps it.
pub fn encode(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    format: StillFormat,
    quality: u8,
    background: [u8; 3],
) -> Result<Vec<u8>, String> {
    match format {
        StillFormat::Jpeg => {
            let flat;
            let rgb: &[u8] = if channels == 4 {
                flat = flatten(pixels, background);
                &flat
            } else {
                pixels
            };
            let (w, h) = (
                u16::try_from(width).map_err(|_| "JPEG is limited to 65535 pixels".to_string())?,
                u16::try_from(height).map_err(|_| "JPEG is limited to 65535 pixels".to_string())?,
            );
            let mut out = Vec::with_capacity(rgb.len() / 8);
            jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
                .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
                .map_err(|e| format!("JPEG: {e}"))?;
            Ok(out)
        }
        StillFormat::Webp => {
            let encoder = match channels {
                4 => webp::Encoder::from_rgba(pixels, width, height),
                _ => webp::Encoder::from_rgb(pixels, width, height),
            };
            Ok(encoder.encode(f32::from(quality.clamp(1, 100))).to_vec())
        }
    }
}

/// RGBA over an opaque background, as RGB.
pub fn flatten(rgba: &[u8], background: [u8; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        for c in 0..3 {
            let v = (u32::from(px[c]) * a + u32::from(background[c]) * (255 - a) + 127) / 255;
            out.push(v as u8);
        }
    }
    out
}

/// `#rrggbb` to RGB.
pub fn parse_color(text: &str) -> Option<[u8; 3]> {
    let hex = text.strip_prefix('#')?;
    if hex.len() != 6 {
        return None;
    }
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_and_webp_decode_back() {
        let (w, h) = (32u32, 24u32);
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % 256) as u8, 100, 200])
            .collect();
        let jpeg = encode(&rgb, w, h, 3, StillFormat::Jpeg, 85, DEFAULT_BACKGROUND).unwrap();
        let img = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((img.width(), img.height()), (w, h));
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        // No APP1 (EXIF/XMP) segment is written.
        assert!(!jpeg.windows(2).any(|m| m == [0xFF, 0xE1]));
        let webp = encode(&rgb, w, h, 3, StillFormat::Webp, 80, DEFAULT_BACKGROUND).unwrap();
        assert_eq!(&webp[..4], b"RIFF");
        let img = image::load_from_memory(&webp).unwrap();
        assert_eq!((img.width(), img.height()), (w, h));
    }

    #[test]
    fn alpha_is_flattened_for_jpeg() {
        let rgba = [255u8, 0, 0, 0, 255, 0, 0, 255, 0, 0, 255, 128];
        assert_eq!(
            flatten(&rgba, [255, 255, 255]),
            [255, 255, 255, 255, 0, 0, 127, 127, 255]
        );
    }

    #[test]
    fn colours() {
        assert_eq!(parse_color("#10ff00"), Some([16, 255, 0]));
        assert_eq!(parse_color("red"), None);
    }
}
