//! The service as a whole against the real binary: curation with short
//! expiries, `kill -9` during ingest and after lobby answers, SIGTERM, and
//! configuration errors (API.md "Start", "Curation", "Durability").

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    FakeGameServer, Mode, Options, Server, TempDir, assert_error, listed, ws_recv, ws_send,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn create(server: &Server, product: &str, user: &str) -> String {
    let (s, game) = server.create(product, user).await;
    assert_eq!(s, 200, "{game}");
    game["game_id"].as_str().unwrap().to_string()
}

/// Whether the game is gone: a join by its creator (which changes nothing)
/// answers 404 `game_not_found` rather than 409 `already_joined`.
async fn gone(server: &Server, product: &str, game: &str, creator: &str) -> bool {
    let (s, b) = server.join(product, game, creator).await;
    match s {
        404 => {
            assert_eq!(b["error"], "game_not_found", "{b}");
            true
        }
        409 => {
            assert_eq!(b["error"], "already_joined", "{b}");
            false
        }
        _ => panic!("unexpected {s}: {b}"),
    }
}

/// The calls to `endpoint` about `game`.
fn calls_for(fake: &FakeGameServer, endpoint: &str, game: &str) -> Vec<Value> {
    fake.calls(endpoint)
        .into_iter()
        .filter(|c| c["gameId"] == game)
        .collect()
}

// ---- curation ----

