//! Burning cards into decoded frames: each card is converted once per
//! rendition to premultiplied 4:2:0 planes (BT.709, limited range, the colours
//! every rendition is encoded in), and blended into the frame's I420 planes
//! only inside its rectangle and only while its window is open, with a linear
//! fade in and out. A buffer probe on each rung's encoder input does it on the
//! streaming thread: pure arithmetic on a few hundred thousand bytes at most,
//! no I/O, no allocation (except a copy of a frame another branch still reads).

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::card::Card;
use super::layout::PixelRect;

/// A card ready to blend: alpha and premultiplied Y per pixel, alpha and
/// premultiplied U, V per chroma sample of the frame's 4:2:0 grid it touches;
/// values 0..=255.
#[derive(Debug, Clone)]
pub struct YuvCard {
    pub rect: PixelRect,
    luma: Vec<[u8; 2]>,
    chroma: Vec<[u8; 3]>,
}

/// BT.709 limited-range Y, Cb, Cr of an sRGB colour, times `alpha` (0..=1),
/// from premultiplied R'G'B' (0..=255) and alpha.
fn premultiplied_yuv(r: f32, g: f32, b: f32, a: f32) -> (f32, f32, f32) {
    // Offsets scale with alpha so that "transparent" adds nothing.
    let y = 16.0 * a + (0.2126 * r + 0.7152 * g + 0.0722 * b) * (219.0 / 255.0);
    let u = 128.0 * a + (-0.1146 * r - 0.3854 * g + 0.5 * b) * (224.0 / 255.0);
    let v = 128.0 * a + (0.5 * r - 0.4542 * g - 0.0458 * b) * (224.0 / 255.0);
    (y, u, v)
}

impl YuvCard {
    /// Converts `card` (premultiplied RGBA) to be drawn at `rect`; `rect`'s size
    /// must be the card's.
    pub fn new(card: &Card, rect: PixelRect) -> YuvCard {
        let (w, h) = (card.width as usize, card.height as usize);
        debug_assert_eq!((rect.w, rect.h), (card.width, card.height));
        let px = |x: usize, y: usize| {
            let i = (y * w + x) * 4;
            let p = &card.rgba[i..i + 4];
            (
                f32::from(p[0]),
                f32::from(p[1]),
                f32::from(p[2]),
                f32::from(p[3]),
            )
        };
        let mut luma = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let (r, g, b, a) = px(x, y);
                let (ly, _, _) = premultiplied_yuv(r, g, b, a / 255.0);
                luma.push([a as u8, ly.round().clamp(0.0, 255.0) as u8]);
            }
        }
        // Chroma cells of the frame's 4:2:0 grid that the card touches: the card
        // may start on an odd pixel, so cells are aligned to the frame, not to
        // the card.
        let (ox, oy) = (rect.x as usize % 2, rect.y as usize % 2);
        let (cw, ch) = ((ox + w).div_ceil(2), (oy + h).div_ceil(2));
        let mut chroma = Vec::with_capacity(cw * ch);
        for cy in 0..ch {
            for cx in 0..cw {
                // The mean of the cell's four premultiplied samples, pixels off
                // the card counting as transparent: premultiplied values average
                // correctly, straight ones would not.
                let mut sum = [0f32; 4];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (x, y) = (cx * 2 + dx, cy * 2 + dy);
                    if x >= ox && y >= oy && x - ox < w && y - oy < h {
                        let (r, g, b, a) = px(x - ox, y - oy);
                        sum = [sum[0] + r, sum[1] + g, sum[2] + b, sum[3] + a];
                    }
                }
                let [r, g, b, a] = sum.map(|s| s / 4.0);
                let (_, u, v) = premultiplied_yuv(r, g, b, a / 255.0);
                let q = |f: f32| f.round().clamp(0.0, 255.0) as u8;
                chroma.push([q(a), q(u), q(v)]);
            }
        }
        YuvCard { rect, luma, chroma }
    }

    /// Blends into I420 planes (`strides` in bytes) at `opacity` (0..=256).
    pub fn blend(&self, planes: [&mut [u8]; 3], strides: [usize; 3], opacity: u32) {
        let PixelRect { x, y, w, h } = self.rect;
        let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
        let [py, pu, pv] = planes;
        // out = premultiplied·o + frame·(1 − a·o), in 8.8 fixed point.
        let mix = |dst: &mut u8, premul: u8, alpha: u8| {
            let a = u32::from(alpha) * opacity;
            let p = u32::from(premul) * opacity;
            *dst = ((p + u32::from(*dst) * (65280 - a) / 255 + 128) >> 8).min(255) as u8;
        };
        for row in 0..h {
            let line = &mut py[(y + row) * strides[0] + x..][..w];
            for (dst, [a, l]) in line.iter_mut().zip(&self.luma[row * w..(row + 1) * w]) {
                if *a != 0 {
                    mix(dst, *l, *a);
                }
            }
        }
        let cw = (x % 2 + w).div_ceil(2);
        for row in 0..(y % 2 + h).div_ceil(2) {
            let start_u = (y / 2 + row) * strides[1] + x / 2;
            let start_v = (y / 2 + row) * strides[2] + x / 2;
            let src = &self.chroma[row * cw..(row + 1) * cw];
            let (lu, lv) = (&mut pu[start_u..][..cw], &mut pv[start_v..][..cw]);
            for ((du, dv), [a, u, v]) in lu.iter_mut().zip(lv.iter_mut()).zip(src) {
                if *a != 0 {
                    mix(du, *u, *a);
                    mix(dv, *v, *a);
                }
            }
        }
    }
}

