//! Leaderboards, seasons and player stats on PostgreSQL.
//!
//! A stats batch is one transaction with the stats cursor (locked first,
//! so a batch at or below it is not applied again, whichever node sends
//! it): every player and score it touches is read once, changed in memory
//! by the product's scoring rule, and written once; the seasons it starts
//! and drops, the per-score bucket counts and the listed games' creator
//! ratings are written in the same transaction.
//!
//! Ranks do not count rows: `score_buckets` holds, per board, score and
//! user-id bucket (the id's first two characters, as the sled board
//! order), how many players are there. A rank is the sum of the counts
//! above the player's score, of the earlier buckets at that score, and a
//! count of the player's own bucket up to the player (an index range).

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{Cached, PgStorage, big, pg};
use crate::app::ports::{
    BoardList, Boards, Counters, Entry, PlayerRank, SeasonBoard, StatsBatch, StatsChange,
    StorageError,
};
use crate::domain::season::Season;

/// Characters of a user id that make its bucket.
const BUCKET_CHARS: usize = 2;

fn bucket(user: &str) -> &str {
    match user.char_indices().nth(BUCKET_CHARS) {
        Some((end, _)) => &user[..end],
        None => user,
    }
}

/// The board's season column: '' for the lifetime board.
fn board(season: Option<&str>) -> &str {
    season.unwrap_or("")
}

/// (product, season, user) of a score.
type ScoreKey = (String, String, String);

/// Bucket count changes as parallel columns: product, season, score,
/// bucket, change.
type BucketColumns<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<i64>, Vec<&'a str>, Vec<i64>);

/// Windows starting at most this far down are read with `OFFSET`; deeper
/// ones start from the bucket counts.
const PLAIN_OFFSET: u64 = 1000;

/// A product's seasons as the batch sees them: stored ones and new ones
/// (`true`), oldest first, and the archived seasons it keeps.
struct SeasonList {
    seasons: Vec<(Season, bool)>,
    keep: usize,
}

/// Runs `sql` with `params` in `tx`.
async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), StorageError> {
    tx.cexec(sql, params).await.map_err(pg)?;
    Ok(())
}

