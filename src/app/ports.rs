//! The storage ports: what the use cases need from a backend, at the level
//! of games, the event log and boards (not keys and values).
//!
//! A backend implements [`Storage`]. Every write method returns once its
//! effect is durable; a failed commit answers [`StorageError::Unavailable`]
//! and the backend acknowledges nothing after it. The ports do not assume a
//! single process: event ids come from the backend, a consumer's effects and
//! its cursor are one atomic write, and consumers and curation run under a
//! lease the backend grants ([`Storage::hold_lease`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use crate::domain::event::Dedup;
use crate::domain::game::{CurationChange, Effect, Game, GameEvent, JoinRefusal, State};
use crate::domain::scoring::Scoring;
use crate::domain::season::Season;

/// Why the backend could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The write queue is full: try again shortly (HTTP 503 `overloaded`).
    #[error("the service is overloaded; retry shortly")]
    Overloaded,
    /// A commit failed; nothing more is acknowledged until a restart
    /// (HTTP 503 `storage_unavailable`).
    #[error("the database cannot be written: {0}")]
    Unavailable(String),
    /// Anything else (HTTP 500 `internal`).
    #[error("storage: {0}")]
    Failed(String),
}

/// The outcome of a seat reservation.
#[derive(Debug, Clone, PartialEq)]
pub enum SeatOutcome {
    /// The seat is durably reserved; the game as it is now.
    Reserved(Box<Game>),
    /// No such game (or not of this product).
    NotFound,
    /// The game refused the player.
    Refused(JoinRefusal),
}

/// One change of a product's listing in the live lobby feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LobbyChange {
    /// A game entered the listing or its listing form changed (partial
    /// form JSON).
    Listed { game_id: String, json: Arc<str> },
    /// A game left the listing.
    Unlisted { game_id: String },
}

/// A lobby change with the product's lobby version after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    pub version: u64,
    pub change: LobbyChange,
    /// The event as the front end sends it: encoded by the first client
    /// that sends it and shared by every other.
    pub encoded: std::sync::OnceLock<bytes::Bytes>,
}

/// A subscription to a product's live lobby feed.
pub struct LobbyFeed {
    /// The listing in lobby order and its version, unless the subscription
    /// resumes after a version the backend still holds.
    pub snapshot: Option<(Vec<Arc<str>>, u64)>,
    /// The events after the resumed version.
    pub replay: Vec<Arc<FeedEvent>>,
    /// Every later event, in order; lagging behind ends it.
    pub live: tokio::sync::broadcast::Receiver<Arc<FeedEvent>>,
}

/// How quick match chooses among a product's open games.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickRule {
    /// The oldest listing.
    Oldest,
    /// The game whose creator's score is closest to the player's, at most
    /// `max_gap` away, ties by oldest listing; a player or creator not on
    /// the board counts as `initial`.
    Closest { initial: i64, max_gap: i64 },
}

/// A frame of events to append (each event's JSON text, as sent).
#[derive(Debug, Clone)]
pub struct NewFrame {
    pub events: Vec<String>,
    /// What keeps it from being appended twice, if anything.
    pub dedup: Option<Dedup>,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// First id of the frame (for a duplicate: the stored last id).
    pub first_id: u64,
    pub last_id: u64,
    /// Events appended (0 for a duplicate).
    pub count: u64,
    pub duplicate: bool,
}

/// An append that is queued and resolves once durable (for pipelining).
pub struct PendingAppend(pub oneshot::Receiver<Result<Appended, StorageError>>);

impl PendingAppend {
    /// Waits until the frame is durable (or failed).
    pub async fn wait(self) -> Result<Appended, StorageError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StorageError::Unavailable("the writer has stopped".into())))
    }
}

/// One event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub id: u64,
    /// Append time, Unix milliseconds.
    pub ts_ms: u64,
    pub json: String,
}

/// The consumers of the log, each with its own cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsumerName {
    Matchmaker,
    Stats,
}

impl ConsumerName {
    /// Every consumer.
    pub const ALL: [ConsumerName; 2] = [ConsumerName::Matchmaker, ConsumerName::Stats];

    /// The name in logs, metrics and `/admin/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsumerName::Matchmaker => "matchmaker",
            ConsumerName::Stats => "stats",
        }
    }
}

