//! What a job asks of shoppable tags (`tags`), and its validation at the HTTP
//! edge. What needs the video (its duration, its frame shape, the drawn card's
//! height) is checked when the job runs, by [`super::layout`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::price;
use crate::presets::{Kind, Presets};
use crate::store::ObjectKey;
use crate::validation::FieldError;

/// Most tags on one video.
pub const MAX_TAGS: usize = 32;
/// Longest title, in characters (any script).
pub const MAX_TITLE_CHARS: usize = 120;
/// Longest `id` and `product_id`.
/// Narrowest card, as a fraction of the frame width.
const MIN_WIDTH: f64 = 0.1;
/// Shortest window a tag may be shown for, in seconds.
pub const MIN_WINDOW_S: f64 = 0.2;

/// A product tag: drawn as a card into every rendition between `start` and
/// `end`, and published as timed data (JSON sidecar, WebVTT metadata, HLS
/// `EXT-X-DATERANGE`) with the rectangle where it was drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TagSpec {
    /// Unique within the job; letters, digits, `.`, `_`, `-`, `:`.
    #[schema(example = "t1")]
    pub id: String,
    /// The shop's product id, passed through to the timed data so a player can
    /// open the product page.
    #[schema(example = "p-42")]
    pub product_id: String,
    /// Shown on the card (at most 120 characters, any script; wrapped to the
    /// style's line limit, with an ellipsis if it does not fit).
    #[schema(example = "Blender Pro 3000")]
    pub title: String,
    pub price: PriceSpec,
    /// Store key of a product photo (JPEG, PNG or WebP) drawn on the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "shop-1/products/42/photo.jpg")]
    pub image: Option<ObjectKey>,
    /// A paid placement: the card carries a clearly visible "Sponsored" label.
    #[serde(default)]
    pub sponsored: bool,
    /// When the card appears, in seconds from the start of the video.
    #[schema(example = 2.0)]
    pub start: f64,
    /// When it is gone (it fades in after `start` and out before `end`).
    #[schema(example = 6.0)]
    pub end: f64,
    pub position: PositionSpec,
    /// A style from `pipelines/tags/` (default `default`).
    #[serde(default = "default_style")]
    #[schema(example = "default")]
    pub style: String,
    /// BCP 47 language tag for the price format (`en-US`, `de-DE`); by default
    /// the currency's home convention (`$19.99`, `19,99 €`, `¥1,999`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "en-US")]
    pub locale: Option<String>,
}

fn default_style() -> String {
    "default".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// A decimal string (`"49.99"`), never a float, with no more decimals than
    /// the currency has.
    #[schema(example = "49.99")]
    pub amount: String,
    /// ISO 4217 code.
    #[schema(example = "USD")]
    pub currency: String,
}

/// Where the card goes, in coordinates normalised to the upright frame (0..1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PositionSpec {
    /// Left edge of the card.
    #[schema(example = 0.05)]
    pub x: f64,
    /// Top edge of the card.
    #[schema(example = 0.7)]
    pub y: f64,
    /// Card width as a fraction of the frame width (default: the style's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.4)]
    pub width: Option<f64>,
}

