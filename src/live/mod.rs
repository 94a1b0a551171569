//! Live streams: creators publish over RTMP or SRT, the node cuts HLS segments without
//! re-encoding, spools each closed segment to local disk, uploads it to the
//! object store, and publishes playlists that only ever list stored segments.
//! A profile may add a small ladder encoded on the node ([`ladder`]), cut where
//! the source is cut; each rendition is then a [`Track`] with its own relay.
//!
//! ```text
//! rtmp ──FLV tags──▶ flv ─────┐
//! srt ───TS────────▶ tsdemux ─┴─access units──▶ segmenter(ts) ──closed segment──▶ relay
//!  (connection task; no GStreamer threads, no blocking)          spool ─▶ store ─▶ playlists
//! ```
//!
//! | module        | owns                                                               |
//! |---------------|--------------------------------------------------------------------|
//! | [`service`]   | streams, who may publish, reconnects, ending; the API's entry point |
//! | [`registry`]  | streams, their segments and pins in the node's database            |
//! | [`rtmp`]      | the RTMP server (`rml_rtmp`, sans-IO, on our own tokio sockets)    |
//! | [`srt`]       | the SRT listener (`srt-protocol`, one UDP port for every caller)    |
//! | [`tsdemux`]   | publisher MPEG-TS (SRT) → H.264 Annex B and ADTS AAC access units  |
//! | [`flv`]       | FLV tag bodies → H.264 Annex B and ADTS AAC access units           |
//! | [`segmenter`] | cutting on keyframes at the profile's target duration              |
//! | [`ts`]        | the MPEG-TS muxer                                                  |
//! | [`ladder`]    | the optional small ladder encoded from a stream: rungs, sessions    |
//! | [`worker`]    | the stream's sandboxed media process: decode, rung encodes, posters |
//! | [`spool`]     | closed segments on local disk until stored                         |
//! | [`relay`]     | the per-stream uploader task and its playlists                     |
//! | [`pins`]      | products pinned on a stream, as `EXT-X-DATERANGE` attributes       |
//! | [`poster`]    | a poster of the live picture every few seconds                     |
//! | [`playlist`]  | the live sliding-window playlist and the replay playlist           |
//! | [`key`]       | stream keys: 192 random bits, shown once, kept as a digest         |
//! | [`throttle`]  | slowing down addresses that present wrong keys                     |
//! | [`metrics`]   | the relay's Prometheus metrics                                     |
//!
//! Segments are MPEG-TS rather than fMP4/CMAF: every HLS player and CDN takes
//! them, each segment is self-contained (PAT/PMT, SPS/PPS before the keyframe)
//! so a segment survives on its own in a replay with gaps, and muxing needs no
//! initialisation segment that would have to change when a publisher
//! reconnects with other encoder settings.

pub mod flv;
pub mod ingest;
pub mod key;
pub mod ladder;
pub mod lease;
pub mod metrics;
pub mod pins;
pub mod playlist;
pub mod poster;
pub mod proxy;
pub mod registry;
pub mod relay;
pub mod rtmp;
pub mod segmenter;
pub mod service;
pub mod spool;
pub mod srt;
pub mod throttle;
pub mod ts;
pub mod tsdemux;
pub mod worker;

use uuid::Uuid;

/// One rendition of a stream: the spool, the registry's segment rows and each
/// relay are kept per track. A relay-only stream has one track with an empty
/// rendition name (its objects sit right below `live/{id}/`); a stream whose
/// profile transcodes has `source` and one track per rung (below
/// `live/{id}/{rendition}/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Track {
    pub stream: Uuid,
    pub rendition: String,
}

impl Track {
    /// The only track of a stream that is relayed as published.
    pub fn relayed(stream: Uuid) -> Track {
        Track {
            stream,
            rendition: String::new(),
        }
    }

    pub fn rendition(stream: Uuid, rendition: &str) -> Track {
        Track {
            stream,
            rendition: rendition.to_string(),
        }
    }

    /// Store key prefix of its playlists and segments.
    pub fn key_prefix(&self) -> String {
        if self.rendition.is_empty() {
            format!("live/{}", self.stream)
        } else {
            format!("live/{}/{}", self.stream, self.rendition)
        }
    }
}
