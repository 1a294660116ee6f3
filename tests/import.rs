//! `varcade import-redis` (API.md "Import from the original (migration)")
//! against the real binary and a real `redis-server` holding data laid out
//! exactly as the original Python matchmaker and stats tracker wrote it.
//! After each import the target is served and checked through the public
//! routes only.
//!
//! Interrupted imports need a fault-injection build and are tested elsewhere.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{FakeGameServer, Options, Server, TempDir, assert_error, wait_until};
use serde_json::{Value, json};

/// Writes one variant of bad data into the original's Redis.
type Seed<'a> = Box<dyn Fn(&Redis) + 'a>;

// ---------------------------------------------------------------------------
// A private redis-server per test
// ---------------------------------------------------------------------------

/// The original's Redis for one test (see `common::redis_server`).
struct Redis {
    _server: RedisServer,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let server = RedisServer::start();
        let port = server.port;
        Redis {
            _server: server,
            port,
        }
    }

    /// The URL given to `--from`.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn db(&self, db: u8) -> Db {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/{db}", self.port)).unwrap();
        Db(client.get_connection().unwrap())
    }

    fn flush_all(&self) {
        self.db(0).cmd(&["FLUSHALL"]);
    }
}

/// One connection to one Redis database.
struct Db(redis::Connection);

impl Db {
    fn cmd(&mut self, args: &[&str]) {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.exec(&mut self.0)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"));
    }

    /// `HSET __games:<product> <id> <json>` as the original's `GameDao`.
    fn put_game(&mut self, game: &Value) {
        let product = game["product_id"].as_str().unwrap();
        let id = game["game_id"].as_str().unwrap();
        self.cmd(&["HSET", &format!("__games:{product}"), id, &game.to_string()]);
    }

    /// `ZADD __<set>_games:<product> <score> <id>`; `set` is `pending`,
    /// `lobby` or `active`.
    fn zadd_game(&mut self, set: &str, product: &str, score: i64, id: &str) {
        self.cmd(&[
            "ZADD",
            &format!("__{set}_games:{product}"),
            &score.to_string(),
            id,
        ]);
    }

    fn board(&mut self, product: &str, entries: &[(&str, i64)]) {
        for (user, score) in entries {
            self.cmd(&[
                "ZADD",
                &format!("_lb:wins:{product}"),
                &score.to_string(),
                user,
            ]);
        }
    }

    fn pstats(&mut self, user: &str, product: &str, counters: &[(&str, &str)]) {
        for (counter, value) in counters {
            self.cmd(&["HSET", &format!("_pstats:{user}:{product}"), counter, value]);
        }
    }

    /// `XADD game_event_stream <id> field value ...` (explicit entry ids).
    fn xadd(&mut self, entry: &Entry) {
        let mut args = vec!["XADD", "game_event_stream", entry.id.as_str()];
        for (k, v) in &entry.fields {
            args.push(k);
            args.push(v);
        }
        self.cmd(&args);
    }

    fn set(&mut self, key: &str, value: &str) {
        self.cmd(&["SET", key, value]);
    }
}

