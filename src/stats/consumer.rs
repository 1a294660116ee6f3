//! The stats consumer: `game_over` updates the product's leaderboard, and
//! every event goes to the product's stats handler.
//!
//! A batch's board and stats changes and the cursor are one atomic sled
//! batch on the `stats` tree (this consumer is its only writer), so after a
//! crash every `game_over` is counted exactly once. An event that cannot be
//! read is counted and logged, never fatal.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::board::{CURSOR_KEY, Overlay};
use super::handlers::{self, StatsHandler};
use super::scoring::{self, Scoring};
use crate::events::consumer::{self, Consumer};
use crate::events::ingest::text;
use crate::events::log::LoggedEvent;
use crate::server::AppState;
use crate::shutdown::Shutdown;
use crate::store::games::decode_cursor;
use crate::store::{Store, StoreError};

/// The consumer's name (metrics label).
pub const NAME: &str = "stats";

/// The stats consumer's cursor.
pub fn cursor(store: &Store) -> u64 {
    decode_cursor(store.stats.get(CURSOR_KEY).ok().flatten())
}

/// A product's scoring rule and stats handler.
pub struct Rules {
    pub scoring: Box<dyn Scoring>,
    pub handler: Box<dyn StatsHandler>,
}

/// The stats consumer.
pub struct Stats {
    store: Arc<Store>,
    rules: HashMap<String, Rules>,
}

/// How one event went.
enum Outcome {
    Applied,
    Skipped,
    Unreadable(String),
}

impl Stats {
    /// Builds the consumer from the products' configured rules.
    pub fn new(store: Arc<Store>, products: &[crate::config::ProductConfig]) -> Self {
        let rules = products
            .iter()
            .filter_map(|p| {
                Some((
                    p.product_id.clone(),
                    Rules {
                        scoring: scoring::REGISTRY.make(&p.leaderboard)?,
                        handler: handlers::REGISTRY.make(&p.stats)?,
                    },
                ))
            })
            .collect();
        Stats { store, rules }
    }

    fn apply_one(&self, overlay: &mut Overlay, event: &LoggedEvent) -> Result<Outcome, StoreError> {
        let Ok(value) = serde_json::from_str::<Value>(&event.json) else {
            return Ok(Outcome::Unreadable("not JSON".into()));
        };
        let product = text(value.get("product_id")).unwrap_or_default();
        let Some(rules) = self.rules.get(&product) else {
            return Ok(Outcome::Skipped);
        };
        let increments = match rules.handler.handle(&value) {
            Ok(increments) => increments,
            Err(e) => return Ok(Outcome::Unreadable(e.0)),
        };
        let mut applied = !increments.is_empty();
        if value.get("type").and_then(Value::as_str) == Some("game_over") {
            let (Some(winner), Some(loser)) =
                (text(value.get("winner_id")), text(value.get("loser_id")))
            else {
                return Ok(Outcome::Unreadable(
                    "game_over without winner_id/loser_id".into(),
                ));
            };
            if winner == loser {
                return Ok(Outcome::Unreadable("winner_id equals loser_id".into()));
            }
            let initial = rules.scoring.initial();
            let w = overlay.score(&product, &winner)?.unwrap_or(initial);
            let l = overlay.score(&product, &loser)?.unwrap_or(initial);
            let (w, l) = rules.scoring.game_over(w, l);
            overlay.set_score(&product, &winner, w)?;
            overlay.set_score(&product, &loser, l)?;
            applied = true;
        }
        for (user, counter, delta) in increments {
            overlay.add_stat(&product, &user, counter, delta)?;
        }
        Ok(if applied {
            Outcome::Applied
        } else {
            Outcome::Skipped
        })
    }
}

impl Consumer for Stats {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cursor(&self) -> Result<u64, StoreError> {
        Ok(decode_cursor(self.store.stats.get(CURSOR_KEY)?))
    }

    fn apply(&mut self, events: &[LoggedEvent]) -> Result<(), StoreError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut overlay = Overlay::new(&self.store);
        let (mut applied, mut unreadable) = (0, 0);
        for event in events {
            match self.apply_one(&mut overlay, event)? {
                Outcome::Applied => applied += 1,
                Outcome::Skipped => {}
                Outcome::Unreadable(why) => {
                    unreadable += 1;
                    tracing::warn!(event_id = event.id, reason = %why, "stats could not read an event; skipped");
                }
            }
        }
        overlay.commit(last.id)?;
        crate::metrics::consumer_events(NAME, "applied", applied);
        crate::metrics::consumer_events(NAME, "unreadable", unreadable);
        Ok(())
    }
}

/// Runs the stats consumer until shutdown.
pub async fn spawn(app: AppState, shutdown: Shutdown) {
    let stats = Stats::new(app.store.clone(), &app.config.games);
    consumer::run(app.store.clone(), stats, shutdown).await;
}
