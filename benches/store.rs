//! Storage benchmarks through the ports (`varcade::app::ports`), on the sled
//! backend (`varcade::storage::sled::SledStorage`).
//!
//! This bench exists to measure what each use case pays the storage for one
//! operation, without HTTP, JSON or a second process in the way, so that a
//! change to the writer, the layout or the views shows up here first and
//! the load generator's figures can be explained from these.
//!
//! ```text
//! cargo bench --bench store                 # every benchmark, ~2 min (+30 s to write the board once)
//! cargo bench --bench store -- board_1m     # some, by criterion's name filter
//! ```
//!
//! Each benchmark measures for 3 s with 20 samples after 1 s of warm-up.
//! Async operations run on a tokio multi-thread runtime (2 workers, as the
//! machine has 2 cores) through `iter_custom` + `block_on`, so the time
//! includes what a request handler waits for: the writer's queue, the
//! group's flush, and for reads of sled the hop to the blocking pool.
//!
//! Every group has its own database (so no benchmark's data changes
//! another's), in a temporary directory removed when the group ends, except
//! the 1,000,000-player board: it is written once, through
//! `Boards::apply_stats` in batches of 10,000 `game_over`, into
//! `<target>/tmp/varcade-bench-board-v1-<players>` and reused by later runs
//! (a run that stopped early resumes from the stored stats cursor). Delete
//! that directory to rebuild it. `VARCADE_BENCH_PLAYERS` lowers the number of
//! players, `VARCADE_BENCH_POPULATE_SECS` (default 600) bounds the time one
//! run spends populating.

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tokio::runtime::Runtime;
use varcade::app::consumer::BATCH;
use varcade::app::ports::{
    Boards, ConsumerName, EventLog, GameStore, MatchmakerBatch, NewFrame, ScoringRules,
    SeatOutcome, StatsBatch, StatsChange, Storage,
};
use varcade::domain::game::{Game, GameEvent, State};
use varcade::domain::scoring::{Scoring, Wins};
use varcade::domain::stats_rules::{self, StatsHandler};
use varcade::infra::clock::now_us;
use varcade::storage::sled::SledStorage;

const PRODUCT: &str = "exrps";
/// Game_over events per batch while populating the big board.
const POPULATE_BATCH: u64 = 10_000;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// splitmix64: spreads consecutive numbers over the whole range.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

/// A fresh database in a temporary directory (removed when it is closed).
fn temporary() -> Arc<SledStorage> {
    SledStorage::temporary().expect("open a temporary database")
}

/// Closes a database: flushes, stops the writer, and (for a temporary one)
/// lets sled remove its directory.
fn close(rt: &Runtime, storage: Arc<SledStorage>) {
    rt.block_on(storage.close()).expect("close the database");
    drop(storage);
}

/// Times `iters` sequential runs of `op(i)` on the runtime.
fn timed<F, Fut>(rt: &Runtime, iters: u64, mut op: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    rt.block_on(async {
        let started = Instant::now();
        for i in 0..iters {
            op(i).await;
        }
        started.elapsed()
    })
}

