//! Where each card goes, in coordinates normalised to the upright frame: inside
//! the style's safe margins (short-video apps draw their own UI over the edges
//! of a 9:16 frame), and clear of every other card shown at the same time.
//!
//! The rectangles are computed once per job and are the same for every
//! rendition; each rendition draws its card at `rect` scaled to its own pixels
//! ([`Rect::to_pixels`]), and the timed data publishes `rect` itself.
//!
//! Overlaps are resolved by moving the later tag (by start, then by order in
//! the job) vertically, to the nearest free place above or below the cards it
//! would cover; when there is none inside the safe area the job fails with
//! `tags_overlap` naming both tags.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Space kept between cards that are moved apart, as a fraction of the frame
/// height.
const GAP: f64 = 0.01;

/// A rectangle in coordinates normalised to the frame (0..1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// A card's rectangle in one rendition's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    fn right(&self) -> f64 {
        self.x + self.w
    }
    fn bottom(&self) -> f64 {
        self.y + self.h
    }
    fn intersects(&self, other: &Rect) -> bool {
        self.x < other.right()
            && other.x < self.right()
            && self.y < other.bottom()
            && other.y < self.bottom()
    }

    /// The card's pixels in a `width`×`height` frame, for a card whose height is
    /// `aspect` times its width (so the drawn card keeps its shape exactly).
    pub fn to_pixels(&self, width: u32, height: u32, aspect: f64) -> PixelRect {
        let w = ((self.w * f64::from(width)).round() as u32).clamp(2, width);
        let h = ((f64::from(w) * aspect).round() as u32).clamp(2, height);
        let at = |v: f64, max: u32| (v.round().max(0.0) as u32).min(max);
        PixelRect {
            x: at(self.x * f64::from(width), width - w),
            y: at(self.y * f64::from(height), height - h),
            w,
            h,
        }
    }
}

/// One card to place.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub start: f64,
    pub end: f64,
    /// The anchor (top-left corner) asked for.
    pub x: f64,
    pub y: f64,
    /// Card width, fraction of the frame width.
    pub w: f64,
    /// Card height / card width, in pixels.
    pub card_aspect: f64,
    /// Safe margins: top, bottom, left, right (fractions of the frame).
    pub margins: [f64; 4],
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "tag `{id}` does not fit inside the safe area of this {frame_w}:{frame_h} frame; use a narrower width or a shorter title"
    )]
    TooLarge {
        id: String,
        frame_w: u32,
        frame_h: u32,
    },
    #[error(
        "tags `{a}` and `{b}` are shown at the same time and there is no free place for `{b}` that does not cover `{a}`; move one or change their times"
    )]
    Overlap { a: String, b: String },
}

