//! Leaderboards and player stats: their layout in the `stats` tree, the
//! rank counts kept in memory beside it, the reads, and the writer's
//! application of a stats batch.
//!
//! Per product a board keeps in the tree:
//! - `p<product>\0<user>` → the player's record: score and stats counters
//!   (postcard), so a game touches one record per player;
//! - `r<product>\0<desc score><user>` → the board order (score descending,
//!   then user id ascending), so the top N and any window are range scans.
//!
//! [`RankCounts`] holds, per product, how many players have each score and
//! how many of those fall in each user-id bucket (the id's first two bytes).
//! It is derived data: built from the order keys when the store opens and
//! updated by the writer after each flush, so it costs no writes. A rank
//! is 1 + the counts of higher scores + the bucket counts before the
//! player's bucket at the same score + a scan of the player's own bucket,
//! and a window starts at its offset the same way: neither reads the board.
//! The stats cursor is `c`; only the writer writes this tree, one atomic
//! batch per stats batch (with the cursor) in which every touched key is
//! written once. Board reads see what the writer applied, which may be just
//! ahead of the flush: every stats change is a function of durable events
//! only, so a crash re-derives exactly the same state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

use crate::app::ports::{Counters, Entry, StatsBatch, StatsChange, StorageError};


fn db(e: ::sled::Error) -> StorageError {
    StorageError::Failed(e.to_string())
}

fn codec(e: postcard::Error) -> StorageError {
    StorageError::Failed(format!("stored player: {e}"))
}

/// The stats consumer's cursor key.
pub const CURSOR_KEY: &[u8] = b"c";
/// Length of the user-id bucket prefix in the rank counts.
const BUCKET: usize = 2;

