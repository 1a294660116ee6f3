//! The board order in memory: per board (a product's lifetime board, or
//! one of its seasons) every scored player in board order (score
//! descending, then user id ascending), with counts that make a rank or the
//! start of a window cheap; and each product's stored seasons.
//!
//! Per product it holds the ordered set of (score, user) and, per score,
//! how many players have it in all and per user-id bucket (the id's first
//! two characters). A rank is 1 + the players at higher scores + those in
//! earlier buckets at the same score + a walk of the player's own bucket;
//! a window finds its first entry the same way. It is derived data, built
//! from the player records at open and changed by the writer after each
//! flush, so keeping it costs no writes to sled.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use crate::app::ports::Entry;
use crate::domain::season::Season;

/// A score change to record: (board key, user, before, after).
pub type RankChange = (String, String, Option<i64>, Option<i64>);

/// The key of a product's board: the product id for the lifetime board,
/// `product\0season` for a season's.
pub fn board_key(product: &str, season: Option<&str>) -> String {
    match season {
        None => product.to_string(),
        Some(season) => format!("{product}\0{season}"),
    }
}

/// Characters of a user id that make its bucket.
const BUCKET_CHARS: usize = 2;

fn bucket(user: &str) -> &str {
    match user.char_indices().nth(BUCKET_CHARS) {
        Some((end, _)) => &user[..end],
        None => user,
    }
}

/// Players at one score: in all, and per bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct AtScore {
    total: u64,
    buckets: BTreeMap<Box<str>, u64>,
}

/// One product's board.
#[derive(Debug, Default)]
struct Board {
    order: BTreeSet<(Reverse<i64>, Box<str>)>,
    /// Score → players at it.
    counts: BTreeMap<i64, AtScore>,
}

impl Board {
    fn add(&mut self, score: i64, user: &str) {
        if !self.order.insert((Reverse(score), user.into())) {
            return;
        }
        let at = self.counts.entry(score).or_default();
        at.total += 1;
        match at.buckets.get_mut(bucket(user)) {
            Some(n) => *n += 1,
            None => {
                at.buckets.insert(bucket(user).into(), 1);
            }
        }
    }

    fn remove(&mut self, score: i64, user: &str) {
        if !self.order.remove(&(Reverse(score), user.into())) {
            return;
        }
        let Some(at) = self.counts.get_mut(&score) else {
            return;
        };
        at.total = at.total.saturating_sub(1);
        if let Some(n) = at.buckets.get_mut(bucket(user)) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                at.buckets.remove(bucket(user));
            }
        }
        if at.total == 0 {
            self.counts.remove(&score);
        }
    }

    fn rank(&self, score: i64, user: &str) -> Option<u64> {
        let key = (Reverse(score), Box::<str>::from(user));
        if !self.order.contains(&key) {
            return None;
        }
        let higher: u64 = self
            .counts
            .range(score.saturating_add(1)..)
            .map(|(_, at)| at.total)
            .sum();
        let b = bucket(user);
        let earlier: u64 = self.counts.get(&score).map_or(0, |at| {
            let before = (Bound::Unbounded, Bound::Excluded(b));
            at.buckets.range::<str, _>(before).map(|(_, n)| n).sum()
        });
        let start = (Reverse(score), Box::<str>::from(b));
        let in_bucket = self.order.range(start..key).count() as u64;
        Some(1 + higher + earlier + in_bucket)
    }

    /// The player's rank and up to `n` entries either side, the player
    /// included, each with its rank: walks only those entries.
    fn around(&self, score: i64, user: &str, n: usize) -> Option<(u64, Vec<(Entry, u64)>)> {
        let rank = self.rank(score, user)?;
        let key = (Reverse(score), Box::<str>::from(user));
        let entry = |(Reverse(score), user): &(Reverse<i64>, Box<str>)| Entry {
            user_id: user.to_string(),
            score: *score,
        };
        let mut out: Vec<(Entry, u64)> = self
            .order
            .range(..key.clone())
            .rev()
            .take(n)
            .enumerate()
            .map(|(i, k)| (entry(k), rank - 1 - i as u64))
            .collect();
        out.reverse();
        out.extend(
            self.order
                .range(key..)
                .take(n + 1)
                .enumerate()
                .map(|(i, k)| (entry(k), rank + i as u64)),
        );
        Some((rank, out))
    }

    fn window(&self, offset: u64, count: usize) -> Vec<Entry> {
        let mut skip = offset;
        for (score, at) in self.counts.iter().rev() {
            if at.total <= skip {
                skip -= at.total;
                continue;
            }
            for (b, n) in &at.buckets {
                if *n <= skip {
                    skip -= n;
                    continue;
                }
                let start = (Reverse(*score), b.clone());
                let skip = usize::try_from(skip).unwrap_or(usize::MAX);
                return self
                    .order
                    .range(start..)
                    .skip(skip)
                    .take(count)
                    .map(|(Reverse(score), user)| Entry {
                        user_id: user.to_string(),
                        score: *score,
                    })
                    .collect();
            }
            return Vec::new();
        }
        Vec::new()
    }
}

/// Every board's order, and each product's stored seasons.
#[derive(Debug, Default)]
pub struct Ranking {
    boards: HashMap<String, Board>,
    /// Product → its stored seasons, oldest first.
    seasons: HashMap<String, Vec<Season>>,
}

