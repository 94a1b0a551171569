//! What a job asks for. Typed, `deny_unknown_fields`, validated at the HTTP edge
//! before anything is stored; the worker parses the stored JSON again and aborts a
//! job whose spec no longer parses.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::media::transcode::Format;
use crate::overlay::spec::TagSpec;
use crate::presets::{Kind, Presets};
use crate::store::ObjectKey;
use crate::thumbnail::spec::{Resolved, StoryboardSpec, ThumbnailsSpec};
use crate::validation::FieldError;

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
    /// Transcode to H.264/AAC MP4 renditions and/or an HLS ladder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renditions: Option<RenditionsSpec>,
    /// Stills: posters and thumbnails at several sizes (from a video or a photo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnails: Option<ThumbnailsSpec>,
    /// Scrubbing previews: tiles in sprite sheets with a WebVTT index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storyboard: Option<StoryboardSpec>,
    /// Shoppable tags: product cards burned into every rendition between their
    /// times, and published as timed data (`tags_json`, `tags_vtt`, HLS
    /// `EXT-X-DATERANGE`). Needs `renditions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagSpec>,
    /// Where to POST the job view when the job ends (Standard Webhooks signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// Whose job it is (`shop:42`, `creator:7`): letters, digits, `.`, `_`,
    /// `-`, `:`. Lists filter by it (`?owner=`). A token bound to an owner
    /// submits for that owner, whatever is given here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "shop:42", pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub owner: Option<String>,
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

/// `renditions`: which ladder, which of its rungs, which formats.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenditionsSpec {
    /// Name of a ladder in `pipelines/ladders/` (default `default`).
    #[serde(default = "default_ladder")]
    pub ladder: String,
    /// Only these rungs of the ladder (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(["720p", "360p"]))]
    pub rungs: Option<Vec<String>>,
    /// `mp4` and/or `hls` (default both).
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
}

fn default_ladder() -> String {
    "default".into()
}

fn default_formats() -> Vec<Format> {
    vec![Format::Mp4, Format::Hls]
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
    /// In the media process, try to get out of its sandbox instead of doing
    /// the work; how each try ended goes to `result.escape`.
    #[serde(default)]
    pub escape: Option<EscapeSpec>,
}

/// What a test job tries from inside its media process.
#[cfg(feature = "test-support")]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscapeSpec {
    /// A file to read (the node's `api_token`).
    pub read: std::path::PathBuf,
    /// A file to create outside the work dir.
    pub write: std::path::PathBuf,
    /// A TCP address to connect to.
    pub connect: String,
    /// A program to run.
    pub exec: std::path::PathBuf,
}

/// What validation needs to know about this node.
#[derive(Debug, Clone)]
pub struct ValidationContext<'a> {
    pub allow_private_callbacks: bool,
    pub presets: &'a Presets,
}

impl JobSpec {
    /// Checks what serde cannot: that the job asks for some work, and that its
    /// callback may be called.
    /// Every stored object the job reads: its input and its tags' images.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectKey> {
        std::iter::once(&self.input.key).chain(self.tags.iter().filter_map(|t| t.image.as_ref()))
    }

    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !self.has_work() {
            errors.push(FieldError::new(
                "",
                "the job asks for no work: set `probe: true`, `renditions`, `thumbnails` or `storyboard`",
            ));
        }
        if self.output_prefix.is_none()
            && (self.renditions.is_some() || self.thumbnails.is_some() || self.storyboard.is_some())
        {
            errors.push(FieldError::new(
                "output_prefix",
                "required when the job writes outputs (`renditions`, `thumbnails`, `storyboard`)",
            ));
        }
        if let Some(r) = &self.renditions {
            validate_renditions(r, ctx, &mut errors);
        }
        if self.thumbnails.is_some() {
            self.resolve_thumbnails(ctx.presets, &mut errors);
        }
        if let Some(sb) = &self.storyboard {
            sb.validate("storyboard", &mut errors);
        }
        if !self.tags.is_empty() {
            if self.renditions.is_none() {
                errors.push(FieldError::new(
                    "tags",
                    "tags are burned into renditions: ask for `renditions` too",
                ));
            }
            crate::overlay::spec::validate(&self.tags, ctx.presets, "tags", &mut errors);
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
            || self.renditions.is_some()
            || self.thumbnails.is_some()
            || self.storyboard.is_some()
    }

    /// `thumbnails` with its preset applied and checked; errors go to `errors`.
    pub fn resolve_thumbnails(
        &self,
        presets: &Presets,
        errors: &mut Vec<FieldError>,
    ) -> Option<Resolved> {
        let spec = self.thumbnails.as_ref()?;
        let name = spec.preset.as_deref().unwrap_or("default");
        let Some(preset) = presets.thumbnails(name) else {
            let known: Vec<&str> = presets.names(Kind::Thumbnails);
            errors.push(FieldError::new(
                "thumbnails.preset",
                format!("no thumbnail preset `{name}` (known: {})", known.join(", ")),
            ));
            return None;
        };
        spec.with_preset(preset).resolve("thumbnails", errors)
    }
}

