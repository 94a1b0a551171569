//! What a request's validation reports: one problem with one field. A leaf
//! module, so the libraries that validate their own specs (stills, tags, live
//! pins) need nothing from the job queue, and the API maps the list to a 422 in
//! one place.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One problem with one field of a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `input.key` or `renditions.rungs[1]`.
    pub field: String,
    pub message: String,
}

/// Longest id (of a tag, a product, a pin, an owner, a token's name).
pub const MAX_ID_BYTES: usize = 128;

/// Ids travel into playlists, JSON, logs and store metadata: a conservative
/// alphabet keeps them safe in every format without escaping.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(format!("1 to {MAX_ID_BYTES} characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err("only letters, digits, `.`, `_`, `-` and `:`".into());
    }
    Ok(())
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
