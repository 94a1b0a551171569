//! The stream registry: live streams, the segments each has stored and its pins,
//! kept in the node's database so every node of a fleet sees the same streams and
//! a restarted node still knows which segments of a session were stored.
//!
//! The row of a stream is also its durable status: the node relaying it writes
//! the upload counters after every segment, so `GET /v1/live/streams/{id}` tells
//! the same truth on any node.

use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::Track;
use super::key::KeyDigest;
use crate::clock::now_ms;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE live_streams (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    profile           TEXT NOT NULL,
    key_digest        TEXT UNIQUE,
    state             TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    started_at        BIGINT,
    ended_at          BIGINT,
    end_reason        TEXT,
    input             TEXT,
    segments_uploaded INTEGER NOT NULL DEFAULT 0,
    segments_dropped  INTEGER NOT NULL DEFAULT 0,
    upload_lag_ms     INTEGER NOT NULL DEFAULT 0,
    spool_bytes       INTEGER NOT NULL DEFAULT 0,
    replay_written    INTEGER NOT NULL DEFAULT 0,
    node              TEXT,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX live_streams_state ON live_streams (state, id);
CREATE TABLE live_segments (
    stream_id     TEXT NOT NULL REFERENCES live_streams (id),
    sequence      INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    started_at    BIGINT NOT NULL,
    discontinuity INTEGER NOT NULL,
    independent   INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    stored        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_id, sequence)
);
CREATE TABLE live_pins (
    stream_id  TEXT NOT NULL REFERENCES live_streams (id),
    id         TEXT NOT NULL,
    spec       TEXT NOT NULL,
    attributes TEXT NOT NULL,
    start_ms   BIGINT NOT NULL,
    end_ms     BIGINT,
    PRIMARY KEY (stream_id, id)
);
"#,
    r#"
CREATE TABLE live_segments_by_rendition (
    stream_id     TEXT NOT NULL REFERENCES live_streams (id),
    rendition     TEXT NOT NULL DEFAULT '',
    sequence      INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    started_at    BIGINT NOT NULL,
    discontinuity INTEGER NOT NULL,
    independent   INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    stored        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream_id, rendition, sequence)
);
INSERT INTO live_segments_by_rendition
    (stream_id, rendition, sequence, duration_us, started_at, discontinuity, independent, bytes, stored)
    SELECT stream_id, '', sequence, duration_us, started_at, discontinuity, independent, bytes, stored
    FROM live_segments;
DROP TABLE live_segments;
ALTER TABLE live_segments_by_rendition RENAME TO live_segments;
"#,
];

const STREAM_COLUMNS: &str = "id, name, profile, key_digest, state, created_at, started_at, \
    ended_at, end_reason, input, segments_uploaded, segments_dropped, upload_lag_ms, \
    spool_bytes, replay_written, node";

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

    fn parse(text: &str) -> Option<StreamState> {
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

/// Upload counters the relaying node reports after every segment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UploadStats {
    pub segments_uploaded: u64,
    pub segments_dropped: u64,
    pub upload_lag_ms: u64,
    pub spool_bytes: u64,
}

#[derive(Clone)]
pub struct Registry {
    pool: SqlitePool,
}

impl Registry {
    pub async fn open(url: &str) -> RegistryResult<Registry> {
        let pool = crate::db::open_sqlite(url).await?;
        crate::db::migrate(&pool, "live_schema_migrations", MIGRATIONS).await?;
        Ok(Registry { pool })
    }

