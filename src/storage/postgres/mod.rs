//! The PostgreSQL backend (API.md "Storage and scale-out"): any number of
//! varcade nodes share one database.
//!
//! Every write is a transaction whose outcome the database decides, so no
//! node owns state in memory: a seat is taken under the game's row lock
//! (`games.rs`), event ids come from the one `log_head` row each append
//! locks, so they increase in commit order (`log.rs`, one transaction per
//! group of queued frames), and each consumer's effects commit with its
//! cursor (`games.rs`, `boards.rs`) under a lease ([`Storage::hold_lease`])
//! that another node takes over when it expires.
//!
//! What each node keeps in memory is derived and refreshed from the
//! database: the lobby of each product with its live feed (read again after
//! every local change before the write answers, and whenever the
//! `lobby_changes` sequence moves, polled every 100 ms, or at least every
//! second), and the durable end of the log (polled from `log_head`).
//!
//! Connections come from a deadpool pool of tokio-postgres clients. A lost
//! database makes calls fail with [`StorageError::Unavailable`] (503
//! `storage_unavailable`, `/readyz` 503) until a query succeeds again;
//! nothing is acknowledged before its commit.

mod boards;
mod games;
mod log;
mod schema;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::ports::{BackupFile, Imported, Storage, StorageError, StorageStatus};
use crate::domain::game::Game;
use crate::storage::lobby::{ListedGames, LobbyViews};

pub use schema::LAYOUT_VERSION;

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    #[error("storage.url is not a usable PostgreSQL URL: {0}")]
    Url(String),
    #[error("cannot reach PostgreSQL at {target}: {message}")]
    Unreachable { target: String, message: String },
    #[error(
        "the database at {target} has layout version {found}, newer than this build supports ({supported}); upgrade varcade"
    )]
    NewerLayout {
        target: String,
        found: u32,
        supported: u32,
    },
    #[error("PostgreSQL at {target}: {message}")]
    Migration { target: String, message: String },
}

/// How often each node looks for changes made through other nodes.
const POLL: Duration = Duration::from_millis(100);
/// Every lobby is read again at least this often.
const FULL_REFRESH: Duration = Duration::from_secs(1);
/// How long a request waits for a pooled connection.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// A database error is a failure of that call; a lost or refused
/// connection makes the database unavailable (503) until it is back.
fn pg(e: tokio_postgres::Error) -> StorageError {
    use std::error::Error as _;
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 08 (connection), 57P (shutdown, admin termination), 53
        // (insufficient resources): the server, not the query.
        if code.starts_with("08") || code.starts_with("57P") || code.starts_with("53") {
            return StorageError::Unavailable(format!("PostgreSQL: {}", db.message()));
        }
        return StorageError::Failed(format!("PostgreSQL: {}", db.message()));
    }
    let io = e
        .source()
        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    if e.is_closed() || io {
        StorageError::Unavailable(format!("PostgreSQL: {e}"))
    } else {
        StorageError::Failed(format!("PostgreSQL: {e}"))
    }
}

/// Every connection busy for [`CONNECT_WAIT`] is overload (503
/// `overloaded`); failing to connect is the database being unavailable.
fn pool_error(e: deadpool_postgres::PoolError) -> StorageError {
    match e {
        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            StorageError::Overloaded
        }
        e => StorageError::Unavailable(format!("PostgreSQL: {e}")),
    }
}

fn codec(e: postcard::Error) -> StorageError {
    StorageError::Failed(format!("stored game: {e}"))
}

