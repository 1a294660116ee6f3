//! Each product's published lobby and its live feed, shared by the
//! backends: a backend publishes a product's listed games (after they are
//! durable) and readers page them or follow the feed.
//!
//! The lobby of each product is an immutable, ordered snapshot behind an
//! `Arc` that is swapped in (a reader clones the `Arc` and pages it without
//! holding any lock the publisher needs while it works). Each publication
//! is diffed against the previous one into feed events with consecutive
//! versions; the newest [`FEED_HELD`] are kept for clients that resume, and
//! each is broadcast on a bounded channel (a subscriber that falls behind
//! by more than [`FEED_HELD`] loses its place and is cut off; nobody waits
//! for it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::app::ports::{FeedEvent, LobbyChange, LobbyFeed};

/// A product's listed games in lobby order, as listing-form JSON texts.
pub type Listed = Arc<[Arc<str>]>;

/// A product's listed games in lobby order as (game id, lobby place,
/// listing form).
pub type ListedGames = Vec<(String, u64, Arc<str>)>;

/// Lobby changes held per product for clients that resume, and the most a
/// live subscriber may fall behind.
pub const FEED_HELD: usize = 1024;

/// One product's published lobby and its feed.
struct Lobby {
    listed: Listed,
    /// Game id → (lobby place, listing form), for the next diff.
    ids: HashMap<String, (u64, Arc<str>)>,
    version: u64,
    held: VecDeque<Arc<FeedEvent>>,
    live: broadcast::Sender<Arc<FeedEvent>>,
}

impl Lobby {
    fn new(base: u64) -> Lobby {
        Lobby {
            listed: Arc::from(Vec::new()),
            ids: HashMap::new(),
            version: base,
            held: VecDeque::new(),
            live: broadcast::channel(FEED_HELD).0,
        }
    }

    /// Replaces the listing and publishes what changed: first `unlisted`
    /// for games that left or moved to a new place (listed again at the
    /// back), then `listed` in lobby order for new and moved games (which
    /// a client appends: new places are always at the back) and for games
    /// whose listing form changed in place (which a client replaces).
    fn publish(&mut self, listed: ListedGames) {
        let mut changes = Vec::new();
        let now: HashMap<&str, u64> = listed
            .iter()
            .map(|(id, place, _)| (id.as_str(), *place))
            .collect();
        let mut gone: Vec<&String> = self
            .ids
            .iter()
            .filter(|(id, (place, _))| now.get(id.as_str()) != Some(place))
            .map(|(id, _)| id)
            .collect();
        gone.sort();
        for id in gone {
            changes.push(LobbyChange::Unlisted {
                game_id: id.clone(),
            });
        }
        for (id, place, json) in &listed {
            if self.ids.get(id) != Some(&(*place, json.clone())) {
                changes.push(LobbyChange::Listed {
                    game_id: id.clone(),
                    json: json.clone(),
                });
            }
        }
        self.ids = listed
            .iter()
            .map(|(id, place, j)| (id.clone(), (*place, j.clone())))
            .collect();
        self.listed = listed.into_iter().map(|(_, _, j)| j).collect();
        for change in changes {
            self.version += 1;
            let event = Arc::new(FeedEvent {
                version: self.version,
                change,
                encoded: Default::default(),
            });
            if self.held.len() == FEED_HELD {
                self.held.pop_front();
            }
            self.held.push_back(event.clone());
            let _ = self.live.send(event);
        }
    }
}

/// Every product's published lobby and feed.
pub struct LobbyViews {
    lobby: RwLock<HashMap<String, Lobby>>,
    /// Where each product's lobby versions start in this process: above
    /// any an earlier process can have handed out (its start time in µs).
    feed_base: u64,
}

impl Default for LobbyViews {
    fn default() -> Self {
        LobbyViews::new()
    }
}

impl LobbyViews {
    /// No lobby published yet.
    pub fn new() -> LobbyViews {
        LobbyViews {
            lobby: RwLock::new(HashMap::new()),
            feed_base: crate::infra::clock::now_us(),
        }
    }

    /// The products with a published lobby.
    pub fn products(&self) -> Vec<String> {
        let lobby = self.lobby.read().unwrap_or_else(|p| p.into_inner());
        lobby.keys().cloned().collect()
    }

