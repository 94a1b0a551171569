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

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