/// A matchmaker batch: events in log order, applied with the cursor.
#[derive(Debug, Clone)]
pub struct MatchmakerBatch {
    /// (event id, append time µs, game id, product id, event).
    pub events: Vec<(u64, u64, String, String, GameEvent)>,
    /// The id of the batch's last event (the new cursor).
    pub cursor: u64,
}

/// What a matchmaker event did to a game.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub game_id: String,
    pub product_id: String,
    pub effect: Effect,
}

/// A change the stats tracker makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsChange {
    /// A finished game: both players' scores move by the product's rule.
    GameOver {
        product: String,
        winner: String,
        loser: String,
        /// The season of the event's append time, for a product with
        /// seasons; `None`: the lifetime board.
        season: Option<SeasonRef>,
    },
    /// A player counter moves by `delta`.
    Count {
        product: String,
        user: String,
        counter: &'static str,
        delta: i64,
    },
}

/// The season a `game_over` counts for, and how many archived seasons
/// its product keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeasonRef {
    pub season: Season,
    pub keep: usize,
}

/// A product's boards as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardList {
    /// Players on the lifetime board (a product without seasons).
    pub lifetime_players: u64,
    /// Stored seasons, newest first.
    pub seasons: Vec<SeasonBoard>,
}

/// One stored season and the players on its board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeasonBoard {
    pub season: Season,
    pub players: u64,
}

/// Each product's scoring rule.
pub type ScoringRules = Arc<BTreeMap<String, Box<dyn Scoring>>>;

/// A stats batch: changes in log order, applied with the cursor.
pub struct StatsBatch {
    pub changes: Vec<StatsChange>,
    pub scoring: ScoringRules,
    /// The id of the batch's last event (the new cursor).
    pub cursor: u64,
}

/// One board entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user_id: String,
    pub score: i64,
}

/// A player's place on a board with the entries around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerRank {
    pub score: i64,
    /// 1-based.
    pub rank: u64,
    /// Up to N entries above and below, the player included, each with
    /// its rank, in board order.
    pub around: Vec<(Entry, u64)>,
}

/// Player counters, by name.
pub type Counters = BTreeMap<String, i64>;

/// Another system's data, converted, for an import into an empty backend.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub games: Vec<Game>,
    /// (product, user, board score if any, counters).
    pub players: Vec<(String, String, Option<i64>, Counters)>,
    /// Events to append in order (each event's JSON text).
    pub events: Vec<String>,
    /// The matchmaker's and the stats tracker's cursors among them.
    pub matchmaker_cursor: u64,
    pub stats_cursor: u64,
}

/// A point-in-time copy of the whole database in a file, which is removed
/// when this is dropped.
#[derive(Debug)]
pub struct BackupFile {
    pub path: std::path::PathBuf,
    pub bytes: u64,
    pub records: u64,
}

