//! Robustness against the real binary: joins whose client gives up while the
//! game server is slow, metric label sets that untrusted input cannot grow,
//! SIGTERM with a large backlog of unapplied events, and the connection cap
//! (API.md "Lobby", "Event ingest", "Operations", "Limits and overload").

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FakeGameServer, Mode, Options, Server, listed, token, wait_until};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

// ---- abandoned joins ----

/// Sends a join for `user` from a client that gives up after 0.5 s, and
/// asserts that it did give up (the game server is slower than that).
async fn abandoned_join(server: &Server, game: &str, user: &str) -> Instant {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let sent = Instant::now();
    let result = client
        .post(server.url(&format!("/game_lobby/exrps/join_game/{game}")))
        .header("authorization", token(user))
        .send()
        .await;
    match result {
        Err(e) => assert!(e.is_timeout(), "expected a client timeout, got {e}"),
        Ok(r) => panic!(
            "the join was answered ({}) before the client gave up",
            r.status()
        ),
    }
    sent
}

/// The recorded calls to `endpoint` for `game` and `user`.
fn calls_for(fake: &FakeGameServer, endpoint: &str, game: &str, user: &str) -> usize {
    fake.calls(endpoint)
        .iter()
        .filter(|c| c["gameId"] == game && c["userId"] == user)
        .count()
}

/// Waits (5 s at most) until the game server received the join of `user`
/// to `game`, and asserts it received it once.
async fn asked(fake: &FakeGameServer, game: &str, user: &str) {
    wait_until(
        Duration::from_secs(5),
        "the game server is asked",
        || async { calls_for(fake, "join_game", game, user) > 0 },
    )
    .await;
    assert_eq!(calls_for(fake, "join_game", game, user), 1);
}

/// Whether the seat of `joiner` in the full two-player `game` is held: the
/// game is not listed, a third player cannot join and the joiner is in it.
async fn seat_held(server: &Server, game: &str, joiner: &str, third: &str) -> bool {
    if listed(server, "exrps", game).await.is_some() {
        return false;
    }
    let (s, b) = server.join("exrps", game, third).await;
    if s != 409 || b["error"] != "game_not_joinable" {
        return false;
    }
    let (s, b) = server.join("exrps", game, joiner).await;
    s == 409 && b["error"] == "already_joined"
}