/// Times `iters` runs of `op(i)` spread over `callers` concurrent tasks
/// (caller `c` runs `i = c, c + callers, …`): the wall time until all are done.
fn concurrent<F, Fut>(rt: &Runtime, iters: u64, callers: u64, op: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    rt.block_on(async {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..callers.min(iters) {
            let op = op.clone();
            tasks.spawn(async move {
                let mut i = c;
                while i < iters {
                    op(i).await;
                    i += callers;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a caller task");
        }
        started.elapsed()
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A game as create_game stores it (`listing` set: as if listed by an event).
fn game(state: State, listing: Option<u64>) -> Game {
    let now = now_us();
    Game {
        game_id: new_id(),
        product_id: PRODUCT.into(),
        game_server_url: "http://127.0.0.1:8080".into(),
        creator_id: "17".into(),
        creator_name: "alice".into(),
        players: vec!["17".into()],
        settings: r#"{"num_players":2}"#.into(),
        num_players: 2,
        token: format!("tok-{}", uuid::Uuid::new_v4()),
        state,
        state_since_us: now,
        last_updated_us: now,
        listing,
        target_game_server: "127.0.0.1:8085".into(),
        curation_failures: 0,
    }
}

/// Stores `games` with 256 concurrent inserts (set-up, not measured).
fn insert_all(rt: &Runtime, storage: &Arc<SledStorage>, games: Vec<Game>) {
    rt.block_on(async {
        let mut games = games.into_iter();
        loop {
            let chunk: Vec<Game> = games.by_ref().take(256).collect();
            if chunk.is_empty() {
                break;
            }
            let mut tasks = tokio::task::JoinSet::new();
            for g in chunk {
                let storage = storage.clone();
                tasks.spawn(async move { storage.insert_game(g).await });
            }
            while let Some(done) = tasks.join_next().await {
                done.expect("insert task").expect("insert a game");
            }
        }
    })
}

/// The scoring rules the service builds for `exrps` (`leaderboard = "wins"`).
fn wins_rule() -> ScoringRules {
    let mut rules: BTreeMap<String, Box<dyn Scoring>> = BTreeMap::new();
    rules.insert(PRODUCT.into(), Box::new(Wins));
    Arc::new(rules)
}

/// Games: create, join, lobby page. Why: create_game and join_game are each
/// one durable write through the writer, and open_games is a read of its
/// published lobby; these are the floor of the lobby routes' latency.
fn games(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("games");
    group.throughput(Throughput::Elements(1));

    let storage = temporary();
    // One caller: every insert waits for its own flush.
    group.bench_function("insert_game_durable_1_caller", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |_| {
                let storage = storage.clone();
                async move {
                    storage
                        .insert_game(game(State::Created, None))
                        .await
                        .expect("insert_game")
                }
            })
        })
    });
    // 64 callers, as 64 HTTP connections: inserts that arrive while a flush
    // runs share the next one (group commit). The time is per insert.
    group.bench_function("insert_game_durable_64_callers", |b| {
        b.iter_custom(|iters| {
            let storage = storage.clone();
            concurrent(&rt, iters, 64, move |_| {
                let storage = storage.clone();
                async move {
                    storage
                        .insert_game(game(State::Created, None))
                        .await
                        .expect("insert_game")
                }
            })
        })
    });

    // The seat a join reserves, on a listed game of its own each time (the
    // games are inserted before the measurement).
    let listing = AtomicU64::new(1);
    group.bench_function("reserve_seat_1_caller", |b| {
        b.iter_custom(|iters| {
            let games: Vec<Game> = (0..iters)
                .map(|_| {
                    let n = listing.fetch_add(1, Ordering::Relaxed);
                    game(State::CreatorJoined, Some(n))
                })
                .collect();
            let ids: Vec<String> = games.iter().map(|g| g.game_id.clone()).collect();
            insert_all(&rt, &storage, games);
            timed(&rt, iters, |i| {
                let storage = storage.clone();
                let id = ids[i as usize].clone();
                async move {
                    let outcome = storage
                        .reserve_seat(PRODUCT, &id, "23", now_us())
                        .await
                        .expect("reserve_seat");
                    assert!(matches!(outcome, SeatOutcome::Reserved(_)), "{outcome:?}");
                }
            })
        })
    });
    close(&rt, storage);

    // The lobby page the open_games route reads, with 1,000 listed games:
    // a read of the view the writer published, no I/O.
    let lobby = temporary();
    insert_all(
        &rt,
        &lobby,
        (0..1000)
            .map(|n| game(State::CreatorJoined, Some(n + 1)))
            .collect(),
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&lobby.open_games(PRODUCT, 39, 25))
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(25),
        "1,000 games listed"
    );
    let mut rng = Rng(7);
    group.bench_function("open_games_page25_of_1000", |b| {
        b.iter(|| {
            let page = rng.below(40);
            black_box(lobby.open_games(PRODUCT, page, 25))
        })
    });
    // The first and the last page: what skipping the listings before a page costs.
    for page in [0, 39] {
        group.bench_function(format!("open_games_page{page}_of_40"), |b| {
            b.iter(|| black_box(lobby.open_games(PRODUCT, page, 25)))
        });
    }
    group.finish();
    close(&rt, lobby);
}

fn gameplay_event(rng: &mut Rng) -> String {
    format!(
        r#"{{"product_id":"exrps","game_id":"{}","type":"gameplay","event_name":"select_weapon","event_data":"{}","user_id":"{}"}}"#,
        new_id(),
        rng.below(3),
        rng.below(100_000)
    )
}

/// The event log: frames of 100 events. Why: every ingested frame is one
/// append that is acknowledged only once durable, and both consumers read
/// the log in batches of 512.
fn event_log(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("log");
    let log = temporary();
    let mut rng = Rng(11);
    let frame: Vec<String> = (0..100).map(|_| gameplay_event(&mut rng)).collect();
    let submit = |log: Arc<SledStorage>, events: Vec<String>| async move {
        log.submit(NewFrame {
            events,
            dedup: None,
        })
        .await
        .expect("submit")
    };

    group.throughput(Throughput::Elements(100));
    group.bench_function("append_100_durable", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |_| {
                let pending = submit(log.clone(), frame.clone());
                async move {
                    pending.await.wait().await.expect("append");
                }
            })
        })
    });

    // 16 frames in flight, as a pipelining WebSocket client has: they share
    // flushes (group commit).
    group.throughput(Throughput::Elements(1600));
    group.bench_function("append_100_durable_x16_in_flight", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, |_| {
                let log = log.clone();
                let frame = frame.clone();
                async move {
                    let mut pending = Vec::with_capacity(16);
                    for _ in 0..16 {
                        pending.push(submit(log.clone(), frame.clone()).await);
                    }
                    for p in pending {
                        p.wait().await.expect("append");
                    }
                }
            })
        })
    });

    // A consumer's read: 512 events (about 6 frames) after a cursor.
    group.throughput(Throughput::Elements(BATCH as u64));
    rt.block_on(async {
        while *log.durable().borrow() < 100 * BATCH as u64 {
            submit(log.clone(), frame.clone())
                .await
                .wait()
                .await
                .expect("append");
        }
    });
    let last = *log.durable().borrow();
    let mut after = 0u64;
    group.bench_function("read_512_events", |b| {
        b.iter_custom(|iters| {
            let froms: Vec<u64> = (0..iters)
                .map(|_| {
                    let from = after;
                    after += BATCH as u64;
                    if after + BATCH as u64 > last {
                        after = 0;
                    }
                    from
                })
                .collect();
            timed(&rt, iters, |i| {
                let log = log.clone();
                let from = froms[i as usize];
                async move {
                    let events = log.read(from, BATCH).await.expect("read");
                    assert_eq!(events.len(), BATCH);
                    black_box(events);
                }
            })
        })
    });
    group.finish();
    close(&rt, log);
}