/// A stream entry of the original's `game_event_stream`.
struct Entry {
    id: String,
    fields: Vec<(&'static str, String)>,
}

impl Entry {
    fn new(id: String, fields: &[(&'static str, &str)]) -> Entry {
        Entry {
            id,
            fields: fields.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    /// The event as `GET /events` must return it: the fields, string values.
    fn json(&self) -> Value {
        let map = self
            .fields
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>();
        Value::Object(map)
    }
}

fn state_change(id: String, product: &str, game: &str, state: &str) -> Entry {
    Entry::new(
        id,
        &[
            ("product_id", product),
            ("game_id", game),
            ("type", "state_change"),
            ("new_state", state),
        ],
    )
}

fn game_over(id: String, product: &str, winner: &str, loser: &str) -> Entry {
    Entry::new(
        id,
        &[
            ("product_id", product),
            ("game_id", "some-game"),
            ("type", "game_over"),
            ("winner_id", winner),
            ("loser_id", loser),
        ],
    )
}

fn select_weapon(id: String, user: &str, weapon: &str) -> Entry {
    Entry::new(
        id,
        &[
            ("product_id", "exrps"),
            ("game_id", "some-game"),
            ("type", "gameplay"),
            ("event_name", "select_weapon"),
            ("event_data", weapon),
            ("user_id", user),
        ],
    )
}

// ---------------------------------------------------------------------------
// Games as the original stored them
// ---------------------------------------------------------------------------

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A stream id `<ms>-<seq>` from a minute ago plus `offset_ms`: what a
/// migration right after stopping the original sees as unapplied entries.
/// (Imported events that are old *and* applied may be dropped by varcade's
/// event retention, which would hide them from `GET /events`.)
fn sid(offset_ms: u64, seq: u64) -> String {
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
    format!("{}-{seq}", now_ms - 60_000 + offset_ms)
}

/// `_last_updated` `age_secs` ago, as Python's
/// `strftime("%d-%b-%Y (%H:%M:%S.%f)")` on a UTC datetime.
fn stamp(age_secs: i64) -> String {
    let format = time::macros::format_description!(
        "[day]-[month repr:short]-[year] ([hour]:[minute]:[second].[subsecond digits:6])"
    );
    (time::OffsetDateTime::now_utc() - time::Duration::seconds(age_secs))
        .format(&format)
        .unwrap()
}

/// A game in the original's full form. The original itself stored no
/// `target_game_server` (it added it to responses); `with_target` adds it,
/// as the contract's full form has it.
#[allow(clippy::too_many_arguments)]
fn game(
    url: &str,
    product: &str,
    id: &str,
    players: &[&str],
    state: &str,
    num_players: u64,
    age_secs: i64,
    with_target: bool,
) -> Value {
    let mut game = json!({
        "game_id": id,
        "product_id": product,
        "game_server_url": url,
        "creator_id": players[0],
        "creator_name": format!("name-{}", players[0]),
        "players": players,
        "settings": {"num_players": num_players},
        "token": format!("tok-{id}"),
        "state": state,
        "_last_updated": stamp(age_secs),
    });
    if with_target {
        let target = if product == "exrps" {
            "127.0.0.1:8085"
        } else {
            "127.0.0.1:9095"
        };
        game["target_game_server"] = json!(target);
    }
    game
}

/// The lobby's partial form of a stored game.
fn partial(game: &Value) -> Value {
    let mut game = game.clone();
    let map = game.as_object_mut().unwrap();
    for hidden in ["token", "state", "_last_updated", "target_game_server"] {
        map.remove(hidden);
    }
    game
}

// ---------------------------------------------------------------------------
// Running the command
// ---------------------------------------------------------------------------

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `varcade import-redis --from <url> --config <config> <extra...>`, at most
/// 30 s.
fn import(url: &str, config: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "import-redis",
        "--from",
        url,
        "--config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_varcade"))
        .args(&args)
        .env_remove("VARCADE_BIND")
        .env_remove("VARCADE_DATA_DIR")
        .env_remove("VARCADE_JWT_SECRET")
        .env_remove("VARCADE_ADMIN_KEY")
        .env_remove("VARCADE_STORAGE_URL")
        .env("VARCADE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start varcade import-redis");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("import-redis {args:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A target directory with `varcade.toml` (data_dir `<dir>/db`), as
/// `Server::start_in` will write it again.
fn target(options: &Options) -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    let config = dir.0.join("varcade.toml");
    std::fs::write(&config, options.toml(&dir.0.join("db"))).unwrap();
    (dir, config)
}

fn assert_ok(run: &Run, products: &[&str]) {
    assert_eq!(run.code, Some(0), "import failed:\n{run}");
    for product in products {
        assert!(
            run.stdout.contains(product),
            "the summary names no `{product}`:\n{run}"
        );
    }
}

/// Exit 2 and a stderr line naming one of `names`.
fn assert_refused(run: &Run, names: &[&str], what: &str) {
    eprintln!("{what}: {}", run.stderr.trim());
    assert_eq!(run.code, Some(2), "{what}: expected exit 2:\n{run}");
    assert!(
        run.stderr
            .lines()
            .any(|line| names.iter().any(|name| line.contains(name))),
        "{what}: no stderr line names any of {names:?}:\n{run}"
    );
}

// ---------------------------------------------------------------------------
// Reading the served result
// ---------------------------------------------------------------------------

async fn top_ten(server: &Server, product: &str) -> Value {
    let (status, body) = server
        .get(&format!("/leaderboards/top_ten/{product}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn stats(server: &Server, product: &str, user: &str) -> Value {
    let (status, body) = server.get(&format!("/stats/{product}/{user}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until both consumers have applied the whole log, which must end
/// at `last`.
async fn caught_up(server: &Server, last: u64) {
    wait_until(
        Duration::from_secs(15),
        &format!("both consumers at {last} with lag 0"),
        || async {
            let status = server.status().await;
            ["matchmaker", "stats"].iter().all(|c| {
                let consumer = &status["consumers"][c];
                consumer["cursor"] == last && consumer["lag"] == 0
            })
        },
    )
    .await;
    let status = server.status().await;
    assert_eq!(status["last_event_id"], last, "{status}");
}

/// The log through `GET /events`: (id, event) with ids checked to be
/// 1, 2, 3, ... and `ts_ms` a number.
async fn log(server: &Server) -> Vec<Value> {
    let events = server.events().await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["id"], i as u64 + 1, "ids 1, 2, 3, ...: {e}");
        assert!(e["ts_ms"].is_u64(), "{e}");
    }
    events.into_iter().map(|e| e["event"].clone()).collect()
}

/// The `varcade_games{product, state}` gauge (0 when absent).
fn games_gauge(metrics: &str, product: &str, state: &str) -> f64 {
    let want_product = format!("product=\"{product}\"");
    let want_state = format!("state=\"{state}\"");
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("varcade_games{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels: Vec<&str> = labels.split(',').collect();
        if labels.contains(&want_product.as_str()) && labels.contains(&want_state.as_str()) {
            return value.trim().parse().unwrap();
        }
    }
    0.0
}

// ---------------------------------------------------------------------------
// 1. Full migration
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn full_migration_keeps_everything_and_applies_each_unapplied_entry_once() {
    if common::sled_only("import-redis (it writes a sled data directory)") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let url = fake.url.as_str();
    let redis = Redis::start();
    let now = now_secs();

    // --- games db (0) -----------------------------------------------------
    // Three listed games, listed at now-300 ("lobby-zulu"), now-200
    // ("lobby-alpha") and now-100 ("lobby-mike"): written in neither
    // listing nor name order.
    let lobby_mike = game(
        url,
        "exrps",
        "lobby-mike",
        &["ub"],
        "creator_joined",
        2,
        100,
        true,
    );
    let lobby_zulu = game(
        url,
        "exrps",
        "lobby-zulu",
        &["ua"],
        "creator_joined",
        2,
        290,
        true,
    );
    let lobby_alpha = game(
        url,
        "exrps",
        "lobby-alpha",
        &["uc"],
        "creator_joined",
        2,
        200,
        false,
    );
    // creator_joined but full (a second player joined): in the active set.
    let full = game(
        url,
        "exrps",
        "g-full",
        &["uf", "uf2"],
        "creator_joined",
        2,
        30,
        true,
    );
    // Still `created`: its creator_joined report reached the original
    // before the game was stored (entry 4 below), so it was ignored.
    let race = game(url, "exrps", "g-race", &["ur"], "created", 2, 5, true);
    // `created`; the report that lists it (entry 7) was not applied yet.
    let created = game(url, "exrps", "g-created", &["ucr"], "created", 2, 10, false);
    let apj = game(
        url,
        "exrps",
        "g-apj",
        &["uapj", "p-apj"],
        "all_players_joined",
        2,
        20,
        true,
    );
    let inprog = game(
        url,
        "exrps",
        "g-inprog",
        &["ui", "ui2"],
        "in_progress",
        2,
        40,
        false,
    );
    let ended = game(
        url,
        "exrps",
        "g-ended",
        &["ue", "ue2"],
        "ended",
        2,
        15,
        true,
    );
    // In progress for 700 s: past the 600 s expiry, so curation purges it
    // at once if (and only if) the state clock was kept.
    let stale = game(
        url,
        "exrps",
        "g-stale",
        &["us", "us2"],
        "in_progress",
        2,
        700,
        true,
    );
    // chess: three seats, two taken, listed.
    let chess_open = game(
        url,
        "chess",
        "chess-open",
        &["c1", "c2"],
        "creator_joined",
        3,
        50,
        true,
    );
    {
        let mut db = redis.db(0);
        for g in [
            &lobby_mike,
            &lobby_zulu,
            &lobby_alpha,
            &full,
            &race,
            &created,
            &apj,
            &inprog,
            &ended,
            &stale,
            &chess_open,
        ] {
            db.put_game(g);
        }
        db.zadd_game("lobby", "exrps", now - 100, "lobby-mike");
        db.zadd_game("lobby", "exrps", now - 300, "lobby-zulu");
        db.zadd_game("lobby", "exrps", now - 200, "lobby-alpha");
        db.zadd_game("pending", "exrps", now - 5, "g-race");
        db.zadd_game("pending", "exrps", now - 10, "g-created");
        for (age, id) in [
            (30, "g-full"),
            (25, "g-apj"),
            (45, "g-inprog"),
            (60, "g-ended"),
            (800, "g-stale"),
        ] {
            db.zadd_game("active", "exrps", now - age, id);
        }
        db.zadd_game("lobby", "chess", now - 50, "chess-open");
    }

    // --- stats db (2) -----------------------------------------------------
    {
        let mut db = redis.db(2);
        db.board(
            "exrps",
            &[("u1", 3), ("u2", 1), ("u5", 2), ("u6", 0), ("u7", 2)],
        );
        db.board("chess", &[("c1", 1016), ("c2", 984)]);
        db.pstats(
            "u1",
            "exrps",
            &[
                ("games", "4"),
                ("wins", "3"),
                ("losses", "1"),
                ("rock_selection_count", "5"),
            ],
        );
        db.pstats(
            "u5",
            "exrps",
            &[
                ("games", "2"),
                ("wins", "2"),
                ("losses", "0"),
                ("paper_selection_count", "1"),
            ],
        );
        db.pstats(
            "u6",
            "exrps",
            &[
                ("games", "2"),
                ("wins", "0"),
                ("losses", "2"),
                ("botch_selection_count", "1"),
            ],
        );
        db.pstats(
            "c1",
            "chess",
            &[("games", "2"), ("wins", "1"), ("losses", "1")],
        );
        db.pstats(
            "c2",
            "chess",
            &[("games", "1"), ("wins", "0"), ("losses", "1")],
        );
    }

    // --- stream db (1) ----------------------------------------------------
    // Entries 1-3 at t0-0..2; entries 4-14 at t1-7..17, so ids after the
    // matchmaker's index t1-9 have sequence numbers >= 10 (compare ids as
    // numbers, as XREAD does, not as strings).
    let t0 = sid(0, 0).split('-').next().unwrap().parse::<u64>().unwrap();
    let t1 = t0 + 1_000;
    let id = |k: u64| {
        if k <= 3 {
            format!("{t0}-{}", k - 1)
        } else {
            format!("{t1}-{}", k + 3)
        }
    };
    let entries = vec![
        game_over(id(1), "exrps", "u1", "u2"),
        select_weapon(id(2), "u1", "0"),
        game_over(id(3), "chess", "c1", "c2"), // the stats tracker's index
        state_change(id(4), "exrps", "g-race", "creator_joined"),
        game_over(id(5), "exrps", "u5", "u6"),
        state_change(id(6), "exrps", "g-apj", "all_players_joined"), // the matchmaker's index
        state_change(id(7), "exrps", "g-created", "creator_joined"),
        select_weapon(id(8), "u6", "null"),
        game_over(id(9), "chess", "c3", "c1"),
        Entry::new(
            id(10),
            &[
                ("product_id", "exrps"),
                ("game_id", "g-ended"),
                ("type", "game_removed"),
            ],
        ),
        Entry::new(
            id(11),
            &[
                ("product_id", "exrps"),
                ("game_id", "g-apj"),
                ("type", "player_disconnect"),
                ("player_id", "p-apj"),
            ],
        ),
        select_weapon(id(12), "u5", "1"),
        state_change(id(13), "exrps", "g-inprog", "ended"),
        // Skips a state: ignored, as the original did.
        state_change(id(14), "exrps", "g-full", "in_progress"),
    ];
    {
        let mut db = redis.db(1);
        for entry in &entries {
            db.xadd(entry);
        }
        db.set("__game_event_stream_index", &id(6));
        db.set("_stats_tracker.workers.event_stream_index", &id(3));
    }

    // --- import and serve -------------------------------------------------
    let (dir, config) = target(&options);
    let run = import(&redis.url(), &config, &[]);
    assert_ok(&run, &["exrps", "chess"]);
    let server = Server::start_in(&options, dir).await;

    // Entries after min(index) = entry 3 are in the log, in stream order,
    // exactly as they were in the stream; both consumers finish them.
    let expected_log: Vec<Value> = entries[3..].iter().map(Entry::json).collect();
    caught_up(&server, expected_log.len() as u64).await;
    assert_eq!(log(&server).await, expected_log);

    // Lobby: the imported listings oldest first, then g-created (entry 7,
    // after the matchmaker's index, listed after them) and g-apj (reset and
    // listed again by entry 11; API.md does not say where a game listed
    // again goes, and varcade keeps a game's first place, so its place
    // relative to g-created is not checked); g-race stays unlisted (entry 4
    // was applied by the original, not again).
    let mut apj_reset = partial(&apj);
    apj_reset["players"] = json!(["uapj"]);
    let lobby = server.open_games("exrps").await;
    let imported_listings = [
        partial(&lobby_zulu),
        partial(&lobby_alpha),
        partial(&lobby_mike),
    ];
    assert_eq!(lobby.len(), 5, "{lobby:#?}");
    assert_eq!(lobby[..3], imported_listings[..], "{lobby:#?}");
    assert!(
        lobby[3..].contains(&partial(&created)) && lobby[3..].contains(&apj_reset),
        "{lobby:#?}"
    );
    let (status, page) = server
        .get("/game_lobby/exrps/open_games?count=2&page=1")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page[0], partial(&lobby_mike), "{page}");
    assert_eq!(page.as_array().unwrap().len(), 2, "{page}");
    assert_eq!(server.open_games("chess").await, vec![partial(&chess_open)]);

    // Boards: entry 5 (after the stats index, before the matchmaker's)
    // counts once; entries 1 and 3 are not counted again; c3 starts at 1000:
    // c3 beats c1 (1016): 1000 + 32 * (1 - 1/(1 + 10^(16/400))) = 1016.7 -> 1017,
    // c1 -> 999.3 -> 999.
    assert_eq!(
        top_ten(&server, "exrps").await,
        json!([
            {"user_id": "u1", "score": 3},
            {"user_id": "u5", "score": 3},
            {"user_id": "u7", "score": 2},
            {"user_id": "u2", "score": 1},
            {"user_id": "u6", "score": 0},
        ])
    );
    assert_eq!(
        top_ten(&server, "chess").await,
        json!([
            {"user_id": "c3", "score": 1017},
            {"user_id": "c1", "score": 999},
            {"user_id": "c2", "score": 984},
        ])
    );
    for (user, score, rank) in [("u5", 3, 2), ("u7", 2, 3), ("u6", 0, 5)] {
        let (status, body) = server
            .get(&format!("/leaderboards/exrps/players/{user}"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({"user_id": user, "score": score, "rank": rank}));
    }
    let (status, body) = server.get("/leaderboards/chess/players/c2").await;
    assert_eq!(
        (status, body),
        (200, json!({"user_id": "c2", "score": 984, "rank": 3}))
    );
    let (status, body) = server.get("/leaderboards/exrps/players/nobody").await;
    assert_eq!(status, 404, "{body}");

    // Player stats: integers; imported counters plus the unapplied entries.
    assert_eq!(
        stats(&server, "exrps", "u1").await,
        json!({"games": 4, "wins": 3, "losses": 1, "rock_selection_count": 5})
    );
    assert_eq!(
        stats(&server, "exrps", "u5").await,
        json!({"games": 3, "wins": 3, "losses": 0, "paper_selection_count": 2})
    );
    assert_eq!(
        stats(&server, "exrps", "u6").await,
        json!({"games": 3, "wins": 0, "losses": 3, "botch_selection_count": 2})
    );
    assert_eq!(
        stats(&server, "chess", "c1").await,
        json!({"games": 3, "wins": 1, "losses": 2})
    );
    assert_eq!(
        stats(&server, "chess", "c2").await,
        json!({"games": 1, "wins": 0, "losses": 1})
    );
    assert_eq!(
        stats(&server, "chess", "c3").await,
        json!({"games": 1, "wins": 1, "losses": 0})
    );
    assert_eq!(stats(&server, "exrps", "nobody").await, json!({}));

    // Games kept their state and players.
    let (s, b) = server.join("exrps", "lobby-mike", "ub").await;
    assert_error(s, &b, 409, "already_joined");
    for not_joinable in ["g-race", "g-full", "g-inprog"] {
        let (s, b) = server.join("exrps", not_joinable, "u9").await;
        assert_error(s, &b, 409, "game_not_joinable");
    }
    let (s, b) = server.join("exrps", "g-ended", "u9").await;
    assert_error(s, &b, 404, "game_not_found");

    // A join on the oldest imported listing works: the full game with the
    // imported token, settings and players, and the game server is told.
    let (status, joined) = server.join("exrps", "lobby-zulu", "u9").await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["game_id"], "lobby-zulu");
    assert_eq!(joined["product_id"], "exrps");
    assert_eq!(joined["game_server_url"], url);
    assert_eq!(joined["creator_id"], "ua");
    assert_eq!(joined["creator_name"], "name-ua");
    assert_eq!(joined["players"], json!(["ua", "u9"]));
    assert_eq!(joined["settings"], json!({"num_players": 2}));
    assert_eq!(joined["token"], "tok-lobby-zulu");
    assert_eq!(joined["state"], "creator_joined");
    assert_eq!(joined["target_game_server"], "127.0.0.1:8085");
    assert!(joined["_last_updated"].is_string(), "{joined}");
    assert_eq!(
        fake.calls("join_game"),
        vec![json!({"gameId": "lobby-zulu", "userId": "u9", "username": "useru9"})]
    );
    let mut ids: Vec<String> = server
        .open_games("exrps")
        .await
        .iter()
        .map(|g| g["game_id"].as_str().unwrap().to_string())
        .collect();
    ids[2..].sort();
    assert_eq!(
        ids,
        ["lobby-alpha", "lobby-mike", "g-apj", "g-created"],
        "the full game left the lobby"
    );
    // The imported chess game has one seat left of three.
    let (status, joined) = server.join("chess", "chess-open", "c9").await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["players"], json!(["c1", "c2", "c9"]));
    assert!(server.open_games("chess").await.is_empty());

    // The state clocks were kept: only the game 700 s into in_progress is
    // purged (and the game server told); the states are as imported plus
    // the applied entries.
    wait_until(Duration::from_secs(10), "g-stale purged", || async {
        fake.calls("remove_game")
            .iter()
            .any(|c| c["gameId"] == "g-stale")
    })
    .await;
    for call in fake.calls("remove_game") {
        let id = call["gameId"].as_str().unwrap_or_default();
        assert!(
            id == "g-stale" || id == "g-ended",
            "an imported live game was purged: {call}"
        );
    }
    let want = [
        ("exrps", "created", 1.0),            // g-race
        ("exrps", "creator_joined", 6.0),     // 3 imported listings, g-full, g-created, g-apj
        ("exrps", "all_players_joined", 0.0), // g-apj was reset
        ("exrps", "in_progress", 0.0),        // g-inprog ended, g-stale purged
        ("exrps", "ended", 1.0),              // g-inprog (g-ended removed)
        ("chess", "creator_joined", 1.0),
    ];
    wait_until(
        Duration::from_secs(10),
        "varcade_games gauges match the imported games",
        || async {
            let text = server.metrics_text().await;
            want.iter().all(|(p, s, n)| games_gauge(&text, p, s) == *n)
        },
    )
    .await;

    let status = server.status().await;
    for consumer in ["matchmaker", "stats"] {
        assert_eq!(status["consumers"][consumer]["lag"], 0, "{status}");
    }
}

// ---------------------------------------------------------------------------
// 2. No index keys: nothing was applied
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn missing_indexes_mean_nothing_was_applied() {
    if common::sled_only("import-redis (it writes a sled data directory)") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let url = fake.url.as_str();
    let redis = Redis::start();
    let now = now_secs();

    let pending = game(url, "exrps", "g-pending", &["a"], "created", 2, 5, true);
    let listed = game(
        url,
        "exrps",
        "g-listed",
        &["z"],
        "creator_joined",
        2,
        50,
        true,
    );
    {
        let mut db = redis.db(0);
        db.put_game(&pending);
        db.put_game(&listed);
        db.zadd_game("pending", "exrps", now - 5, "g-pending");
        db.zadd_game("lobby", "exrps", now - 50, "g-listed");
    }
    {
        let mut db = redis.db(2);
        db.board("exrps", &[("a", 5), ("b", 1)]);
        db.pstats(
            "a",
            "exrps",
            &[("games", "5"), ("wins", "5"), ("losses", "0")],
        );
    }
    let entries = vec![
        state_change(sid(0, 0), "exrps", "g-pending", "creator_joined"),
        game_over(sid(0, 1), "exrps", "a", "b"),
        select_weapon(sid(1, 0), "a", "0"),
        game_over(sid(2, 0), "chess", "x", "y"),
    ];
    {
        let mut db = redis.db(1);
        for entry in &entries {
            db.xadd(entry);
        }
        // No __game_event_stream_index, no _stats_tracker.workers.event_stream_index.
    }

    let (dir, config) = target(&options);
    let run = import(&redis.url(), &config, &[]);
    assert_ok(&run, &["exrps"]);
    let server = Server::start_in(&options, dir).await;

    let expected: Vec<Value> = entries.iter().map(Entry::json).collect();
    caught_up(&server, expected.len() as u64).await;
    assert_eq!(log(&server).await, expected, "every entry appended");

    // The matchmaker applied everything: g-pending listed after g-listed.
    assert_eq!(
        server.open_games("exrps").await,
        vec![partial(&listed), partial(&pending)]
    );
    // The stats tracker applied everything, once.
    assert_eq!(
        top_ten(&server, "exrps").await,
        json!([{"user_id": "a", "score": 6}, {"user_id": "b", "score": 1}])
    );
    assert_eq!(
        stats(&server, "exrps", "a").await,
        json!({"games": 6, "wins": 6, "losses": 0, "rock_selection_count": 1})
    );
    assert_eq!(
        stats(&server, "exrps", "b").await,
        json!({"games": 1, "wins": 0, "losses": 1})
    );
    assert_eq!(
        top_ten(&server, "chess").await,
        json!([{"user_id": "x", "score": 1016}, {"user_id": "y", "score": 984}])
    );
}

// ---------------------------------------------------------------------------
// 3. A non-empty target is refused and left as it was
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_second_import_into_the_same_target_is_refused_and_changes_nothing() {
    if common::sled_only("import-redis (it writes a sled data directory)") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let url = fake.url.as_str();
    let redis = Redis::start();
    let now = now_secs();

    let first = game(
        url,
        "exrps",
        "g-first",
        &["a"],
        "creator_joined",
        2,
        20,
        true,
    );
    redis.db(0).put_game(&first);
    redis.db(0).zadd_game("lobby", "exrps", now - 20, "g-first");
    redis.db(2).board("exrps", &[("a", 2), ("b", 1)]);
    redis.db(2).pstats(
        "a",
        "exrps",
        &[("games", "2"), ("wins", "2"), ("losses", "0")],
    );
    let entry = game_over(sid(0, 0), "exrps", "a", "b");
    redis.db(1).xadd(&entry);
    redis.db(1).set("__game_event_stream_index", &entry.id);

    let (dir, config) = target(&options);
    let run = import(&redis.url(), &config, &[]);
    assert_ok(&run, &["exrps"]);

    // More data in Redis, then import again into the same target.
    let second = game(
        url,
        "exrps",
        "g-second",
        &["c"],
        "creator_joined",
        2,
        10,
        true,
    );
    redis.db(0).put_game(&second);
    redis
        .db(0)
        .zadd_game("lobby", "exrps", now - 10, "g-second");
    redis.db(2).board("exrps", &[("zz", 50)]);
    redis
        .db(1)
        .xadd(&game_over(sid(1_000, 0), "exrps", "zz", "a"));

    let data_dir = dir.0.join("db");
    let run = import(&redis.url(), &config, &[]);
    assert_refused(
        &run,
        &["not empty", data_dir.to_str().unwrap()],
        "import into a non-empty target",
    );

    // The first import is intact and nothing of the second was written.
    let server = Server::start_in(&options, dir).await;
    caught_up(&server, 1).await;
    assert_eq!(log(&server).await, vec![entry.json()]);
    assert_eq!(server.open_games("exrps").await, vec![partial(&first)]);
    assert_eq!(
        top_ten(&server, "exrps").await,
        json!([{"user_id": "a", "score": 3}, {"user_id": "b", "score": 1}])
    );
    assert_eq!(
        stats(&server, "exrps", "a").await,
        json!({"games": 3, "wins": 3, "losses": 0})
    );
}

// ---------------------------------------------------------------------------
// 4. A product missing from the config stops the import before any write
// ---------------------------------------------------------------------------

/// A small valid data set (one listed exrps game, a board, stats and an
/// unapplied entry); returns the listed game and the unapplied entry.
fn seed_small(redis: &Redis, url: &str) -> (Value, Entry) {
    let listed = game(
        url,
        "exrps",
        "g-small",
        &["a"],
        "creator_joined",
        2,
        20,
        true,
    );
    redis.db(0).put_game(&listed);
    redis
        .db(0)
        .zadd_game("lobby", "exrps", now_secs() - 20, "g-small");
    redis.db(2).board("exrps", &[("a", 4), ("b", 2)]);
    redis.db(2).pstats(
        "a",
        "exrps",
        &[
            ("games", "6"),
            ("wins", "4"),
            ("losses", "2"),
            ("rock_selection_count", "7"),
        ],
    );
    let applied = game_over(sid(0, 0), "exrps", "a", "b");
    let unapplied = game_over(sid(0, 1), "exrps", "b", "a");
    redis.db(1).xadd(&applied);
    redis.db(1).xadd(&unapplied);
    redis.db(1).set("__game_event_stream_index", &applied.id);
    redis
        .db(1)
        .set("_stats_tracker.workers.event_stream_index", &applied.id);
    (listed, unapplied)
}

/// After refused imports into `dir`: a clean import into it succeeds (so
/// nothing was written) and serves exactly the small data set.
async fn clean_import_still_works(
    redis: &Redis,
    url: &str,
    options: &Options,
    dir: TempDir,
    config: &Path,
) {
    redis.flush_all();
    let (listed, unapplied) = seed_small(redis, url);
    let run = import(&redis.url(), config, &[]);
    assert_ok(&run, &["exrps"]);
    let server = Server::start_in(options, dir).await;
    caught_up(&server, 1).await;
    assert_eq!(log(&server).await, vec![unapplied.json()]);
    assert_eq!(server.open_games("exrps").await, vec![partial(&listed)]);
    assert_eq!(
        top_ten(&server, "exrps").await,
        json!([{"user_id": "a", "score": 4}, {"user_id": "b", "score": 3}])
    );
    assert_eq!(
        stats(&server, "exrps", "a").await,
        json!({"games": 7, "wins": 4, "losses": 3, "rock_selection_count": 7})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_missing_from_the_config_is_refused_before_anything_is_written() {
    if common::sled_only("import-redis (it writes a sled data directory)") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let url = fake.url.clone();
    let redis = Redis::start();
    let (dir, config) = target(&options);

    let pong_game = game(
        &url,
        "pong",
        "g-pong",
        &["p"],
        "creator_joined",
        2,
        20,
        true,
    );
    let variants: Vec<(&str, Seed<'_>)> = vec![
        (
            "a __games:pong hash",
            Box::new(|r: &Redis| r.db(0).put_game(&pong_game)),
        ),
        (
            "a __lobby_games:pong set",
            Box::new(|r: &Redis| r.db(0).zadd_game("lobby", "pong", now_secs(), "g-pong")),
        ),
        (
            "a _lb:wins:pong board",
            Box::new(|r: &Redis| r.db(2).board("pong", &[("a", 1)])),
        ),
        (
            "a _pstats:a:pong hash",
            Box::new(|r: &Redis| r.db(2).pstats("a", "pong", &[("games", "1")])),
        ),
        (
            "an unapplied pong stream entry",
            Box::new(|r: &Redis| r.db(1).xadd(&game_over(sid(5_000, 0), "pong", "a", "b"))),
        ),
    ];
    for (what, add_pong) in &variants {
        redis.flush_all();
        seed_small(&redis, &url);
        add_pong(&redis);
        let run = import(&redis.url(), &config, &[]);
        assert_refused(&run, &["pong"], what);
    }
    clean_import_still_works(&redis, &url, &options, dir, &config).await;
}

// ---------------------------------------------------------------------------
// 5. An unreadable record stops the import before any write
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_record_is_refused_before_anything_is_written() {
    if common::sled_only("import-redis (it writes a sled data directory)") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let url = fake.url.clone();
    let redis = Redis::start();
    let (dir, config) = target(&options);

    let mut bad_clock = game(&url, "exrps", "g-badclock", &["q"], "created", 2, 5, true);
    bad_clock["_last_updated"] = json!("yesterday-ish");
    let variants: Vec<(&str, Vec<&str>, Seed<'_>)> = vec![
        (
            "game JSON `{not json`",
            vec!["g-bad", "__games:exrps"],
            Box::new(|r: &Redis| {
                r.db(0)
                    .cmd(&["HSET", "__games:exrps", "g-bad", "{not json"])
            }),
        ),
        (
            "an unparsable _last_updated",
            vec!["g-badclock", "__games:exrps"],
            Box::new(|r: &Redis| r.db(0).put_game(&bad_clock)),
        ),
        (
            "a counter that is not an integer",
            vec!["_pstats:a:exrps"],
            Box::new(|r: &Redis| {
                r.db(2)
                    .pstats("a", "exrps", &[("rock_selection_count", "lots")])
            }),
        ),
        (
            "a stream index that is not an entry id",
            vec!["__game_event_stream_index"],
            Box::new(|r: &Redis| r.db(1).set("__game_event_stream_index", "banana")),
        ),
    ];
    for (what, names, corrupt) in &variants {
        redis.flush_all();
        seed_small(&redis, &url);
        corrupt(&redis);
        let run = import(&redis.url(), &config, &[]);
        assert_refused(&run, names, what);
    }
    clean_import_still_works(&redis, &url, &options, dir, &config).await;
}

// ---------------------------------------------------------------------------
// 6. Other database numbers, --data-dir, one index missing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn database_numbers_and_data_dir_are_honoured() {
    if common::sled_only("import-redis (it writes a sled data directory)") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let url = fake.url.as_str();
    let redis = Redis::start();
    let now = now_secs();

    // Decoys in the default databases 0, 1, 2: none of it may be imported.
    let decoy = game(
        url,
        "exrps",
        "g-decoy",
        &["d"],
        "creator_joined",
        2,
        5,
        true,
    );
    redis.db(0).put_game(&decoy);
    redis.db(0).zadd_game("lobby", "exrps", now - 5, "g-decoy");
    redis.db(1).xadd(&game_over(sid(0, 0), "exrps", "d", "d2"));
    redis.db(2).board("exrps", &[("d", 99)]);
    redis.db(2).pstats("d", "exrps", &[("games", "99")]);

    // The real data in 3, 4, 5. The matchmaker applied entry 1 (which it
    // ignored: g-raced was not stored yet); the stats tracker has no index
    // (applied nothing).
    let listed = game(url, "exrps", "g-six", &["s"], "creator_joined", 2, 30, true);
    let raced = game(url, "exrps", "g-raced", &["r"], "created", 2, 10, false);
    redis.db(3).put_game(&listed);
    redis.db(3).put_game(&raced);
    redis
        .db(3)
        .zadd_game("pending", "exrps", now - 10, "g-raced");
    redis.db(3).zadd_game("lobby", "exrps", now - 30, "g-six");
    let entries = vec![
        state_change(sid(0, 0), "exrps", "g-raced", "creator_joined"),
        game_over(sid(0, 1), "exrps", "a6", "b6"),
        Entry::new(
            sid(0, 2),
            &[
                ("product_id", "exrps"),
                ("game_id", "g-six"),
                ("type", "mystery"),
            ],
        ),
    ];
    {
        let mut db = redis.db(4);
        for entry in &entries {
            db.xadd(entry);
        }
        db.set("__game_event_stream_index", &entries[0].id);
    }
    redis.db(5).board("exrps", &[("a6", 1)]);
    redis.db(5).pstats(
        "a6",
        "exrps",
        &[("games", "1"), ("wins", "1"), ("losses", "0")],
    );

    // The config points elsewhere; --data-dir wins.
    let dir = TempDir::new();
    let config = dir.0.join("import.toml");
    std::fs::write(&config, options.toml(&dir.0.join("elsewhere"))).unwrap();
    let data_dir = dir.0.join("db");
    let run = import(
        &redis.url(),
        &config,
        &[
            "--games-db",
            "3",
            "--stream-db",
            "4",
            "--stats-db",
            "5",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
    );
    assert_ok(&run, &["exrps"]);
    let server = Server::start_in(&options, dir).await;

    let expected: Vec<Value> = entries.iter().map(Entry::json).collect();
    caught_up(&server, expected.len() as u64).await;
    assert_eq!(log(&server).await, expected, "the stream of db 4 only");
    assert_eq!(
        server.open_games("exrps").await,
        vec![partial(&listed)],
        "games of db 3 only; entry 1 (applied by the matchmaker) not applied again"
    );
    assert_eq!(
        top_ten(&server, "exrps").await,
        json!([{"user_id": "a6", "score": 2}, {"user_id": "b6", "score": 0}]),
        "board of db 5 only, entry 2 applied once"
    );
    assert_eq!(
        stats(&server, "exrps", "a6").await,
        json!({"games": 2, "wins": 2, "losses": 0})
    );
    assert_eq!(stats(&server, "exrps", "d").await, json!({}));
    let (status, _) = server.get("/leaderboards/exrps/players/d").await;
    assert_eq!(status, 404, "the decoy board of db 2 was imported");
}
