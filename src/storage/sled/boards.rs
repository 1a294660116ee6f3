//! Leaderboards and player stats in the `stats` tree: the player records,
//! the reads, and the writer's application of a stats batch.
//!
//! Per product and player the tree keeps `p<product>\0<user>` → the
//! player's record: lifetime score and stats counters (postcard), so a game
//! of a product without seasons writes one key per player. A product with
//! seasons keeps its scores per season, `s<product>\0<season>\0<user>` →
//! score, and its seasons as `l<product>\0<season>` → (starts, ends); a
//! season is stored by the batch that applies its first `game_over`, and
//! the same batch drops the oldest seasons beyond `keep` + 1 (the newest
//! stored is current). The board order of every board lives only in
//! memory ([`super::ranking::Ranking`], rebuilt from the records at open),
//! so a score change costs no order keys. The stats cursor is `c`; only the
//! writer writes this tree, one atomic batch per stats batch (with the
//! cursor) in which every touched record is written once. Reads of a record
//! see what the writer applied, which may be just ahead of the flush: every
//! stats change is a function of durable events only, so a crash re-derives
//! exactly the same state.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::ranking::{RankChange, Ranking, board_key};
use crate::app::ports::{
    BoardList, Counters, PlayerRank, SeasonBoard, StatsBatch, StatsChange, StorageError,
};
use crate::domain::season::Season;

fn db(e: ::sled::Error) -> StorageError {
    StorageError::Failed(e.to_string())
}

fn codec(e: postcard::Error) -> StorageError {
    StorageError::Failed(format!("stored player: {e}"))
}

/// The stats consumer's cursor key.
pub const CURSOR_KEY: &[u8] = b"c";
const PLAYER: u8 = b'p';
const SEASON_SCORE: u8 = b's';
const SEASON: u8 = b'l';

/// `tag`, then each part followed by a 0 byte but the last.
fn key(tag: u8, parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.push(tag);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(part.as_bytes());
    }
    k
}

fn player_key(product: &str, user: &str) -> Vec<u8> {
    key(PLAYER, &[product, user])
}

fn season_score_key(product: &str, season: &str, user: &str) -> Vec<u8> {
    key(SEASON_SCORE, &[product, season, user])
}

/// The prefix of every score of one season.
fn season_scores(product: &str, season: &str) -> Vec<u8> {
    key(SEASON_SCORE, &[product, season, ""])
}

fn season_key(product: &str, season: &str) -> Vec<u8> {
    key(SEASON, &[product, season])
}

/// The parts of a key after its tag, split at 0 bytes.
fn parts(k: &[u8]) -> Vec<String> {
    k[1..]
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// What the board knows of one player.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayerRecord {
    /// None until the player's first `game_over`.
    pub score: Option<i64>,
    pub counters: Counters,
}

