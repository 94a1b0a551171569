//! The registry's SQL, written once for every backend ([`sql_registry`]
//! expands it for a backend's database, pool and row types), so the two
//! cannot drift apart. The rules that make one text serve SQLite and
//! PostgreSQL: placeholders are `$N` (SQLite reads them too), booleans are
//! `TRUE`/`FALSE`, integers are bound as `i64` (the schemas use `BIGINT` on
//! PostgreSQL), upserts use `ON CONFLICT … DO UPDATE SET … = excluded.…`.
//! Each backend's schema (its migrations) stays its own.

/// The columns of a stream row, in `stream_from_row`'s order.
pub(super) const STREAM_COLUMNS: &str = "id, name, profile, key_digest, state, created_at, started_at, \
    ended_at, end_reason, input, segments_uploaded, segments_dropped, upload_lag_ms, \
    spool_bytes, replay_written, node, owner";

/// Implements `StreamRegistry` for `$backend` (a struct with a `pool` field)
/// on database `$db` with rows `$row`; `$now` is the SQL of the database's
/// clock in milliseconds since the epoch (leases are kept on it). The
/// expansion site imports the registry's record types, `Row`, `Uuid`,
/// `Track`, `KeyDigest`, `now_ms`, `Duration` and `STREAM_COLUMNS`.
macro_rules! sql_registry {
    ($backend:ident, $db:ty, $row:ty, $now:expr) => {
        #[async_trait::async_trait]
        impl $crate::live::registry::StreamRegistry for $backend {
            async fn create(
                &self,
                id: Uuid,
                name: &str,
                profile: &str,
                key: KeyDigest,
                owner: Option<&str>,
            ) -> RegistryResult<StreamRecord> {
                let now = now_ms();
                sqlx::query(
                    "INSERT INTO live_streams (id, name, profile, key_digest, state, created_at, updated_at, owner) \
                     VALUES ($1, $2, $3, $4, 'idle', $5, $6, $7)",
                )
                .bind(id.to_string())
                .bind(name)
                .bind(profile)
                .bind(key.to_hex())
                .bind(now)
                .bind(now)
                .bind(owner)
                .execute(&self.pool)
                .await?;
                self.get(id)
                    .await?
                    .ok_or_else(|| RegistryError::Corrupt(format!("stream {id} vanished after insert")))
            }

            async fn get(&self, id: Uuid) -> RegistryResult<Option<StreamRecord>> {
                let sql = format!("SELECT {STREAM_COLUMNS} FROM live_streams WHERE id = $1");
                sqlx::query(&sql)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|row| stream_from_row(&row))
                    .transpose()
            }

            /// The stream a presented key opens, if it is not over.
            async fn by_key(&self, key: KeyDigest) -> RegistryResult<Option<StreamRecord>> {
                let sql = format!(
                    "SELECT {STREAM_COLUMNS} FROM live_streams WHERE key_digest = $1 AND state != 'ended'"
                );
                sqlx::query(&sql)
                    .bind(key.to_hex())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|row| stream_from_row(&row))
                    .transpose()
            }

            /// Newest first, at most `limit`, optionally only those in `state`
            /// and only `owner`'s.
            async fn list(
                &self,
                state: Option<StreamState>,
                owner: Option<&str>,
                limit: u32,
            ) -> RegistryResult<Vec<StreamRecord>> {
                let sql = format!(
                    "SELECT {STREAM_COLUMNS} FROM live_streams \
                     WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) \
                       AND (CAST($2 AS TEXT) IS NULL OR owner = $2) \
                     ORDER BY id DESC LIMIT $3"
                );
                let rows = sqlx::query(&sql)
                    .bind(state.map(StreamState::as_str))
                    .bind(owner)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(stream_from_row).collect()
            }

            async fn claim(
                &self,
                id: Uuid,
                node: &str,
                lease: Duration,
                publishing: bool,
            ) -> RegistryResult<Claim> {
                const DB_NOW: &str = $now;
                let before: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT node FROM live_streams WHERE id = $1")
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                let sql = format!(
                    "UPDATE live_streams SET state = 'live', node = $1, lease_expires_at = {DB_NOW} + $2, \
                     publishing = $3, started_at = COALESCE(started_at, {DB_NOW}), updated_at = {DB_NOW} \
                     WHERE id = $4 AND state != 'ended' AND (node IS NULL OR node = $5 OR NOT publishing \
                     OR COALESCE(lease_expires_at, 0) <= {DB_NOW})"
                );
                let taken = sqlx::query(&sql)
                    .bind(node)
                    .bind(lease_ms(lease))
                    .bind(publishing)
                    .bind(id.to_string())
                    .bind(node)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
                    == 1;
                if taken {
                    let from = before.and_then(|(n,)| n).filter(|n| n != node);
                    return Ok(Claim::Taken { from });
                }
                let holder: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT state, node, lease_expires_at FROM live_streams WHERE id = $1",
                )
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                Ok(match holder {
                    Some((state, Some(node), expires)) if state != "ended" => Claim::Held {
                        node,
                        expires_at: expires.unwrap_or(0),
                    },
                    _ => Claim::Ended,
                })
            }

            async fn renew(
                &self,
                id: Uuid,
                node: &str,
                lease: Duration,
                publishing: bool,
            ) -> RegistryResult<Renewal> {
                const DB_NOW: &str = $now;
                let sql = format!(
                    "UPDATE live_streams SET lease_expires_at = {DB_NOW} + $1, publishing = $2 \
                     WHERE id = $3 AND node = $4 RETURNING state"
                );
                let state: Option<(String,)> = sqlx::query_as(&sql)
                    .bind(lease_ms(lease))
                    .bind(publishing)
                    .bind(id.to_string())
                    .bind(node)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(match state {
                    Some((state,)) => Renewal::Held {
                        ended: state == "ended",
                    },
                    None => Renewal::Lost,
                })
            }

            async fn release(&self, id: Uuid, node: &str) -> RegistryResult<()> {
                const DB_NOW: &str = $now;
                let sql = format!(
                    "UPDATE live_streams SET lease_expires_at = {DB_NOW}, publishing = FALSE \
                     WHERE id = $1 AND node = $2"
                );
                sqlx::query(&sql)
                    .bind(id.to_string())
                    .bind(node)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn orphans(&self, limit: u32) -> RegistryResult<Vec<Orphan>> {
                const DB_NOW: &str = $now;
                let sql = format!(
                    "SELECT {STREAM_COLUMNS}, {DB_NOW} - COALESCE(lease_expires_at, 0) AS expired_ms \
                     FROM live_streams WHERE state != 'idle' AND NOT replay_written \
                     AND started_at IS NOT NULL AND COALESCE(lease_expires_at, 0) <= {DB_NOW} \
                     ORDER BY lease_expires_at LIMIT $1"
                );
                let rows = sqlx::query(&sql)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(Orphan {
                            record: stream_from_row(row)?,
                            expired_ms: row.try_get("expired_ms")?,
                        })
                    })
                    .collect()
            }

            async fn adopt_orphan(
                &self,
                id: Uuid,
                node: &str,
                lease: Duration,
                expired_for: Duration,
                reason: &str,
            ) -> RegistryResult<bool> {
                const DB_NOW: &str = $now;
                let sql = format!(
                    "UPDATE live_streams SET state = 'ended', key_digest = NULL, \
                     ended_at = COALESCE(ended_at, {DB_NOW}), end_reason = COALESCE(end_reason, $1), \
                     node = $2, lease_expires_at = {DB_NOW} + $3, publishing = FALSE, updated_at = {DB_NOW} \
                     WHERE id = $4 AND state != 'idle' AND NOT replay_written \
                     AND COALESCE(lease_expires_at, 0) <= {DB_NOW} - $5"
                );
                let done = sqlx::query(&sql)
                    .bind(reason)
                    .bind(node)
                    .bind(lease_ms(lease))
                    .bind(id.to_string())
                    .bind(lease_ms(expired_for))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(done == 1)
            }

            async fn set_input(&self, id: Uuid, input: &InputInfo) -> RegistryResult<()> {
                let json = serde_json::to_string(input).unwrap_or_default();
                sqlx::query("UPDATE live_streams SET input = $1, updated_at = $2 WHERE id = $3")
                    .bind(json)
                    .bind(now_ms())
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            /// Ends the stream and revokes its key. Returns false if it had already ended.
            async fn end(&self, id: Uuid, reason: &str) -> RegistryResult<bool> {
                let now = now_ms();
                let done = sqlx::query(
                    "UPDATE live_streams SET state = 'ended', key_digest = NULL, ended_at = $1, \
                     end_reason = $2, updated_at = $3 WHERE id = $4 AND state != 'ended'",
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

            async fn end_held(&self, id: Uuid, node: &str, reason: &str) -> RegistryResult<bool> {
                let now = now_ms();
                let done = sqlx::query(
                    "UPDATE live_streams SET state = 'ended', key_digest = NULL, ended_at = $1, \
                     end_reason = $2, updated_at = $3 WHERE id = $4 AND state != 'ended' AND node = $5",
                )
                .bind(now)
                .bind(reason)
                .bind(now)
                .bind(id.to_string())
                .bind(node)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(done == 1)
            }

            async fn set_replay_written(&self, id: Uuid) -> RegistryResult<()> {
                sqlx::query("UPDATE live_streams SET replay_written = TRUE, updated_at = $1 WHERE id = $2")
                    .bind(now_ms())
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            /// Records a spooled segment (or updates it: the same sequence written
            /// again keeps the latest flags).
            async fn add_segment(&self, track: &Track, segment: &SegmentRecord) -> RegistryResult<()> {
                upsert_segment(track, segment).execute(&self.pool).await?;
                Ok(())
            }

            /// Records that a segment is in the store (inserting its row if the one
            /// written at spool time was lost), with the stream's new counters when
            /// given (the track the API reports on).
            async fn segment_stored(
                &self,
                track: &Track,
                segment: &SegmentRecord,
                stats: Option<UploadStats>,
            ) -> RegistryResult<()> {
                let stored = SegmentRecord {
                    stored: true,
                    ..segment.clone()
                };
                let mut tx: sqlx::Transaction<'_, $db> = self.pool.begin().await?;
                upsert_segment(track, &stored).execute(&mut *tx).await?;
                if let Some(stats) = stats {
                    update_stats(&mut tx, track.stream, stats).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_stats(&self, id: Uuid, stats: UploadStats) -> RegistryResult<()> {
                let mut tx: sqlx::Transaction<'_, $db> = self.pool.begin().await?;
                update_stats(&mut tx, id, stats).await?;
                tx.commit().await?;
                Ok(())
            }

            /// Every segment of a track, in sequence order.
            async fn segments(&self, track: &Track) -> RegistryResult<Vec<SegmentRecord>> {
                let rows = sqlx::query(
                    "SELECT sequence, duration_us, started_at, discontinuity, independent, bytes, stored \
                     FROM live_segments WHERE stream_id = $1 AND rendition = $2 ORDER BY sequence",
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
            async fn add_pin(&self, id: Uuid, pin: &PinRecord) -> RegistryResult<bool> {
                let done = sqlx::query(
                    "INSERT INTO live_pins (stream_id, id, spec, attributes, start_ms, end_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream_id, id) DO NOTHING",
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
            async fn end_pin(&self, id: Uuid, pin: &str) -> RegistryResult<Option<bool>> {
                let done = sqlx::query(
                    "UPDATE live_pins SET end_ms = $1 WHERE stream_id = $2 AND id = $3 AND end_ms IS NULL",
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
                let exists = sqlx::query("SELECT 1 FROM live_pins WHERE stream_id = $1 AND id = $2")
                    .bind(id.to_string())
                    .bind(pin)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(exists.map(|_| false))
            }

            /// Closes every open pin of the stream (when it ends).
            async fn end_all_pins(&self, id: Uuid, at_ms: i64) -> RegistryResult<()> {
                sqlx::query("UPDATE live_pins SET end_ms = $1 WHERE stream_id = $2 AND end_ms IS NULL")
                    .bind(at_ms)
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn pins(&self, id: Uuid) -> RegistryResult<Vec<PinRecord>> {
                let rows = sqlx::query(
                    "SELECT id, spec, attributes, start_ms, end_ms FROM live_pins \
                     WHERE stream_id = $1 ORDER BY start_ms, id",
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
            async fn check(&self) -> RegistryResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        fn lease_ms(lease: Duration) -> i64 {
            i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
        }

        fn upsert_segment(
            track: &Track,
            segment: &SegmentRecord,
        ) -> sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments<'static>> {
            sqlx::query(
                "INSERT INTO live_segments (stream_id, rendition, sequence, duration_us, started_at, discontinuity, independent, bytes, stored) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (stream_id, rendition, sequence) DO UPDATE SET \
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
            tx: &mut sqlx::Transaction<'_, $db>,
            id: Uuid,
            stats: UploadStats,
        ) -> RegistryResult<()> {
            sqlx::query(
                "UPDATE live_streams SET segments_uploaded = $1, segments_dropped = $2, upload_lag_ms = $3, \
                 spool_bytes = $4, updated_at = $5 WHERE id = $6",
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

        fn stream_from_row(row: &$row) -> RegistryResult<StreamRecord> {
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
                owner: row.try_get("owner")?,
            })
        }
    };
}

pub(super) use sql_registry;
