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

/// What an event asks of the matchmaker.
#[derive(Debug, Clone, PartialEq)]
enum Request {
    /// `state_change`; `None` for a state name the machine does not know.
    Move(Option<State>),
    Remove,
    Disconnect(String),
}

/// A matchmaker event, read before the transaction so that the store's
/// write lock is not held while JSON is parsed.
#[derive(Debug, Clone, PartialEq)]
enum Parsed {
    Apply {
        id: u64,
        now_us: u64,
        game_id: String,
        product_id: String,
        request: Request,
    },
    /// Not a matchmaker event.
    Skip,
    /// A matchmaker event it cannot read.
    Unreadable,
}

fn parse(event: &LoggedEvent) -> Parsed {
    let Ok(e) = serde_json::from_str::<Event>(&event.json) else {
        return Parsed::Unreadable;
    };
    let request = match text(Some(&e.kind)).as_deref() {
        Some("state_change") => {
            Request::Move(text(e.new_state.as_ref()).as_deref().and_then(State::parse))
        }
        Some("game_removed") => Request::Remove,
        Some("player_disconnect") => match text(e.player_id.as_ref()) {
            Some(player) => Request::Disconnect(player),
            None => return Parsed::Unreadable,
        },
        _ => return Parsed::Skip,
    };
    match (text(e.game_id.as_ref()), text(e.product_id.as_ref())) {
        (Some(game_id), Some(product_id)) => Parsed::Apply {
            id: event.id,
            now_us: event.ts_ms * 1000,
            game_id,
            product_id,
            request,
        },
        _ => Parsed::Unreadable,
    }
}

/// Applies one event to the batch's view of the games.
fn apply_one(
    tx: &TransactionalTree,
    touched: &mut Touched,
    event: &Parsed,
) -> Result<Effect, TxError> {
    let Parsed::Apply {
        id,
        now_us,
        game_id,
        product_id,
        request,
    } = event
    else {
        return Ok(match event {
            Parsed::Skip => Effect::Skipped,
            _ => Effect::Ignored,
        });
    };
    if !touched.contains_key(game_id) {
        let stored = games::get(tx, game_id)?;
        touched.insert(game_id.clone(), (stored.clone(), stored));
    }
    let Some((_, Some(game))) = touched.get_mut(game_id) else {
        return Ok(Effect::Ignored);
    };
    if &game.product_id != product_id {
        return Ok(Effect::Ignored);
    }
    let from = game.state;
    let (game_id, product_id) = (game_id.clone(), product_id.clone());
    match request {
        Request::Move(Some(to)) if game.move_to(*to, *id, *now_us) => {
            Ok(Effect::Moved(game_id, product_id, from, Some(*to)))
        }
        Request::Disconnect(player) if game.disconnect(player, *id, *now_us) => {
            Ok(Effect::Reset(game_id, product_id, from))
        }
        Request::Remove => {
            if let Some(entry) = touched.get_mut(&game_id) {
                entry.1 = None;
            }
            Ok(Effect::Moved(game_id, product_id, from, None))
        }
        _ => Ok(Effect::Ignored),
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
        let parsed: Vec<Parsed> = events.iter().map(parse).collect();
        if parsed.iter().all(|p| *p == Parsed::Skip) {
            // Nothing for the matchmaker: only the cursor moves.
            self.store
                .games
                .insert(cursor_key(NAME), &last.id.to_be_bytes())?;
            return Ok(());
        }
        let effects = self.store.games.transaction(|tx| {
            let mut effects = Vec::with_capacity(parsed.len());
            let mut touched = Touched::new();
            for event in &parsed {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> LoggedEvent {
        LoggedEvent {
            id: 7,
            ts_ms: 2,
            json: json.into(),
        }
    }

    #[test]
    fn events_are_read_before_the_transaction() {
        let moved = parse(&event(
            r#"{"product_id":"p","game_id":"g","type":"state_change","new_state":"in_progress"}"#,
        ));
        assert_eq!(
            moved,
            Parsed::Apply {
                id: 7,
                now_us: 2000,
                game_id: "g".into(),
                product_id: "p".into(),
                request: Request::Move(Some(State::InProgress)),
            }
        );
        let unknown_state = parse(&event(
            r#"{"product_id":"p","game_id":"g","type":"state_change","new_state":"paused"}"#,
        ));
        assert!(matches!(
            unknown_state,
            Parsed::Apply {
                request: Request::Move(None),
                ..
            }
        ));
        let left = parse(&event(
            r#"{"product_id":"p","game_id":1,"type":"player_disconnect","player_id":23}"#,
        ));
        assert!(
            matches!(left, Parsed::Apply { request: Request::Disconnect(ref p), .. } if p == "23")
        );
        assert_eq!(
            parse(&event(
                r#"{"product_id":"p","game_id":"g","type":"game_over"}"#
            )),
            Parsed::Skip
        );
        assert_eq!(
            parse(&event(r#"{"product_id":"p","type":"game_removed"}"#)),
            Parsed::Unreadable
        );
        assert_eq!(parse(&event("not json")), Parsed::Unreadable);
    }
}
