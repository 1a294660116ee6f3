//! Leaderboards and player stats in the `stats` tree: the player records,
//! the reads, and the writer's application of a stats batch.
//!
//! Per product and player the tree keeps `p<product>\0<user>` → the
//! player's record: score and stats counters (postcard), so a game writes
//! one key per player. The board order lives only in memory
//! ([`super::ranking::Ranking`], rebuilt from the records at open), so a
//! score change costs no order keys. The stats cursor is `c`; only the
//! writer writes this tree, one atomic batch per stats batch (with the
//! cursor) in which every touched record is written once. Reads of a record
//! see what the writer applied, which may be just ahead of the flush: every
//! stats change is a function of durable events only, so a crash re-derives
//! exactly the same state.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ranking::{RankChange, Ranking};
use crate::app::ports::{Counters, PlayerRank, StatsBatch, StatsChange, StorageError};

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
    product: &str,
    user: &str,
) -> Result<PlayerRecord, StorageError> {
    match tree.get(player_key(product, user)).map_err(db)? {
        Some(v) => postcard::from_bytes(&v).map_err(codec),
        None => Ok(PlayerRecord::default()),
    }
}

/// A player's score and 1-based rank.
pub fn rank(
    tree: &::sled::Tree,
    ranking: &std::sync::RwLock<Ranking>,
    product: &str,
    user: &str,
) -> Result<Option<(i64, u64)>, StorageError> {
    let Some(score) = player(tree, product, user)?.score else {
        return Ok(None);
    };
    let ranking = ranking.read().unwrap_or_else(|p| p.into_inner());
    Ok(ranking.rank(product, score, user).map(|rank| (score, rank)))
}

/// A player's score, rank and neighbours (`n` either side), read under
/// one hold of the board order.
pub fn around(
    tree: &::sled::Tree,
    ranking: &std::sync::RwLock<Ranking>,
    product: &str,
    user: &str,
    n: usize,
) -> Result<Option<PlayerRank>, StorageError> {
    let Some(score) = player(tree, product, user)?.score else {
        return Ok(None);
    };
    let ranking = ranking.read().unwrap_or_else(|p| p.into_inner());
    Ok(ranking
        .around(product, score, user, n)
        .map(|(rank, around)| PlayerRank {
            score,
            rank,
            around,
        }))
}

/// A player's counters (empty when none).
pub fn stats(tree: &::sled::Tree, product: &str, user: &str) -> Result<Counters, StorageError> {
    Ok(player(tree, product, user)?.counters)
}

/// Most player records the writer keeps in [`PlayerCache`]; beyond it the
/// cache starts again empty (about 250 bytes a record).
const CACHE_PLAYERS: usize = 200_000;

/// Player records as the writer last wrote or read them, so that a batch
/// does not read recently touched players back from sled. Only the writer
/// holds it, and it writes every record it caches, so it is never stale.
#[derive(Default)]
pub struct PlayerCache {
    records: HashMap<String, HashMap<String, PlayerRecord>>,
    len: usize,
}

impl PlayerCache {
    fn get(&self, product: &str, user: &str) -> Option<&PlayerRecord> {
        self.records.get(product)?.get(user)
    }

    /// A player's score (cached, else read from the tree).
    pub fn score(
        &self,
        tree: &::sled::Tree,
        product: &str,
        user: &str,
    ) -> Result<Option<i64>, StorageError> {
        match self.get(product, user) {
            Some(record) => Ok(record.score),
            None => Ok(player(tree, product, user)?.score),
        }
    }

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

/// The players a batch touches: each record is read once, changed in
/// memory, and written once.
struct Overlay<'a> {
    tree: &'a ::sled::Tree,
    cache: &'a PlayerCache,
    /// By (product, user): (score before the batch, record now).
    players: HashMap<(String, String), (Option<i64>, PlayerRecord)>,
}

impl Overlay<'_> {
    fn player(&mut self, product: &str, user: &str) -> Result<&mut PlayerRecord, StorageError> {
        let id = (product.to_string(), user.to_string());
        if !self.players.contains_key(&id) {
            let record = match self.cache.get(product, user) {
                Some(record) => record.clone(),
                None => player(self.tree, product, user)?,
            };
            self.players.insert(id.clone(), (record.score, record));
        }
        match self.players.get_mut(&id) {
            Some((_, record)) => Ok(record),
            None => Err(StorageError::Failed("overlay lost a player".into())),
        }
    }
}

/// Applies a stats batch to the tree: every touched record and order key
/// once, and the cursor, in one atomic sled batch. Returns the score
/// changes for the board order (the writer applies them at once).
pub fn apply(
    tree: &::sled::Tree,
    cache: &mut PlayerCache,
    batch: StatsBatch,
) -> Result<Vec<RankChange>, StorageError> {
    let mut overlay = Overlay {
        tree,
        cache,
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
    let mut writes = ::sled::Batch::default();
    let mut changes = Vec::new();
    let mut written = Vec::with_capacity(overlay.players.len());
    for ((product, user), (before, record)) in overlay.players {
        writes.insert(
            player_key(&product, &user),
            postcard::to_stdvec(&record).map_err(codec)?,
        );
        if before != record.score {
            changes.push((product.clone(), user.clone(), before, record.score));
        }
        written.push((product, user, record));
    }
    writes.insert(CURSOR_KEY, &batch.cursor.to_be_bytes());
    tree.apply_batch(writes).map_err(db)?;
    for (product, user, record) in written {
        cache.put(product, user, record);
    }
    Ok(changes)
}

/// Writes imported player records and the stats cursor in one atomic
/// batch; returns the board entries for the rank counts.
pub fn import(
    tree: &::sled::Tree,
    players: Vec<(String, String, Option<i64>, Counters)>,
    cursor: u64,
) -> Result<Vec<RankChange>, StorageError> {
    let mut writes = ::sled::Batch::default();
    let mut changes = Vec::new();
    for (product, user, score, counters) in players {
        let record = PlayerRecord { score, counters };
        writes.insert(
            player_key(&product, &user),
            postcard::to_stdvec(&record).map_err(codec)?,
        );
        if score.is_some() {
            changes.push((product, user, None, score));
        }
    }
    writes.insert(CURSOR_KEY, &cursor.to_be_bytes());
    tree.apply_batch(writes).map_err(db)?;
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
        let changes = apply(&tree, &mut PlayerCache::default(), batch).unwrap();
        ranking.write().unwrap().apply(&changes);
        assert_eq!(rank(&tree, &ranking, "p", "1").unwrap(), Some((2, 1)));
        assert_eq!(rank(&tree, &ranking, "p", "2").unwrap(), Some((0, 2)));
        assert_eq!(rank(&tree, &ranking, "p", "3").unwrap(), None);
        let counters = stats(&tree, "p", "1").unwrap();
        assert_eq!(counters.get("wins"), Some(&2));
        assert_eq!(counters.get("losses"), Some(&0));
        assert!(stats(&tree, "p", "3").unwrap().is_empty());
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
