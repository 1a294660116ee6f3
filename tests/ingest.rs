//! The Event ingest section of API.md against the real binary: POST and
//! WebSocket ingest, acks and pipelining, bad frames, keys, idempotent
//! producers (across a crash too), reading the log, and the matchmaker's
//! state machine driven by events.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{
    ADMIN, Options, Server, assert_error, listed, setup, ws_close_code, ws_recv, ws_refused,
    ws_send,
};
use serde_json::{Value, json};

/// An event of a type the matchmaker does not act on, marked `n`.
fn tick(product: &str, n: u64) -> Value {
    json!({"product_id": product, "game_id": format!("g{n}"), "type": "tick", "n": n})
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `GET /events` with a query and an optional bearer key.
async fn get_events(server: &Server, query: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = server.http.get(server.url(&format!("/events{query}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn ids(page: &Value) -> Vec<u64> {
    page.as_array()
        .unwrap_or_else(|| panic!("not an array: {page}"))
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn post_single_and_batch_are_read_back_exactly() {
    let (_fake, server) = setup().await;
    let before = now_ms();
    let single = json!({"product_id": "exrps", "game_id": "g1", "type": "gameplay",
        "event_name": "select_weapon", "event_data": "0", "user_id": 17, "extra": {"nested": [1, 2.5, null]}});
    let (s, b) = server.ingest("exrps-secret", &single).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"first_id": 1, "last_id": 1, "count": 1}));

    let batch = json!([
        {"product_id": "exrps", "game_id": "g1", "type": "state_change", "new_state": "ended"},
        {"product_id": "exrps", "game_id": "g1", "type": "game_over", "winner_id": "1", "loser_id": 2},
        {"product_id": "exrps", "game_id": "g1", "type": "custom_thing", "unicode": "héllo ✓"},
    ]);
    let (s, b) = server.ingest("exrps-secret", &batch).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"first_id": 2, "last_id": 4, "count": 3}));

    // The chess key, with the key in the query string.
    let chess = json!({"product_id": "chess", "game_id": "c", "type": "game_removed"});
    let (s, b) = server
        .post("/ingest?key=chess-secret", None, &chess.to_string())
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"first_id": 5, "last_id": 5, "count": 1}));
    let after = now_ms();

    let events = server.events().await;
    let mut sent = vec![single];
    sent.extend(batch.as_array().unwrap().iter().cloned());
    sent.push(chess);
    assert_eq!(events.len(), sent.len(), "{events:?}");
    for (i, (logged, sent)) in events.iter().zip(&sent).enumerate() {
        assert_eq!(logged["id"], i as u64 + 1, "{logged}");
        assert_eq!(&logged["event"], sent, "stored exactly as sent");
        let ts = logged["ts_ms"].as_u64().unwrap();
        assert!(
            before <= ts && ts <= after,
            "{ts} not in {before}..={after}"
        );
        let keys: Vec<&String> = logged.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "{logged}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_keep_the_text_of_numbers_as_sent() {
    let (_fake, server) = setup().await;
    // Numbers a float cannot hold, in a single event, a batch and an envelope.
    let event = r#"{"product_id": "exrps", "game_id": "g", "type": "tick",
        "big": 123456789012345678901234567890, "pi": 3.14159265358979323846264}"#;
    let bodies = [
        event.to_string(),
        format!("[{event}, {event}]"),
        format!(r#"{{"producer": "p", "seq": 1, "events": [{event}]}}"#),
    ];
    for body in &bodies {
        let (s, b) = server
            .post("/ingest", Some("Bearer exrps-secret"), body)
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let r = server
        .http
        .get(server.url("/events"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        text.matches("123456789012345678901234567890").count(),
        4,
        "{text}"
    );
    assert_eq!(
        text.matches("3.14159265358979323846264").count(),
        4,
        "{text}"
    );
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ids(&page), vec![1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_paging_auth_and_bad_parameters() {
    let (_fake, server) = setup().await;
    let batch: Vec<Value> = (1..=10).map(|n| tick("exrps", n)).collect();
    let (s, b) = server.ingest("exrps-secret", &json!(batch)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"first_id": 1, "last_id": 10, "count": 10}));

    let (s, page) = get_events(&server, "?after=3&limit=4", Some(ADMIN)).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(ids(&page), vec![4, 5, 6, 7]);
    for e in page.as_array().unwrap() {
        assert_eq!(e["event"]["n"], e["id"], "{e}");
    }
    let (_, page) = get_events(&server, "?after=8&limit=100", Some(ADMIN)).await;
    assert_eq!(ids(&page), vec![9, 10]);
    let (_, page) = get_events(&server, "?limit=2", Some(ADMIN)).await;
    assert_eq!(ids(&page), vec![1, 2]);
    let (_, page) = get_events(&server, "", Some(ADMIN)).await;
    assert_eq!(ids(&page), (1..=10).collect::<Vec<_>>());
    for past in ["?after=10", "?after=11&limit=5", "?after=1000000"] {
        let (s, page) = get_events(&server, past, Some(ADMIN)).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page, json!([]), "{past}");
    }

    for key in [None, Some("wrong"), Some("exrps-secret"), Some("")] {
        let (s, b) = get_events(&server, "", key).await;
        assert_error(s, &b, 401, "unauthorized");
    }
    let r = server
        .http
        .get(server.url("/events"))
        .header("authorization", format!("Basic {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    for bad in [
        "?after=-1",
        "?after=x",
        "?after=1.5",
        "?limit=-3",
        "?limit=ten",
        "?after=",
        "?after=99999999999999999999999",
    ] {
        let (s, b) = get_events(&server, bad, Some(ADMIN)).await;
        assert_error(s, &b, 400, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn post_rejections_append_nothing() {
    let (_fake, server) = setup().await;
    let good = tick("exrps", 1);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer "),
        Some("exrps-secret"),
    ] {
        let (s, b) = server.post("/ingest", auth, &good.to_string()).await;
        assert_error(s, &b, 401, "unauthorized");
    }
    let (s, b) = server
        .post("/ingest?key=nope", None, &good.to_string())
        .await;
    assert_error(s, &b, 401, "unauthorized");

    // A key admits only its own product.
    let chess = json!({"product_id": "chess", "game_id": "c", "type": "game_removed"});
    let (s, b) = server.ingest("exrps-secret", &chess).await;
    assert_error(s, &b, 403, "forbidden");
    let (s, b) = server.ingest("exrps-secret", &json!([good, chess])).await;
    assert_error(s, &b, 403, "forbidden");

    let cases = [
        ("not json", None),
        ("", None),
        (r#"{"game_id":"g","type":"game_removed"}"#, Some(0)),
        (r#"{"product_id":"exrps","game_id":"g"}"#, Some(0)),
        (
            r#"{"product_id":"nope","game_id":"g","type":"tick"}"#,
            Some(0),
        ),
        (
            r#"{"product_id":"exrps","game_id":"g","type":"state_change"}"#,
            Some(0),
        ),
        (
            r#"[{"product_id":"exrps","game_id":"g","type":"tick"},{"product_id":"exrps","game_id":"g","type":"game_over","winner_id":"1"}]"#,
            Some(1),
        ),
    ];
    for (body, index) in cases {
        let (s, b) = server
            .post("/ingest", Some("Bearer exrps-secret"), body)
            .await;
        assert_error(s, &b, 400, "bad_request");
        assert_eq!(b.get("index").and_then(Value::as_u64), index, "{body}: {b}");
    }
    assert!(server.events().await.is_empty(), "nothing was appended");
    let (s, b) = server.ingest("exrps-secret", &good).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["first_id"], 1, "no id was used by a rejected body");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_acks_single_events_and_batches() {
    let (_fake, server) = setup().await;
    let mut ws = server.ws("exrps-secret").await;
    ws_send(&mut ws, &tick("exrps", 1).to_string()).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 1, "count": 1}));
    let batch = json!([tick("exrps", 2), tick("exrps", 3), tick("exrps", 4)]);
    ws_send(&mut ws, &batch.to_string()).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 4, "count": 3}));

    // The key in the query string, and another product's key.
    let mut by_query = server
        .ws_connect("?key=exrps-secret", None)
        .await
        .expect("upgrade with ?key=");
    ws_send(&mut by_query, &tick("exrps", 5).to_string()).await;
    assert_eq!(ws_recv(&mut by_query).await, json!({"ack": 5, "count": 1}));
    let mut chess = server.ws("chess-secret").await;
    let chess_event = json!({"product_id": "chess", "game_id": "c", "type": "tick", "n": 6});
    ws_send(&mut chess, &chess_event.to_string()).await;
    assert_eq!(ws_recv(&mut chess).await, json!({"ack": 6, "count": 1}));
    // The first connection is still usable.
    ws_send(&mut ws, &tick("exrps", 7).to_string()).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 7, "count": 1}));

    let events = server.events().await;
    assert_eq!(events.len(), 7);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["id"], i as u64 + 1);
        assert_eq!(e["event"]["n"], i as u64 + 1, "{e}");
    }
    assert_eq!(events[5]["event"], chess_event);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_pipelines_a_thousand_frames() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (_fake, server) = setup().await;
    let mut ws = server.ws("exrps-secret").await;
    for n in 1..=1000 {
        ws.feed(Message::text(tick("exrps", n).to_string()))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    let mut last = 0;
    for n in 1..=1000u64 {
        let ack = ws_recv(&mut ws).await;
        assert_eq!(ack["count"], 1, "{ack}");
        let id = ack["ack"].as_u64().unwrap();
        assert!(id > last, "acks in order: {id} after {last}");
        assert_eq!(id, n, "one connection's frames get consecutive ids");
        last = id;
    }
    let events = server.events().await;
    assert_eq!(events.len(), 1000);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["event"]["n"], i as u64 + 1, "frame order is log order");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_bad_frames_append_nothing_and_keep_the_connection() {
    let (_fake, server) = setup().await;
    let mut ws = server.ws("exrps-secret").await;
    let ev = |fields: Value| {
        let mut e = json!({"product_id": "exrps", "game_id": "g", "bad": true});
        for (k, v) in fields.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let marked_good = ev(json!({"type": "tick"}));
    let cases: Vec<(String, Option<u64>)> = vec![
        ("not json".into(), None),
        ("{\"product_id\": ".into(), None),
        ("[]".into(), None),
        (
            json!({"game_id": "g", "type": "tick", "bad": true}).to_string(),
            Some(0),
        ),
        (
            json!({"product_id": "exrps", "game_id": "g", "bad": true}).to_string(),
            Some(0),
        ),
        (
            ev(json!({"type": "tick", "product_id": "nope"})).to_string(),
            Some(0),
        ),
        (ev(json!({"type": "state_change"})).to_string(), Some(0)),
        (
            ev(json!({"type": "game_over", "winner_id": "1"})).to_string(),
            Some(0),
        ),
        (
            ev(json!({"type": "game_over", "loser_id": "1"})).to_string(),
            Some(0),
        ),
        (
            ev(json!({"type": "player_disconnect"})).to_string(),
            Some(0),
        ),
        (
            ev(json!({"type": "gameplay", "event_data": "0"})).to_string(),
            Some(0),
        ),
        (
            ev(json!({"type": "state_change", "new_state": null})).to_string(),
            Some(0),
        ),
        (
            json!([marked_good, marked_good, ev(json!({"type": "gameplay"}))]).to_string(),
            Some(2),
        ),
        (
            json!([
                marked_good,
                ev(json!({"type": "tick", "product_id": "nope"})),
                marked_good
            ])
            .to_string(),
            Some(1),
        ),
        (
            json!([marked_good, ev(json!({"type": "player_disconnect"}))]).to_string(),
            Some(1),
        ),
        (json!([marked_good, "text"]).to_string(), Some(1)),
    ];
    for (next_id, (frame, index)) in (1u64..).zip(&cases) {
        ws_send(&mut ws, frame).await;
        let answer = ws_recv(&mut ws).await;
        assert_eq!(answer["error"], "bad_request", "{frame}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
        assert_eq!(
            answer.get("index").and_then(Value::as_u64),
            *index,
            "{frame}: {answer}"
        );
        // The connection stays open and nothing of the frame took an id.
        ws_send(&mut ws, &tick("exrps", next_id).to_string()).await;
        assert_eq!(
            ws_recv(&mut ws).await,
            json!({"ack": next_id, "count": 1}),
            "after {frame}"
        );
    }
    let events = server.events().await;
    assert_eq!(events.len(), cases.len());
    assert!(
        events.iter().all(|e| e["event"].get("bad").is_none()),
        "an event of a rejected frame was appended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_wrong_key_is_refused_at_the_upgrade() {
    let (_fake, server) = setup().await;
    for (query, auth) in [
        ("", None),
        ("", Some("Bearer wrong")),
        ("", Some("Bearer")),
        ("", Some(&format!("Bearer {ADMIN}") as &str)),
        ("?key=wrong", None),
        ("?key=", None),
    ] {
        let (status, body) = ws_refused(&server, query, auth).await;
        assert_error(status, &body, 401, "unauthorized");
    }
    assert!(server.events().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_other_products_events_are_forbidden() {
    let (_fake, server) = setup().await;
    let mut ws = server.ws("exrps-secret").await;
    let chess = json!({"product_id": "chess", "game_id": "c", "type": "game_removed"});
    ws_send(&mut ws, &chess.to_string()).await;
    let answer = ws_recv(&mut ws).await;
    assert_eq!(answer["error"], "forbidden", "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
    ws_send(&mut ws, &json!([tick("exrps", 1), chess]).to_string()).await;
    assert_eq!(ws_recv(&mut ws).await["error"], "forbidden");
    ws_send(&mut ws, &tick("exrps", 1).to_string()).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 1, "count": 1}));

    let (s, b) = server.ingest("exrps-secret", &chess).await;
    assert_error(s, &b, 403, "forbidden");
    let events = server.events().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], tick("exrps", 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_binary_frame_closes_with_1003() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (_fake, server) = setup().await;
    let mut ws = server.ws("exrps-secret").await;
    ws_send(&mut ws, &tick("exrps", 1).to_string()).await;
    assert_eq!(ws_recv(&mut ws).await["ack"], 1);
    ws.send(Message::binary(tick("exrps", 2).to_string().into_bytes()))
        .await
        .unwrap();
    assert_eq!(ws_close_code(&mut ws).await, Some(1003));
    assert_eq!(server.events().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_frame_over_one_mib_closes_with_1009() {
    let (_fake, server) = setup().await;
    let mut ws = server.ws("exrps-secret").await;
    // Just under the limit is fine.
    let mut event = tick("exrps", 1);
    let base = event.to_string().len() + ",\"pad\":\"\"".len();
    event["pad"] = json!("x".repeat((1 << 20) - base));
    let text = event.to_string();
    assert_eq!(text.len(), 1 << 20);
    ws_send(&mut ws, &text).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 1, "count": 1}));

    event["pad"] = json!("x".repeat((1 << 20) - base + 1));
    ws_send(&mut ws, &event.to_string()).await;
    assert_eq!(ws_close_code(&mut ws).await, Some(1009));
    assert_eq!(server.events().await.len(), 1);
    assert_eq!(
        server.events().await[0]["event"]["pad"]
            .as_str()
            .unwrap()
            .len(),
        (1 << 20) - base
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_producers_over_websocket_post_and_a_crash() {
    let (fake, server) = setup().await;
    let options = Options::new(&fake);
    let envelope = |producer: &str, seq: u64, events: &[Value]| {
        json!({"producer": producer, "seq": seq, "events": events}).to_string()
    };
    let mut ws = server.ws("exrps-secret").await;
    let first = [tick("exrps", 1), tick("exrps", 2)];
    ws_send(&mut ws, &envelope("p1", 1, &first)).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 2, "count": 2}));
    ws_send(&mut ws, &envelope("p1", 1, &first)).await;
    assert_eq!(
        ws_recv(&mut ws).await,
        json!({"ack": 2, "count": 0, "duplicate": true})
    );
    ws_send(&mut ws, &envelope("p1", 3, &[tick("exrps", 3)])).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 3, "count": 1}));
    // Not higher than the stored seq: a duplicate answered with the stored last id.
    for seq in [1, 2, 3] {
        ws_send(&mut ws, &envelope("p1", seq, &[tick("exrps", 99)])).await;
        assert_eq!(
            ws_recv(&mut ws).await,
            json!({"ack": 3, "count": 0, "duplicate": true}),
            "seq {seq}"
        );
    }
    // Producers are independent; frames without an envelope are never deduplicated.
    ws_send(&mut ws, &envelope("p2", 1, &[tick("exrps", 4)])).await;
    assert_eq!(ws_recv(&mut ws).await, json!({"ack": 4, "count": 1}));
    for id in [5, 6] {
        ws_send(&mut ws, &tick("exrps", id).to_string()).await;
        assert_eq!(ws_recv(&mut ws).await, json!({"ack": id, "count": 1}));
    }
    // Bad envelopes.
    for bad in [
        json!({"producer": "p1", "seq": 0, "events": [tick("exrps", 99)]}),
        json!({"producer": "p1", "seq": -1, "events": [tick("exrps", 99)]}),
        json!({"producer": "p1", "seq": "4", "events": [tick("exrps", 99)]}),
        json!({"producer": "", "seq": 4, "events": [tick("exrps", 99)]}),
        json!({"seq": 4, "events": [tick("exrps", 99)]}),
        json!({"producer": "p1", "seq": 4, "events": []}),
        json!({"producer": "p1", "seq": 4, "events": tick("exrps", 99)}),
    ] {
        ws_send(&mut ws, &bad.to_string()).await;
        assert_eq!(ws_recv(&mut ws).await["error"], "bad_request", "{bad}");
    }
    // A bad event in an envelope does not consume the seq.
    let broken = json!({"product_id": "exrps", "game_id": "g", "type": "state_change"});
    ws_send(&mut ws, &envelope("p1", 4, &[tick("exrps", 99), broken])).await;
    let answer = ws_recv(&mut ws).await;
    assert_eq!(answer["error"], "bad_request", "{answer}");
    assert_eq!(answer["index"], 1, "{answer}");

    // POST.
    let body = envelope("p3", 5, &[tick("exrps", 7), tick("exrps", 8)]);
    let (s, b) = server
        .post("/ingest", Some("Bearer exrps-secret"), &body)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({"first_id": 7, "last_id": 8, "count": 2}));
    let (s, b) = server
        .post("/ingest", Some("Bearer exrps-secret"), &body)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["duplicate"], true, "{b}");
    assert_eq!(b["last_id"], 8, "{b}");
    assert_eq!(b["count"], 0, "{b}");

    let expected: Vec<Value> = (1..=8).map(|n| tick("exrps", n)).collect();
    let logged =
        |events: Vec<Value>| -> Vec<Value> { events.iter().map(|e| e["event"].clone()).collect() };
    assert_eq!(logged(server.events().await), expected, "no duplicates");

    // The producers' records survive kill -9.
    drop(ws);
    let server = server.crash_and_restart(&options).await;
    let mut ws = server.ws("exrps-secret").await;
    ws_send(&mut ws, &envelope("p1", 3, &[tick("exrps", 3)])).await;
    assert_eq!(
        ws_recv(&mut ws).await,
        json!({"ack": 3, "count": 0, "duplicate": true})
    );
    ws_send(&mut ws, &envelope("p2", 1, &[tick("exrps", 4)])).await;
    assert_eq!(
        ws_recv(&mut ws).await,
        json!({"ack": 4, "count": 0, "duplicate": true})
    );
    let (s, b) = server
        .post("/ingest", Some("Bearer exrps-secret"), &body)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["duplicate"], &b["last_id"]),
        (&json!(true), &json!(8)),
        "{b}"
    );
    ws_send(&mut ws, &envelope("p1", 4, &[tick("exrps", 9)])).await;
    assert_eq!(
        ws_recv(&mut ws).await,
        json!({"ack": 9, "count": 1}),
        "ids continue after a restart"
    );
    let mut expected = expected;
    expected.push(tick("exrps", 9));
    assert_eq!(logged(server.events().await), expected, "no duplicates");
}