fn validate_renditions(r: &RenditionsSpec, ctx: &ValidationContext, errors: &mut Vec<FieldError>) {
    let Some(ladder) = ctx.presets.ladder(&r.ladder) else {
        let known: Vec<&str> = ctx.presets.names(Kind::Ladders);
        errors.push(FieldError::new(
            "renditions.ladder",
            format!("no ladder `{}` (known: {})", r.ladder, known.join(", ")),
        ));
        return;
    };
    if r.formats.is_empty() {
        errors.push(FieldError::new(
            "renditions.formats",
            "give at least one of `mp4`, `hls`",
        ));
    }
    for (i, f) in r.formats.iter().enumerate() {
        if r.formats[..i].contains(f) {
            errors.push(FieldError::new(
                format!("renditions.formats[{i}]"),
                "listed twice",
            ));
        }
    }
    if let Some(rungs) = &r.rungs {
        if rungs.is_empty() {
            errors.push(FieldError::new(
                "renditions.rungs",
                "leave out `rungs` for the whole ladder, or name at least one",
            ));
        }
        for (i, name) in rungs.iter().enumerate() {
            if !ladder.rungs.iter().any(|rung| &rung.name == name) {
                let known: Vec<&str> = ladder.rungs.iter().map(|r| r.name.as_str()).collect();
                errors.push(FieldError::new(
                    format!("renditions.rungs[{i}]"),
                    format!(
                        "ladder `{}` has no rung `{name}` (it has {})",
                        ladder.name,
                        known.join(", ")
                    ),
                ));
            } else if rungs[..i].contains(name) {
                errors.push(FieldError::new(
                    format!("renditions.rungs[{i}]"),
                    "listed twice",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    fn presets() -> Presets {
        Presets::builtin().unwrap()
    }

    fn ctx(presets: &Presets) -> ValidationContext<'_> {
        ValidationContext {
            allow_private_callbacks: false,
            presets,
        }
    }

    #[test]
    fn renditions_are_checked_against_the_ladder() {
        let p = presets();
        let spec = parse(json!({
            "input": {"key": "a.mp4"}, "output_prefix": "out/1",
            "renditions": {"ladder": "default", "formats": ["mp4", "hls"], "rungs": ["720p"]}
        }))
        .unwrap();
        spec.validate(&ctx(&p)).unwrap();

        let spec = parse(json!({
            "input": {"key": "a.mp4"},
            "renditions": {"ladder": "default", "rungs": ["720p", "999p", "720p"], "formats": []}
        }))
        .unwrap();
        let errors = spec.validate(&ctx(&p)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "output_prefix",
                "renditions.formats",
                "renditions.rungs[1]",
                "renditions.rungs[2]"
            ]
        );

        let spec = parse(json!({
            "input": {"key": "a.mp4"}, "output_prefix": "o",
            "renditions": {"ladder": "nope"}
        }))
        .unwrap();
        assert_eq!(
            spec.validate(&ctx(&p)).unwrap_err()[0].field,
            "renditions.ladder"
        );
        assert!(parse(json!({"input": {"key": "a"}, "output_prefix": "o", "renditions": {"formats": ["webm"]}})).is_err());
    }

    #[test]
    fn probe_job_parses_and_validates() {
        let spec = parse(json!({"input": {"key": "uploads/a.mp4"}, "probe": true})).unwrap();
        spec.validate(&ctx(&presets())).unwrap();
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
        let errors = spec.validate(&ctx(&presets())).unwrap_err();
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn callbacks_to_private_networks_are_refused_unless_allowed() {
        let spec = parse(json!({
            "input": {"key": "a"}, "probe": true,
            "callback_url": "http://127.0.0.1:9/hook"
        }))
        .unwrap();
        let p = presets();
        let errors = spec.validate(&ctx(&p)).unwrap_err();
        assert_eq!(errors[0].field, "callback_url");
        spec.validate(&ValidationContext {
            allow_private_callbacks: true,
            presets: &p,
        })
        .unwrap();
    }
}
