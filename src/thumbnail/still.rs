//! Still-image inputs (product photos: JPEG, PNG, WebP), decoded to upright sRGB.
//!
//! - Dimensions are read from the header and checked against the limits before any
//!   pixel buffer is allocated, so a pixel flood (a PNG declaring 65536 × 65536) is
//!   refused cheaply.
//! - JPEGs much larger than the largest output are decoded at a reduced scale (IDCT
//!   scaling, as libvips' shrink-on-load does), then resized.
//! - EXIF orientation is applied; ICC profiles (Display P3, Adobe RGB, CMYK press
//!   profiles...) are converted to sRGB, so outputs carry no profile and look right
//!   everywhere; CMYK JPEGs without a profile get the usual inverted-Adobe
//!   conversion.
//! - Only the first frame of an animated WebP or PNG is used.

use std::io::{BufRead, Seek};
use std::path::Path;

use image::{ImageDecoder, ImageFormat};

use super::resize::{Size, geometry};

/// Decoded pixels, upright, sRGB, 3 (RGB) or 4 (RGBA) bytes per pixel.
#[derive(Debug, Clone)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StillError {
    #[error("not an image this node reads (JPEG, PNG, WebP)")]
    NotImage,
    #[error("the image is {width}x{height} ({pixels} pixels); the limit is {limit}")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("the image file is {bytes} bytes; the limit is {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("the image is corrupt or truncated: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, Copy)]
pub struct StillLimits {
    pub max_pixels: u64,
    pub max_bytes: u64,
}

/// The image formats accepted as inputs, from the first bytes.
pub fn sniff(head: &[u8]) -> Option<ImageFormat> {
    match image::guess_format(head).ok()? {
        f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => Some(f),
        _ => None,
    }
}

fn malformed(e: impl std::fmt::Display) -> StillError {
    StillError::Malformed(e.to_string())
}

fn check_pixels(width: u32, height: u32, limits: &StillLimits) -> Result<(), StillError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels || width == 0 || height == 0 {
        return Err(StillError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

/// Loads `path`, refusing it over `limits`. `sizes` are the outputs wanted, which
/// let JPEGs decode at a reduced scale.
pub fn load(path: &Path, limits: &StillLimits, sizes: &[Size]) -> Result<Picture, StillError> {
    let bytes = std::fs::metadata(path).map_err(malformed)?.len();
    if bytes > limits.max_bytes {
        return Err(StillError::TooLarge {
            bytes,
            limit: limits.max_bytes,
        });
    }
    let mut head = [0u8; 32];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(malformed)?;
        f.read(&mut head).map_err(malformed)?
    };
    let format = sniff(&head[..n]).ok_or(StillError::NotImage)?;
    match format {
        ImageFormat::Jpeg => load_jpeg(path, limits, sizes),
        _ => load_other(path, format, limits),
    }
}

/// EXIF orientation (1-8) from a raw EXIF block (TIFF structure).
fn exif_orientation(raw: &[u8]) -> Option<u32> {
    let exif = exif::Reader::new().read_raw(raw.to_vec()).ok()?;
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)?
        .value
        .get_uint(0)
}

fn swaps_axes(orientation: u32) -> bool {
    matches!(orientation, 5..=8)
}