/// The player id of index `k` on the big board.
fn player(k: u64) -> String {
    k.to_string()
}

/// Batch `i` of the big board: `POPULATE_BATCH` game_over whose losers are
/// players `i * POPULATE_BATCH ..` (so after every batch each player has
/// played) and whose winners are drawn with a heavy skew (index
/// `floor(players * u^3)`, spread over the ids by a hash): a few players win
/// thousands of games, most never win. The same `i` always gives the same
/// batch.
fn populate_batch(i: u64, players: u64) -> Vec<StatsChange> {
    let mut rng = Rng(mix(i) | 1);
    let losers = i * POPULATE_BATCH..((i + 1) * POPULATE_BATCH).min(players);
    losers
        .map(|loser| {
            let skewed = (players as f64 * rng.unit().powi(3)) as u64;
            let mut winner = mix(skewed) % players;
            if winner == loser {
                winner = (winner + 1) % players;
            }
            StatsChange::GameOver {
                product: PRODUCT.into(),
                winner: player(winner),
                loser: player(loser),
                season: None,
            }
        })
        .collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Makes sure the big board's directory holds every batch (resuming from
/// the stored stats cursor) and returns it with the number of players
/// every batch so far has covered. The database is closed on return.
fn populate(rt: &Runtime, players: u64) -> (PathBuf, u64) {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("varcade-bench-board-v1-{players}"));
    let batches = players.div_ceil(POPULATE_BATCH);
    let storage = match SledStorage::open(&dir, 4096) {
        Ok(storage) => storage,
        Err(e) => {
            eprintln!(
                "board: cannot reuse {} ({e}); writing it again",
                dir.display()
            );
            let _ = std::fs::remove_dir_all(&dir);
            SledStorage::open(&dir, 4096).expect("open the board directory")
        }
    };
    let limit = Duration::from_secs(env_u64("VARCADE_BENCH_POPULATE_SECS", 600));
    let started = Instant::now();
    let done = rt.block_on(async {
        let mut done = storage.cursor(ConsumerName::Stats).await.expect("cursor");
        let from = done;
        let scoring = wins_rule();
        while done < batches && started.elapsed() < limit {
            let changes = populate_batch(done, players);
            done += 1;
            storage
                .apply_stats(StatsBatch {
                    changes,
                    scoring: scoring.clone(),
                    cursor: done,
                })
                .await
                .expect("apply_stats");
        }
        if done > from {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "board: {} game_over applied in {secs:.1} s ({:.0}/s); {done} of {batches} batches in {}",
                (done - from) * POPULATE_BATCH,
                ((done - from) * POPULATE_BATCH) as f64 / secs,
                dir.display()
            );
        } else {
            eprintln!("board: reusing {}", dir.display());
        }
        done
    });
    close(rt, storage);
    (dir, (done * POPULATE_BATCH).min(players))
}

