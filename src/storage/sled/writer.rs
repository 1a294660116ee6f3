//! The writer: the one thread that owns all mutable state of the sled
//! backend and is the only code that writes sled.
//!
//! It owns the games with their indexes, the log's next id and producers,
//! every cursor, and applies the stats batches. Each write is a [`Job`]; the
//! writer takes every job queued (a group), applies each to its in-memory
//! state and stages its sled writes, writes one batch per tree, flushes
//! once, then publishes the views (lobby, durable id) and only then answers
//! the jobs. So no reader sees, and no caller is told of, state that could
//! still be lost; boards are derived state that moves with each stats batch
//! (see `Writer::stats`). If a write or the flush fails, the writer
//! answers that group and every later job with `Unavailable`: nothing is
//! acknowledged after a failure, and what was acknowledged before is on disk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::backup;
use super::boards::{self, PlayerCache};
use super::games::{Games, cursor_key};
use super::log::{self, LogState};
use super::ranking::{RankChange, board_key};
use super::ratings::Ratings;
use super::views::Views;
use crate::app::ports::{
    Appended, Applied, ConsumerName, Imported, MatchmakerBatch, NewFrame, QuickRule, SeatOutcome,
    StatsBatch, StorageError,
};
use crate::domain::game::{CurationChange, Effect, Game, State};
use crate::infra::clock::now_us;
use crate::infra::metrics;

/// Most jobs served by one flush.
const MAX_GROUP: usize = 4096;
/// Under concurrent load (the last flush served several jobs) the writer
/// waits up to this long for as many jobs as the last flush served: far
/// fewer fsyncs for a bounded extra latency.
const LINGER: Duration = Duration::from_micros(700);
/// Most log frames one retention job drops.
const RETENTION_FRAMES: usize = 10_000;

/// Where a job's answer goes.
pub type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// A unit of work for the writer.
pub enum Job {
    InsertGame(Game, Reply<()>),
    ReserveSeat {
        product_id: String,
        game_id: String,
        user_id: String,
        now_us: u64,
        reply: Reply<SeatOutcome>,
    },
    QuickSeat {
        product_id: String,
        user_id: String,
        rule: QuickRule,
        now_us: u64,
        reply: Reply<Option<Box<Game>>>,
    },
    ReleaseSeat {
        game_id: String,
        user_id: String,
        now_us: u64,
        reply: Reply<bool>,
    },
    Expired {
        state: State,
        cutoff_us: u64,
        limit: usize,
        reply: Reply<Vec<Game>>,
    },
    Curate {
        game_id: String,
        state: State,
        since_us: u64,
        change: CurationChange,
        now_us: u64,
        reply: Reply<bool>,
    },
    GameCounts(Reply<Vec<(String, State, u64)>>),
    Matchmaker(MatchmakerBatch, Reply<Vec<Applied>>),
    Append(NewFrame, Instant, Reply<Appended>),
    Stats(StatsBatch, Reply<()>),
    DropBefore {
        upto: u64,
        before_ms: u64,
        reply: Reply<u64>,
    },
    /// Imported data for an empty database.
    Import(Box<Imported>, Reply<()>),
    /// Writes a copy of the whole database to the file, after the group's
    /// flush and before the next group; answers the records written.
    Backup(PathBuf, Reply<u64>),
    /// Flushes, answers, and stops the writer.
    Close(Reply<()>),
}

/// The sled trees the writer writes.
pub struct Trees {
    pub db: ::sled::Db,
    pub games: ::sled::Tree,
    pub log: ::sled::Tree,
    pub stats: ::sled::Tree,
}

/// The writer's state.
pub struct Writer {
    trees: Trees,
    games: Games,
    log: LogState,
    matchmaker_cursor: u64,
    stats_cursor: u64,
    players: PlayerCache,
    /// The listed games by creator score, for quick match.
    ratings: Ratings,
    views: std::sync::Arc<Views>,
    failure: Option<String>,
    /// When the size on disk was last measured.
    sized: Option<Instant>,
}

/// An answer held until the group's flush: sent as is if the flush
/// succeeds, replaced by the failure otherwise.
type Held = Box<dyn FnOnce(Option<&StorageError>) + Send>;

fn hold<T: Send + 'static>(reply: Reply<T>, result: Result<T, StorageError>) -> Held {
    Box::new(move |failure| {
        let _ = reply.send(match failure {
            Some(e) => Err(e.clone()),
            None => result,
        });
    })
}

