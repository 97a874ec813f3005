//! Schema migrations: the versioned SQL files of `migrations/`, embedded in the binary and
//! applied in order at start, in one transaction under an advisory lock (two instances
//! starting together migrate once). A database whose schema is newer than this binary is
//! refused ([`StoreError::SchemaTooNew`]): an older binary must not write to it.

use crate::registry::store::StoreError;

/// (version, SQL), in order. A new migration is a new file and a new line here.
pub const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../../migrations/0001_init.sql"))];

/// The newest schema version this binary knows.
pub fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// An arbitrary constant naming the migration lock.
const LOCK: i64 = 0x7069_6c6f_7401;

/// Brings the database to [`known_version`]; returns the version it was at.
pub async fn migrate(client: &mut tokio_postgres::Client, label: &str) -> Result<i64, StoreError> {
    let err = |e: tokio_postgres::Error| StoreError::Backend {
        path: label.into(),
        detail: format!("migration: {e}"),
    };
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pilot_schema (version bigint PRIMARY KEY, applied_ms bigint NOT NULL)",
    )
    .await
    .map_err(err)?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM pilot_schema", &[])
        .await
        .map_err(err)?
        .get(0);
    if found > known_version() {
        return Err(StoreError::SchemaTooNew {
            path: label.into(),
            found,
            known: known_version(),
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql).await.map_err(err)?;
        let now = crate::clock::unix_ms_now() as i64;
        tx.execute(
            "INSERT INTO pilot_schema (version, applied_ms) VALUES ($1, $2)",
            &[version, &now],
        )
        .await
        .map_err(err)?;
        tracing::info!(version, "applied registry schema migration");
    }
    tx.commit().await.map_err(err)?;
    Ok(found)
}
