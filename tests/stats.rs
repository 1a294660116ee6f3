//! Leaderboards and player stats (API.md "Leaderboards and player stats")
//! against the real binary, including exactly-once across `kill -9`.

mod common;

use std::time::{Duration, Instant};

use common::{FakeGameServer, Options, Server, assert_error, board, wait_until};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn setup() -> (FakeGameServer, Options, Server) {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let server = Server::start(&options).await;
    (fake, options, server)
}

fn game_over(product: &str, winner: &str, loser: &str) -> Value {
    json!({"product_id": product, "game_id": "g", "type": "game_over", "winner_id": winner, "loser_id": loser})
}

async fn ingest_all(server: &Server, product: &str, events: Vec<Value>) -> u64 {
    let (status, body) = server
        .ingest(&format!("{product}-secret"), &Value::Array(events))
        .await;
    assert_eq!(status, 200, "{body}");
    body["last_id"].as_u64().unwrap()
}

/// Waits until the stats consumer has applied everything up to `id`.
async fn caught_up(server: &Server, product: &str, probe: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = server.get(&format!("/stats/{product}/{probe}")).await;
        if check(&body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stats never reached the expected state: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn top_ten_order_tie_break_windows_and_ranks() {
    let (_fake, _options, server) = setup().await;
    let (s, b) = server.get("/leaderboards/top_ten/exrps").await;
    assert_eq!((s, b), (200, json!([])), "empty before any game");
    // Player "w{i}" wins i games against "loser"; w3 and w3b tie.
    let mut events = Vec::new();
    for i in 1..=12 {
        for _ in 0..i {
            events.push(game_over("exrps", &format!("w{i:02}"), "loser"));
        }
    }
    for _ in 0..3 {
        events.push(game_over("exrps", "w03b", "loser"));
    }
    ingest_all(&server, "exrps", events).await;
    caught_up(&server, "exrps", "w12", |b| b["wins"] == 12).await;

    let (s, top) = server.get("/leaderboards/top_ten/exrps").await;
    assert_eq!(s, 200);
    let top: Vec<(String, i64)> = top
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["user_id"].as_str().unwrap().into(),
                e["score"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(top.len(), 10, "at most 10");
    assert_eq!(top[0], ("w12".into(), 12));
    assert_eq!(
        top[9],
        ("w03".into(), 3),
        "ties by user_id ascending: w03 before w03b"
    );

    let all = board(&server, "exrps").await;
    assert_eq!(all.len(), 14, "12 winners, w03b and the loser with 0");
    assert_eq!(all[10], ("w03b".into(), 3));
    assert_eq!(all.last().unwrap(), &("loser".to_string(), 0));
    let (_, window) = server.get("/leaderboards/exrps?offset=9&count=3").await;
    assert_eq!(
        window,
        json!([{"user_id": "w03", "score": 3}, {"user_id": "w03b", "score": 3}, {"user_id": "w02", "score": 2}])
    );
    for (i, (user, score)) in all.iter().enumerate() {
        let (s, b) = server
            .get(&format!("/leaderboards/exrps/players/{user}"))
            .await;
        assert_eq!(s, 200);
        assert_eq!(b, json!({"user_id": user, "score": score, "rank": i + 1}));
    }
    let (s, b) = server.get("/leaderboards/exrps/players/nobody").await;
    assert_eq!(s, 404, "{b}");
    assert!(b["error"].is_string());
    for bad in ["?offset=-1", "?count=x", "?offset=1.5"] {
        let (s, b) = server.get(&format!("/leaderboards/exrps{bad}")).await;
        assert_eq!((s, b["error"].as_str()), (400, Some("bad_request")));
    }
    let (_, capped) = server.get("/leaderboards/exrps?count=1000").await;
    assert!(capped.as_array().unwrap().len() <= 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn elo_arithmetic_and_default_stats() {
    let (_fake, _options, server) = setup().await;
    ingest_all(
        &server,
        "chess",
        vec![
            game_over("chess", "a", "b"),
            game_over("chess", "a", "b"),
            game_over("chess", "c", "a"),
        ],
    )
    .await;
    caught_up(&server, "chess", "c", |b| b["wins"] == 1).await;
    // a-b 1000/1000 -> 1016/984; a-b again -> 1031/969; c(1000) beats a(1031):
    // expected(c) = 1/(1+10^(31/400)) = 0.4555 -> c = 1000 + 32*0.5445 = 1017.42 -> 1017;
    // a = 1031 - 32*0.5445 = 1013.58 -> 1014.
    assert_eq!(
        board(&server, "chess").await,
        vec![("c".into(), 1017), ("a".into(), 1014), ("b".into(), 969)]
    );
    let (_, a) = server.get("/stats/chess/a").await;
    assert_eq!(a, json!({"games": 3, "wins": 2, "losses": 1}));
    let (_, c) = server.get("/stats/chess/c").await;
    assert_eq!(
        c,
        json!({"games": 1, "wins": 1, "losses": 0}),
        "always all three"
    );
    let (s, b) = server.get("/stats/chess/nobody").await;
    assert_eq!((s, b), (200, json!({})));
}

#[tokio::test(flavor = "multi_thread")]
async fn exrps_weapon_counters_and_unknown_product() {
    let (_fake, _options, server) = setup().await;
    let pick = |user: &str, data: Value| {
        json!({"product_id": "exrps", "game_id": "g", "type": "gameplay",
               "event_name": "select_weapon", "event_data": data, "user_id": user})
    };
    ingest_all(
        &server,
        "exrps",
        vec![
            pick("7", json!("0")),
            pick("7", json!("0")),
            pick("7", json!("1")),
            pick("7", json!("2")),
            pick("7", json!("null")),
            json!({"product_id": "exrps", "game_id": "g", "type": "gameplay", "event_name": "chat", "user_id": "7"}),
            game_over("exrps", "7", "8"),
        ],
    )
    .await;
    caught_up(&server, "exrps", "7", |b| b["wins"] == 1).await;
    let (_, b) = server.get("/stats/exrps/7").await;
    assert_eq!(
        b,
        json!({"games": 1, "wins": 1, "losses": 0, "rock_selection_count": 2,
               "paper_selection_count": 1, "scissors_selection_count": 1, "botch_selection_count": 1})
    );
    for path in [
        "/stats/nope/7",
        "/leaderboards/top_ten/nope",
        "/leaderboards/nope",
        "/leaderboards/nope/players/7",
    ] {
        let (s, b) = server.get(path).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (404, Some("unknown_product")),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_game_over_does_not_stop_the_consumer() {
    let (_fake, _options, server) = setup().await;
    ingest_all(
        &server,
        "exrps",
        vec![
            game_over("exrps", "same", "same"),
            json!({"product_id": "exrps", "game_id": "g", "type": "gameplay",
                   "event_name": "select_weapon", "event_data": "9", "user_id": "x"}),
            json!({"product_id": "exrps", "game_id": "g", "type": "mystery"}),
            game_over("exrps", "ok", "other"),
        ],
    )
    .await;
    caught_up(&server, "exrps", "ok", |b| b["wins"] == 1).await;
    let (_, b) = server.get("/stats/exrps/same").await;
    assert_eq!(b, json!({}));
    assert_eq!(
        board(&server, "exrps").await,
        vec![("ok".into(), 1), ("other".into(), 0)]
    );
}

/// Sends `n` game_over events as pipelined single-event WebSocket frames
/// among 20 players; returns the acked ids (stops at `stop_after` acks).
async fn pipeline_game_overs(server: &Server, n: usize, stop_after: usize) -> Vec<u64> {
    let mut request = format!("ws://{}/ingest", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer exrps-secret".parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut sink, mut stream) = socket.split();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let event = game_over(
                "exrps",
                &format!("p{}", i % 20),
                &format!("p{}", (i + 1) % 20),
            );
            if sink
                .send(Message::Text(event.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut acked = Vec::new();
    while acked.len() < stop_after {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let ack: Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(ack["count"], 1, "{ack}");
                acked.push(ack["ack"].as_u64().unwrap());
            }
            other => panic!("no ack: {other:?}"),
        }
    }
    if stop_after >= n {
        sender.await.unwrap();
    }
    acked
}

async fn total_wins(server: &Server) -> i64 {
    board(server, "exrps").await.iter().map(|(_, s)| s).sum()
}

async fn game_overs_in_log(server: &Server) -> Vec<u64> {
    server
        .events()
        .await
        .iter()
        .filter(|e| e["event"]["type"] == "game_over")
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

/// After a restart the board must settle at exactly `want` and stay there.
async fn settles_at(server: &Server, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let total = total_wins(server).await;
        assert!(total <= want, "over-counted: {total} > {want}");
        if total == want {
            break;
        }
        assert!(Instant::now() < deadline, "stuck at {total}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(total_wins(server).await, want, "changed after settling");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_right_after_the_last_ack_counts_each_game_once() {
    let (_fake, options, server) = setup().await;
    let acked = pipeline_game_overs(&server, 2000, 2000).await;
    assert_eq!(acked.len(), 2000);
    assert!(
        acked.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive, in order"
    );
    let server = server.crash_and_restart(&options).await;
    settles_at(&server, 2000).await;
    let (_, p0) = server.get("/stats/exrps/p0").await;
    assert_eq!(p0["games"], 200, "{p0}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_ingest_counts_each_durable_game_once() {
    let (_fake, options, server) = setup().await;
    // Some acked before the kill; more may be durable but not yet acked.
    let acked = pipeline_game_overs(&server, 2000, 700).await;
    let server = server.crash_and_restart(&options).await;
    let logged = game_overs_in_log(&server).await;
    assert!(
        logged.len() >= acked.len(),
        "{} logged < {} acked",
        logged.len(),
        acked.len()
    );
    for id in &acked {
        assert!(logged.binary_search(id).is_ok(), "acked event {id} lost");
    }
    settles_at(&server, logged.len() as i64).await;
}

/// API.md "Leaderboard seasons and around-me": `?around=N` adds up to N
/// entries above and below the player, the player included, with ranks,
/// matching the board order at the top, the bottom and in the middle.
#[tokio::test(flavor = "multi_thread")]
async fn around_me_at_the_top_bottom_and_middle() {
    let (_fake, _options, server) = setup().await;
    let events: Vec<Value> = (0..3000u64)
        .map(|i| {
            let winner = format!("p{:03}", (i * i + 7 * i) % 701);
            let loser = format!("q{:04}", i % 1500);
            game_over("exrps", &winner, &loser)
        })
        .collect();
    let mut last = 0;
    for chunk in events.chunks(500) {
        last = ingest_all(&server, "exrps", chunk.to_vec()).await;
    }
    let status = |s: Value| s["consumers"]["stats"]["cursor"].as_u64() == Some(last);
    wait_until(Duration::from_secs(30), "stats applied", || async {
        status(server.status().await)
    })
    .await;
    let board = board(&server, "exrps").await;
    assert!(board.len() > 1500, "{}", board.len());
    let middle = board.len() / 2;
    for at in [0, 1, middle, board.len() - 2, board.len() - 1] {
        let (user, score) = &board[at];
        for n in [0usize, 3, 50] {
            let (s, body) = server
                .get(&format!("/leaderboards/exrps/players/{user}?around={n}"))
                .await;
            assert_eq!(s, 200, "{body}");
            assert_eq!(body["score"], json!(score));
            assert_eq!(body["rank"], json!(at + 1));
            let from = at.saturating_sub(n);
            let want: Vec<Value> = board[from..(at + n + 1).min(board.len())]
                .iter()
                .enumerate()
                .map(|(i, (u, s))| json!({"user_id": u, "score": s, "rank": from + i + 1}))
                .collect();
            assert_eq!(body["around"], json!(want), "{user} around={n}");
        }
    }
    let (_, plain) = server.get("/leaderboards/exrps/players/p000").await;
    assert!(plain.get("around").is_none(), "only when asked: {plain}");
    for bad in ["51", "-1", "x", "1.5"] {
        let (s, body) = server
            .get(&format!("/leaderboards/exrps/players/p000?around={bad}"))
            .await;
        assert_error(s, &body, 400, "bad_request");
    }
    let (s, body) = server
        .get("/leaderboards/exrps/players/nobody?around=3")
        .await;
    assert_eq!(s, 404, "{body}");
    let (s, body) = server
        .get("/leaderboards/nogame/players/p000?around=3")
        .await;
    assert_error(s, &body, 404, "unknown_product");
}

#[tokio::test(flavor = "multi_thread")]
async fn seasons_without_and_with_a_period() {
    let fake = FakeGameServer::start().await;
    let options = Options {
        extra: format!(
            "[[games]]\nproduct_id = \"monthly\"\ngame_server_url = \"{}\"\n\
             game_socket_url = \"127.0.0.1:9\"\ningest_key = \"monthly-secret\"\n\
             [games.season]\nperiod = \"monthly\"\n",
            fake.url
        ),
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;
    ingest_all(&server, "exrps", vec![game_over("exrps", "1", "2")]).await;
    ingest_all(&server, "monthly", vec![game_over("monthly", "1", "2")]).await;
    caught_up(&server, "monthly", "1", |b| b["wins"] == 1).await;
    caught_up(&server, "exrps", "1", |b| b["wins"] == 1).await;

    let (status, body) = server.get("/leaderboards/exrps/seasons").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{"season": "all", "starts": null, "ends": null, "players": 2, "current": true}])
    );
    let (_, all) = server.get("/leaderboards/top_ten/exrps?season=all").await;
    assert_eq!(
        all,
        json!([{"user_id": "1", "score": 1}, {"user_id": "2", "score": 0}])
    );

    let (status, body) = server.get("/leaderboards/monthly/seasons").await;
    assert_eq!(status, 200, "{body}");
    let list = body.as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    let id = list[0]["season"].as_str().unwrap().to_string();
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(id, format!("{}-{:02}", now.year(), now.month() as u8));
    assert_eq!(list[0]["players"], 2);
    assert_eq!(list[0]["current"], true);
    assert!(
        list[0]["starts"]
            .as_str()
            .unwrap()
            .ends_with("-01T00:00:00Z"),
        "{body}"
    );
    let (_, current) = server.get("/leaderboards/top_ten/monthly").await;
    let (_, named) = server
        .get(&format!("/leaderboards/top_ten/monthly?season={id}"))
        .await;
    assert_eq!(current, named);
    assert_eq!(
        current,
        json!([{"user_id": "1", "score": 1}, {"user_id": "2", "score": 0}])
    );
    let (_, me) = server
        .get(&format!(
            "/leaderboards/monthly/players/2?season={id}&around=1"
        ))
        .await;
    assert_eq!(me["rank"], 2, "{me}");

    for path in [
        "/leaderboards/top_ten/exrps?season=2026-11",
        "/leaderboards/exrps?season=2026-11",
        "/leaderboards/exrps/players/1?season=2026-11",
        "/leaderboards/top_ten/monthly?season=all",
        "/leaderboards/monthly?season=1999-01",
    ] {
        let (status, body) = server.get(path).await;
        assert_error(status, &body, 404, "season_not_found");
    }
    let (status, body) = server.get("/leaderboards/nope/seasons").await;
    assert_error(status, &body, 404, "unknown_product");
}
