//! An in-memory copy of the lobby index, so a page of `open_games` is a walk
//! over a sorted map instead of a sled scan past every earlier page.
//!
//! sled stays the truth: the copy is built from the lobby keys at start, and
//! after every committed change to a game the writer calls
//! [`LobbyCache::refresh`], which re-reads that game's record under the
//! cache's lock. Since each refresh reads the latest committed record, the
//! last refresh after the last change leaves the copy exact, whatever order
//! concurrent writers refresh in. The lock is never held across `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;
use crate::game::Game;

#[derive(Default)]
struct Index {
    /// Product -> (listing, game id) -> listing form (JSON text).
    products: HashMap<String, BTreeMap<(u64, String), Arc<str>>>,
    /// Game id -> where it is listed.
    places: HashMap<String, (String, u64)>,
}

impl Index {
    fn remove(&mut self, game_id: &str) {
        if let Some((product, listing)) = self.places.remove(game_id)
            && let Some(games) = self.products.get_mut(&product)
        {
            games.remove(&(listing, game_id.to_string()));
        }
    }

    fn insert(&mut self, game: &Game, listing: u64, json: Arc<str>) {
        self.places
            .insert(game.game_id.clone(), (game.product_id.clone(), listing));
        self.products
            .entry(game.product_id.clone())
            .or_default()
            .insert((listing, game.game_id.clone()), json);
    }
}

/// The lobby, in memory.
#[derive(Default)]
pub struct LobbyCache(Mutex<Index>);

impl LobbyCache {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds the copy from the listed games in the store.
    pub fn load(games: impl Iterator<Item = Result<Game, StoreError>>) -> Result<Self, StoreError> {
        let cache = LobbyCache::default();
        {
            let mut index = cache.lock();
            for game in games {
                let game = game?;
                if let (true, Some(listing)) = (game.is_listed(), game.listing) {
                    let json: Arc<str> = game.partial_json().to_string().into();
                    index.insert(&game, listing, json);
                }
            }
        }
        Ok(cache)
    }

    /// Re-reads games after a committed change (`read` returns the record
    /// as stored now, `None` if deleted).
    pub fn refresh<'a>(
        &self,
        game_ids: impl IntoIterator<Item = &'a str>,
        read: impl Fn(&str) -> Result<Option<Game>, StoreError>,
    ) -> Result<(), StoreError> {
        let mut index = self.lock();
        for game_id in game_ids {
            index.remove(game_id);
            if let Some(game) = read(game_id)?
                && let (true, Some(listing)) = (game.is_listed(), game.listing)
            {
                let json: Arc<str> = game.partial_json().to_string().into();
                index.insert(&game, listing, json);
            }
        }
        Ok(())
    }

    /// One page of a product's listed games as a JSON array, oldest first.
    pub fn page(&self, product_id: &str, page: u64, count: u64) -> String {
        let skip = usize::try_from(page.saturating_mul(count)).unwrap_or(usize::MAX);
        let take = usize::try_from(count).unwrap_or(usize::MAX);
        let listed: Vec<Arc<str>> = {
            let index = self.lock();
            match index.products.get(product_id) {
                Some(games) => games.values().skip(skip).take(take).cloned().collect(),
                None => Vec::new(),
            }
        };
        let mut json = String::with_capacity(2 + listed.iter().map(|g| g.len() + 1).sum::<usize>());
        json.push('[');
        for (i, game) in listed.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(game);
        }
        json.push(']');
        json
    }
}
