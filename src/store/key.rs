//! Object keys, validated once at the edge so that no layer below ever sees a key
//! that could escape a directory or confuse an S3 implementation.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest key accepted. S3 allows 1024 bytes; we keep headroom for the store prefix.
pub const MAX_KEY_BYTES: usize = 900;

/// Longest segment (the text between two `/`) accepted. The filesystem store
/// keeps each segment as a file name, which Linux filesystems cap at 255 bytes,
/// less the `.json` of the metadata file beside it; every store takes the same
/// keys, so a key that works on S3 works on the embedded default too.
pub const MAX_SEGMENT_BYTES: usize = 250;

/// Deserialisation errors of keys start with this, so the API can answer them as
/// `invalid_key` (400) wherever the key sits in a body.
pub const INVALID_KEY_PREFIX: &str = "invalid key: ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("key must not start with `/`")]
    LeadingSlash,
    #[error("key must not end with `/`")]
    TrailingSlash,
    #[error("key must not contain a backslash")]
    Backslash,
    #[error("key must not contain control characters")]
    ControlCharacter,
    #[error("key must not contain `.` or `..` segments")]
    DotSegment,
    #[error("key must not contain empty segments (`//`)")]
    EmptySegment,
    #[error("key segments (between `/`) must be at most {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong,
}

/// A validated object key: `shop-1/uploads/clip.mp4`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(key: impl Into<String>) -> Result<ObjectKey, KeyError> {
        let key = key.into();
        validate(&key)?;
        Ok(ObjectKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `self/child`, validated.
    pub fn join(&self, child: &str) -> Result<ObjectKey, KeyError> {
        ObjectKey::parse(format!("{}/{}", self.0, child))
    }

    /// The segments of the key, for building filesystem paths.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn validate(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong);
    }
    if key.starts_with('/') {
        return Err(KeyError::LeadingSlash);
    }
    if key.ends_with('/') {
        return Err(KeyError::TrailingSlash);
    }
    if key.contains('\\') {
        return Err(KeyError::Backslash);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::ControlCharacter);
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(KeyError::EmptySegment),
            "." | ".." => return Err(KeyError::DotSegment),
            s if s.len() > MAX_SEGMENT_BYTES => return Err(KeyError::SegmentTooLong),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectKey::parse(s)
            .map_err(|e| serde::de::Error::custom(format!("{INVALID_KEY_PREFIX}{e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "uploads/clip.mp4",
            "shop 1/ünïcødé/クリップ.mov",
            "a/b/c/.hidden",
            "a..b/c",
        ] {
            ObjectKey::parse(key).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn refuses_keys_that_could_escape_or_confuse() {
        let cases = [
            ("", KeyError::Empty),
            ("/etc/passwd", KeyError::LeadingSlash),
            ("a/", KeyError::TrailingSlash),
            ("a\\b", KeyError::Backslash),
            ("a\nb", KeyError::ControlCharacter),
            ("a\u{0}b", KeyError::ControlCharacter),
            ("../a", KeyError::DotSegment),
            ("a/../../b", KeyError::DotSegment),
            ("a/./b", KeyError::DotSegment),
            ("..", KeyError::DotSegment),
            ("a//b", KeyError::EmptySegment),
        ];
        for (key, want) in cases {
            assert_eq!(ObjectKey::parse(key).unwrap_err(), want, "{key:?}");
        }
        assert_eq!(
            ObjectKey::parse("a".repeat(MAX_KEY_BYTES + 1)).unwrap_err(),
            KeyError::TooLong
        );
        let long = "é".repeat(MAX_SEGMENT_BYTES / 2 + 1);
        assert_eq!(
            ObjectKey::parse(format!("uploads/{long}")).unwrap_err(),
            KeyError::SegmentTooLong
        );
        ObjectKey::parse(format!("uploads/{}", "a".repeat(MAX_SEGMENT_BYTES))).unwrap();
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<ObjectKey>("\"a/../b\"").is_err());
        assert_eq!(
            serde_json::from_str::<ObjectKey>("\"a/b\"")
                .unwrap()
                .as_str(),
            "a/b"
        );
    }
}