/// The sum of the sizes of the files under `dir` (bytes).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Copies the closed database directory `from` into a new temporary one.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("read the board directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// The board after populating, opened once for the read benchmarks.
struct Board {
    storage: Arc<SledStorage>,
    /// Players `0..players` are on the board.
    players: u64,
}

/// The 1,000,000-player board. Why: top_ten, the windows and a player's rank
/// are answered from the board order the writer keeps in memory (counts per
/// score and id bucket, then a walk of one bucket; a rank also reads the
/// player's record), and these show that they stay cheap at that size; the
/// leaderboard update shows what a stats batch costs on a board that size.
fn board(c: &mut Criterion) {
    let rt = runtime();
    let players = env_u64("VARCADE_BENCH_PLAYERS", 1_000_000).max(2);
    let populated: std::cell::OnceCell<(PathBuf, u64)> = std::cell::OnceCell::new();
    let get_dir = || populated.get_or_init(|| populate(&rt, players)).clone();
    let opened: std::cell::OnceCell<Board> = std::cell::OnceCell::new();
    let get = || {
        opened.get_or_init(|| {
            let (dir, players) = get_dir();
            let started = Instant::now();
            let storage = SledStorage::open(&dir, 4096).expect("open the board");
            eprintln!(
                "board: opened in {:.2} s, {:.0} MiB on disk",
                started.elapsed().as_secs_f64(),
                dir_bytes(&dir) as f64 / (1 << 20) as f64
            );
            Board { storage, players }
        })
    };
    let mut group = c.benchmark_group("board_1m");
    let mut rng = Rng(5);

    // A leaderboard update: what the stats consumer's batch costs on this
    // board (on a copy, so the reused board stays as populated). First, so
    // the copy is taken while the board is closed.
    let copied: std::cell::OnceCell<(PathBuf, Arc<SledStorage>, u64)> = std::cell::OnceCell::new();
    let scoring = wins_rule();
    let mut cursor = 0u64;
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("apply_stats_512_game_over", |b| {
        let (_, storage, players) = copied.get_or_init(|| {
            let (dir, players) = get_dir();
            let copy = std::env::temp_dir().join(format!("varcade-bench-board-copy-{}", new_id()));
            copy_dir(&dir, &copy);
            let storage = SledStorage::open(&copy, 4096).expect("open the copy");
            cursor = rt
                .block_on(storage.cursor(ConsumerName::Stats))
                .expect("cursor");
            (copy, storage, players)
        });
        b.iter_custom(|iters| {
            let batches: Vec<StatsBatch> = (0..iters)
                .map(|_| {
                    cursor += 1;
                    StatsBatch {
                        changes: (0..BATCH)
                            .map(|_| {
                                let winner = rng.below(*players);
                                let loser = (winner + 1 + rng.below(players - 1)) % players;
                                StatsChange::GameOver {
                                    product: PRODUCT.into(),
                                    winner: player(winner),
                                    loser: player(loser),
                                    season: None,
                                }
                            })
                            .collect(),
                        scoring: scoring.clone(),
                        cursor,
                    }
                })
                .collect();
            let mut batches = batches.into_iter();
            timed(&rt, iters, |_| {
                let batch = batches.next().expect("a batch per iteration");
                let storage = storage.clone();
                async move { storage.apply_stats(batch).await.expect("apply_stats") }
            })
        });
    });
    if let Some((copy, storage, _)) = copied.into_inner() {
        close(&rt, storage);
        let _ = std::fs::remove_dir_all(&copy);
    }

    group.throughput(Throughput::Elements(1));
    group.bench_function("top10", |b| {
        let board = get();
        b.iter_custom(|iters| {
            timed(&rt, iters, |_| async {
                let top = board
                    .storage
                    .window(PRODUCT, None, 0, 10)
                    .await
                    .expect("window");
                assert_eq!(top.len(), 10);
                black_box(top);
            })
        })
    });
    group.bench_function("window_offset_500k", |b| {
        let board = get();
        let offset = board.players / 2;
        b.iter_custom(|iters| {
            timed(&rt, iters, |_| async {
                let window = board
                    .storage
                    .window(PRODUCT, None, offset, 10)
                    .await
                    .expect("window");
                assert_eq!(window.len(), 10);
                black_box(window);
            })
        })
    });
    group.bench_function("rank_random_player", |b| {
        let board = get();
        b.iter_custom(|iters| {
            let users: Vec<String> = (0..iters)
                .map(|_| player(rng.below(board.players)))
                .collect();
            timed(&rt, iters, |i| {
                let user = &users[i as usize];
                async move {
                    let rank = board.storage.rank(PRODUCT, None, user).await.expect("rank");
                    black_box(rank.expect("a ranked player"));
                }
            })
        })
    });
    // The worst rank: the last player of the board, whose whole id bucket
    // at the lowest score is walked.
    let last: std::cell::OnceCell<String> = std::cell::OnceCell::new();
    group.bench_function("rank_last_player_crowded_bucket", |b| {
        let board = get();
        let last = last.get_or_init(|| {
            let last = rt
                .block_on(board.storage.window(PRODUCT, None, board.players - 1, 1))
                .expect("window")
                .pop()
                .expect("a last player");
            let (score, rank) = rt
                .block_on(board.storage.rank(PRODUCT, None, &last.user_id))
                .expect("rank")
                .expect("ranked");
            eprintln!(
                "board: last player {} (score {score}, rank {rank})",
                last.user_id
            );
            last.user_id
        });
        b.iter_custom(|iters| {
            timed(&rt, iters, |_| async {
                black_box(board.storage.rank(PRODUCT, None, last).await.expect("rank"));
            })
        })
    });
    group.finish();
    if let Some(board) = opened.into_inner() {
        close(&rt, board.storage);
    }
}