impl Drop for BackupFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the backend says about itself (`/admin/status`, `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageStatus {
    /// `None` while writes succeed; why they stopped otherwise.
    pub failure: Option<String>,
    pub layout_version: u32,
    pub size_on_disk: u64,
}

/// Games: the lobby's and curation's view of the matchmaker's state.
#[async_trait]
pub trait GameStore: Send + Sync + 'static {
    /// Stores a new game. Refuses with [`StorageError::Overloaded`] when
    /// the write queue is full (an HTTP write).
    async fn insert_game(&self, game: Game) -> Result<(), StorageError>;

    /// Reserves a seat atomically: of concurrent callers for the last seat
    /// exactly one succeeds. Refuses with `Overloaded` when the queue is full.
    async fn reserve_seat(
        &self,
        product_id: &str,
        game_id: &str,
        user_id: &str,
        now_us: u64,
    ) -> Result<SeatOutcome, StorageError>;

    /// Chooses the open game that suits `user_id` by `rule` and reserves
    /// its seat, as one atomic step (concurrent callers never pass over a
    /// free seat that suits them); `None` when no game suits. Refuses with
    /// `Overloaded` when the queue is full.
    async fn quick_seat(
        &self,
        product_id: &str,
        user_id: &str,
        rule: QuickRule,
        now_us: u64,
    ) -> Result<Option<Box<Game>>, StorageError>;

    /// Gives back a seat taken by [`GameStore::reserve_seat`]; waits for
    /// room in the queue (it must happen). `false` if it was not held.
    async fn release_seat(
        &self,
        game_id: &str,
        user_id: &str,
        now_us: u64,
    ) -> Result<bool, StorageError>;

    /// One page of a product's listed games, oldest listing first, as a JSON
    /// array of their listing forms; only durable state is shown.
    fn open_games(&self, product_id: &str, page: u64, count: u64) -> String;

    /// Subscribes to a product's lobby changes, published with the lobby
    /// itself (after the durable commit): a snapshot and then events, or
    /// only the events after `after` while they are still held.
    fn lobby_feed(&self, product_id: &str, after: Option<u64>) -> LobbyFeed;

    /// Games in `state` since before `cutoff_us`, oldest first.
    async fn expired(
        &self,
        state: State,
        cutoff_us: u64,
        limit: usize,
    ) -> Result<Vec<Game>, StorageError>;

    /// Applies a curation change if the game is still in `state` since
    /// `since_us`; `false` when it changed meanwhile or is gone.
    async fn curate(
        &self,
        game_id: &str,
        state: State,
        since_us: u64,
        change: CurationChange,
        now_us: u64,
    ) -> Result<bool, StorageError>;

    /// Applies a matchmaker batch and moves its cursor, atomically. A batch
    /// at or below the stored cursor is not applied again.
    async fn apply_matchmaker(&self, batch: MatchmakerBatch) -> Result<Vec<Applied>, StorageError>;

    /// How many games each (product, state) has.
    async fn game_counts(&self) -> Result<Vec<(String, State, u64)>, StorageError>;
}

/// The event log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Queues a frame, waiting while the write queue is full (backpressure);
    /// the returned append resolves once the frame is durable. Ids are
    /// consecutive within a frame and increase in commit order.
    async fn submit(&self, frame: NewFrame) -> Result<PendingAppend, StorageError>;

    /// Up to `limit` durable events with ids greater than `after`, ascending.
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<LoggedEvent>, StorageError>;

    /// The id of the last durable event, as it grows.
    fn durable(&self) -> watch::Receiver<u64>;

    /// A consumer's cursor: the id of the last event it applied.
    async fn cursor(&self, consumer: ConsumerName) -> Result<u64, StorageError>;

    /// Drops events at or below `upto` appended before `before_ms`;
    /// returns how many were dropped.
    async fn drop_before(&self, upto: u64, before_ms: u64) -> Result<u64, StorageError>;
}

/// Leaderboards and player stats.
#[async_trait]
pub trait Boards: Send + Sync + 'static {
    /// Applies a stats batch and moves the stats cursor, atomically. A batch
    /// at or below the stored cursor is not applied again.
    async fn apply_stats(&self, batch: StatsBatch) -> Result<(), StorageError>;

    /// `count` entries from position `offset` (0-based), best first, of
    /// the lifetime board (`season` `None`) or a season's.
    async fn window(
        &self,
        product: &str,
        season: Option<&str>,
        offset: u64,
        count: usize,
    ) -> Result<Vec<Entry>, StorageError>;

    /// A player's score and 1-based rank on a board.
    async fn rank(
        &self,
        product: &str,
        season: Option<&str>,
        user: &str,
    ) -> Result<Option<(i64, u64)>, StorageError>;

    /// A player's score, rank and up to `n` entries either side on a
    /// board, in one read of the board (no second lookup of the rank).
    async fn around(
        &self,
        product: &str,
        season: Option<&str>,
        user: &str,
        n: usize,
    ) -> Result<Option<PlayerRank>, StorageError>;

    /// The product's lifetime board size and stored seasons.
    async fn boards(&self, product: &str) -> Result<BoardList, StorageError>;

    /// A player's counters (empty when none).
    async fn player_stats(&self, product: &str, user: &str) -> Result<Counters, StorageError>;
}

/// A whole backend.
#[async_trait]
pub trait Storage: GameStore + EventLog + Boards {
    /// Whether writes succeed, the layout version, the size on disk.
    fn status(&self) -> StorageStatus;

    /// Takes or renews the lease `name` for `holder` for `ttl`; `false`
    /// while another holder has it.
    async fn hold_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StorageError>;

    /// Makes everything durable and stops accepting writes.
    async fn close(&self) -> Result<(), StorageError>;

    /// Writes a consistent copy of the whole database, one moment of it, to
    /// a file (writes wait while it is taken).
    async fn backup(&self) -> Result<BackupFile, StorageError>;

    /// Writes imported data into an empty backend as one durable step;
    /// refuses (`Failed`) if it holds any game or event.
    async fn import(&self, data: Imported) -> Result<(), StorageError>;
}
