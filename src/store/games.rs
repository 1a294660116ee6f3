//! The `games` tree: game records and the indexes that make the lobby
//! ("oldest listing first") and curation ("expired first") range scans.
//!
//! Every write of a game goes through [`put`] or [`delete`] inside a sled
//! transaction on this one tree; they keep the indexes in step with the
//! record, so no caller can forget one.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{Store, StoreError};
use crate::game::{Game, JoinRefusal, State};

const GAME: u8 = b'g';
const LOBBY: u8 = b'l';
const BY_STATE: u8 = b's';
const CURSOR: u8 = b'c';

/// The key of a game record.
pub fn game_key(game_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(game_id.len() + 1);
    key.push(GAME);
    key.extend_from_slice(game_id.as_bytes());
    key
}

fn lobby_prefix(product_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(product_id.len() + 2);
    key.push(LOBBY);
    key.extend_from_slice(product_id.as_bytes());
    key.push(0);
    key
}

fn lobby_key(game: &Game, listing: u64) -> Vec<u8> {
    let mut key = lobby_prefix(&game.product_id);
    key.extend_from_slice(&listing.to_be_bytes());
    key.extend_from_slice(game.game_id.as_bytes());
    key
}

fn state_key(state: State, since_us: u64, game_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(game_id.len() + 10);
    key.push(BY_STATE);
    key.push(state.code());
    key.extend_from_slice(&since_us.to_be_bytes());
    key.extend_from_slice(game_id.as_bytes());
    key
}

/// The key of a consumer's cursor in this tree.
pub fn cursor_key(name: &str) -> Vec<u8> {
    let mut key = vec![CURSOR];
    key.extend_from_slice(name.as_bytes());
    key
}

/// Decodes a cursor value (0 when absent).
pub fn decode_cursor(value: Option<sled::IVec>) -> u64 {
    value
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn codec(e: postcard::Error) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(StoreError::Codec(e))
}

/// Reads a game inside a transaction.
pub fn get(tx: &TransactionalTree, game_id: &str) -> TxResult<Option<Game>> {
    match tx.get(game_key(game_id))? {
        Some(bytes) => Ok(Some(postcard::from_bytes(&bytes).map_err(codec)?)),
        None => Ok(None),
    }
}

/// Writes `new` (replacing `old`, if any) and moves its index entries.
pub fn put(tx: &TransactionalTree, old: Option<&Game>, new: &Game) -> TxResult<()> {
    if let Some(old) = old {
        remove_indexes(tx, old)?;
    }
    if let (true, Some(listing)) = (new.is_listed(), new.listing) {
        // The listing form is kept in the index so the lobby is one scan.
        tx.insert(
            lobby_key(new, listing),
            new.partial_json().to_string().into_bytes(),
        )?;
    }
    tx.insert(state_key(new.state, new.state_since_us, &new.game_id), &[])?;
    tx.insert(
        game_key(&new.game_id),
        postcard::to_stdvec(new).map_err(codec)?,
    )?;
    Ok(())
}

/// Deletes a game and its index entries.
pub fn delete(tx: &TransactionalTree, old: &Game) -> TxResult<()> {
    remove_indexes(tx, old)?;
    tx.remove(game_key(&old.game_id))?;
    Ok(())
}

fn remove_indexes(tx: &TransactionalTree, old: &Game) -> TxResult<()> {
    if let (true, Some(listing)) = (old.is_listed(), old.listing) {
        tx.remove(lobby_key(old, listing))?;
    }
    tx.remove(state_key(old.state, old.state_since_us, &old.game_id))?;
    Ok(())
}

