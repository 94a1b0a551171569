//! The stream registry: live streams, the segments each has stored and its pins,
//! kept in the node's database so every node of a fleet sees the same streams and
//! a restarted node still knows which segments of a session were stored.
//!
//! The row of a stream is also its durable status: the node relaying it writes
//! the upload counters after every segment, so `GET /v1/live/streams/{id}` tells
//! the same truth on any node.

//!
//! Every backend implements [`StreamRegistry`]; [`open`] picks one from the
//! database URL (`db.url`), and one conformance suite (`tests/registry.rs`)
//! runs against each.

pub mod postgres;
mod sql;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Track;
use super::key::KeyDigest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("stream store unavailable: {0}")]
    Unavailable(String),
    #[error("stream store holds a row it cannot read: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for RegistryError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                RegistryError::Corrupt(err.to_string())
            }
            other => RegistryError::Unavailable(other.to_string()),
        }
    }
}

pub type RegistryResult<T> = Result<T, RegistryError>;

/// Where a stream is in its life. `ended` is final: a broadcast is one stream,
/// and its key stops working when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// Created; nobody has published yet.
    Idle,
    /// A publisher is connected, or may still reconnect (within the profile's
    /// reconnect window).
    Live,
    /// Over: the replay playlist is (or is being) written.
    Ended,
}

impl StreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Idle => "idle",
            StreamState::Live => "live",
            StreamState::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<StreamState> {
        Some(match text {
            "idle" => StreamState::Idle,
            "live" => StreamState::Live,
            "ended" => StreamState::Ended,
            _ => return None,
        })
    }
}

/// What the publisher sends, as first seen.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InputInfo {
    /// RFC 6381 codec string of the video, e.g. `avc1.64001f`.
    pub video_codec: Option<String>,
    /// e.g. `mp4a.40.2`; absent for a stream without audio.
    pub audio_codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    /// Measured over the first segments, audio and video together.
    pub bitrate_kbps: Option<u32>,
}

/// A stream as the registry keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    pub id: Uuid,
    pub name: String,
    pub profile: String,
    /// `None` once the key is revoked.
    pub key_digest: Option<KeyDigest>,
    pub state: StreamState,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub input: Option<InputInfo>,
    pub segments_uploaded: u64,
    pub segments_dropped: u64,
    pub upload_lag_ms: u64,
    pub spool_bytes: u64,
    pub replay_written: bool,
    /// The node relaying it (while live).
    pub node: Option<String>,
    /// Whose stream it is (`creator:7`), if anyone's.
    pub owner: Option<String>,
}

/// A segment of a stream: spooled, and `stored` once it is in the object store.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRecord {
    pub sequence: u64,
    pub duration_us: u64,
    /// Wall clock of its first frame, ms since the epoch.
    pub started_at: i64,
    pub discontinuity: bool,
    /// Starts with a keyframe.
    pub independent: bool,
    pub bytes: u64,
    pub stored: bool,
}

/// A pinned product.
#[derive(Debug, Clone, PartialEq)]
pub struct PinRecord {
    pub id: String,
    /// The pin as the API received it (JSON).
    pub spec: String,
    /// `EXT-X-DATERANGE` client attributes, formatted once.
    pub attributes: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// What a node asking to relay a stream gets ([`StreamRegistry::claim`]).
/// Leases are kept on the database's clock, never a node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node relays the stream now. `from`: the node that held it before,
    /// when another one (its lease had expired, or its publisher had left).
    Taken { from: Option<String> },
    /// Another node's lease is fresh and its publisher connected.
    /// `expires_at` is that lease's end on the database's clock: a waiting
    /// newcomer sees the holder is alive when it moves.
    Held { node: String, expires_at: i64 },
    /// The stream is over.
    Ended,
}

/// What renewing a lease found ([`StreamRegistry::renew`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still this node's; `ended`: the stream was ended meanwhile (by the API,
    /// on any node), so the holder winds it down and writes the replay.
    Held { ended: bool },
    /// Another node took the stream over: this one must stop writing it.
    Lost,
}

/// A stream whose relaying node stopped renewing its lease: still live, or
/// ended without its replay written.
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    pub record: StreamRecord,
    /// For how long its lease has been expired, on the database's clock.
    pub expired_ms: i64,
}

/// Upload counters the relaying node reports after every segment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UploadStats {
    pub segments_uploaded: u64,
    pub segments_dropped: u64,
    pub upload_lag_ms: u64,
    pub spool_bytes: u64,
}