impl PgStorage {
    /// Applies a stats batch in `tx` (the cursor is already checked).
    async fn stats_in(&self, tx: &Transaction<'_>, batch: &StatsBatch) -> Result<(), StorageError> {
        // What the batch touches.
        let mut counted: HashSet<(String, String)> = HashSet::new();
        let mut seasonal: HashSet<String> = HashSet::new();
        for change in &batch.changes {
            match change {
                StatsChange::Count { product, user, .. } => {
                    counted.insert((product.clone(), user.clone()));
                }
                StatsChange::GameOver {
                    product,
                    season: Some(_),
                    ..
                } => {
                    seasonal.insert(product.clone());
                }
                StatsChange::GameOver { .. } => {}
            }
        }
        let seasonal: Vec<String> = seasonal.into_iter().collect();
        let mut lists: HashMap<String, SeasonList> = HashMap::new();
        for row in tx
            .cq(
                "SELECT product_id, season, starts_ms, ends_ms FROM seasons \
                 WHERE product_id = ANY($1) ORDER BY starts_ms",
                &[&seasonal],
            )
            .await
            .map_err(pg)?
        {
            let product: String = row.get(0);
            lists
                .entry(product)
                .or_insert_with(|| SeasonList {
                    seasons: Vec::new(),
                    keep: 0,
                })
                .seasons
                .push((
                    Season {
                        id: row.get(1),
                        starts_ms: row.get(2),
                        ends_ms: row.get(3),
                    },
                    false,
                ));
        }
        let current_before: HashMap<String, String> = lists
            .iter()
            .filter_map(|(p, l)| Some((p.clone(), l.seasons.last()?.0.id.clone())))
            .collect();

        // Scores needed: (product, season, user).
        let mut wanted: HashSet<(String, String, String)> = HashSet::new();
        for change in &batch.changes {
            if let StatsChange::GameOver {
                product,
                winner,
                loser,
                season,
            } = change
            {
                let s = season.as_ref().map_or("", |s| s.season.id.as_str());
                for user in [winner, loser] {
                    wanted.insert((product.clone(), s.to_string(), user.clone()));
                }
            }
        }
        let mut scores: HashMap<ScoreKey, (Option<i64>, Option<i64>)> = HashMap::new();
        if !wanted.is_empty() {
            let (p, s, u) = split3(&wanted);
            for row in tx
                .cq(
                    "SELECT product_id, season, user_id, score FROM scores \
                     WHERE (product_id, season, user_id) IN \
                     (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
                    &[&p, &s, &u],
                )
                .await
                .map_err(pg)?
            {
                let score: i64 = row.get(3);
                scores.insert(
                    (row.get(0), row.get(1), row.get(2)),
                    (Some(score), Some(score)),
                );
            }
        }
        let mut counters: HashMap<(String, String), Counters> = HashMap::new();
        if !counted.is_empty() {
            let (p, u): (Vec<String>, Vec<String>) = counted.iter().cloned().unzip();
            for row in tx
                .cq(
                    "SELECT product_id, user_id, counters FROM players \
                     WHERE (product_id, user_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                    &[&p, &u],
                )
                .await
                .map_err(pg)?
            {
                let value: serde_json::Value = row.get(2);
                let parsed: Counters = serde_json::from_value(value)
                    .map_err(|e| StorageError::Failed(format!("stored counters: {e}")))?;
                counters.insert((row.get(0), row.get(1)), parsed);
            }
        }

        // The changes, in log order.
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
                    let s = match season {
                        Some(season) => {
                            let list = lists.entry(product.clone()).or_insert_with(|| SeasonList {
                                seasons: Vec::new(),
                                keep: season.keep,
                            });
                            list.keep = season.keep;
                            if list.seasons.iter().all(|(s, _)| s.id != season.season.id) {
                                let at = list.seasons.partition_point(|(s, _)| {
                                    s.starts_ms < season.season.starts_ms
                                });
                                list.seasons.insert(at, (season.season.clone(), true));
                            }
                            season.season.id.clone()
                        }
                        None => String::new(),
                    };
                    let key = |u: &String| (product.clone(), s.clone(), u.clone());
                    let w = scores
                        .get(&key(winner))
                        .and_then(|x| x.1)
                        .unwrap_or(initial);
                    let l = scores.get(&key(loser)).and_then(|x| x.1).unwrap_or(initial);
                    let (w, l) = rule.game_over(w, l);
                    scores.entry(key(winner)).or_insert((None, None)).1 = Some(w);
                    scores.entry(key(loser)).or_insert((None, None)).1 = Some(l);
                }
                StatsChange::Count {
                    product,
                    user,
                    counter,
                    delta,
                } => {
                    let c = counters.entry((product.clone(), user.clone())).or_default();
                    match c.get_mut(*counter) {
                        Some(value) => *value = value.saturating_add(*delta),
                        None => {
                            c.insert(counter.to_string(), *delta);
                        }
                    }
                }
            }
        }

        // Seasons: store the new ones, drop the oldest beyond keep + 1.
        let mut gone: HashSet<(String, String)> = HashSet::new();
        let mut current_after: HashMap<String, String> = HashMap::new();
        for (product, list) in &lists {
            let over = list.seasons.len().saturating_sub(list.keep + 1);
            for (i, (season, new)) in list.seasons.iter().enumerate() {
                if i < over {
                    gone.insert((product.clone(), season.id.clone()));
                    if !new {
                        for table in ["scores", "score_buckets", "seasons"] {
                            exec(
                                tx,
                                &format!(
                                    "DELETE FROM {table} WHERE product_id = $1 AND season = $2"
                                ),
                                &[product, &season.id],
                            )
                            .await?;
                        }
                    }
                } else if *new {
                    exec(
                        tx,
                        "INSERT INTO seasons (product_id, season, starts_ms, ends_ms) \
                         VALUES ($1, $2, $3, $4)",
                        &[product, &season.id, &season.starts_ms, &season.ends_ms],
                    )
                    .await?;
                }
            }
            if let Some((newest, _)) = list.seasons.last() {
                current_after.insert(product.clone(), newest.id.clone());
            }
        }

        // Scores and bucket counts.
        let mut rows: (Vec<&str>, Vec<&str>, Vec<&str>, Vec<i64>) = Default::default();
        let mut buckets: BTreeMap<(String, String, i64, String), i64> = BTreeMap::new();
        let mut rated: (Vec<&str>, Vec<&str>, Vec<Option<i64>>) = Default::default();
        for ((product, season, user), (before, now)) in &scores {
            let Some(now) = now else { continue };
            if before == &Some(*now) || gone.contains(&(product.clone(), season.clone())) {
                continue;
            }
            rows.0.push(product);
            rows.1.push(season);
            rows.2.push(user);
            rows.3.push(*now);
            let b = bucket(user).to_string();
            if let Some(old) = before {
                *buckets
                    .entry((product.clone(), season.clone(), *old, b.clone()))
                    .or_default() -= 1;
            }
            *buckets
                .entry((product.clone(), season.clone(), *now, b))
                .or_default() += 1;
            let current = current_after.get(product).map_or("", String::as_str);
            if season == current {
                rated.0.push(product);
                rated.1.push(user);
                rated.2.push(Some(*now));
            }
        }
        if !rows.0.is_empty() {
            exec(
                tx,
                "INSERT INTO scores (product_id, season, user_id, score) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) \
                 ON CONFLICT (product_id, season, user_id) DO UPDATE SET score = EXCLUDED.score",
                &[&rows.0, &rows.1, &rows.2, &rows.3],
            )
            .await?;
        }
        let buckets: Vec<_> = buckets.into_iter().filter(|(_, n)| *n != 0).collect();
        if !buckets.is_empty() {
            let mut cols: BucketColumns = Default::default();
            for ((p, s, score, b), n) in &buckets {
                cols.0.push(p);
                cols.1.push(s);
                cols.2.push(*score);
                cols.3.push(b);
                cols.4.push(*n);
            }
            exec(
                tx,
                "INSERT INTO score_buckets (product_id, season, score, bucket, n) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) \
                 ON CONFLICT (product_id, season, score, bucket) \
                 DO UPDATE SET n = score_buckets.n + EXCLUDED.n",
                &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4],
            )
            .await?;
            exec(
                tx,
                "DELETE FROM score_buckets WHERE n <= 0 AND (product_id, season, score, bucket) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]))",
                &[&cols.0, &cols.1, &cols.2, &cols.3],
            )
            .await?;
        }

        // Quick match's creator ratings on each product's current board.
        for (product, current) in &current_after {
            if current_before.get(product) != Some(current) {
                exec(
                    tx,
                    "UPDATE games g SET creator_rating = (SELECT s.score FROM scores s \
                     WHERE s.product_id = $1 AND s.season = $2 AND s.user_id = g.creator_id) \
                     WHERE g.product_id = $1 AND g.listing IS NOT NULL",
                    &[product, current],
                )
                .await?;
            }
        }
        if !rated.0.is_empty() {
            exec(
                tx,
                "UPDATE games g SET creator_rating = u.score \
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(product_id, user_id, score) \
                 WHERE g.product_id = u.product_id AND g.creator_id = u.user_id \
                 AND g.listing IS NOT NULL",
                &[&rated.0, &rated.1, &rated.2],
            )
            .await?;
        }

        // Counters.
        if !counters.is_empty() {
            let mut cols: (Vec<&str>, Vec<&str>, Vec<serde_json::Value>) = Default::default();
            for ((p, u), c) in &counters {
                cols.0.push(p);
                cols.1.push(u);
                cols.2.push(serde_json::json!(c));
            }
            exec(
                tx,
                "INSERT INTO players (product_id, user_id, counters) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) \
                 ON CONFLICT (product_id, user_id) DO UPDATE SET counters = EXCLUDED.counters",
                &[&cols.0, &cols.1, &cols.2],
            )
            .await?;
        }
        Ok(())
    }
}

