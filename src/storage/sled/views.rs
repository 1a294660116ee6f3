//! What readers see: the views the writer publishes after each flush.
//!
//! The lobby of each product is an immutable, ordered snapshot behind an
//! `Arc` that the writer swaps in (a reader clones the `Arc` and pages it
//! without holding any lock the writer needs while it works). The rank
//! counts take the writer's flushed score changes. The durable id and the
//! storage's health are published the same way. Nothing here is changed
//! before the flush that made it durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::ranking::{RankChange, Ranking};

/// A product's listed games in lobby order, as listing-form JSON texts.
pub type Listed = Arc<[Arc<str>]>;

/// The published views.
pub struct Views {
    lobby: RwLock<HashMap<String, Listed>>,
    ranking: RwLock<Ranking>,
    durable: watch::Sender<u64>,
    failure: RwLock<Option<String>>,
    size_on_disk: AtomicU64,
}

impl Views {
    /// Views starting from what was loaded at open.
    pub fn new(ranking: Ranking, durable: u64) -> Views {
        Views {
            lobby: RwLock::new(HashMap::new()),
            ranking: RwLock::new(ranking),
            durable: watch::channel(durable).0,
            failure: RwLock::new(None),
            size_on_disk: AtomicU64::new(0),
        }
    }

    /// Records the database's size on disk (measured by the writer).
    pub fn publish_size(&self, bytes: u64) {
        self.size_on_disk.store(bytes, Ordering::Relaxed);
    }

    /// The database's size on disk when last measured.
    pub fn size_on_disk(&self) -> u64 {
        self.size_on_disk.load(Ordering::Relaxed)
    }

    /// One page of a product's lobby as a JSON array.
    pub fn page(&self, product_id: &str, page: u64, count: u64) -> String {
        let listed = {
            let lobby = self.lobby.read().unwrap_or_else(|p| p.into_inner());
            lobby.get(product_id).cloned()
        };
        let skip = usize::try_from(page.saturating_mul(count)).unwrap_or(usize::MAX);
        let take = usize::try_from(count).unwrap_or(usize::MAX);
        let games = listed.as_deref().unwrap_or_default();
        let games = games.get(skip.min(games.len())..).unwrap_or_default();
        let games = &games[..take.min(games.len())];
        let mut json = String::with_capacity(2 + games.iter().map(|g| g.len() + 1).sum::<usize>());
        json.push('[');
        for (i, game) in games.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(game);
        }
        json.push(']');
        json
    }

    /// Publishes products' lobbies (after the flush).
    pub fn publish_lobby(&self, changed: Vec<(String, Listed)>) {
        if changed.is_empty() {
            return;
        }
        let mut lobby = self.lobby.write().unwrap_or_else(|p| p.into_inner());
        for (product, listed) in changed {
            lobby.insert(product, listed);
        }
    }

    /// Records score changes in the board order (an import's, after its
    /// flush; stats batches update the order as they are applied).
    pub fn publish_ranks(&self, changes: &[RankChange]) {
        if !changes.is_empty() {
            let mut ranking = self.ranking.write().unwrap_or_else(|p| p.into_inner());
            ranking.apply(changes);
        }
    }

    /// The board order (readers hold the lock only while they read it).
    pub fn ranking(&self) -> &RwLock<Ranking> {
        &self.ranking
    }

    /// Publishes the id of the last durable event.
    pub fn publish_durable(&self, id: u64) {
        self.durable.send_if_modified(|current| {
            let grew = id > *current;
            if grew {
                *current = id;
            }
            grew
        });
    }

    /// Follows the durable id.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Records that writes stopped, and why.
    pub fn fail(&self, why: String) {
        let mut failure = self.failure.write().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert(why);
    }

    /// Why writes stopped, if they did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_a_published_lobby() {
        let views = Views::new(Ranking::default(), 0);
        assert_eq!(views.page("p", 0, 10), "[]");
        let listed: Listed = ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]
            .into_iter()
            .map(Arc::from)
            .collect();
        views.publish_lobby(vec![("p".into(), listed)]);
        assert_eq!(views.page("p", 0, 2), "[{\"a\":1},{\"b\":2}]");
        assert_eq!(views.page("p", 1, 2), "[{\"c\":3}]");
        assert_eq!(views.page("p", 5, 2), "[]");
        assert_eq!(views.page("p", u64::MAX, u64::MAX), "[]");
    }
}