/// One card with the window it is shown in.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub card: YuvCard,
    pub start_s: f64,
    pub end_s: f64,
    /// Fade in after `start_s` and out before `end_s`.
    pub fade_s: f64,
}

impl Scheduled {
    /// Opacity at `t` seconds, 0..=256 (0: not shown).
    pub fn opacity(&self, t: f64) -> u32 {
        if t < self.start_s || t >= self.end_s {
            return 0;
        }
        let fade = self.fade_s.min((self.end_s - self.start_s) / 3.0);
        let ramp = if fade > 0.0 {
            ((t - self.start_s) / fade)
                .min((self.end_s - t) / fade)
                .clamp(0.0, 1.0)
        } else {
            1.0
        };
        // A visible minimum: a frame inside the window always shows the card.
        ((ramp * 256.0).round() as u32).clamp(16, 256)
    }
}

/// Everything one rendition burns in.
#[derive(Debug, Clone, Default)]
pub struct BurnIn {
    pub cards: Vec<Scheduled>,
}

impl BurnIn {
    /// Blends the cards shown at `t` into an I420 frame's planes.
    pub fn apply(&self, t: f64, planes: [&mut [u8]; 3], strides: [usize; 3]) {
        let [y, u, v] = planes;
        for s in &self.cards {
            let o = s.opacity(t);
            if o > 0 {
                s.card.blend([&mut *y, &mut *u, &mut *v], strides, o);
            }
        }
    }

    fn shown_at(&self, t: f64) -> bool {
        self.cards.iter().any(|s| s.opacity(t) > 0)
    }

    /// Installs the burn-in on `pad`, which carries `width`×`height` I420
    /// frames. Frames outside every window pass untouched (not even mapped).
    pub fn install(self: Arc<Self>, pad: &gst::Pad, width: u32, height: u32) {
        let Ok(info) =
            gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, width, height).build()
        else {
            tracing::error!(
                width,
                height,
                "cannot describe the frames to burn tags into"
            );
            return;
        };
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, probe| {
            let Some(gst::PadProbeData::Buffer(buffer)) = &mut probe.data else {
                return gst::PadProbeReturn::Ok;
            };
            let Some(pts) = buffer.pts() else {
                return gst::PadProbeReturn::Ok;
            };
            let t = crate::thumbnail::frames::pad_stream_seconds(pad, pts);
            if !self.shown_at(t) {
                return gst::PadProbeReturn::Ok;
            }
            let buffer = buffer.make_mut();
            match gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &info) {
                Ok(mut frame) => {
                    let strides = [0, 1, 2].map(|i| frame.plane_stride()[i] as usize);
                    let [y, u, v, _] = frame.planes_data_mut();
                    self.apply(t, [y, u, v], strides);
                }
                Err(e) => tracing::warn!(error = %e, "cannot map a frame to burn tags into"),
            }
            gst::PadProbeReturn::Ok
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(w: u32, h: u32, rgba: [u8; 4]) -> Card {
        Card::from_premultiplied(w, h, rgba.repeat((w * h) as usize))
    }

