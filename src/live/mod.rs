//! Live streams (issue 6): creators publish over RTMP or SRT, the node cuts HLS
//! segments without re-encoding, spools each closed segment to local disk and
//! uploads it to the object store, and publishes playlists that only ever list
//! stored segments.
//!
//! Built so far, as pure, tested parts the relay is assembled from:
//!
//! | module       | owns                                                          |
//! |--------------|---------------------------------------------------------------|
//! | [`key`]      | stream keys: 192 random bits, shown once, kept as a digest    |
//! | [`throttle`] | slowing down addresses that present wrong keys                |
//! | [`playlist`] | the live sliding-window playlist and the replay playlist      |
//!
//! Still to come (see the note): the stream registry and API, RTMP
//! ingest (`rml_rtmp`, sans-IO on our own tokio sockets), SRT ingest (`srtsrc`
//! listeners), the MPEG-TS segmenter, the spool and the uploader.

pub mod key;
pub mod playlist;
pub mod throttle;
