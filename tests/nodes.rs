//! Several varcade nodes on one PostgreSQL database (API.md "Storage and
//! scale-out"): the promises that a single process keeps must hold across
//! processes that share the database, whichever node a client talks to.
//!
//! - the join race for the last seat, spread over three nodes, has exactly
//!   one winner and only the winner reaches the game server;
//! - `kill -9` of the node holding the stats lease in the middle of ingest
//!   through every node: another node takes the lease over within
//!   `lease_secs` (2 s here) and a bit, every acknowledged event is in the
//!   log as it was sent, and the boards and stats equal the logged
//!   `game_over` events exactly (nothing lost, nothing applied twice);
//! - curation runs on one node at a time: each expired game gets exactly one
//!   `remove_game`, also after the curating node is killed;
//! - a node started later answers lobby, boards and stats like the others
//!   from its first request on.
//!
//! Every node has its own directory but the same database, created once per
//! test ([`TestDb::create`], dropped at the end). These tests always run on
//! PostgreSQL, whatever `VARCADE_TEST_STORAGE` says; the database server is
//! `VARCADE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{FakeGameServer, Options, Server, TempDir, TestDb, Ws, board, wait_until};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// `lease_secs` in the harness's `[storage]` section.
const LEASE: Duration = Duration::from_secs(2);

