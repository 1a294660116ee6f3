//! The `stats` tree: leaderboards and player stats, and the rank counts
//! kept in memory beside it.
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
//! updated by the consumer after each commit, so it costs no writes. A rank
//! is 1 + the counts of higher scores + the bucket counts before the
//! player's bucket at the same score + a scan of the player's own bucket,
//! and a window starts at its offset the same way: neither reads the board.
//! The consumer's cursor is `c`; only the consumer writes this tree, in one
//! batch per group of events in which every touched key is written once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

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

/// One board entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user_id: String,
    pub score: i64,
}

/// Player counters, by name.
pub type Counters = BTreeMap<String, i64>;

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
    pub fn load(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut counts = Counts::new();
        for item in tree.scan_prefix([b'r']) {
            let (k, _) = item?;
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

    /// Records committed score changes: (product, user, before, after).
    fn apply(&self, changes: &[(String, String, Option<i64>, Option<i64>)]) {
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

/// Reads boards and stats.
pub struct Boards<'a>(pub &'a Store);

impl Boards<'_> {
    /// A player's record (default when unknown).
    pub fn player(&self, product: &str, user: &str) -> Result<PlayerRecord, StoreError> {
        match self.0.stats.get(player_key(product, user))? {
            Some(v) => Ok(postcard::from_bytes(&v)?),
            None => Ok(PlayerRecord::default()),
        }
    }

    /// A player's score.
    pub fn score(&self, product: &str, user: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.player(product, user)?.score)
    }

    /// A player's score and 1-based rank.
    pub fn rank(&self, product: &str, user: &str) -> Result<Option<(i64, u64)>, StoreError> {
        let Some(score) = self.score(product, user)? else {
            return Ok(None);
        };
        let (higher, earlier_buckets) = self.0.ranks.before(product, score, user);
        let bucket_start = key(b'r', product, &[&desc(score), bucket(user)]);
        let mut in_bucket = 0;
        for item in self
            .0
            .stats
            .range(bucket_start..order_key(product, score, user))
        {
            item?;
            in_bucket += 1;
        }
        Ok(Some((score, 1 + higher + earlier_buckets + in_bucket)))
    }

    /// `count` entries from position `offset` (0-based) in board order.
    /// The counts locate the start without reading the entries before it.
    pub fn window(
        &self,
        product: &str,
        offset: u64,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::with_capacity(count.min(128));
        if count == 0 {
            return Ok(out);
        }
        let Some((score, bucket, skip)) = self.0.ranks.locate(product, offset) else {
            return Ok(out);
        };
        let start = key(b'r', product, &[&desc(score), &bucket]);
        let prefix = key(b'r', product, &[]);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        for item in self.0.stats.range(start..).skip(skip).take(count) {
            let (k, _) = item?;
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
    pub fn stats(&self, product: &str, user: &str) -> Result<Counters, StoreError> {
        Ok(self.player(product, user)?.counters)
    }
}

/// The changes of one consumer batch: player records are read once, changed
/// in memory, and at commit each touched record and order entry is written
/// once, with the cursor, in one atomic batch; then the rank counts follow.
pub struct Overlay<'a> {
    store: &'a Store,
    /// Touched players by product and user: (score before the batch, record now).
    players: HashMap<String, HashMap<String, (Option<i64>, PlayerRecord)>>,
}

impl<'a> Overlay<'a> {
    pub fn new(store: &'a Store) -> Self {
        Overlay {
            store,
            players: HashMap::new(),
        }
    }

    fn player(&mut self, product: &str, user: &str) -> Result<&mut PlayerRecord, StoreError> {
        if !self.players.contains_key(product) {
            self.players.insert(product.to_string(), HashMap::new());
        }
        let Some(board) = self.players.get_mut(product) else {
            return Err(StoreError::Failed("overlay lost a board".into()));
        };
        if !board.contains_key(user) {
            let record = Boards(self.store).player(product, user)?;
            board.insert(user.to_string(), (record.score, record));
        }
        match board.get_mut(user) {
            Some((_, record)) => Ok(record),
            None => Err(StoreError::Failed("overlay lost a player".into())),
        }
    }

    /// A player's score in this batch's view.
    pub fn score(&mut self, product: &str, user: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.player(product, user)?.score)
    }

    /// Sets a player's score.
    pub fn set_score(&mut self, product: &str, user: &str, score: i64) -> Result<(), StoreError> {
        self.player(product, user)?.score = Some(score);
        Ok(())
    }

    /// Adds to a player's counter (creating it at 0 + `delta`).
    pub fn add_stat(
        &mut self,
        product: &str,
        user: &str,
        counter: &str,
        delta: i64,
    ) -> Result<(), StoreError> {
        let counters = &mut self.player(product, user)?.counters;
        match counters.get_mut(counter) {
            Some(value) => *value = value.saturating_add(delta),
            None => {
                counters.insert(counter.to_string(), delta);
            }
        }
        Ok(())
    }

    /// Writes everything and the cursor in one atomic batch, then updates
    /// the rank counts.
    pub fn commit(self, cursor: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut changes = Vec::new();
        for (product, board) in self.players {
            for (user, (before, record)) in board {
                if before != record.score {
                    if let Some(old) = before {
                        batch.remove(order_key(&product, old, &user));
                    }
                    if let Some(new) = record.score {
                        batch.insert(order_key(&product, new, &user), &[]);
                    }
                }
                batch.insert(player_key(&product, &user), postcard::to_stdvec(&record)?);
                if before != record.score {
                    changes.push((product.clone(), user, before, record.score));
                }
            }
        }
        batch.insert(CURSOR_KEY, &cursor.to_be_bytes());
        self.store.stats.apply_batch(batch)?;
        self.store.ranks.apply(&changes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> std::sync::Arc<Store> {
        Store::temporary()
    }

    fn set(tree: &Store, scores: &[(&str, i64)]) {
        let mut o = Overlay::new(tree);
        for (user, score) in scores {
            o.set_score("p", user, *score).unwrap();
        }
        o.commit(1).unwrap();
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
            set(&tree, &refs);
            let mut sorted: Vec<(&String, &i64)> = board.iter().collect();
            sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let boards = Boards(&tree);
            for (i, (user, score)) in sorted.iter().enumerate() {
                assert_eq!(
                    boards.rank("p", user).unwrap(),
                    Some((**score, i as u64 + 1))
                );
            }
            for offset in [0, 1, 7, 50, sorted.len() as u64 - 1, sorted.len() as u64] {
                let got = boards.window("p", offset, 10).unwrap();
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
        let reloaded = RankCounts::load(&tree.stats).unwrap();
        assert_eq!(
            snapshot(&reloaded),
            snapshot(&tree.ranks),
            "rebuilt at open"
        );
        assert_eq!(Boards(&tree).rank("p", "nobody").unwrap(), None);
        assert!(Boards(&tree).window("other", 0, 10).unwrap().is_empty());
    }

    #[test]
    fn stats_counters_accumulate() {
        let tree = tree();
        let mut o = Overlay::new(&tree);
        o.add_stat("p", "1", "wins", 1).unwrap();
        o.add_stat("p", "1", "wins", 1).unwrap();
        o.add_stat("p", "1", "losses", 0).unwrap();
        o.commit(9).unwrap();
        let stats = Boards(&tree).stats("p", "1").unwrap();
        assert_eq!(stats.get("wins"), Some(&2));
        assert_eq!(stats.get("losses"), Some(&0));
        assert!(Boards(&tree).stats("p", "2").unwrap().is_empty());
        assert_eq!(
            tree.stats.get(CURSOR_KEY).unwrap().unwrap().as_ref(),
            9u64.to_be_bytes()
        );
    }
}