fn load_jpeg(path: &Path, limits: &StillLimits, sizes: &[Size]) -> Result<Picture, StillError> {
    let data = std::fs::read(path).map_err(malformed)?;
    let mut decoder = jpeg_decoder::Decoder::new(&data[..]);
    decoder.read_info().map_err(malformed)?;
    let info = decoder.info().ok_or_else(|| malformed("no frame header"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    check_pixels(w, h, limits)?;
    let orientation = decoder.exif_data().and_then(exif_orientation).unwrap_or(1);
    // The largest output, in the display orientation, then in the coded one.
    let (dw, dh) = if swaps_axes(orientation) {
        (h, w)
    } else {
        (w, h)
    };
    let largest = sizes
        .iter()
        .map(|s| {
            let g = geometry(dw, dh, *s);
            // Output pixels per source pixel: a crop needs the source's full scale.
            let sx = f64::from(g.width) / g.crop.2;
            let sy = f64::from(g.height) / g.crop.3;
            (
                (f64::from(dw) * sx).ceil() as u32,
                (f64::from(dh) * sy).ceil() as u32,
            )
        })
        .fold(None, |acc: Option<(u32, u32)>, (a, b)| {
            Some(acc.map_or((a, b), |(x, y)| (x.max(a), y.max(b))))
        });
    if let Some((tw, th)) = largest {
        let (tw, th) = if swaps_axes(orientation) {
            (th, tw)
        } else {
            (tw, th)
        };
        if tw < w / 2 && th < h / 2 {
            decoder
                .scale(
                    u16::try_from(tw.max(1)).unwrap_or(u16::MAX),
                    u16::try_from(th.max(1)).unwrap_or(u16::MAX),
                )
                .map_err(malformed)?;
        }
    }
    let icc = decoder.icc_profile();
    let pixels = decoder.decode().map_err(malformed)?;
    let info = decoder.info().ok_or_else(|| malformed("no frame header"))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => to_srgb(pixels, 3, icc.as_deref()),
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => cmyk_to_rgb(&pixels, icc.as_deref()),
    };
    let picture = Picture {
        width: w,
        height: h,
        channels: 3,
        data: rgb,
    };
    Ok(orient(picture, orientation))
}

/// PNG and WebP through the `image` crate (which reads their EXIF orientation).
fn load_other(
    path: &Path,
    format: ImageFormat,
    limits: &StillLimits,
) -> Result<Picture, StillError> {
    let reader = std::io::BufReader::new(std::fs::File::open(path).map_err(malformed)?);
    let mut decoder = make_decoder(reader, format)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, limits)?;
    let icc = decoder.icc_profile().ok().flatten();
    let orientation = decoder.orientation().map(|o| o.to_exif()).unwrap_or(1);
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    decoder.set_limits(image_limits).map_err(malformed)?;
    let image = image::DynamicImage::from_decoder(decoder).map_err(malformed)?;
    let picture = if image.color().has_alpha() {
        let rgba = image.into_rgba8();
        let (w, h) = rgba.dimensions();
        Picture {
            width: w,
            height: h,
            channels: 4,
            data: to_srgb(rgba.into_raw(), 4, icc.as_deref()),
        }
    } else {
        let rgb = image.into_rgb8();
        let (w, h) = rgb.dimensions();
        Picture {
            width: w,
            height: h,
            channels: 3,
            data: to_srgb(rgb.into_raw(), 3, icc.as_deref()),
        }
    };
    Ok(orient(picture, orientation as u32))
}

fn make_decoder<R: BufRead + Seek + 'static>(
    reader: R,
    format: ImageFormat,
) -> Result<Box<dyn ImageDecoder>, StillError> {
    Ok(match format {
        ImageFormat::Png => {
            Box::new(image::codecs::png::PngDecoder::new(reader).map_err(malformed)?)
        }
        ImageFormat::WebP => {
            Box::new(image::codecs::webp::WebPDecoder::new(reader).map_err(malformed)?)
        }
        _ => return Err(StillError::NotImage),
    })
}

/// Converts pixels tagged with an ICC profile to sRGB (alpha untouched). Pixels
/// without a profile, or with one that cannot be read, are taken as sRGB.
fn to_srgb(mut pixels: Vec<u8>, channels: u8, icc: Option<&[u8]>) -> Vec<u8> {
    let Some(profile) = icc.and_then(|icc| moxcms::ColorProfile::new_from_slice(icc).ok()) else {
        return pixels;
    };
    if profile.color_space != moxcms::DataColorSpace::Rgb {
        return pixels;
    }
    let layout = if channels == 4 {
        moxcms::Layout::Rgba
    } else {
        moxcms::Layout::Rgb
    };
    let srgb = moxcms::ColorProfile::new_srgb();
    let Ok(transform) =
        profile.create_transform_8bit(layout, &srgb, layout, moxcms::TransformOptions::default())
    else {
        return pixels;
    };
    let mut out = vec![0u8; pixels.len()];
    if transform.transform(&pixels, &mut out).is_ok() {
        pixels = out;
    }
    pixels
}

