//! Leaderboards and player stats in the `stats` tree: the player records,
//! the reads, and the writer's application of a stats batch.
//!
//! Per product and player the tree keeps `p<product>\0<user>` → the
//! player's record: score and stats counters (postcard). The board order
//! lives only in memory ([`super::ranking::Ranking`], rebuilt from the
//! records at open), so a score change costs no order keys.
//!
//! Stats are a function of durable events only, so they are written back
//! rather than through: the writer applies a batch to [`Unsaved`] records
//! in memory (which readers see), and about once a second, or when many
//! records wait, writes a checkpoint: every unsaved record once, with the
//! stats cursor `c`, in one atomic batch, then flushes. A player touched by
//! many games between checkpoints is written once. After a crash the
//! consumer resumes from the checkpointed cursor and re-applies the events
//! since, which gives exactly the same state; retention keeps those events.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::ranking::{RankChange, Ranking};
use crate::app::ports::{Counters, StatsBatch, StatsChange, StorageError};

fn db(e: ::sled::Error) -> StorageError {
    StorageError::Failed(e.to_string())
}

fn codec(e: postcard::Error) -> StorageError {
    StorageError::Failed(format!("stored player: {e}"))
}

/// The stats consumer's cursor key.
pub const CURSOR_KEY: &[u8] = b"c";
const PLAYER: u8 = b'p';

fn player_prefix(product: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + product.len());
    k.push(PLAYER);
    k.extend_from_slice(product.as_bytes());
    k.push(0);
    k
}

fn player_key(product: &str, user: &str) -> Vec<u8> {
    let mut k = player_prefix(product);
    k.extend_from_slice(user.as_bytes());
    k
}

/// What the board knows of one player.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayerRecord {
    /// None until the player's first `game_over`.
    pub score: Option<i64>,
    pub counters: Counters,
}

/// Builds the board order from every scored player record (only the
/// score, the record's first field, is decoded).
pub fn load_ranking(tree: &::sled::Tree) -> Result<Ranking, StorageError> {
    let mut ranking = Ranking::default();
    for item in tree.scan_prefix([PLAYER]) {
        let (k, v) = item.map_err(db)?;
        let Some(zero) = k.iter().position(|b| *b == 0) else {
            continue;
        };
        let (score, _) = postcard::take_from_bytes::<Option<i64>>(&v).map_err(codec)?;
        if let Some(score) = score {
            let product = String::from_utf8_lossy(&k[1..zero]);
            let user = String::from_utf8_lossy(&k[zero + 1..]);
            ranking.add(&product, score, &user);
        }
    }
    Ok(ranking)
}

/// A player's record (default when unknown).
pub fn player(
    tree: &::sled::Tree,
    unsaved: &Unsaved,
    product: &str,
    user: &str,
) -> Result<PlayerRecord, StorageError> {
    if let Some(record) = unsaved.get(product, user) {
        return Ok(record);
    }
    stored(tree, product, user)
}

/// A player's record as checkpointed (default when unknown).
fn stored(tree: &::sled::Tree, product: &str, user: &str) -> Result<PlayerRecord, StorageError> {
    match tree.get(player_key(product, user)).map_err(db)? {
        Some(v) => postcard::from_bytes(&v).map_err(codec),
        None => Ok(PlayerRecord::default()),
    }
}

/// A player's score and 1-based rank.
pub fn rank(
    tree: &::sled::Tree,
    unsaved: &Unsaved,
    ranking: &RwLock<Ranking>,
    product: &str,
    user: &str,
) -> Result<Option<(i64, u64)>, StorageError> {
    let Some(score) = player(tree, unsaved, product, user)?.score else {
        return Ok(None);
    };
    let ranking = ranking.read().unwrap_or_else(|p| p.into_inner());
    Ok(ranking.rank(product, score, user).map(|rank| (score, rank)))
}

/// A player's counters (empty when none).
pub fn stats(
    tree: &::sled::Tree,
    unsaved: &Unsaved,
    product: &str,
    user: &str,
) -> Result<Counters, StorageError> {
    Ok(player(tree, unsaved, product, user)?.counters)
}

/// Most player records the writer keeps in [`PlayerCache`]; beyond it the
/// cache starts again empty (about 250 bytes a record).
const CACHE_PLAYERS: usize = 200_000;
/// Unsaved records beyond which the writer checkpoints at once.
pub const CHECKPOINT_PLAYERS: usize = 65_536;

