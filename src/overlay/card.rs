//! Shoppable tag cards: a product photo, title, price and (for paid placements) a
//! "Sponsored" disclosure, drawn into a premultiplied RGBA bitmap to overlay on video.
//!
//! Drawing is split in two so every rendition shows the same card:
//! - [`layout`] decides the arrangement once, at a fixed reference width: where the title's
//!   lines break (and where it is cut with "…"), how big the price may be, and so the card's
//!   aspect ratio. Every position is kept as a fraction of the card width.
//! - [`render`] draws that arrangement at any pixel width: a 144 px card for a 360p portrait
//!   rendition and an 800 px one for 1080p differ only in resolution, never in line breaks or
//!   shape, and the height is exactly `round(width * aspect)`.
//!
//! ```text
//! +------------------------------------------+
//! |  +--------+  [Sponsored]                  |   pill: only on sponsored tags
//! |  | photo  |  Wireless Noise-Cancelling    |   title: up to max_title_lines,
//! |  | (cover |  Headphones with 30 h batt…   |          word-wrapped, ellipsised
//! |  |  crop) |  $199.99                      |   price: shrunk only if too wide
//! |  +--------+                               |
//! +------------------------------------------+
//! ```
//!
//! Shapes are filled with `tiny-skia`, the photo is scaled with `fast_image_resize`
//! (alpha-aware), text goes through [`Fonts`]. Output bytes depend only on the inputs.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};
use tiny_skia::{
    FillRule, FilterQuality, IntSize, Paint, Path, PathBuilder, Pattern, Pixmap, SpreadMode,
    Transform,
};

use super::style::{Color, TagStyle};
use super::text::{Clip, FAUX_BOLD, Fonts, LINE_HEIGHT};

/// A product photo for the card, already decoded: sRGB, straight (non-premultiplied) alpha, RGBA8, row-major.
pub struct ProductImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes.
    pub rgba: Vec<u8>,
}

impl ProductImage {
    /// True when the buffer matches the size (an unusable image is left out of the card).
    fn is_usable(&self) -> bool {
        self.width > 0
            && self.height > 0
            && (self.width as usize)
                .checked_mul(self.height as usize)
                .and_then(|n| n.checked_mul(4))
                .is_some_and(|n| n == self.rgba.len())
    }
}

/// What goes on one card.
pub struct CardContent<'a> {
    /// Product title; any whitespace (including newlines) is shown as single spaces.
    pub title: &'a str,
    /// The price, already formatted (see `price::format`).
    pub price: &'a str,
    /// Paid placement: draws the style's `sponsored_text` disclosure pill.
    pub sponsored: bool,
    /// Product photo for the square slot on the left; without one the text takes the full width.
    pub image: Option<&'a ProductImage>,
}

/// Width at which [`layout`] shapes and breaks text. Any value works (everything is stored
/// as a fraction of the card width); a large one keeps rounding out of line-break decisions.
const REFERENCE_WIDTH: f32 = 1000.0;

/// Horizontal padding inside the pill and its height, in multiples of the label size.
const PILL_PAD_X: f32 = 0.6;
const PILL_HEIGHT: f32 = 1.6;
/// Space under the pill and between the title and the price, in multiples of the label and
/// title sizes.
const PILL_GAP: f32 = 0.5;
const PRICE_GAP: f32 = 0.25;
/// Corner radius of the photo, as a fraction of its side.
const IMAGE_RADIUS: f32 = 0.12;
/// Transparent parts of product photos are shown on white, as shops show cut-outs.
const IMAGE_MATTE: u8 = 255;

/// A rectangle in fractions of the card width.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
}

/// The card's arrangement independent of pixel size: title line breaks are decided once (at a reference width),
/// so every rendition draws the same lines and the card has the same shape (height/width) at every size.
#[derive(Debug, Clone)]
pub struct CardLayout {
    title_lines: Vec<String>,
    price: String,
    /// The disclosure text, when sponsored.
    label: Option<String>,
    aspect: f64,
    // Geometry, in fractions of the card width.
    image: Option<Rect>,
    text_x: f32,
    text_w: f32,
    title_y: f32,
    title_size: f32,
    price_y: f32,
    price_size: f32,
    pill: Option<Rect>,
    label_size: f32,
}

impl CardLayout {
    /// Card height / card width.
    pub fn aspect(&self) -> f64 {
        self.aspect
    }

