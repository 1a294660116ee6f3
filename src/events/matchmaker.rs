//! The matchmaker consumer: `state_change`, `game_removed` and
//! `player_disconnect` move games (API.md "Event ingest").
//!
//! A batch of events and the cursor are one transaction on the `games` tree,
//! so a crash can neither repeat nor skip an event. Times come from the
//! log (append time), so re-running a batch gives the same result.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use sled::transaction::TransactionalTree;

use super::consumer::Consumer;
use super::ingest::text;
use super::log::LoggedEvent;
use crate::game::{Game, State};
use crate::store::games::{self, cursor_key, decode_cursor};
use crate::store::{Store, StoreError};

/// The consumer's name (cursor key, metrics label).
pub const NAME: &str = "matchmaker";

/// The matchmaker's cursor.
pub fn cursor(store: &Store) -> u64 {
    decode_cursor(store.games.get(cursor_key(NAME)).ok().flatten())
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: Value,
    product_id: Option<Value>,
    game_id: Option<Value>,
    new_state: Option<Value>,
    player_id: Option<Value>,
}

/// What one event did, for the metrics and the info log.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// (game, product, from, to); `to` None when deleted.
    Moved(String, String, State, Option<State>),
    /// A player left and the game, once in state `from`, was listed again.
    Reset(String, String, State),
    /// Not a matchmaker event.
    Skipped,
    /// Unknown game, forbidden transition, unreadable event.
    Ignored,
}

/// Games a batch touched: id -> (as stored before the batch, as now).
type Touched = HashMap<String, (Option<Game>, Option<Game>)>;

type TxError = sled::transaction::ConflictableTransactionError<StoreError>;

/// Applies one event to the batch's view of the games.
fn apply_one(
    tx: &TransactionalTree,
    touched: &mut Touched,
    event: &LoggedEvent,
) -> Result<Effect, TxError> {
    let Ok(e) = serde_json::from_str::<Event>(&event.json) else {
        return Ok(Effect::Ignored);
    };
    let kind = text(Some(&e.kind)).unwrap_or_default();
    if !matches!(
        kind.as_str(),
        "state_change" | "game_removed" | "player_disconnect"
    ) {
        return Ok(Effect::Skipped);
    }
    let (Some(game_id), Some(product_id)) = (text(e.game_id.as_ref()), text(e.product_id.as_ref()))
    else {
        return Ok(Effect::Ignored);
    };
    if !touched.contains_key(&game_id) {
        let stored = games::get(tx, &game_id)?;
        touched.insert(game_id.clone(), (stored.clone(), stored));
    }
    let Some((_, Some(current))) = touched.get_mut(&game_id) else {
        return Ok(Effect::Ignored);
    };
    if current.product_id != product_id {
        return Ok(Effect::Ignored);
    }
    let now = event.ts_ms * 1000;
    let old_state = current.state;
    let game = current;
    match kind.as_str() {
        "state_change" => {
            let Some(to) = text(e.new_state.as_ref()).as_deref().and_then(State::parse) else {
                return Ok(Effect::Ignored);
            };
            if !game.move_to(to, event.id, now) {
                return Ok(Effect::Ignored);
            }
            Ok(Effect::Moved(game_id, product_id, old_state, Some(to)))
        }
        "game_removed" => {
            if let Some(entry) = touched.get_mut(&game_id) {
                entry.1 = None;
            }
            Ok(Effect::Moved(game_id, product_id, old_state, None))
        }
        _ => {
            let Some(player) = text(e.player_id.as_ref()) else {
                return Ok(Effect::Ignored);
            };
            if !game.disconnect(&player, event.id, now) {
                return Ok(Effect::Ignored);
            }
            Ok(Effect::Reset(game_id, product_id, old_state))
        }
    }
}

/// The matchmaker consumer.
pub struct Matchmaker {
    store: Arc<Store>,
}

impl Matchmaker {
    pub fn new(store: Arc<Store>) -> Self {
        Matchmaker { store }
    }
}

impl Consumer for Matchmaker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cursor(&self) -> Result<u64, StoreError> {
        Ok(decode_cursor(self.store.games.get(cursor_key(NAME))?))
    }

    fn apply(&mut self, events: &[LoggedEvent]) -> Result<(), StoreError> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let effects = self.store.games.transaction(|tx| {
            let mut effects = Vec::with_capacity(events.len());
            let mut touched = Touched::new();
            for event in events {
                effects.push(apply_one(tx, &mut touched, event)?);
            }
            // Each game is written once, however many events it had.
            for (before, now) in touched.values() {
                match (before, now) {
                    (Some(before), Some(now)) if before != now => {
                        games::put(tx, Some(before), now)?
                    }
                    (Some(before), None) => games::delete(tx, before)?,
                    _ => {}
                }
            }
            tx.insert(cursor_key(NAME), &last.id.to_be_bytes())?;
            Ok(effects)
        })?;
        let changed = effects.iter().filter_map(|effect| match effect {
            Effect::Moved(game_id, ..) | Effect::Reset(game_id, ..) => Some(game_id.as_str()),
            _ => None,
        });
        self.store.refresh_lobby(changed)?;
        let (mut applied, mut ignored) = (0, 0);
        for effect in effects {
            match effect {
                Effect::Moved(game_id, product, from, to) => {
                    applied += 1;
                    let to_name = to.map(State::as_str);
                    crate::metrics::game_moved(&product, Some(from.as_str()), to_name);
                    tracing::info!(%game_id, %product, from = from.as_str(), to = to_name.unwrap_or("removed"), "game state changed");
                }
                Effect::Reset(game_id, product, from) => {
                    applied += 1;
                    let to = State::CreatorJoined.as_str();
                    crate::metrics::game_moved(&product, Some(from.as_str()), Some(to));
                    tracing::info!(%game_id, %product, "player disconnected; game listed again");
                }
                Effect::Ignored => ignored += 1,
                Effect::Skipped => {}
            }
        }
        crate::metrics::consumer_events(NAME, "applied", applied);
        crate::metrics::consumer_events(NAME, "ignored", ignored);
        Ok(())
    }
}