    fn frame(w: usize, h: usize, yuv: [u8; 3]) -> [Vec<u8>; 3] {
        [
            vec![yuv[0]; w * h],
            vec![yuv[1]; (w / 2) * (h / 2)],
            vec![yuv[2]; (w / 2) * (h / 2)],
        ]
    }

    #[test]
    fn opaque_white_becomes_video_white_only_inside_the_rect() {
        let rect = PixelRect {
            x: 4,
            y: 2,
            w: 6,
            h: 4,
        };
        let c = YuvCard::new(&card(6, 4, [255, 255, 255, 255]), rect);
        let [mut y, mut u, mut v] = frame(16, 8, [16, 128, 128]);
        c.blend([&mut y, &mut u, &mut v], [16, 8, 8], 256);
        assert_eq!(y[2 * 16 + 4], 235);
        assert_eq!(y[5 * 16 + 9], 235);
        assert_eq!(y[2 * 16 + 3], 16, "left of the card");
        assert_eq!(y[6 * 16 + 4], 16, "below the card");
        assert_eq!(u[8 + 2], 128);
    }

    #[test]
    fn a_card_on_odd_pixels_touches_only_its_own_luma() {
        let rect = PixelRect {
            x: 3,
            y: 1,
            w: 4,
            h: 3,
        };
        let c = YuvCard::new(&card(4, 3, [255, 255, 255, 255]), rect);
        let [mut y, mut u, mut v] = frame(8, 6, [16, 128, 128]);
        c.blend([&mut y, &mut u, &mut v], [8, 4, 4], 256);
        for row in 0..6 {
            for col in 0..8 {
                let inside = (3..7).contains(&col) && (1..4).contains(&row);
                assert_eq!(
                    y[row * 8 + col],
                    if inside { 235 } else { 16 },
                    "{col},{row}"
                );
            }
        }
        // White has no chroma: the cells stay neutral wherever they are blended.
        assert!(u.iter().chain(&v).all(|&c| c == 128));
    }

    #[test]
    fn half_transparent_red_mixes_and_fades() {
        let rect = PixelRect {
            x: 0,
            y: 0,
            w: 2,
            h: 2,
        };
        // Premultiplied: red at alpha 128.
        let c = YuvCard::new(&card(2, 2, [128, 0, 0, 128]), rect);
        let [mut y, mut u, mut v] = frame(2, 2, [126, 128, 128]);
        c.blend([&mut y, &mut u, &mut v], [2, 1, 1], 256);
        // Red is Y 63, Cr 240 in BT.709: half of each with half of the frame.
        assert!((y[0] as i32 - (63 + 126) / 2).abs() <= 1, "{}", y[0]);
        assert!((v[0] as i32 - (240 + 128) / 2).abs() <= 1, "{}", v[0]);
        let [mut y2, mut u2, mut v2] = frame(2, 2, [126, 128, 128]);
        c.blend([&mut y2, &mut u2, &mut v2], [2, 1, 1], 0);
        assert_eq!(y2[0], 126, "opacity 0 draws nothing");
    }

    #[test]
    fn the_window_fades_in_and_out() {
        let s = Scheduled {
            card: YuvCard::new(
                &card(2, 2, [0, 0, 0, 255]),
                PixelRect {
                    x: 0,
                    y: 0,
                    w: 2,
                    h: 2,
                },
            ),
            start_s: 2.0,
            end_s: 6.0,
            fade_s: 0.25,
        };
        assert_eq!(s.opacity(1.99), 0);
        assert!(s.opacity(2.0) > 0 && s.opacity(2.0) < 64);
        assert_eq!(s.opacity(4.0), 256);
        assert!(s.opacity(5.9) < 256);
        assert_eq!(s.opacity(6.0), 0);
    }
}
