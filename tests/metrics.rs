//! `GET /metrics` after a scripted burst of traffic: the text parses as
//! Prometheus exposition and each series API.md "Operations" lists is there
//! with the expected value.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{FakeGameServer, Mode, Options, Server};
use serde_json::json;

/// Parsed samples: "name{sorted labels}" -> value.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap_or_default();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "bad TYPE line: {line}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                let mut labels: Vec<&str> = body.split(',').filter(|l| !l.is_empty()).collect();
                for l in &labels {
                    let (k, v) = l
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
                labels.sort();
                (name, labels.join(","))
            }
            None => (series, String::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        samples.insert(format!("{name}{{{labels}}}"), value);
    }
    samples
}

fn value(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.sort();
    let key = format!("{name}{{{}}}", l.join(","));
    *samples.get(&key).unwrap_or_else(|| {
        panic!(
            "missing {key}; have: {:?}",
            samples
                .keys()
                .filter(|k| k.starts_with(name))
                .collect::<Vec<_>>()
        )
    })
}

async fn scrape(server: &Server) -> (String, HashMap<String, f64>) {
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap().to_string();
    let samples = parse(&text);
    (text, samples)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_a_burst_of_traffic() {
    let fake = FakeGameServer::start().await;
    let options = Options::curating(&fake, (1, 600, 600, 600, 600));
    let server = Server::start(&options).await;

    // Lobby: 3 games created, one listed and joined, one create failure.
    let listed = server.listed_game("exrps", "1").await;
    let joined = server.listed_game("exrps", "2").await;
    assert_eq!(server.join("exrps", &joined, "3").await.0, 200);
    let (_, stale) = server.create("exrps", "4").await;
    let stale = stale["game_id"].as_str().unwrap().to_string();
    fake.set(Mode::Fail, Mode::Ok, Mode::Ok);
    assert_eq!(server.create("exrps", "5").await.0, 502);
    fake.set(Mode::Ok, Mode::Ok, Mode::Ok);
    for _ in 0..4 {
        assert_eq!(server.get("/game_lobby/exrps/open_games").await.0, 200);
    }
    // Ingest: a game_over and two rejected frames.
    let over = json!({"product_id": "exrps", "game_id": listed, "type": "game_over", "winner_id": "1", "loser_id": "2"});
    assert_eq!(server.ingest("exrps-secret", &over).await.0, 200);
    assert_eq!(
        server.ingest("exrps-secret", &json!({"type": "x"})).await.0,
        400
    );
    let chess = json!({"product_id": "chess", "game_id": "g", "type": "game_removed"});
    assert_eq!(server.ingest("exrps-secret", &chess).await.0, 403);
    // Curation purges the `created` game after 1 s.
    server
        .wait_for(|| async {
            let (_, s) = scrape(&server).await;
            s.get("varcade_games_purged_total{product=\"exrps\"}") == Some(&1.0)
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (text, s) = loop {
        let (text, s) = scrape(&server).await;
        let lag = |c| {
            s.get(&format!("varcade_consumer_lag_events{{consumer=\"{c}\"}}"))
                .copied()
        };
        if lag("matchmaker") == Some(0.0) && lag("stats") == Some(0.0) {
            break (text, s);
        }
        assert!(Instant::now() < deadline, "consumers did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    for id in [&listed, &joined, &stale] {
        assert!(!text.contains(id.as_str()), "a game id leaked into a label");
    }
    let create = "/game_lobby/{product_id}/create_game";
    let req = "varcade_http_requests_total";
    assert_eq!(
        value(
            &s,
            req,
            &[("method", "POST"), ("route", create), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            req,
            &[("method", "POST"), ("route", create), ("status", "502")]
        ),
        1.0
    );
    let join = "/game_lobby/{product_id}/join_game/{game_id}";
    assert_eq!(
        value(
            &s,
            req,
            &[("method", "POST"), ("route", join), ("status", "200")]
        ),
        1.0
    );
    let open = "/game_lobby/{product_id}/open_games";
    assert!(
        value(
            &s,
            req,
            &[("method", "GET"), ("route", open), ("status", "200")]
        ) >= 4.0
    );
    let hist = "varcade_http_request_duration_seconds_count";
    assert_eq!(
        value(
            &s,
            hist,
            &[("method", "POST"), ("route", create), ("status", "200")]
        ),
        3.0
    );
    assert!(text.contains("varcade_http_request_duration_seconds_bucket{"));

    let ingested = "varcade_events_ingested_total";
    assert_eq!(
        value(
            &s,
            ingested,
            &[("product", "exrps"), ("type", "state_change")]
        ),
        2.0
    );
    assert_eq!(
        value(&s, ingested, &[("product", "exrps"), ("type", "game_over")]),
        1.0
    );
    let rejected = "varcade_ingest_frames_rejected_total";
    assert_eq!(value(&s, rejected, &[("reason", "bad_request")]), 1.0);
    assert_eq!(value(&s, rejected, &[("reason", "forbidden")]), 1.0);
    assert_eq!(
        value(&s, "varcade_ingest_ack_latency_seconds_count", &[]),
        3.0
    );

    for consumer in ["matchmaker", "stats"] {
        assert_eq!(
            value(&s, "varcade_consumer_cursor", &[("consumer", consumer)]),
            3.0
        );
        assert_eq!(
            value(&s, "varcade_consumer_lag_events", &[("consumer", consumer)]),
            0.0
        );
    }
    let games = |state| {
        value(
            &s,
            "varcade_games",
            &[("product", "exrps"), ("state", state)],
        )
    };
    assert_eq!(games("creator_joined"), 2.0);
    assert_eq!(games("created"), 0.0, "the stale game was purged");
    assert_eq!(
        value(&s, "varcade_games_purged_total", &[("product", "exrps")]),
        1.0
    );

    let calls = "varcade_game_server_calls_total";
    assert_eq!(
        value(&s, calls, &[("endpoint", "create_game"), ("outcome", "ok")]),
        3.0
    );
    assert_eq!(
        value(
            &s,
            calls,
            &[("endpoint", "create_game"), ("outcome", "error_status")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, calls, &[("endpoint", "join_game"), ("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        value(&s, calls, &[("endpoint", "remove_game"), ("outcome", "ok")]),
        1.0
    );
    assert!(text.contains("varcade_game_server_call_duration_seconds_bucket{"));
    assert!(value(&s, "varcade_store_size_bytes", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn games_reset_by_curation_are_counted() {
    let fake = FakeGameServer::start().await;
    let options = Options::curating(&fake, (600, 1, 600, 600, 600));
    let server = Server::start(&options).await;
    let id = server.listed_game("exrps", "1").await;
    assert_eq!(server.join("exrps", &id, "2").await.0, 200);
    server
        .wait_for(|| async {
            let (_, s) = scrape(&server).await;
            s.get("varcade_games_reset_total{product=\"exrps\"}") == Some(&1.0)
        })
        .await;
    let (_, s) = scrape(&server).await;
    let calls = "varcade_game_server_calls_total";
    assert_eq!(
        value(
            &s,
            calls,
            &[("endpoint", "remove_player"), ("outcome", "ok")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_need_the_admin_key() {
    let fake = FakeGameServer::start().await;
    let server = Server::start(&Options::new(&fake)).await;
    for path in ["/admin/status", "/admin/anything", "/events"] {
        let (s, b) = server.get(path).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        let r = server
            .http
            .get(server.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let over = json!({"product_id": "exrps", "game_id": "g", "type": "game_over", "winner_id": "1", "loser_id": "2"});
    assert_eq!(server.ingest("exrps-secret", &over).await.0, 200);
    server
        .wait_for(|| async {
            let r = server
                .http
                .get(server.url("/admin/status"))
                .bearer_auth(common::ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let b: serde_json::Value = r.json().await.unwrap();
            assert_eq!(b["last_event_id"], 1);
            assert_eq!(b["layout_version"], if common::postgres() { 1 } else { 2 });
            b["consumers"]["stats"]["lag"] == 0 && b["consumers"]["matchmaker"]["cursor"] == 1
        })
        .await;
}
