#![cfg(feature = "failpoints")]
//! Fault injection against the real binary built with the `failpoints`
//! feature: fail points set at run time through `POST /admin/failpoints`
//! (`writer::flush` in the storage writer, `consumer::stats` in the stats
//! consumer). API.md "Limits and overload": a failed flush acknowledges
//! nothing more and loses nothing acknowledged; a failing consumer shows in
//! `/readyz` and `/admin/status` and recovers; a full write queue answers
//! 503 `overloaded` and ingest waits instead of dropping. The import's
//! `import::before_finish` is set through the `FAILPOINTS` environment
//! variable: an interrupted import is never served.
//!
//! Run with `cargo test --features failpoints --test faults`.

mod common;

use std::time::Duration;

use common::{FakeGameServer, Options, Server, TempDir, assert_error, listed, wait_until};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The next message on `ws` within 10 s, pings skipped; `None` when the
/// connection ended (closed or failed).
async fn ws_next_or_end(ws: &mut common::Ws) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no WebSocket message within 10 s"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(message))) => return Some(message),
            Ok(Some(Err(_)) | None) => return None,
        }
    }
}

/// The next text frame on a WebSocket's read half, as JSON (10 s at most).
async fn next_text<S>(stream: &mut S) -> Value
where
    S: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no WebSocket message within 10 s");
        match next {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str())
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"));
            }
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_injected_flush_failure_acks_nothing_after_it_and_loses_nothing_before_it() {
    if common::sled_only("the storage writer's flush (fail point writer::flush)") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let server = Server::start(&options).await;
    let game = server.listed_game("exrps", "1").await;

    // 100 acknowledged events, ten POSTs of ten.
    let mut acked = Vec::new();
    for batch in 0..10 {
        let events: Vec<Value> = (0..10)
            .map(|i| json!({"product_id": "exrps", "game_id": "g-acked", "type": "tick", "n": batch * 10 + i}))
            .collect();
        let (s, b) = server.ingest("exrps-secret", &Value::from(events)).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["count"], 10, "{b}");
        let (first, last) = (
            b["first_id"].as_u64().unwrap(),
            b["last_id"].as_u64().unwrap(),
        );
        assert_eq!(last - first, 9, "{b}");
        acked.extend(first..=last);
    }
    let before = server.events().await;
    for (n, id) in acked.iter().enumerate() {
        let event = before
            .iter()
            .find(|e| e["id"] == *id)
            .unwrap_or_else(|| panic!("acked event {id} not in the log"));
        assert_eq!(event["event"]["n"], n, "{event}");
    }

    server.failpoint("writer::flush", "return").await;

    // Writes after the failure are refused, on every path.
    let refused = json!({"product_id": "exrps", "game_id": "g-refused", "type": "tick"});
    let (s, b) = server.ingest("exrps-secret", &refused).await;
    assert_error(s, &b, 503, "storage_unavailable");
    let (s, b) = server.create("exrps", "2").await;
    assert_error(s, &b, 503, "storage_unavailable");
    match server.ws_connect("", Some("Bearer exrps-secret")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503, "a refused upgrade is 503");
        }
        Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
        Ok(mut ws) => {
            // The server may already have closed it; a failed send is fine.
            let _ = ws.send(Message::text(refused.to_string())).await;
            match ws_next_or_end(&mut ws).await {
                Some(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    assert!(
                        frame.get("ack").is_none(),
                        "acked after the failure: {frame}"
                    );
                    assert!(frame["error"].is_string(), "{frame}");
                }
                Some(Message::Close(_)) | None => {}
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    wait_until(Duration::from_secs(5), "/readyz answers 503", || async {
        server.readyz().await == 503
    })
    .await;
    let (s, b) = server.ingest("exrps-secret", &refused).await;
    assert_error(s, &b, 503, "storage_unavailable");

    // kill -9 and start without the fail point: everything acknowledged is
    // there as it was, nothing refused is.
    let server = server.crash_and_restart(&options).await;
    let after = server.events().await;
    assert!(
        after.iter().all(|e| e["event"]["game_id"] != "g-refused"),
        "a refused event was stored"
    );
    assert_eq!(after, before, "the log after the restart");
    assert!(
        listed(&server, "exrps", &game).await.is_some(),
        "the game is still listed"
    );
    wait_until(Duration::from_secs(5), "/readyz answers 200", || async {
        server.readyz().await == 200
    })
    .await;
    let (s, b) = server.create("exrps", "2").await;
    assert_eq!(s, 200, "writes work again: {b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_consumer_shows_in_readyz_and_admin_status_and_recovers() {
    let (_fake, server) = common::setup().await;
    wait_until(Duration::from_secs(5), "/readyz answers 200", || async {
        server.readyz().await == 200
    })
    .await;
    server.failpoint("consumer::stats", "return").await;

    let game_over = json!({"product_id": "exrps", "game_id": "g1", "type": "game_over", "winner_id": "w1", "loser_id": "l1"});
    let (s, b) = server.ingest("exrps-secret", &game_over).await;
    assert_eq!(s, 200, "{b}");

    wait_until(
        Duration::from_secs(5),
        "readyz 503 and consumers.stats failing",
        || async {
            let status = server.status().await;
            let stats = &status["consumers"]["stats"];
            server.readyz().await == 503
                && stats["state"] == "failing"
                && stats["error"].as_str().is_some_and(|e| !e.is_empty())
        },
    )
    .await;
    let status = server.status().await;
    println!("while failing: {status}");
    assert_eq!(status["consumers"]["matchmaker"]["state"], "ok", "{status}");
    assert!(
        status["consumers"]["stats"]["lag"].as_u64() >= Some(1),
        "{status}"
    );
    let (s, board) = server.get("/leaderboards/top_ten/exrps").await;
    assert_eq!(s, 200);
    assert_eq!(board, json!([]), "nothing applied while failing");

    server.failpoint("consumer::stats", "").await;
    wait_until(
        Duration::from_secs(10),
        "readyz 200 and consumers.stats ok",
        || async {
            let status = server.status().await;
            server.readyz().await == 200
                && status["consumers"]["stats"]["state"] == "ok"
                && status["consumers"]["stats"]["lag"] == 0
        },
    )
    .await;
    // Applied exactly once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, board) = server.get("/leaderboards/top_ten/exrps").await;
    assert_eq!(
        board,
        json!([{"user_id": "w1", "score": 1}, {"user_id": "l1", "score": 0}])
    );
    let (_, stats) = server.get("/stats/exrps/w1").await;
    assert_eq!(stats, json!({"games": 1, "wins": 1, "losses": 0}));
    let (_, stats) = server.get("/stats/exrps/l1").await;
    assert_eq!(stats, json!({"games": 1, "wins": 0, "losses": 1}));
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_answers_503_and_ingest_backpressure_loses_nothing() {
    if common::sled_only("the storage writer's queue") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options {
        extra: "max_pending_writes = 2".to_string(),
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;
    server.failpoint("writer::flush", "sleep(300)").await;

    // 40 concurrent creates against a queue of 2 and 300 ms flushes.
    let creates = (1..=40).map(|n| {
        let http = server.http.clone();
        let url = server.url("/game_lobby/exrps/create_game");
        async move {
            let user = n.to_string();
            let r = http
                .post(url)
                .header("authorization", common::token(&user))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = r.json().await.unwrap();
            (user, status, retry_after, body)
        }
    });
    let answers = futures_util::future::join_all(creates).await;
    let mut created = Vec::new();
    let mut overloaded = 0;
    for (user, status, retry_after, body) in answers {
        match status {
            200 => created.push((user, body["game_id"].as_str().unwrap().to_string())),
            503 => {
                assert_error(status, &body, 503, "overloaded");
                assert_eq!(retry_after.as_deref(), Some("1"), "Retry-After: {body}");
                overloaded += 1;
            }
            _ => panic!("create for {user}: {status} {body}"),
        }
    }
    println!("{} created, {overloaded} overloaded", created.len());
    assert!(overloaded >= 1, "no create was refused");
    for (user, game) in &created {
        let (s, b) = server.join("exrps", game, user).await;
        assert_error(s, &b, 409, "already_joined");
    }

    // 200 one-event frames pipelined on one WebSocket while flushes are
    // slow (50 ms each here, so the test stays short): the server stops
    // reading rather than refusing, and every frame is acked in order.
    server.failpoint("writer::flush", "sleep(50)").await;
    let ws = server.ws("exrps-secret").await;
    let (mut sink, mut stream) = ws.split();
    let sender = async {
        for n in 0..200 {
            let event = json!({"product_id": "exrps", "game_id": "g-pipe", "type": "tick", "n": n});
            sink.send(Message::text(event.to_string()))
                .await
                .expect("send a frame");
        }
    };
    let receiver = async {
        let mut acks = Vec::new();
        for _ in 0..200 {
            let frame = next_text(&mut stream).await;
            assert_eq!(frame["count"], 1, "{frame}");
            acks.push(frame["ack"].as_u64().unwrap_or_else(|| panic!("{frame}")));
        }
        acks
    };
    let ((), acks) = tokio::join!(sender, receiver);
    assert!(
        acks.windows(2).all(|w| w[0] < w[1]),
        "acks increase: {acks:?}"
    );
    server.failpoint("writer::flush", "").await;

    let events = server.events().await;
    for (n, id) in acks.iter().enumerate() {
        let event = events
            .iter()
            .find(|e| e["id"] == *id)
            .unwrap_or_else(|| panic!("acked event {id} not in the log"));
        assert_eq!(event["event"]["game_id"], "g-pipe", "{event}");
        assert_eq!(event["event"]["n"], n, "{event}");
    }
    let piped = events
        .iter()
        .filter(|e| e["event"]["game_id"] == "g-pipe")
        .count();
    assert_eq!(piped, 200, "each frame stored once");

    // Writes are answered normally again.
    let (s, b) = server.create("exrps", "41").await;
    assert_eq!(s, 200, "{b}");
}

/// Runs `varcade import-redis` into `dir` with extra environment.
fn import(from: &str, config: &std::path::Path, envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_varcade"));
    cmd.args(["import-redis", "--from", from, "--config"])
        .arg(config)
        .env("VARCADE_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run import-redis");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// API.md "Import from the original": an import interrupted after it began
/// writing is detected by `serve` and by the next import, with a message
/// saying how to start over, and the partial database is never served.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_import_is_never_served_and_says_how_to_start_over() {
    if common::sled_only("import-redis") {
        return;
    }
    let redis = common::redis_server::RedisServer::start();
    let client = redis::Client::open(format!("{}/2", redis.url())).unwrap();
    let mut stats = client.get_connection().unwrap();
    redis::cmd("ZADD")
        .arg("_lb:wins:exrps")
        .arg(3)
        .arg("alice")
        .exec(&mut stats)
        .unwrap();

    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let dir = TempDir::new();
    let config = dir.0.join("varcade.toml");
    std::fs::write(&config, options.toml(&dir.0.join("db"))).unwrap();

    // The fail point fires after the data is written and flushed, before
    // the import is marked complete: as a crash at that moment would.
    let (code, stderr) = import(
        &redis.url(),
        &config,
        &[("FAILPOINTS", "import::before_finish=return")],
    );
    assert_eq!(code, Some(2), "{stderr}");

    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_varcade"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--bind", "127.0.0.1:0"])
        .env("VARCADE_LOG", "warn")
        .output()
        .expect("run serve");
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("run import-redis again"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&serve.stdout).contains("listening on"),
        "a partial import is never served"
    );

    let (code, stderr) = import(&redis.url(), &config, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");

    // Starting over as the message says: remove the directory, import.
    std::fs::remove_dir_all(dir.0.join("db")).unwrap();
    let (code, stderr) = import(&redis.url(), &config, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let server = Server::start_in(&options, dir).await;
    let (status, board) = server.get("/leaderboards/top_ten/exrps").await;
    assert_eq!(status, 200);
    assert_eq!(board, json!([{"user_id": "alice", "score": 3}]));
}