/// One group's staged writes and held answers.
#[derive(Default)]
struct Group {
    games: ::sled::Batch,
    games_dirty: bool,
    log: ::sled::Batch,
    log_dirty: bool,
    ranks: Vec<RankChange>,
    answers: Vec<Held>,
    appends: Vec<Instant>,
    /// Backups to write once the group is durable.
    backups: Vec<(PathBuf, Reply<u64>)>,
    close: bool,
    /// A write failed while staging: the group is not committed.
    fatal: Option<StorageError>,
}

fn db(e: ::sled::Error) -> StorageError {
    StorageError::Unavailable(e.to_string())
}

impl Writer {
    /// A writer over `trees`, with the state loaded at open.
    pub fn new(
        trees: Trees,
        games: Games,
        log: LogState,
        cursors: (u64, u64),
        views: std::sync::Arc<Views>,
    ) -> Writer {
        Writer {
            trees,
            games,
            log,
            matchmaker_cursor: cursors.0,
            stats_cursor: cursors.1,
            players: PlayerCache::default(),
            ratings: Ratings::default(),
            views,
            failure: None,
            sized: None,
        }
    }

    /// Runs the writer on its own thread until a `Close` job or until every
    /// sender is gone.
    pub fn spawn(
        mut self,
        jobs: flume::Receiver<Job>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("varcade-writer".into())
            .spawn(move || {
                self.publish(Vec::new());
                let mut last_group = 0;
                while let Ok(first) = jobs.recv() {
                    let mut group = vec![first];
                    group.extend(jobs.try_iter().take(MAX_GROUP - 1));
                    if last_group > 1 {
                        let deadline = Instant::now() + LINGER;
                        while group.len() < last_group.min(MAX_GROUP) {
                            match jobs.recv_deadline(deadline) {
                                Ok(job) => group.push(job),
                                Err(_) => break,
                            }
                        }
                    }
                    last_group = group.len();
                    if self.run(group) {
                        break;
                    }
                }
                if self.failure.is_none()
                    && let Err(e) = self.trees.db.flush()
                {
                    tracing::error!(error = %e, "final flush failed");
                }
            })
    }

    /// Applies, commits and answers one group; `true` when asked to stop.
    fn run(&mut self, jobs: Vec<Job>) -> bool {
        let mut group = Group::default();
        for job in jobs {
            self.stage(job, &mut group);
        }
        let failure = match (&self.failure, group.fatal.take()) {
            (Some(why), _) => Some(StorageError::Unavailable(why.clone())),
            (None, Some(e)) => Some(e),
            (None, None) => self.commit(&mut group).err(),
        };
        match &failure {
            None => {
                self.publish(std::mem::take(&mut group.ranks));
                for received in &group.appends {
                    metrics::ack_latency(received.elapsed());
                }
            }
            Some(e) => {
                let why = e.to_string();
                if self.failure.is_none() {
                    tracing::error!(error = %why, "a commit failed; no further writes are acknowledged");
                    self.views.fail(why.clone());
                    self.failure = Some(why);
                }
            }
        }
        for answer in group.answers {
            answer(failure.as_ref());
        }
        for (path, reply) in group.backups {
            let result = match &failure {
                Some(e) => Err(e.clone()),
                None => self.backup(&path),
            };
            let _ = reply.send(result);
        }
        group.close
    }

    /// Writes the group's batches and flushes.
    fn commit(&mut self, group: &mut Group) -> Result<(), StorageError> {
        if group.games_dirty {
            let batch = std::mem::take(&mut group.games);
            self.trees.games.apply_batch(batch).map_err(db)?;
        }
        if group.log_dirty {
            let batch = std::mem::take(&mut group.log);
            self.trees.log.apply_batch(batch).map_err(db)?;
        }
        self.flush()
    }

    fn flush(&self) -> Result<(), StorageError> {
        fail::fail_point!("writer::flush", |_| Err(StorageError::Unavailable(
            "injected flush failure".into()
        )));
        let started = Instant::now();
        self.trees.db.flush().map_err(db)?;
        metrics::flush_latency(started.elapsed());
        Ok(())
    }