/// Whether `game` is listed again with only its creator.
async fn listed_with_creator_only(server: &Server, game: &str, creator: &str) -> bool {
    listed(server, "exrps", game)
        .await
        .is_some_and(|g| g["players"] == json!([creator]))
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_join_with_a_slow_game_server_agrees_with_the_game_server() {
    let fake = FakeGameServer::start().await;
    let options = Options {
        timeout_ms: 5000,
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;

    // The game server takes 3 s and then accepts: the player is in the game
    // although the client left after 0.5 s.
    let game = server.listed_game("exrps", "1").await;
    fake.set(Mode::Ok, Mode::Delay(3000), Mode::Ok);
    let sent = abandoned_join(&server, &game, "2").await;
    asked(&fake, &game, "2").await;
    // Only the state after the game server answered counts.
    tokio::time::sleep(
        (sent + Duration::from_millis(3300)).saturating_duration_since(Instant::now()),
    )
    .await;
    wait_until(Duration::from_secs(10), "the accepted join is kept", || {
        seat_held(&server, &game, "2", "3")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        seat_held(&server, &game, "2", "3").await,
        "the join stays in place"
    );
    assert_eq!(
        calls_for(&fake, "remove_player", &game, "2"),
        0,
        "the game server accepted the player; nothing removes them"
    );
    assert_eq!(calls_for(&fake, "join_game", &game, "3"), 0);

    // The game server takes 1.5 s and then refuses: the seat is released
    // and the next player gets it.
    let game = server.listed_game("exrps", "11").await;
    fake.set(Mode::Ok, Mode::DelayFail(1500), Mode::Ok);
    let sent = abandoned_join(&server, &game, "12").await;
    asked(&fake, &game, "12").await;
    tokio::time::sleep(
        (sent + Duration::from_millis(1800)).saturating_duration_since(Instant::now()),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the refused join is undone",
        || listed_with_creator_only(&server, &game, "11"),
    )
    .await;
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    let (s, b) = server.join("exrps", &game, "13").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["players"], json!(["11", "13"]), "{b}");
    assert!(
        listed(&server, "exrps", &game).await.is_none(),
        "full again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_join_past_the_game_server_timeout_releases_the_seat_and_removes_the_player() {
    let fake = FakeGameServer::start().await;
    let options = Options {
        timeout_ms: 1000,
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;
    let game = server.listed_game("exrps", "1").await;
    // The game server answers only after varcade stopped waiting (1 s).
    fake.set(Mode::Ok, Mode::Delay(3000), Mode::Ok);
    let sent = abandoned_join(&server, &game, "2").await;
    asked(&fake, &game, "2").await;
    tokio::time::sleep(
        (sent + Duration::from_millis(1200)).saturating_duration_since(Instant::now()),
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "seat released and remove_player sent",
        || async {
            calls_for(&fake, "remove_player", &game, "2") >= 1
                && listed_with_creator_only(&server, &game, "1").await
        },
    )
    .await;
    // Settled: it stays that way after the game server's late answer.
    let settle = (sent + Duration::from_millis(3500)).saturating_duration_since(Instant::now());
    tokio::time::sleep(settle).await;
    assert!(listed_with_creator_only(&server, &game, "1").await);
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    let (s, b) = server.join("exrps", &game, "3").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["players"], json!(["1", "3"]), "{b}");
}

// ---- metric label sets ----

/// The value of the sample `name` whose labels are exactly `labels` (in any
/// order), if the text has one.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, body) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or(rest)),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let mut have: Vec<String> = body
            .split(',')
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        have.sort();
        if have == want {
            return value.parse().ok();
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn distinct_event_types_give_a_bounded_number_of_series() {
    let (_fake, server) = common::setup().await;
    let other = [("product", "exrps"), ("type", "other")];
    let ingested = "varcade_events_ingested_total";
    let before = server.metrics_text().await;
    let other_before = sample(&before, ingested, &other).unwrap_or(0.0);

    let events: Vec<Value> = (0..5000)
        .map(|i| json!({"product_id": "exrps", "game_id": "g-types", "type": format!("t{i}")}))
        .collect();
    let (s, b) = server.ingest("exrps-secret", &Value::from(events)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["count"], 5000, "{b}");

    wait_until(
        Duration::from_secs(10),
        "the 5,000 events are counted as type=\"other\"",
        || async {
            let text = server.metrics_text().await;
            sample(&text, ingested, &other).unwrap_or(0.0) >= other_before + 5000.0
        },
    )
    .await;
    let after = server.metrics_text().await;
    assert_eq!(
        sample(&after, ingested, &other),
        Some(other_before + 5000.0),
        "every event of an unlisted type counts once as other"
    );
    assert!(
        !after.contains("t4999"),
        "an event type became a label value"
    );
    assert!(
        !after.contains("\"t0\""),
        "an event type became a label value"
    );
    assert!(
        after.len() < before.len() + 64 * 1024,
        "the metrics grew by {} bytes",
        after.len() - before.len()
    );

    // A custom HTTP method is answered (a JSON 405 on a route) and does
    // not become a label value.
    let method = reqwest::Method::from_bytes(b"FOOBAR").unwrap();
    for path in ["/game_lobby/exrps/open_games", "/healthz", "/no/such/route"] {
        let r = server
            .http
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if path.starts_with("/game_lobby") {
            assert_eq!(status, 405, "FOOBAR {path}");
        } else {
            assert!(status < 500, "FOOBAR {path}: {status}");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = server.metrics_text().await;
    assert!(
        !text.to_ascii_lowercase().contains("foobar"),
        "a custom method became a label value"
    );
    assert!(text.len() < before.len() + 64 * 1024);
}

// ---- SIGTERM with a backlog ----

const PLAYERS: u64 = 1000;
const FRAMES: u64 = 2000;
const PER_FRAME: u64 = 500;
const SOCKETS: u64 = 4;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn player(n: u64) -> String {
    format!("p{n}")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_million_unapplied_events_exits_within_10_s_and_applies_each_once() {
    // On PostgreSQL a tenth: its stats consumer applies about 5,000 events
    // a second in a debug build, and the backlog must clear within 120 s.
    let frame_count = if common::postgres() {
        FRAMES / 10
    } else {
        FRAMES
    };
    let total = frame_count * PER_FRAME;
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let mut server = Server::start(&options).await;

    // The frames, per socket, and the expected wins and losses per player.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut wins = vec![0u64; PLAYERS as usize];
    let mut losses = vec![0u64; PLAYERS as usize];
    let mut frames: Vec<Vec<String>> = vec![Vec::new(); SOCKETS as usize];
    for f in 0..frame_count {
        let mut frame = String::with_capacity(PER_FRAME as usize * 100);
        frame.push('[');
        for e in 0..PER_FRAME {
            let winner = rng.next() % PLAYERS;
            let loser = (winner + 1 + rng.next() % (PLAYERS - 1)) % PLAYERS;
            wins[winner as usize] += 1;
            losses[loser as usize] += 1;
            if e > 0 {
                frame.push(',');
            }
            frame.push_str(&format!(
                r#"{{"product_id":"exrps","game_id":"g{f}-{e}","type":"game_over","winner_id":"{}","loser_id":"{}"}}"#,
                player(winner),
                player(loser)
            ));
        }
        frame.push(']');
        frames[(f % SOCKETS) as usize].push(frame);
    }

    // Ingest as fast as possible: each socket sends all its frames while
    // reading acks.
    let started = Instant::now();
    let mut sockets = Vec::new();
    for frames in frames {
        let ws = server.ws("exrps-secret").await;
        sockets.push(tokio::spawn(async move {
            let (mut sink, mut stream) = ws.split();
            let n = frames.len();
            let sender = tokio::spawn(async move {
                for frame in frames {
                    sink.send(Message::text(frame)).await.expect("send a frame");
                }
                sink
            });
            let mut last = 0;
            for _ in 0..n {
                let next = tokio::time::timeout(Duration::from_secs(30), stream.next())
                    .await
                    .expect("an ack within 30 s");
                let ack: Value = match next {
                    Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str()).unwrap(),
                    other => panic!("expected an ack, got {other:?}"),
                };
                assert_eq!(ack["count"], PER_FRAME, "{ack}");
                let id = ack["ack"].as_u64().unwrap_or_else(|| panic!("{ack}"));
                assert!(id > last, "acks increase: {id} after {last}");
                last = id;
            }
            let sink = sender.await.unwrap();
            (sink, stream)
        }));
    }
    let mut open = Vec::new();
    for socket in sockets {
        open.push(socket.await.unwrap());
    }
    let ingest_time = started.elapsed();
    let status = server.status().await;
    let lag = status["consumers"]["stats"]["lag"]
        .as_u64()
        .unwrap_or_else(|| panic!("no consumers.stats.lag: {status}"));
    println!(
        "ingested {total} events in {ingest_time:?} ({:.0}/s); stats lag right after: {lag}",
        total as f64 / ingest_time.as_secs_f64()
    );
    assert_eq!(status["last_event_id"], total, "{status}");
    assert!(lag > 0, "the stats consumer cannot have kept up: {status}");

    // SIGTERM with the backlog and the sockets still open.
    let stopping = Instant::now();
    assert_eq!(server.terminate(), Some(0));
    let stop_time = stopping.elapsed();
    println!("exit after SIGTERM in {stop_time:?}");
    assert!(stop_time < Duration::from_secs(10), "{stop_time:?}");
    drop(open);

    // Restart and let both consumers finish.
    let server = server.restart(&options).await;
    let restarted = Instant::now();
    let mut status = Value::Null;
    for _ in 0..6000 {
        status = server.status().await;
        let caught_up = |c: &str| status["consumers"][c]["lag"] == 0;
        if caught_up("stats") && caught_up("matchmaker") {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(120),
            "consumers not caught up within 120 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "caught up {:?} after the restart: {status}",
        restarted.elapsed()
    );
    assert_eq!(status["consumers"]["stats"]["lag"], 0, "{status}");
    assert_eq!(status["consumers"]["matchmaker"]["lag"], 0, "{status}");
    assert_eq!(status["last_event_id"], total, "{status}");

    // Every player's counters, read 32 at a time.
    let server = Arc::new(server);
    let stats: HashMap<u64, Value> = futures_util::stream::iter(0..PLAYERS)
        .map(|n| {
            let server = server.clone();
            async move {
                let (s, b) = server.get(&format!("/stats/exrps/{}", player(n))).await;
                assert_eq!(s, 200, "{b}");
                (n, b)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let (mut sum_wins, mut sum_games) = (0, 0);
    for n in 0..PLAYERS {
        let got = &stats[&n];
        let (w, l) = (wins[n as usize], losses[n as usize]);
        assert_eq!(got["wins"], w, "{}: {got}", player(n));
        assert_eq!(got["losses"], l, "{}: {got}", player(n));
        assert_eq!(got["games"], w + l, "{}: {got}", player(n));
        sum_wins += got["wins"].as_u64().unwrap();
        sum_games += got["games"].as_u64().unwrap();
    }
    assert_eq!(sum_wins, total);
    assert_eq!(sum_games, 2 * total);
}

// ---- connection cap ----

/// One keep-alive `GET /healthz` on `stream`; true when answered 200 `ok`
/// within 5 s.
async fn healthz(stream: &mut TcpStream) -> bool {
    let request = b"GET /healthz HTTP/1.1\r\nHost: varcade\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if !head.starts_with("HTTP/1.1 200") {
                return false;
            }
            if body.starts_with("ok") {
                return true;
            }
        }
    }
}

/// Whether the server closes a fresh connection at once: after a request,
/// the connection ends within 1 s without a 200.
async fn closed_at_once(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: varcade\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return !answer.starts_with(b"HTTP/1.1 200"),
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_closes_connections_beyond_the_cap() {
    let fake = FakeGameServer::start().await;
    let options = Options {
        extra: "max_connections = 8".to_string(),
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;

    let mut held = Vec::new();
    for n in 0..8 {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        assert!(healthz(&mut stream).await, "connection {n} is served");
        held.push(stream);
    }
    assert!(
        closed_at_once(&server.addr).await,
        "a 9th connection is closed at once"
    );
    // The 8 are still served.
    for (n, stream) in held.iter_mut().enumerate() {
        assert!(healthz(stream).await, "connection {n} still served");
    }

    // Two leave; a new connection is served (once the server noticed).
    held.truncate(6);
    let mut served = false;
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&server.addr).await.unwrap();
        if healthz(&mut stream).await {
            served = true;
            held.push(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a new connection is served after 2 of 8 closed");
    drop(held);
    let (s, b) = server.get("/healthz").await;
    assert_eq!(s, 200, "{b}");
}
