//! The stored data set of scenarios 4 and 10: `players` players on the
//! `exrps` board and `events` events in the log, written before the server
//! starts, through the library's storage ports (`SledStorage` and the
//! traits of `varcade::app::ports`), as the server itself would write them.
//!
//! It runs in a child process (this binary with `--populate DIR PLAYERS
//! EVENTS`, started by [`populate`]), so the sled lock is certainly
//! released when it exits. The child ([`child_main`]):
//!
//! 1. appends `events` random `game_over` events in frames of 100, 64
//!    frames in flight (`EventLog::submit`, then `PendingAppend::wait`);
//! 2. builds the board from `StatsChange::GameOver` changes under the
//!    `wins` rule (`Boards::apply_stats`), a player with `s` wins winning
//!    `s` games (see [`wins`] for the spread), in batches of 10,000 changes
//!    with cursors 1, 2, …; a player without a win is on the board because
//!    they lost a game (the loser enters with +0);
//! 3. moves the stats cursor to the last event with an empty stats batch,
//!    and the matchmaker's with an empty `MatchmakerBatch`, so the server
//!    starts with nothing to apply (the stored events stand for games
//!    already counted);
//! 4. `Storage::close`s the storage, which flushes everything.
//!
//! The board and the log are not each other's record (the board holds
//! about 7.5 game_overs a player, the log one event a player); only their
//! sizes matter to the scenarios.
//!
//! With `--storage postgres`, [`populate_pg`] writes the same board to a
//! fresh database with bulk SQL instead (7.5M game_overs through the
//! storage ports would take far too long there): see its doc.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use varcade::app::ports::{
    Boards, EventLog, GameStore, MatchmakerBatch, NewFrame, ScoringRules, StatsBatch, StatsChange,
    Storage, StorageError,
};
use varcade::domain::scoring::{Scoring, Wins};
use varcade::storage::postgres::PgStorage;
use varcade::storage::sled::SledStorage;

use crate::pg::Database;
use crate::workload::{Rng, game_over};
use crate::{Context, PRODUCT, Res};

/// Changes per stats batch (more when the log has fewer events than that
/// makes batches, so that every batch's cursor is an event id; with no
/// events at all the cursors run ahead of the empty log, and the server
/// would skip that many of the first events it is sent, which scenarios 4
/// and 10 never do).
const BATCH: u64 = 10_000;
/// Events per appended frame.
const FRAME: u64 = 100;
/// Appended frames waiting to be durable at once.
const IN_FLIGHT: usize = 64;
/// The writer's queue.
const MAX_PENDING: usize = 256;
/// The child's own limit; what is not written by then is left out.
const CHILD_LIMIT: Duration = Duration::from_secs(480);

