//! Text for tag cards: fonts, shaping, line breaking and glyph drawing.
//!
//! Shaping (with bidi and script itemisation), font fallback and line wrapping are done by
//! `cosmic-text` (HarfRust shaping); glyphs are rasterised by `swash` through cosmic-text's
//! [`SwashCache`] and blended here into a premultiplied RGBA buffer. Only the embedded Noto
//! Sans subset and font files named in configuration are ever loaded — never system fonts —
//! so a card renders to the same bytes on every machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cosmic_text::fontdb::{self, Source};
use cosmic_text::{
    Attrs, Buffer, Family, FontSystem, Metrics, Shaping, SwashCache, SwashContent, Wrap,
};

/// The embedded font: Noto Sans Regular 2.004, subset to Latin, Greek, Cyrillic, punctuation
/// and currency symbols (SIL Open Font License 1.1, see `assets/fonts/OFL.txt`).
static NOTO_SANS_LGC: &[u8] = include_bytes!("../../assets/fonts/NotoSans-Regular-LGC.ttf");

/// Family name of the embedded font; every card text asks for it first.
pub const PRIMARY_FAMILY: &str = "Noto Sans";

/// Line height as a multiple of the font size, for every text on a card.
pub(super) const LINE_HEIGHT: f32 = 1.25;

/// Synthetic bold for the single shipped (regular) weight, as a fraction of the font size:
/// each glyph is drawn twice, the second time this far to the right, which thickens vertical
/// strokes. Used for the price and the "Sponsored" pill so both stay legible at 360p.
pub(super) const FAUX_BOLD: f32 = 0.04;

/// Glyph images kept between renders before the cache is emptied (each size of each glyph is
/// one entry; a card at four rendition sizes uses a few hundred).
const MAX_CACHED_GLYPHS: usize = 4096;

/// Fonts for tag cards: the embedded Noto Sans subset (Latin, Greek, Cyrillic) first, then any
/// font files from configuration (for CJK and other scripts) as fallbacks. Never reads system fonts,
/// so output is identical on every machine.
pub struct Fonts {
    pub(super) system: FontSystem,
    pub(super) swash: SwashCache,
}

/// A configured font file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FontError {
    /// The file could not be read.
    #[error("cannot read font file {}: {}", .0.display(), .1)]
    Read(PathBuf, #[source] std::io::Error),
    /// The file holds no usable TrueType/OpenType face.
    #[error("{} is not a TrueType/OpenType font (.ttf, .otf, .ttc)", .0.display())]
    NotAFont(PathBuf),
}

impl std::fmt::Debug for Fonts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faces: Vec<_> = self
            .system
            .db()
            .faces()
            .map(|f| f.post_script_name.as_str())
            .collect();
        f.debug_struct("Fonts")
            .field("faces", &faces)
            .finish_non_exhaustive()
    }
}

/// A colour with straight alpha, as drawn by [`Fonts::draw`].
pub(super) type Rgba = [u8; 4];