#[tokio::test(flavor = "multi_thread")]
async fn curation_deletes_an_expired_created_game() {
    let fake = FakeGameServer::start().await;
    let options = Options::curating(&fake, (1, 600, 600, 600, 600));
    let server = Server::start(&options).await;
    let keep = server.listed_game("exrps", "1").await;
    let started = Instant::now();
    let expired = create(&server, "exrps", "2").await;
    server
        .wait_for(|| async { !calls_for(&fake, "remove_game", &expired).is_empty() })
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "removed before its expiry: {:?}",
        started.elapsed()
    );
    assert_eq!(
        calls_for(&fake, "remove_game", &expired),
        vec![json!({"gameId": expired})]
    );
    server
        .wait_for(|| async { gone(&server, "exrps", &expired, "2").await })
        .await;
    // A game in a state that has not expired is left alone.
    assert!(calls_for(&fake, "remove_game", &keep).is_empty());
    assert!(listed(&server, "exrps", &keep).await.is_some());
    // A late creator_joined report does not bring the removed game back.
    server
        .state_change("exrps", &expired, "creator_joined")
        .await;
    let marker = server.listed_game("exrps", "3").await;
    assert!(listed(&server, "exrps", &marker).await.is_some());
    assert!(gone(&server, "exrps", &expired, "2").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn curation_resets_a_full_game_whose_joiner_never_connected() {
    let fake = FakeGameServer::start().await;
    let options = Options::curating(&fake, (600, 1, 600, 600, 600));
    let server = Server::start(&options).await;
    let id = server.listed_game("exrps", "1").await;
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_eq!(s, 200, "{b}");
    assert!(listed(&server, "exrps", &id).await.is_none(), "full");

    server
        .wait_for(|| async { !calls_for(&fake, "remove_player", &id).is_empty() })
        .await;
    assert_eq!(
        calls_for(&fake, "remove_player", &id),
        vec![json!({"gameId": id, "userId": "2"})]
    );
    server
        .wait_for(|| async { listed(&server, "exrps", &id).await.is_some() })
        .await;
    assert_eq!(
        listed(&server, "exrps", &id).await.unwrap()["players"],
        json!(["1"])
    );
    assert!(
        calls_for(&fake, "remove_game", &id).is_empty(),
        "reset, not removed"
    );

    // Joinable again; the next joiner who never connects is removed too.
    let (s, b) = server.join("exrps", &id, "3").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["players"], json!(["1", "3"]));
    server
        .wait_for(|| async { calls_for(&fake, "remove_player", &id).len() == 2 })
        .await;
    let reset_seen = Instant::now();
    assert_eq!(
        calls_for(&fake, "remove_player", &id)[1],
        json!({"gameId": id, "userId": "3"})
    );
    // The reset restarted the creator_joined clock: the lone creator's game
    // expires one full period later, not on the next pass.
    server
        .wait_for(|| async { !calls_for(&fake, "remove_game", &id).is_empty() })
        .await;
    assert!(
        reset_seen.elapsed() >= Duration::from_millis(700),
        "the clock was not restarted: removed {:?} after the reset",
        reset_seen.elapsed()
    );
    server
        .wait_for(|| async { gone(&server, "exrps", &id, "1").await })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn curation_goes_on_when_a_game_server_is_down() {
    let fake = FakeGameServer::start().await;
    let down = FakeGameServer::start().await;
    let mut options = Options::new(&fake);
    options.expiry = (1, 600, 600, 600, 600);
    options.curation_interval_ms = 250;
    // A third product whose game server fails every removal.
    options.extra = format!(
        r#"
[[games]]
product_id = "down"
game_server_url = "{}"
game_socket_url = "127.0.0.1:9999"
ingest_key = "down-secret"
"#,
        down.url
    );
    let server = Server::start(&options).await;
    down.set(Mode::Ok, Mode::Ok, Mode::Fail);
    let stuck = create(&server, "down", "1").await;
    let other = create(&server, "exrps", "2").await;

    // The failing call does not stop the other game's curation.
    server
        .wait_for(|| async { gone(&server, "exrps", &other, "2").await })
        .await;
    assert_eq!(calls_for(&fake, "remove_game", &other).len(), 1);
    // The failed call is retried on later passes; the game stays meanwhile.
    server
        .wait_for(|| async { calls_for(&down, "remove_game", &stuck).len() >= 2 })
        .await;
    assert!(
        !gone(&server, "down", &stuck, "1").await,
        "kept while the call fails"
    );
    // ... for a bounded number of tries.
    server
        .wait_for(|| async { gone(&server, "down", &stuck, "1").await })
        .await;
    let tries = calls_for(&down, "remove_game", &stuck).len();
    assert!((2..=10).contains(&tries), "{tries} tries");
    assert!(calls_for(&fake, "remove_game", &stuck).is_empty());

    // A game server that comes back gets the retried call and the game goes.
    let recovers = create(&server, "down", "3").await;
    server
        .wait_for(|| async { !calls_for(&down, "remove_game", &recovers).is_empty() })
        .await;
    assert!(!gone(&server, "down", &recovers, "3").await);
    down.set(Mode::Ok, Mode::Ok, Mode::Ok);
    server
        .wait_for(|| async { gone(&server, "down", &recovers, "3").await })
        .await;
    assert!(calls_for(&down, "remove_game", &recovers).len() >= 2);
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("varcade_game_server_calls_total")
                && l.contains("remove_game")
                && !l.contains("outcome=\"ok\"")),
        "failed calls are counted:\n{text}"
    );
}

// ---- kill -9 ----

const CLIENTS: usize = 4;
const GAMES_PER_CLIENT: usize = 5;
/// Filler frames between two script events.
const STRIDE: usize = 40;
/// The script each game goes through after setup (creator_joined, players
/// 1, 2, 3 of 3): (type, new_state or player_id).
const SCRIPT: [(&str, &str); 9] = [
    ("state_change", "all_players_joined"),
    ("state_change", "in_progress"),
    ("player_disconnect", "3"),
    ("state_change", "all_players_joined"),
    ("state_change", "in_progress"),
    ("player_disconnect", "2"),
    ("state_change", "all_players_joined"),
    ("state_change", "in_progress"),
    ("state_change", "ended"),
];
const FRAMES: usize = SCRIPT.len() * GAMES_PER_CLIENT * STRIDE;

