//! The stream registry on PostgreSQL (a fleet: every node on one database).
//! The same SQL as SQLite's ([`super::sql`]); its own schema, with `BIGINT`
//! and `BOOLEAN` columns.

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};
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
    segments_uploaded BIGINT NOT NULL DEFAULT 0,
    segments_dropped  BIGINT NOT NULL DEFAULT 0,
    upload_lag_ms     BIGINT NOT NULL DEFAULT 0,
    spool_bytes       BIGINT NOT NULL DEFAULT 0,
    replay_written    BOOLEAN NOT NULL DEFAULT FALSE,
    node              TEXT,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX live_streams_state ON live_streams (state, id);
CREATE TABLE live_segments (
    stream_id     TEXT NOT NULL REFERENCES live_streams (id),
    rendition     TEXT NOT NULL DEFAULT '',
    sequence      BIGINT NOT NULL,
    duration_us   BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    discontinuity BOOLEAN NOT NULL,
    independent   BOOLEAN NOT NULL,
    bytes         BIGINT NOT NULL,
    stored        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (stream_id, rendition, sequence)
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
ALTER TABLE live_streams ADD COLUMN lease_expires_at BIGINT,
    ADD COLUMN publishing BOOLEAN NOT NULL DEFAULT FALSE;
-- Every node's orphan sweep reads only the streams that are not done.
CREATE INDEX live_streams_unfinished ON live_streams (lease_expires_at)
    WHERE NOT replay_written AND state != 'idle';
"#,
    r#"
ALTER TABLE live_streams ADD COLUMN owner TEXT;
CREATE INDEX live_streams_owner ON live_streams (owner, id);
"#,
];

/// The database's clock, in milliseconds since the epoch: leases never
/// depend on a node's clock.
const NOW: &str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";

#[derive(Clone)]
pub struct PostgresRegistry {
    pool: PgPool,
}

impl PostgresRegistry {
    pub async fn open(url: &str) -> RegistryResult<PostgresRegistry> {
        let pool = crate::db::open_postgres(url).await?;
        crate::db::migrate_postgres(&pool, "live_schema_migrations", MIGRATIONS).await?;
        Ok(PostgresRegistry { pool })
    }
}

sql_registry!(PostgresRegistry, sqlx::Postgres, PgRow, NOW);
