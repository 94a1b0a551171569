//! How a job fails: one enum of every code a failed job can carry
//! ([`ErrorCode`]), the run error the runner returns ([`RunError`]), and the one
//! place where each layer's error (media, stills, tags, store) becomes a code.
//!
//! The layers below know nothing of jobs; their errors are typed enums of their
//! own, mapped here. The README's table of job codes and the OpenAPI document
//! are checked against [`ErrorCode::ALL`] by the tests below.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::media::MediaError;
use crate::overlay::OverlayError;
use crate::overlay::layout::LayoutError;
use crate::store::StoreError;
use crate::thumbnail::StillsError;
use crate::thumbnail::still::StillError;

/// Why a job failed, as a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No object at the input key (or no local file for `media-node process`).
    InputNotFound,
    /// The input is over `limits.max_input_bytes` (a photo over `max_image_bytes`).
    InputTooLarge,
    /// The input lasts longer than `limits.max_duration_s`.
    InputTooLong,
    /// The video has more pixels than `limits.max_pixels`.
    ResolutionTooLarge,
    /// The video's frames run faster than `limits.max_fps`.
    FrameRateTooHigh,
    /// Not a media file this node reads (text, say).
    NotMedia,
    /// A container outside the allow-list (MP4/MOV/3GP, WebM/Matroska, MPEG-TS).
    UnsupportedContainer,
    /// A stream's codec has no decoder here.
    UnsupportedCodec,
    /// Truncated or corrupt.
    MalformedInput,
    /// The input has no video stream (audio only).
    NoVideo,
    /// A photo over `limits.max_image_pixels`.
    ImageTooLarge,
    /// Renditions or a storyboard asked of a photo.
    NotAVideo,
    /// The stored spec no longer holds (a ladder or preset removed since submit).
    SpecInvalid,
    /// Probing took longer than `limits.probe_timeout_ms`.
    ProbeTimeout,
    /// The object store is unavailable (retried first).
    StoreUnavailable,
    /// Writing in the job's work dir failed (retried first).
    WorkDirError,
    /// The job's work dir cannot be created (retried first).
    WorkDirUnavailable,
    /// The job ran over `jobs.timeout_ms` (retried first).
    JobTimeout,
    /// Its node died on every attempt.
    AttemptsExhausted,
    /// A GStreamer pipeline failed for another reason.
    MediaError,
    /// A bug: the node could not do what it should have.
    Internal,
    /// A bug: the job's code panicked.
    InternalPanic,
    /// An object the job names (other than its input) does not exist.
    ObjectNotFound,
    /// An object the job names is over its size limit.
    ObjectTooLarge,
    /// An output key the job would write is not a valid key.
    InvalidKey,
    /// Two tags shown at once leave no free place for one of them.
    TagsOverlap,
    /// A tag's card does not fit in the frame.
    TagTooLarge,
    /// A tag's window lies outside the video.
    TagOutsideVideo,
    /// A tag's text has characters no configured font draws.
    TagGlyphsMissing,
    /// The fonts for tag text cannot be loaded.
    TagFontsUnavailable,
    /// No product photo at a tag's `image` key.
    TagImageNotFound,
    /// A tag's product photo is no image this node reads, or too large.
    TagImageInvalid,
    /// The media process died of a signal (a decoder crashed), or ended without
    /// a reply, on every attempt.
    MediaCrashed,
    /// The media process reached its memory limit
    /// (`jobs.child_memory_limit_mb`); not retried.
    MemoryLimit,
}