    pub async fn create(
        &self,
        id: Uuid,
        name: &str,
        profile: &str,
        key: KeyDigest,
    ) -> RegistryResult<StreamRecord> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO live_streams (id, name, profile, key_digest, state, created_at, updated_at) \
             VALUES (?, ?, ?, ?, 'idle', ?, ?)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(profile)
        .bind(key.to_hex())
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::Corrupt(format!("stream {id} vanished after insert")))
    }

    pub async fn get(&self, id: Uuid) -> RegistryResult<Option<StreamRecord>> {
        let sql = format!("SELECT {STREAM_COLUMNS} FROM live_streams WHERE id = ?");
        sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| stream_from_row(&row))
            .transpose()
    }

    /// The stream a presented key opens, if it is not over.
    pub async fn by_key(&self, key: KeyDigest) -> RegistryResult<Option<StreamRecord>> {
        let sql = format!(
            "SELECT {STREAM_COLUMNS} FROM live_streams WHERE key_digest = ? AND state != 'ended'"
        );
        sqlx::query(&sql)
            .bind(key.to_hex())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| stream_from_row(&row))
            .transpose()
    }

    /// Newest first, at most `limit`, optionally only those in `state`.
    pub async fn list(
        &self,
        state: Option<StreamState>,
        limit: u32,
    ) -> RegistryResult<Vec<StreamRecord>> {
        let rows = match state {
            Some(state) => {
                let sql = format!(
                    "SELECT {STREAM_COLUMNS} FROM live_streams WHERE state = ? ORDER BY id DESC LIMIT ?"
                );
                sqlx::query(&sql)
                    .bind(state.as_str())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql =
                    format!("SELECT {STREAM_COLUMNS} FROM live_streams ORDER BY id DESC LIMIT ?");
                sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(stream_from_row).collect()
    }

    /// Marks the stream live on `node` (first start or reconnect).
    pub async fn set_live(
        &self,
        id: Uuid,
        node: &str,
        input: Option<&InputInfo>,
    ) -> RegistryResult<bool> {
        let now = now_ms();
        let input = input.map(|i| serde_json::to_string(i).unwrap_or_default());
        let done = sqlx::query(
            "UPDATE live_streams SET state = 'live', node = ?, started_at = COALESCE(started_at, ?), \
             input = COALESCE(?, input), updated_at = ? WHERE id = ? AND state != 'ended'",
        )
        .bind(node)
        .bind(now)
        .bind(input)
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    pub async fn set_input(&self, id: Uuid, input: &InputInfo) -> RegistryResult<()> {
        let json = serde_json::to_string(input).unwrap_or_default();
        sqlx::query("UPDATE live_streams SET input = ?, updated_at = ? WHERE id = ?")
            .bind(json)
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends the stream and revokes its key. Returns false if it had already ended.
    pub async fn end(&self, id: Uuid, reason: &str) -> RegistryResult<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE live_streams SET state = 'ended', key_digest = NULL, ended_at = ?, \
             end_reason = ?, updated_at = ? WHERE id = ? AND state != 'ended'",
        )
        .bind(now)
        .bind(reason)
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    pub async fn set_replay_written(&self, id: Uuid) -> RegistryResult<()> {
        sqlx::query("UPDATE live_streams SET replay_written = 1, updated_at = ? WHERE id = ?")
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a spooled segment (or updates it: the same sequence written
    /// again keeps the latest flags).
    pub async fn add_segment(&self, track: &Track, segment: &SegmentRecord) -> RegistryResult<()> {
        upsert_segment(track, segment).execute(&self.pool).await?;
        Ok(())
    }

    /// Records that a segment is in the store (inserting its row if the one
    /// written at spool time was lost), with the stream's new counters when
    /// given (the track the API reports on).
    pub async fn segment_stored(
        &self,
        track: &Track,
        segment: &SegmentRecord,
        stats: Option<UploadStats>,
    ) -> RegistryResult<()> {
        let stored = SegmentRecord {
            stored: true,
            ..segment.clone()
        };
        let mut tx: Transaction<'_, Sqlite> = self.pool.begin().await?;
        upsert_segment(track, &stored).execute(&mut *tx).await?;
        if let Some(stats) = stats {
            update_stats(&mut tx, track.stream, stats).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_stats(&self, id: Uuid, stats: UploadStats) -> RegistryResult<()> {
        let mut tx: Transaction<'_, Sqlite> = self.pool.begin().await?;
        update_stats(&mut tx, id, stats).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every segment of a track, in sequence order.
    pub async fn segments(&self, track: &Track) -> RegistryResult<Vec<SegmentRecord>> {
        let rows = sqlx::query(
            "SELECT sequence, duration_us, started_at, discontinuity, independent, bytes, stored \
             FROM live_segments WHERE stream_id = ? AND rendition = ? ORDER BY sequence",
        )
        .bind(track.stream.to_string())
        .bind(&track.rendition)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SegmentRecord {
                    sequence: row.try_get::<i64, _>("sequence")? as u64,
                    duration_us: row.try_get::<i64, _>("duration_us")? as u64,
                    started_at: row.try_get("started_at")?,
                    discontinuity: row.try_get("discontinuity")?,
                    independent: row.try_get("independent")?,
                    bytes: row.try_get::<i64, _>("bytes")? as u64,
                    stored: row.try_get("stored")?,
                })
            })
            .collect()
    }

    /// Adds a pin; false if one with this id exists.
    pub async fn add_pin(&self, id: Uuid, pin: &PinRecord) -> RegistryResult<bool> {
        let done = sqlx::query(
            "INSERT INTO live_pins (stream_id, id, spec, attributes, start_ms, end_ms) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream_id, id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(&pin.id)
        .bind(&pin.spec)
        .bind(&pin.attributes)
        .bind(pin.start_ms)
        .bind(pin.end_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Unpins now. `None` if there is no such pin, else whether it was still open.
    pub async fn end_pin(&self, id: Uuid, pin: &str) -> RegistryResult<Option<bool>> {
        let done = sqlx::query(
            "UPDATE live_pins SET end_ms = ? WHERE stream_id = ? AND id = ? AND end_ms IS NULL",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .bind(pin)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if done == 1 {
            return Ok(Some(true));
        }
        let exists = sqlx::query("SELECT 1 FROM live_pins WHERE stream_id = ? AND id = ?")
            .bind(id.to_string())
            .bind(pin)
            .fetch_optional(&self.pool)
            .await?;
        Ok(exists.map(|_| false))
    }

    /// Closes every open pin of the stream (when it ends).
    pub async fn end_all_pins(&self, id: Uuid, at_ms: i64) -> RegistryResult<()> {
        sqlx::query("UPDATE live_pins SET end_ms = ? WHERE stream_id = ? AND end_ms IS NULL")
            .bind(at_ms)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn pins(&self, id: Uuid) -> RegistryResult<Vec<PinRecord>> {
        let rows = sqlx::query(
            "SELECT id, spec, attributes, start_ms, end_ms FROM live_pins \
             WHERE stream_id = ? ORDER BY start_ms, id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PinRecord {
                    id: row.try_get("id")?,
                    spec: row.try_get("spec")?,
                    attributes: row.try_get("attributes")?,
                    start_ms: row.try_get("start_ms")?,
                    end_ms: row.try_get("end_ms")?,
                })
            })
            .collect()
    }

    /// A cheap query proving the database answers.
    pub async fn check(&self) -> RegistryResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn upsert_segment(
    track: &Track,
    segment: &SegmentRecord,
) -> sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments<'static>> {
    sqlx::query(
        "INSERT INTO live_segments (stream_id, rendition, sequence, duration_us, started_at, discontinuity, independent, bytes, stored) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (stream_id, rendition, sequence) DO UPDATE SET \
         discontinuity = excluded.discontinuity, stored = excluded.stored",
    )
    .bind(track.stream.to_string())
    .bind(track.rendition.clone())
    .bind(segment.sequence as i64)
    .bind(segment.duration_us as i64)
    .bind(segment.started_at)
    .bind(segment.discontinuity)
    .bind(segment.independent)
    .bind(segment.bytes as i64)
    .bind(segment.stored)
}

async fn update_stats(
    tx: &mut Transaction<'_, Sqlite>,
    id: Uuid,
    stats: UploadStats,
) -> RegistryResult<()> {
    sqlx::query(
        "UPDATE live_streams SET segments_uploaded = ?, segments_dropped = ?, upload_lag_ms = ?, \
         spool_bytes = ?, updated_at = ? WHERE id = ?",
    )
    .bind(stats.segments_uploaded as i64)
    .bind(stats.segments_dropped as i64)
    .bind(stats.upload_lag_ms as i64)
    .bind(stats.spool_bytes as i64)
    .bind(now_ms())
    .bind(id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn stream_from_row(row: &SqliteRow) -> RegistryResult<StreamRecord> {
    let corrupt = |what: &str, detail: String| RegistryError::Corrupt(format!("{what}: {detail}"));
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let key: Option<String> = row.try_get("key_digest")?;
    let input: Option<String> = row.try_get("input")?;
    Ok(StreamRecord {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("id", e.to_string()))?,
        name: row.try_get("name")?,
        profile: row.try_get("profile")?,
        key_digest: match key {
            Some(hex) => {
                Some(KeyDigest::from_hex(&hex).ok_or_else(|| corrupt("key_digest", hex.clone()))?)
            }
            None => None,
        },
        state: StreamState::parse(&state).ok_or_else(|| corrupt("state", state.clone()))?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: row.try_get("end_reason")?,
        input: match input {
            Some(json) => {
                Some(serde_json::from_str(&json).map_err(|e| corrupt("input", e.to_string()))?)
            }
            None => None,
        },
        segments_uploaded: row.try_get::<i64, _>("segments_uploaded")? as u64,
        segments_dropped: row.try_get::<i64, _>("segments_dropped")? as u64,
        upload_lag_ms: row.try_get::<i64, _>("upload_lag_ms")? as u64,
        spool_bytes: row.try_get::<i64, _>("spool_bytes")? as u64,
        replay_written: row.try_get("replay_written")?,
        node: row.try_get("node")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::key;

    async fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let registry = Registry::open(&url).await.unwrap();
        // Opening again applies nothing twice.
        Registry::open(&url).await.unwrap();
        (dir, registry)
    }

    #[tokio::test]
    async fn a_stream_goes_idle_live_ended_and_its_key_dies_with_it() {
        let (_dir, reg) = registry().await;
        let new = key::generate();
        let id = Uuid::now_v7();
        let s = reg
            .create(id, "launch", "default", new.digest)
            .await
            .unwrap();
        assert_eq!(s.state, StreamState::Idle);
        assert_eq!(reg.by_key(new.digest).await.unwrap().unwrap().id, id);
        assert!(reg.set_live(id, "n1", None).await.unwrap());
        let s = reg.get(id).await.unwrap().unwrap();
        assert_eq!(s.state, StreamState::Live);
        assert!(s.started_at.is_some());
        assert!(reg.end(id, "deleted").await.unwrap());
        assert!(!reg.end(id, "again").await.unwrap());
        assert!(reg.by_key(new.digest).await.unwrap().is_none());
        let s = reg.get(id).await.unwrap().unwrap();
        assert_eq!((s.state, s.key_digest), (StreamState::Ended, None));
        assert!(
            !reg.set_live(id, "n1", None).await.unwrap(),
            "ended is final"
        );
        reg.set_replay_written(id).await.unwrap();
        assert!(reg.get(id).await.unwrap().unwrap().replay_written);
    }

    #[tokio::test]
    async fn segments_and_pins_are_kept_in_order() {
        let (_dir, reg) = registry().await;
        let id = Uuid::now_v7();
        let track = Track::relayed(id);
        reg.create(id, "s", "default", key::generate().digest)
            .await
            .unwrap();
        for sequence in [1, 0, 2] {
            let seg = SegmentRecord {
                sequence,
                duration_us: 2_000_000,
                started_at: 1000 + sequence as i64 * 2000,
                discontinuity: sequence == 2,
                independent: true,
                bytes: 100,
                stored: false,
            };
            reg.add_segment(&track, &seg).await.unwrap();
            reg.add_segment(&track, &seg).await.unwrap();
        }
        let stats = UploadStats {
            segments_uploaded: 1,
            ..Default::default()
        };
        let first = reg.segments(&track).await.unwrap().remove(0);
        // A rendition's rows are its own, and do not count for the stream.
        let rung = Track::rendition(id, "240p");
        reg.segment_stored(&rung, &first, None).await.unwrap();
        assert_eq!(reg.segments(&rung).await.unwrap().len(), 1);
        assert_eq!(reg.get(id).await.unwrap().unwrap().segments_uploaded, 0);
        reg.segment_stored(&track, &first, Some(stats))
            .await
            .unwrap();
        let segs = reg.segments(&track).await.unwrap();
        assert_eq!(
            segs.iter()
                .map(|s| (s.sequence, s.stored))
                .collect::<Vec<_>>(),
            [(0, true), (1, false), (2, false)]
        );
        assert_eq!(reg.get(id).await.unwrap().unwrap().segments_uploaded, 1);

        let pin = PinRecord {
            id: "p1".into(),
            spec: "{}".into(),
            attributes: "X-PRODUCT-ID=\"p\"".into(),
            start_ms: 5,
            end_ms: None,
        };
        assert!(reg.add_pin(id, &pin).await.unwrap());
        assert!(!reg.add_pin(id, &pin).await.unwrap());
        assert_eq!(reg.end_pin(id, "p1").await.unwrap(), Some(true));
        assert_eq!(reg.end_pin(id, "p1").await.unwrap(), Some(false));
        assert_eq!(reg.end_pin(id, "nope").await.unwrap(), None);
        assert!(reg.pins(id).await.unwrap()[0].end_ms.is_some());
    }
}
