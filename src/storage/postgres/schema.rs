//! The schema's numbered migrations (`migrations/postgres/NNNN_name.sql`),
//! applied at start by whichever node gets there first: under a session
//! advisory lock, each in its own transaction with its row in
//! `varcade_migrations`, so nodes starting together apply each once and a
//! crash mid-upgrade re-runs only the unrecorded step. A database recorded
//! at a newer version than this build knows is refused.

use super::PgOpenError;

/// The migrations in order: (version, name, SQL).
const MIGRATIONS: &[(u32, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../../../migrations/postgres/0001_initial.sql"),
)];

/// The layout this build writes.
pub const LAYOUT_VERSION: u32 = 1;

/// The advisory lock key that serialises migrations across nodes.
const LOCK: i64 = 0x0076_6172_6361_6465;

/// Applies the missing migrations; returns the layout version.
pub async fn migrate(
    client: &mut deadpool_postgres::Object,
    target: &str,
) -> Result<u32, PgOpenError> {
    let failed = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => PgOpenError::Migration {
            target: target.to_string(),
            message: db.message().to_string(),
        },
        None => PgOpenError::Unreachable {
            target: target.to_string(),
            message: e.to_string(),
        },
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await
        .map_err(failed)?;
    let result = apply(client, target).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await
        .map_err(failed);
    let version = result?;
    unlocked?;
    Ok(version)
}

async fn apply(client: &mut deadpool_postgres::Object, target: &str) -> Result<u32, PgOpenError> {
    let failed = |e: tokio_postgres::Error| PgOpenError::Migration {
        target: target.to_string(),
        message: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.message().to_string()),
    };
    client
        .batch_execute(
            "SET client_min_messages TO warning; \
             CREATE TABLE IF NOT EXISTS varcade_migrations (\
                 version integer PRIMARY KEY, \
                 name text NOT NULL, \
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(failed)?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM varcade_migrations",
            &[],
        )
        .await
        .map_err(failed)?;
    let found = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
    if found > LAYOUT_VERSION {
        return Err(PgOpenError::NewerLayout {
            target: target.to_string(),
            found,
            supported: LAYOUT_VERSION,
        });
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO varcade_migrations (version, name) VALUES ($1, $2)",
            &[&(*version as i32), name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version, name, "applied PostgreSQL migration");
    }
    Ok(LAYOUT_VERSION)
}