impl ErrorCode {
    /// Every code, in the order the README lists them.
    pub const ALL: [ErrorCode; 34] = [
        ErrorCode::InputNotFound,
        ErrorCode::InputTooLarge,
        ErrorCode::InputTooLong,
        ErrorCode::ResolutionTooLarge,
        ErrorCode::FrameRateTooHigh,
        ErrorCode::NotMedia,
        ErrorCode::UnsupportedContainer,
        ErrorCode::UnsupportedCodec,
        ErrorCode::MalformedInput,
        ErrorCode::NoVideo,
        ErrorCode::ImageTooLarge,
        ErrorCode::NotAVideo,
        ErrorCode::SpecInvalid,
        ErrorCode::ProbeTimeout,
        ErrorCode::StoreUnavailable,
        ErrorCode::WorkDirError,
        ErrorCode::WorkDirUnavailable,
        ErrorCode::JobTimeout,
        ErrorCode::AttemptsExhausted,
        ErrorCode::MediaError,
        ErrorCode::Internal,
        ErrorCode::InternalPanic,
        ErrorCode::ObjectNotFound,
        ErrorCode::ObjectTooLarge,
        ErrorCode::InvalidKey,
        ErrorCode::TagsOverlap,
        ErrorCode::TagTooLarge,
        ErrorCode::TagOutsideVideo,
        ErrorCode::TagGlyphsMissing,
        ErrorCode::TagFontsUnavailable,
        ErrorCode::TagImageNotFound,
        ErrorCode::TagImageInvalid,
        ErrorCode::MediaCrashed,
        ErrorCode::MemoryLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InputNotFound => "input_not_found",
            ErrorCode::InputTooLarge => "input_too_large",
            ErrorCode::InputTooLong => "input_too_long",
            ErrorCode::ResolutionTooLarge => "resolution_too_large",
            ErrorCode::FrameRateTooHigh => "frame_rate_too_high",
            ErrorCode::NotMedia => "not_media",
            ErrorCode::UnsupportedContainer => "unsupported_container",
            ErrorCode::UnsupportedCodec => "unsupported_codec",
            ErrorCode::MalformedInput => "malformed_input",
            ErrorCode::NoVideo => "no_video",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::NotAVideo => "not_a_video",
            ErrorCode::SpecInvalid => "spec_invalid",
            ErrorCode::ProbeTimeout => "probe_timeout",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::WorkDirError => "work_dir_error",
            ErrorCode::WorkDirUnavailable => "work_dir_unavailable",
            ErrorCode::JobTimeout => "job_timeout",
            ErrorCode::AttemptsExhausted => "attempts_exhausted",
            ErrorCode::MediaError => "media_error",
            ErrorCode::Internal => "internal",
            ErrorCode::InternalPanic => "internal_panic",
            ErrorCode::ObjectNotFound => "object_not_found",
            ErrorCode::ObjectTooLarge => "object_too_large",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::TagsOverlap => "tags_overlap",
            ErrorCode::TagTooLarge => "tag_too_large",
            ErrorCode::TagOutsideVideo => "tag_outside_video",
            ErrorCode::TagGlyphsMissing => "tag_glyphs_missing",
            ErrorCode::TagFontsUnavailable => "tag_fonts_unavailable",
            ErrorCode::TagImageNotFound => "tag_image_not_found",
            ErrorCode::TagImageInvalid => "tag_image_invalid",
            ErrorCode::MediaCrashed => "media_crashed",
            ErrorCode::MemoryLimit => "memory_limit",
        }
    }

    /// The code spelled `s`; `None` for a code this version does not know (a
    /// row written by a newer node).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// Stopped on request; not an error of the job.
    #[error("canceled")]
    Canceled,
    #[error("{code}: {message}")]
    Failed {
        code: ErrorCode,
        message: String,
        /// Worth another attempt (storage hiccup, timeout); otherwise the input or
        /// spec is at fault and retrying cannot help.
        transient: bool,
    },
}

impl RunError {
    pub fn permanent(code: ErrorCode, message: impl Into<String>) -> Self {
        RunError::Failed {
            code,
            message: message.into(),
            transient: false,
        }
    }
    pub fn transient(code: ErrorCode, message: impl Into<String>) -> Self {
        RunError::Failed {
            code,
            message: message.into(),
            transient: true,
        }
    }
}