/// Three parallel columns of a set of triples.
fn split3(set: &HashSet<(String, String, String)>) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let mut cols: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    for (a, b, c) in set {
        cols.0.push(a);
        cols.1.push(b);
        cols.2.push(c);
    }
    cols
}

fn entry(row: &tokio_postgres::Row) -> Entry {
    Entry {
        user_id: row.get(0),
        score: row.get(1),
    }
}

/// A player's score and rank on a board, in `client`'s snapshot.
async fn rank_in(
    client: &impl deadpool_postgres::GenericClient,
    product: &str,
    season: &str,
    user: &str,
) -> Result<Option<(i64, u64)>, StorageError> {
    let row = client
        .cq_opt(
            "SELECT s.score, 1 \
             + coalesce((SELECT sum(n) FROM score_buckets b WHERE b.product_id = $1 \
                 AND b.season = $2 AND b.score > s.score), 0)::bigint \
             + coalesce((SELECT sum(n) FROM score_buckets b WHERE b.product_id = $1 \
                 AND b.season = $2 AND b.score = s.score AND b.bucket < $4), 0)::bigint \
             + (SELECT count(*) FROM scores o WHERE o.product_id = $1 AND o.season = $2 \
                 AND o.neg_score = s.neg_score AND o.user_id >= $4 \
                 AND o.user_id < s.user_id) \
             FROM scores s WHERE s.product_id = $1 AND s.season = $2 AND s.user_id = $3",
            &[&product, &season, &user, &bucket(user)],
        )
        .await
        .map_err(pg)?;
    Ok(row.map(|r| (r.get(0), super::unbig(r.get(1)))))
}