/// Builds every board's order and the stored seasons from the tree (only
/// the score, a player record's first field, is decoded).
pub fn load_ranking(tree: &::sled::Tree) -> Result<Ranking, StorageError> {
    let mut ranking = Ranking::default();
    for item in tree.scan_prefix([PLAYER]) {
        let (k, v) = item.map_err(db)?;
        let (score, _) = postcard::take_from_bytes::<Option<i64>>(&v).map_err(codec)?;
        if let (Some(score), [product, user]) = (score, parts(&k).as_slice()) {
            ranking.add(product, score, user);
        }
    }
    for item in tree.scan_prefix([SEASON]) {
        let (k, v) = item.map_err(db)?;
        let (starts_ms, ends_ms) = postcard::from_bytes::<(i64, i64)>(&v).map_err(codec)?;
        if let [product, id] = parts(&k).as_slice() {
            let id = id.clone();
            ranking.add_season(
                product,
                Season {
                    id,
                    starts_ms,
                    ends_ms,
                },
            );
        }
    }
    for item in tree.scan_prefix([SEASON_SCORE]) {
        let (k, v) = item.map_err(db)?;
        let score = postcard::from_bytes::<i64>(&v).map_err(codec)?;
        if let [product, season, user] = parts(&k).as_slice() {
            ranking.add(&board_key(product, Some(season)), score, user);
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

/// A player's score on a board: the lifetime one (`season` `None`) or a
/// season's.
fn score(
    tree: &::sled::Tree,
    product: &str,
    season: Option<&str>,
    user: &str,
) -> Result<Option<i64>, StorageError> {
    let Some(season) = season else {
        return Ok(player(tree, product, user)?.score);
    };
    match tree
        .get(season_score_key(product, season, user))
        .map_err(db)?
    {
        Some(v) => Ok(Some(postcard::from_bytes(&v).map_err(codec)?)),
        None => Ok(None),
    }
}

/// A player's score and 1-based rank on a board.
pub fn rank(
    tree: &::sled::Tree,
    ranking: &std::sync::RwLock<Ranking>,
    product: &str,
    season: Option<&str>,
    user: &str,
) -> Result<Option<(i64, u64)>, StorageError> {
    let Some(score) = score(tree, product, season, user)? else {
        return Ok(None);
    };
    let ranking = ranking.read().unwrap_or_else(|p| p.into_inner());
    let board = board_key(product, season);
    Ok(ranking.rank(&board, score, user).map(|rank| (score, rank)))
}

/// A player's score, rank and neighbours (`n` either side) on a board,
/// read under one hold of the board order.
pub fn around(
    tree: &::sled::Tree,
    ranking: &std::sync::RwLock<Ranking>,
    product: &str,
    season: Option<&str>,
    user: &str,
    n: usize,
) -> Result<Option<PlayerRank>, StorageError> {
    let Some(score) = score(tree, product, season, user)? else {
        return Ok(None);
    };
    let ranking = ranking.read().unwrap_or_else(|p| p.into_inner());
    let board = board_key(product, season);
    Ok(ranking
        .around(&board, score, user, n)
        .map(|(rank, around)| PlayerRank {
            score,
            rank,
            around,
        }))
}

/// A product's boards: the lifetime board's players and the stored
/// seasons, newest first, with theirs.
pub fn list(ranking: &Ranking, product: &str) -> BoardList {
    BoardList {
        lifetime_players: ranking.players(product),
        seasons: ranking
            .seasons(product)
            .iter()
            .rev()
            .map(|season| SeasonBoard {
                players: ranking.players(&board_key(product, Some(&season.id))),
                season: season.clone(),
            })
            .collect(),
    }
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

    /// A player's score on the product's current board: its newest stored
    /// season, else the lifetime board (cached, else read from the tree).
    pub fn current_score(
        &self,
        tree: &::sled::Tree,
        ranking: &Ranking,
        product: &str,
        user: &str,
    ) -> Result<Option<i64>, StorageError> {
        if let Some(season) = ranking.current_season(product) {
            return score(tree, product, Some(season), user);
        }
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

/// The players and season scores a batch touches: each is read once,
/// changed in memory, and written once.
struct Overlay<'a> {
    tree: &'a ::sled::Tree,
    cache: &'a PlayerCache,
    /// By (product, user): (score before the batch, record now).
    players: HashMap<(String, String), (Option<i64>, PlayerRecord)>,
    /// By (product, season, user): (score before the batch, score now).
    scores: HashMap<(String, String, String), (Option<i64>, i64)>,
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

    /// A player's score in a season (`initial` when not on its board).
    fn season_score(
        &mut self,
        product: &str,
        season: &str,
        user: &str,
        initial: i64,
    ) -> Result<&mut i64, StorageError> {
        let id = (product.to_string(), season.to_string(), user.to_string());
        if !self.scores.contains_key(&id) {
            let before = score(self.tree, product, Some(season), user)?;
            self.scores
                .insert(id.clone(), (before, before.unwrap_or(initial)));
        }
        match self.scores.get_mut(&id) {
            Some((_, now)) => Ok(now),
            None => Err(StorageError::Failed("overlay lost a score".into())),
        }
    }
}

/// What a stats batch changed besides the records: for the board order.
#[derive(Debug, Default)]
pub struct StatsApplied {
    /// Score changes, by board key.
    pub ranks: Vec<RankChange>,
    /// Seasons stored by the batch: (product, season).
    pub added: Vec<(String, Season)>,
    /// Seasons dropped by the batch: (product, season id).
    pub dropped: Vec<(String, String)>,
}

/// A product's seasons after a batch: those stored and those the batch
/// adds (oldest first), and how many archived seasons it keeps.
#[derive(Default)]
struct SeasonList {
    seasons: Vec<(Season, bool)>,
    keep: usize,
}

/// Applies a stats batch to the tree: every touched record and score once,
/// the seasons it starts and drops, and the cursor, in one atomic sled
/// batch. `ranking` (held by the writer) says which seasons are stored.
pub fn apply(
    tree: &::sled::Tree,
    cache: &mut PlayerCache,
    ranking: &Ranking,
    batch: StatsBatch,
) -> Result<StatsApplied, StorageError> {
    let mut overlay = Overlay {
        tree,
        cache,
        players: HashMap::new(),
        scores: HashMap::new(),
    };
    let mut lists: HashMap<String, SeasonList> = HashMap::new();
    for change in &batch.changes {
        match change {
            StatsChange::GameOver {
                product,
                winner,
                loser,
                season,
            } => {
                let Some(rule) = batch.scoring.get(product) else {
                    continue;
                };
                let initial = rule.initial();
                let Some(season) = season else {
                    let w = overlay.player(product, winner)?.score.unwrap_or(initial);
                    let l = overlay.player(product, loser)?.score.unwrap_or(initial);
                    let (w, l) = rule.game_over(w, l);
                    overlay.player(product, winner)?.score = Some(w);
                    overlay.player(product, loser)?.score = Some(l);
                    continue;
                };
                let list = lists.entry(product.clone()).or_insert_with(|| SeasonList {
                    seasons: ranking
                        .seasons(product)
                        .iter()
                        .map(|s| (s.clone(), false))
                        .collect(),
                    keep: season.keep,
                });
                list.keep = season.keep;
                let id = &season.season.id;
                if list.seasons.iter().all(|(s, _)| &s.id != id) {
                    let at = list
                        .seasons
                        .partition_point(|(s, _)| s.starts_ms < season.season.starts_ms);
                    list.seasons.insert(at, (season.season.clone(), true));
                }
                let w = *overlay.season_score(product, id, winner, initial)?;
                let l = *overlay.season_score(product, id, loser, initial)?;
                let (w, l) = rule.game_over(w, l);
                *overlay.season_score(product, id, winner, initial)? = w;
                *overlay.season_score(product, id, loser, initial)? = l;
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
    let mut applied = StatsApplied::default();
    let mut gone = std::collections::HashSet::new();
    for (product, list) in lists {
        let over = list.seasons.len().saturating_sub(list.keep + 1);
        for (i, (season, new)) in list.seasons.into_iter().enumerate() {
            if i < over {
                gone.insert((product.clone(), season.id.clone()));
                if !new {
                    writes.remove(season_key(&product, &season.id));
                    for item in tree.scan_prefix(season_scores(&product, &season.id)) {
                        writes.remove(item.map_err(db)?.0);
                    }
                    applied.dropped.push((product.clone(), season.id));
                }
            } else if new {
                writes.insert(
                    season_key(&product, &season.id),
                    postcard::to_stdvec(&(season.starts_ms, season.ends_ms)).map_err(codec)?,
                );
                applied.added.push((product.clone(), season));
            }
        }
    }
    for ((product, season, user), (before, now)) in overlay.scores {
        if gone.contains(&(product.clone(), season.clone())) {
            continue;
        }
        writes.insert(
            season_score_key(&product, &season, &user),
            postcard::to_stdvec(&now).map_err(codec)?,
        );
        if before != Some(now) {
            applied
                .ranks
                .push((board_key(&product, Some(&season)), user, before, Some(now)));
        }
    }
    let mut written = Vec::with_capacity(overlay.players.len());
    for ((product, user), (before, record)) in overlay.players {
        writes.insert(
            player_key(&product, &user),
            postcard::to_stdvec(&record).map_err(codec)?,
        );
        if before != record.score {
            applied
                .ranks
                .push((product.clone(), user.clone(), before, record.score));
        }
        written.push((product, user, record));
    }
    writes.insert(CURSOR_KEY, &batch.cursor.to_be_bytes());
    tree.apply_batch(writes).map_err(db)?;
    for (product, user, record) in written {
        cache.put(product, user, record);
    }
    Ok(applied)
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
            season: None,
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
        let applied = apply(
            &tree,
            &mut PlayerCache::default(),
            &Ranking::default(),
            batch,
        );
        ranking.write().unwrap().apply(&applied.unwrap().ranks);
        assert_eq!(rank(&tree, &ranking, "p", None, "1").unwrap(), Some((2, 1)));
        assert_eq!(rank(&tree, &ranking, "p", None, "2").unwrap(), Some((0, 2)));
        assert_eq!(rank(&tree, &ranking, "p", None, "3").unwrap(), None);
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

    #[test]
    fn seasons_are_rebuilt_at_open() {
        let tree = tree();
        let mut ranking = Ranking::default();
        let season = |id: &str, starts_ms: i64| crate::app::ports::SeasonRef {
            season: Season {
                id: id.into(),
                starts_ms,
                ends_ms: starts_ms + 1,
            },
            keep: 12,
        };
        let batch = StatsBatch {
            changes: ["s1", "s2"]
                .iter()
                .enumerate()
                .map(|(i, id)| StatsChange::GameOver {
                    product: "p".into(),
                    winner: format!("w{i}"),
                    loser: "l".into(),
                    season: Some(season(id, i as i64)),
                })
                .collect(),
            scoring: scoring(),
            cursor: 3,
        };
        let applied = apply(&tree, &mut PlayerCache::default(), &ranking, batch).unwrap();
        ranking.apply(&applied.ranks);
        for (product, season) in applied.added {
            ranking.add_season(&product, season);
        }
        let reloaded = load_ranking(&tree).unwrap();
        assert_eq!(reloaded.seasons("p"), ranking.seasons("p"));
        assert_eq!(reloaded.current_season("p"), Some("s2"));
        for board in ["p\0s1", "p\0s2", "p"] {
            assert_eq!(reloaded.window(board, 0, 10), ranking.window(board, 0, 10));
        }
        assert_eq!(reloaded.players("p\0s2"), 2);
        assert_eq!(reloaded.players("p"), 0);
    }
}
