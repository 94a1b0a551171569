//! What a job asks for. Typed, `deny_unknown_fields`, validated at the HTTP edge
//! before anything is stored; the worker parses the stored JSON again and aborts a
//! job whose spec no longer parses.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::ObjectKey;

/// Longest accepted `callback_url`.
const MAX_CALLBACK_URL_BYTES: usize = 2048;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub input: InputSpec,
    /// Record container, streams, codecs, size, rotation, frame rate and bit rate
    /// of the input as `result.probe`.
    #[serde(default)]
    pub probe: bool,
    /// Key prefix below which the job writes its outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "shop-1/products/42")]
    pub output_prefix: Option<ObjectKey>,
    /// Where to POST the job view when the job ends (Standard Webhooks signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Test-only behaviours (slow, failing or panicking runs).
    #[cfg(feature = "test-support")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub test: Option<TestSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Store key of the uploaded input.
    #[schema(value_type = String, example = "uploads/clip.mp4")]
    pub key: ObjectKey,
}

#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Sleep this long (in steps, reporting progress) before doing the real work.
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail every attempt with a transient error.
    #[serde(default)]
    pub fail_transient: bool,
    /// Panic inside the job.
    #[serde(default)]
    pub panic: bool,
}

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

/// What validation needs to know about this node.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    pub allow_private_callbacks: bool,
}

impl JobSpec {
    /// Checks what serde cannot: that the job asks for some work, and that its
    /// callback may be called.
    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !self.has_work() {
            errors.push(FieldError::new(
                "",
                "the job asks for no work: set `probe: true` (transcodes and thumbnails come in later versions)",
            ));
        }
        if let Some(url) = &self.callback_url {
            if url.len() > MAX_CALLBACK_URL_BYTES {
                errors.push(FieldError::new(
                    "callback_url",
                    format!("longer than {MAX_CALLBACK_URL_BYTES} bytes"),
                ));
            } else if let Err(reason) =
                super::webhook::check_callback_url(url, ctx.allow_private_callbacks)
            {
                errors.push(FieldError::new("callback_url", reason));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn has_work(&self) -> bool {
        #[cfg(feature = "test-support")]
        if self.test.is_some() {
            return true;
        }
        self.probe
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn probe_job_parses_and_validates() {
        let spec = parse(json!({"input": {"key": "uploads/a.mp4"}, "probe": true})).unwrap();
        spec.validate(&ValidationContext::default()).unwrap();
        assert_eq!(spec.input.key.as_str(), "uploads/a.mp4");
    }

    #[test]
    fn unknown_fields_and_bad_keys_are_refused() {
        assert!(parse(json!({"input": {"key": "a"}, "probe": true, "colour": 1})).is_err());
        assert!(parse(json!({"input": {"key": "a", "bucket": "b"}, "probe": true})).is_err());
        assert!(parse(json!({"input": {"key": "../a"}, "probe": true})).is_err());
    }

    #[test]
    fn a_job_must_ask_for_work() {
        let spec = parse(json!({"input": {"key": "a"}})).unwrap();
        let errors = spec.validate(&ValidationContext::default()).unwrap_err();
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn callbacks_to_private_networks_are_refused_unless_allowed() {
        let spec = parse(json!({
            "input": {"key": "a"}, "probe": true,
            "callback_url": "http://127.0.0.1:9/hook"
        }))
        .unwrap();
        let errors = spec.validate(&ValidationContext::default()).unwrap_err();
        assert_eq!(errors[0].field, "callback_url");
        spec.validate(&ValidationContext {
            allow_private_callbacks: true,
        })
        .unwrap();
    }
}
