//! Games on PostgreSQL: seats, quick match, curation and the matchmaker
//! consumer.
//!
//! Every change of a game is a transaction that holds the game's row lock
//! (`SELECT … FOR UPDATE`) while the domain decides, so of concurrent joins
//! for the last seat exactly one wins whichever nodes the racers hit; no
//! lock is held while a game server is called (that happens after the
//! answer, in the app). Lobby places come from the `lobby_places`
//! sequence, so a later listing sorts later on every node; a transaction
//! that changes a listing also moves `lobby_changes`, which tells the other
//! nodes to read their lobbies again. `creator_rating` keeps a listed
//! game's creator score on the product's current board for quick match.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::{Cached, PgStorage, big, codec, pg, unbig};
use crate::app::ports::{
    Applied, GameStore, LobbyFeed, MatchmakerBatch, QuickRule, SeatOutcome, StorageError,
};
use crate::domain::game::{CurationChange, Effect, Game, State};

/// Most times quick match looks again after a candidate changed under it.
const QUICK_TRIES: usize = 64;

/// The current board's season of a product, as SQL over `$1` (the
/// product): its newest stored season, else the lifetime board ('').
pub const CURRENT_SEASON: &str = "coalesce((SELECT season FROM seasons WHERE product_id = $1 \
     ORDER BY starts_ms DESC LIMIT 1), '')";

fn decode(record: &[u8]) -> Result<Game, StorageError> {
    postcard::from_bytes(record).map_err(codec)
}

fn listing(game: &Game) -> Option<i64> {
    game.listing.filter(|_| game.is_listed()).map(big)
}