/// A u64 id or count as PostgreSQL's bigint.
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A bigint read back as u64 (negative never stored).
fn unbig(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Queries through each connection's statement cache: a statement is
/// parsed once per connection, then each call is one round trip (a plain
/// `query(&str)` parses it every time, a round trip more).
#[async_trait]
trait Cached: deadpool_postgres::GenericClient + Sync {
    async fn cq(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn cq_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    async fn cq_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }

    async fn cexec(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }
}

impl<T: deadpool_postgres::GenericClient + Sync> Cached for T {}

/// A request to read a product's lobby again and publish it, answered once
/// published.
type Refresh = (String, oneshot::Sender<()>);

/// The state every task of this node shares.
struct Inner {
    pool: Pool,
    lobby: LobbyViews,
    durable: watch::Sender<u64>,
    /// Why the last call failed to reach the database, until one succeeds.
    failure: Mutex<Option<String>>,
    size_on_disk: AtomicU64,
    refresh: mpsc::Sender<Refresh>,
}

impl Inner {
    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.watch(self.pool.get().await.map_err(pool_error))
    }

    /// Records whether the database was reachable.
    fn watch<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => *failure = None,
            Err(StorageError::Unavailable(why)) => *failure = Some(why.clone()),
            Err(_) => {}
        }
        result
    }

    /// Publishes a newer durable end of the log.
    fn publish_durable(&self, id: u64) {
        self.durable.send_if_modified(|current| {
            let grew = id > *current;
            if grew {
                *current = id;
            }
            grew
        });
    }

    /// Reads `products`' lobbies again and waits until they are published
    /// (bounded: a slow refresh only delays the answer, never fails it).
    async fn refreshed(&self, products: impl IntoIterator<Item = String>) {
        let mut waits = Vec::new();
        for product in products {
            let (tx, rx) = oneshot::channel();
            if self.refresh.send((product, tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for wait in waits {
            let _ = tokio::time::timeout(FULL_REFRESH, wait).await;
        }
    }
}

/// The PostgreSQL backend of one node.
pub struct PgStorage {
    inner: Arc<Inner>,
    /// The holder this node takes each lease as (see [`PgStorage::fence`]).
    holders: Mutex<HashMap<String, String>>,
    appends: flume::Sender<log::AppendJob>,
    stop: CancellationToken,
    tasks: TaskTracker,
    layout_version: u32,
}

impl PgStorage {
    /// Connects, creates or upgrades the schema (under an advisory lock,
    /// recorded in `varcade_migrations`; a newer layout is refused), and
    /// starts this node's background tasks. `max_pending` bounds the
    /// appends waiting for their transaction.
    pub async fn open(
        url: &str,
        pool_size: usize,
        max_pending: usize,
    ) -> Result<Arc<PgStorage>, PgOpenError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgOpenError::Url(e.to_string()))?;
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .wait_timeout(Some(CONNECT_WAIT))
            .create_timeout(Some(CONNECT_WAIT))
            .recycle_timeout(Some(CONNECT_WAIT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| PgOpenError::Url(e.to_string()))?;
        let layout_version = {
            let mut client = pool.get().await.map_err(|e| PgOpenError::Unreachable {
                target: target.clone(),
                message: e.to_string(),
            })?;
            schema::migrate(&mut client, &target).await?
        };
        let durable = {
            let client = pool.get().await.map_err(|e| PgOpenError::Unreachable {
                target: target.clone(),
                message: e.to_string(),
            })?;
            let row = client
                .cq_one("SELECT next_id - 1 FROM log_head", &[])
                .await
                .map_err(|e| PgOpenError::Unreachable {
                    target: target.clone(),
                    message: e.to_string(),
                })?;
            unbig(row.get(0))
        };
        let (refresh_tx, refresh_rx) = mpsc::channel(1024);
        let inner = Arc::new(Inner {
            pool,
            lobby: LobbyViews::new(),
            durable: watch::channel(durable).0,
            failure: Mutex::new(None),
            size_on_disk: AtomicU64::new(0),
            refresh: refresh_tx,
        });
        let (appends, queued) = flume::bounded(max_pending.max(1));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(log::appender(inner.clone(), queued, stop.clone()));
        tasks.spawn(follow(inner.clone(), refresh_rx, stop.clone()));
        let storage = Arc::new(PgStorage {
            inner,
            holders: Mutex::new(HashMap::new()),
            appends,
            stop,
            tasks,
            layout_version,
        });
        storage.inner.refresh_all().await;
        Ok(storage)
    }
}

impl PgStorage {
    /// Fences a consumer's commit: once this node has taken the lease
    /// `name`, its transaction goes on only while it still holds it, and
    /// holds the lease row (`FOR SHARE`) so no other node takes it over
    /// before the commit. A node that lost its lease while it worked (a
    /// pause longer than the lease) applies nothing.
    async fn fence(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        name: &str,
    ) -> Result<(), StorageError> {
        let holder = self
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        let Some(holder) = holder else {
            return Ok(());
        };
        let held = tx
            .cq_opt(
                "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND expires > now() FOR SHARE",
                &[&name, &holder],
            )
            .await
            .map_err(pg)?;
        match held {
            Some(_) => Ok(()),
            None => Err(StorageError::Failed(format!(
                "this node no longer holds the {name} lease"
            ))),
        }
    }
}

/// `host:port/db` of a config, for messages (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

impl Inner {
    /// Reads every listed game and publishes each product's lobby (and an
    /// empty one for a product whose last listing went).
    async fn refresh_all(&self) {
        let listed = async {
            let client = self.client().await?;
            let rows = client
                .cq(
                    "SELECT product_id, game_id, listing, record FROM games \
                     WHERE listing IS NOT NULL ORDER BY product_id, listing",
                    &[],
                )
                .await
                .map_err(pg);
            self.watch(rows)
        };
        let rows = match listed.await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "lobby refresh failed");
                return;
            }
        };
        let mut lobbies: HashMap<String, ListedGames> = self
            .lobby
            .products()
            .into_iter()
            .map(|p| (p, Vec::new()))
            .collect();
        for row in rows {
            let product: String = row.get(0);
            if let Some(entry) = listed_entry(&row) {
                lobbies.entry(product).or_default().push(entry);
            }
        }
        self.lobby.publish_lobby(lobbies.into_iter().collect());
    }

    /// Reads one product's listed games and publishes its lobby.
    async fn refresh_product(&self, product: &str) {
        let listed = async {
            let client = self.client().await?;
            let rows = client
                .cq(
                    "SELECT product_id, game_id, listing, record FROM games \
                     WHERE product_id = $1 AND listing IS NOT NULL ORDER BY listing",
                    &[&product],
                )
                .await
                .map_err(pg);
            self.watch(rows)
        };
        match listed.await {
            Ok(rows) => {
                let games = rows.iter().filter_map(listed_entry).collect();
                self.lobby.publish_lobby(vec![(product.to_string(), games)]);
            }
            Err(e) => tracing::debug!(error = %e, product, "lobby refresh failed"),
        }
    }
}

