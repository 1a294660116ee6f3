//! The stats consumer: `game_over` updates the product's leaderboard, and
//! every event goes to the product's stats handler (API.md "Leaderboards
//! and player stats").
//!
//! Events are read here with the domain's handlers; the backend applies the
//! resulting changes with the product's scoring rule and moves the cursor in
//! one atomic write ([`super::ports::Boards::apply_stats`]), so after a
//! crash every `game_over` is counted exactly once. An event that cannot be
//! read is counted and logged, never fatal.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::AppError;
use super::consumer::Consumer;
use super::ports::{
    ConsumerName, Entry, LoggedEvent, PlayerRank, SeasonRef, StatsBatch, StatsChange, StorageError,
};
use super::{App, Handlers};
use crate::domain::event::text;
use crate::infra::metrics;

/// The stats consumer.
pub struct Stats {
    app: Arc<App>,
    handlers: Handlers,
}

impl Stats {
    /// The stats tracker over the app's storage and configured rules.
    pub fn new(app: Arc<App>) -> Self {
        let handlers = app.handlers.clone();
        Stats { app, handlers }
    }

    /// What one event changes; `Err` with the reason it cannot be read.
    fn read(&self, event: &LoggedEvent, changes: &mut Vec<StatsChange>) -> Result<bool, String> {
        let value =
            serde_json::from_str::<Value>(&event.json).map_err(|_| "not JSON".to_string())?;
        let product = text(value.get("product_id")).unwrap_or_default();
        let Some(handler) = self.handlers.get(&product) else {
            return Ok(false);
        };
        let increments = handler.handle(&value).map_err(|e| e.0)?;
        let mut applied = !increments.is_empty();
        if value.get("type").and_then(Value::as_str) == Some("game_over") {
            let (Some(winner), Some(loser)) =
                (text(value.get("winner_id")), text(value.get("loser_id")))
            else {
                return Err("game_over without winner_id/loser_id".into());
            };
            if winner == loser {
                return Err("winner_id equals loser_id".into());
            }
            let season = self.app.products.get(&product).and_then(|p| {
                let (period, keep) = p.seasons()?;
                let ts_ms = i64::try_from(event.ts_ms).unwrap_or(i64::MAX);
                Some(SeasonRef {
                    season: period.season_of(ts_ms),
                    keep,
                })
            });
            changes.push(StatsChange::GameOver {
                product: product.clone(),
                winner,
                loser,
                season,
            });
            applied = true;
        }
        for (user, counter, delta) in increments {
            changes.push(StatsChange::Count {
                product: product.clone(),
                user,
                counter,
                delta,
            });
        }
        Ok(applied)
    }
}

#[async_trait]
impl Consumer for Stats {
    fn name(&self) -> ConsumerName {
        ConsumerName::Stats
    }

    type Batch = (StatsBatch, u64, u64);

    fn prepare(&self, events: &[LoggedEvent]) -> Self::Batch {
        let mut changes = Vec::with_capacity(events.len() * 2);
        let (mut applied, mut unreadable) = (0, 0);
        for event in events {
            let mut these = Vec::new();
            match self.read(event, &mut these) {
                Ok(true) => {
                    applied += 1;
                    changes.append(&mut these);
                }
                Ok(false) => {}
                Err(why) => {
                    unreadable += 1;
                    tracing::warn!(event_id = event.id, reason = %why, "stats could not read an event; skipped");
                }
            }
        }
        let batch = StatsBatch {
            changes,
            scoring: self.app.scoring.clone(),
            cursor: events.last().map_or(0, |e| e.id),
        };
        (batch, applied, unreadable)
    }

    async fn commit(&self, (batch, applied, unreadable): Self::Batch) -> Result<(), StorageError> {
        fail::fail_point!("consumer::stats", |_| Err(StorageError::Failed(
            "injected stats consumer failure".into()
        )));
        self.app.storage.apply_stats(batch).await?;
        metrics::consumer_events("stats", "applied", applied);
        metrics::consumer_events("stats", "unreadable", unreadable);
        Ok(())
    }
}

/// A season as `/seasons` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeasonView {
    /// `all` for a product without seasons.
    pub id: String,
    /// `None` for `all`.
    pub starts_ms: Option<i64>,
    pub ends_ms: Option<i64>,
    pub players: u64,
    pub current: bool,
}