/// Populates a data directory with `players` scores and `events` stored
/// (already consumed) events, in a child process (this binary with
/// `--populate`), so the sled lock is certainly released when it exits.
/// Returns how long it took and the child's one-line summary.
pub fn populate(dir: &Path, players: u64, events: u64) -> Res<(Duration, String)> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().ctx("current exe")?)
        .arg("--populate")
        .arg(dir)
        .arg(players.to_string())
        .arg(events.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ctx("start the populate process")?;
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait().ctx("wait")? {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
            }
            if !status.success() {
                return Err(format!("populate failed ({status}): {out}"));
            }
            return Ok((started.elapsed(), out.trim().to_string()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("populate took more than 600 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The child side of [`populate`] (the steps are in the module's doc).
/// Prints one summary line. At most 480 s.
pub fn child_main(dir: &Path, players: u64, events: u64) -> Res<()> {
    if players < 2 {
        return Err("at least 2 players (a game has a winner and a loser)".into());
    }
    let rt = tokio::runtime::Runtime::new().ctx("runtime")?;
    rt.block_on(async {
        let deadline = Instant::now() + CHILD_LIMIT;
        let storage = SledStorage::open(dir, MAX_PENDING).ctx("open the storage")?;

        let started = Instant::now();
        let (appended, last_id) = append(&storage, players, events, deadline).await?;
        let log_secs = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let board = build_board(&storage, players, last_id, deadline).await?;
        let board_secs = started.elapsed().as_secs_f64();

        // The stats cursor is at the last batch's; both go to the last event.
        if last_id > board.cursor {
            let batch = StatsBatch {
                changes: Vec::new(),
                scoring: scoring(),
                cursor: last_id,
            };
            storage.apply_stats(batch).await.ctx("stats cursor")?;
        }
        if last_id > 0 {
            let batch = MatchmakerBatch {
                events: Vec::new(),
                cursor: last_id,
            };
            storage
                .apply_matchmaker(batch)
                .await
                .ctx("matchmaker cursor")?;
        }
        storage.close().await.ctx("close")?;
        let size = dir_size(dir);
        println!(
            "{} players ({} game_overs) in {board_secs:.1} s, {appended} events in {log_secs:.1} s, {:.0} MiB on disk",
            board.players,
            board.game_overs,
            size as f64 / 1048576.0
        );
        Ok(())
    })
}

/// Bytes in the files under `dir` (the storage's own figure is refreshed
/// only once a second).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Step 1: appends `events` game_over events among `players`; returns how
/// many were appended and the last id.
async fn append(
    storage: &SledStorage,
    players: u64,
    events: u64,
    deadline: Instant,
) -> Res<(u64, u64)> {
    let mut rng = Rng::new(3);
    let (mut appended, mut last_id) = (0u64, 0u64);
    let mut pending = VecDeque::new();
    while appended < events && Instant::now() < deadline {
        let n = (events - appended).min(FRAME);
        let frame = NewFrame {
            events: (0..n).map(|_| game_over(&mut rng, players)).collect(),
            dedup: None,
        };
        pending.push_back(storage.submit(frame).await.ctx("submit")?);
        appended += n;
        if pending.len() >= IN_FLIGHT {
            let front = pending.pop_front().ok_or("queue")?;
            last_id = front.wait().await.ctx("append")?.last_id;
        }
    }
    for append in pending {
        last_id = append.wait().await.ctx("append")?.last_id;
    }
    Ok((appended, last_id))
}

/// A player's wins: 8·(X − 1) rounded down, X Pareto-distributed with
/// α = 2 (X ≥ 1), capped at 100,000. About one player in five has no win,
/// half have at most 3, nine in ten at most 17, one in a hundred more than
/// 70, and the best of a million about 8,000; the mean is about 7.5.
fn wins(rng: &mut Rng) -> u64 {
    let x = (1.0 - rng.unit()).powf(-0.5);
    (8.0 * (x - 1.0)).min(100_000.0) as u64
}

/// The product's scoring rule: a win is worth one point.
fn scoring() -> ScoringRules {
    let rule: Box<dyn Scoring> = Box::new(Wins);
    Arc::new(BTreeMap::from([(PRODUCT.to_string(), rule)]))
}

fn change(winner: u64, loser: u64) -> StatsChange {
    StatsChange::GameOver {
        product: PRODUCT.to_string(),
        winner: winner.to_string(),
        loser: loser.to_string(),
        season: None,
    }
}

/// What [`build_board`] wrote.
struct Board {
    /// Players whose games were all applied.
    players: u64,
    game_overs: u64,
    /// The stats cursor of the last batch.
    cursor: u64,
}

/// Step 2: the board. Player `p` wins [`wins`] games; the losers are first
/// the players without a win (each once, so each is on the board with 0),
/// then the next player (`p + 1`), who is in the same batch anyway. When
/// there are more players without a win than games (a small board), each
/// remaining one loses once to the best player.
async fn build_board(
    storage: &Arc<SledStorage>,
    players: u64,
    last_id: u64,
    deadline: Instant,
) -> Res<Board> {
    let mut rng = Rng::new(4);
    let wins: Vec<u64> = (0..players).map(|_| wins(&mut rng)).collect();
    let zeros: Vec<u64> = (0..players).filter(|&p| wins[p as usize] == 0).collect();
    let total: u64 = wins.iter().sum::<u64>().max(zeros.len() as u64);
    // No more batches than events, so every batch's cursor is an event id.
    let per_batch = match last_id {
        0 => BATCH,
        n => BATCH.max(total.div_ceil(n)),
    } as usize;
    let mut applier = Applier::new(storage.clone());
    let mut batch = Vec::with_capacity(per_batch);
    let mut board = Board {
        players: 0,
        game_overs: 0,
        cursor: 0,
    };
    let mut zeros_left = zeros.iter().copied();
    for p in 0..players {
        if Instant::now() >= deadline {
            break;
        }
        for _ in 0..wins[p as usize] {
            let loser = zeros_left.next().unwrap_or((p + 1) % players);
            batch.push(change(p, loser));
            if batch.len() == per_batch {
                applier.send(std::mem::take(&mut batch)).await?;
            }
        }
        board.players = p + 1;
    }
    if board.players == players {
        let best = (0..players).max_by_key(|&p| wins[p as usize]).unwrap_or(0);
        for zero in zeros_left {
            let winner = if zero == best {
                (best + 1) % players
            } else {
                best
            };
            batch.push(change(winner, zero));
        }
    }
    if !batch.is_empty() {
        applier.send(batch).await?;
    }
    applier.wait().await?;
    board.game_overs = applier.changes;
    board.cursor = applier.cursor;
    Ok(board)
}

/// Applies stats batches in cursor order (1, 2, …), one at a time, while
/// the caller builds the next.
struct Applier {
    storage: Arc<SledStorage>,
    scoring: ScoringRules,
    cursor: u64,
    changes: u64,
    in_flight: Option<JoinHandle<Result<(), StorageError>>>,
}

impl Applier {
    fn new(storage: Arc<SledStorage>) -> Applier {
        Applier {
            storage,
            scoring: scoring(),
            cursor: 0,
            changes: 0,
            in_flight: None,
        }
    }

    /// Waits for the batch in flight, then starts applying `changes`.
    async fn send(&mut self, changes: Vec<StatsChange>) -> Res<()> {
        self.wait().await?;
        self.cursor += 1;
        self.changes += changes.len() as u64;
        let batch = StatsBatch {
            changes,
            scoring: self.scoring.clone(),
            cursor: self.cursor,
        };
        let storage = self.storage.clone();
        self.in_flight = Some(tokio::spawn(
            async move { storage.apply_stats(batch).await },
        ));
        Ok(())
    }

    /// Waits for the batch in flight, if any.
    async fn wait(&mut self) -> Res<()> {
        if let Some(task) = self.in_flight.take() {
            task.await.ctx("stats task")?.ctx("apply_stats")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// Scores (and players) per `INSERT`.
const PG_CHUNK: usize = 250_000;
/// Frames per `INSERT` of the log.
const PG_FRAMES: u64 = 1000;
/// The whole PostgreSQL populate's limit.
const PG_LIMIT: Duration = Duration::from_secs(600);

/// Every player's wins and losses after the game_overs [`build_board`]
/// applies, in the same order and with the same winners and losers (player
/// `p` wins [`wins`] games; the losers are first the players without a
/// win, then `p + 1`; on a small board the remaining players without a
/// win each lose once to the best one), without a storage; and how many
/// game_overs that is.
fn board_counts(players: u64) -> (Vec<i64>, Vec<i64>, u64) {
    let mut rng = Rng::new(4);
    let wins: Vec<u64> = (0..players).map(|_| wins(&mut rng)).collect();
    let zeros: Vec<u64> = (0..players).filter(|&p| wins[p as usize] == 0).collect();
    let n = players as usize;
    let (mut won, mut lost, mut games) = (vec![0i64; n], vec![0i64; n], 0u64);
    let mut zeros_left = zeros.iter().copied();
    for p in 0..players {
        for _ in 0..wins[p as usize] {
            let loser = zeros_left.next().unwrap_or((p + 1) % players);
            won[p as usize] += 1;
            lost[loser as usize] += 1;
            games += 1;
        }
    }
    let best = (0..players).max_by_key(|&p| wins[p as usize]).unwrap_or(0);
    for zero in zeros_left {
        let winner = if zero == best {
            (best + 1) % players
        } else {
            best
        };
        won[winner as usize] += 1;
        lost[zero as usize] += 1;
        games += 1;
    }
    (won, lost, games)
}

/// The data set of scenarios 4, 10 and 16 on a fresh PostgreSQL database,
/// written with bulk SQL (the sled populate's 7.5M game_overs through the
/// storage ports would take far too long on PostgreSQL); 600 s at most.
/// Returns how long it took and a one-line summary.
///
/// 1. The schema, as the service creates it at its first start:
///    `PgStorage::open` (migrations under their advisory lock, recorded in
///    `varcade_migrations`), then `close`.
/// 2. The board [`build_board`] leaves on sled, computed in memory
///    ([`board_counts`], same seed, same winners and losers): player `p`
///    (user id `"p"`) has `won[p]` points under `wins`, so `scores` gets
///    one lifetime row (season `''`) per player, sent as one `bigint[]`
///    per 250,000 players (`INSERT … SELECT FROM unnest(…) WITH
///    ORDINALITY`); `score_buckets` is then counted from `scores` (per
///    score and bucket = the user id's first two characters, as the
///    service keeps it). `players` gets each player's `games`, `wins` and
///    `losses` counters as the `exrps` stats handler would have counted
///    those game_overs (the sled populate applies no counters; no scenario
///    reads them).
/// 3. The log: `events` game_over events in frames of 100, generated in
///    the database (`generate_series`, winners and losers by multiplicative
///    hashing of the event id rather than [`Rng`]: only the log's size
///    matters), `log_head.next_id` after the last, and both consumers'
///    `cursors` at the last event, so the server starts with nothing to
///    apply.
/// 4. `VACUUM (ANALYZE)` of the written tables and a `CHECKPOINT`, so the
///    measured server starts on the steady state (visibility map set,
///    planner statistics, no checkpoint of the bulk load during the loads),
///    as a long-running database would be.
pub async fn populate_pg(db: &Database, players: u64, events: u64) -> Res<(Duration, String)> {
    populate_pg_url(&db.url, players, events).await
}

/// [`populate_pg`] on the database at `url` (created by the caller; also
/// `loadgen --populate-pg URL PLAYERS EVENTS`, to look at the data set
/// and its queries by hand).
pub async fn populate_pg_url(url: &str, players: u64, events: u64) -> Res<(Duration, String)> {
    if players < 2 {
        return Err("at least 2 players (a game has a winner and a loser)".into());
    }
    let started = Instant::now();
    let summary = tokio::time::timeout(PG_LIMIT, write_pg(url, players, events))
        .await
        .map_err(|_| format!("populate took more than {} s", PG_LIMIT.as_secs()))??;
    Ok((started.elapsed(), summary))
}

async fn write_pg(url: &str, players: u64, events: u64) -> Res<String> {
    use varcade::app::ports::Storage as _;

    // 1. The schema.
    let started = Instant::now();
    let storage = PgStorage::open(url, 2, 16)
        .await
        .map_err(|e| format!("open the database: {e}"))?;
    storage.close().await.ctx("close the storage")?;
    drop(storage);
    let schema_secs = started.elapsed().as_secs_f64();

    let client = crate::pg::connect(url).await?;
    client
        .batch_execute(
            "SET synchronous_commit = off; SET maintenance_work_mem = '256MB'; \
             SET statement_timeout = '300s'",
        )
        .await
        .ctx("session settings")?;

    // 2. The board.
    let started = Instant::now();
    let (won, lost, game_overs) = board_counts(players);
    for (i, chunk) in won.chunks(PG_CHUNK).enumerate() {
        let offset = (i * PG_CHUNK) as i64;
        client
            .execute(
                "INSERT INTO scores (product_id, season, user_id, score) \
                 SELECT $1::text, '', (t.o - 1 + $3::bigint)::text, t.s \
                 FROM unnest($2::bigint[]) WITH ORDINALITY AS t(s, o)",
                &[&PRODUCT, &chunk, &offset],
            )
            .await
            .ctx("insert scores")?;
    }
    client
        .execute(
            "INSERT INTO score_buckets (product_id, season, score, bucket, n) \
             SELECT product_id, season, score, left(user_id, 2), count(*) FROM scores \
             GROUP BY product_id, season, score, left(user_id, 2)",
            &[],
        )
        .await
        .ctx("insert score_buckets")?;
    for (i, (w, l)) in won.chunks(PG_CHUNK).zip(lost.chunks(PG_CHUNK)).enumerate() {
        let offset = (i * PG_CHUNK) as i64;
        client
            .execute(
                "INSERT INTO players (product_id, user_id, counters) \
                 SELECT $1::text, (t.o - 1 + $4::bigint)::text, \
                 jsonb_build_object('games', t.w + t.l, 'wins', t.w, 'losses', t.l) \
                 FROM unnest($2::bigint[], $3::bigint[]) WITH ORDINALITY AS t(w, l, o)",
                &[&PRODUCT, &w, &l, &offset],
            )
            .await
            .ctx("insert players")?;
    }
    let board_secs = started.elapsed().as_secs_f64();

    // 3. The log.
    let started = Instant::now();
    let frames = events.div_ceil(FRAME);
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let event = format!(
        r#"{{"product_id":"{PRODUCT}","game_id":"g%s","type":"game_over","winner_id":"%s","loser_id":"%s"}}"#
    );
    let insert = format!(
        "INSERT INTO frames (first_id, last_id, ts_ms, events) \
         SELECT f.first, f.last, $3::bigint, \
           (SELECT '[' || string_agg(format('{event}', \
                (i * 2654435761) % 1000000000, \
                (i * 48271) % $4::bigint, \
                ((i * 48271) % $4::bigint + 1 + (i * 69621) % ($4::bigint - 1)) % $4::bigint), \
                ',' ORDER BY i) || ']' \
            FROM generate_series(f.first, f.last) AS i) \
         FROM (SELECT g * {FRAME} + 1 AS first, least(g * {FRAME} + {FRAME}, $2::bigint) AS last \
               FROM generate_series($1::bigint, $5::bigint) AS g) AS f"
    );
    let (events_i, players_i) = (events as i64, players as i64);
    let mut frame = 0;
    while frame < frames {
        let last = (frame + PG_FRAMES).min(frames) - 1;
        client
            .execute(
                &insert,
                &[
                    &(frame as i64),
                    &events_i,
                    &ts_ms,
                    &players_i,
                    &(last as i64),
                ],
            )
            .await
            .ctx("insert frames")?;
        frame = last + 1;
    }
    client
        .execute("UPDATE log_head SET next_id = $1", &[&(events_i + 1)])
        .await
        .ctx("log_head")?;
    client
        .execute(
            "UPDATE cursors SET position = $1 WHERE name IN ('matchmaker', 'stats')",
            &[&events_i],
        )
        .await
        .ctx("cursors")?;
    let log_secs = started.elapsed().as_secs_f64();

    // 4. Steady state.
    let started = Instant::now();
    for table in [
        "scores",
        "score_buckets",
        "players",
        "frames",
        "log_head",
        "cursors",
    ] {
        client
            .batch_execute(&format!("VACUUM (ANALYZE) {table}"))
            .await
            .ctx("vacuum")?;
    }
    client.batch_execute("CHECKPOINT").await.ctx("checkpoint")?;
    let vacuum_secs = started.elapsed().as_secs_f64();

    let check = client
        .query_one(
            "SELECT (SELECT count(*) FROM scores), \
             (SELECT coalesce(sum(n), 0)::bigint FROM score_buckets), \
             (SELECT count(*) FROM score_buckets), \
             (SELECT coalesce(max(last_id), 0) FROM frames), \
             pg_database_size(current_database())",
            &[],
        )
        .await
        .ctx("check")?;
    let (scores, counted, buckets, last_id, size): (i64, i64, i64, i64, i64) = (
        check.get(0),
        check.get(1),
        check.get(2),
        check.get(3),
        check.get(4),
    );
    if scores != players_i || counted != players_i || last_id != events_i {
        return Err(format!(
            "wrote {scores} scores ({counted} in buckets) and events up to {last_id}, \
             expected {players} and {events}"
        ));
    }
    Ok(format!(
        "{players} players ({game_overs} game_overs' worth, {buckets} score buckets) by SQL in {board_secs:.1} s, \
         {events} events ({frames} frames) by SQL in {log_secs:.1} s, schema {schema_secs:.1} s, \
         vacuum+checkpoint {vacuum_secs:.1} s, {:.0} MiB database",
        size as f64 / 1048576.0
    ))
}