// ---- the matchmaker consumer ----

/// Ingests an event over POST.
async fn report(server: &Server, event: Value) {
    let product = event["product_id"].as_str().unwrap().to_string();
    let (s, b) = server.ingest(&format!("{product}-secret"), &event).await;
    assert_eq!(s, 200, "{b}");
}

fn state_change(product: &str, game: &str, state: &str) -> Value {
    json!({"product_id": product, "game_id": game, "type": "state_change", "new_state": state})
}

fn disconnect(product: &str, game: &str, player: &str) -> Value {
    json!({"product_id": product, "game_id": game, "type": "player_disconnect", "player_id": player})
}

/// Waits until the matchmaker has applied everything ingested so far: a
/// fresh marker game reaching the lobby means every earlier event was
/// consumed (the consumer applies the log in order).
async fn settle(server: &Server) {
    let (s, game) = server.create("exrps", "marker").await;
    assert_eq!(s, 200, "{game}");
    let id = game["game_id"].as_str().unwrap().to_string();
    report(server, state_change("exrps", &id, "creator_joined")).await;
    server
        .wait_for(|| async { listed(server, "exrps", &id).await.is_some() })
        .await;
    report(
        server,
        json!({"product_id": "exrps", "game_id": id, "type": "game_removed"}),
    )
    .await;
    server
        .wait_for(|| async { listed(server, "exrps", &id).await.is_none() })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn state_changes_list_and_unlist_games() {
    let (_fake, server) = setup().await;
    let (s, game) = server.create("chess", "1").await;
    assert_eq!(s, 200, "{game}");
    let id = game["game_id"].as_str().unwrap().to_string();

    // created -> in_progress and unknown states are ignored; so are events
    // for another product's game id or an unknown game.
    report(&server, state_change("chess", &id, "in_progress")).await;
    report(&server, state_change("chess", &id, "all_players_joined")).await;
    report(&server, state_change("chess", &id, "bogus")).await;
    report(&server, state_change("chess", &id, "created")).await;
    report(&server, state_change("exrps", &id, "creator_joined")).await;
    report(
        &server,
        state_change("chess", "no-such-game", "creator_joined"),
    )
    .await;
    settle(&server).await;
    assert!(listed(&server, "chess", &id).await.is_none());
    let (s, b) = server.join("chess", &id, "2").await;
    assert_error(s, &b, 409, "game_not_joinable");

    // created -> creator_joined: listed (so in_progress was not applied).
    report(&server, state_change("chess", &id, "creator_joined")).await;
    server
        .wait_for(|| async { listed(&server, "chess", &id).await.is_some() })
        .await;
    assert!(listed(&server, "exrps", &id).await.is_none());
    let (s, b) = server.join("chess", &id, "2").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["state"], "creator_joined");
    assert_eq!(
        listed(&server, "chess", &id).await.unwrap()["players"],
        json!(["1", "2"])
    );

    // A repeated or backward transition changes nothing.
    report(&server, state_change("chess", &id, "creator_joined")).await;
    report(&server, state_change("chess", &id, "created")).await;
    settle(&server).await;
    assert!(listed(&server, "chess", &id).await.is_some());

    // all_players_joined takes it out of the lobby even with a free seat.
    report(&server, state_change("chess", &id, "all_players_joined")).await;
    server
        .wait_for(|| async { listed(&server, "chess", &id).await.is_none() })
        .await;
    let (s, b) = server.join("chess", &id, "3").await;
    assert_error(s, &b, 409, "game_not_joinable");
    let (s, b) = server.join("chess", &id, "2").await;
    assert_error(s, &b, 409, "already_joined");

    // Back to creator_joined is not a transition the machine allows.
    report(&server, state_change("chess", &id, "creator_joined")).await;
    settle(&server).await;
    assert!(listed(&server, "chess", &id).await.is_none());
    let (s, b) = server.join("chess", &id, "3").await;
    assert_error(s, &b, 409, "game_not_joinable");
}