impl App {
    /// A product's seasons, newest first: the current one, then the newest
    /// `keep` archived ones. The current season is the newest the stats
    /// tracker has stored, or the one the clock is in if that is later (a
    /// new season starts empty before its first game ends). Without
    /// seasons, just `all`.
    pub async fn seasons(&self, product_id: &str) -> Result<Vec<SeasonView>, AppError> {
        let product = self.product(product_id)?;
        let boards = self.storage.boards(product_id).await?;
        let Some((period, keep)) = product.seasons() else {
            return Ok(vec![SeasonView {
                id: "all".into(),
                starts_ms: None,
                ends_ms: None,
                players: boards.lifetime_players,
                current: true,
            }]);
        };
        let now_ms = i64::try_from(crate::infra::clock::now_us() / 1000).unwrap_or(i64::MAX);
        let by_clock = period.season_of(now_ms);
        let mut stored = boards.seasons.into_iter().peekable();
        let current = match stored.peek() {
            Some(newest) if newest.season.starts_ms >= by_clock.starts_ms => stored.next(),
            _ => None,
        };
        let mut list = vec![match current {
            Some(b) => view(b.season, b.players, true),
            None => view(by_clock, 0, true),
        }];
        list.extend(stored.take(keep).map(|b| view(b.season, b.players, false)));
        Ok(list)
    }

    /// The board `season` names (`None`: the current one) as the storage
    /// ports take it: `None` for the lifetime board, else a season id.
    async fn board(
        &self,
        product_id: &str,
        season: Option<&str>,
    ) -> Result<Option<String>, AppError> {
        let product = self.product(product_id)?;
        if product.seasons().is_none() {
            return match season {
                None | Some("all") => Ok(None),
                Some(other) => Err(AppError::SeasonNotFound(other.to_string())),
            };
        }
        let seasons = self.seasons(product_id).await?;
        let found = match season {
            None => seasons.into_iter().find(|s| s.current),
            Some(id) => seasons.into_iter().find(|s| s.id == id),
        };
        match found {
            Some(s) => Ok(Some(s.id)),
            None => Err(AppError::SeasonNotFound(
                season.unwrap_or_default().to_string(),
            )),
        }
    }

    /// `count` board entries from position `offset`, best first.
    pub async fn window(
        &self,
        product_id: &str,
        season: Option<&str>,
        offset: u64,
        count: usize,
    ) -> Result<Vec<Entry>, AppError> {
        let board = self.board(product_id, season).await?;
        Ok(self
            .storage
            .window(product_id, board.as_deref(), offset, count)
            .await?)
    }

    /// A player's score and rank, or `player_not_found`.
    pub async fn rank(
        &self,
        product_id: &str,
        season: Option<&str>,
        user_id: &str,
    ) -> Result<(i64, u64), AppError> {
        let board = self.board(product_id, season).await?;
        self.storage
            .rank(product_id, board.as_deref(), user_id)
            .await?
            .ok_or_else(|| AppError::PlayerNotFound(user_id.to_string()))
    }

    /// A player's score, rank and `n` neighbours either side, or
    /// `player_not_found`.
    pub async fn around(
        &self,
        product_id: &str,
        season: Option<&str>,
        user_id: &str,
        n: usize,
    ) -> Result<PlayerRank, AppError> {
        let board = self.board(product_id, season).await?;
        self.storage
            .around(product_id, board.as_deref(), user_id, n)
            .await?
            .ok_or_else(|| AppError::PlayerNotFound(user_id.to_string()))
    }

    /// A player's counters (`{}` when none).
    pub async fn player_stats(
        &self,
        product_id: &str,
        user_id: &str,
    ) -> Result<crate::app::ports::Counters, AppError> {
        self.product(product_id)?;
        Ok(self.storage.player_stats(product_id, user_id).await?)
    }
}

fn view(season: crate::domain::season::Season, players: u64, current: bool) -> SeasonView {
    SeasonView {
        id: season.id,
        starts_ms: Some(season.starts_ms),
        ends_ms: Some(season.ends_ms),
        players,
        current,
    }
}
