//! The embedded backend: the storage ports on sled, in one process.
//!
//! [`SledStorage`] is the handle the use cases get (like mini-redis's `Db`):
//! writes become [`writer::Job`]s on a bounded queue to the one writer
//! thread; reads of the lobby come from the views the writer publishes
//! after each flush, and reads of the log and boards run on the blocking
//! pool, never on the runtime's threads.

pub mod backup;
pub mod boards;
pub mod games;
pub mod log;
pub mod ranking;
pub mod ratings;
pub mod views;
pub mod writer;

#[path = "../../../migrations/mod.rs"]
mod migrations;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use crate::app::ports::{
    Applied, BackupFile, BoardList, Boards, ConsumerName, Counters, Entry, EventLog, GameStore,
    Imported, LobbyFeed, LoggedEvent, MatchmakerBatch, NewFrame, PendingAppend, PlayerRank,
    QuickRule, SeatOutcome, StatsBatch, Storage, StorageError, StorageStatus,
};
use crate::domain::game::{CurationChange, Game, State};
use ranking::board_key;
use views::Views;
use writer::{Job, Trees, Writer};

const LAYOUT_KEY: &[u8] = b"layout_version";
/// A file in the data directory while an import or a restore is being
/// written (its content names which); a directory that still has it holds
/// a partial database and is never served.
const INCOMPLETE_MARKER: &str = "INCOMPLETE";

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the database at {dir} has layout version {found}, newer than this varcade supports ({supported}); use a newer varcade"
    )]
    NewerLayout {
        dir: String,
        found: u32,
        supported: u32,
    },
    #[error("data directory {dir} is in use by another varcade process")]
    Locked { dir: String },
    #[error("data directory {dir}: {message}")]
    Io { dir: String, message: String },
    #[error("database {dir}: {message}")]
    Corrupt { dir: String, message: String },
    #[error(
        "data directory {dir} holds a {what} that was interrupted; remove the directory and run {what} again"
    )]
    Interrupted { dir: String, what: String },
    #[error("data directory {dir} is not empty; {what} needs an empty or missing one")]
    NotEmpty { dir: String, what: String },
    #[error("restore from {file}: {message}")]
    Restore { file: String, message: String },
}

/// The sled backend.
pub struct SledStorage {
    /// The data directory (backups are written here first).
    dir: std::path::PathBuf,
    jobs: flume::Sender<Job>,
    views: Arc<Views>,
    log: ::sled::Tree,
    stats: ::sled::Tree,
    games: ::sled::Tree,
    layout_version: u32,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn read_layout(meta: &::sled::Tree) -> Result<u32, ::sled::Error> {
    Ok(meta
        .get(LAYOUT_KEY)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0))
}

