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
use varcade::storage::sled::SledStorage;

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
