//! The use cases: the lobby, ingest, curation, the consumers and retention,
//! over the storage ports ([`ports`]). Nothing here knows HTTP or sled.
//!
//! [`App`] is what the front ends (HTTP, RESP) call. Work that must
//! finish once started (a reserved seat, a call that changes a game server)
//! runs in tasks tracked by the app, so a caller that goes away changes
//! nothing in the outcome, and shutdown waits for them.

pub mod consumer;
pub mod curation;
pub mod import;
pub mod ingest;
pub mod keys;
pub mod lobby;
pub mod matchmaker;
pub mod ports;
pub mod retention;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::domain::event::FrameError;
use crate::domain::game::Expiry;
use crate::domain::scoring::{self, Scoring};
use crate::domain::stats_rules::{self, StatsHandler};
use crate::infra::config::{Config, Known, ProductConfig};
use crate::infra::gameserver::{GameServerClient, GameServerError};
use ports::{ConsumerName, ScoringRules, Storage, StorageError};

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("no game {0:?}")]
    GameNotFound(String),
    #[error("the game is not open for joining or has no free seat")]
    GameNotJoinable,
    #[error("you have already joined this game")]
    AlreadyJoined,
    #[error("player {0:?} has no score on this leaderboard")]
    PlayerNotFound(String),
    #[error("no season {0:?} on this leaderboard")]
    SeasonNotFound(String),
    #[error("game server: {0}")]
    GameServer(#[from] GameServerError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The names the config may choose from.
pub fn known_names() -> Known {
    Known {
        leaderboards: scoring::REGISTRY.names(),
        stats: stats_rules::REGISTRY.names(),
    }
}

/// How each consumer is doing, for `/readyz` and `/admin/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerHealth {
    /// Why the last batch failed, while it keeps failing.
    pub failing: Option<String>,
    /// Failed batches since start.
    pub failures: u64,
}

/// The consumers' health, written by their drivers.
#[derive(Debug, Default)]
pub struct Health(Mutex<BTreeMap<ConsumerName, ConsumerHealth>>);

impl Health {
    fn update(&self, consumer: ConsumerName, f: impl FnOnce(&mut ConsumerHealth)) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(all.entry(consumer).or_default());
    }

    /// Each consumer's health.
    pub fn get(&self, consumer: ConsumerName) -> ConsumerHealth {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&consumer).cloned().unwrap_or_default()
    }

    /// Whether any consumer is failing.
    pub fn any_failing(&self) -> bool {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.values().any(|h| h.failing.is_some())
    }
}

/// A product's stats handler.
pub type Handlers = Arc<BTreeMap<String, Box<dyn StatsHandler>>>;

/// The service's use cases and what they share.
pub struct App {
    products: HashMap<String, ProductConfig>,
    /// The backend.
    pub storage: Arc<dyn Storage>,
    game_servers: GameServerClient,
    tasks: TaskTracker,
    /// The consumers' health.
    pub health: Health,
    /// `open_games` page sizes: (default, max).
    pages: (u64, u64),
    expiry: Expiry,
    curation_interval: Duration,
    retention: Duration,
    scoring: ScoringRules,
    handlers: Handlers,
    /// Quick match's `max_rating_gap`.
    max_rating_gap: i64,
    /// How long this node holds a consumer's or curation's lease without
    /// renewing it (`storage.lease_secs`).
    pub lease: Duration,
    /// This process's name as a lease holder (unique across nodes).
    pub node: String,
}

impl App {
    /// The use cases over `storage`, configured by `config`.
    pub fn new(config: &Config, storage: Arc<dyn Storage>) -> Arc<App> {
        let mut scoring: BTreeMap<String, Box<dyn Scoring>> = BTreeMap::new();
        let mut handlers: BTreeMap<String, Box<dyn StatsHandler>> = BTreeMap::new();
        for p in &config.games {
            if let Some(rule) = scoring::REGISTRY.make(&p.leaderboard) {
                scoring.insert(p.product_id.clone(), rule);
            }
            if let Some(handler) = stats_rules::REGISTRY.make(&p.stats) {
                handlers.insert(p.product_id.clone(), handler);
            }
        }
        let e = &config.expiry;
        Arc::new(App {
            products: config.products(),
            storage,
            game_servers: GameServerClient::new(Duration::from_millis(
                config.game_server_timeout_ms,
            )),
            tasks: TaskTracker::new(),
            health: Health::default(),
            pages: (config.lobby.default_page_size, config.lobby.max_page_size),
            expiry: Expiry([
                e.created,
                e.creator_joined,
                e.all_players_joined,
                e.in_progress,
                e.ended,
            ]),
            curation_interval: Duration::from_millis(e.curation_interval_ms),
            retention: Duration::from_secs(config.event_retention_secs),
            scoring: Arc::new(scoring),
            handlers: Arc::new(handlers),
            max_rating_gap: config.quick_match.max_rating_gap,
            lease: Duration::from_secs(config.storage.lease_secs),
            node: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        })
    }

    /// The configured product, or `unknown_product`.
    pub fn product(&self, product_id: &str) -> Result<&ProductConfig, AppError> {
        self.products
            .get(product_id)
            .ok_or_else(|| AppError::UnknownProduct(product_id.to_string()))
    }

    /// Every configured product id.
    pub fn product_ids(&self) -> impl Iterator<Item = &String> {
        self.products.keys()
    }

    /// Waits (at most `limit`) for the tasks that must finish once started:
    /// joins and creates whose caller may have gone, their clean-ups.
    pub async fn finish_tasks(&self, limit: Duration) {
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "stopping with game-server calls still in flight"
            );
        }
    }
}