#[tokio::test(flavor = "multi_thread")]
async fn game_removed_deletes_the_game() {
    let (_fake, server) = setup().await;
    let listed_id = server.listed_game("exrps", "1").await;
    let (_, created) = server.create("exrps", "2").await;
    let created_id = created["game_id"].as_str().unwrap().to_string();
    // Another product's removal of the same id is ignored.
    report(
        &server,
        json!({"product_id": "chess", "game_id": listed_id, "type": "game_removed"}),
    )
    .await;
    settle(&server).await;
    assert!(listed(&server, "exrps", &listed_id).await.is_some());

    for id in [&listed_id, &created_id] {
        report(
            &server,
            json!({"product_id": "exrps", "game_id": id, "type": "game_removed"}),
        )
        .await;
    }
    server
        .wait_for(|| async { listed(&server, "exrps", &listed_id).await.is_none() })
        .await;
    settle(&server).await;
    for id in [&listed_id, &created_id] {
        let (s, b) = server.join("exrps", id, "3").await;
        assert_error(s, &b, 404, "game_not_found");
    }
    // A late state change for a removed game does not bring it back.
    report(
        &server,
        state_change("exrps", &created_id, "creator_joined"),
    )
    .await;
    settle(&server).await;
    let (s, b) = server.join("exrps", &created_id, "3").await;
    assert_error(s, &b, 404, "game_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn player_disconnect_lists_the_game_again_without_that_player() {
    let (_fake, server) = setup().await;
    let id = server.listed_game("exrps", "1").await;
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_eq!(s, 200, "{b}");
    assert!(listed(&server, "exrps", &id).await.is_none(), "full");
    report(&server, state_change("exrps", &id, "all_players_joined")).await;
    report(&server, state_change("exrps", &id, "in_progress")).await;
    // The creator leaving and an unknown player are not resets.
    report(&server, disconnect("exrps", &id, "1")).await;
    report(&server, disconnect("exrps", &id, "42")).await;
    settle(&server).await;
    assert!(listed(&server, "exrps", &id).await.is_none());

    report(&server, disconnect("exrps", &id, "2")).await;
    server
        .wait_for(|| async { listed(&server, "exrps", &id).await.is_some() })
        .await;
    let game = listed(&server, "exrps", &id).await.unwrap();
    assert_eq!(game["players"], json!(["1"]));
    let (s, b) = server.join("exrps", &id, "2").await;
    assert_eq!(s, 200, "the dropped player may join again: {b}");
    assert_eq!(b["players"], json!(["1", "2"]));
    assert_eq!(b["state"], "creator_joined");

    // A seat taken but not yet reported (still creator_joined) is reset too.
    report(&server, disconnect("exrps", &id, "2")).await;
    server
        .wait_for(|| async { listed(&server, "exrps", &id).await.is_some() })
        .await;
    let (s, b) = server.join("exrps", &id, "3").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["players"], json!(["1", "3"]));

    // An ended game is not reset.
    for state in ["all_players_joined", "in_progress", "ended"] {
        report(&server, state_change("exrps", &id, state)).await;
    }
    report(&server, disconnect("exrps", &id, "3")).await;
    settle(&server).await;
    assert!(listed(&server, "exrps", &id).await.is_none());
    let (s, b) = server.join("exrps", &id, "4").await;
    assert_error(s, &b, 409, "game_not_joinable");
}