    /// Publishes the views after a successful flush (and, once a second,
    /// the size on disk, so readers never touch the file system).
    fn publish(&mut self, ranks: Vec<RankChange>) {
        self.views.lobby().publish_lobby(self.games.take_dirty());
        if let Err(e) = self.sync_ratings() {
            tracing::warn!(error = %e, "quick match's rating order could not be updated");
        }
        self.views.publish_ranks(&ranks);
        self.views.publish_durable(self.log.last_id());
        if self
            .sized
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.sized = Some(Instant::now());
            self.views
                .publish_size(self.trees.db.size_on_disk().unwrap_or(0));
        }
    }

    /// Applies one job to the in-memory state and stages its writes.
    fn stage(&mut self, job: Job, group: &mut Group) {
        if let Some(why) = &self.failure {
            if matches!(job, Job::Close(_)) {
                group.close = true;
            }
            job.refuse(StorageError::Unavailable(why.clone()));
            return;
        }
        let answer = match job {
            Job::InsertGame(game, reply) => {
                let result = self.games.put(&mut group.games, game);
                group.games_dirty = true;
                hold(reply, result)
            }
            Job::ReserveSeat {
                product_id,
                game_id,
                user_id,
                now_us,
                reply,
            } => {
                let result = self.reserve(group, &product_id, &game_id, &user_id, now_us);
                hold(reply, result)
            }
            Job::QuickSeat {
                product_id,
                user_id,
                rule,
                now_us,
                reply,
            } => {
                let result = self.quick_seat(group, &product_id, &user_id, rule, now_us);
                hold(reply, result)
            }
            Job::ReleaseSeat {
                game_id,
                user_id,
                now_us,
                reply,
            } => {
                let mut game = self.games.get(&game_id).cloned();
                let result = match game.take() {
                    Some(mut game) => {
                        if game.leave(&user_id, now_us) {
                            group.games_dirty = true;
                            self.games.put(&mut group.games, game).map(|()| true)
                        } else {
                            Ok(false)
                        }
                    }
                    None => Ok(false),
                };
                hold(reply, result)
            }
            Job::Expired {
                state,
                cutoff_us,
                limit,
                reply,
            } => hold(reply, Ok(self.games.expired(state, cutoff_us, limit))),
            Job::Curate {
                game_id,
                state,
                since_us,
                change,
                now_us,
                reply,
            } => {
                let result = match self.games.get(&game_id).cloned() {
                    Some(mut game) if game.state == state && game.state_since_us == since_us => {
                        group.games_dirty = true;
                        let place = self.games.take_place();
                        if game.curate(&change, place, now_us) {
                            self.games.put(&mut group.games, game).map(|()| true)
                        } else {
                            self.games.delete(&mut group.games, &game_id);
                            Ok(true)
                        }
                    }
                    _ => Ok(false),
                };
                hold(reply, result)
            }
            Job::GameCounts(reply) => {
                let mut counts = std::collections::BTreeMap::new();
                for game in self.games.iter() {
                    *counts
                        .entry((game.product_id.clone(), game.state))
                        .or_insert(0u64) += 1;
                }
                let counts = counts.into_iter().map(|((p, s), n)| (p, s, n)).collect();
                hold(reply, Ok(counts))
            }
            Job::Matchmaker(batch, reply) => {
                let result = self.matchmaker(group, batch);
                hold(reply, result)
            }
            Job::Append(frame, received, reply) => {
                let ts_ms = crate::storage::append_ms();
                let result = self
                    .log
                    .stage(&self.trees.log, &mut group.log, frame, ts_ms);
                if matches!(result, Ok(Appended { count: 1.., .. })) {
                    group.log_dirty = true;
                }
                group.appends.push(received);
                hold(reply, result)
            }
            Job::Stats(batch, reply) => {
                let result = self.stats(group, batch);
                if let Err(e @ StorageError::Unavailable(_)) = &result {
                    group.fatal.get_or_insert(e.clone());
                }
                hold(reply, result)
            }
            Job::DropBefore {
                upto,
                before_ms,
                reply,
            } => {
                let result = log::drop_before(
                    &self.trees.log,
                    &mut group.log,
                    upto,
                    before_ms,
                    RETENTION_FRAMES,
                );
                if matches!(result, Ok(1..)) {
                    group.log_dirty = true;
                }
                hold(reply, result)
            }
            Job::Import(data, reply) => {
                let result = self.import(group, *data);
                if let Err(e @ StorageError::Unavailable(_)) = &result {
                    group.fatal.get_or_insert(e.clone());
                }
                hold(reply, result)
            }
            Job::Backup(path, reply) => {
                group.backups.push((path, reply));
                return;
            }
            Job::Close(reply) => {
                group.close = true;
                hold(reply, Ok(()))
            }
        };
        group.answers.push(answer);
    }

    fn reserve(
        &mut self,
        group: &mut Group,
        product_id: &str,
        game_id: &str,
        user_id: &str,
        now_us: u64,
    ) -> Result<SeatOutcome, StorageError> {
        let Some(mut game) = self
            .games
            .get(game_id)
            .filter(|g| g.product_id == product_id)
            .cloned()
        else {
            return Ok(SeatOutcome::NotFound);
        };
        if let Err(refusal) = game.join(user_id, now_us) {
            return Ok(SeatOutcome::Refused(refusal));
        }
        group.games_dirty = true;
        self.games.put(&mut group.games, game.clone())?;
        Ok(SeatOutcome::Reserved(Box::new(game)))
    }

    /// Brings the rating order up to date with the lobby's listing changes.
    fn sync_ratings(&mut self) -> Result<(), StorageError> {
        let changes = self.games.take_listing_changes();
        let (players, tree) = (&self.players, &self.trees.stats);
        let ranking = self
            .views
            .ranking()
            .read()
            .unwrap_or_else(|p| p.into_inner());
        self.ratings.apply(changes, |product, creator| {
            players.current_score(tree, &ranking, product, creator)
        })
    }

    /// Brings quick match's rating order in step with a stats batch: the
    /// creators whose score on their product's current board changed, and
    /// every creator of a product whose current season the batch changed.
    fn rescore_creators(&mut self, ranks: &[RankChange]) -> Result<(), StorageError> {
        let ranking = self
            .views
            .ranking()
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for (board, user, _, score) in ranks {
            let product = board.split('\0').next().unwrap_or(board);
            if *board == board_key(product, ranking.current_season(product)) {
                self.ratings.rescore(product, user, *score);
            }
        }
        let (players, tree) = (&self.players, &self.trees.stats);
        for product in self.ratings.products() {
            let current = ranking.current_season(&product).map(str::to_string);
            if self.ratings.season(&product) != current.as_deref() {
                self.ratings.set_season(&product, current);
                self.ratings.rescore_all(&product, |creator| {
                    players.current_score(tree, &ranking, &product, creator)
                })?;
            }
        }
        Ok(())
    }

    /// Chooses a game by `rule` and reserves its seat for `user_id`.
    fn quick_seat(
        &mut self,
        group: &mut Group,
        product_id: &str,
        user_id: &str,
        rule: QuickRule,
        now_us: u64,
    ) -> Result<Option<Box<Game>>, StorageError> {
        self.sync_ratings()?;
        let chosen = match rule {
            QuickRule::Oldest => self.games.oldest_listed_without(product_id, user_id),
            QuickRule::Closest { initial, max_gap } => {
                let ranking = self
                    .views
                    .ranking()
                    .read()
                    .unwrap_or_else(|p| p.into_inner());
                let own = self
                    .players
                    .current_score(&self.trees.stats, &ranking, product_id, user_id)?
                    .unwrap_or(initial);
                drop(ranking);
                let games = &self.games;
                self.ratings
                    .closest(product_id, own, max_gap, initial, |id| {
                        games.has_seat_for(id, user_id)
                    })
            }
        };
        let Some(game_id) = chosen else {
            return Ok(None);
        };
        match self.reserve(group, product_id, &game_id, user_id, now_us)? {
            SeatOutcome::Reserved(game) => Ok(Some(game)),
            SeatOutcome::NotFound | SeatOutcome::Refused(_) => Ok(None),
        }
    }

    /// Applies a matchmaker batch: each touched game is written once, with
    /// the cursor, in the group's `games` batch.
    fn matchmaker(
        &mut self,
        group: &mut Group,
        batch: MatchmakerBatch,
    ) -> Result<Vec<Applied>, StorageError> {
        if batch.cursor <= self.matchmaker_cursor {
            return Ok(Vec::new());
        }
        let mut touched: std::collections::HashMap<String, Option<Game>> =
            std::collections::HashMap::new();
        let mut applied = Vec::new();
        for (_id, at_us, game_id, product_id, event) in batch.events {
            let current = match touched.get(&game_id) {
                Some(game) => game.clone(),
                None => self.games.get(&game_id).cloned(),
            };
            let effect = match current.filter(|g| g.product_id == product_id) {
                Some(mut game) => {
                    let place = self.games.take_place();
                    let effect = game.apply(&event, place, at_us);
                    match effect {
                        Effect::Ignored => {}
                        Effect::Moved(_, None) => {
                            touched.insert(game_id.clone(), None);
                        }
                        _ => {
                            touched.insert(game_id.clone(), Some(game));
                        }
                    }
                    effect
                }
                None => Effect::Ignored,
            };
            applied.push(Applied {
                game_id,
                product_id,
                effect,
            });
        }
        for (game_id, now) in touched {
            match now {
                Some(game) => self.games.put(&mut group.games, game)?,
                None => self.games.delete(&mut group.games, &game_id),
            }
        }
        group.games.insert(
            cursor_key(ConsumerName::Matchmaker.as_str()),
            &batch.cursor.to_be_bytes(),
        );
        group.games_dirty = true;
        self.matchmaker_cursor = batch.cursor;
        Ok(applied)
    }

    /// Applies a stats batch (its own atomic batch on the `stats` tree).
    /// The board order is updated under its write lock held across the
    /// batch, not after the group's flush: the player records are readable
    /// from the batch on, and a reader that has seen a player's new score
    /// or counters then finds the board that goes with them (a rank waits
    /// for the lock). Both are functions of durable events only, so a crash
    /// before the flush re-derives exactly the same state.
    fn stats(&mut self, _group: &mut Group, batch: StatsBatch) -> Result<(), StorageError> {
        if batch.cursor <= self.stats_cursor {
            return Ok(());
        }
        fail::fail_point!("writer::stats", |_| Err(StorageError::Unavailable(
            "injected stats write failure".into()
        )));
        let cursor = batch.cursor;
        let mut order = self
            .views
            .ranking()
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let applied = boards::apply(&self.trees.stats, &mut self.players, &order, batch)?;
        order.apply(&applied.ranks);
        for (product, season) in applied.added {
            order.add_season(&product, season);
        }
        for (product, season) in &applied.dropped {
            order.drop_season(product, season);
        }
        drop(order);
        self.sync_ratings()?;
        self.rescore_creators(&applied.ranks)?;
        self.stats_cursor = cursor;
        Ok(())
    }
}