    /// The title as drawn, one string per line (the last ends in "…" when the title was cut).
    pub fn title_lines(&self) -> &[String] {
        &self.title_lines
    }
}

/// Premultiplied RGBA8, row-major, stride = width * 4.
#[derive(Debug, Clone)]
pub struct Card {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels: `round(width * layout.aspect())`.
    pub height: u32,
    /// `width * height * 4` bytes, premultiplied alpha.
    pub rgba: Vec<u8>,
    label: Option<(u32, u32, u32, u32)>,
}

impl Card {
    /// The "Sponsored" pill as `(x, y, width, height)` in pixels; None when the tag is not sponsored.
    pub fn label_rect(&self) -> Option<(u32, u32, u32, u32)> {
        self.label
    }

    /// A card made of given premultiplied pixels (`width * height * 4` bytes).
    pub fn from_premultiplied(width: u32, height: u32, rgba: Vec<u8>) -> Card {
        debug_assert_eq!(rgba.len(), (width * height * 4) as usize);
        Card {
            width,
            height,
            rgba,
            label: None,
        }
    }

    /// The card cut to its top `height` rows (when a frame has less room).
    pub fn crop_height(mut self, height: u32) -> Card {
        if height < self.height {
            self.rgba.truncate((self.width * height * 4) as usize);
            self.height = height;
        }
        self
    }
}

/// `text` with every run of whitespace (newlines, tabs, ...) as one space, trimmed.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The longest start of `text` that fits `width_px` with "…" after it, cut after a word when
/// that keeps at least half of the line.
fn ellipsize(fonts: &mut Fonts, text: &str, size_px: f32, width_px: f32) -> String {
    let ends: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .chain([text.len()])
        .collect();
    let fits = |fonts: &mut Fonts, end: usize| {
        let head = text.get(..end).unwrap_or("").trim_end();
        fonts.measure(&format!("{head}…"), size_px) <= width_px
    };
    // Binary search for the last fitting end (width grows with length).
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fits(fonts, ends[mid]) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let Some(&end) = lo.checked_sub(1).and_then(|i| ends.get(i)) else {
        return "…".to_owned();
    };
    let mut head = text.get(..end).unwrap_or("");
    let mid_word = text
        .get(end..)
        .and_then(|t| t.chars().next())
        .is_some_and(|c| !c.is_whitespace());
    if mid_word && let Some(space) = head.rfind(' ').filter(|&s| s >= head.len() / 2) {
        head = &head[..space];
    }
    format!("{}…", head.trim_end())
}