impl Ranking {
    /// Adds a scored player to a board (when loading).
    pub fn add(&mut self, board: &str, score: i64, user: &str) {
        self.board(board).add(score, user);
    }

    fn board(&mut self, board: &str) -> &mut Board {
        if !self.boards.contains_key(board) {
            self.boards.insert(board.to_string(), Board::default());
        }
        self.boards.entry(board.to_string()).or_default()
    }

    /// Records score changes.
    pub fn apply(&mut self, changes: &[RankChange]) {
        for (board, user, before, after) in changes {
            let board = self.board(board);
            if let Some(old) = before {
                board.remove(*old, user);
            }
            if let Some(new) = after {
                board.add(*new, user);
            }
        }
    }

    /// The 1-based rank of `user` at `score`; `None` if not on the board.
    pub fn rank(&self, board: &str, score: i64, user: &str) -> Option<u64> {
        self.boards.get(board)?.rank(score, user)
    }

    /// The 1-based rank of `user` at `score` and up to `n` entries either
    /// side of it with their ranks; `None` if not on the board.
    pub fn around(
        &self,
        board: &str,
        score: i64,
        user: &str,
        n: usize,
    ) -> Option<(u64, Vec<(Entry, u64)>)> {
        self.boards.get(board)?.around(score, user, n)
    }

    /// `count` entries from position `offset` (0-based) in board order.
    pub fn window(&self, board: &str, offset: u64, count: usize) -> Vec<Entry> {
        match self.boards.get(board) {
            Some(board) if count > 0 => board.window(offset, count),
            _ => Vec::new(),
        }
    }

    /// Players on a board.
    pub fn players(&self, board: &str) -> u64 {
        self.boards.get(board).map_or(0, |b| b.order.len() as u64)
    }

    /// A product's stored seasons, oldest first.
    pub fn seasons(&self, product: &str) -> &[Season] {
        self.seasons.get(product).map_or(&[], Vec::as_slice)
    }

    /// The product's newest stored season's id: the board its current
    /// scores are on (the lifetime board when it has none).
    pub fn current_season(&self, product: &str) -> Option<&str> {
        self.seasons(product).last().map(|s| s.id.as_str())
    }

    /// Records a new stored season.
    pub fn add_season(&mut self, product: &str, season: Season) {
        let list = self.seasons.entry(product.to_string()).or_default();
        if list.iter().all(|s| s.id != season.id) {
            let at = list.partition_point(|s| s.starts_ms < season.starts_ms);
            list.insert(at, season);
        }
    }

    /// Forgets a dropped season and its board.
    pub fn drop_season(&mut self, product: &str, season: &str) {
        if let Some(list) = self.seasons.get_mut(product) {
            list.retain(|s| s.id != season);
        }
        self.boards.remove(&board_key(product, Some(season)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank and window agree with a plain sort, through score changes.
    #[test]
    fn ranks_and_windows_match_a_sorted_board() {
        let mut ranking = Ranking::default();
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
                let before = board.insert(user.clone(), score);
                changes.push(("p".to_string(), user, before, Some(score)));
            }
            ranking.apply(&changes);
            let mut sorted: Vec<(&String, &i64)> = board.iter().collect();
            sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (i, (user, score)) in sorted.iter().enumerate() {
                assert_eq!(ranking.rank("p", **score, user), Some(i as u64 + 1));
            }
            for offset in [0, 1, 7, 50, sorted.len() as u64 - 1, sorted.len() as u64] {
                let want: Vec<Entry> = sorted
                    .iter()
                    .skip(offset as usize)
                    .take(10)
                    .map(|(u, s)| Entry {
                        user_id: (*u).clone(),
                        score: **s,
                    })
                    .collect();
                assert_eq!(ranking.window("p", offset, 10), want, "offset {offset}");
            }
            assert_eq!(ranking.players("p"), sorted.len() as u64);
            for (i, (user, score)) in sorted.iter().enumerate() {
                for n in [0, 1, 3] {
                    let from = i.saturating_sub(n);
                    let want: Vec<(Entry, u64)> = sorted[from..(i + n + 1).min(sorted.len())]
                        .iter()
                        .enumerate()
                        .map(|(j, (u, s))| {
                            let entry = Entry {
                                user_id: (*u).clone(),
                                score: **s,
                            };
                            (entry, (from + j) as u64 + 1)
                        })
                        .collect();
                    let got = ranking.around("p", **score, user, n);
                    assert_eq!(got, Some((i as u64 + 1, want)), "{user} n={n}");
                }
            }
        }
        assert_eq!(ranking.rank("p", 0, "nobody"), None);
        assert!(ranking.window("other", 0, 10).is_empty());
    }

    #[test]
    fn buckets_are_characters_not_bytes() {
        let mut ranking = Ranking::default();
        for user in ["é1", "éa", "e", "ü", "a"] {
            ranking.add("p", 1, user);
        }
        let order: Vec<String> = ranking
            .window("p", 0, 10)
            .into_iter()
            .map(|e| e.user_id)
            .collect();
        assert_eq!(order, ["a", "e", "é1", "éa", "ü"]);
        assert_eq!(ranking.rank("p", 1, "éa"), Some(4));
    }
}
