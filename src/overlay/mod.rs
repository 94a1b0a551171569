//! Shoppable tags: product cards burned into every rendition, and the same tags
//! as timed data a player can make tappable.
//!
//! | module     | owns                                                         |
//! |------------|--------------------------------------------------------------|
//! | [`spec`]   | the job's `tags` and their validation                        |
//! | [`style`]  | tag styles from `pipelines/tags/`                            |
//! | [`text`]   | fonts (shipped Noto Sans subset + configured fallbacks)      |
//! | [`price`]  | prices formatted for their currency                          |
//! | [`card`]   | drawing one card (text shaping, product image, disclosure)   |
//! | [`layout`] | where cards go: safe margins, no overlaps                    |
//! | [`blend`]  | blending cards into I420 frames on the encoders' inputs      |
//! | [`timed`]  | JSON sidecar, WebVTT metadata, HLS date ranges               |
//!
//! [`prepare`] does all the drawing before the transcode starts: each card is
//! laid out once (so its line breaks and shape are the same everywhere), placed
//! once (so every rendition and the timed data share one rectangle), and drawn
//! once per rendition size at that size, so text is crisp at 360p and 1080p.
//! During the transcode only the blending runs, inside each card's rectangle
//! and window.

pub mod blend;
pub mod card;
pub mod layout;
pub mod price;
pub mod spec;
pub mod style;
pub mod text;
pub mod timed;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use blend::{BurnIn, Scheduled, YuvCard};
use card::{CardContent, ProductImage};
use layout::{Item, LayoutError};
use spec::TagSpec;
use timed::TimedTag;

use crate::presets::Presets;

/// How preparing a job's tags failed. Codes are stable (`code()`).
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("tag fonts: {0}")]
    Fonts(#[from] text::FontError),
    #[error(
        "tag `{id}`: its text has characters none of this node's fonts can draw; add a font that has them with MEDIA_NODE_TAG_FONTS (`tag_fonts`)"
    )]
    MissingGlyphs { id: String },
    #[error(
        "tag `{id}` starts at {start} s, too close to the end of the video ({duration:.2} s) to be shown"
    )]
    OutsideVideo {
        id: String,
        start: f64,
        duration: f64,
    },
    #[error("tag `{id}`: {message}")]
    Invalid { id: String, message: String },
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// An entry of `result.outputs` for the timed data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TagOutput {
    /// The JSON sidecar: every tag with its window and rectangle.
    TagsJson(TagsOutput),
    /// The WebVTT metadata track: one cue per tag carrying its JSON.
    TagsVtt(TagsOutput),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TagsOutput {
    pub key: String,
    /// How many tags it lists.
    pub tags: usize,
    pub bytes: u64,
}

/// A rendition the tags are drawn into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub width: u32,
    pub height: u32,
}

/// A job's tags, drawn and placed.
#[derive(Debug)]
pub struct Prepared {
    /// What the timed data publishes, in the job's order.
    pub tags: Vec<TimedTag>,
    /// What each rendition burns in, by rendition name.
    pub burn_ins: HashMap<String, Arc<BurnIn>>,
    /// The frame the rectangles are normalised to (the largest rendition).
    pub frame: (u32, u32),
}

impl Prepared {
    /// Windows in which some tag is shown: where an `auto` poster should look.
    pub fn windows(&self) -> Vec<(f64, f64)> {
        self.tags.iter().map(|t| (t.start, t.end)).collect()
    }
}

