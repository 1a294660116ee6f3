//! Store benchmarks through the library API (issue 4, part 2).
//!
//! `cargo bench --bench store [-- FILTER]`. Each benchmark measures for 3 s
//! with 20 samples. The 1,000,000-player board is populated once (bounded by
//! `VARCADE_BENCH_POPULATE_SECS`, default 240 s; the number of players can be
//! lowered with `VARCADE_BENCH_PLAYERS`) and reused by the board benchmarks.
//! Every database lives in a temporary directory under
//! `std::env::temp_dir()` that is removed at the end.

use std::cell::OnceCell;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use varcade::config::Config;
use varcade::events::consumer::Consumer;
use varcade::events::log::{self, LoggedEvent, StoredFrame};
use varcade::events::matchmaker::Matchmaker;
use varcade::game::{Game, State};
use varcade::stats::board::{Boards, Overlay};
use varcade::stats::consumer::Stats;
use varcade::store::Store;

const PRODUCT: &str = "exrps";
/// Events per consumer batch, as the server's consumer driver uses.
const BATCH: usize = varcade::events::consumer::BATCH;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "varcade-bench-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store in its own temporary directory (the store is dropped first).
struct BenchStore {
    store: Arc<Store>,
    _dir: TempDir,
}

impl BenchStore {
    fn new(name: &str) -> BenchStore {
        let dir = TempDir::new(name);
        let store = Store::open(&dir.0.join("db")).expect("open the store");
        BenchStore { store, _dir: dir }
    }
}

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn game(id: String, state: State, listing: Option<u64>) -> Game {
    let now = varcade::game::now_us();
    Game {
        game_id: id,
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

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn gameplay_event(rng: &mut Rng) -> String {
    format!(
        r#"{{"product_id":"exrps","game_id":"{}","type":"gameplay","event_name":"select_weapon","event_data":"{}","user_id":"{}"}}"#,
        new_id(),
        rng.below(3),
        rng.below(100_000)
    )
}

fn game_over_event(rng: &mut Rng, players: u64) -> String {
    let winner = rng.below(players);
    let loser = (winner + 1 + rng.below(players - 1)) % players;
    format!(
        r#"{{"product_id":"exrps","game_id":"{}","type":"game_over","winner_id":"{winner}","loser_id":"{loser}"}}"#,
        new_id()
    )
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

/// Game records: create, join, lobby page.
fn games(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("games");
    group.throughput(Throughput::Elements(1));

    let s = BenchStore::new("games");
    group.bench_function("insert_game", |b| {
        b.iter(|| s.store.insert_game(&game(new_id(), State::Created, None)))
    });
    // What create_game does per request when it is alone (no group commit).
    group.bench_function("insert_game_then_flush_alone", |b| {
        b.iter(|| {
            s.store
                .insert_game(&game(new_id(), State::Created, None))
                .unwrap();
            rt.block_on(s.store.flush()).unwrap();
        })
    });

    let listing = std::sync::atomic::AtomicU64::new(1);
    group.bench_function("reserve_seat_on_listed_game", |b| {
        b.iter_custom(|iters| {
            let ids: Vec<String> = (0..iters)
                .map(|_| {
                    let n = listing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let g = game(new_id(), State::CreatorJoined, Some(n));
                    s.store.insert_game(&g).unwrap();
                    g.game_id
                })
                .collect();
            let started = Instant::now();
            for id in &ids {
                let joined = s.store.reserve_seat(PRODUCT, id, "23").unwrap();
                black_box(joined.expect("a free seat"));
            }
            started.elapsed()
        })
    });

    // The lobby page the open_games route reads, with 1,000 listed games.
    let lobby = BenchStore::new("lobby");
    for n in 0..1000 {
        let g = game(new_id(), State::CreatorJoined, Some(n + 1));
        lobby.store.insert_game(&g).unwrap();
    }
    let mut rng = Rng(7);
    group.bench_function("open_games_page25_of_1000", |b| {
        b.iter(|| {
            let page = rng.below(40);
            black_box(lobby.store.open_games(PRODUCT, page, 25))
        })
    });
    // The first and the last page: what skipping the listings before a page costs.
    for page in [0, 39] {
        group.bench_function(format!("open_games_page{page}_of_40"), |b| {
            b.iter(|| black_box(lobby.store.open_games(PRODUCT, page, 25)))
        });
    }
    group.finish();
}

/// The event log: frames of 100 events.
fn event_log(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("log");
    let s = BenchStore::new("log");
    let mut rng = Rng(11);
    let frame: Vec<String> = (0..100).map(|_| gameplay_event(&mut rng)).collect();

    group.throughput(Throughput::Elements(100));
    group.bench_function("append_100_durable", |b| {
        b.iter(|| rt.block_on(s.store.append(frame.clone(), None)).unwrap())
    });

    // 16 frames in flight, as a pipelining WebSocket client has: they share
    // flushes (group commit).
    group.throughput(Throughput::Elements(1600));
    group.bench_function("append_100_durable_x16_in_flight", |b| {
        b.iter(|| {
            let pending: Vec<_> = (0..16)
                .map(|_| s.store.submit(frame.clone(), None).unwrap())
                .collect();
            rt.block_on(async {
                for p in pending {
                    p.await.unwrap().unwrap();
                }
            })
        })
    });

    // Store::append always flushes, so the no-flush variant is emulated: the
    // same batch the committer writes (frame + next id), applied to another
    // tree of the same database, without the fsync.
    group.throughput(Throughput::Elements(100));
    let tree = s.store.db.open_tree("bench_log").unwrap();
    let mut next_id = 1u64;
    group.bench_function("append_100_no_flush_emulated", |b| {
        b.iter(|| {
            let stored = StoredFrame {
                ts_ms: varcade::game::now_us() / 1000,
                events: frame.clone(),
            };
            let mut batch = sled::Batch::default();
            batch.insert(
                &log::frame_key(next_id),
                postcard::to_stdvec(&stored).unwrap(),
            );
            next_id += 100;
            batch.insert(log::NEXT_ID_KEY, &next_id.to_be_bytes());
            tree.apply_batch(batch).unwrap();
        })
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    while s.store.durable_id() < 100 * BATCH as u64 {
        rt.block_on(s.store.append(frame.clone(), None)).unwrap();
    }
    let last = s.store.durable_id();
    let mut after = 0u64;
    group.bench_function("read_512_events", |b| {
        b.iter(|| {
            let events = log::read(&s.store.log, after, BATCH).unwrap();
            after += BATCH as u64;
            if after + BATCH as u64 > last {
                after = 0;
            }
            black_box(events)
        })
    });
    group.finish();
}

/// The 1,000,000-player board, populated once.
struct Board {
    bench: BenchStore,
    players: u64,
}

/// Scores: `floor(1000 * u^3)` with u uniform, so low scores are common
/// (10% of players at 0, half below 125), like a "wins" board; user ids are
/// the decimal numbers 0..players.
fn populate(players: u64) -> Board {
    let bench = BenchStore::new("board");
    let limit = std::env::var("VARCADE_BENCH_POPULATE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    let deadline = Instant::now() + Duration::from_secs(limit);
    let started = Instant::now();
    let mut rng = Rng(3);
    let mut done = 0;
    while done < players && Instant::now() < deadline {
        let end = (done + 10_000).min(players);
        let mut overlay = Overlay::new(&bench.store);
        for user in done..end {
            let score = (1000.0 * rng.unit().powi(3)) as i64;
            overlay
                .set_score(PRODUCT, &user.to_string(), score)
                .unwrap();
        }
        overlay.commit(0).unwrap();
        done = end;
    }
    eprintln!(
        "board: {done} players populated in {:.1} s ({:.0} players/s)",
        started.elapsed().as_secs_f64(),
        done as f64 / started.elapsed().as_secs_f64()
    );
    Board {
        bench,
        players: done,
    }
}

fn board(c: &mut Criterion) {
    let players = std::env::var("VARCADE_BENCH_PLAYERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000u64);
    let cell: OnceCell<Board> = OnceCell::new();
    let get = || cell.get_or_init(|| populate(players));
    let mut group = c.benchmark_group("board_1m");
    group.throughput(Throughput::Elements(1));
    let mut rng = Rng(5);

    group.bench_function("top10", |b| {
        let board = get();
        let boards = Boards(&board.bench.store);
        b.iter(|| black_box(boards.window(PRODUCT, 0, 10).unwrap()))
    });
    group.bench_function("window_offset_500k", |b| {
        let board = get();
        let boards = Boards(&board.bench.store);
        b.iter(|| black_box(boards.window(PRODUCT, board.players / 2, 10).unwrap()))
    });
    group.bench_function("rank_random_player", |b| {
        let board = get();
        let boards = Boards(&board.bench.store);
        b.iter(|| {
            let user = rng.below(board.players).to_string();
            black_box(boards.rank(PRODUCT, &user).unwrap())
        })
    });
    // The most crowded bucket: score 0, user ids starting with "99".
    group.bench_function("rank_crowded_bucket", |b| {
        let board = get();
        let boards = Boards(&board.bench.store);
        let user = (0..board.players)
            .rev()
            .map(|u| u.to_string())
            .find(|u| boards.score(PRODUCT, u).unwrap() == Some(0))
            .expect("a player at 0");
        b.iter(|| black_box(boards.rank(PRODUCT, &user).unwrap()))
    });
    let mut cursor = 1u64;
    group.bench_function("set_score_one_then_commit", |b| {
        let board = get();
        b.iter(|| {
            let mut overlay = Overlay::new(&board.bench.store);
            let user = rng.below(board.players).to_string();
            let score = overlay.score(PRODUCT, &user).unwrap().unwrap_or(0) + 1;
            overlay.set_score(PRODUCT, &user, score).unwrap();
            cursor += 1;
            overlay.commit(cursor).unwrap();
        })
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("set_score_512_then_commit", |b| {
        let board = get();
        b.iter(|| {
            let mut overlay = Overlay::new(&board.bench.store);
            for _ in 0..BATCH {
                let user = rng.below(board.players).to_string();
                let score = overlay.score(PRODUCT, &user).unwrap().unwrap_or(0) + 1;
                overlay.set_score(PRODUCT, &user, score).unwrap();
            }
            cursor += 1;
            overlay.commit(cursor).unwrap();
        })
    });
    group.finish();
}

/// The consumers' `apply` on batches of 512 events.
fn consumers(c: &mut Criterion) {
    let mut group = c.benchmark_group("consumers");
    group.throughput(Throughput::Elements(BATCH as u64));

    let s = BenchStore::new("matchmaker");
    let mut matchmaker = Matchmaker::new(s.store.clone());
    let mut id = 0u64;
    group.bench_function("matchmaker_apply_512_state_change", |b| {
        b.iter_custom(|iters| {
            let mut batches = Vec::with_capacity(iters as usize);
            for _ in 0..iters {
                let batch: Vec<LoggedEvent> = (0..BATCH)
                    .map(|_| {
                        let g = game(new_id(), State::Created, None);
                        s.store.insert_game(&g).unwrap();
                        id += 1;
                        LoggedEvent {
                            id,
                            ts_ms: varcade::game::now_us() / 1000,
                            json: format!(
                                r#"{{"product_id":"exrps","game_id":"{}","type":"state_change","new_state":"creator_joined"}}"#,
                                g.game_id
                            ),
                        }
                    })
                    .collect();
                batches.push(batch);
            }
            let started = Instant::now();
            for batch in &batches {
                matchmaker.apply(batch).unwrap();
            }
            started.elapsed()
        })
    });

    let s = BenchStore::new("stats");
    let products = Config::default().games;
    let mut stats = Stats::new(s.store.clone(), &products);
    let mut rng = Rng(13);
    let mut id = 0u64;
    let mut batch_of_game_over = |rng: &mut Rng| -> Vec<LoggedEvent> {
        (0..BATCH)
            .map(|_| {
                id += 1;
                LoggedEvent {
                    id,
                    ts_ms: 0,
                    json: game_over_event(rng, 100_000),
                }
            })
            .collect()
    };
    // Every one of the 100,000 players has played before the measurement.
    let warm = Instant::now();
    for _ in 0..(100_000 / BATCH) {
        stats.apply(&batch_of_game_over(&mut rng)).unwrap();
    }
    eprintln!(
        "stats: {} game_over applied to warm up in {:.1} s",
        100_000 / BATCH * BATCH,
        warm.elapsed().as_secs_f64()
    );
    group.bench_function("stats_apply_512_game_over_100k_players", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<_> = (0..iters).map(|_| batch_of_game_over(&mut rng)).collect();
            let started = Instant::now();
            for batch in &batches {
                stats.apply(batch).unwrap();
            }
            started.elapsed()
        })
    });
    // The same events in batches 8 times larger (fewer, larger sled batches).
    group.throughput(Throughput::Elements(8 * BATCH as u64));
    group.bench_function("stats_apply_4096_game_over_100k_players", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Vec<LoggedEvent>> = (0..iters)
                .map(|_| (0..8).flat_map(|_| batch_of_game_over(&mut rng)).collect())
                .collect();
            let started = Instant::now();
            for batch in &batches {
                stats.apply(batch).unwrap();
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = games, event_log, board, consumers
}
criterion_main!(benches);