/// Places `items` in a frame `frame_w`×`frame_h` (any unit: only the ratio
/// counts). Returns one rectangle per item, in order.
pub fn place(items: &[Item], frame_w: u32, frame_h: u32) -> Result<Vec<Rect>, LayoutError> {
    let frame_aspect = f64::from(frame_w) / f64::from(frame_h.max(1));
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[a].start.total_cmp(&items[b].start).then(a.cmp(&b)));
    let mut placed: Vec<Option<Rect>> = vec![None; items.len()];
    for &i in &order {
        let item = &items[i];
        let [top, bottom, left, right] = item.margins;
        let w = item.w.min(1.0 - left - right);
        let h = w * item.card_aspect * frame_aspect;
        if h > 1.0 - top - bottom + 1e-9 || w <= 0.0 {
            return Err(LayoutError::TooLarge {
                id: item.id.clone(),
                frame_w,
                frame_h,
            });
        }
        let (min_y, max_y) = (top, (1.0 - bottom - h).max(top));
        let x = item.x.clamp(left, 1.0 - right - w);
        let wanted = Rect {
            x,
            y: item.y.clamp(min_y, max_y),
            w,
            h,
        };
        // Cards shown at the same time as this one.
        let rivals: Vec<(usize, Rect)> = order
            .iter()
            .filter_map(|&j| placed[j].map(|r| (j, r)))
            .filter(|(j, _)| items[*j].start < item.end && item.start < items[*j].end)
            .collect();
        let free = |r: &Rect| rivals.iter().all(|(_, o)| !r.intersects(o));
        if free(&wanted) {
            placed[i] = Some(wanted);
            continue;
        }
        // Candidates: just above or below each rival, or at the top or bottom of
        // the safe area, nearest to the wish first.
        let mut candidates: Vec<f64> = rivals
            .iter()
            .flat_map(|(_, o)| [o.bottom() + GAP, o.y - GAP - h])
            .chain([min_y, max_y])
            .filter(|y| (min_y - 1e-9..=max_y + 1e-9).contains(y))
            .collect();
        candidates.sort_by(|a, b| (a - wanted.y).abs().total_cmp(&(b - wanted.y).abs()));
        let found = candidates
            .into_iter()
            .map(|y| Rect { y, ..wanted })
            .find(|r| free(r));
        match found {
            Some(r) => placed[i] = Some(r),
            None => {
                let blocking = rivals
                    .iter()
                    .find(|(_, o)| wanted.intersects(o))
                    .map(|(j, _)| items[*j].id.clone())
                    .unwrap_or_default();
                return Err(LayoutError::Overlap {
                    a: blocking,
                    b: item.id.clone(),
                });
            }
        }
    }
    Ok(placed
        .into_iter()
        .map(|r| {
            r.unwrap_or(Rect {
                x: 0.0,
                y: 0.0,
                w: 0.0,
                h: 0.0,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, start: f64, end: f64, x: f64, y: f64) -> Item {
        Item {
            id: id.into(),
            start,
            end,
            x,
            y,
            w: 0.4,
            card_aspect: 0.3,
            margins: [0.08, 0.15, 0.04, 0.04],
        }
    }

    #[test]
    fn a_card_keeps_its_place_and_shape() {
        let r = place(&[item("a", 0.0, 2.0, 0.05, 0.2)], 640, 360).unwrap();
        assert_eq!(r[0].x, 0.05);
        assert_eq!(r[0].y, 0.2);
        // 0.4 of 640 px wide = 256 px; 0.3 of that = 76.8 px of 360.
        assert!((r[0].h - 76.8 / 360.0).abs() < 1e-9);
    }

    #[test]
    fn cards_stay_inside_the_safe_margins() {
        let r = place(&[item("a", 0.0, 2.0, 0.9, 0.99)], 360, 640).unwrap()[0];
        assert!((r.right() - 0.96).abs() < 1e-9, "{r:?}");
        assert!((r.bottom() - 0.85).abs() < 1e-9, "{r:?}");
        let r = place(&[item("a", 0.0, 2.0, 0.0, 0.0)], 360, 640).unwrap()[0];
        assert_eq!((r.x, r.y), (0.04, 0.08));
    }

    #[test]
    fn overlapping_cards_move_apart_only_when_shown_together() {
        let items = [
            item("a", 1.0, 4.0, 0.05, 0.5),
            item("b", 2.0, 5.0, 0.1, 0.55),
            item("c", 5.0, 6.0, 0.1, 0.55),
        ];
        let r = place(&items, 640, 360).unwrap();
        assert!(!r[0].intersects(&r[1]), "{r:?}");
        assert_eq!(r[2].y, 0.55, "c is shown alone");
        // b went to the nearest free place: below a if it fits, else above.
        assert!(r[1].y >= r[0].bottom() || r[1].bottom() <= r[0].y);
    }

    #[test]
    fn no_room_is_an_error_naming_both_tags() {
        // Three tall cards at once in a short frame.
        let mut items: Vec<Item> = ["a", "b", "c"]
            .iter()
            .map(|id| item(id, 0.0, 2.0, 0.05, 0.3))
            .collect();
        for i in &mut items {
            i.card_aspect = 0.5;
        }
        let err = place(&items, 640, 360).unwrap_err();
        assert!(matches!(err, LayoutError::Overlap { .. }), "{err}");
        assert!(
            err.to_string().contains("`a`") && err.to_string().contains("`b`"),
            "{err}"
        );
    }

    #[test]
    fn too_tall_is_refused() {
        let mut i = item("a", 0.0, 1.0, 0.0, 0.0);
        i.w = 0.9;
        i.card_aspect = 1.0;
        assert!(matches!(
            place(&[i], 640, 360),
            Err(LayoutError::TooLarge { .. })
        ));
    }

    #[test]
    fn pixels_are_rounded_and_inside_the_frame() {
        let r = Rect {
            x: 0.05,
            y: 0.7,
            w: 0.4,
            h: 0.2,
        };
        let p = r.to_pixels(640, 360, 0.3);
        assert_eq!(
            p,
            PixelRect {
                x: 32,
                y: 252,
                w: 256,
                h: 77
            }
        );
        let edge = Rect {
            x: 0.99,
            y: 0.99,
            w: 0.4,
            h: 0.2,
        }
        .to_pixels(641, 361, 0.3);
        assert!(edge.x + edge.w <= 641 && edge.y + edge.h <= 361);
    }
}