/// Lays out, places and draws `tags` for `targets` (upright sizes, all of one
/// aspect ratio), for a video of `duration_s`. `images` holds the decoded
/// product photos by store key. CPU-bound: call it on the blocking pool.
pub fn prepare(
    tags: &[TagSpec],
    presets: &Presets,
    font_files: &[PathBuf],
    images: &HashMap<String, ProductImage>,
    targets: &[Target],
    duration_s: f64,
) -> Result<Prepared, OverlayError> {
    let mut fonts = text::Fonts::new(font_files)?;
    let Some(reference) = targets.iter().max_by_key(|t| t.width * t.height) else {
        return Ok(Prepared {
            tags: Vec::new(),
            burn_ins: HashMap::new(),
            frame: (0, 0),
        });
    };
    let narrowest = targets
        .iter()
        .map(|t| t.width)
        .min()
        .unwrap_or(reference.width);

    struct Laid<'a> {
        spec: &'a TagSpec,
        style: &'a style::TagStyle,
        price: String,
        layout: card::CardLayout,
        end: f64,
    }
    let mut laid = Vec::with_capacity(tags.len());
    let mut items = Vec::with_capacity(tags.len());
    for tag in tags {
        let invalid = |message: String| OverlayError::Invalid {
            id: tag.id.clone(),
            message,
        };
        let style = presets
            .tag_style(&tag.style)
            .ok_or_else(|| invalid(format!("no tag style `{}`", tag.style)))?;
        let price = price::format(
            &tag.price.amount,
            &tag.price.currency,
            tag.locale.as_deref(),
        )
        .map_err(|e| invalid(e.to_string()))?;
        if !fonts.covers(&tag.title)
            || !fonts.covers(&price)
            || !fonts.covers(&style.sponsored_text)
        {
            return Err(OverlayError::MissingGlyphs { id: tag.id.clone() });
        }
        if tag.end.min(duration_s) - tag.start < spec::MIN_WINDOW_S {
            return Err(OverlayError::OutsideVideo {
                id: tag.id.clone(),
                start: tag.start,
                duration: duration_s,
            });
        }
        let end = tag.end.min(duration_s);
        let image = tag.image.as_ref().and_then(|k| images.get(k.as_str()));
        let content = CardContent {
            title: &tag.title,
            price: &price,
            sponsored: tag.sponsored,
            image,
        };
        let card_layout = card::layout(&mut fonts, style, &content);
        let m = style.safe_margins;
        // Never narrower than the style's legible minimum in the smallest
        // rendition; the same fraction everywhere.
        let w = tag
            .position
            .width
            .unwrap_or(f64::from(style.default_width))
            .max(f64::from(style.min_width_px) / f64::from(narrowest.max(1)));
        items.push(Item {
            id: tag.id.clone(),
            start: tag.start,
            end,
            x: tag.position.x,
            y: tag.position.y,
            w,
            card_aspect: card_layout.aspect(),
            margins: [m.top, m.bottom, m.left, m.right].map(f64::from),
        });
        laid.push(Laid {
            spec: tag,
            style,
            price,
            layout: card_layout,
            end,
        });
    }
    let rects = layout::place(&items, reference.width, reference.height)?;

    let mut burn_ins = HashMap::new();
    for target in targets {
        let mut cards = Vec::with_capacity(laid.len());
        for (l, rect) in laid.iter().zip(&rects) {
            let px = rect.to_pixels(target.width, target.height, l.layout.aspect());
            let image = l.spec.image.as_ref().and_then(|k| images.get(k.as_str()));
            let content = CardContent {
                title: &l.spec.title,
                price: &l.price,
                sponsored: l.spec.sponsored,
                image,
            };
            let drawn = card::render(&mut fonts, l.style, &content, &l.layout, px.w);
            // The card's height follows from its width the same way the
            // rectangle's does; trust the drawing if they ever disagree.
            let px = layout::PixelRect {
                h: drawn.height.min(target.height - px.y),
                ..px
            };
            let drawn = drawn.crop_height(px.h);
            cards.push(Scheduled {
                card: YuvCard::new(&drawn, px),
                start_s: l.spec.start,
                end_s: l.end,
                fade_s: f64::from(l.style.fade_ms) / 1000.0,
            });
        }
        burn_ins.insert(target.name.clone(), Arc::new(BurnIn { cards }));
    }
    let tags = laid
        .iter()
        .zip(&rects)
        .map(|(l, rect)| TimedTag::new(l.spec, l.price.clone(), l.spec.start, l.end, *rect))
        .collect();
    Ok(Prepared {
        tags,
        burn_ins,
        frame: (reference.width, reference.height),
    })
}