/// The frames client `c` sends: filler batches of 1 to 3 `tick` events, and
/// every `STRIDE` frames the next script event of one of its games. Every
/// event is marked with (client, frame, position).
fn client_frames(c: usize, games: &[String]) -> Vec<Vec<Value>> {
    (0..FRAMES)
        .map(|i| {
            let mark = |e: Value, pos: usize| {
                let mut e = e;
                e["c"] = json!(c);
                e["i"] = json!(i);
                e["pos"] = json!(pos);
                e
            };
            if i % STRIDE == 0 {
                let k = i / STRIDE;
                let (step, game) = (k / GAMES_PER_CLIENT, &games[k % GAMES_PER_CLIENT]);
                let (kind, value) = SCRIPT[step];
                let field = if kind == "state_change" {
                    "new_state"
                } else {
                    "player_id"
                };
                let mut event = json!({"product_id": "chess", "game_id": game, "type": kind});
                event[field] = json!(value);
                vec![
                    mark(
                        json!({"product_id": "chess", "game_id": "filler", "type": "tick"}),
                        0,
                    ),
                    mark(event, 1),
                ]
            } else {
                (0..i % 3 + 1)
                    .map(|pos| {
                        mark(
                            json!({"product_id": "chess", "game_id": "filler", "type": "tick"}),
                            pos,
                        )
                    })
                    .collect()
            }
        })
        .collect()
}

/// The matchmaker's rules, as a model: (state, players).
fn model_apply(game: &mut (String, Vec<String>), event: &Value) {
    const ORDER: [&str; 5] = [
        "created",
        "creator_joined",
        "all_players_joined",
        "in_progress",
        "ended",
    ];
    let pos = |s: &str| ORDER.iter().position(|o| *o == s).unwrap();
    match event["type"].as_str().unwrap() {
        "state_change" => {
            let (from, to) = (pos(&game.0), pos(event["new_state"].as_str().unwrap()));
            if to == from + 1 {
                game.0 = ORDER[to].to_string();
            }
        }
        "player_disconnect" => {
            let player = event["player_id"].as_str().unwrap();
            let live = (1..=3).contains(&pos(&game.0));
            if live && player != "1" && game.1.iter().any(|p| p == player) {
                game.1.retain(|p| p != player);
                game.0 = "creator_joined".into();
            }
        }
        _ => {}
    }
}

/// `varcade_games{product=..., state=...}` values from `/metrics`.
async fn game_gauges(server: &Server, product: &str) -> BTreeMap<String, i64> {
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let mut out = BTreeMap::new();
    for line in body.as_str().unwrap().lines() {
        let Some(rest) = line.strip_prefix("varcade_games{") else {
            continue;
        };
        if !rest.contains(&format!("product=\"{product}\"")) {
            continue;
        }
        let state = rest
            .split("state=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if value != 0.0 {
            out.insert(state.to_string(), value as i64);
        }
    }
    out
}