/// Decides the card's arrangement (see the module documentation). Never fails: an empty
/// title gives a card with just the price (titles are validated elsewhere).
pub fn layout(fonts: &mut Fonts, style: &TagStyle, content: &CardContent) -> CardLayout {
    let r = REFERENCE_WIDTH;
    let pad = style.padding;
    let image_side = content
        .image
        .filter(|i| i.is_usable())
        .map(|_| style.image_size);
    let text_x = pad + image_side.map_or(0.0, |s| s + pad);
    let text_w = (1.0 - text_x - pad).max(0.01);

    // Title lines, broken at the reference width.
    let title = one_line(content.title);
    let max_lines = style.max_title_lines.max(1) as usize;
    let title_size = style.title_size;
    let ranges = if title.is_empty() {
        Vec::new()
    } else {
        fonts.wrap(&title, title_size * r, text_w * r)
    };
    let mut title_lines: Vec<String> = ranges
        .iter()
        .take(max_lines)
        .map(|rg| title.get(rg.clone()).unwrap_or("").trim().to_owned())
        .collect();
    if ranges.len() > max_lines {
        let rest = ranges
            .get(max_lines - 1)
            .and_then(|rg| title.get(rg.start..))
            .unwrap_or("");
        let last = ellipsize(fonts, rest.trim(), title_size * r, text_w * r);
        title_lines.truncate(max_lines - 1);
        title_lines.push(last);
    }
    title_lines.retain(|l| !l.is_empty());

    // Price: as large as the style says, smaller only if it would not fit the column.
    let price = one_line(content.price);
    let mut price_size = style.price_size;
    let price_w = fonts.measure(&price, price_size * r) / r + FAUX_BOLD * price_size;
    if price_w > text_w {
        price_size *= text_w / price_w * 0.98;
    }

    // The disclosure pill, shrunk like the price if needed.
    let label = content.sponsored.then(|| one_line(&style.sponsored_text));
    let mut label_size = style.label_size;
    let pill = label.as_ref().map(|text| {
        let text_width = fonts.measure(text, label_size * r) / r + FAUX_BOLD * label_size;
        let mut w = text_width + 2.0 * PILL_PAD_X * label_size;
        if w > text_w {
            label_size *= text_w / w * 0.98;
            w = text_width * (label_size / style.label_size) + 2.0 * PILL_PAD_X * label_size;
        }
        Rect {
            x: text_x,
            y: 0.0,
            w,
            h: PILL_HEIGHT * label_size,
        }
    });

    // Vertical arrangement: the text block and the photo are centred against each other.
    let pill_block = pill.map_or(0.0, |p| p.h + PILL_GAP * label_size);
    let title_block = title_lines.len() as f32 * title_size * LINE_HEIGHT;
    let price_gap = if title_lines.is_empty() {
        0.0
    } else {
        PRICE_GAP * title_size
    };
    let text_h = pill_block + title_block + price_gap + price_size * LINE_HEIGHT;
    let inner_h = text_h.max(image_side.unwrap_or(0.0));
    let text_top = pad + (inner_h - text_h) / 2.0;
    let image = image_side.map(|s| Rect {
        x: pad,
        y: pad + (inner_h - s) / 2.0,
        w: s,
        h: s,
    });
    let pill = pill.map(|p| Rect { y: text_top, ..p });
    let title_y = text_top + pill_block;

    CardLayout {
        title_lines,
        price,
        label,
        aspect: f64::from(inner_h + 2.0 * pad),
        image,
        text_x,
        text_w,
        title_y,
        title_size,
        price_y: title_y + title_block + price_gap,
        price_size,
        pill,
        label_size,
    }
}

/// A rounded rectangle (radius clamped to half the shorter side).
fn rounded_rect(x: f32, y: f32, w: f32, h: f32, radius: f32) -> Option<Path> {
    let r = radius.min(w / 2.0).min(h / 2.0).max(0.0);
    // Control-point distance for a quarter circle from cubic Béziers: (1 - 0.5523) * r.
    let k = r * (1.0 - 0.552_284_8);
    let mut p = PathBuilder::new();
    p.move_to(x + r, y);
    p.line_to(x + w - r, y);
    p.cubic_to(x + w - k, y, x + w, y + k, x + w, y + r);
    p.line_to(x + w, y + h - r);
    p.cubic_to(x + w, y + h - k, x + w - k, y + h, x + w - r, y + h);
    p.line_to(x + r, y + h);
    p.cubic_to(x + k, y + h, x, y + h - k, x, y + h - r);
    p.line_to(x, y + r);
    p.cubic_to(x, y + k, x + k, y, x + r, y);
    p.close();
    p.finish()
}

fn paint(c: Color) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(c.r, c.g, c.b, c.a);
    p.anti_alias = true;
    p
}

fn fill(pixmap: &mut Pixmap, path: Option<Path>, paint: &Paint) {
    if let Some(path) = path {
        pixmap.fill_path(&path, paint, FillRule::Winding, Transform::identity(), None);
    }
}

/// The photo centre-cropped to a `side`-pixel square, premultiplied and flattened on white.
fn photo(image: &ProductImage, side: u32) -> Option<Pixmap> {
    let src = ImageRef::new(image.width, image.height, &image.rgba, PixelType::U8x4).ok()?;
    let mut dst = Image::new(side, side, PixelType::U8x4);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom))
        .fit_into_destination(Some((0.5, 0.5)))
        .use_alpha(true); // premultiplies while filtering, so no dark fringes at transparent edges
    Resizer::new().resize(&src, &mut dst, &options).ok()?;
    MulDiv::new().multiply_alpha_inplace(&mut dst).ok()?;
    let mut data = dst.into_vec();
    for px in data.chunks_exact_mut(4) {
        let under = 255 - u32::from(px[3]);
        for c in &mut px[..3] {
            *c =
                (u32::from(*c) + super::text::mul255(u32::from(IMAGE_MATTE), under)).min(255) as u8;
        }
        px[3] = 255;
    }
    Pixmap::from_vec(data, IntSize::from_wh(side, side)?)
}

