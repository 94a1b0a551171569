//! Database plumbing shared by the stores that keep state in the node's database
//! (the job queue, the live-stream registry): one way to open a pool and one
//! way to apply schema migrations, for SQLite (the embedded default) and for
//! PostgreSQL (a fleet).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::clock::now_ms;

/// Opens (creating if needed) the SQLite database at `url` in WAL mode.
pub async fn open_sqlite(url: &str) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL: durable across process crashes; a power cut may lose the
        // last commits, never corrupt the file.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
}

/// Applies `migrations` in order, each once, recording them in `table`. Every
/// store has its own table, so stores evolve their schemas independently. Never
/// edit a released entry: add one.
pub async fn migrate(
    pool: &SqlitePool,
    table: &str,
    migrations: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
    ))
    .execute(pool)
    .await?;
    let record = format!(
        "INSERT INTO {table} (version, applied_at) VALUES (?, ?) ON CONFLICT (version) DO NOTHING"
    );
    for (index, sql) in migrations.iter().enumerate() {
        let version = index as i64 + 1;
        let mut tx = pool.begin().await?;
        // Write first: claims the write lock, so two nodes starting at once apply
        // each migration once.
        let inserted = sqlx::query(&record)
            .bind(version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 1 {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Connects to the PostgreSQL database at `url`.
pub async fn open_postgres(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

/// [`migrate`] on PostgreSQL: the whole run is one transaction under an
/// advisory lock named after `table`, so of N nodes starting at once one
/// migrates and the others wait, then find nothing left to do (DDL is
/// transactional there: a failed migration leaves nothing half done).
pub async fn migrate_postgres(
    pool: &PgPool,
    table: &str,
    migrations: &[&str],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(table)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)"
    ))
    .execute(&mut *tx)
    .await?;
    let record = format!(
        "INSERT INTO {table} (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING"
    );
    for (index, sql) in migrations.iter().enumerate() {
        let inserted = sqlx::query(&record)
            .bind(index as i64 + 1)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 1 {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
        }
    }
    tx.commit().await
}