/// Writes a game (insert or update) in `tx` (or on its own).
async fn put(tx: &impl Cached, game: &Game) -> Result<(), StorageError> {
    let record = postcard::to_stdvec(game).map_err(codec)?;
    tx.cexec(
        "INSERT INTO games (game_id, product_id, state, since_us, listing, creator_id, record) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (game_id) DO UPDATE SET product_id = EXCLUDED.product_id, \
         state = EXCLUDED.state, since_us = EXCLUDED.since_us, listing = EXCLUDED.listing, \
         creator_id = EXCLUDED.creator_id, record = EXCLUDED.record",
        &[
            &game.game_id,
            &game.product_id,
            &i16::from(game.state.code()),
            &big(game.state_since_us),
            &listing(game),
            &game.creator_id,
            &record,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Tells the other nodes that a listing changed (with the transaction).
async fn lobby_changed(tx: &Transaction<'_>) -> Result<(), StorageError> {
    tx.cexec("SELECT nextval('lobby_changes')", &[])
        .await
        .map_err(pg)?;
    Ok(())
}

/// Sets the creator rating of newly listed games from the current board.
async fn rate(
    tx: &Transaction<'_>,
    product: &str,
    game_ids: &[String],
) -> Result<(), StorageError> {
    if game_ids.is_empty() {
        return Ok(());
    }
    tx.cexec(
        &format!(
            "UPDATE games g SET creator_rating = (SELECT s.score FROM scores s \
             WHERE s.product_id = $1 AND s.season = {CURRENT_SEASON} AND s.user_id = g.creator_id) \
             WHERE g.product_id = $1 AND g.game_id = ANY($2)"
        ),
        &[&product, &game_ids],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Locks and reads a game.
async fn locked(tx: &Transaction<'_>, game_id: &str) -> Result<Option<Game>, StorageError> {
    let row = tx
        .cq_opt(
            "SELECT record FROM games WHERE game_id = $1 FOR UPDATE",
            &[&game_id],
        )
        .await
        .map_err(pg)?;
    row.map(|r| decode(r.get(0))).transpose()
}

impl PgStorage {
    /// Writes a changed game, marks a listing change and commits; returns
    /// the product whose lobby this node must read again (the caller
    /// waits for it after giving its connection back to the pool).
    async fn finish(
        &self,
        tx: Transaction<'_>,
        before: &Game,
        after: &Game,
    ) -> Result<Option<String>, StorageError> {
        put(&tx, after).await?;
        // A listed game whose listing form changed (a player joined a
        // game with seats left) is read again too.
        let relisted = listing(before).is_some() || listing(after).is_some();
        if relisted {
            lobby_changed(&tx).await?;
            if listing(before).is_none() {
                rate(&tx, &after.product_id, std::slice::from_ref(&after.game_id)).await?;
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(relisted.then(|| after.product_id.clone()))
    }

    /// Waits until this node's lobby shows a change that was committed.
    async fn show(&self, product: Option<String>) {
        if let Some(product) = product {
            self.inner.refreshed([product]).await;
        }
    }

    /// One attempt at quick match: `Err(None)` to look again.
    async fn quick_once(
        &self,
        product_id: &str,
        user_id: &str,
        rule: QuickRule,
        now_us: u64,
        passed: &mut Vec<String>,
    ) -> Result<Option<Option<Box<Game>>>, StorageError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // The rating rule's SQL is fixed (the numbers are parameters), so
        // each connection prepares it once.
        let (initial, own, gap) = match rule {
            QuickRule::Oldest => (0, 0, None),
            QuickRule::Closest { initial, max_gap } => {
                let own: Option<i64> = tx
                    .cq_opt(
                        &format!(
                            "SELECT score FROM scores WHERE product_id = $1 \
                             AND season = {CURRENT_SEASON} AND user_id = $2"
                        ),
                        &[&product_id, &user_id],
                    )
                    .await
                    .map_err(pg)?
                    .map(|r| r.get(0));
                (initial, own.unwrap_or(initial), Some(max_gap))
            }
        };
        let candidate = match gap {
            None => {
                "SELECT record FROM games WHERE product_id = $1 AND listing IS NOT NULL \
                     AND creator_id <> $2 AND game_id <> ALL($3) ORDER BY listing LIMIT 1"
            }
            Some(_) => {
                "SELECT record FROM games WHERE product_id = $1 AND listing IS NOT NULL \
                 AND creator_id <> $2 AND game_id <> ALL($3) \
                 AND abs(coalesce(creator_rating, $4) - $5) <= $6 \
                 ORDER BY abs(coalesce(creator_rating, $4) - $5), listing LIMIT 1"
            }
        };
        let gap = gap.unwrap_or(0);
        let closest: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
            [&product_id, &user_id, &*passed, &initial, &own, &gap];
        let params = if candidate.contains("$4") {
            &closest[..]
        } else {
            &closest[..3]
        };
        let row = tx
            .cq_opt(&format!("{candidate} FOR UPDATE"), params)
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            // The row a concurrent join held may have left the listing:
            // look again while any candidate is there.
            let any = tx.cq_opt(candidate, params).await.map_err(pg)?;
            tx.rollback().await.map_err(pg)?;
            return Ok(any.is_none().then_some(None));
        };
        let before = decode(row.get(0))?;
        let mut game = before.clone();
        if game.join(user_id, now_us).is_err() {
            passed.push(game.game_id.clone());
            tx.rollback().await.map_err(pg)?;
            return Ok(None);
        }
        let changed = self.finish(tx, &before, &game).await?;
        drop(client);
        self.show(changed).await;
        Ok(Some(Some(Box::new(game))))
    }
}

#[async_trait]
impl GameStore for PgStorage {
    async fn insert_game(&self, game: Game) -> Result<(), StorageError> {
        let mut client = self.inner.client().await?;
        if listing(&game).is_none() {
            // A new game is not listed yet: one statement, one round trip.
            return put(&client, &game).await;
        }
        let tx = client.transaction().await.map_err(pg)?;
        put(&tx, &game).await?;
        let listed = listing(&game).is_some();
        if listed {
            lobby_changed(&tx).await?;
            rate(&tx, &game.product_id, std::slice::from_ref(&game.game_id)).await?;
        }
        tx.commit().await.map_err(pg)?;
        drop(client);
        if listed {
            self.inner.refreshed([game.product_id]).await;
        }
        Ok(())
    }

    async fn reserve_seat(
        &self,
        product_id: &str,
        game_id: &str,
        user_id: &str,
        now_us: u64,
    ) -> Result<SeatOutcome, StorageError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(before) = locked(&tx, game_id)
            .await?
            .filter(|g| g.product_id == product_id)
        else {
            return Ok(SeatOutcome::NotFound);
        };
        let mut game = before.clone();
        if let Err(refusal) = game.join(user_id, now_us) {
            return Ok(SeatOutcome::Refused(refusal));
        }
        let changed = self.finish(tx, &before, &game).await?;
        drop(client);
        self.show(changed).await;
        Ok(SeatOutcome::Reserved(Box::new(game)))
    }

    async fn quick_seat(
        &self,
        product_id: &str,
        user_id: &str,
        rule: QuickRule,
        now_us: u64,
    ) -> Result<Option<Box<Game>>, StorageError> {
        let mut passed = Vec::new();
        for _ in 0..QUICK_TRIES {
            if let Some(found) = self
                .quick_once(product_id, user_id, rule, now_us, &mut passed)
                .await?
            {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn release_seat(
        &self,
        game_id: &str,
        user_id: &str,
        now_us: u64,
    ) -> Result<bool, StorageError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(before) = locked(&tx, game_id).await? else {
            return Ok(false);
        };
        let mut game = before.clone();
        if !game.leave(user_id, now_us) {
            return Ok(false);
        }
        let changed = self.finish(tx, &before, &game).await?;
        drop(client);
        self.show(changed).await;
        Ok(true)
    }

    fn open_games(&self, product_id: &str, page: u64, count: u64) -> String {
        self.inner.lobby.page(product_id, page, count)
    }

    fn lobby_feed(&self, product_id: &str, after: Option<u64>) -> LobbyFeed {
        self.inner.lobby.lobby_feed(product_id, after, 1000)
    }

    async fn expired(
        &self,
        state: State,
        cutoff_us: u64,
        limit: usize,
    ) -> Result<Vec<Game>, StorageError> {
        let client = self.inner.client().await?;
        let rows = client
            .cq(
                "SELECT record FROM games WHERE state = $1 AND since_us < $2 \
                 ORDER BY since_us, game_id LIMIT $3",
                &[
                    &i16::from(state.code()),
                    &big(cutoff_us),
                    &big(limit as u64),
                ],
            )
            .await
            .map_err(pg);
        self.inner
            .watch(rows)?
            .iter()
            .map(|r| decode(r.get(0)))
            .collect()
    }

    async fn curate(
        &self,
        game_id: &str,
        state: State,
        since_us: u64,
        change: CurationChange,
        now_us: u64,
    ) -> Result<bool, StorageError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let Some(before) = locked(&tx, game_id)
            .await?
            .filter(|g| g.state == state && g.state_since_us == since_us)
        else {
            return Ok(false);
        };
        let place: i64 = tx
            .cq_one("SELECT nextval('lobby_places')", &[])
            .await
            .map_err(pg)?
            .get(0);
        let mut game = before.clone();
        if game.curate(&change, unbig(place), now_us) {
            let changed = self.finish(tx, &before, &game).await?;
            drop(client);
            self.show(changed).await;
        } else {
            tx.cexec("DELETE FROM games WHERE game_id = $1", &[&game_id])
                .await
                .map_err(pg)?;
            if listing(&before).is_some() {
                lobby_changed(&tx).await?;
            }
            tx.commit().await.map_err(pg)?;
            drop(client);
            if listing(&before).is_some() {
                self.inner.refreshed([before.product_id]).await;
            }
        }
        Ok(true)
    }

    async fn apply_matchmaker(&self, batch: MatchmakerBatch) -> Result<Vec<Applied>, StorageError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        self.fence(&tx, "matchmaker").await?;
        let position: i64 = tx
            .cq_one(
                "SELECT position FROM cursors WHERE name = 'matchmaker' FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if unbig(position) >= batch.cursor {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = batch
            .events
            .iter()
            .map(|(_, _, game_id, _, _)| game_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut games: HashMap<String, Option<Game>> = HashMap::new();
        let mut before: HashMap<String, Game> = HashMap::new();
        for row in tx
            .cq(
                "SELECT record FROM games WHERE game_id = ANY($1) ORDER BY game_id FOR UPDATE",
                &[&ids],
            )
            .await
            .map_err(pg)?
        {
            let game = decode(row.get(0))?;
            before.insert(game.game_id.clone(), game.clone());
            games.insert(game.game_id.clone(), Some(game));
        }
        let places: Vec<i64> = tx
            .cq(
                "SELECT nextval('lobby_places') FROM generate_series(1, $1::bigint)",
                &[&big(batch.events.len() as u64)],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut applied = Vec::with_capacity(batch.events.len());
        for (i, (_id, at_us, game_id, product_id, event)) in batch.events.into_iter().enumerate() {
            let place = unbig(places.get(i).copied().unwrap_or(0));
            let effect = match games.get_mut(&game_id) {
                Some(slot @ Some(_)) => {
                    match slot.as_mut().filter(|g| g.product_id == product_id) {
                        Some(game) => {
                            let effect = game.apply(&event, place, at_us);
                            if let Effect::Moved(_, None) = effect {
                                *slot = None;
                            }
                            effect
                        }
                        None => Effect::Ignored,
                    }
                }
                _ => Effect::Ignored,
            };
            applied.push(Applied {
                game_id,
                product_id,
                effect,
            });
        }
        let mut relisted: BTreeSet<String> = BTreeSet::new();
        let mut listed_now: HashMap<String, Vec<String>> = HashMap::new();
        let mut deleted = Vec::new();
        for (game_id, now) in &games {
            let Some(old) = before.get(game_id) else {
                continue;
            };
            match now {
                Some(game) if game == old => {}
                Some(game) => {
                    put(&tx, game).await?;
                    if listing(old).is_some() || listing(game).is_some() {
                        relisted.insert(game.product_id.clone());
                        if listing(old).is_none() && listing(game).is_some() {
                            listed_now
                                .entry(game.product_id.clone())
                                .or_default()
                                .push(game.game_id.clone());
                        }
                    }
                }
                None => {
                    deleted.push(game_id.clone());
                    if listing(old).is_some() {
                        relisted.insert(old.product_id.clone());
                    }
                }
            }
        }
        if !deleted.is_empty() {
            tx.cexec("DELETE FROM games WHERE game_id = ANY($1)", &[&deleted])
                .await
                .map_err(pg)?;
        }
        for (product, ids) in &listed_now {
            rate(&tx, product, ids).await?;
        }
        if !relisted.is_empty() {
            lobby_changed(&tx).await?;
        }
        tx.cexec(
            "UPDATE cursors SET position = $1 WHERE name = 'matchmaker'",
            &[&big(batch.cursor)],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        drop(client);
        self.inner.refreshed(relisted).await;
        Ok(applied)
    }

    async fn game_counts(&self) -> Result<Vec<(String, State, u64)>, StorageError> {
        let client = self.inner.client().await?;
        let rows = client
            .cq(
                "SELECT product_id, state, count(*) FROM games GROUP BY product_id, state",
                &[],
            )
            .await
            .map_err(pg);
        Ok(self
            .inner
            .watch(rows)?
            .iter()
            .filter_map(|r| {
                let code: i16 = r.get(1);
                let state = State::ALL
                    .into_iter()
                    .find(|s| i16::from(s.code()) == code)?;
                Some((r.get(0), state, unbig(r.get(2))))
            })
            .collect())
    }
}