impl Writer {
    /// Writes every tree to `path`: nothing changes meanwhile, so the copy
    /// is one moment of the whole database.
    fn backup(&self, path: &std::path::Path) -> Result<u64, StorageError> {
        let started = Instant::now();
        let failed = |e: String| StorageError::Failed(format!("backup: {e}"));
        let file = std::fs::File::create(path).map_err(|e| failed(e.to_string()))?;
        let trailer = backup::write_all(&self.trees.db, file).map_err(|e| failed(e.to_string()))?;
        tracing::info!(
            records = trailer.records,
            took_ms = started.elapsed().as_millis() as u64,
            "backup written; writes waited meanwhile"
        );
        metrics::backup_pause(started.elapsed());
        Ok(trailer.records)
    }

    /// Stages imported data: games with their indexes, the events with
    /// fresh ids, both cursors, and the player records (their own batch).
    fn import(&mut self, group: &mut Group, data: Imported) -> Result<(), StorageError> {
        if self.log.last_id() != 0 || self.games.iter().next().is_some() {
            return Err(StorageError::Failed(
                "the database is not empty; an import needs an empty one".into(),
            ));
        }
        for game in data.games {
            self.games.put(&mut group.games, game)?;
        }
        let ts_ms = now_us() / 1000;
        for json in data.events {
            let frame = NewFrame {
                events: vec![json],
                dedup: None,
            };
            self.log
                .stage(&self.trees.log, &mut group.log, frame, ts_ms)?;
        }
        group.games.insert(
            cursor_key(ConsumerName::Matchmaker.as_str()),
            &data.matchmaker_cursor.to_be_bytes(),
        );
        self.matchmaker_cursor = data.matchmaker_cursor;
        let changes = boards::import(&self.trees.stats, data.players, data.stats_cursor)?;
        group.ranks.extend(changes);
        self.stats_cursor = data.stats_cursor;
        group.games_dirty = true;
        group.log_dirty = true;
        Ok(())
    }
}

impl Job {
    /// Answers the job with `error` without doing it.
    pub fn refuse(self, error: StorageError) {
        match self {
            Job::InsertGame(_, reply) => drop(reply.send(Err(error))),
            Job::ReserveSeat { reply, .. } => drop(reply.send(Err(error))),
            Job::QuickSeat { reply, .. } => drop(reply.send(Err(error))),
            Job::ReleaseSeat { reply, .. } => drop(reply.send(Err(error))),
            Job::Expired { reply, .. } => drop(reply.send(Err(error))),
            Job::Curate { reply, .. } => drop(reply.send(Err(error))),
            Job::GameCounts(reply) => drop(reply.send(Err(error))),
            Job::Matchmaker(_, reply) => drop(reply.send(Err(error))),
            Job::Append(_, _, reply) => drop(reply.send(Err(error))),
            Job::Stats(_, reply) => drop(reply.send(Err(error))),
            Job::DropBefore { reply, .. } => drop(reply.send(Err(error))),
            Job::Import(_, reply) => drop(reply.send(Err(error))),
            Job::Backup(_, reply) => drop(reply.send(Err(error))),
            Job::Close(reply) => drop(reply.send(Err(error))),
        }
    }
}