/// A clip rectangle in pixels: `x0..x1`, `y0..y1`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clip {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Fonts {
    /// The embedded font, then each of `extra` (in order) as fallbacks for characters it lacks.
    pub fn new(extra: &[PathBuf]) -> Result<Fonts, FontError> {
        let mut db = fontdb::Database::new(); // empty: system fonts are never scanned
        db.load_font_source(Source::Binary(Arc::new(NOTO_SANS_LGC)));
        db.set_sans_serif_family(PRIMARY_FAMILY);
        for path in extra {
            db.load_font_source(Source::Binary(Arc::new(read(path)?)))
                .first()
                .ok_or_else(|| FontError::NotAFont(path.clone()))?;
        }
        Ok(Fonts {
            system: FontSystem::new_with_locale_and_db("en-US".into(), db),
            swash: SwashCache::new(),
        })
    }

    /// True when every non-whitespace char of `text` has a glyph in some loaded font (used to refuse titles
    /// that would render as boxes, with a message suggesting the font setting).
    ///
    /// Checked by shaping `text` the way a card does, so it agrees with what would be drawn.
    pub fn covers(&mut self, text: &str) -> bool {
        let buffer = self.shape(text, 16.0, None);
        buffer.layout_runs().all(|run| {
            run.glyphs.iter().all(|g| {
                g.glyph_id != 0
                    || run
                        .text
                        .get(g.start..g.end)
                        .is_none_or(|s| s.chars().all(char::is_whitespace))
            })
        })
    }

    /// `text` shaped at `size_px`, wrapped by words (or by glyphs when a word is too long, and
    /// for scripts without spaces) to `width_px`, or on one line when `width_px` is None.
    pub(super) fn shape(&mut self, text: &str, size_px: f32, width_px: Option<f32>) -> Buffer {
        let size_px = size_px.max(0.5);
        let mut buffer = Buffer::new(
            &mut self.system,
            Metrics::new(size_px, size_px * LINE_HEIGHT),
        );
        buffer.set_wrap(if width_px.is_some() {
            Wrap::WordOrGlyph
        } else {
            Wrap::None
        });
        buffer.set_size(width_px, None);
        let attrs = Attrs::new().family(Family::Name(PRIMARY_FAMILY));
        buffer.set_text(text, &attrs, Shaping::Advanced, None);
        buffer.shape_until_scroll(&mut self.system, false);
        buffer
    }

    /// Width in pixels of `text` on one line at `size_px`.
    pub(super) fn measure(&mut self, text: &str, size_px: f32) -> f32 {
        let buffer = self.shape(text, size_px, None);
        buffer.layout_runs().map(|r| r.line_w).fold(0.0, f32::max)
    }

    /// Byte ranges of `text`'s lines when wrapped to `width_px` at `size_px`, in reading order.
    /// Consecutive ranges meet (spaces at a break belong to the line before).
    pub(super) fn wrap(
        &mut self,
        text: &str,
        size_px: f32,
        width_px: f32,
    ) -> Vec<std::ops::Range<usize>> {
        let buffer = self.shape(text, size_px, Some(width_px.max(1.0)));
        // A visual line's glyphs may be reordered (bidi), but it always covers one logical range.
        let mut starts: Vec<usize> = buffer
            .layout_runs()
            .filter_map(|run| run.glyphs.iter().map(|g| g.start).min())
            .collect();
        starts.sort_unstable();
        starts.dedup();
        if let Some(first) = starts.first_mut() {
            *first = 0;
        }
        let ends = starts.iter().skip(1).copied().chain([text.len()]);
        starts.iter().zip(ends).map(|(&s, e)| s..e).collect()
    }

    /// Draws `text` on one line, its top-left at (`x`, `y`) and `width` wide (right-to-left
    /// text aligns right), into `rgba` (premultiplied RGBA8, `stride` = width * 4), blending
    /// `color` source-over, only inside `clip`. `bold` > 0 draws a synthetic bold (see
    /// [`FAUX_BOLD`]): the glyphs are drawn a second time shifted right by `bold * size_px`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn draw(
        &mut self,
        rgba: &mut [u8],
        stride_px: u32,
        text: &str,
        size_px: f32,
        (x, y, width): (f32, f32, f32),
        color: Rgba,
        clip: Clip,
        bold: f32,
    ) {
        if self.swash.image_cache.len() > MAX_CACHED_GLYPHS {
            self.swash.image_cache.clear();
        }
        let mut buffer = self.shape(text, size_px, None);
        // Alignment needs a width; with Wrap::None the line never breaks.
        buffer.set_size(Some(width.max(1.0)), None);
        buffer.shape_until_scroll(&mut self.system, false);
        let height = (rgba.len() / (stride_px as usize * 4).max(1)) as i32;
        let clip = Clip {
            x0: clip.x0.max(0),
            y0: clip.y0.max(0),
            x1: clip.x1.min(stride_px as i32),
            y1: clip.y1.min(height),
        };
        let shift = (bold * size_px).max(0.0);
        let passes: &[f32] = if shift > 0.0 { &[0.0, shift] } else { &[0.0] };
        for run in buffer.layout_runs() {
            for (glyph, &dx) in run
                .glyphs
                .iter()
                .flat_map(|g| passes.iter().map(move |dx| (g, dx)))
            {
                let physical = glyph.physical((x + dx, y + run.line_y), 1.0);
                let Some(image) = self.swash.get_image(&mut self.system, physical.cache_key) else {
                    continue;
                };
                let p = image.placement;
                let (left, top) = (physical.x + p.left, physical.y - p.top);
                let channels = match image.content {
                    SwashContent::Mask => 1,
                    SwashContent::Color => 4,
                    SwashContent::SubpixelMask => continue, // not requested (Format::Alpha)
                };
                for row in 0..p.height as i32 {
                    let py = top + row;
                    if py < clip.y0 || py >= clip.y1 {
                        continue;
                    }
                    for col in 0..p.width as i32 {
                        let px = left + col;
                        if px < clip.x0 || px >= clip.x1 {
                            continue;
                        }
                        let src = (row as usize * p.width as usize + col as usize) * channels;
                        let (c, coverage) = match channels {
                            1 => (color, image.data.get(src).copied().unwrap_or(0)),
                            _ => match image.data.get(src..src + 4) {
                                Some(&[r, g, b, a]) => ([r, g, b, color[3]], a),
                                _ => continue,
                            },
                        };
                        let dst = (py as usize * stride_px as usize + px as usize) * 4;
                        let pixel = rgba.get_mut(dst..dst + 4).and_then(|d| d.try_into().ok());
                        if let Some(d) = pixel {
                            blend(d, c, coverage);
                        }
                    }
                }
            }
        }
    }
}