/// A listed game's (id, place, listing form) from a `games` row.
fn listed_entry(row: &tokio_postgres::Row) -> Option<(String, u64, Arc<str>)> {
    let game_id: String = row.get(1);
    let listing: i64 = row.get(2);
    let record: Vec<u8> = row.get(3);
    let game: Game = postcard::from_bytes(&record).ok()?;
    Some((game_id, unbig(listing), Arc::from(game.partial_json())))
}

/// This node's follower of the database: answers lobby refresh requests,
/// and every [`POLL`] reads the durable end of the log and the
/// `lobby_changes` sequence (reading every lobby again when it moved, and
/// at least every [`FULL_REFRESH`]); the database size every second.
async fn follow(inner: Arc<Inner>, mut requests: mpsc::Receiver<Refresh>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<i64> = None;
    let mut moved_last_tick = false;
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            request = requests.recv() => {
                let Some((product, done)) = request else { return };
                let mut waiting = vec![done];
                let mut products = vec![product];
                while let Ok((product, done)) = requests.try_recv() {
                    waiting.push(done);
                    if !products.contains(&product) {
                        products.push(product);
                    }
                }
                for product in &products {
                    inner.refresh_product(product).await;
                }
                for done in waiting {
                    let _ = done.send(());
                }
            }
            _ = tick.tick() => {
                let polled = async {
                    let client = inner.client().await?;
                    let row = client
                        .cq_one(
                            "SELECT (SELECT next_id - 1 FROM log_head), \
                             (SELECT CASE WHEN is_called THEN last_value ELSE 0 END \
                              FROM lobby_changes)",
                            &[],
                        )
                        .await
                        .map_err(pg);
                    inner.watch(row)
                };
                let Ok(row) = polled.await else { continue };
                inner.publish_durable(unbig(row.get(0)));
                let changes: i64 = row.get(1);
                let moved = seen != Some(changes);
                seen = Some(changes);
                // A change is read again on the tick after it is seen too:
                // the sequence moves just before its transaction commits.
                if moved || moved_last_tick || last_full.elapsed() >= FULL_REFRESH {
                    inner.refresh_all().await;
                    if last_full.elapsed() >= FULL_REFRESH {
                        last_full = tokio::time::Instant::now();
                        inner.measure_size().await;
                    }
                }
                moved_last_tick = moved;
            }
        }
    }
}

impl Inner {
    async fn measure_size(&self) {
        let size = async {
            let client = self.client().await?;
            client
                .cq_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(pg)
        };
        if let Ok(row) = size.await {
            let bytes: i64 = row.get(0);
            self.size_on_disk.store(unbig(bytes), Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl Storage for PgStorage {
    fn status(&self) -> StorageStatus {
        StorageStatus {
            failure: self
                .inner
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            layout_version: self.layout_version,
            size_on_disk: self.inner.size_on_disk.load(Ordering::Relaxed),
        }
    }

    async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StorageError> {
        self.holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), holder.to_string());
        let client = self.inner.client().await?;
        let ttl_ms = big(ttl.as_millis() as u64);
        let rows = client
            .cq(
                "INSERT INTO leases (name, holder, expires) \
                 VALUES ($1, $2, now() + make_interval(secs => $3::float8 / 1000)) \
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires \
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires < now() \
                 RETURNING holder",
                &[&name, &holder, &(ttl_ms as f64)],
            )
            .await
            .map_err(pg);
        Ok(!self.inner.watch(rows)?.is_empty())
    }

    async fn close(&self) -> Result<(), StorageError> {
        self.stop.cancel();
        self.tasks.close();
        // The appender answers every frame queued before the stop, then
        // ends; the follower ends at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        Ok(())
    }

    async fn backup(&self) -> Result<BackupFile, StorageError> {
        Err(StorageError::Failed(
            "online backup is part of the sled backend; back up PostgreSQL with pg_dump or its replication".into(),
        ))
    }

    async fn import(&self, data: Imported) -> Result<(), StorageError> {
        let _ = data;
        Err(StorageError::Failed(
            "import-redis writes a sled data directory; import there, then move to PostgreSQL"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests;