#[async_trait]
impl Boards for PgStorage {
    async fn apply_stats(&self, batch: StatsBatch) -> Result<(), StorageError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        self.fence(&tx, "stats").await?;
        let position: i64 = tx
            .cq_one(
                "SELECT position FROM cursors WHERE name = 'stats' FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if super::unbig(position) >= batch.cursor {
            return Ok(());
        }
        self.stats_in(&tx, &batch).await?;
        exec(
            &tx,
            "UPDATE cursors SET position = $1 WHERE name = 'stats'",
            &[&big(batch.cursor)],
        )
        .await?;
        let committed = tx.commit().await.map_err(pg);
        self.inner.watch(committed)
    }

    async fn window(
        &self,
        product: &str,
        season: Option<&str>,
        offset: u64,
        count: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut client = self.inner.client().await?;
        let season = board(season);
        let count = big(count as u64);
        if offset <= PLAIN_OFFSET {
            let rows = client
                .cq(
                    "SELECT user_id, score FROM scores WHERE product_id = $1 AND season = $2 \
                     ORDER BY neg_score, user_id OFFSET $3 LIMIT $4",
                    &[&product, &season, &big(offset), &count],
                )
                .await
                .map_err(pg);
            return Ok(self.inner.watch(rows)?.iter().map(entry).collect());
        }
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let start = tx
            .cq_opt(
                "SELECT score, bucket, before FROM (SELECT score, bucket, n, \
                 (sum(n) OVER (ORDER BY score DESC, bucket))::bigint - n AS before \
                 FROM score_buckets WHERE product_id = $1 AND season = $2) c \
                 WHERE before + n > $3::bigint ORDER BY score DESC, bucket LIMIT 1",
                &[&product, &season, &big(offset)],
            )
            .await
            .map_err(pg)?;
        let Some(start) = start else {
            return Ok(Vec::new());
        };
        let score: i64 = start.get(0);
        let b: String = start.get(1);
        let before: i64 = start.get(2);
        let rows = tx
            .cq(
                "SELECT user_id, score FROM scores WHERE product_id = $1 AND season = $2 \
                 AND (neg_score, user_id) >= ($3, $4) ORDER BY neg_score, user_id \
                 OFFSET $5 LIMIT $6",
                &[
                    &product,
                    &season,
                    &-score,
                    &b,
                    &(big(offset) - before),
                    &count,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn rank(
        &self,
        product: &str,
        season: Option<&str>,
        user: &str,
    ) -> Result<Option<(i64, u64)>, StorageError> {
        let client = self.inner.client().await?;
        let found = rank_in(&client, product, board(season), user).await;
        self.inner.watch(found)
    }

    async fn around(
        &self,
        product: &str,
        season: Option<&str>,
        user: &str,
        n: usize,
    ) -> Result<Option<PlayerRank>, StorageError> {
        let mut client = self.inner.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let season = board(season);
        let Some((score, rank)) = rank_in(&tx, product, season, user).await? else {
            return Ok(None);
        };
        let n = big(n as u64);
        let above = tx
            .cq(
                "SELECT user_id, score FROM scores WHERE product_id = $1 AND season = $2 \
                 AND (neg_score, user_id) < ($3, $4) ORDER BY neg_score DESC, user_id DESC LIMIT $5",
                &[&product, &season, &-score, &user, &n],
            )
            .await
            .map_err(pg)?;
        let below = tx
            .cq(
                "SELECT user_id, score FROM scores WHERE product_id = $1 AND season = $2 \
                 AND (neg_score, user_id) >= ($3, $4) ORDER BY neg_score, user_id LIMIT $5",
                &[&product, &season, &-score, &user, &(n + 1)],
            )
            .await
            .map_err(pg)?;
        let mut around: Vec<(Entry, u64)> = above
            .iter()
            .enumerate()
            .map(|(i, r)| (entry(r), rank - 1 - i as u64))
            .collect();
        around.reverse();
        around.extend(
            below
                .iter()
                .enumerate()
                .map(|(i, r)| (entry(r), rank + i as u64)),
        );
        Ok(Some(PlayerRank {
            score,
            rank,
            around,
        }))
    }

    async fn boards(&self, product: &str) -> Result<BoardList, StorageError> {
        let client = self.inner.client().await?;
        let rows = client
            .cq(
                "SELECT s.season, s.starts_ms, s.ends_ms, \
                 coalesce((SELECT sum(n) FROM score_buckets b WHERE b.product_id = $1 \
                     AND b.season = s.season), 0)::bigint \
                 FROM seasons s WHERE s.product_id = $1 ORDER BY s.starts_ms DESC",
                &[&product],
            )
            .await
            .map_err(pg);
        let rows = self.inner.watch(rows)?;
        let lifetime = client
            .cq_one(
                "SELECT coalesce(sum(n), 0)::bigint FROM score_buckets \
                 WHERE product_id = $1 AND season = ''",
                &[&product],
            )
            .await
            .map_err(pg)?;
        Ok(BoardList {
            lifetime_players: super::unbig(lifetime.get(0)),
            seasons: rows
                .iter()
                .map(|r| SeasonBoard {
                    season: Season {
                        id: r.get(0),
                        starts_ms: r.get(1),
                        ends_ms: r.get(2),
                    },
                    players: super::unbig(r.get(3)),
                })
                .collect(),
        })
    }

    async fn player_stats(&self, product: &str, user: &str) -> Result<Counters, StorageError> {
        let client = self.inner.client().await?;
        let row = client
            .cq_opt(
                "SELECT counters FROM players WHERE product_id = $1 AND user_id = $2",
                &[&product, &user],
            )
            .await
            .map_err(pg);
        match self.inner.watch(row)? {
            Some(row) => {
                let value: serde_json::Value = row.get(0);
                serde_json::from_value(value)
                    .map_err(|e| StorageError::Failed(format!("stored counters: {e}")))
            }
            None => Ok(Counters::new()),
        }
    }
}