/// One game_over among `players` as the stats consumer hands it to the
/// backend for `exrps`: the score change and the `exrps` handler's counters.
fn game_over_changes(
    rng: &mut Rng,
    players: u64,
    handler: &dyn StatsHandler,
    counters: bool,
) -> Vec<StatsChange> {
    let winner = rng.below(players);
    let loser = (winner + 1 + rng.below(players - 1)) % players;
    let mut changes = vec![StatsChange::GameOver {
        product: PRODUCT.into(),
        winner: player(winner),
        loser: player(loser),
        season: None,
    }];
    if counters {
        let event = json!({"product_id": PRODUCT, "game_id": "g", "type": "game_over",
            "winner_id": player(winner), "loser_id": player(loser)});
        for (user, counter, delta) in handler.handle(&event).expect("a readable game_over") {
            changes.push(StatsChange::Count {
                product: PRODUCT.into(),
                user,
                counter,
                delta,
            });
        }
    }
    changes
}

/// The consumers' writes: a matchmaker batch and a stats batch of 512
/// events. Why: the consumers' throughput is bounded by these writes (each
/// is one atomic write with the cursor, through the writer).
fn consumers(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("consumers");
    group.throughput(Throughput::Elements(BATCH as u64));

    // 512 state_change, each for a different game: created -> creator_joined
    // (each game is listed). Set-up, not measured: the 512 games are
    // inserted before, and removed after (a game_removed batch), so the
    // lobby does not grow from one iteration to the next.
    let store = temporary();
    let mut event_id = 0u64;
    let mut batch_of = |ids: &[String], event: GameEvent| {
        let at_us = now_us();
        let events = ids
            .iter()
            .map(|id| {
                event_id += 1;
                (
                    event_id,
                    at_us,
                    id.clone(),
                    PRODUCT.to_string(),
                    event.clone(),
                )
            })
            .collect();
        MatchmakerBatch {
            events,
            cursor: event_id,
        }
    };
    group.bench_function("matchmaker_512_state_change", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let created: Vec<Game> = (0..BATCH).map(|_| game(State::Created, None)).collect();
                let ids: Vec<String> = created.iter().map(|g| g.game_id.clone()).collect();
                insert_all(&rt, &store, created);
                let batch = batch_of(&ids, GameEvent::Move(Some(State::CreatorJoined)));
                let storage = store.clone();
                let mut batch = Some(batch);
                total += timed(&rt, 1, |_| {
                    let storage = storage.clone();
                    let batch = batch.take().expect("one batch");
                    async move {
                        let applied = storage.apply_matchmaker(batch).await.expect("apply");
                        assert_eq!(applied.len(), BATCH);
                    }
                });
                let removed = batch_of(&ids, GameEvent::Remove);
                rt.block_on(store.apply_matchmaker(removed))
                    .expect("remove the games");
            }
            total
        })
    });
    close(&rt, store);

    // 512 game_over among 100,000 players who have all played before, as
    // the stats consumer sends them for exrps (score change + counters), and
    // the score changes alone.
    let stats = temporary();
    let scoring = wins_rule();
    let handler = stats_rules::REGISTRY
        .make("exrps")
        .expect("the exrps handler");
    let mut rng = Rng(13);
    let mut cursor = 0u64;
    let mut batch_of_game_over = |rng: &mut Rng, events: usize, counters: bool| {
        cursor += 1;
        StatsBatch {
            changes: (0..events)
                .flat_map(|_| game_over_changes(rng, 100_000, handler.as_ref(), counters))
                .collect(),
            scoring: scoring.clone(),
            cursor,
        }
    };
    // Every one of the 100,000 players has played before the measurement
    // (once, when the first stats benchmark runs).
    let warmed = std::cell::Cell::new(false);
    let warm_up =
        |rng: &mut Rng, batch_of_game_over: &mut dyn FnMut(&mut Rng, usize, bool) -> StatsBatch| {
            if warmed.replace(true) {
                return;
            }
            let warm = Instant::now();
            let warm_batches = 100_000 / BATCH;
            for _ in 0..warm_batches {
                let batch = batch_of_game_over(rng, BATCH, true);
                rt.block_on(stats.apply_stats(batch)).expect("warm up");
            }
            eprintln!(
                "stats: {} game_over applied to warm up in {:.1} s",
                warm_batches * BATCH,
                warm.elapsed().as_secs_f64()
            );
        };
    let mut bench_stats = |name: &str, events: usize, counters: bool| {
        group.throughput(Throughput::Elements(events as u64));
        group.bench_function(name, |b| {
            warm_up(&mut rng, &mut batch_of_game_over);
            b.iter_custom(|iters| {
                let batches: Vec<StatsBatch> = (0..iters)
                    .map(|_| batch_of_game_over(&mut rng, events, counters))
                    .collect();
                let mut batches = batches.into_iter();
                timed(&rt, iters, |_| {
                    let batch = batches.next().expect("a batch per iteration");
                    let stats = stats.clone();
                    async move { stats.apply_stats(batch).await.expect("apply_stats") }
                })
            })
        });
    };
    bench_stats("stats_512_game_over_100k_players", BATCH, true);
    bench_stats("stats_512_game_over_100k_players_scores_only", BATCH, false);
    // The same events in batches 8 times larger (fewer, larger sled batches).
    bench_stats("stats_4096_game_over_100k_players", 8 * BATCH, true);
    group.finish();
    close(&rt, stats);
}

criterion_group! {
    name = benches;
    config = config();
    targets = games, event_log, board, consumers
}
criterion_main!(benches);