fn key(tag: u8, product: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k =
        Vec::with_capacity(2 + product.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(tag);
    k.extend_from_slice(product.as_bytes());
    k.push(0);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// A score as 8 bytes that sort highest first.
fn desc(score: i64) -> [u8; 8] {
    (!((score as u64) ^ (1 << 63))).to_be_bytes()
}

fn undesc(bytes: &[u8]) -> Option<i64> {
    let raw = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    Some(((!raw) ^ (1 << 63)) as i64)
}

fn bucket(user: &str) -> &[u8] {
    &user.as_bytes()[..user.len().min(BUCKET)]
}

fn order_key(product: &str, score: i64, user: &str) -> Vec<u8> {
    key(b'r', product, &[&desc(score), user.as_bytes()])
}

fn player_key(product: &str, user: &str) -> Vec<u8> {
    key(b'p', product, &[user.as_bytes()])
}

/// What the board knows of one player.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayerRecord {
    /// None until the player's first `game_over`.
    pub score: Option<i64>,
    pub counters: Counters,
}

/// Players at one score: in all, and per user-id bucket.
#[derive(Debug, Default)]
struct ScoreCount {
    total: u64,
    buckets: BTreeMap<Vec<u8>, u64>,
}

/// Per product: score -> players at that score.
type Counts = HashMap<String, BTreeMap<i64, ScoreCount>>;

/// The rank counts of every board, in memory.
#[derive(Debug, Default)]
pub struct RankCounts(RwLock<Counts>);

fn add(counts: &mut Counts, product: &str, score: i64, user: &str, delta: i64) {
    let board = match counts.get_mut(product) {
        Some(board) => board,
        None => counts.entry(product.to_string()).or_default(),
    };
    let at = board.entry(score).or_default();
    at.total = at.total.saturating_add_signed(delta);
    let n = at.buckets.entry(bucket(user).to_vec()).or_default();
    *n = n.saturating_add_signed(delta);
    if *n == 0 {
        at.buckets.remove(bucket(user));
    }
    if at.total == 0 {
        board.remove(&score);
    }
}

impl RankCounts {
    /// Counts the order keys of every board in the `stats` tree.
    pub fn load(tree: &::sled::Tree) -> Result<Self, StorageError> {
        let mut counts = Counts::new();
        for item in tree.scan_prefix([b'r']) {
            let (k, _) = item.map_err(db)?;
            let Some(zero) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let product = String::from_utf8_lossy(&k[1..zero]);
            let rest = &k[zero + 1..];
            if let (Some(score), Some(user)) = (undesc(rest), rest.get(8..)) {
                add(
                    &mut counts,
                    &product,
                    score,
                    &String::from_utf8_lossy(user),
                    1,
                );
            }
        }
        Ok(RankCounts(RwLock::new(counts)))
    }

    fn read(&self) -> RwLockReadGuard<'_, Counts> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records flushed score changes.
    pub fn apply(&self, changes: &[RankChange]) {
        let mut counts = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (product, user, before, after) in changes {
            if let Some(old) = before {
                add(&mut counts, product, *old, user, -1);
            }
            if let Some(new) = after {
                add(&mut counts, product, *new, user, 1);
            }
        }
    }

    /// Players ranked before `user` at `score`, by the counts alone:
    /// (higher scores, earlier buckets at this score).
    fn before(&self, product: &str, score: i64, user: &str) -> (u64, u64) {
        let counts = self.read();
        let Some(board) = counts.get(product) else {
            return (0, 0);
        };
        let higher = board
            .range(score.saturating_add(1)..)
            .map(|(_, c)| c.total)
            .sum();
        let earlier = board.get(&score).map_or(0, |c| {
            c.buckets
                .range(..bucket(user).to_vec())
                .map(|(_, n)| n)
                .sum()
        });
        (higher, earlier)
    }

    /// Where the `offset`-th entry's bucket starts: (score, bucket, entries
    /// of that bucket to skip); `None` past the end.
    fn locate(&self, product: &str, offset: u64) -> Option<(i64, Vec<u8>, u64)> {
        let counts = self.read();
        let mut skip = offset;
        for (score, at) in counts.get(product)?.iter().rev() {
            if at.total <= skip {
                skip -= at.total;
                continue;
            }
            for (bucket, n) in &at.buckets {
                if *n <= skip {
                    skip -= n;
                    continue;
                }
                return Some((*score, bucket.clone(), skip));
            }
            return None;
        }
        None
    }
}

/// A score change to record in the rank counts: (product, user, before, after).
pub type RankChange = (String, String, Option<i64>, Option<i64>);

/// A player's record (default when unknown).
pub fn player(tree: &::sled::Tree, product: &str, user: &str) -> Result<PlayerRecord, StorageError> {
    match tree.get(player_key(product, user)).map_err(db)? {
        Some(v) => postcard::from_bytes(&v).map_err(codec),
        None => Ok(PlayerRecord::default()),
    }
}

/// A player's score and 1-based rank.
pub fn rank(
    tree: &::sled::Tree,
    ranks: &RankCounts,
    product: &str,
    user: &str,
) -> Result<Option<(i64, u64)>, StorageError> {
    let Some(score) = player(tree, product, user)?.score else {
        return Ok(None);
    };
    let (higher, earlier_buckets) = ranks.before(product, score, user);
    let bucket_start = key(b'r', product, &[&desc(score), bucket(user)]);
    let mut in_bucket = 0;
    for item in tree.range(bucket_start..order_key(product, score, user)) {
        item.map_err(db)?;
        in_bucket += 1;
    }
    Ok(Some((score, 1 + higher + earlier_buckets + in_bucket)))
}

/// `count` entries from position `offset` (0-based) in board order. The
/// counts locate the start without reading the entries before it.
pub fn window(
    tree: &::sled::Tree,
    ranks: &RankCounts,
    product: &str,
    offset: u64,
    count: usize,
) -> Result<Vec<Entry>, StorageError> {
    let mut out = Vec::with_capacity(count.min(128));
    if count == 0 {
        return Ok(out);
    }
    let Some((score, bucket, skip)) = ranks.locate(product, offset) else {
        return Ok(out);
    };
    let start = key(b'r', product, &[&desc(score), &bucket]);
    let prefix = key(b'r', product, &[]);
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    for item in tree.range(start..).skip(skip).take(count) {
        let (k, _) = item.map_err(db)?;
        if !k.starts_with(&prefix) {
            break;
        }
        let rest = &k[prefix.len()..];
        let (Some(score), Some(user)) = (undesc(rest), rest.get(8..)) else {
            continue;
        };
        out.push(Entry {
            user_id: String::from_utf8_lossy(user).into_owned(),
            score,
        });
    }
    Ok(out)
}

/// A player's counters (empty when none).
pub fn stats(tree: &::sled::Tree, product: &str, user: &str) -> Result<Counters, StorageError> {
    Ok(player(tree, product, user)?.counters)
}

/// The players a batch touches: each record is read once, changed in
/// memory, and written once.
struct Overlay<'a> {
    tree: &'a ::sled::Tree,
    /// By (product, user): (score before the batch, record now).
    players: HashMap<(String, String), (Option<i64>, PlayerRecord)>,
}