/// What the node keeps of its live streams, whatever the database.
#[async_trait]
pub trait StreamRegistry: Send + Sync + 'static {
    async fn create(
        &self,
        id: Uuid,
        name: &str,
        profile: &str,
        key: KeyDigest,
        owner: Option<&str>,
    ) -> RegistryResult<StreamRecord>;
    async fn get(&self, id: Uuid) -> RegistryResult<Option<StreamRecord>>;
    /// The stream a presented key opens, if it is not over.
    async fn by_key(&self, key: KeyDigest) -> RegistryResult<Option<StreamRecord>>;
    /// Newest first, at most `limit`, optionally only those in `state` and
    /// only `owner`'s.
    async fn list(
        &self,
        state: Option<StreamState>,
        owner: Option<&str>,
        limit: u32,
    ) -> RegistryResult<Vec<StreamRecord>>;
    /// Takes the lease on relaying the stream for `node` and marks it live:
    /// granted when nobody holds it, when `node` does, when the holder's lease
    /// has expired or when its publisher has left (`publishing` false).
    async fn claim(
        &self,
        id: Uuid,
        node: &str,
        lease: Duration,
        publishing: bool,
    ) -> RegistryResult<Claim>;
    /// Extends `node`'s lease by `lease` from now, saying whether a publisher
    /// is connected.
    async fn renew(
        &self,
        id: Uuid,
        node: &str,
        lease: Duration,
        publishing: bool,
    ) -> RegistryResult<Renewal>;
    /// Lets the lease go now (a node shutting down), so another node may take
    /// the stream at once.
    async fn release(&self, id: Uuid, node: &str) -> RegistryResult<()>;
    /// Streams whose lease has expired and whose replay is not written, oldest
    /// lease first, at most `limit`.
    async fn orphans(&self, limit: u32) -> RegistryResult<Vec<Orphan>>;
    /// Ends an orphan for `node`, which takes its lease to write the replay:
    /// only if its lease has been expired for at least `expired_for` (a
    /// publisher may still come back within the reconnect window). True when
    /// `node` got it.
    async fn adopt_orphan(
        &self,
        id: Uuid,
        node: &str,
        lease: Duration,
        expired_for: Duration,
        reason: &str,
    ) -> RegistryResult<bool>;
    async fn set_input(&self, id: Uuid, input: &InputInfo) -> RegistryResult<()>;
    /// Ends the stream and revokes its key. Returns false if it had already ended.
    async fn end(&self, id: Uuid, reason: &str) -> RegistryResult<bool>;
    /// Ends the stream only while `node` holds its lease (its reconnect window
    /// ran out there). False if it had ended or another node took it.
    async fn end_held(&self, id: Uuid, node: &str, reason: &str) -> RegistryResult<bool>;
    async fn set_replay_written(&self, id: Uuid) -> RegistryResult<()>;
    /// Records a spooled segment (or updates it: the same sequence written
    /// again keeps the latest flags).
    async fn add_segment(&self, track: &Track, segment: &SegmentRecord) -> RegistryResult<()>;
    /// Records that a segment is in the store (inserting its row if the one
    /// written at spool time was lost), with the stream's new counters when
    /// given (the track the API reports on).
    async fn segment_stored(
        &self,
        track: &Track,
        segment: &SegmentRecord,
        stats: Option<UploadStats>,
    ) -> RegistryResult<()>;
    async fn set_stats(&self, id: Uuid, stats: UploadStats) -> RegistryResult<()>;
    /// Every segment of a track, in sequence order.
    async fn segments(&self, track: &Track) -> RegistryResult<Vec<SegmentRecord>>;
    /// Adds a pin; false if one with this id exists.
    async fn add_pin(&self, id: Uuid, pin: &PinRecord) -> RegistryResult<bool>;
    /// Unpins now. `None` if there is no such pin, else whether it was still open.
    async fn end_pin(&self, id: Uuid, pin: &str) -> RegistryResult<Option<bool>>;
    /// Closes every open pin of the stream (when it ends).
    async fn end_all_pins(&self, id: Uuid, at_ms: i64) -> RegistryResult<()>;
    async fn pins(&self, id: Uuid) -> RegistryResult<Vec<PinRecord>>;
    /// A cheap query proving the database answers.
    async fn check(&self) -> RegistryResult<()>;
}

/// The registry the node runs on.
pub type Registry = Arc<dyn StreamRegistry>;

/// Opens the registry at `url` (`sqlite://…` or `postgres://…`), migrating it.
pub async fn open(url: &str) -> RegistryResult<Registry> {
    if crate::db::is_postgres(url) {
        return Ok(Arc::new(postgres::PostgresRegistry::open(url).await?));
    }
    Ok(Arc::new(sqlite::SqliteRegistry::open(url).await?))
}