/// The listed games, read through the lobby index.
pub fn listed(tree: &sled::Tree) -> impl Iterator<Item = Result<Game, StoreError>> + '_ {
    tree.scan_prefix([LOBBY]).filter_map(move |item| {
        let read = || -> Result<Option<Game>, StoreError> {
            let (key, _) = item?;
            // `l<product>\0<listing u64><game_id>`
            let Some(zero) = key.iter().position(|b| *b == 0) else {
                return Ok(None);
            };
            let game_id = String::from_utf8_lossy(key.get(zero + 9..).unwrap_or_default());
            match tree.get(game_key(&game_id))? {
                Some(bytes) => Ok(Some(postcard::from_bytes(&bytes)?)),
                None => Ok(None),
            }
        };
        read().transpose()
    })
}

/// Why a seat could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatError {
    NotFound,
    Refused(JoinRefusal),
}

impl Store {
    /// Reads one game.
    pub fn game(&self, game_id: &str) -> Result<Option<Game>, StoreError> {
        match self.games.get(game_key(game_id))? {
            Some(bytes) => Ok(Some(postcard::from_bytes(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores a new game.
    pub fn insert_game(&self, game: &Game) -> Result<(), StoreError> {
        self.games.transaction(|tx| put(tx, None, game))?;
        if game.is_listed() {
            self.refresh_lobby([game.game_id.as_str()])?;
        }
        Ok(())
    }

    /// Reserves a seat for `user_id` atomically. Of concurrent callers for
    /// the last seat exactly one succeeds.
    pub fn reserve_seat(
        &self,
        product_id: &str,
        game_id: &str,
        user_id: &str,
    ) -> Result<Result<Game, SeatError>, StoreError> {
        let now = crate::game::now_us();
        let result = self.games.transaction(|tx| {
            let Some(old) = get(tx, game_id)?.filter(|g| g.product_id == product_id) else {
                return Ok(Err(SeatError::NotFound));
            };
            let mut game = old.clone();
            if let Err(refusal) = game.join(user_id, now) {
                return Ok(Err(SeatError::Refused(refusal)));
            }
            put(tx, Some(&old), &game)?;
            Ok(Ok(game))
        })?;
        if result.is_ok() {
            self.refresh_lobby([game_id])?;
        }
        Ok(result)
    }

    /// Gives back a seat reserved by [`Store::reserve_seat`].
    pub fn release_seat(&self, game_id: &str, user_id: &str) -> Result<(), StoreError> {
        let now = crate::game::now_us();
        self.games.transaction(|tx| {
            if let Some(old) = get(tx, game_id)? {
                let mut game = old.clone();
                if game.leave(user_id, now) {
                    put(tx, Some(&old), &game)?;
                }
            }
            Ok(())
        })?;
        self.refresh_lobby([game_id])
    }

    /// Listed games of a product, oldest listing first, one page, as a JSON
    /// array of their listing forms.
    pub fn open_games(&self, product_id: &str, page: u64, count: u64) -> String {
        self.lobby.page(product_id, page, count)
    }

    /// Brings the in-memory lobby up to date after games changed.
    pub fn refresh_lobby<'a>(
        &self,
        game_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        self.lobby.refresh(game_ids, |id| self.game(id))
    }

    /// Ids of games in `state` whose clock started before `cutoff_us`,
    /// oldest first, at most `limit`.
    pub fn expired(
        &self,
        state: State,
        cutoff_us: u64,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let start = state_key(state, 0, "");
        let end = state_key(state, cutoff_us, "");
        let mut out = Vec::new();
        for item in self.games.range(start..end).take(limit) {
            let (key, _) = item?;
            let since = key
                .get(2..10)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let game_id = String::from_utf8_lossy(key.get(10..).unwrap_or_default()).into_owned();
            out.push((game_id, since));
        }
        Ok(out)
    }

    /// Changes a game with `f` if it is still in `state` since `since_us`;
    /// `f` returns the new record, or `None` to delete it. Returns false
    /// when the game changed meanwhile (or is gone).
    pub fn update_if_unchanged(
        &self,
        game_id: &str,
        state: State,
        since_us: u64,
        f: impl Fn(&Game) -> Option<Game>,
    ) -> Result<bool, StoreError> {
        let done = self.games.transaction(|tx| {
            let Some(old) = get(tx, game_id)? else {
                return Ok(false);
            };
            if old.state != state || old.state_since_us != since_us {
                return Ok(false);
            }
            match f(&old) {
                Some(new) => put(tx, Some(&old), &new)?,
                None => delete(tx, &old)?,
            }
            Ok(true)
        })?;
        if done {
            self.refresh_lobby([game_id])?;
        }
        Ok(done)
    }

    /// Every stored game (for start-up gauges and tests).
    pub fn all_games(&self) -> impl Iterator<Item = Result<Game, StoreError>> + '_ {
        self.games
            .scan_prefix([GAME])
            .map(|item| Ok(postcard::from_bytes(&item?.1)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> std::sync::Arc<Store> {
        Store::temporary()
    }

    fn game(id: &str) -> Game {
        Game {
            game_id: id.into(),
            product_id: "exrps".into(),
            game_server_url: "http://x".into(),
            creator_id: "1".into(),
            creator_name: "alice".into(),
            players: vec!["1".into()],
            settings: "{}".into(),
            num_players: 2,
            token: "t".into(),
            state: State::Created,
            state_since_us: 10,
            last_updated_us: 10,
            listing: None,
            target_game_server: String::new(),
            curation_failures: 0,
        }
    }

    fn page(store: &Store, product: &str, page: u64, count: u64) -> Vec<String> {
        let json = store.open_games(product, page, count);
        let games: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        games
            .iter()
            .map(|g| g["game_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn list(store: &Store) -> Vec<String> {
        page(store, "exrps", 0, 100)
    }

    #[tokio::test]
    async fn lobby_index_follows_the_record() {
        let store = store();
        for (i, id) in ["b", "a", "c"].into_iter().enumerate() {
            let mut g = game(id);
            store.insert_game(&g).unwrap();
            let old = g.clone();
            g.move_to(State::CreatorJoined, 100 - i as u64, 20);
            store
                .games
                .transaction(|tx| put(tx, Some(&old), &g))
                .unwrap();
            store.refresh_lobby([id]).unwrap();
        }
        assert_eq!(
            list(&store),
            vec!["c", "a", "b"],
            "listing order, not id order"
        );
        assert_eq!(page(&store, "exrps", 1, 2), vec!["b"]);
        assert!(page(&store, "other", 0, 10).is_empty());

        let joined = store.reserve_seat("exrps", "a", "2").unwrap().unwrap();
        assert_eq!(joined.players, vec!["1", "2"]);
        assert_eq!(list(&store), vec!["c", "b"], "full games leave the lobby");
        assert_eq!(
            store.reserve_seat("exrps", "a", "3").unwrap(),
            Err(SeatError::Refused(JoinRefusal::NotJoinable))
        );
        assert_eq!(
            store.reserve_seat("other", "a", "3").unwrap(),
            Err(SeatError::NotFound)
        );
        store.release_seat("a", "2").unwrap();
        assert_eq!(list(&store), vec!["c", "a", "b"], "back in its old place");
    }

    #[tokio::test]
    async fn expired_is_a_range_scan_by_state_and_age() {
        let store = store();
        for (id, since) in [("x", 5), ("y", 50), ("z", 500)] {
            let mut g = game(id);
            g.state_since_us = since;
            store.insert_game(&g).unwrap();
        }
        let ids: Vec<String> = store
            .expired(State::Created, 100, 10)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec!["x", "y"]);
        assert!(
            store
                .expired(State::Ended, u64::MAX, 10)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .update_if_unchanged("x", State::Created, 5, |_| None)
                .unwrap()
        );
        assert!(
            !store
                .update_if_unchanged("y", State::Created, 6, |_| None)
                .unwrap()
        );
        assert!(store.game("x").unwrap().is_none());
        assert_eq!(store.expired(State::Created, 100, 10).unwrap().len(), 1);
    }
}
