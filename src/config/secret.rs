//! Secrets in settings: never printed, never serialised in clear.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MASK: &str = "********";

/// How a webhook signing secret starts (the Standard Webhooks format).
const WEBHOOK_SECRET_PREFIX: &str = "whsec_";
/// Shortest webhook signing key accepted.
const MIN_WEBHOOK_KEY_BYTES: usize = 24;

/// A secret string. `Debug`, `Display` and `Serialize` show a mask.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(Scalar::deserialize(d)?.0))
    }
}

/// Several secrets: a list in TOML, or comma-separated in one environment variable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.0.iter()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn push(&mut self, secret: Secret) {
        self.0.push(secret)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Serialize for Secrets {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<Scalar>),
            One(Scalar),
        }
        let items: Vec<String> = match OneOrMany::deserialize(d)? {
            OneOrMany::Many(v) => v.into_iter().map(|s| s.0).collect(),
            OneOrMany::One(s) => s.0.split(',').map(str::to_string).collect(),
        };
        Ok(Secrets(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(Secret)
                .collect(),
        ))
    }
}

/// Environment values are parsed as TOML-ish values, so a token made only of digits
/// arrives as a number: take any scalar as its text.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            S(String),
            I(i64),
            U(u64),
            F(f64),
            B(bool),
        }
        Ok(Scalar(match Any::deserialize(d)? {
            Any::S(s) => s,
            Any::I(i) => i.to_string(),
            Any::U(u) => u.to_string(),
            Any::F(f) => f.to_string(),
            Any::B(b) => b.to_string(),
        }))
    }
}

/// A new random API token: `mn_` and 32 random bytes in URL-safe base64.
pub fn generate_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "mn_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new random webhook signing secret in the Standard Webhooks format:
/// `whsec_` and 32 random bytes in base64.
pub fn generate_webhook_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{WEBHOOK_SECRET_PREFIX}{}", B64.encode(bytes))
}

/// The key bytes of a `whsec_...` webhook signing secret, or why it is not one.
pub fn decode_webhook_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(WEBHOOK_SECRET_PREFIX)
        .ok_or_else(|| format!("must start with `{WEBHOOK_SECRET_PREFIX}`"))?;
    let key = B64
        .decode(encoded)
        .map_err(|e| format!("not base64 after `{WEBHOOK_SECRET_PREFIX}`: {e}"))?;
    if key.len() < MIN_WEBHOOK_KEY_BYTES {
        return Err(format!(
            "the key must be at least {MIN_WEBHOOK_KEY_BYTES} bytes"
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_webhook_secrets_decode() {
        let s = generate_webhook_secret();
        assert_eq!(decode_webhook_secret(&s).unwrap().len(), 32);
    }

    #[test]
    fn webhook_secrets_are_checked() {
        assert!(
            decode_webhook_secret("plain")
                .unwrap_err()
                .contains("whsec_")
        );
        assert!(
            decode_webhook_secret("whsec_!!")
                .unwrap_err()
                .contains("base64")
        );
        let short = format!("whsec_{}", B64.encode([7u8; 8]));
        assert!(
            decode_webhook_secret(&short)
                .unwrap_err()
                .contains("24 bytes")
        );
    }

    #[test]
    fn secrets_are_masked() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
    }
}
