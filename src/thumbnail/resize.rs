//! Output sizes (width, or a box with a fit) and the SIMD resize hot path
//! (`fast_image_resize`, CPU extensions chosen at run time).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a picture goes into a box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Inside the box, aspect kept (the output may be smaller on one side).
    #[default]
    Contain,
    /// Fills the box, aspect kept, the overflow cropped around the centre.
    Cover,
    /// Exactly the box, stretched.
    Fill,
}

/// Resampling filter (presets choose; Lanczos3 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Bilinear,
    Hamming,
    CatmullRom,
    Mitchell,
    #[default]
    Lanczos3,
}

impl Filter {
    fn alg(self) -> ResizeAlg {
        ResizeAlg::Convolution(match self {
            Filter::Bilinear => FilterType::Bilinear,
            Filter::Hamming => FilterType::Hamming,
            Filter::CatmullRom => FilterType::CatmullRom,
            Filter::Mitchell => FilterType::Mitchell,
            Filter::Lanczos3 => FilterType::Lanczos3,
        })
    }
}

/// A requested output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// This wide, height from the aspect ratio.
    Width(u32),
    Box {
        width: u32,
        height: u32,
        fit: Fit,
    },
}

impl Size {
    /// A stable label for keys: `w640`, `640x640-cover`.
    pub fn label(&self) -> String {
        match self {
            Size::Width(w) => format!("w{w}"),
            Size::Box { width, height, fit } => {
                let fit = match fit {
                    Fit::Contain => "contain",
                    Fit::Cover => "cover",
                    Fit::Fill => "fill",
                };
                format!("{width}x{height}-{fit}")
            }
        }
    }
}

/// Region of the source to use, and the output size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub crop: (f64, f64, f64, f64),
    pub width: u32,
    pub height: u32,
}

fn at_least_1(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// Where `size` puts a `src_w` × `src_h` picture. Never upscales (except `fill`,
/// which asks for an exact box).
/// [`geometry`] for a picture whose pixels are not square: sizes and crops are
/// chosen on the shown picture (`src_w * par.0 / par.1` wide), and the crop is
/// mapped back onto the stored pixels.
pub fn geometry_shown(src_w: u32, src_h: u32, par: (u32, u32), size: Size) -> Geometry {
    let (shown_w, shown_h) = crate::media::geometry::display_size(src_w, src_h, par, 0);
    let mut g = geometry(shown_w, shown_h, size);
    let sx = f64::from(src_w) / f64::from(shown_w);
    g.crop.0 *= sx;
    g.crop.2 *= sx;
    g
}

pub fn geometry(src_w: u32, src_h: u32, size: Size) -> Geometry {
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    let full = (0.0, 0.0, sw, sh);
    match size {
        Size::Width(w) => {
            let w = f64::from(w).min(sw);
            Geometry {
                crop: full,
                width: at_least_1(w),
                height: at_least_1(sh * w / sw),
            }
        }
        Size::Box { width, height, fit } => {
            let (bw, bh) = (f64::from(width), f64::from(height));
            match fit {
                Fit::Contain => {
                    let scale = (bw / sw).min(bh / sh).min(1.0);
                    Geometry {
                        crop: full,
                        width: at_least_1(sw * scale),
                        height: at_least_1(sh * scale),
                    }
                }
                Fit::Cover => {
                    // The centred region of the source with the box's aspect.
                    let crop_w = sw.min(sh * bw / bh);
                    let crop_h = sh.min(sw * bh / bw);
                    let scale = (bw / crop_w).min(1.0);
                    Geometry {
                        crop: ((sw - crop_w) / 2.0, (sh - crop_h) / 2.0, crop_w, crop_h),
                        width: at_least_1(crop_w * scale),
                        height: at_least_1(crop_h * scale),
                    }
                }
                Fit::Fill => Geometry {
                    crop: full,
                    width: width.max(1),
                    height: height.max(1),
                },
            }
        }
    }
}

/// Resizes one plane or interleaved picture (`channels` of 1, 3 or 4 bytes per
/// pixel; 4 is RGBA, resized with premultiplied alpha so that transparent pixels
/// do not bleed their colour).
pub fn resize(
    data: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    geometry: &Geometry,
    filter: Filter,
) -> Result<Vec<u8>, String> {
    let pixel_type = match channels {
        1 => PixelType::U8,
        3 => PixelType::U8x3,
        4 => PixelType::U8x4,
        n => return Err(format!("cannot resize {n}-channel pictures")),
    };
    let (x, y, w, h) = geometry.crop;
    if geometry.width == width
        && geometry.height == height
        && x == 0.0
        && y == 0.0
        && w == f64::from(width)
        && h == f64::from(height)
    {
        return Ok(data.to_vec());
    }
    let src = ImageRef::new(width, height, data, pixel_type)
        .map_err(|e| format!("source picture: {e}"))?;
    let mut dst = Image::new(geometry.width, geometry.height, pixel_type);
    let options = ResizeOptions::new()
        .resize_alg(filter.alg())
        .crop(x, y, w, h)
        .use_alpha(channels == 4);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| format!("resize: {e}"))?;
    Ok(dst.into_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_keep_aspect_and_never_upscale() {
        let g = geometry(4000, 3000, Size::Width(640));
        assert_eq!((g.width, g.height), (640, 480));
        let g = geometry(320, 180, Size::Width(1280));
        assert_eq!((g.width, g.height), (320, 180));
    }

    #[test]
    fn boxes() {
        let contain = geometry(
            4000,
            3000,
            Size::Box {
                width: 640,
                height: 640,
                fit: Fit::Contain,
            },
        );
        assert_eq!((contain.width, contain.height), (640, 480));
        let cover = geometry(
            4000,
            3000,
            Size::Box {
                width: 640,
                height: 640,
                fit: Fit::Cover,
            },
        );
        assert_eq!((cover.width, cover.height), (640, 640));
        assert_eq!(cover.crop, (500.0, 0.0, 3000.0, 3000.0));
        let fill = geometry(
            4000,
            3000,
            Size::Box {
                width: 100,
                height: 300,
                fit: Fit::Fill,
            },
        );
        assert_eq!((fill.width, fill.height), (100, 300));
        // A small source in a big cover box: cropped to the aspect, not upscaled.
        let small = geometry(
            300,
            200,
            Size::Box {
                width: 640,
                height: 640,
                fit: Fit::Cover,
            },
        );
        assert_eq!((small.width, small.height), (200, 200));
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(Size::Width(320).label(), "w320");
        assert_eq!(
            Size::Box {
                width: 640,
                height: 480,
                fit: Fit::Cover
            }
            .label(),
            "640x480-cover"
        );
    }

    #[test]
    fn resize_keeps_flat_colours_and_alpha_edges() {
        let (w, h) = (64u32, 48u32);
        let mut rgba = vec![0u8; (w * h * 4) as usize];
        for px in rgba.chunks_mut(4).take((w * h / 2) as usize) {
            px.copy_from_slice(&[200, 10, 10, 255]);
        }
        // The lower half is fully transparent *green*: premultiplied resizing must
        // not tint the red half's edge green.
        for px in rgba.chunks_mut(4).skip((w * h / 2) as usize) {
            px.copy_from_slice(&[0, 255, 0, 0]);
        }
        let g = geometry(w, h, Size::Width(16));
        let out = resize(&rgba, w, h, 4, &g, Filter::Lanczos3).unwrap();
        assert_eq!(out.len(), (16 * 12 * 4) as usize);
        for px in out.chunks(4) {
            if px[3] > 16 {
                assert!(px[1] < 40, "green bled into {px:?}");
            }
        }
    }
}
