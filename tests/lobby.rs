//! The Lobby section of API.md against the real binary: every status code
//! and body, auth failures, the join race, game-server failures.

mod common;

use std::time::Duration;

use common::{Mode, SECRET, assert_error, setup, token};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn create_returns_the_full_game_and_calls_the_game_server() {
    let (fake, server) = setup().await;
    let (status, game) = server.create("exrps", "17").await;
    assert_eq!(status, 200, "{game}");
    let id = game["game_id"].as_str().unwrap();
    assert_eq!(game["product_id"], "exrps");
    assert_eq!(game["game_server_url"], fake.url.as_str());
    assert_eq!(game["creator_id"], "17");
    assert_eq!(game["creator_name"], "user17");
    assert_eq!(game["players"], json!(["17"]));
    assert_eq!(game["settings"], json!({"num_players": 2}));
    assert_eq!(game["state"], "created");
    assert_eq!(game["target_game_server"], "127.0.0.1:8085");
    assert!(game["token"].as_str().unwrap().starts_with("tok-"));
    let stamp = game["_last_updated"].as_str().unwrap();
    assert!(stamp.contains('(') && stamp.ends_with(')'), "{stamp}");
    let calls = fake.calls("create_game");
    assert_eq!(
        calls,
        vec![json!({"gameId": id, "userId": "17", "username": "user17"})]
    );
    // Not listed until the game server reports creator_joined.
    assert!(server.open_games("exrps").await.is_empty());
    server.state_change("exrps", id, "creator_joined").await;
    server
        .wait_for(|| async { server.open_games("exrps").await.len() == 1 })
        .await;
    let listed = &server.open_games("exrps").await[0];
    for hidden in ["token", "state", "_last_updated", "target_game_server"] {
        assert!(listed.get(hidden).is_none(), "{hidden} in {listed}");
    }
    assert_eq!(listed["game_id"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_product_is_404_everywhere() {
    let (_fake, server) = setup().await;
    let (s, b) = server.create("nope", "1").await;
    assert_error(s, &b, 404, "unknown_product");
    let (s, b) = server.join("nope", "x", "1").await;
    assert_error(s, &b, 404, "unknown_product");
    let (s, b) = server.get("/game_lobby/nope/open_games").await;
    assert_error(s, &b, 404, "unknown_product");
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failures_are_401() {
    let (fake, server) = setup().await;
    let path = "/game_lobby/exrps/create_game";
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let sign = |claims: Value| {
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let wrong_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"user_id": "1", "username": "a"}),
        &jsonwebtoken::EncodingKey::from_secret(b"other"),
    )
    .unwrap();
    // alg: none — header {"alg":"none","typ":"JWT"}, no signature.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ1c2VyX2lkIjoiMSIsInVzZXJuYW1lIjoiYSJ9.";
    let cases = vec![
        None,
        Some("Token".to_string()),
        Some("Token garbage".to_string()),
        Some(format!(
            "Basic {}",
            sign(json!({"user_id": "1", "username": "a"}))
        )),
        Some(format!("Token {wrong_secret}")),
        Some(format!("Token {none}")),
        Some(format!(
            "Bearer {}",
            sign(json!({"user_id": "1", "username": "a", "exp": 1000}))
        )),
        Some(format!("Token {}", sign(json!({"username": "a"})))),
        Some(format!("Token {}", sign(json!({"user_id": "1"})))),
        Some(format!(
            "Token {}",
            sign(json!({"user_id": [1], "username": "a"}))
        )),
    ];
    for auth in &cases {
        let (s, b) = server.post(path, auth.as_deref(), "").await;
        assert_error(s, &b, 401, "unauthorized");
        let (s, b) = server
            .post("/game_lobby/exrps/join_game/x", auth.as_deref(), "")
            .await;
        assert_error(s, &b, 401, "unauthorized");
    }
    assert!(fake.calls("create_game").is_empty());
    // Bearer and integer user ids work.
    let ok = format!("Bearer {}", sign(json!({"user_id": 23, "username": "bob"})));
    let (s, b) = server.post(path, Some(&ok), "").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["creator_id"], "23");
}

#[tokio::test(flavor = "multi_thread")]
async fn join_rules_and_status_codes() {
    let (fake, server) = setup().await;
    let (_, game) = server.create("exrps", "1").await;
    let id = game["game_id"].as_str().unwrap().to_string();
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_error(s, &b, 409, "game_not_joinable");
    let (s, b) = server.join("exrps", "no-such-game", "2").await;
    assert_error(s, &b, 404, "game_not_found");
    let (s, b) = server.join("chess", &id, "2").await;
    assert_error(s, &b, 404, "game_not_found");

    server.state_change("exrps", &id, "creator_joined").await;
    server
        .wait_for(|| async { server.open_games("exrps").await.len() == 1 })
        .await;
    let (s, b) = server.join("exrps", &id, "1").await;
    assert_error(s, &b, 409, "already_joined");
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["players"], json!(["1", "2"]));
    assert_eq!(b["state"], "creator_joined");
    assert!(b["token"].is_string());
    assert_eq!(
        fake.calls("join_game"),
        vec![json!({"gameId": id, "userId": "2", "username": "user2"})]
    );
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_error(s, &b, 409, "already_joined");
    let (s, b) = server.join("exrps", &id, "3").await;
    assert_error(s, &b, 409, "game_not_joinable");
    assert!(
        server.open_games("exrps").await.is_empty(),
        "full games leave the lobby"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn num_players_from_settings_is_honoured() {
    let (_fake, server) = setup().await;
    let id = server.listed_game("chess", "1").await;
    assert_eq!(server.join("chess", &id, "2").await.0, 200);
    assert_eq!(server.open_games("chess").await.len(), 1, "one seat left");
    assert_eq!(server.join("chess", &id, "3").await.0, 200);
    assert!(server.open_games("chess").await.is_empty());
    assert_eq!(server.join("chess", &id, "4").await.0, 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_way_race_for_the_last_seat() {
    let (fake, server) = setup().await;
    let id = server.listed_game("exrps", "creator").await;
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (server, id) = (server.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            server.join("exrps", &id, &format!("p{i}")).await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            200 => winners.push(body["players"][1].as_str().unwrap().to_string()),
            409 => assert_eq!(body["error"], "game_not_joinable", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one join wins");
    let calls = fake.calls("join_game");
    assert_eq!(calls.len(), 1, "only the winner reached the game server");
    assert_eq!(calls[0]["userId"], winners[0].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn game_server_failures_on_create_leave_nothing() {
    let (fake, server) = setup().await;
    for mode in [Mode::Fail, Mode::NoToken, Mode::Hang] {
        fake.set(mode, Mode::Ok, Mode::Ok);
        let (s, b) = server.create("exrps", "1").await;
        assert_error(s, &b, 502, "game_server_error");
    }
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    // No game was stored: a creator_joined report for any of them is ignored.
    for call in fake.calls("create_game") {
        let id = call["gameId"].as_str().unwrap();
        server.state_change("exrps", id, "creator_joined").await;
    }
    let ok = server.listed_game("exrps", "9").await;
    let listed = server.open_games("exrps").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["game_id"], ok.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn game_server_failures_on_join_release_the_seat() {
    let (fake, server) = setup().await;
    let id = server.listed_game("exrps", "1").await;
    for mode in [Mode::Fail, Mode::Hang] {
        fake.set(Mode::Ok, mode, Mode::Ok);
        let (s, b) = server.join("exrps", &id, "2").await;
        assert_error(s, &b, 502, "game_server_error");
        let listed = server.open_games("exrps").await;
        assert_eq!(listed.len(), 1, "seat released, game listed again");
        assert_eq!(listed[0]["players"], json!(["1"]));
    }
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_games_paging_order_and_bad_parameters() {
    let (_fake, server) = setup().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(server.listed_game("exrps", &i.to_string()).await);
    }
    let page = |q: &'static str| {
        let server = &server;
        async move {
            let (s, b) = server
                .get(&format!("/game_lobby/exrps/open_games{q}"))
                .await;
            assert_eq!(s, 200, "{b}");
            b.as_array()
                .unwrap()
                .iter()
                .map(|g| g["game_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page("").await, ids, "oldest listing first");
    assert_eq!(page("?count=2").await, ids[..2]);
    assert_eq!(page("?count=2&page=1").await, ids[2..4]);
    assert_eq!(page("?count=2&page=2").await, ids[4..]);
    assert!(page("?count=2&page=3").await.is_empty());
    for bad in ["?count=-1", "?count=x", "?page=-1", "?page=1.5", "?count="] {
        let (s, b) = server
            .get(&format!("/game_lobby/exrps/open_games{bad}"))
            .await;
        assert_error(s, &b, 400, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn page_size_is_capped() {
    let (_fake, server) = setup().await;
    for i in 0..27 {
        let (_, game) = server.create("exrps", &i.to_string()).await;
        server
            .state_change("exrps", game["game_id"].as_str().unwrap(), "creator_joined")
            .await;
    }
    server
        .wait_for(|| async {
            let (_, b) = server
                .get("/game_lobby/exrps/open_games?count=25&page=1")
                .await;
            b.as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    let (_, b) = server.get("/game_lobby/exrps/open_games").await;
    assert_eq!(b.as_array().unwrap().len(), 10, "default_page_size");
    let (_, b) = server.get("/game_lobby/exrps/open_games?count=1000").await;
    assert_eq!(b.as_array().unwrap().len(), 25, "max_page_size");
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_cors_and_body_limit() {
    let (_fake, server) = setup().await;
    let (s, b) = server.get("/no/such/route").await;
    assert_eq!(s, 404, "{b}");
    assert!(b["error"].is_string());
    let r = server
        .http
        .delete(server.url("/game_lobby/exrps/open_games"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let b: Value = r.json().await.unwrap();
    assert!(b["error"].is_string());

    // The server may close a connection whose body it did not read, so the
    // oversized requests get a client of their own (no pooled reuse after).
    let oversized = reqwest::Client::new();
    let big = "x".repeat((1 << 20) + 1);
    let r = oversized
        .post(server.url("/game_lobby/exrps/create_game"))
        .header("authorization", token("1"))
        .body(big)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b: Value = r.json().await.unwrap();
    assert_error(s, &b, 413, "payload_too_large");
    // Chunked (no Content-Length).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..17).map(|_| Ok(vec![b'x'; 65536])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = reqwest::Client::new()
        .post(server.url("/ingest"))
        .bearer_auth("exrps-secret")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let r = server
        .http
        .request(
            reqwest::Method::OPTIONS,
            server.url("/game_lobby/exrps/create_game"),
        )
        .header("origin", "http://portal.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let allow = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allow.contains("authorization") && allow.contains("content-type"),
        "{allow}"
    );
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    let (s, _) = server.get("/healthz").await;
    assert_eq!(s, 200);
    let (s, _) = server.get("/readyz").await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