/// `x * y / 255`, rounded, for bytes.
#[inline]
pub(super) fn mul255(x: u32, y: u32) -> u32 {
    let t = x * y + 128;
    (t + (t >> 8)) >> 8
}

/// Premultiplied source-over of straight `color` at `coverage` onto the premultiplied pixel `d`.
#[inline]
fn blend(d: &mut [u8; 4], color: Rgba, coverage: u8) {
    let sa = mul255(u32::from(color[3]), u32::from(coverage));
    if sa == 0 {
        return;
    }
    let keep = 255 - sa;
    for i in 0..3 {
        d[i] = (mul255(u32::from(color[i]), sa) + mul255(u32::from(d[i]), keep)) as u8;
    }
    d[3] = (sa + mul255(u32::from(d[3]), keep)) as u8;
}

fn read(path: &Path) -> Result<Vec<u8>, FontError> {
    std::fs::read(path).map_err(|e| FontError::Read(path.to_owned(), e))
}

// Fonts is moved into worker threads; keep that true.
const _: () = {
    const fn send<T: Send>() {}
    send::<Fonts>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Path of a CJK font for tests, from `TEST_CJK_FONT` (e.g. Debian's
    /// `/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf`); None skips the test.
    fn cjk_font() -> Option<PathBuf> {
        match std::env::var_os("TEST_CJK_FONT") {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => {
                eprintln!("note: TEST_CJK_FONT is not set; skipping the CJK font check");
                None
            }
        }
    }

    #[test]
    fn embedded_font_covers_latin_greek_cyrillic() {
        let mut fonts = Fonts::new(&[]).unwrap();
        assert!(fonts.covers(
            "Wireless Headphones — Ελληνικά, Кириллица, Vä “quotes” ‘ok’ … 19,99\u{A0}€ ₹ ₽ ₴ ₺"
        ));
        assert!(fonts.covers(""));
        assert!(fonts.covers(" \t\n "));
        assert!(!fonts.covers("蓝牙耳机"));
        assert!(!fonts.covers("Headphones 🎧"));
        assert!(!fonts.covers("עברית"));
    }

    #[test]
    fn bad_font_files_are_refused() {
        let missing = PathBuf::from("/nonexistent/font.ttf");
        let e = Fonts::new(std::slice::from_ref(&missing)).unwrap_err();
        assert!(matches!(&e, FontError::Read(p, _) if *p == missing), "{e}");
        assert!(e.to_string().contains("/nonexistent/font.ttf"));
        let not_font =
            std::env::temp_dir().join(format!("card-not-a-font-{}.ttf", std::process::id()));
        std::fs::write(&not_font, b"this is not a font").unwrap();
        let e = Fonts::new(std::slice::from_ref(&not_font)).unwrap_err();
        let _ = std::fs::remove_file(&not_font);
        assert!(
            matches!(&e, FontError::NotAFont(p) if *p == not_font),
            "{e}"
        );
    }

    #[test]
    fn wrap_ranges_partition_the_text() {
        let mut fonts = Fonts::new(&[]).unwrap();
        let text = "Wireless noise cancelling headphones with a very long title";
        let lines = fonts.wrap(text, 20.0, 150.0);
        assert!(lines.len() > 2, "{lines:?}");
        assert_eq!(lines.first().map(|r| r.start), Some(0));
        assert_eq!(lines.last().map(|r| r.end), Some(text.len()));
        for pair in lines.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            // Word wrap: lines end at a space.
            assert!(
                text[pair[0].clone()].ends_with(' '),
                "{:?}",
                &text[pair[0].clone()]
            );
        }
        for r in &lines {
            assert!(fonts.measure(text[r.clone()].trim_end(), 20.0) <= 150.0);
        }
        assert!(fonts.wrap("", 20.0, 150.0).len() <= 1);
    }

    #[test]
    fn cjk_fallback_from_configured_font() {
        let Some(path) = cjk_font() else { return };
        let mut fonts = Fonts::new(&[path]).expect("CJK font");
        assert!(fonts.covers("蓝牙耳机 Bluetooth ヘッドホン"));
        // Droid Sans Fallback has no Hangul: still refused.
        assert!(!fonts.covers("무선 이어폰"));
        // No spaces: lines break between glyphs.
        let text = "蓝牙降噪耳机超长续航无线充电";
        let lines = fonts.wrap(text, 20.0, 100.0);
        assert!(lines.len() > 1, "{lines:?}");
    }
}