/// CMYK (ink amounts, 0 = none, as the decoder returns them, Adobe's inverted
/// storage already undone) to sRGB: through the embedded press profile when there
/// is one, otherwise the naive conversion.
fn cmyk_to_rgb(cmyk: &[u8], icc: Option<&[u8]>) -> Vec<u8> {
    let pixels = cmyk.len() / 4;
    if let Some(profile) = icc.and_then(|icc| moxcms::ColorProfile::new_from_slice(icc).ok())
        && profile.color_space == moxcms::DataColorSpace::Cmyk
        && let Ok(transform) = profile.create_transform_8bit(
            moxcms::Layout::Rgba,
            &moxcms::ColorProfile::new_srgb(),
            moxcms::Layout::Rgb,
            moxcms::TransformOptions::default(),
        )
    {
        let mut rgb = vec![0u8; pixels * 3];
        if transform.transform(cmyk, &mut rgb).is_ok() {
            return rgb;
        }
    }
    let mut rgb = Vec::with_capacity(pixels * 3);
    for px in cmyk.chunks_exact(4) {
        let k = 255 - u32::from(px[3]);
        for c in &px[..3] {
            rgb.push((((255 - u32::from(*c)) * k + 127) / 255) as u8);
        }
    }
    rgb
}

/// Applies an EXIF orientation (1-8) to the pixels.
pub fn orient(picture: Picture, orientation: u32) -> Picture {
    if orientation <= 1 || orientation > 8 {
        return picture;
    }
    let Picture {
        width,
        height,
        channels,
        data,
    } = picture;
    let c = channels as usize;
    let (w, h) = (width as usize, height as usize);
    let (ow, oh) = if swaps_axes(orientation) {
        (h, w)
    } else {
        (w, h)
    };
    let mut out = vec![0u8; data.len()];
    for y in 0..h {
        for x in 0..w {
            // Where source pixel (x, y) lands (EXIF orientation semantics).
            let (nx, ny) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (h - 1 - y, x),
                7 => (h - 1 - y, w - 1 - x),
                8 => (y, w - 1 - x),
                _ => (x, y),
            };
            let src = (y * w + x) * c;
            let dst = (ny * ow + nx) * c;
            out[dst..dst + c].copy_from_slice(&data[src..src + c]);
        }
    }
    Picture {
        width: ow as u32,
        height: oh as u32,
        channels,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pic(w: u32, h: u32) -> Picture {
        // Each pixel's red channel holds its index.
        Picture {
            width: w,
            height: h,
            channels: 3,
            data: (0..w * h).flat_map(|i| [i as u8, 0, 0]).collect(),
        }
    }

    #[test]
    fn orientation_6_turns_clockwise() {
        // 3x2:  0 1 2      after 90° clockwise (2x3):  3 0
        //       3 4 5                                    4 1
        //                                                5 2
        let out = orient(pic(3, 2), 6);
        assert_eq!((out.width, out.height), (2, 3));
        let reds: Vec<u8> = out.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(reds, [3, 0, 4, 1, 5, 2]);
    }

    #[test]
    fn orientation_8_turns_counter_clockwise_and_3_half_turn() {
        let out = orient(pic(3, 2), 8);
        let reds: Vec<u8> = out.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(reds, [2, 5, 1, 4, 0, 3]);
        let out = orient(pic(3, 2), 3);
        let reds: Vec<u8> = out.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(reds, [5, 4, 3, 2, 1, 0]);
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn pixel_floods_are_refused_from_the_header() {
        let limits = StillLimits {
            max_pixels: 100_000_000,
            max_bytes: 1 << 30,
        };
        // Valid headers declaring 65536 x 65536 (PNG) and 60000 x 60000 (JPEG),
        // with next to no data behind them.
        for name in ["flood-65536x65536.png", "oversize-60000x60000.jpg"] {
            let err = load(&fixture(name), &limits, &[]).unwrap_err();
            assert!(
                matches!(err, StillError::TooManyPixels { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn files_over_the_byte_limit_are_refused_before_decoding() {
        let limits = StillLimits {
            max_pixels: 100_000_000,
            max_bytes: 1000,
        };
        let err = load(&fixture("oversize-60000x60000.jpg"), &limits, &[]).unwrap_err();
        assert!(matches!(err, StillError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn text_is_not_an_image() {
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0\x00\x10JFIF"),
            Some(ImageFormat::Jpeg)
        );
    }
}