/// Applies the migrations newer than the recorded layout version.
fn migrate(db: &::sled::Db, dir: &Path) -> Result<u32, OpenError> {
    let corrupt = |e: ::sled::Error| OpenError::Corrupt {
        dir: dir.display().to_string(),
        message: e.to_string(),
    };
    let meta = db.open_tree("meta").map_err(corrupt)?;
    let current = read_layout(&meta).map_err(corrupt)?;
    let supported = migrations::MIGRATIONS.last().map_or(0, |m| m.version);
    if current > supported {
        return Err(OpenError::NewerLayout {
            dir: dir.display().to_string(),
            found: current,
            supported,
        });
    }
    for m in migrations::MIGRATIONS
        .iter()
        .filter(|m| m.version > current)
    {
        (m.apply)(db).map_err(corrupt)?;
        let mut batch = ::sled::Batch::default();
        batch.insert(LAYOUT_KEY, &m.version.to_be_bytes());
        batch.insert(
            format!("migration/{:04}", m.version).as_bytes(),
            format!("{} applied at {} µs", m.name, crate::infra::clock::now_us()).as_bytes(),
        );
        meta.apply_batch(batch).map_err(corrupt)?;
        db.flush().map_err(corrupt)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(supported.max(current))
}

/// Refuses a directory holding an interrupted import or restore.
fn check_complete(dir: &Path) -> Result<(), OpenError> {
    match std::fs::read_to_string(dir.join(INCOMPLETE_MARKER)) {
        Ok(what) => Err(OpenError::Interrupted {
            dir: dir.display().to_string(),
            what: what.trim().to_string(),
        }),
        Err(_) => Ok(()),
    }
}

/// Refuses a target directory for `what` (an import or a restore) unless
/// it is missing or empty; one holding an interrupted one is named so.
pub fn check_empty_target(dir: &Path, what: &str) -> Result<(), OpenError> {
    check_complete(dir)?;
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if empty {
        Ok(())
    } else {
        Err(OpenError::NotEmpty {
            dir: dir.display().to_string(),
            what: what.to_string(),
        })
    }
}

/// Creates `dir` (missing or empty) marked as incomplete by `what`.
fn begin_incomplete(dir: &Path, what: &str) -> Result<(), OpenError> {
    check_empty_target(dir, what)?;
    let io = |e: std::io::Error| OpenError::Io {
        dir: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut marker = std::fs::File::create(dir.join(INCOMPLETE_MARKER)).map_err(io)?;
    std::io::Write::write_all(&mut marker, what.as_bytes()).map_err(io)?;
    marker.sync_all().map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Removes the incomplete mark once the database is durable.
fn end_incomplete(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_file(dir.join(INCOMPLETE_MARKER))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes backup files a crash left behind (only the process holding the
/// database lock calls this).
fn remove_partial_backups(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("backup-") && name.ends_with(".partial") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl SledStorage {
    /// Opens (or creates) the database in `dir`, applies pending
    /// migrations, loads the writer's state and starts the writer. At most
    /// `max_pending` writes wait in its queue.
    pub fn open(dir: &Path, max_pending: usize) -> Result<Arc<SledStorage>, OpenError> {
        check_complete(dir)?;
        SledStorage::open_with(::sled::Config::new().path(dir), dir, max_pending)
    }

    /// Creates the database in `dir`, which must be missing or empty, for
    /// an import: until [`SledStorage::finish_import`], the directory is
    /// marked as holding a partial import.
    pub fn open_for_import(dir: &Path) -> Result<Arc<SledStorage>, OpenError> {
        begin_incomplete(dir, "import-redis")?;
        SledStorage::open_with(::sled::Config::new().path(dir), dir, 4096)
    }

    /// Marks an import into `dir` complete (after the storage is closed).
    pub fn finish_import(dir: &Path) -> std::io::Result<()> {
        end_incomplete(dir)
    }

    /// Rebuilds a data directory from a backup file (`varcade restore`):
    /// `dir` must be missing or empty; on any error it is removed again.
    pub fn restore(file: &Path, dir: &Path) -> Result<backup::Trailer, OpenError> {
        let failed = |message: String| OpenError::Restore {
            file: file.display().to_string(),
            message,
        };
        let trailer = backup::verify(file).map_err(|e| failed(e.to_string()))?;
        begin_incomplete(dir, "restore")?;
        let restored = backup::restore_into(file, dir)
            .map_err(|e| failed(e.to_string()))
            .and_then(|(t, db)| {
                if t == trailer {
                    Ok((t, db))
                } else {
                    Err(failed("the file changed while it was read".into()))
                }
            });
        let restored = restored.and_then(|(t, db)| {
            let meta = db.open_tree("meta").map_err(|e| failed(e.to_string()))?;
            let layout = read_layout(&meta).map_err(|e| failed(e.to_string()))?;
            let supported = migrations::MIGRATIONS.last().map_or(0, |m| m.version);
            if layout > supported {
                return Err(failed(format!(
                    "the backup has layout version {layout}, newer than this varcade supports ({supported}); use a newer varcade"
                )));
            }
            Ok(t)
        });
        match restored {
            Ok(t) => {
                end_incomplete(dir).map_err(|e| failed(e.to_string()))?;
                Ok(t)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(dir);
                Err(e)
            }
        }
    }

    /// A database in a temporary directory that is removed when closed.
    pub fn temporary() -> Result<Arc<SledStorage>, OpenError> {
        let dir = std::env::temp_dir().join(format!("varcade-tmp-{}", uuid::Uuid::new_v4()));
        SledStorage::open_with(::sled::Config::new().path(&dir).temporary(true), &dir, 4096)
    }

    fn open_with(
        config: ::sled::Config,
        dir: &Path,
        max_pending: usize,
    ) -> Result<Arc<SledStorage>, OpenError> {
        let name = dir.display().to_string();
        let db = config
            .cache_capacity(128 * 1024 * 1024)
            .flush_every_ms(None)
            .open()
            .map_err(|e| match e {
                ::sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    OpenError::Locked { dir: name.clone() }
                }
                ::sled::Error::Io(io) => OpenError::Io {
                    dir: name.clone(),
                    message: io.to_string(),
                },
                e => OpenError::Corrupt {
                    dir: name.clone(),
                    message: e.to_string(),
                },
            })?;
        remove_partial_backups(dir);
        let layout_version = migrate(&db, dir)?;
        let corrupt = |message: String| OpenError::Corrupt {
            dir: name.clone(),
            message,
        };
        let tree = |t: &str| db.open_tree(t).map_err(|e| corrupt(e.to_string()));
        let trees = Trees {
            db: db.clone(),
            games: tree("games")?,
            log: tree("log")?,
            stats: tree("stats")?,
        };
        let loaded = games::Games::load(&trees.games).map_err(|e| corrupt(e.to_string()))?;
        let log_state = log::LogState::load(&trees.log).map_err(|e| corrupt(e.to_string()))?;
        let cursor = |tree: &::sled::Tree, key: &[u8]| -> Result<u64, OpenError> {
            let value = tree.get(key).map_err(|e| corrupt(e.to_string()))?;
            Ok(games::decode_cursor(value.as_deref()))
        };
        let cursors = (
            cursor(
                &trees.games,
                &games::cursor_key(ConsumerName::Matchmaker.as_str()),
            )?,
            cursor(&trees.stats, boards::CURSOR_KEY)?,
        );
        let ranking = boards::load_ranking(&trees.stats).map_err(|e| corrupt(e.to_string()))?;
        let views = Arc::new(Views::new(ranking, log_state.last_id()));
        let (jobs, queue) = flume::bounded(max_pending.max(1));
        let storage = SledStorage {
            dir: dir.to_path_buf(),
            jobs,
            views: views.clone(),
            log: trees.log.clone(),
            stats: trees.stats.clone(),
            games: trees.games.clone(),
            layout_version,
            writer: Mutex::new(None),
        };
        let handle = Writer::new(trees, loaded, log_state, cursors, views)
            .spawn(queue)
            .map_err(|e| OpenError::Io {
                dir: name.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        *storage.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(Arc::new(storage))
    }

    /// Queues a job, refusing when the queue is full (HTTP writes).
    fn try_job<T>(
        &self,
        make: impl FnOnce(writer::Reply<T>) -> Job,
    ) -> Result<oneshot::Receiver<Result<T, StorageError>>, StorageError> {
        let (tx, rx) = oneshot::channel();
        match self.jobs.try_send(make(tx)) {
            Ok(()) => Ok(rx),
            Err(flume::TrySendError::Full(job)) => {
                crate::infra::metrics::overloaded();
                job.refuse(StorageError::Overloaded);
                Err(StorageError::Overloaded)
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(stopped()),
        }
    }

    /// Queues a job, waiting for room (writes that must happen).
    async fn job<T>(
        &self,
        make: impl FnOnce(writer::Reply<T>) -> Job,
    ) -> Result<oneshot::Receiver<Result<T, StorageError>>, StorageError> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send_async(make(tx))
            .await
            .map_err(|_| stopped())?;
        Ok(rx)
    }

    /// Runs a read on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SledReads) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let reads = SledReads {
            log: self.log.clone(),
            stats: self.stats.clone(),
            views: self.views.clone(),
            games: self.games.clone(),
        };
        tokio::task::spawn_blocking(move || f(&reads))
            .await
            .map_err(|e| StorageError::Failed(format!("read task: {e}")))?
    }
}

/// What a read on the blocking pool may look at.
struct SledReads {
    log: ::sled::Tree,
    stats: ::sled::Tree,
    views: Arc<Views>,
    games: ::sled::Tree,
}

fn stopped() -> StorageError {
    StorageError::Unavailable("the writer has stopped".into())
}

async fn answer<T>(rx: oneshot::Receiver<Result<T, StorageError>>) -> Result<T, StorageError> {
    rx.await.unwrap_or_else(|_| Err(stopped()))
}

#[async_trait]
impl GameStore for SledStorage {
    async fn insert_game(&self, game: Game) -> Result<(), StorageError> {
        answer(self.try_job(|reply| Job::InsertGame(game, reply))?).await
    }

    async fn reserve_seat(
        &self,
        product_id: &str,
        game_id: &str,
        user_id: &str,
        now_us: u64,
    ) -> Result<SeatOutcome, StorageError> {
        let rx = self.try_job(|reply| Job::ReserveSeat {
            product_id: product_id.to_string(),
            game_id: game_id.to_string(),
            user_id: user_id.to_string(),
            now_us,
            reply,
        })?;
        answer(rx).await
    }

    async fn quick_seat(
        &self,
        product_id: &str,
        user_id: &str,
        rule: QuickRule,
        now_us: u64,
    ) -> Result<Option<Box<Game>>, StorageError> {
        let (product_id, user_id) = (product_id.to_string(), user_id.to_string());
        answer(self.try_job(|reply| Job::QuickSeat {
            product_id,
            user_id,
            rule,
            now_us,
            reply,
        })?)
        .await
    }

    async fn release_seat(
        &self,
        game_id: &str,
        user_id: &str,
        now_us: u64,
    ) -> Result<bool, StorageError> {
        let rx = self
            .job(|reply| Job::ReleaseSeat {
                game_id: game_id.to_string(),
                user_id: user_id.to_string(),
                now_us,
                reply,
            })
            .await?;
        answer(rx).await
    }

    fn open_games(&self, product_id: &str, page: u64, count: u64) -> String {
        self.views.lobby().page(product_id, page, count)
    }

    fn lobby_feed(&self, product_id: &str, after: Option<u64>) -> LobbyFeed {
        self.views.lobby().lobby_feed(product_id, after, 1000)
    }

    async fn expired(
        &self,
        state: State,
        cutoff_us: u64,
        limit: usize,
    ) -> Result<Vec<Game>, StorageError> {
        let rx = self
            .job(|reply| Job::Expired {
                state,
                cutoff_us,
                limit,
                reply,
            })
            .await?;
        answer(rx).await
    }

    async fn curate(
        &self,
        game_id: &str,
        state: State,
        since_us: u64,
        change: CurationChange,
        now_us: u64,
    ) -> Result<bool, StorageError> {
        let rx = self
            .job(|reply| Job::Curate {
                game_id: game_id.to_string(),
                state,
                since_us,
                change,
                now_us,
                reply,
            })
            .await?;
        answer(rx).await
    }

    async fn apply_matchmaker(&self, batch: MatchmakerBatch) -> Result<Vec<Applied>, StorageError> {
        answer(self.job(|reply| Job::Matchmaker(batch, reply)).await?).await
    }

    async fn game_counts(&self) -> Result<Vec<(String, State, u64)>, StorageError> {
        answer(self.job(Job::GameCounts).await?).await
    }
}

#[async_trait]
impl EventLog for SledStorage {
    async fn submit(&self, frame: NewFrame) -> Result<PendingAppend, StorageError> {
        let received = Instant::now();
        let rx = self
            .job(|reply| Job::Append(frame, received, reply))
            .await?;
        Ok(PendingAppend(rx))
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Vec<LoggedEvent>, StorageError> {
        self.blocking(move |r| {
            let durable = *r.views.durable().borrow();
            let mut events = log::read(&r.log, after, limit)?;
            events.retain(|e| e.id <= durable);
            Ok(events)
        })
        .await
    }

    fn durable(&self) -> watch::Receiver<u64> {
        self.views.durable()
    }

    async fn cursor(&self, consumer: ConsumerName) -> Result<u64, StorageError> {
        self.blocking(move |r| {
            let (tree, key) = match consumer {
                ConsumerName::Matchmaker => (&r.games, games::cursor_key(consumer.as_str())),
                ConsumerName::Stats => (&r.stats, boards::CURSOR_KEY.to_vec()),
            };
            let value = tree
                .get(key)
                .map_err(|e| StorageError::Failed(e.to_string()))?;
            Ok(games::decode_cursor(value.as_deref()))
        })
        .await
    }

    async fn drop_before(&self, upto: u64, before_ms: u64) -> Result<u64, StorageError> {
        let rx = self
            .job(|reply| Job::DropBefore {
                upto,
                before_ms,
                reply,
            })
            .await?;
        answer(rx).await
    }
}

#[async_trait]
impl Boards for SledStorage {
    async fn apply_stats(&self, batch: StatsBatch) -> Result<(), StorageError> {
        answer(self.job(|reply| Job::Stats(batch, reply)).await?).await
    }

    async fn window(
        &self,
        product: &str,
        season: Option<&str>,
        offset: u64,
        count: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        let board = board_key(product, season);
        // The writer holds the order's write lock while it applies a stats
        // batch (a few ms at most): a window that finds it held waits on
        // the blocking pool, not on a runtime thread.
        if let Ok(ranking) = self.views.ranking().try_read() {
            return Ok(ranking.window(&board, offset, count));
        }
        self.blocking(move |r| {
            let ranking = r.views.ranking().read().unwrap_or_else(|p| p.into_inner());
            Ok(ranking.window(&board, offset, count))
        })
        .await
    }

    async fn rank(
        &self,
        product: &str,
        season: Option<&str>,
        user: &str,
    ) -> Result<Option<(i64, u64)>, StorageError> {
        let (product, user) = (product.to_string(), user.to_string());
        let season = season.map(str::to_string);
        self.blocking(move |r| {
            boards::rank(
                &r.stats,
                r.views.ranking(),
                &product,
                season.as_deref(),
                &user,
            )
        })
        .await
    }

    async fn around(
        &self,
        product: &str,
        season: Option<&str>,
        user: &str,
        n: usize,
    ) -> Result<Option<PlayerRank>, StorageError> {
        let (product, user) = (product.to_string(), user.to_string());
        let season = season.map(str::to_string);
        self.blocking(move |r| {
            boards::around(
                &r.stats,
                r.views.ranking(),
                &product,
                season.as_deref(),
                &user,
                n,
            )
        })
        .await
    }

    async fn boards(&self, product: &str) -> Result<BoardList, StorageError> {
        let product = product.to_string();
        self.blocking(move |r| {
            let ranking = r.views.ranking().read().unwrap_or_else(|p| p.into_inner());
            Ok(boards::list(&ranking, &product))
        })
        .await
    }

    async fn player_stats(&self, product: &str, user: &str) -> Result<Counters, StorageError> {
        let (product, user) = (product.to_string(), user.to_string());
        self.blocking(move |r| boards::stats(&r.stats, &product, &user))
            .await
    }
}

#[async_trait]
impl Storage for SledStorage {
    fn status(&self) -> StorageStatus {
        StorageStatus {
            failure: self.views.failure(),
            layout_version: self.layout_version,
            size_on_disk: self.views.size_on_disk(),
        }
    }

    async fn hold_lease(
        &self,
        _name: &str,
        _holder: &str,
        _ttl: Duration,
    ) -> Result<bool, StorageError> {
        // sled's lock on the data directory makes this process the only
        // one: every lease is always its own.
        Ok(true)
    }

    async fn backup(&self) -> Result<BackupFile, StorageError> {
        let path = self
            .dir
            .join(format!("backup-{}.partial", uuid::Uuid::new_v4()));
        let mut file = BackupFile {
            path: path.clone(),
            bytes: 0,
            records: 0,
        };
        file.records = answer(self.job(|reply| Job::Backup(path, reply)).await?).await?;
        let path = file.path.clone();
        file.bytes = tokio::task::spawn_blocking(move || std::fs::metadata(path))
            .await
            .map_err(|e| StorageError::Failed(e.to_string()))?
            .map_err(|e| StorageError::Failed(format!("backup: {e}")))?
            .len();
        Ok(file)
    }

    async fn import(&self, data: Imported) -> Result<(), StorageError> {
        answer(self.job(|reply| Job::Import(Box::new(data), reply)).await?).await
    }

    async fn close(&self) -> Result<(), StorageError> {
        let result = answer(self.job(Job::Close).await?).await;
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        result
    }
}

#[cfg(test)]
mod tests;
