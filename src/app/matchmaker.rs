//! The matchmaker consumer: `state_change`, `game_removed` and
//! `player_disconnect` move games (API.md "Event ingest").
//!
//! Events are read here (off the writer); the backend applies the batch and
//! its cursor atomically through [`super::ports::GameStore::apply_matchmaker`],
//! using the domain's rules. Times come from the log (append time), so
//! applying a batch again would give the same result, and the backend
//! refuses a batch at or below its cursor anyway.

use std::sync::Arc;

use async_trait::async_trait;

use super::App;
use super::consumer::Consumer;
use super::ports::{ConsumerName, LoggedEvent, MatchmakerBatch, StorageError};
use crate::domain::event::{ForMatchmaker, for_matchmaker};
use crate::domain::game::{Effect, State};
use crate::infra::metrics;

/// The matchmaker consumer.
pub struct Matchmaker {
    app: Arc<App>,
}

impl Matchmaker {
    /// The matchmaker over the app's storage.
    pub fn new(app: Arc<App>) -> Self {
        Matchmaker { app }
    }
}

#[async_trait]
impl Consumer for Matchmaker {
    fn name(&self) -> ConsumerName {
        ConsumerName::Matchmaker
    }

    type Batch = (MatchmakerBatch, u64);

    fn prepare(&self, events: &[LoggedEvent]) -> Self::Batch {
        let mut batch = MatchmakerBatch {
            events: Vec::new(),
            cursor: events.last().map_or(0, |e| e.id),
        };
        let mut unreadable = 0;
        for event in events {
            match for_matchmaker(&event.json) {
                ForMatchmaker::Game {
                    game_id,
                    product_id,
                    event: e,
                } => batch
                    .events
                    .push((event.id, event.ts_ms * 1000, game_id, product_id, e)),
                ForMatchmaker::Skip => {}
                ForMatchmaker::Unreadable => unreadable += 1,
            }
        }
        (batch, unreadable)
    }

    async fn commit(&self, (batch, unreadable): Self::Batch) -> Result<(), StorageError> {
        let applied = self.app.storage.apply_matchmaker(batch).await?;
        let (mut moved, mut ignored) = (0, unreadable);
        for a in applied {
            match a.effect {
                Effect::Moved(from, to) => {
                    moved += 1;
                    let to_name = to.map(State::as_str);
                    metrics::game_moved(&a.product_id, Some(from.as_str()), to_name);
                    tracing::info!(game_id = %a.game_id, product = %a.product_id, from = from.as_str(), to = to_name.unwrap_or("removed"), "game state changed");
                }
                Effect::Reset(from) => {
                    moved += 1;
                    let to = State::CreatorJoined.as_str();
                    metrics::game_moved(&a.product_id, Some(from.as_str()), Some(to));
                    tracing::info!(game_id = %a.game_id, product = %a.product_id, "player disconnected; game listed again");
                }
                Effect::Ignored => ignored += 1,
            }
        }
        metrics::consumer_events("matchmaker", "applied", moved);
        metrics::consumer_events("matchmaker", "ignored", ignored);
        Ok(())
    }
}