impl Overlay<'_> {
    fn player(&mut self, product: &str, user: &str) -> Result<&mut PlayerRecord, StorageError> {
        let id = (product.to_string(), user.to_string());
        if !self.players.contains_key(&id) {
            let record = player(self.tree, product, user)?;
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
/// changes to record in the rank counts once the batch is flushed.
pub fn apply(tree: &::sled::Tree, batch: StatsBatch) -> Result<Vec<RankChange>, StorageError> {
    let mut overlay = Overlay {
        tree,
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
    for ((product, user), (before, record)) in overlay.players {
        if before != record.score {
            if let Some(old) = before {
                writes.remove(order_key(&product, old, &user));
            }
            if let Some(new) = record.score {
                writes.insert(order_key(&product, new, &user), &[]);
            }
        }
        writes.insert(
            player_key(&product, &user),
            postcard::to_stdvec(&record).map_err(codec)?,
        );
        if before != record.score {
            changes.push((product, user, before, record.score));
        }
    }
    writes.insert(CURSOR_KEY, &batch.cursor.to_be_bytes());
    tree.apply_batch(writes).map_err(db)?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    /// Sets scores directly by recording wins from 0.
    fn set(tree: &::sled::Tree, ranks: &RankCounts, scores: &[(&str, i64)], cursor: u64) {
        let mut writes = ::sled::Batch::default();
        let mut changes = Vec::new();
        for (user, score) in scores {
            let mut record = player(tree, "p", user).unwrap();
            let before = record.score;
            if let Some(old) = before {
                writes.remove(order_key("p", old, user));
            }
            writes.insert(order_key("p", *score, user), &[]);
            record.score = Some(*score);
            tree.insert(player_key("p", user), postcard::to_stdvec(&record).unwrap())
                .unwrap();
            tree.apply_batch(std::mem::take(&mut writes)).unwrap();
            changes.push(("p".to_string(), user.to_string(), before, Some(*score)));
        }
        tree.insert(CURSOR_KEY, &cursor.to_be_bytes()).unwrap();
        ranks.apply(&changes);
    }

    #[test]
    fn desc_orders_highest_first() {
        let mut scores = vec![5i64, -3, 0, i64::MAX, i64::MIN, 1000];
        let mut keys: Vec<_> = scores.iter().map(|s| desc(*s)).collect();
        keys.sort();
        scores.sort_by(|a, b| b.cmp(a));
        assert_eq!(
            keys.iter().map(|k| undesc(k).unwrap()).collect::<Vec<_>>(),
            scores
        );
    }

    /// Rank and window agree with a plain sort, through score changes.
    #[test]
    fn ranks_and_windows_match_a_sorted_board() {
        let tree = tree();
        let ranks = RankCounts::default();
        let mut board: BTreeMap<String, i64> = BTreeMap::new();
        let mut seed = 7u64;
        for round in 0..4 {
            let mut changes = Vec::new();
            for _ in 0..150 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let user = format!("{}", (seed >> 33) % 120);
                let score = ((seed >> 20) % 6) as i64 - round;
                changes.push((user.clone(), score));
                board.insert(user, score);
            }
            let refs: Vec<(&str, i64)> = changes.iter().map(|(u, s)| (u.as_str(), *s)).collect();
            set(&tree, &ranks, &refs, 1);
            let mut sorted: Vec<(&String, &i64)> = board.iter().collect();
            sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (i, (user, score)) in sorted.iter().enumerate() {
                assert_eq!(
                    rank(&tree, &ranks, "p", user).unwrap(),
                    Some((**score, i as u64 + 1))
                );
            }
            for offset in [0, 1, 7, 50, sorted.len() as u64 - 1, sorted.len() as u64] {
                let got = window(&tree, &ranks, "p", offset, 10).unwrap();
                let want: Vec<Entry> = sorted
                    .iter()
                    .skip(offset as usize)
                    .take(10)
                    .map(|(u, s)| Entry {
                        user_id: (*u).clone(),
                        score: **s,
                    })
                    .collect();
                assert_eq!(got, want, "offset {offset}");
            }
        }
        type Row = (String, i64, u64, Vec<(Vec<u8>, u64)>);
        let snapshot = |counts: &RankCounts| {
            let counts = counts.read();
            let mut all: Vec<Row> = counts
                .iter()
                .flat_map(|(p, board)| {
                    board.iter().map(move |(score, at)| {
                        let buckets = at.buckets.iter().map(|(b, n)| (b.clone(), *n)).collect();
                        (p.clone(), *score, at.total, buckets)
                    })
                })
                .collect();
            all.sort();
            all
        };
        let reloaded = RankCounts::load(&tree).unwrap();
        assert_eq!(snapshot(&reloaded), snapshot(&ranks), "rebuilt at open");
        assert_eq!(rank(&tree, &ranks, "p", "nobody").unwrap(), None);
        assert!(window(&tree, &ranks, "other", 0, 10).unwrap().is_empty());
    }

    #[test]
    fn a_batch_scores_counts_and_moves_the_cursor() {
        let tree = tree();
        let ranks = RankCounts::default();
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
        let changes = apply(&tree, batch).unwrap();
        ranks.apply(&changes);
        assert_eq!(rank(&tree, &ranks, "p", "1").unwrap(), Some((2, 1)));
        assert_eq!(rank(&tree, &ranks, "p", "2").unwrap(), Some((0, 2)));
        let counters = stats(&tree, "p", "1").unwrap();
        assert_eq!(counters.get("wins"), Some(&2));
        assert_eq!(counters.get("losses"), Some(&0));
        assert!(stats(&tree, "p", "3").unwrap().is_empty());
        assert_eq!(
            tree.get(CURSOR_KEY).unwrap().unwrap().as_ref(),
            9u64.to_be_bytes()
        );
    }
}
