//! The stream registry on SQLite (the embedded default): the node's database
//! file in its data dir, next to the job store.

use sqlx::Row as _;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use uuid::Uuid;

use super::sql::{STREAM_COLUMNS, sql_registry};
use std::time::Duration;

use super::{
    Claim, InputInfo, Orphan, PinRecord, RegistryError, RegistryResult, Renewal, SegmentRecord,
    StreamRecord, StreamState, UploadStats,
};
use crate::clock::now_ms;
use crate::live::Track;
use crate::live::key::KeyDigest;

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
    r#"
ALTER TABLE live_streams ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE live_streams ADD COLUMN publishing INTEGER NOT NULL DEFAULT 0;
-- Every node's orphan sweep reads only the streams that are not done.
CREATE INDEX live_streams_unfinished ON live_streams (lease_expires_at)
    WHERE replay_written = 0 AND state != 'idle';
"#,
    r#"
ALTER TABLE live_streams ADD COLUMN owner TEXT;
CREATE INDEX live_streams_owner ON live_streams (owner, id);
"#,
];

/// The database's clock (here the host's), in milliseconds since the epoch.
const NOW: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

#[derive(Clone)]
pub struct SqliteRegistry {
    pool: SqlitePool,
}

impl SqliteRegistry {
    pub async fn open(url: &str) -> RegistryResult<SqliteRegistry> {
        let pool = crate::db::open_sqlite(url).await?;
        crate::db::migrate(&pool, "live_schema_migrations", MIGRATIONS).await?;
        Ok(SqliteRegistry { pool })
    }
}

sql_registry!(SqliteRegistry, sqlx::Sqlite, SqliteRow, NOW);