/// Starts a node on `db` in a fresh directory of its own.
async fn node(options: &Options, db: &Arc<TestDb>) -> Server {
    let dir = std::env::temp_dir().join(format!("varcade-node-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    Server::start_in_with_env(options, TempDir(dir, Some(db.clone())), Vec::new()).await
}

/// A fresh database and `n` nodes on it, started one after the other.
async fn cluster(options: &Options, n: usize) -> (Arc<TestDb>, Vec<Server>) {
    let db = Arc::new(TestDb::create());
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(node(options, &db).await);
    }
    (db, nodes)
}

/// Runs one SQL statement on the test's database; its rows, trimmed.
async fn sql(db: &TestDb, query: &str) -> String {
    let (url, query) = (db.url.clone(), query.to_string());
    tokio::task::spawn_blocking(move || {
        let out = Command::new("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-d", &url, "-c", &query])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
    .await
    .unwrap()
}

/// The process id of the lease's holder (holders are `<pid>-<uuid>`).
async fn lease_holder(db: &TestDb, name: &str) -> Option<u32> {
    let holder = sql(
        db,
        &format!("SELECT holder FROM leases WHERE name = '{name}'"),
    )
    .await;
    let (pid, _) = holder.split_once('-')?;
    Some(pid.parse().unwrap_or_else(|_| panic!("holder {holder:?}")))
}

/// Kills the node holding `lease` with SIGKILL; returns its index.
async fn kill_holder(db: &TestDb, nodes: &mut [Server], lease: &str) -> usize {
    let pid = lease_holder(db, lease)
        .await
        .unwrap_or_else(|| panic!("nobody holds the {lease} lease"));
    let victim = nodes
        .iter()
        .position(|n| n.pid() == pid)
        .unwrap_or_else(|| panic!("the {lease} lease is held by pid {pid}, none of the nodes"));
    nodes[victim].child.kill().unwrap();
    nodes[victim].child.wait().unwrap();
    victim
}

/// Waits until a node other than `dead` holds `lease`; returns how long
/// that took from `since`. Panics after `LEASE` + 1.5 s.
async fn taken_over(db: &TestDb, lease: &str, dead: u32, since: Instant) -> Duration {
    let limit = LEASE + Duration::from_millis(1500);
    loop {
        if let Some(pid) = lease_holder(db, lease).await
            && pid != dead
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "no node took the {lease} lease over within {limit:?} of the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn game_over(winner: &str, loser: &str) -> Value {
    json!({"product_id": "exrps", "game_id": "g", "type": "game_over",
           "winner_id": winner, "loser_id": loser})
}

/// Whether `server`'s consumers both applied the log up to `last`.
async fn applied(server: &Server, last: u64) -> bool {
    let status = server.status().await;
    status["last_event_id"] == last
        && status["consumers"]["stats"]["cursor"] == last
        && status["consumers"]["matchmaker"]["cursor"] == last
}

/// Creates a game through `server`; its id.
async fn create(server: &Server, product: &str, user: &str) -> String {
    let (status, game) = server.create(product, user).await;
    assert_eq!(status, 200, "{game}");
    game["game_id"].as_str().unwrap().to_string()
}

/// The ids `server` lists for `product`, in lobby order.
async fn open_ids(server: &Server, product: &str) -> Vec<String> {
    server
        .open_games(product)
        .await
        .iter()
        .map(|g| g["game_id"].as_str().unwrap().to_string())
        .collect()
}

/// Whether `game` is gone on `server`: a join by its creator answers 404
/// `game_not_found` (409 `already_joined` while it exists).
async fn gone(server: &Server, product: &str, game: &str, creator: &str) -> bool {
    let (status, body) = server.join(product, game, creator).await;
    match status {
        404 => {
            assert_eq!(body["error"], "game_not_found", "{body}");
            true
        }
        409 => {
            assert_eq!(body["error"], "already_joined", "{body}");
            false
        }
        _ => panic!("unexpected {status}: {body}"),
    }
}

// ---- the join race ----

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_way_race_for_the_last_seat_over_three_nodes() {
    let fake = FakeGameServer::start().await;
    let (_db, nodes) = cluster(&Options::new(&fake), 3).await;
    let nodes: Vec<Arc<Server>> = nodes.into_iter().map(Arc::new).collect();
    // Three rounds, each game created on another node and listed through
    // the next one.
    for round in 0..3 {
        let creator = format!("creator{round}");
        let id = create(&nodes[round], "exrps", &creator).await;
        nodes[(round + 1) % 3]
            .state_change("exrps", &id, "creator_joined")
            .await;
        for (i, n) in nodes.iter().enumerate() {
            wait_until(
                Duration::from_secs(5),
                &format!("round {round}: node {i} lists the game"),
                || async { open_ids(n, "exrps").await.contains(&id) },
            )
            .await;
        }
        let joins_before = fake.calls("join_game").len();
        let mut tasks = Vec::new();
        for i in 0..32 {
            let (server, id) = (nodes[i % 3].clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                server.join("exrps", &id, &format!("r{round}p{i}")).await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                200 => {
                    assert_eq!(body["players"][0], creator.as_str(), "{body}");
                    winners.push(body["players"][1].as_str().unwrap().to_string());
                }
                409 => assert_eq!(body["error"], "game_not_joinable", "{body}"),
                other => panic!("round {round}: unexpected {other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one join wins");
        let calls = fake.calls("join_game")[joins_before..].to_vec();
        assert_eq!(
            calls,
            vec![
                json!({"gameId": id, "userId": winners[0], "username": format!("user{}", winners[0])})
            ],
            "round {round}: only the winner reached the game server"
        );
        for (i, n) in nodes.iter().enumerate() {
            wait_until(
                Duration::from_secs(5),
                &format!("round {round}: the full game leaves node {i}'s lobby"),
                || async { !open_ids(n, "exrps").await.contains(&id) },
            )
            .await;
            let (status, body) = n.join("exrps", &id, "late").await;
            assert_eq!(
                (status, body["error"].as_str()),
                (409, Some("game_not_joinable")),
                "round {round}, node {i}: {body}"
            );
        }
    }
    assert_eq!(fake.calls("remove_player"), Vec::<Value>::new());
}

// ---- kill -9 of the stats lease holder mid-ingest ----

/// Ingest clients, one per node.
const CLIENTS: usize = 3;
/// Frames each client sends, events per frame, pause between frames.
const FRAMES: usize = 100;
const PER_FRAME: usize = 20;
const PACE: Duration = Duration::from_millis(25);
/// Players the game_overs are spread over.
const PLAYERS: usize = 30;

/// Event `i` of client `client`: a game_over between two of the players.
fn client_event(client: usize, i: usize) -> Value {
    let winner = format!("p{:02}", i % PLAYERS);
    let loser = format!("p{:02}", (i + 1 + client) % PLAYERS);
    let mut event = game_over(&winner, &loser);
    event["game_id"] = json!(format!("c{client}-{i}"));
    event
}

/// Sends `FRAMES` frames of `PER_FRAME` events over an ingest WebSocket,
/// pipelined at `PACE`; returns the ack id of each acknowledged frame, in
/// frame order. Stops at the first frame that is not acknowledged (the
/// connection ended), counting acks in `progress`.
async fn ingest_client(ws: Ws, client: usize, progress: Arc<AtomicUsize>) -> Vec<u64> {
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        for f in 0..FRAMES {
            let frame: Vec<Value> = (0..PER_FRAME)
                .map(|k| client_event(client, f * PER_FRAME + k))
                .collect();
            let text = Value::Array(frame).to_string();
            if sink.send(Message::text(text)).await.is_err() {
                return;
            }
            tokio::time::sleep(PACE).await;
        }
        // Kept open until the receiver is done.
        std::future::pending::<()>().await;
    });
    let mut acks = Vec::new();
    while acks.len() < FRAMES {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let ack: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(ack["count"], PER_FRAME, "client {client}: {ack}");
                acks.push(ack["ack"].as_u64().unwrap());
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => break,
            Err(_) => panic!("client {client}: no ack within 20 s"),
        }
    }
    sender.abort();
    acks
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_stats_lease_holder_mid_ingest_loses_and_doubles_nothing() {
    let fake = FakeGameServer::start().await;
    let (db, mut nodes) = cluster(&Options::new(&fake), 3).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for (client, n) in nodes.iter().enumerate() {
        let ws = n.ws("exrps-secret").await;
        let progress = progress.clone();
        clients.push(tokio::spawn(ingest_client(ws, client, progress)));
    }
    // About a fifth of the frames in, the stats consumer is busy: kill the
    // node that runs it.
    wait_until(
        Duration::from_secs(20),
        "a fifth of the frames acked",
        || async { progress.load(Ordering::Relaxed) >= CLIENTS * FRAMES / 5 },
    )
    .await;
    wait_until(Duration::from_secs(5), "a stats lease holder", || async {
        lease_holder(&db, "stats").await.is_some()
    })
    .await;
    let victim = kill_holder(&db, &mut nodes, "stats").await;
    let killed_at = Instant::now();
    let acked_at_kill = progress.load(Ordering::Relaxed);
    let at_kill = nodes[(victim + 1) % CLIENTS].status().await;
    let took = taken_over(&db, "stats", nodes[victim].pid(), killed_at).await;
    eprintln!(
        "node {victim} held the stats lease, killed with {acked_at_kill} frames acked, \
         stats at {} of {}; taken over {took:?} after the kill",
        at_kill["consumers"]["stats"]["cursor"], at_kill["last_event_id"]
    );

    let mut acks = Vec::new();
    for client in clients {
        acks.push(client.await.unwrap());
    }
    for (client, a) in acks.iter().enumerate() {
        if client != victim {
            assert_eq!(a.len(), FRAMES, "client {client} lost acks");
        }
    }
    let total_acked: usize = acks.iter().map(Vec::len).sum();
    assert!(
        total_acked > acked_at_kill,
        "ingest went on after the kill ({acked_at_kill} frames acked at the kill)"
    );
    let survivors: Vec<&Server> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();

    // Every acknowledged event is in the log, exactly as sent.
    let log = survivors[0].events().await;
    let by_id: BTreeMap<u64, &Value> = log
        .iter()
        .map(|e| (e["id"].as_u64().unwrap(), &e["event"]))
        .collect();
    assert_eq!(by_id.len(), log.len(), "ids are unique");
    for (client, client_acks) in acks.iter().enumerate() {
        for (f, &last) in client_acks.iter().enumerate() {
            for k in 0..PER_FRAME {
                let id = last - (PER_FRAME - 1 - k) as u64;
                let want = client_event(client, f * PER_FRAME + k);
                assert_eq!(
                    by_id.get(&id).copied(),
                    Some(&want),
                    "client {client}, frame {f}: acked event {id}"
                );
            }
        }
    }
    let game_overs: Vec<&Value> = log
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["type"] == "game_over")
        .collect();
    assert!(game_overs.len() >= total_acked * PER_FRAME);
    assert!(game_overs.len() <= CLIENTS * FRAMES * PER_FRAME);
    let last = *by_id.keys().last().unwrap();
    eprintln!(
        "{total_acked} frames acked ({} by the killed node), {} game_overs logged",
        acks[victim].len(),
        game_overs.len()
    );

    // The boards and stats equal the logged game_overs, on every survivor.
    let mut wins: BTreeMap<String, i64> = BTreeMap::new();
    let mut stats: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for e in &game_overs {
        let (winner, loser) = (
            e["winner_id"].as_str().unwrap(),
            e["loser_id"].as_str().unwrap(),
        );
        *wins.entry(winner.into()).or_default() += 1;
        wins.entry(loser.into()).or_default();
        let w = stats.entry(winner.into()).or_default();
        (w.0, w.1) = (w.0 + 1, w.1 + 1);
        let l = stats.entry(loser.into()).or_default();
        (l.0, l.2) = (l.0 + 1, l.2 + 1);
    }
    for (i, n) in survivors.iter().enumerate() {
        wait_until(
            Duration::from_secs(30),
            &format!("survivor {i} applied the log up to {last}"),
            || async { applied(n, last).await },
        )
        .await;
    }
    for settled in [false, true] {
        if settled {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (i, n) in survivors.iter().enumerate() {
            let got: BTreeMap<String, i64> = board(n, "exrps").await.into_iter().collect();
            let total: i64 = got.values().sum();
            assert_eq!(
                total,
                game_overs.len() as i64,
                "survivor {i}: wins on the board vs game_overs in the log"
            );
            assert_eq!(got, wins, "survivor {i}: the board");
            for (user, (games, won, lost)) in &stats {
                let (status, body) = n.get(&format!("/stats/exrps/{user}")).await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(
                    body,
                    json!({"games": games, "wins": won, "losses": lost}),
                    "survivor {i}: stats of {user}"
                );
            }
        }
    }
}

// ---- curation on one node at a time ----

#[tokio::test(flavor = "multi_thread")]
async fn curation_removes_each_expired_game_once_across_nodes() {
    let fake = FakeGameServer::start().await;
    // `created` expires after 1 s; every node runs a curation tick each 100 ms.
    let options = Options::curating(&fake, (1, 600, 600, 600, 600));
    let (db, mut nodes) = cluster(&options, 3).await;
    let keep = nodes[0].listed_game("exrps", "keeper").await;
    let removes = |game: &str| {
        fake.calls("remove_game")
            .iter()
            .filter(|c| c["gameId"] == game)
            .count()
    };

    let mut expiring = Vec::new();
    for i in 0..6 {
        let creator = format!("c{i}");
        expiring.push((create(&nodes[i % 3], "exrps", &creator).await, creator));
    }
    wait_until(
        Duration::from_secs(10),
        "every expired game curated",
        || async { expiring.iter().all(|(g, _)| removes(g) > 0) },
    )
    .await;
    // Many more curation ticks on every node.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (game, creator) in &expiring {
        assert_eq!(removes(game), 1, "remove_game calls for {game}");
        for n in &nodes {
            assert!(gone(n, "exrps", game, creator).await, "{game} still there");
        }
    }
    assert_eq!(fake.calls("remove_game").len(), expiring.len());
    assert_eq!(removes(&keep), 0, "a game that has not expired stays");

    // Nothing is pending now: kill the curating node; another one takes
    // curation over and the games that expire next are removed once each.
    let victim = kill_holder(&db, &mut nodes, "curation").await;
    let killed_at = Instant::now();
    let survivors: Vec<&Server> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    let mut later = Vec::new();
    for i in 0..4 {
        let creator = format!("d{i}");
        later.push((create(survivors[i % 2], "exrps", &creator).await, creator));
    }
    let took = taken_over(&db, "curation", nodes[victim].pid(), killed_at).await;
    eprintln!("node {victim} held the curation lease; taken over {took:?} after kill -9");
    wait_until(
        Duration::from_secs(10),
        "every later expired game curated",
        || async { later.iter().all(|(g, _)| removes(g) > 0) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for (game, creator) in &later {
        assert_eq!(removes(game), 1, "remove_game calls for {game}");
        for n in &survivors {
            assert!(gone(n, "exrps", game, creator).await, "{game} still there");
        }
    }
    assert_eq!(
        fake.calls("remove_game").len(),
        expiring.len() + later.len()
    );
    assert_eq!(removes(&keep), 0);
    assert!(listed_everywhere(&survivors, &keep).await);
}

/// Whether every node lists `game` (exrps).
async fn listed_everywhere(nodes: &[&Server], game: &str) -> bool {
    for n in nodes {
        if !open_ids(n, "exrps").await.iter().any(|g| g == game) {
            return false;
        }
    }
    true
}

// ---- a node started later ----

/// What a client can read from `server`: both lobbies (first, as a client
/// right after the start would), top tens, whole boards, and each player's
/// stats and rank.
async fn view(server: &Server, players: &[(&str, &[String])]) -> Value {
    let mut out = serde_json::Map::new();
    for (product, _) in players {
        out.insert(
            format!("open_games {product}"),
            json!(server.open_games(product).await),
        );
    }
    for (product, users) in players {
        let (status, top) = server
            .get(&format!("/leaderboards/top_ten/{product}"))
            .await;
        assert_eq!(status, 200, "{top}");
        out.insert(format!("top_ten {product}"), top);
        out.insert(
            format!("board {product}"),
            json!(board(server, product).await),
        );
        for user in users.iter() {
            let (status, stats) = server.get(&format!("/stats/{product}/{user}")).await;
            assert_eq!(status, 200, "{stats}");
            out.insert(format!("stats {product} {user}"), stats);
            let (status, rank) = server
                .get(&format!("/leaderboards/{product}/players/{user}"))
                .await;
            out.insert(format!("rank {product} {user}"), json!([status, rank]));
        }
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_started_later_answers_like_the_others_at_once() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let (db, nodes) = cluster(&options, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    // Lobbies: games created on either node, listed through the other one.
    let mut listed = Vec::new();
    for (i, creator) in ["c1", "c2", "c3", "c4", "c5"].iter().enumerate() {
        let (on, via) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let id = create(on, "exrps", creator).await;
        via.state_change("exrps", &id, "creator_joined").await;
        listed.push(id);
    }
    let unlisted = create(a, "exrps", "c6").await;
    let chess = create(b, "chess", "k1").await;
    a.state_change("chess", &chess, "creator_joined").await;
    for n in [a, b] {
        wait_until(Duration::from_secs(5), "the games listed", || async {
            open_ids(n, "exrps").await == listed && open_ids(n, "chess").await == [chess.clone()]
        })
        .await;
    }
    // One exrps game fills (and leaves the lobby); the chess game keeps a seat.
    let (status, body) = b.join("exrps", &listed[1], "j1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a.join("chess", &chess, "k2").await;
    assert_eq!(status, 200, "{body}");
    listed.remove(1);

    // Boards: game_overs and weapon picks through both nodes.
    let exrps_players: Vec<String> = (0..12).map(|i| format!("e{i:02}")).collect();
    let chess_players: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    let mut last = 0;
    for chunk in 0..4 {
        let via = if chunk % 2 == 0 { a } else { b };
        let mut events = Vec::new();
        for i in chunk * 30..(chunk + 1) * 30 {
            let (w, l) = ((i * 7) % 12, (i * 7 + 1 + i / 12) % 12);
            if w != l {
                events.push(game_over(&exrps_players[w], &exrps_players[l]));
            }
            events.push(
                json!({"product_id": "exrps", "game_id": "g", "type": "gameplay",
                "event_name": "select_weapon", "event_data": (i % 3).to_string(),
                "user_id": exrps_players[i % 12]}),
            );
        }
        let (status, body) = via.ingest("exrps-secret", &Value::Array(events)).await;
        assert_eq!(status, 200, "{body}");
        let mut events = Vec::new();
        for i in chunk * 8..(chunk + 1) * 8 {
            let (w, l) = (i % 5, (i + 1 + i / 5) % 5);
            if w != l {
                let mut e = game_over(&chess_players[w], &chess_players[l]);
                e["product_id"] = json!("chess");
                events.push(e);
            }
        }
        let (status, body) = via.ingest("chess-secret", &Value::Array(events)).await;
        assert_eq!(status, 200, "{body}");
        last = body["last_id"].as_u64().unwrap();
    }
    for n in [a, b] {
        wait_until(
            Duration::from_secs(20),
            "both consumers applied all",
            || async { applied(n, last).await },
        )
        .await;
        wait_until(Duration::from_secs(5), "the lobbies settled", || async {
            open_ids(n, "exrps").await == listed
                && n.open_games("chess")
                    .await
                    .first()
                    .map(|g| g["players"].clone())
                    == Some(json!(["k1", "k2"]))
        })
        .await;
    }
    let players: [(&str, &[String]); 2] = [("exrps", &exrps_players), ("chess", &chess_players)];
    let want = view(a, &players).await;
    assert_eq!(view(b, &players).await, want, "the two first nodes agree");
    assert_eq!(want["board exrps"].as_array().unwrap().len(), 12, "{want}");
    assert_eq!(want["board chess"].as_array().unwrap().len(), 5, "{want}");

    // A third node: the same answers from its first request on.
    let c = node(&options, &db).await;
    let started = Instant::now();
    let first = view(&c, &players).await;
    let first_took = started.elapsed();
    if first != want {
        // Say how long it takes to agree before failing.
        let mut agreed = None;
        while started.elapsed() < Duration::from_secs(3) {
            if view(&c, &players).await == want {
                agreed = Some(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "node 3 right after `listening on` (read in {first_took:?}) differs; \
             agreed after {agreed:?}\nfirst: {first}\nwant: {want}"
        );
    }
    let status = c.status().await;
    assert_eq!(status["last_event_id"], last, "{status}");
    assert!(!gone(&c, "exrps", &unlisted, "c6").await, "still there");

    // And it is a full node: a join through it takes the game out of every
    // lobby.
    let (status, body) = c.join("exrps", &listed[0], "j2").await;
    assert_eq!(status, 200, "{body}");
    for n in [a, b, &c] {
        wait_until(Duration::from_secs(5), "the full game unlisted", || async {
            !open_ids(n, "exrps").await.contains(&listed[0])
        })
        .await;
    }
}