/// Records by product, then user.
type Records = HashMap<String, HashMap<String, PlayerRecord>>;

fn lookup<'a>(records: &'a Records, product: &str, user: &str) -> Option<&'a PlayerRecord> {
    records.get(product)?.get(user)
}

/// Checkpointed player records the writer read or wrote recently, so that
/// a batch does not read them back from sled. Only the writer holds it.
#[derive(Default)]
pub struct PlayerCache {
    records: Records,
    len: usize,
}

impl PlayerCache {
    fn put(&mut self, product: String, user: String, record: PlayerRecord) {
        if self.len >= CACHE_PLAYERS {
            self.records.clear();
            self.len = 0;
        }
        if self
            .records
            .entry(product)
            .or_default()
            .insert(user, record)
            .is_none()
        {
            self.len += 1;
        }
    }
}

/// Records applied but not yet checkpointed, shared with readers: `open`
/// takes new changes; a checkpoint seals it, writes the sealed records to
/// sled, and drops them only once the flush made them durable, so a reader
/// always finds a player's latest record in one of the three places.
#[derive(Default)]
pub struct Unsaved {
    open: RwLock<Records>,
    sealed: RwLock<Records>,
}

impl Unsaved {
    /// A player's unsaved record.
    pub fn get(&self, product: &str, user: &str) -> Option<PlayerRecord> {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        if let Some(record) = lookup(&open, product, user) {
            return Some(record.clone());
        }
        drop(open);
        let sealed = self.sealed.read().unwrap_or_else(|p| p.into_inner());
        lookup(&sealed, product, user).cloned()
    }

    /// How many players wait in `open`.
    pub fn waiting(&self) -> usize {
        let open = self.open.read().unwrap_or_else(|p| p.into_inner());
        open.values().map(HashMap::len).sum()
    }

    fn publish(&self, records: Vec<(String, String, PlayerRecord)>) {
        let mut open = self.open.write().unwrap_or_else(|p| p.into_inner());
        for (product, user, record) in records {
            open.entry(product).or_default().insert(user, record);
        }
    }

    /// Seals the open records and stages them, with `cursor`, into a batch.
    pub fn seal(&self, cursor: u64) -> Result<::sled::Batch, StorageError> {
        let taken = std::mem::take(&mut *self.open.write().unwrap_or_else(|p| p.into_inner()));
        let mut writes = ::sled::Batch::default();
        for (product, players) in &taken {
            for (user, record) in players {
                writes.insert(
                    player_key(product, user),
                    postcard::to_stdvec(record).map_err(codec)?,
                );
            }
        }
        writes.insert(CURSOR_KEY, &cursor.to_be_bytes());
        let mut sealed = self.sealed.write().unwrap_or_else(|p| p.into_inner());
        for (product, players) in taken {
            sealed.entry(product).or_default().extend(players);
        }
        Ok(writes)
    }

    /// After the checkpoint's flush: the sealed records are in sled; they
    /// move to the writer's cache.
    pub fn saved(&self, cache: &mut PlayerCache) {
        let sealed = std::mem::take(&mut *self.sealed.write().unwrap_or_else(|p| p.into_inner()));
        for (product, players) in sealed {
            for (user, record) in players {
                cache.put(product.clone(), user, record);
            }
        }
    }
}

/// The players a batch touches: each record is looked up once (unsaved,
/// then cached, then sled), changed in memory, and published once.
struct Overlay<'a> {
    tree: &'a ::sled::Tree,
    cache: &'a PlayerCache,
    unsaved: &'a Unsaved,
    /// By (product, user): (score before the batch, record now).
    players: HashMap<(String, String), (Option<i64>, PlayerRecord)>,
}

impl Overlay<'_> {
    fn player(&mut self, product: &str, user: &str) -> Result<&mut PlayerRecord, StorageError> {
        let id = (product.to_string(), user.to_string());
        if !self.players.contains_key(&id) {
            let record = match self.unsaved.get(product, user) {
                Some(record) => record,
                None => match lookup(&self.cache.records, product, user) {
                    Some(record) => record.clone(),
                    None => stored(self.tree, product, user)?,
                },
            };
            self.players.insert(id.clone(), (record.score, record));
        }
        match self.players.get_mut(&id) {
            Some((_, record)) => Ok(record),
            None => Err(StorageError::Failed("overlay lost a player".into())),
        }
    }
}

