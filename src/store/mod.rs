//! The store: the sled database, its trees, the layout migrations, and the
//! committer thread that makes writes durable in groups.
//!
//! [`Store`] is the one handle to shared state (like mini-redis's `Db`).
//! Each concern owns one tree and keeps its indexes and its consumer cursor
//! in that tree, so every atomic change is a single-tree sled transaction or
//! batch. Durability comes from [`Store::flush`] and [`Store::append`], which
//! queue on one committer thread: a single `fsync` serves every request that
//! arrived while the previous one ran (group commit), and the runtime never
//! blocks on a flush.

pub mod commit;
pub mod games;
pub mod lobby;

#[path = "../../migrations/mod.rs"]
mod migrations;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

pub use commit::Appended;

/// Store failures. None of them is the client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record: {0}")]
    Codec(#[from] postcard::Error),
    #[error(
        "the database at {dir} has layout version {found}, newer than this varcade supports ({supported}); use a newer varcade"
    )]
    NewerLayout {
        dir: String,
        found: u32,
        supported: u32,
    },
    #[error("the committer has stopped")]
    Closed,
    #[error("commit failed: {0}")]
    Failed(String),
}

impl<E: Into<StoreError>> From<sled::transaction::TransactionError<E>> for StoreError {
    fn from(e: sled::transaction::TransactionError<E>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e.into(),
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The shared database handle.
pub struct Store {
    pub db: sled::Db,
    /// Games, lobby and state indexes, matchmaker cursor.
    pub games: sled::Tree,
    /// The event log and idempotent producers.
    pub log: sled::Tree,
    /// Leaderboards, player stats, stats cursor.
    pub stats: sled::Tree,
    pub meta: sled::Tree,
    /// The lobby order in memory (see [`lobby`]).
    pub lobby: lobby::LobbyCache,
    /// The leaderboards' rank counts in memory (see [`crate::stats::board`]).
    pub ranks: crate::stats::board::RankCounts,
    committer: commit::Handle,
    durable: watch::Receiver<u64>,
}

const LAYOUT_KEY: &[u8] = b"layout_version";

impl Store {
    /// Opens (or creates) the database in `dir`, applies pending migrations
    /// and starts the committer thread.
    pub fn open(dir: &Path) -> Result<Arc<Store>, StoreError> {
        Store::open_with(sled::Config::new().path(dir), dir)
    }

    /// A store in a temporary directory that is removed when it closes.
    #[cfg(test)]
    pub(crate) fn temporary() -> Arc<Store> {
        let dir = std::env::temp_dir().join(format!("varcade-unit-{}", uuid::Uuid::new_v4()));
        Store::open_with(sled::Config::new().path(&dir).temporary(true), &dir)
            .expect("open a temporary store")
    }

    fn open_with(config: sled::Config, dir: &Path) -> Result<Arc<Store>, StoreError> {
        let db = config
            .cache_capacity(128 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()?;
        migrate(&db, dir)?;
        let games = db.open_tree("games")?;
        let log = db.open_tree("log")?;
        let stats = db.open_tree("stats")?;
        let meta = db.open_tree("meta")?;
        let (committer, durable) = commit::start(db.clone(), log.clone())?;
        let lobby = lobby::LobbyCache::load(games::listed(&games))?;
        let ranks = crate::stats::board::RankCounts::load(&stats)?;
        Ok(Arc::new(Store {
            lobby,
            ranks,
            db,
            games,
            log,
            stats,
            meta,
            committer,
            durable,
        }))
    }

    /// Waits until everything written so far is on disk. Concurrent callers
    /// share one flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.committer.send(commit::Job::Flush(tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends one frame of events (JSON texts) to the log and waits until it
    /// is on disk. With a producer and seq, a frame already appended is not
    /// appended again.
    pub async fn append(
        &self,
        events: Vec<String>,
        producer: Option<(String, u64)>,
    ) -> Result<Appended, StoreError> {
        self.submit(events, producer)?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Queues a frame for [`Store::append`] without waiting, so a connection
    /// can pipeline frames; the receiver answers once the frame is on disk.
    pub fn submit(
        &self,
        events: Vec<String>,
        producer: Option<(String, u64)>,
    ) -> Result<oneshot::Receiver<Result<Appended, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.committer.send(commit::Job::Append(commit::AppendJob {
            events,
            producer,
            received: std::time::Instant::now(),
            reply: tx,
        }))?;
        Ok(rx)
    }

    /// The id of the last event that is on disk (0 when the log is empty).
    pub fn durable_id(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Follows [`Store::durable_id`] as it grows.
    pub fn watch_durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// The layout version recorded in the database.
    pub fn layout_version(&self) -> Result<u32, StoreError> {
        read_layout(&self.meta)
    }

    /// Runs sled work on the blocking pool, so runtime threads never wait on
    /// sled's write lock.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Failed(format!("store task: {e}")))?
    }

    /// Flushes synchronously (for shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn read_layout(meta: &sled::Tree) -> Result<u32, StoreError> {
    Ok(meta
        .get(LAYOUT_KEY)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0))
}

/// Applies the migrations newer than the recorded layout version.
fn migrate(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    let meta = db.open_tree("meta")?;
    let current = read_layout(&meta)?;
    let supported = migrations::MIGRATIONS.last().map_or(0, |m| m.version);
    if current > supported {
        return Err(StoreError::NewerLayout {
            dir: dir.display().to_string(),
            found: current,
            supported,
        });
    }
    for m in migrations::MIGRATIONS
        .iter()
        .filter(|m| m.version > current)
    {
        (m.apply)(db)?;
        let mut batch = sled::Batch::default();
        batch.insert(LAYOUT_KEY, &m.version.to_be_bytes());
        batch.insert(
            format!("migration/{:04}", m.version).as_bytes(),
            format!("{} applied at {} µs", m.name, crate::game::now_us()).as_bytes(),
        );
        meta.apply_batch(batch)?;
        db.flush()?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("varcade-{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn appends_get_consecutive_ids_and_envelopes_are_deduplicated() {
        let store = Store::temporary();
        let ev = || vec!["{}".to_string(), "{}".to_string()];
        assert!(store.append(Vec::new(), None).await.is_err(), "empty frame");
        let first = store.append(ev(), Some(("p".into(), 1))).await.unwrap();
        assert_eq!((first.first_id, first.last_id, first.count), (1, 2, 2));
        let again = store.append(ev(), Some(("p".into(), 1))).await.unwrap();
        assert!(again.duplicate && again.count == 0 && again.last_id == 2);
        let next = store.append(ev(), None).await.unwrap();
        assert_eq!((next.first_id, next.last_id), (3, 4));
        assert_eq!(store.durable_id(), 4);
    }

    #[tokio::test]
    async fn migrations_are_recorded_and_newer_layouts_refused() {
        let dir = temp_dir("migrate");
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.layout_version().unwrap(), 1);
            assert!(store.meta.get("migration/0001").unwrap().is_some());
            store.meta.insert(LAYOUT_KEY, &99u32.to_be_bytes()).unwrap();
            store.flush().await.unwrap();
        }
        // The committer thread holds a handle until it notices the drop.
        let mut result = Store::open(&dir);
        for _ in 0..50 {
            match &result {
                Err(StoreError::Sled(_)) => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    result = Store::open(&dir);
                }
                _ => break,
            }
        }
        match result {
            Err(StoreError::NewerLayout { found: 99, .. }) => {}
            other => panic!("expected NewerLayout, got {:?}", other.map(|_| ())),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
