//! `[auth]`: who may call the API, and with how much power. Each token has a
//! name (for logs and the audit trail), a role, and optionally an owner that
//! binds it to one shop's or creator's things.

use serde::{Deserialize, Deserializer, Serialize};
use sha2::Digest;

use super::Secret;
use crate::validation::check_id;

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Upload, submit, read and cancel jobs.
    Jobs,
    /// Live streams, pins, key rotation.
    Live,
    /// Read only: jobs, streams, dashboard data.
    Read,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Jobs => "jobs",
            Role::Live => "live",
            Role::Read => "read",
        }
    }
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Letters, digits, `.`, `_`, `-`, `:`; unique. Shown in logs and the
    /// audit trail, never the token.
    pub name: String,
    pub role: Role,
    /// Binds the token to one owner (`shop:42`): it sees and makes only
    /// that owner's jobs, uploads and streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The token itself...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// ...or its SHA-256 in hex, so the settings hold no token
    /// (`media-node token new` prints both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Scoped tokens; in the environment (`MEDIA_NODE_AUTH_TOKENS`) a JSON
    /// array of the same entries.
    #[serde(deserialize_with = "entries_or_json")]
    pub tokens: Vec<TokenEntry>,
}

/// A list of entries (TOML), or a string holding their JSON array (the
/// environment).
fn entries_or_json<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TokenEntry>, D::Error> {
    const FORM: &str =
        "a JSON array of {\"name\", \"role\", \"owner\"?, \"token\" or \"token_sha256\"}";
    let entries = match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(text) => serde_json::from_str(&text),
        list => serde_json::from_value(list),
    };
    entries.map_err(|e| serde::de::Error::custom(format!("{FORM}: {e}")))
}

impl AuthConfig {
    /// Every entry well formed, names unique.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for (i, entry) in self.tokens.iter().enumerate() {
            let at = |why: String| format!("entry {i} (`{}`): {why}", entry.name);
            check_id(&entry.name).map_err(|e| at(format!("name: {e}")))?;
            if !names.insert(entry.name.as_str()) {
                return Err(at("the name is taken by another entry".into()));
            }
            if let Some(owner) = &entry.owner {
                check_id(owner).map_err(|e| at(format!("owner: {e}")))?;
            }
            match (&entry.token, &entry.token_sha256) {
                (Some(token), None) if token.expose().len() >= MIN_TOKEN_LEN => {}
                (Some(_), None) => {
                    return Err(at(format!(
                        "the token must be at least {MIN_TOKEN_LEN} characters"
                    )));
                }
                (None, Some(hex)) if parse_sha256(hex).is_some() => {}
                (None, Some(_)) => return Err(at("token_sha256 must be 64 hex digits".into())),
                _ => return Err(at("give `token` or `token_sha256`, one of them".into())),
            }
        }
        Ok(())
    }
}

/// 64 hex digits as the 32 bytes of a digest.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// A new token for `name` with `role` (and `owner`): the token, to show once,
/// and the entry to configure, which holds only its digest.
pub fn new_token(
    name: &str,
    role: Role,
    owner: Option<&str>,
) -> Result<(String, TokenEntry), String> {
    check_id(name).map_err(|e| format!("--name: {e}"))?;
    if let Some(owner) = owner {
        check_id(owner).map_err(|e| format!("--owner: {e}"))?;
    }
    let token = super::secret::generate_token();
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let entry = TokenEntry {
        name: name.to_string(),
        role,
        owner: owner.map(str::to_string),
        token: None,
        token_sha256: Some(hex::encode(digest)),
    };
    Ok((token, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<AuthConfig, String> {
        let config: AuthConfig = serde_json::from_value(serde_json::json!({ "tokens": json }))
            .map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn entries_come_as_a_list_or_as_json_text() {
        let from_json = parse(
            r#"[{"name": "ops", "role": "read", "token": "0123456789abcdef"},
                {"name": "shop-42", "role": "jobs", "owner": "shop:42",
                 "token_sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}]"#,
        )
        .unwrap();
        assert_eq!(from_json.tokens.len(), 2);
        assert_eq!(from_json.tokens[1].role, Role::Jobs);
        assert_eq!(from_json.tokens[1].owner.as_deref(), Some("shop:42"));
        let from_list: AuthConfig = serde_json::from_value(serde_json::json!({
            "tokens": [{"name": "ops", "role": "read", "token": "0123456789abcdef"}]
        }))
        .unwrap();
        assert_eq!(from_list.tokens[0], from_json.tokens[0]);
    }

    #[test]
    fn bad_entries_are_named() {
        for (json, why) in [
            (r#"[{"name": "a", "role": "read"}]"#, "one of them"),
            (
                r#"[{"name": "a", "role": "read", "token": "short"}]"#,
                "at least 16",
            ),
            (
                r#"[{"name": "a", "role": "read", "token_sha256": "abc"}]"#,
                "64 hex",
            ),
            (
                r#"[{"name": "a b", "role": "read", "token": "0123456789abcdef"}]"#,
                "name",
            ),
            (
                r#"[{"name": "a", "role": "read", "owner": "", "token": "0123456789abcdef"}]"#,
                "owner",
            ),
            (
                r#"[{"name": "a", "role": "root", "token": "0123456789abcdef"}]"#,
                "role",
            ),
            (
                r#"[{"name": "a", "role": "read", "token": "0123456789abcdef"},
                    {"name": "a", "role": "jobs", "token": "0123456789abcdeg"}]"#,
                "taken",
            ),
            ("not json", "JSON array"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(why), "{json}: {err}");
        }
    }

    #[test]
    fn new_tokens_are_configured_by_digest() {
        let (token, entry) = new_token("shop-42", Role::Jobs, Some("shop:42")).unwrap();
        assert!(token.starts_with("mn_") && token.len() >= 40);
        assert!(entry.token.is_none());
        let digest = parse_sha256(entry.token_sha256.as_deref().unwrap()).unwrap();
        assert_eq!(
            digest,
            <[u8; 32]>::from(sha2::Sha256::digest(token.as_bytes()))
        );
        AuthConfig {
            tokens: vec![entry],
        }
        .validate()
        .unwrap();
        assert!(new_token("bad name", Role::Read, None).is_err());
    }
}
