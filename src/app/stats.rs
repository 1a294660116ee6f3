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

use super::consumer::Consumer;
use super::ports::{ConsumerName, LoggedEvent, StatsBatch, StatsChange, StorageError};
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
    fn read(&self, json: &str, changes: &mut Vec<StatsChange>) -> Result<bool, String> {
        let value = serde_json::from_str::<Value>(json).map_err(|_| "not JSON".to_string())?;
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
            changes.push(StatsChange::GameOver {
                product: product.clone(),
                winner,
                loser,
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
            match self.read(&event.json, &mut these) {
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

impl App {
    /// `count` board entries from position `offset`, best first.
    pub async fn window(
        &self,
        product_id: &str,
        offset: u64,
        count: usize,
    ) -> Result<Vec<crate::app::ports::Entry>, crate::app::AppError> {
        self.product(product_id)?;
        Ok(self.storage.window(product_id, offset, count).await?)
    }

    /// A player's score and rank, or `player_not_found`.
    pub async fn rank(
        &self,
        product_id: &str,
        user_id: &str,
    ) -> Result<(i64, u64), crate::app::AppError> {
        self.product(product_id)?;
        self.storage
            .rank(product_id, user_id)
            .await?
            .ok_or_else(|| crate::app::AppError::PlayerNotFound(user_id.to_string()))
    }

    /// A player's score, rank and `n` neighbours either side, or
    /// `player_not_found`.
    pub async fn around(
        &self,
        product_id: &str,
        user_id: &str,
        n: usize,
    ) -> Result<crate::app::ports::PlayerRank, crate::app::AppError> {
        self.product(product_id)?;
        self.storage
            .around(product_id, user_id, n)
            .await?
            .ok_or_else(|| crate::app::AppError::PlayerNotFound(user_id.to_string()))
    }

    /// A player's counters (`{}` when none).
    pub async fn player_stats(
        &self,
        product_id: &str,
        user_id: &str,
    ) -> Result<crate::app::ports::Counters, crate::app::AppError> {
        self.product(product_id)?;
        Ok(self.storage.player_stats(product_id, user_id).await?)
    }
}
