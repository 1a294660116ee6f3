//! The matchmaker's state as the writer owns it: every game in memory with
//! its indexes (by state and age for curation, by listing for the lobby),
//! and its layout in the `games` tree.
//!
//! The `games` tree holds `g<game_id>` → the game (postcard) and
//! `c<consumer>` → the matchmaker's cursor. The indexes live only in memory:
//! they are rebuilt from the records at start, so a game write is one key.
//! Only the writer thread calls the mutating methods, staging each change
//! into the group's batch; it publishes the lobby after the flush.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::ratings::ListingChange;
use crate::app::ports::StorageError;
use crate::domain::game::{Game, State};
use crate::storage::lobby::ListedGames;

const GAME: u8 = b'g';
const CURSOR: u8 = b'c';

/// The key of a game record.
pub fn game_key(game_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(game_id.len() + 1);
    key.push(GAME);
    key.extend_from_slice(game_id.as_bytes());
    key
}

/// The key of a consumer's cursor (in the tree its effects are written to).
pub fn cursor_key(name: &str) -> Vec<u8> {
    let mut key = vec![CURSOR];
    key.extend_from_slice(name.as_bytes());
    key
}

/// Decodes a cursor value (0 when absent).
pub fn decode_cursor(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn codec(e: postcard::Error) -> StorageError {
    StorageError::Failed(format!("stored game: {e}"))
}

/// A listed game's place: (listing, game id) → its listing form.
type Listing = BTreeMap<(u64, String), Arc<str>>;

/// Every game, in memory, with its indexes.
#[derive(Default)]
pub struct Games {
    games: HashMap<String, Game>,
    /// (state, since µs, game id): curation's "expired first" order.
    by_state: BTreeSet<(State, u64, String)>,
    /// Per product, the listed games in lobby order.
    lobby: HashMap<String, Listing>,
    /// Products whose lobby changed since the last publish.
    dirty: HashSet<String>,
    /// Listings added and removed since the writer last took them (for
    /// quick match's rating order).
    listing_changes: Vec<ListingChange>,
    /// The lobby place the next listing takes: after every stored one.
    next_place: u64,
}

impl Games {
    /// Reads every game from the tree and builds the indexes.
    pub fn load(tree: &::sled::Tree) -> Result<Games, StorageError> {
        let mut games = Games::default();
        for item in tree.scan_prefix([GAME]) {
            let (_, value) = item.map_err(|e| StorageError::Failed(e.to_string()))?;
            let game: Game = postcard::from_bytes(&value).map_err(codec)?;
            games.index(&game);
            games.next_place = games.next_place.max(game.listing.unwrap_or(0) + 1);
            games.games.insert(game.game_id.clone(), game);
        }
        games.dirty = games.lobby.keys().cloned().collect();
        Ok(games)
    }

    /// A game as the writer sees it now.
    pub fn get(&self, game_id: &str) -> Option<&Game> {
        self.games.get(game_id)
    }

    /// Every game (for counts).
    pub fn iter(&self) -> impl Iterator<Item = &Game> {
        self.games.values()
    }

    fn index(&mut self, game: &Game) {
        self.by_state
            .insert((game.state, game.state_since_us, game.game_id.clone()));
        if let (true, Some(listing)) = (game.is_listed(), game.listing) {
            let json: Arc<str> = game.partial_json().into();
            self.lobby
                .entry(game.product_id.clone())
                .or_default()
                .insert((listing, game.game_id.clone()), json);
            self.dirty.insert(game.product_id.clone());
            self.listing_changes.push(ListingChange::Listed {
                product: game.product_id.clone(),
                game_id: game.game_id.clone(),
                creator: game.creator_id.clone(),
                listing,
            });
        }
    }

    fn unindex(&mut self, game: &Game) {
        self.by_state
            .remove(&(game.state, game.state_since_us, game.game_id.clone()));
        if let (true, Some(listing)) = (game.is_listed(), game.listing)
            && let Some(listed) = self.lobby.get_mut(&game.product_id)
        {
            listed.remove(&(listing, game.game_id.clone()));
            self.dirty.insert(game.product_id.clone());
            self.listing_changes.push(ListingChange::Unlisted {
                product: game.product_id.clone(),
                game_id: game.game_id.clone(),
            });
        }
    }

    /// The listings added and removed since the last call.
    pub fn take_listing_changes(&mut self) -> Vec<ListingChange> {
        std::mem::take(&mut self.listing_changes)
    }

    /// The oldest listed game of `product` that `user` is not in.
    pub fn oldest_listed_without(&self, product: &str, user: &str) -> Option<String> {
        self.lobby
            .get(product)?
            .keys()
            .map(|(_, id)| id)
            .find(|id| self.has_seat_for(id, user))
            .cloned()
    }

    /// Whether `game_id` exists and `user` is not among its players.
    pub fn has_seat_for(&self, game_id: &str, user: &str) -> bool {
        self.games
            .get(game_id)
            .is_some_and(|g| g.is_listed() && !g.players.iter().any(|p| p == user))
    }

    /// The lobby place for a game listed now: the back of every lobby.
    /// Each call hands out a new one.
    pub fn take_place(&mut self) -> u64 {
        self.next_place = self.next_place.max(1);
        self.next_place += 1;
        self.next_place - 1
    }

    /// Stores `game` (new or changed) and stages its record.
    pub fn put(&mut self, batch: &mut ::sled::Batch, game: Game) -> Result<(), StorageError> {
        self.next_place = self.next_place.max(game.listing.unwrap_or(0) + 1);
        let bytes = postcard::to_stdvec(&game).map_err(codec)?;
        if let Some(old) = self.games.remove(&game.game_id) {
            self.unindex(&old);
        }
        batch.insert(game_key(&game.game_id), bytes);
        self.index(&game);
        self.games.insert(game.game_id.clone(), game);
        Ok(())
    }

    /// Deletes a game and stages the removal.
    pub fn delete(&mut self, batch: &mut ::sled::Batch, game_id: &str) {
        if let Some(old) = self.games.remove(game_id) {
            self.unindex(&old);
            batch.remove(game_key(game_id));
        }
    }

    /// Ids of games in `state` since before `cutoff_us`, oldest first.
    pub fn expired(&self, state: State, cutoff_us: u64, limit: usize) -> Vec<Game> {
        let start = (state, 0, String::new());
        let end = (state, cutoff_us, String::new());
        self.by_state
            .range(start..end)
            .take(limit)
            .filter_map(|(_, _, id)| self.games.get(id).cloned())
            .collect()
    }

    /// The lobbies that changed since the last call, each in order as
    /// (game id, listing form).
    pub fn take_dirty(&mut self) -> Vec<(String, ListedGames)> {
        let dirty: Vec<String> = self.dirty.drain().collect();
        dirty
            .into_iter()
            .map(|product| {
                let listed = match self.lobby.get(&product) {
                    Some(listed) => listed
                        .iter()
                        .map(|((place, id), json)| (id.clone(), *place, json.clone()))
                        .collect(),
                    None => Vec::new(),
                };
                (product, listed)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn game(id: &str, since: u64) -> Game {
        crate::domain::game::sample(id, since)
    }

    fn lobby(games: &mut Games) -> Vec<String> {
        let dirty = games.take_dirty();
        let listed = games.lobby.get("exrps").cloned().unwrap_or_default();
        assert!(dirty.iter().all(|(p, _)| p == "exrps"));
        listed.keys().map(|(_, id)| id.clone()).collect()
    }

    #[test]
    fn indexes_follow_the_record() {
        let mut games = Games::default();
        let mut batch = ::sled::Batch::default();
        for (i, id) in ["b", "a", "c"].into_iter().enumerate() {
            let mut g = game(id, 10);
            g.move_to(State::CreatorJoined, 100 - i as u64, 20);
            games.put(&mut batch, g).unwrap();
        }
        assert_eq!(lobby(&mut games), ["c", "a", "b"], "listing order");
        let mut full = games.get("a").cloned().unwrap();
        full.join("2", 30).unwrap();
        games.put(&mut batch, full).unwrap();
        assert_eq!(lobby(&mut games), ["c", "b"], "full games leave the lobby");
        games.delete(&mut batch, "c");
        assert_eq!(lobby(&mut games), ["b"]);
        assert!(games.take_dirty().is_empty(), "published once");
    }

    #[test]
    fn expired_is_by_state_and_age() {
        let mut games = Games::default();
        let mut batch = ::sled::Batch::default();
        for (id, since) in [("x", 5), ("y", 50), ("z", 500)] {
            games.put(&mut batch, game(id, since)).unwrap();
        }
        let ids: Vec<String> = games
            .expired(State::Created, 100, 10)
            .into_iter()
            .map(|g| g.game_id)
            .collect();
        assert_eq!(ids, ["x", "y"]);
        assert!(games.expired(State::Ended, u64::MAX, 10).is_empty());
        assert_eq!(games.expired(State::Created, u64::MAX, 1).len(), 1);
    }
}