    /// One page of a product's lobby as a JSON array.
    pub fn page(&self, product_id: &str, page: u64, count: u64) -> String {
        let listed = {
            let lobby = self.lobby.read().unwrap_or_else(|p| p.into_inner());
            lobby.get(product_id).map(|l| l.listed.clone())
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

    /// Publishes products' lobbies (after the flush), each as its listed
    /// games in lobby order, and their feed events.
    pub fn publish_lobby(&self, changed: Vec<(String, ListedGames)>) {
        if changed.is_empty() {
            return;
        }
        let mut lobby = self.lobby.write().unwrap_or_else(|p| p.into_inner());
        for (product, listed) in changed {
            lobby
                .entry(product)
                .or_insert_with(|| Lobby::new(self.feed_base))
                .publish(listed);
        }
    }

    /// Subscribes to a product's feed: from a snapshot, or after `after`
    /// when every later event is still held.
    pub fn lobby_feed(
        &self,
        product_id: &str,
        after: Option<u64>,
        max_snapshot: usize,
    ) -> LobbyFeed {
        let mut lobby = self.lobby.write().unwrap_or_else(|p| p.into_inner());
        let l = lobby
            .entry(product_id.to_string())
            .or_insert_with(|| Lobby::new(self.feed_base));
        let live = l.live.subscribe();
        let oldest = l.held.front().map_or(l.version + 1, |e| e.version);
        match after {
            Some(after)
                if after <= l.version
                    && after + 1 >= oldest.min(l.version + 1)
                    && after >= self.feed_base =>
            {
                let replay = l
                    .held
                    .iter()
                    .filter(|e| e.version > after)
                    .cloned()
                    .collect();
                LobbyFeed {
                    snapshot: None,
                    replay,
                    live,
                }
            }
            _ => LobbyFeed {
                snapshot: Some((
                    l.listed.iter().take(max_snapshot).cloned().collect(),
                    l.version,
                )),
                replay: Vec::new(),
                live,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_a_published_lobby() {
        let views = LobbyViews::new();
        assert_eq!(views.page("p", 0, 10), "[]");
        let listed: ListedGames = ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]
            .into_iter()
            .enumerate()
            .map(|(i, j)| (i.to_string(), i as u64, Arc::from(j)))
            .collect();
        views.publish_lobby(vec![("p".into(), listed)]);
        assert_eq!(views.page("p", 0, 2), "[{\"a\":1},{\"b\":2}]");
        assert_eq!(views.page("p", 1, 2), "[{\"c\":3}]");
        assert_eq!(views.page("p", 5, 2), "[]");
        assert_eq!(views.page("p", u64::MAX, u64::MAX), "[]");
    }

    #[test]
    fn the_feed_diffs_each_publish_and_resumes_while_held() {
        let views = LobbyViews::new();
        let game = |id: &str, n: u32| {
            let place = u64::from(id.as_bytes()[0]);
            (
                id.to_string(),
                place,
                Arc::<str>::from(format!("{{\"{id}\":{n}}}")),
            )
        };
        let first = views.lobby_feed("p", None, 10);
        let (snapshot, base) = first.snapshot.unwrap();
        assert!(snapshot.is_empty());
        views.publish_lobby(vec![("p".into(), vec![game("a", 1), game("b", 1)])]);
        views.publish_lobby(vec![("p".into(), vec![game("b", 2), game("c", 1)])]);
        let changes: Vec<(u64, LobbyChange)> = views
            .lobby_feed("p", Some(base), 10)
            .replay
            .iter()
            .map(|e| (e.version, e.change.clone()))
            .collect();
        let listed = |id: &str, n| LobbyChange::Listed {
            game_id: id.into(),
            json: game(id, n).2,
        };
        assert_eq!(
            changes,
            [
                (base + 1, listed("a", 1)),
                (base + 2, listed("b", 1)),
                (
                    base + 3,
                    LobbyChange::Unlisted {
                        game_id: "a".into()
                    }
                ),
                (base + 4, listed("b", 2)),
                (base + 5, listed("c", 1)),
            ]
        );
        let mut live = first.live;
        assert_eq!(live.try_recv().unwrap().version, base + 1, "live in order");
        let resumed = views.lobby_feed("p", Some(base + 3), 10);
        assert!(resumed.snapshot.is_none());
        assert_eq!(resumed.replay.len(), 2);
        for unknown in [base + 9, 3] {
            let fresh = views.lobby_feed("p", Some(unknown), 10);
            let (games, version) = fresh.snapshot.unwrap();
            assert_eq!((games.len(), version), (2, base + 5), "after {unknown}");
        }
        assert_eq!(views.lobby_feed("p", None, 1).snapshot.unwrap().0.len(), 1);
    }
}
