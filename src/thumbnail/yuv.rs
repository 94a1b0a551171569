//! Video frames to RGB stills: the Y, U and V planes are resized separately on the
//! SIMD path at the output size, and only the small result is converted to RGB.

use super::frames::Frame;
use super::resize::{Filter, Geometry, resize};

/// Resizes `frame` (I420) to `geometry` and converts the result to RGB.
pub fn frame_to_rgb(frame: &Frame, geometry: &Geometry, filter: Filter) -> Result<Vec<u8>, String> {
    let (w, h) = (geometry.width, geometry.height);
    let y = resize(&frame.y, frame.width, frame.height, 1, geometry, filter)?;
    let (cw, ch) = (frame.width.div_ceil(2), frame.height.div_ceil(2));
    let (x0, y0, cwid, chei) = geometry.crop;
    let chroma = Geometry {
        crop: (x0 / 2.0, y0 / 2.0, cwid / 2.0, chei / 2.0),
        width: w.div_ceil(2),
        height: h.div_ceil(2),
    };
    let u = resize(&frame.u, cw, ch, 1, &chroma, filter)?;
    let v = resize(&frame.v, cw, ch, 1, &chroma, filter)?;
    Ok(i420_to_rgb(&y, &u, &v, w, h, frame.bt601, frame.full_range))
}

/// I420 planes to interleaved RGB (chroma upsampled by nearest neighbour).
pub fn i420_to_rgb(
    y: &[u8],
    u: &[u8],
    v: &[u8],
    width: u32,
    height: u32,
    bt601: bool,
    full_range: bool,
) -> Vec<u8> {
    // Fixed point, 2^16 scale.
    let (kr, kb) = if bt601 {
        (0.299, 0.114)
    } else {
        (0.2126, 0.0722)
    };
    let kg = 1.0 - kr - kb;
    let (ys, cs, y_off) = if full_range {
        (1.0, 1.0, 0.0)
    } else {
        (255.0 / 219.0, 255.0 / 224.0, 16.0)
    };
    let f = |x: f64| (x * 65536.0).round() as i32;
    let y_mul = f(ys);
    let r_v = f(2.0 * (1.0 - kr) * cs);
    let g_u = f(2.0 * (1.0 - kb) * kb / kg * cs);
    let g_v = f(2.0 * (1.0 - kr) * kr / kg * cs);
    let b_u = f(2.0 * (1.0 - kb) * cs);
    let y_off = y_off as i32;
    let (w, h) = (width as usize, height as usize);
    let cw = w.div_ceil(2);
    let mut out = Vec::with_capacity(w * h * 3);
    let clamp = |v: i32| ((v + 32768) >> 16).clamp(0, 255) as u8;
    for row in 0..h {
        let crow = (row / 2) * cw;
        for col in 0..w {
            let yy = (i32::from(y[row * w + col]) - y_off) * y_mul;
            let cu = i32::from(u[crow + col / 2]) - 128;
            let cv = i32::from(v[crow + col / 2]) - 128;
            out.push(clamp(yy + r_v * cv));
            out.push(clamp(yy - g_u * cu - g_v * cv));
            out.push(clamp(yy + b_u * cu));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_range_white_black_and_red() {
        // BT.709 video range: white (235,128,128), black (16,128,128),
        // red (63,102,240).
        let rgb = i420_to_rgb(&[235, 16], &[128], &[128], 2, 1, false, false);
        assert_eq!(rgb, [255, 255, 255, 0, 0, 0]);
        let red = i420_to_rgb(&[63, 63], &[102], &[240], 2, 1, false, false);
        assert!(red[0] > 250 && red[1] < 5 && red[2] < 5, "{red:?}");
    }
}
