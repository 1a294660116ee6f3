//! What readers see: the views the writer publishes after each flush.
//!
//! Each product's lobby and its live feed ([`LobbyViews`], shared with the
//! other backends) are published by the writer after the flush that made
//! them durable. The board order is changed by the writer as it applies a
//! stats batch (see `writer.rs`). The durable id and the storage's health
//! are published after the flush too. Nothing here is changed before the
//! flush that made it durable.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::ranking::{RankChange, Ranking};
use crate::storage::lobby::LobbyViews;

/// The published views.
pub struct Views {
    lobby: LobbyViews,
    ranking: RwLock<Ranking>,
    durable: watch::Sender<u64>,
    failure: RwLock<Option<String>>,
    size_on_disk: AtomicU64,
}

impl Views {
    /// Views starting from what was loaded at open.
    pub fn new(ranking: Ranking, durable: u64) -> Views {
        Views {
            lobby: LobbyViews::new(),
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

    /// The lobby views.
    pub fn lobby(&self) -> &LobbyViews {
        &self.lobby
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