/// Applies a stats batch to the unsaved records (readers see it at once).
/// Returns the score changes to record in the board order.
pub fn apply(
    tree: &::sled::Tree,
    cache: &PlayerCache,
    unsaved: &Unsaved,
    batch: StatsBatch,
) -> Result<Vec<RankChange>, StorageError> {
    let mut overlay = Overlay {
        tree,
        cache,
        unsaved,
        players: HashMap::new(),
    };
    for change in &batch.changes {
        match change {
            StatsChange::GameOver {
                product,
                winner,
                loser,
            } => {
                let Some(rule) = batch.scoring.get(product) else {
                    continue;
                };
                let initial = rule.initial();
                let w = overlay.player(product, winner)?.score.unwrap_or(initial);
                let l = overlay.player(product, loser)?.score.unwrap_or(initial);
                let (w, l) = rule.game_over(w, l);
                overlay.player(product, winner)?.score = Some(w);
                overlay.player(product, loser)?.score = Some(l);
            }
            StatsChange::Count {
                product,
                user,
                counter,
                delta,
            } => {
                let counters = &mut overlay.player(product, user)?.counters;
                match counters.get_mut(*counter) {
                    Some(value) => *value = value.saturating_add(*delta),
                    None => {
                        counters.insert(counter.to_string(), *delta);
                    }
                }
            }
        }
    }
    let mut changes = Vec::new();
    let mut records = Vec::with_capacity(overlay.players.len());
    for ((product, user), (before, record)) in overlay.players {
        if before != record.score {
            changes.push((product.clone(), user.clone(), before, record.score));
        }
        records.push((product, user, record));
    }
    unsaved.publish(records);
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, RwLock};

    use super::*;
    use crate::domain::scoring::{Scoring, Wins};

    fn tree() -> ::sled::Tree {
        let db = ::sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("stats").unwrap()
    }

    fn scoring() -> crate::app::ports::ScoringRules {
        let mut rules: BTreeMap<String, Box<dyn Scoring>> = BTreeMap::new();
        rules.insert("p".into(), Box::new(Wins));
        Arc::new(rules)
    }

    #[test]
    fn a_batch_scores_counts_and_moves_the_cursor() {
        let tree = tree();
        let ranking = RwLock::new(Ranking::default());
        let game_over = |w: &str, l: &str| StatsChange::GameOver {
            product: "p".into(),
            winner: w.into(),
            loser: l.into(),
        };
        let count = |u: &str, c: &'static str, d: i64| StatsChange::Count {
            product: "p".into(),
            user: u.into(),
            counter: c,
            delta: d,
        };
        let batch = StatsBatch {
            changes: vec![
                game_over("1", "2"),
                game_over("1", "2"),
                count("1", "wins", 1),
                count("1", "wins", 1),
                count("1", "losses", 0),
            ],
            scoring: scoring(),
            cursor: 9,
        };
        let unsaved = Unsaved::default();
        let mut cache = PlayerCache::default();
        let changes = apply(&tree, &cache, &unsaved, batch).unwrap();
        ranking.write().unwrap().apply(&changes);
        let check = |unsaved: &Unsaved| {
            assert_eq!(
                rank(&tree, unsaved, &ranking, "p", "1").unwrap(),
                Some((2, 1))
            );
            assert_eq!(
                rank(&tree, unsaved, &ranking, "p", "2").unwrap(),
                Some((0, 2))
            );
            assert_eq!(rank(&tree, unsaved, &ranking, "p", "3").unwrap(), None);
            let counters = stats(&tree, unsaved, "p", "1").unwrap();
            assert_eq!(counters.get("wins"), Some(&2));
            assert_eq!(counters.get("losses"), Some(&0));
            assert!(stats(&tree, unsaved, "p", "3").unwrap().is_empty());
        };
        check(&unsaved);
        assert!(tree.get(CURSOR_KEY).unwrap().is_none(), "not checkpointed");
        assert_eq!(unsaved.waiting(), 2);
        tree.apply_batch(unsaved.seal(9).unwrap()).unwrap();
        assert_eq!(unsaved.waiting(), 0);
        check(&unsaved);
        unsaved.saved(&mut cache);
        check(&unsaved);
        assert_eq!(
            tree.get(CURSOR_KEY).unwrap().unwrap().as_ref(),
            9u64.to_be_bytes()
        );
        let reloaded = load_ranking(&tree).unwrap();
        assert_eq!(
            reloaded.window("p", 0, 10),
            ranking.read().unwrap().window("p", 0, 10),
            "rebuilt at open"
        );
    }
}
