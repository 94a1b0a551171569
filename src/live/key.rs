//! Stream keys. A key is 192 random bits (base64url, 32 characters), returned
//! once when the stream is created and stored only as its SHA-256 digest. With
//! that much entropy a plain digest is enough: guessing is hopeless and a leaked
//! database gives no key away; publishers are looked up by digest.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a key (192 bits; the issue asks for at least 128).
const KEY_BYTES: usize = 24;
/// Length of a key as text.
pub const KEY_CHARS: usize = 32;

/// A freshly generated key: the secret to hand to the creator once, and what to
/// keep.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub secret: String,
    pub digest: KeyDigest,
}

/// SHA-256 of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> KeyDigest {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// Lowercase hex, for storage.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<KeyDigest> {
        let bytes = hex::decode(text).ok()?;
        Some(KeyDigest(bytes.try_into().ok()?))
    }

    /// Whether `presented` is the key of this digest, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        KeyDigest::of(presented).0.ct_eq(&self.0).into()
    }
}

pub fn generate() -> NewKey {
    let bytes: [u8; KEY_BYTES] = rand::random();
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    let digest = KeyDigest::of(&secret);
    NewKey { secret, digest }
}

/// Whether `text` could be a key at all (checked before any lookup, so junk from
/// the network never reaches the database).
pub fn well_formed(text: &str) -> bool {
    text.len() == KEY_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_kept_as_digests() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.secret.len(), KEY_CHARS);
        assert!(well_formed(&a.secret));
        assert!(a.digest.matches(&a.secret));
        assert!(!a.digest.matches(&b.secret));
        assert_eq!(KeyDigest::from_hex(&a.digest.to_hex()), Some(a.digest));
        assert!(!a.digest.to_hex().contains(&a.secret));
    }

    #[test]
    fn junk_is_not_a_key() {
        assert!(!well_formed(""));
        assert!(!well_formed("short"));
        assert!(!well_formed(&"a".repeat(31)));
        assert!(!well_formed(&format!("{}/", "a".repeat(31))));
        assert!(well_formed(&"a-_Z".repeat(8)));
    }
}