fn rgba(c: Color) -> [u8; 4] {
    [c.r, c.g, c.b, c.a]
}

/// Draws the card `width_px` wide; its height is exactly `(width_px as f64 * layout.aspect()).round() as u32` (the caller
/// relies on this to place the card and to publish its rectangle).
///
/// `content` must be the one given to [`layout`]; only its image pixels are read here (the
/// text, price and disclosure come from the layout). Widths are not limited here: the caller
/// applies the style's `min_width_px` (see `overlay::prepare`, which sets one width fraction for every rendition).
pub fn render(
    fonts: &mut Fonts,
    style: &TagStyle,
    content: &CardContent,
    layout: &CardLayout,
    width_px: u32,
) -> Card {
    let height_px = (f64::from(width_px) * layout.aspect).round() as u32;
    let blank = |label| Card {
        width: width_px,
        height: height_px,
        rgba: vec![0; width_px as usize * height_px as usize * 4],
        label,
    };
    let Some(mut pixmap) = Pixmap::new(width_px, height_px) else {
        return blank(None); // zero-sized (or absurdly large) request
    };
    let k = width_px as f32;
    let (w, h) = (k, height_px as f32);

    fill(
        &mut pixmap,
        rounded_rect(0.0, 0.0, w, h, style.corner_radius * k),
        &paint(style.background),
    );

    // Photo: snapped to whole pixels so it is copied, not resampled, by the pattern fill.
    if let (Some(slot), Some(image)) = (layout.image, content.image.filter(|i| i.is_usable())) {
        let (x, y) = ((slot.x * k).round(), (slot.y * k).round());
        let side = ((slot.w * k).round() as u32).max(1);
        if let Some(photo) = photo(image, side) {
            let mut p = Paint {
                shader: Pattern::new(
                    photo.as_ref(),
                    SpreadMode::Pad,
                    FilterQuality::Nearest,
                    1.0,
                    Transform::from_translate(x, y),
                ),
                ..Paint::default()
            };
            p.anti_alias = true;
            let s = side as f32;
            fill(&mut pixmap, rounded_rect(x, y, s, s, s * IMAGE_RADIUS), &p);
        }
    }

    let column = Clip {
        x0: (layout.text_x * k).floor() as i32,
        y0: 0,
        x1: ((layout.text_x + layout.text_w) * k).ceil() as i32 + 1,
        y1: height_px as i32,
    };
    let (text_x, text_w) = (layout.text_x * k, layout.text_w * k);

    // Disclosure pill: whole-pixel rectangle for crisp edges, text centred in it.
    let mut label_rect = None;
    if let (Some(pill), Some(label)) = (layout.pill, layout.label.as_deref()) {
        let x0 = (pill.x * k).round();
        let y0 = (pill.y * k).round();
        let x1 = ((pill.x + pill.w) * k).round().min(w).max(x0 + 1.0);
        let y1 = ((pill.y + pill.h) * k).round().min(h).max(y0 + 1.0);
        fill(
            &mut pixmap,
            rounded_rect(x0, y0, x1 - x0, y1 - y0, (y1 - y0) / 2.0),
            &paint(style.label_background),
        );
        let size = layout.label_size * k;
        let pad_x = PILL_PAD_X * size;
        let text_y = (y0 + y1) / 2.0 - size * LINE_HEIGHT / 2.0;
        let clip = Clip {
            x0: x0 as i32,
            y0: y0 as i32,
            x1: x1 as i32,
            y1: y1 as i32,
        };
        let (stride, data) = (width_px, pixmap.data_mut());
        let geometry = (x0 + pad_x, text_y, (x1 - x0 - 2.0 * pad_x).max(1.0));
        fonts.draw(
            data,
            stride,
            label,
            size,
            geometry,
            rgba(style.label_color),
            clip,
            FAUX_BOLD,
        );
        label_rect = Some((x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32));
    }

    let title_size = layout.title_size * k;
    for (i, line) in layout.title_lines.iter().enumerate() {
        let y = layout.title_y * k + i as f32 * title_size * LINE_HEIGHT;
        let data = pixmap.data_mut();
        let geometry = (text_x, y, text_w);
        fonts.draw(
            data,
            width_px,
            line,
            title_size,
            geometry,
            rgba(style.title_color),
            column,
            0.0,
        );
    }
    let (price_size, price_y) = (layout.price_size * k, layout.price_y * k);
    let data = pixmap.data_mut();
    let geometry = (text_x, price_y, text_w);
    fonts.draw(
        data,
        width_px,
        &layout.price,
        price_size,
        geometry,
        rgba(style.price_color),
        column,
        FAUX_BOLD,
    );

    Card {
        width: width_px,
        height: height_px,
        rgba: pixmap.take(),
        label: label_rect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn style() -> TagStyle {
        TagStyle::parse(include_str!("../../pipelines/tags/default.toml")).expect("default style")
    }

    /// A 300x200 stand-in product photo: colour gradient with a transparent corner.
    fn photo_fixture() -> ProductImage {
        let (w, h) = (300u32, 200u32);
        let mut rgba = Vec::with_capacity((w * h * 4) as usize);
        for y in 0..h {
            for x in 0..w {
                let a = if x < 40 && y < 40 { 0 } else { 255 };
                rgba.extend_from_slice(&[(x * 255 / w) as u8, 120, (y * 255 / h) as u8, a]);
            }
        }
        ProductImage {
            width: w,
            height: h,
            rgba,
        }
    }

    const LONG_TITLE: &str = "Wireless Noise-Cancelling Over-Ear Headphones with 30-hour battery, \
        USB-C fast charging and a premium carrying case";

    fn content<'a>(
        title: &'a str,
        sponsored: bool,
        image: Option<&'a ProductImage>,
    ) -> CardContent<'a> {
        CardContent {
            title,
            price: "$199.99",
            sponsored,
            image,
        }
    }

    /// Path of a CJK font from `TEST_CJK_FONT`; None (with a note) skips the check.
    fn cjk_font() -> Option<PathBuf> {
        match std::env::var_os("TEST_CJK_FONT") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => {
                eprintln!("note: TEST_CJK_FONT is not set; skipping the CJK card check");
                None
            }
        }
    }

    /// Pixels whose colour is within `tolerance` of `c` (premultiplied, so only opaque `c`).
    fn count_near(card: &Card, rect: (u32, u32, u32, u32), c: Color, tolerance: u8) -> usize {
        let (x0, y0, w, h) = rect;
        let mut n = 0;
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let i = ((y * card.width + x) * 4) as usize;
                let p = &card.rgba[i..i + 4];
                if [c.r, c.g, c.b, c.a]
                    .iter()
                    .zip(p)
                    .all(|(a, b)| a.abs_diff(*b) <= tolerance)
                {
                    n += 1;
                }
            }
        }
        n
    }

    #[test]
    fn height_follows_the_layout_aspect_at_every_size() {
        let mut fonts = Fonts::new(&[]).unwrap();
        let style = style();
        let img = photo_fixture();
        for c in [
            content(LONG_TITLE, true, Some(&img)),
            content("Mug", false, None),
        ] {
            let layout = layout(&mut fonts, &style, &c);
            let aspect = layout.aspect();
            assert!(aspect > 0.1 && aspect < 1.5, "{aspect}");
            for w in [144u32, 256, 640, 1080] {
                let card = render(&mut fonts, &style, &c, &layout, w);
                assert_eq!(card.width, w);
                assert_eq!(
                    card.height,
                    (f64::from(w) * aspect).round() as u32,
                    "width {w}"
                );
                assert_eq!(card.rgba.len(), (card.width * card.height * 4) as usize);
                assert_eq!(layout.aspect(), aspect); // one layout, one shape
                // Premultiplied: no channel above alpha.
                assert!(
                    card.rgba
                        .chunks_exact(4)
                        .all(|p| p[0] <= p[3] && p[1] <= p[3] && p[2] <= p[3])
                );
            }
        }
    }

    #[test]
    fn shape_does_not_depend_on_pixel_size() {
        // Layout is computed once; the same content laid out again gives the same shape.
        let mut fonts = Fonts::new(&[]).unwrap();
        let style = style();
        let img = photo_fixture();
        let c = content(LONG_TITLE, true, Some(&img));
        let a = layout(&mut fonts, &style, &c);
        let b = layout(&mut fonts, &style, &c);
        assert_eq!(a.aspect(), b.aspect());
        assert_eq!(a.title_lines(), b.title_lines());
    }

    #[test]
    fn rendering_is_deterministic() {
        let img = photo_fixture();
        let c = content(LONG_TITLE, true, Some(&img));
        let style = style();
        let mut fonts = Fonts::new(&[]).unwrap();
        let l = layout(&mut fonts, &style, &c);
        let first = render(&mut fonts, &style, &c, &l, 640);
        let again = render(&mut fonts, &style, &c, &l, 640);
        assert_eq!(first.rgba, again.rgba);
        // A fresh font system (empty glyph caches) draws the same bytes too.
        let mut fresh = Fonts::new(&[]).unwrap();
        let l2 = layout(&mut fresh, &style, &c);
        assert_eq!(render(&mut fresh, &style, &c, &l2, 640).rgba, first.rgba);
    }

    #[test]
    fn long_title_wraps_to_max_lines_with_ellipsis() {
        let mut fonts = Fonts::new(&[]).unwrap();
        let style = style();
        let img = photo_fixture();
        let l = layout(&mut fonts, &style, &content(LONG_TITLE, false, Some(&img)));
        let lines = l.title_lines();
        assert_eq!(lines.len(), style.max_title_lines as usize, "{lines:?}");
        assert!(lines.last().is_some_and(|s| s.ends_with('…')), "{lines:?}");
        assert!(LONG_TITLE.starts_with(&lines[0]), "{lines:?}");
        // Word wrap: the first line ends at a break opportunity (a space or after a hyphen).
        let next = LONG_TITLE.as_bytes()[lines[0].len()];
        assert!(next == b' ' || lines[0].ends_with('-'), "{lines:?}");
        // Whitespace runs are single spaces.
        let l = layout(&mut fonts, &style, &content("  Blue\n\tMug  ", false, None));
        assert_eq!(l.title_lines(), ["Blue Mug"]);
        // A one-word title too long for a line is broken between letters.
        let l = layout(&mut fonts, &style, &content(&"W".repeat(200), false, None));
        assert_eq!(l.title_lines().len(), style.max_title_lines as usize);
        // More lines allowed, more drawn.
        let mut four = style.clone();
        four.max_title_lines = 4;
        let l4 = layout(&mut fonts, &four, &content(LONG_TITLE, false, Some(&img)));
        assert!(l4.title_lines().len() > 2 && l4.title_lines().len() <= 4);
        assert!(l4.aspect() > l.aspect());
    }

    #[test]
    fn odd_titles_do_not_panic() {
        let mut fonts = Fonts::new(&[]).unwrap();
        let style = style();
        let bad = ProductImage {
            width: 10,
            height: 10,
            rgba: vec![0; 7],
        };
        for title in [
            "",
            " ",
            "\n",
            "…",
            "a",
            "🎧🎧🎧",
            "\u{202E}evil",
            "عربي مرحبا",
            &"x ".repeat(5000),
        ] {
            for image in [None, Some(&bad)] {
                let c = CardContent {
                    title,
                    price: "",
                    sponsored: true,
                    image,
                };
                let l = layout(&mut fonts, &style, &c);
                assert!(l.title_lines().len() <= style.max_title_lines as usize);
                for w in [0u32, 1, 2, 160] {
                    let card = render(&mut fonts, &style, &c, &l, w);
                    assert_eq!(card.rgba.len(), (card.width * card.height * 4) as usize);
                }
            }
        }
    }

    #[test]
    fn without_image_the_text_takes_the_full_width() {
        let mut fonts = Fonts::new(&[]).unwrap();
        let style = style();
        let img = photo_fixture();
        let with = layout(&mut fonts, &style, &content(LONG_TITLE, false, Some(&img)));
        let without = layout(&mut fonts, &style, &content(LONG_TITLE, false, None));
        assert!(without.text_w > with.text_w + style.image_size * 0.9);
        assert!(without.title_lines()[0].len() > with.title_lines()[0].len());
        // The photo is drawn: its slot is opaque and not the card background.
        let c = content(LONG_TITLE, false, Some(&img));
        let card = render(&mut fonts, &style, &c, &with, 400);
        let slot = with.image.expect("slot");
        let (cx, cy) = (
            ((slot.x + slot.w * 0.5) * 400.0) as u32,
            ((slot.y + slot.h * 0.5) * 400.0) as u32,
        );
        let i = ((cy * card.width + cx) * 4) as usize;
        assert_eq!(card.rgba[i + 3], 255);
        assert_eq!(card.rgba[i + 1], 120); // the fixture's green channel
    }

    /// Acceptance: every sponsored tag shows its disclosure label, readable, at every size.
    #[test]
    fn sponsored_card_shows_a_readable_disclosure() {
        let mut fonts = Fonts::new(&[]).unwrap();
        let style = style();
        let img = photo_fixture();
        for image in [Some(&img), None] {
            let paid = content(LONG_TITLE, true, image);
            let organic = content(LONG_TITLE, false, image);
            let lp = layout(&mut fonts, &style, &paid);
            let lo = layout(&mut fonts, &style, &organic);
            // 144/160: a 360p portrait rendition (0.4 x 360, and the style's minimum width).
            for w in [144u32, 160, 432, 800] {
                let card = render(&mut fonts, &style, &paid, &lp, w);
                let plain = render(&mut fonts, &style, &organic, &lo, w);
                assert_eq!(plain.label_rect(), None);
                let rect = card.label_rect().expect("sponsored card has a label");
                let (x, y, rw, rh) = rect;
                assert!(
                    x + rw <= card.width && y + rh <= card.height,
                    "{rect:?} in {w}"
                );
                assert!(
                    rh as f32 >= style.label_size * PILL_HEIGHT * w as f32 - 1.5,
                    "{rect:?}"
                );
                let area = (rw * rh) as usize;
                // The pill is there: mostly its solid background colour...
                let fill = count_near(&card, rect, style.label_background, 2);
                assert!(fill * 2 > area, "width {w}: {fill} of {area} pill pixels");
                // ...with text that stands out from it: pixels at >= 3:1 contrast with the pill
                // (anti-aliased strokes included) and some at the full label colour.
                let mut strong = 0;
                for py in y..y + rh {
                    for px in x..x + rw {
                        let i = ((py * card.width + px) * 4) as usize;
                        let p = &card.rgba[i..i + 4];
                        let c = Color {
                            r: p[0],
                            g: p[1],
                            b: p[2],
                            a: p[3],
                        };
                        if c.contrast(&style.label_background) >= 3.0 {
                            strong += 1;
                        }
                    }
                }
                let solid = count_near(&card, rect, style.label_color, 24);
                assert!(
                    strong * 100 >= area * 8,
                    "width {w}: {strong} text pixels of {area}"
                );
                assert!(solid >= 10, "width {w}: {solid} label-coloured pixels");
                // The organic card has nothing of the kind there.
                let rect_plain = (
                    x,
                    y,
                    rw.min(plain.width - x),
                    rh.min(plain.height.saturating_sub(y)),
                );
                assert_eq!(
                    count_near(&plain, rect_plain, style.label_background, 2),
                    0,
                    "width {w}"
                );
            }
        }
    }

    #[test]
    fn cjk_title_renders_with_the_configured_font() {
        let Some(path) = cjk_font() else { return };
        let title = "无线降噪蓝牙耳机超长续航三十小时快充版配便携收纳盒和数据线";
        let mut latin_only = Fonts::new(&[]).unwrap();
        assert!(!latin_only.covers(title));
        let mut fonts = Fonts::new(&[path]).expect("CJK font");
        assert!(fonts.covers(title));
        let style = style();
        let img = photo_fixture();
        let c = content(title, false, Some(&img));
        let l = layout(&mut fonts, &style, &c);
        // No spaces, yet it wraps to the allowed lines and is cut with an ellipsis.
        assert_eq!(
            l.title_lines().len(),
            style.max_title_lines as usize,
            "{:?}",
            l.title_lines()
        );
        assert!(l.title_lines()[1].ends_with('…'));
        let card = render(&mut fonts, &style, &c, &l, 640);
        let latin_layout = layout(&mut latin_only, &style, &c);
        let boxes = render(&mut latin_only, &style, &c, &latin_layout, 640);
        // Title pixels in the text column: full-coverage glyph pixels in the title colour.
        let x = (l.text_x * 640.0) as u32;
        let rect = (x, 0, card.width - x, card.height);
        let ink = count_near(&card, rect, style.title_color, 8);
        assert!(ink > 500, "{ink} title pixels");
        assert_ne!(card.rgba, boxes.rgba);
    }

    /// Writes sample cards as PNGs for a person to look at:
    /// `cargo test preview -- --ignored --nocapture`; `TEST_CARD_PREVIEW_IMAGE` names a
    /// product photo (PNG, JPEG or WebP), else a generated gradient is used.
    #[test]
    #[ignore]
    fn preview() {
        let photo = match std::env::var_os("TEST_CARD_PREVIEW_IMAGE") {
            Some(p) => {
                let img = image::open(&p).expect("preview image").to_rgba8();
                ProductImage {
                    width: img.width(),
                    height: img.height(),
                    rgba: img.into_raw(),
                }
            }
            None => photo_fixture(),
        };
        let mut extra = Vec::new();
        extra.extend(cjk_font());
        let mut fonts = Fonts::new(&extra).unwrap();
        let dir = std::env::temp_dir().join("card-preview");
        std::fs::create_dir_all(&dir).unwrap();
        let styles = [
            ("default", style()),
            (
                "light",
                TagStyle::parse(include_str!("../../pipelines/tags/light.toml")).unwrap(),
            ),
        ];
        let samples = [
            (LONG_TITLE, "$199.99", true, true),
            ("Ceramic Coffee Mug", "19,99\u{A0}€", false, true),
            (
                "Наушники беспроводные Bluetooth с шумоподавлением",
                "12\u{A0}999,00\u{A0}₽",
                true,
                false,
            ),
            (
                "无线降噪蓝牙耳机超长续航三十小时快充版",
                "¥1,999",
                true,
                true,
            ),
        ];
        for (name, style) in &styles {
            for (i, (title, price, sponsored, with_image)) in samples.iter().enumerate() {
                let c = CardContent {
                    title,
                    price,
                    sponsored: *sponsored,
                    image: with_image.then_some(&photo),
                };
                let l = layout(&mut fonts, style, &c);
                for w in [160u32, 432, 800] {
                    let card = render(&mut fonts, style, &c, &l, w);
                    // Demultiply for PNG and put on a mid-grey "video" so translucency shows.
                    let mut out = image::RgbaImage::new(card.width + 40, card.height + 40);
                    for p in out.pixels_mut() {
                        *p = image::Rgba([96, 110, 120, 255]);
                    }
                    for y in 0..card.height {
                        for x in 0..card.width {
                            let i = ((y * card.width + x) * 4) as usize;
                            let s = &card.rgba[i..i + 4];
                            let d = out.get_pixel_mut(x + 20, y + 20);
                            for ch in 0..3 {
                                d.0[ch] = (u32::from(s[ch])
                                    + u32::from(d.0[ch]) * (255 - u32::from(s[3])) / 255)
                                    as u8;
                            }
                        }
                    }
                    let path = dir.join(format!("{name}-{i}-{w}.png"));
                    out.save(&path).unwrap();
                    println!("{}", path.display());
                    if w == 160 {
                        // The 360p card as a viewer's phone shows it, about 4x.
                        let (zw, zh) = (out.width() * 4, out.height() * 4);
                        let zoom = image::imageops::resize(
                            &out,
                            zw,
                            zh,
                            image::imageops::FilterType::Nearest,
                        );
                        zoom.save(dir.join(format!("{name}-{i}-{w}-x4.png")))
                            .unwrap();
                    }
                }
            }
        }
        // Timing of a 1080p-sized card (release builds: `cargo test --release preview`).
        let mut cold = Fonts::new(&[]).unwrap();
        let c = content(LONG_TITLE, true, Some(&photo));
        let start = std::time::Instant::now();
        let l = layout(&mut cold, &style(), &c);
        std::hint::black_box(render(&mut cold, &style(), &c, &l, 800));
        println!(
            "first layout + render 800 px (empty glyph cache): {:?}",
            start.elapsed()
        );
        let c = content(LONG_TITLE, true, Some(&photo));
        let l = layout(&mut fonts, &style(), &c);
        let start = std::time::Instant::now();
        let n = 20;
        for _ in 0..n {
            std::hint::black_box(render(&mut fonts, &style(), &c, &l, 800));
        }
        println!("render 800 px: {:?} per card", start.elapsed() / n);
        let c = content(LONG_TITLE, true, None);
        let l = layout(&mut fonts, &style(), &c);
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(render(&mut fonts, &style(), &c, &l, 800));
        }
        println!(
            "render 800 px without photo: {:?} per card",
            start.elapsed() / n
        );
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(layout(&mut fonts, &style(), &c));
        }
        println!("layout: {:?} per card", start.elapsed() / n);
    }
}
