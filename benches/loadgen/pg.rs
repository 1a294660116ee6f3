//! The PostgreSQL databases of `--storage postgres`: each scenario's
//! server(s) get a database of their own, created on the server named by
//! `--pg-url` (default `postgres://postgres@127.0.0.1:5432`) under a unique
//! name (`varcade_bench_<uuid>`) and dropped (`WITH (FORCE)`) when the
//! [`Database`] is dropped, after the servers using it were killed. The
//! bench only ever drops databases it created.
//!
//! Creating and dropping happen from synchronous code (a server is started
//! and dropped outside any `.await`), so each runs on a short-lived thread
//! with a runtime of its own ([`blocking`]).

use std::future::Future;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::{Context, Res};

/// How long creating or dropping a database may take.
const ADMIN_LIMIT: Duration = Duration::from_secs(60);

/// A database created for a scenario, dropped on drop.
pub struct Database {
    pub name: String,
    /// `<server>/<name>`: what the servers' config and the populate step use.
    pub url: String,
    server: String,
}

impl Database {
    /// Creates `varcade_bench_<uuid>` on `server` (a `postgres://` URL
    /// without a database).
    pub fn create(server: &str) -> Res<Database> {
        let server = server.trim_end_matches('/').to_string();
        let name = format!("varcade_bench_{}", uuid::Uuid::new_v4().simple());
        admin(&server, format!("CREATE DATABASE {name}"))?;
        Ok(Database {
            url: format!("{server}/{name}"),
            name,
            server,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(&self.server, sql) {
            eprintln!("loadgen: could not drop database {}: {e}", self.name);
        }
    }
}

/// Connects to `url`; the connection's driver runs on the current runtime.
pub async fn connect(url: &str) -> Res<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .ctx(&format!("connect to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs one statement on `server`'s `postgres` database.
fn admin(server: &str, sql: String) -> Res<()> {
    let url = format!("{server}/postgres");
    blocking(async move {
        let client = connect(&url).await?;
        client.batch_execute(&sql).await.ctx(&sql)?;
        Ok(())
    })
}

/// Runs `work` to completion on a thread of its own with a current-thread
/// runtime (so it may be called from synchronous code inside or outside
/// the load generator's runtime), [`ADMIN_LIMIT`] at most.
fn blocking<F>(work: F) -> Res<()>
where
    F: Future<Output = Res<()>> + Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx("admin runtime")?;
        rt.block_on(async {
            tokio::time::timeout(ADMIN_LIMIT, work)
                .await
                .map_err(|_| format!("took more than {} s", ADMIN_LIMIT.as_secs()))?
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_string())?
}