impl From<MediaError> for RunError {
    fn from(err: MediaError) -> Self {
        let code = match &err {
            MediaError::NotMedia => ErrorCode::NotMedia,
            MediaError::UnsupportedContainer(_) => ErrorCode::UnsupportedContainer,
            MediaError::UnsupportedCodec(_) => ErrorCode::UnsupportedCodec,
            MediaError::Malformed(_) => ErrorCode::MalformedInput,
            MediaError::Timeout(_) => ErrorCode::ProbeTimeout,
            // Local disk trouble may pass; bad input never does.
            MediaError::Io(_) => {
                return RunError::transient(ErrorCode::WorkDirError, err.to_string());
            }
            MediaError::Internal(_) => ErrorCode::MediaError,
        };
        RunError::permanent(code, err.to_string())
    }
}

/// Store errors while writing outputs or reading inputs other than the main one.
impl From<StoreError> for RunError {
    fn from(err: StoreError) -> Self {
        let code = match &err {
            StoreError::NotFound(_) => ErrorCode::ObjectNotFound,
            StoreError::TooLarge { .. } => ErrorCode::ObjectTooLarge,
            // An output key that collides with an existing one is as unusable
            // as an invalid one, and retrying will not change that.
            StoreError::InvalidKey(_) | StoreError::Conflict(_) => ErrorCode::InvalidKey,
            StoreError::Unavailable(_) | StoreError::Io(_) => {
                return RunError::transient(ErrorCode::StoreUnavailable, err.to_string());
            }
        };
        RunError::permanent(code, err.to_string())
    }
}

impl From<StillError> for RunError {
    fn from(err: StillError) -> Self {
        let code = match &err {
            StillError::NotImage => ErrorCode::NotMedia,
            StillError::TooManyPixels { .. } => ErrorCode::ImageTooLarge,
            StillError::TooLarge { .. } => ErrorCode::InputTooLarge,
            StillError::Malformed(_) => ErrorCode::MalformedInput,
        };
        RunError::permanent(code, err.to_string())
    }
}

impl From<StillsError> for RunError {
    fn from(err: StillsError) -> Self {
        match err {
            StillsError::Still(e) => e.into(),
            StillsError::Media(e) => e.into(),
            StillsError::StoryboardNeedsVideo => {
                RunError::permanent(ErrorCode::NotAVideo, err.to_string())
            }
            StillsError::Io(m) => RunError::transient(ErrorCode::WorkDirError, m),
            StillsError::Canceled => RunError::Canceled,
        }
    }
}

impl From<OverlayError> for RunError {
    fn from(err: OverlayError) -> Self {
        let code = match &err {
            OverlayError::Fonts(_) => ErrorCode::TagFontsUnavailable,
            OverlayError::MissingGlyphs { .. } => ErrorCode::TagGlyphsMissing,
            OverlayError::OutsideVideo { .. } => ErrorCode::TagOutsideVideo,
            OverlayError::Invalid { .. } => ErrorCode::SpecInvalid,
            OverlayError::Layout(LayoutError::TooLarge { .. }) => ErrorCode::TagTooLarge,
            OverlayError::Layout(LayoutError::Overlap { .. }) => ErrorCode::TagsOverlap,
        };
        RunError::permanent(code, err.to_string())
    }
}

/// What a caught panic said.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_serde_spells_them_and_parse_back() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str(), "{code:?}");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "a code listed twice");
    }

    /// The README's paragraph of job codes lists every code, and no other.
    #[test]
    fn the_readme_lists_every_job_code() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let start = readme
            .find("Failed jobs carry `error.code`")
            .expect("the README's job code paragraph");
        let paragraph = &readme[start..];
        let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
        let listed: Vec<&str> = paragraph
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        for code in ErrorCode::ALL {
            assert!(
                listed.contains(&code.as_str()),
                "README lacks `{code}`: {listed:?}"
            );
        }
        for word in listed {
            assert!(
                ErrorCode::parse(word).is_some(),
                "README lists `{word}`, which is no job code"
            );
        }
    }

    /// The served OpenAPI document's `JobErrorInfo.code` is this enum.
    #[test]
    fn the_openapi_document_enumerates_the_codes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let schema = &doc["components"]["schemas"]["ErrorCode"];
        let listed: Vec<&str> = schema["enum"]
            .as_array()
            .expect("an ErrorCode enum in docs/openapi.json")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all);
    }
}