/// Waits until every event ingested so far has been applied by the
/// matchmaker: a marker game reported after them reaches the lobby.
async fn settle(server: &Server) {
    let id = create(server, "exrps", "marker").await;
    server.state_change("exrps", &id, "creator_joined").await;
    server
        .wait_for(|| async { listed(server, "exrps", &id).await.is_some() })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_pipelined_ingest_loses_no_acked_event() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let server = Server::start(&options).await;

    // Games of 3 seats, all taken: creator_joined, players 1, 2, 3.
    let mut games = Vec::new();
    for _ in 0..CLIENTS * GAMES_PER_CLIENT {
        games.push(create(&server, "chess", "1").await);
    }
    let batch: Vec<Value> = games
        .iter()
        .map(|g| json!({"product_id": "chess", "game_id": g, "type": "state_change", "new_state": "creator_joined"}))
        .collect();
    let (s, b) = server.ingest("chess-secret", &json!(batch)).await;
    assert_eq!(s, 200, "{b}");
    let setup_last = b["last_id"].as_u64().unwrap();
    server
        .wait_for(|| async { server.open_games("chess").await.len() == games.len() })
        .await;
    for g in &games {
        for user in ["2", "3"] {
            let (s, b) = server.join("chess", g, user).await;
            assert_eq!(s, 200, "{b}");
        }
    }

    // Pipelining clients; kill -9 once a tenth of the frames are acked.
    let mut sync_ws = server.ws("chess-secret").await;
    let acked_frames = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut sent_frames = Vec::new();
    for c in 0..CLIENTS {
        let frames = client_frames(c, &games[c * GAMES_PER_CLIENT..(c + 1) * GAMES_PER_CLIENT]);
        sent_frames.push(frames.clone());
        let (mut sink, mut stream) = server.ws("chess-secret").await.split();
        let acked_frames = acked_frames.clone();
        let reader = tokio::spawn(async move {
            let mut acks = Vec::new();
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_secs(20), stream.next()).await
            {
                if let Message::Text(text) = message {
                    let ack: Value = serde_json::from_str(text.as_str()).unwrap();
                    assert!(ack["ack"].is_u64(), "{ack}");
                    acks.push((ack["ack"].as_u64().unwrap(), ack["count"].as_u64().unwrap()));
                    acked_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            acks
        });
        let writer = tokio::spawn(async move {
            for (i, frame) in frames.iter().enumerate() {
                let text = Value::Array(frame.clone()).to_string();
                if sink.feed(Message::text(text)).await.is_err() {
                    return;
                }
                if i % 20 == 19 && sink.flush().await.is_err() {
                    return;
                }
            }
            let _ = sink.flush().await;
        });
        tasks.push((reader, writer));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked_frames.load(Ordering::Relaxed) < CLIENTS * FRAMES / 10 {
        assert!(Instant::now() < deadline, "ingest made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One more frame on its own connection, killed right after its ack.
    let last_word =
        json!({"product_id": "chess", "game_id": "filler", "type": "tick", "last": true});
    ws_send(&mut sync_ws, &last_word.to_string()).await;
    let last_ack = ws_recv(&mut sync_ws).await;
    let server = server.crash_and_restart(&options).await;
    let last_id = last_ack["ack"].as_u64().unwrap();
    let mut acks = Vec::new();
    for (reader, writer) in tasks {
        acks.push(reader.await.unwrap());
        writer.await.unwrap();
    }
    let total_acked: usize = acks.iter().map(Vec::len).sum();
    assert!(total_acked >= CLIENTS * FRAMES / 10);

    // Every acked frame is in the log with its ids and contents; each
    // client's frames in the log are a prefix of what it sent, once each.
    let log = server.events().await;
    let mut ids: Vec<u64> = log.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), log.len(), "no id twice");
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "no gaps");
    let logged_last = log.iter().find(|e| e["id"] == last_id);
    assert_eq!(
        logged_last.map(|e| &e["event"]),
        Some(&last_word),
        "the frame acked right before kill -9 is in the log"
    );
    let mut by_frame: HashMap<(u64, u64), Vec<&Value>> = HashMap::new();
    for e in log
        .iter()
        .filter(|e| e["id"].as_u64().unwrap() > setup_last && e["id"] != last_id)
    {
        let key = (
            e["event"]["c"].as_u64().unwrap(),
            e["event"]["i"].as_u64().unwrap(),
        );
        by_frame.entry(key).or_default().push(e);
    }
    let mut present_total = 0;
    for c in 0..CLIENTS {
        let present = (0..FRAMES)
            .take_while(|i| by_frame.contains_key(&(c as u64, *i as u64)))
            .count();
        present_total += present;
        assert!(
            present >= acks[c].len(),
            "client {c}: {} frames acked, only {present} in the log",
            acks[c].len()
        );
        for (i, frame) in sent_frames[c].iter().enumerate() {
            let Some(logged) = by_frame.get(&(c as u64, i as u64)) else {
                continue;
            };
            assert!(
                i < present,
                "client {c}: frame {i} logged after a lost frame"
            );
            let events: Vec<&Value> = logged.iter().map(|e| &e["event"]).collect();
            assert_eq!(
                events,
                frame.iter().collect::<Vec<_>>(),
                "client {c} frame {i}"
            );
            let first = logged[0]["id"].as_u64().unwrap();
            for (n, e) in logged.iter().enumerate() {
                assert_eq!(e["id"], first + n as u64, "a frame's ids are consecutive");
            }
            if let Some(&(ack, count)) = acks[c].get(i) {
                assert_eq!(
                    (ack, count),
                    (first + frame.len() as u64 - 1, frame.len() as u64),
                    "client {c} frame {i}: the ack names the logged ids"
                );
            }
        }
    }
    assert_eq!(present_total, by_frame.len(), "nothing but whole prefixes");
    eprintln!(
        "kill -9: {total_acked} frames acked, {present_total} of {} in the log",
        CLIENTS * FRAMES
    );

    // The matchmaker applied exactly the logged events.
    let mut model: BTreeMap<String, (String, Vec<String>)> = games
        .iter()
        .map(|g| {
            (
                g.clone(),
                (
                    "creator_joined".into(),
                    vec!["1".into(), "2".into(), "3".into()],
                ),
            )
        })
        .collect();
    for e in log
        .iter()
        .filter(|e| e["id"].as_u64().unwrap() > setup_last)
    {
        if let Some(game) = e["event"]["game_id"]
            .as_str()
            .and_then(|g| model.get_mut(g))
        {
            model_apply(game, &e["event"]);
        }
    }
    settle(&server).await;
    let mut want_listed: Vec<(String, String)> = model
        .iter()
        .filter(|(_, (state, players))| state == "creator_joined" && players.len() < 3)
        .map(|(g, (_, players))| (g.clone(), json!(players).to_string()))
        .collect();
    want_listed.sort();
    let mut got_listed: Vec<(String, String)> = server
        .open_games("chess")
        .await
        .iter()
        .map(|g| {
            (
                g["game_id"].as_str().unwrap().to_string(),
                g["players"].to_string(),
            )
        })
        .collect();
    got_listed.sort();
    assert_eq!(got_listed, want_listed);
    let mut want_states: BTreeMap<String, i64> = BTreeMap::new();
    for (state, _) in model.values() {
        *want_states.entry(state.clone()).or_default() += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = game_gauges(&server, "chess").await;
        if got == want_states {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "games by state {got:?}, want {want_states:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Ids are never reused.
    let (s, b) = server
        .ingest(
            "chess-secret",
            &json!({"product_id": "chess", "game_id": "x", "type": "tick"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let last_before = server.events().await.len() as u64 - 1;
    assert_eq!(b["first_id"], last_before + 1, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_create_and_join_keeps_them() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let server = Server::start(&options).await;
    let first = server.listed_game("chess", "1").await;
    let second = server.listed_game("chess", "4").await;
    let (s, b) = server.join("chess", &first, "2").await;
    assert_eq!(s, 200, "{b}");
    let server = server.crash_and_restart(&options).await;
    let (s, b) = server.join("chess", &first, "2").await;
    assert_error(s, &b, 409, "already_joined");
    let open = server.open_games("chess").await;
    let ids: Vec<&str> = open
        .iter()
        .map(|g| g["game_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![first.as_str(), second.as_str()], "order survives");
    assert_eq!(open[0]["players"], json!(["1", "2"]));

    // Concurrent creates and joins, each answered 200, then kill -9.
    let creators: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let (creates, joins) = futures_util::future::join(
        futures_util::future::join_all(creators.iter().map(|c| server.create("exrps", c))),
        futures_util::future::join_all(
            ["3", "5", "6"]
                .iter()
                .zip([&first, &second, &second])
                .map(|(user, game)| server.join("chess", game, user)),
        ),
    )
    .await;
    let mut created = Vec::new();
    for (s, b) in creates {
        assert_eq!(s, 200, "{b}");
        created.push(b["game_id"].as_str().unwrap().to_string());
    }
    for (s, b) in joins {
        assert_eq!(s, 200, "{b}");
    }
    let server = server.crash_and_restart(&options).await;
    for (game, user) in [(&first, "3"), (&second, "5"), (&second, "6")] {
        let (s, b) = server.join("chess", game, user).await;
        assert_error(s, &b, 409, "already_joined");
    }
    assert!(
        server.open_games("chess").await.is_empty(),
        "both games are full"
    );
    for (i, id) in created.iter().enumerate() {
        // Stored in `created`: not joinable, but there (not 404) and
        // listed once the game server reports creator_joined.
        let (s, b) = server.join("exrps", id, "x").await;
        assert_error(s, &b, 409, "game_not_joinable");
        let (s, b) = server.join("exrps", id, &format!("c{i}")).await;
        assert_error(s, &b, 409, "already_joined");
        server.state_change("exrps", id, "creator_joined").await;
    }
    server
        .wait_for(|| async { server.open_games("exrps").await.len() == created.len() })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_an_ack_keeps_the_event() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let mut server = Server::start(&options).await;
    let mut want = Vec::new();
    for round in 0..3 {
        let mut ws = server.ws("exrps-secret").await;
        let event = json!({"product_id": "exrps", "game_id": "g", "type": "tick", "ws": round});
        ws_send(&mut ws, &event.to_string()).await;
        let ack = ws_recv(&mut ws).await;
        assert_eq!(ack, json!({"ack": want.len() + 1, "count": 1}));
        want.push(event);
        let event = json!({"product_id": "exrps", "game_id": "g", "type": "tick", "post": round});
        let (s, b) = server.ingest("exrps-secret", &event).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["last_id"], want.len() + 1, "{b}");
        want.push(event);
        server = server.crash_and_restart(&options).await;
        let logged: Vec<Value> = server
            .events()
            .await
            .iter()
            .map(|e| e["event"].clone())
            .collect();
        assert_eq!(logged, want, "round {round}");
    }
}

// ---- SIGTERM ----

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests_exits_0_and_keeps_state() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let mut server = Server::start(&options).await;
    let game = server.listed_game("exrps", "1").await;
    let full = server.listed_game("chess", "1").await;
    for user in ["2", "3"] {
        assert_eq!(server.join("chess", &full, user).await.0, 200);
    }
    let mut ws = server.ws("exrps-secret").await;
    for n in 0..3 {
        let event = json!({"product_id": "exrps", "game_id": "g", "type": "tick", "n": n});
        ws_send(&mut ws, &event.to_string()).await;
        assert_eq!(ws_recv(&mut ws).await["count"], 1);
    }
    let events_before = server.events().await;

    // A join in flight (the game server hangs past the 1 s timeout) when
    // SIGTERM arrives is still answered; an idle WebSocket stays open.
    fake.set(Mode::Ok, Mode::Hang, Mode::Ok);
    let joins_before = fake.calls("join_game").len();
    let http = server.http.clone();
    let url = server.url(&format!("/game_lobby/exrps/join_game/{game}"));
    let in_flight = tokio::spawn(async move {
        let r = http
            .post(url)
            .header("authorization", common::token("2"))
            .send()
            .await
            .expect("an in-flight request is answered");
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    });
    let calls = fake.clone();
    server
        .wait_for(|| async { calls.calls("join_game").len() > joins_before })
        .await;
    let started = Instant::now();
    assert_eq!(server.terminate(), Some(0));
    let (s, b) = in_flight.await.unwrap();
    assert_error(s, &b, 502, "game_server_error");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(ws);

    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    let server = server.restart(&options).await;
    assert_eq!(server.events().await, events_before);
    let open = server.open_games("exrps").await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["game_id"], game.as_str());
    assert_eq!(
        open[0]["players"],
        json!(["1"]),
        "the failed join was undone"
    );
    let (s, b) = server.join("chess", &full, "3").await;
    assert_error(s, &b, 409, "already_joined");
    let (s, b) = server
        .ingest(
            "exrps-secret",
            &json!({"product_id": "exrps", "game_id": "g", "type": "tick"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["first_id"], events_before.len() as u64 + 1);
}

// ---- configuration errors ----

/// Runs `varcade serve` with `args`; returns the exit code, stderr and how
/// long it ran. The process is killed after 5 s.
fn run_varcade(args: &[&str], dir: &std::path::Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_varcade"))
        .args(args)
        .current_dir(dir)
        .env_remove("VARCADE_BIND")
        .env_remove("VARCADE_DATA_DIR")
        .env_remove("VARCADE_JWT_SECRET")
        .env_remove("VARCADE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.and_then(|s| s.code()), stderr, elapsed)
}

const GOOD_GAME: &str = r#"
[[games]]
product_id = "exrps"
game_server_url = "http://127.0.0.1:8080"
game_socket_url = "127.0.0.1:8085"
ingest_key = "exrps-secret"
leaderboard = "wins"
stats = "exrps"
[games.settings]
num_players = 2
"#;

#[test]
fn config_errors_exit_2_with_one_line_naming_the_key() {
    let dir = TempDir::new();
    let db = dir.0.join("db");
    let head = format!("data_dir = \"{}\"\nbind = \"127.0.0.1:0\"\n", db.display());
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "top_level_key.toml",
            format!("{head}bnd = \"x\"\n{GOOD_GAME}"),
            vec!["bnd"],
        ),
        (
            "nested_key.toml",
            format!("{head}[lobby]\ndefault_page_sizes = 3\n{GOOD_GAME}"),
            vec!["default_page_sizes"],
        ),
        (
            "expiry_key.toml",
            format!("{head}[expiry]\ncreated = 5\nfinished = 5\n{GOOD_GAME}"),
            vec!["finished"],
        ),
        (
            "game_key.toml",
            format!(
                "{head}{}",
                GOOD_GAME.replace("stats =", "ingest_keys = \"k\"\nstats =")
            ),
            vec!["ingest_keys"],
        ),
        (
            "wrong_type.toml",
            format!("{head}game_server_timeout_ms = \"soon\"\n{GOOD_GAME}"),
            vec!["game_server_timeout_ms"],
        ),
        (
            "wrong_nested_type.toml",
            format!("{head}[lobby]\nmax_page_size = \"many\"\n{GOOD_GAME}"),
            vec!["max_page_size"],
        ),
        (
            "wrong_game_type.toml",
            format!(
                "{head}{}",
                GOOD_GAME.replace("ingest_key = \"exrps-secret\"", "ingest_key = 7")
            ),
            vec!["ingest_key"],
        ),
        (
            "leaderboard.toml",
            format!("{head}{}", GOOD_GAME.replace("\"wins\"", "\"chess\"")),
            vec!["leaderboard", "chess"],
        ),
        (
            "stats.toml",
            format!(
                "{head}{}",
                GOOD_GAME.replace("stats = \"exrps\"", "stats = \"nope\"")
            ),
            vec!["stats", "nope"],
        ),
        (
            "season_period.toml",
            format!("{head}{GOOD_GAME}[games.season]\nperiod = \"hourly\"\n"),
            vec!["games[0].season.period", "hourly"],
        ),
        (
            "season_key.toml",
            format!("{head}{GOOD_GAME}[games.season]\nperiod = \"weekly\"\nkept = 3\n"),
            vec!["kept"],
        ),
        (
            "season_keep_type.toml",
            format!("{head}{GOOD_GAME}[games.season]\nperiod = \"weekly\"\nkeep = \"all\"\n"),
            vec!["keep"],
        ),
        ("unparsable.toml", format!("{head}[lobby\n"), vec![]),
    ];
    for (name, text, needles) in &cases {
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        let (code, stderr, elapsed) =
            run_varcade(&["serve", "--config", path.to_str().unwrap()], &dir.0);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(elapsed < Duration::from_secs(1), "{name}: took {elapsed:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: one line, got {stderr:?}");
        assert!(
            lines[0].contains(name),
            "{name}: the file is named: {stderr}"
        );
        for needle in needles {
            assert!(
                lines[0].contains(needle),
                "{name}: {needle} not in {stderr}"
            );
        }
        assert!(!db.exists(), "{name}: nothing was opened");
    }

    // A missing --config file.
    let missing = dir.0.join("no-such.toml");
    let (code, stderr, elapsed) =
        run_varcade(&["serve", "--config", missing.to_str().unwrap()], &dir.0);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("no-such.toml"), "{stderr}");

    // An unwritable data directory (a path below a regular file).
    let file = dir.0.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad_dir = file.join("db");
    let (code, stderr, elapsed) = run_varcade(
        &[
            "serve",
            "--data-dir",
            bad_dir.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
        &dir.0,
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("a-file"), "{stderr}");

    // The same file without the mistake starts.
    let good = dir.0.join("good.toml");
    std::fs::write(&good, format!("{head}{GOOD_GAME}")).unwrap();
    let (mut child, addr) = common::spawn(&["serve", "--config", good.to_str().unwrap()], &[]);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let _ = child.kill();
    let _ = child.wait();
}
