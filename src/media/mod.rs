//! GStreamer media work: initialisation, the demuxer allow-list, and probing.
//!
//! Uploads are untrusted. Decodebin (used by the Discoverer and by decoding
//! pipelines) picks elements by rank, so at start every demuxer outside
//! [`ALLOWED_DEMUXERS`] and every network source is demoted to rank NONE: typefinding
//! can then never plug an HLS/DASH demuxer, an SDP demuxer or an HTTP source for an
//! uploaded file. Elements we create by name (e.g. `tsdemux` for live ingest) are not
//! affected: rank only matters for autoplugging.

pub mod caps;
pub mod geometry;
pub mod hls;
pub mod isobmff;
pub mod mpegts;
pub mod packets;
pub mod probe;
pub mod registry;
pub mod run;
pub mod source;
pub mod timeline;
pub mod timing;
pub mod transcode;

use std::sync::OnceLock;

use gstreamer as gst;
use gstreamer::prelude::*;

/// Demuxers decodebin may plug for uploads: MP4/MOV/3GP, Matroska/WebM and
/// MPEG-TS.
///
/// MPEG-TS is admitted because uploads really come as TS: camcorders' AVCHD
/// (`.mts`, `.m2ts`), screen and stream recorders, and HLS segments saved from a
/// live stream. It passes the same checks as the others before any decoding
/// (typefinding, then the probe's duration, size and frame-rate limits); what it
/// lacks is an index to check box by box, so a TS file that lies is caught by
/// the probe's limits and the packet pass, not before them.
pub const ALLOWED_DEMUXERS: &[&str] = &["qtdemux", "matroskademux", "tsdemux"];

/// Container types (typefind caps names) accepted as job inputs.
pub const ALLOWED_CONTAINERS: &[&str] = &[
    "video/quicktime",
    "audio/x-m4a",
    "application/x-3gp",
    "video/x-matroska",
    "video/webm",
    "audio/webm",
    "audio/x-matroska",
    "video/mpegts",
];

/// Elements the node cannot work without: checked by `media-node check` and
/// `/readyz`. Later features add the encoders and muxers their presets name.
pub const REQUIRED_ELEMENTS: &[&str] = &[
    "filesrc",
    "typefind",
    "decodebin",
    "uridecodebin",
    "qtdemux",
    "matroskademux",
    "tsdemux",
];

#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    #[error("the input is not a media file this node reads")]
    NotMedia,
    #[error("container `{0}` is not accepted (allowed: MP4/MOV/3GP, WebM/Matroska, MPEG-TS)")]
    UnsupportedContainer(String),
    #[error("no decoder for {0}")]
    UnsupportedCodec(String),
    #[error("the input is malformed or truncated: {0}")]
    Malformed(String),
    #[error("probing the input took longer than {0} ms")]
    Timeout(u64),
    #[error("writing local files failed: {0}")]
    Io(String),
    #[error("GStreamer failed: {0}")]
    Internal(String),
}

static INIT: OnceLock<Result<(), String>> = OnceLock::new();

/// Initialises GStreamer once per process and applies the autoplug allow-list.
pub fn init() -> Result<(), MediaError> {
    INIT.get_or_init(|| {
        gst::init().map_err(|e| e.to_string())?;
        restrict_autoplugging();
        Ok(())
    })
    .clone()
    .map_err(MediaError::Internal)
}

fn restrict_autoplugging() {
    let registry = gst::Registry::get();
    for feature in registry.features(gst::ElementFactory::static_type()) {
        let Ok(factory) = feature.downcast::<gst::ElementFactory>() else {
            continue;
        };
        if factory.rank() == gst::Rank::NONE {
            continue;
        }
        let klass = factory
            .metadata(gst::ELEMENT_METADATA_KLASS)
            .unwrap_or_default()
            .to_string();
        let name = factory.name();
        let demuxer = klass.contains("Demux");
        let network = klass.contains("Network") || klass.contains("Protocol");
        if (demuxer && !ALLOWED_DEMUXERS.contains(&name.as_str())) || network {
            factory.set_rank(gst::Rank::NONE);
        }
    }
}

/// Names from `elements` that this GStreamer installation lacks.
pub fn missing_elements(elements: &[&str]) -> Vec<String> {
    elements
        .iter()
        .filter(|name| gst::ElementFactory::find(name).is_none())
        .map(|name| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_playlist_demuxers_are_never_autoplugged() {
        init().unwrap();
        for name in [
            "hlsdemux",
            "dashdemux",
            "sdpdemux",
            "souphttpsrc",
            "rtspsrc",
        ] {
            if let Some(f) = gst::ElementFactory::find(name) {
                assert_eq!(f.rank(), gst::Rank::NONE, "{name} may be autoplugged");
            }
        }
        let qt = gst::ElementFactory::find("qtdemux").unwrap();
        assert!(qt.rank() > gst::Rank::NONE);
    }

    #[test]
    fn required_elements_are_installed() {
        init().unwrap();
        assert_eq!(missing_elements(REQUIRED_ELEMENTS), Vec::<String>::new());
        assert_eq!(missing_elements(&["no-such-element"]), ["no-such-element"]);
    }
}
