//! Product pins: a shoppable tag pinned on a live stream from now until it is
//! unpinned. Live streams are relayed without re-encoding, so a pin is not
//! burned in: it travels as an `EXT-X-DATERANGE` (class
//! `com.media-node.product-tag`, the same as video tags) that players turn
//! into a tappable card, in the live playlist while it matters and in the
//! replay for good.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::overlay::price;
use crate::overlay::spec::{PositionSpec, PriceSpec, TagSpec};
use crate::presets::Presets;
use crate::store::ObjectKey;
use crate::validation::FieldError;

/// Pins open on one stream at once.
pub const MAX_OPEN_PINS: usize = 32;

/// A product to pin: the fields of a shoppable tag, without times (a pin runs
/// from when it is posted until it is deleted or the stream ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinSpec {
    /// Unique within the stream; letters, digits, `.`, `_`, `-`, `:`.
    #[schema(example = "pin-1")]
    pub id: String,
    #[schema(example = "p-42")]
    pub product_id: String,
    #[schema(example = "Blender Pro 3000")]
    pub title: String,
    pub price: PriceSpec,
    /// Store key of a product photo for the player's card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "shop-1/products/42/photo.jpg")]
    pub image: Option<ObjectKey>,
    /// A paid placement: players must show a "Sponsored" disclosure.
    #[serde(default)]
    pub sponsored: bool,
    pub position: PositionSpec,
    #[serde(default = "default_style")]
    #[schema(example = "default")]
    pub style: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "en-US")]
    pub locale: Option<String>,
}

fn default_style() -> String {
    "default".into()
}

impl PinSpec {
    /// The same rules as a shoppable tag's (ids, title, price, position,
    /// style).
    pub fn validate(&self, presets: &Presets) -> Result<(), Vec<FieldError>> {
        let tag = TagSpec {
            id: self.id.clone(),
            product_id: self.product_id.clone(),
            title: self.title.clone(),
            price: self.price.clone(),
            image: self.image.clone(),
            sponsored: self.sponsored,
            start: 0.0,
            end: 1.0,
            position: self.position,
            style: self.style.clone(),
            locale: self.locale.clone(),
        };
        let mut errors = Vec::new();
        crate::overlay::spec::validate(std::slice::from_ref(&tag), presets, "pin", &mut errors);
        if errors.is_empty() {
            return Ok(());
        }
        // `pin[0].title` → `title`: the body is one pin.
        for e in &mut errors {
            if let Some(rest) = e.field.strip_prefix("pin[0].") {
                e.field = rest.to_string();
            }
        }
        Err(errors)
    }

    /// Client attributes of its `EXT-X-DATERANGE`: what a player needs to
    /// draw the card and open the product. Quoted strings cannot hold `"`, so
    /// the title's quotes become typographic ones.
    pub fn attributes(&self) -> String {
        let price = price::format(
            &self.price.amount,
            &self.price.currency,
            self.locale.as_deref(),
        )
        .unwrap_or_else(|_| format!("{} {}", self.price.amount, self.price.currency));
        let mut out = format!(
            "X-PRODUCT-ID=\"{}\",X-TITLE=\"{}\",X-PRICE=\"{}\",X-SPONSORED=\"{}\",\
             X-POS-X={:.4},X-POS-Y={:.4}",
            self.product_id,
            quoted(&self.title),
            quoted(&price),
            if self.sponsored { "YES" } else { "NO" },
            self.position.x,
            self.position.y,
        );
        if let Some(w) = self.position.width {
            out.push_str(&format!(",X-POS-W={w:.4}"));
        }
        if let Some(image) = &self.image {
            out.push_str(&format!(",X-IMAGE=\"{}\"", quoted(image.as_str())));
        }
        out
    }
}

fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\u{201D}',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(json: serde_json::Value) -> PinSpec {
        serde_json::from_value(json).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "id": "pin-1", "product_id": "p-42", "title": "Blender \"Pro\" 3000",
            "price": {"amount": "49.99", "currency": "EUR"}, "sponsored": true,
            "position": {"x": 0.05, "y": 0.7}
        })
    }

    #[test]
    fn a_pin_becomes_daterange_attributes_without_breaking_quotes() {
        let presets = Presets::builtin().unwrap();
        let p = pin(good());
        p.validate(&presets).unwrap();
        let a = p.attributes();
        assert!(
            a.starts_with("X-PRODUCT-ID=\"p-42\",X-TITLE=\"Blender \u{201D}Pro\u{201D} 3000\""),
            "{a}"
        );
        assert!(a.contains("X-PRICE=\"49,99\u{a0}€\""), "{a}");
        assert!(
            a.contains("X-SPONSORED=\"YES\",X-POS-X=0.0500,X-POS-Y=0.7000"),
            "{a}"
        );
        assert_eq!(a.matches('"').count() % 2, 0);
    }

    #[test]
    fn pins_follow_the_tag_rules_with_plain_field_names() {
        let presets = Presets::builtin().unwrap();
        let mut bad = good();
        bad["id"] = "no spaces".into();
        bad["price"]["amount"] = "4.999".into();
        bad["position"]["x"] = 2.0.into();
        let errors = pin(bad).validate(&presets).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"id"), "{fields:?}");
        assert!(fields.contains(&"price.amount"), "{fields:?}");
        assert!(fields.contains(&"position.x"), "{fields:?}");
    }
}