/// Checks `tags` (at `field`, e.g. `tags`) against what is known before the
/// video is read.
pub fn validate(tags: &[TagSpec], presets: &Presets, field: &str, errors: &mut Vec<FieldError>) {
    if tags.len() > MAX_TAGS {
        errors.push(FieldError::new(
            field,
            format!("at most {MAX_TAGS} tags per job"),
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        let at = |name: &str| format!("{field}[{i}].{name}");
        if let Err(m) = crate::validation::check_id(&tag.id) {
            errors.push(FieldError::new(at("id"), m));
        } else if tags[..i].iter().any(|t| t.id == tag.id) {
            errors.push(FieldError::new(at("id"), "another tag has this id"));
        }
        if let Err(m) = crate::validation::check_id(&tag.product_id) {
            errors.push(FieldError::new(at("product_id"), m));
        }
        let chars = tag.title.chars().count();
        if tag.title.trim().is_empty() {
            errors.push(FieldError::new(at("title"), "must not be empty"));
        } else if chars > MAX_TITLE_CHARS {
            errors.push(FieldError::new(
                at("title"),
                format!("{chars} characters; at most {MAX_TITLE_CHARS}"),
            ));
        } else if tag.title.chars().any(char::is_control) {
            errors.push(FieldError::new(
                at("title"),
                "must not contain control characters (line breaks included)",
            ));
        }
        if let Err(e) = price::validate(&tag.price.amount, &tag.price.currency) {
            errors.push(FieldError::new(
                format!("{field}[{i}].price.{}", e.field()),
                e.to_string(),
            ));
        } else if let Some(locale) = &tag.locale
            && !valid_locale(locale)
        {
            errors.push(FieldError::new(
                at("locale"),
                "a BCP 47 language tag such as `en-US` or `de`",
            ));
        }
        if !tag.start.is_finite() || tag.start < 0.0 {
            errors.push(FieldError::new(at("start"), "seconds, 0 or more"));
        }
        if !tag.end.is_finite() || tag.end < tag.start + MIN_WINDOW_S {
            errors.push(FieldError::new(
                at("end"),
                format!("seconds, at least {MIN_WINDOW_S} after `start`"),
            ));
        }
        let p = &tag.position;
        for (name, v) in [("x", p.x), ("y", p.y)] {
            if !(0.0..=1.0).contains(&v) {
                errors.push(FieldError::new(
                    format!("{field}[{i}].position.{name}"),
                    "a fraction of the frame, 0 to 1",
                ));
            }
        }
        let style = presets.tag_style(&tag.style);
        match style {
            None => {
                let known: Vec<&str> = presets.names(Kind::Tags);
                errors.push(FieldError::new(
                    at("style"),
                    format!("no tag style `{}` (known: {})", tag.style, known.join(", ")),
                ));
            }
            Some(style) => {
                let m = style.safe_margins;
                let room = 1.0 - f64::from(m.left) - f64::from(m.right);
                if let Some(w) = p.width
                    && !(MIN_WIDTH..=room).contains(&w)
                {
                    errors.push(FieldError::new(
                        format!("{field}[{i}].position.width"),
                        format!(
                            "a fraction of the frame width from {MIN_WIDTH} to {room:.2} \
                             (the width inside style `{}`'s safe margins)",
                            tag.style
                        ),
                    ));
                }
            }
        }
    }
}

fn valid_locale(locale: &str) -> bool {
    !locale.is_empty()
        && locale.len() <= 35
        && locale.split('-').all(|part| {
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tag(v: serde_json::Value) -> TagSpec {
        serde_json::from_value(v).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({"id": "t1", "product_id": "p-42", "title": "Blender Pro 3000",
               "price": {"amount": "49.99", "currency": "USD"}, "sponsored": true,
               "start": 2.0, "end": 6.0, "position": {"x": 0.05, "y": 0.70, "width": 0.4},
               "style": "default"})
    }

    fn errors_of(tags: &[TagSpec]) -> Vec<FieldError> {
        let presets = Presets::builtin().unwrap();
        let mut errors = Vec::new();
        validate(tags, &presets, "tags", &mut errors);
        errors
    }

    #[test]
    fn the_documented_example_is_valid() {
        assert_eq!(errors_of(&[tag(good())]), vec![]);
    }

    #[test]
    fn each_problem_names_its_field() {
        let mut bad = good();
        bad["price"]["currency"] = json!("XYZ");
        bad["end"] = json!(1.0);
        bad["position"]["x"] = json!(1.5);
        bad["title"] = json!("two\nlines");
        bad["style"] = json!("neon");
        let fields: Vec<String> = errors_of(&[tag(bad)])
            .into_iter()
            .map(|e| e.field)
            .collect();
        for f in [
            "tags[0].price.currency",
            "tags[0].end",
            "tags[0].position.x",
            "tags[0].title",
            "tags[0].style",
        ] {
            assert!(fields.iter().any(|g| g == f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn ids_are_unique_and_plain() {
        let mut second = good();
        second["product_id"] = json!("p 42\"");
        let errors = errors_of(&[tag(good()), tag(second)]);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["tags[1].id", "tags[1].product_id"]);
    }

    #[test]
    fn a_card_wider_than_the_safe_area_is_refused() {
        let mut wide = good();
        wide["position"]["width"] = json!(0.99);
        let errors = errors_of(&[tag(wide)]);
        assert_eq!(errors[0].field, "tags[0].position.width");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut extra = good();
        extra["colour"] = json!("red");
        assert!(serde_json::from_value::<TagSpec>(extra).is_err());
    }
}
