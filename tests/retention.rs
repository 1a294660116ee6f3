//! Retention: events every consumer has applied are dropped once older than
//! `event_retention_secs`; ids are never reused, also across a restart.

mod common;

use common::{FakeGameServer, Options, Server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn applied_old_events_are_dropped_and_ids_never_reused() {
    let fake = FakeGameServer::start().await;
    let mut options = Options::new(&fake);
    options.extra = "event_retention_secs = 1".into();
    let server = Server::start(&options).await;
    let event = json!({"product_id": "exrps", "game_id": "g", "type": "game_over", "winner_id": "1", "loser_id": "2"});
    let batch = json!([event, event, event]);
    let (status, body) = server.ingest("exrps-secret", &batch).await;
    assert_eq!((status, body["last_id"].as_u64()), (200, Some(3)), "{body}");
    assert_eq!(server.events().await.len(), 3);
    server
        .wait_for(|| async { server.events().await.is_empty() })
        .await;
    // The stats were applied before the events went.
    let (_, stats) = server.get("/stats/exrps/1").await;
    assert_eq!(stats["wins"], 3);

    let server = server.crash_and_restart(&options).await;
    let (status, body) = server.ingest("exrps-secret", &event).await;
    assert_eq!(
        (status, body["first_id"].as_u64()),
        (200, Some(4)),
        "{body}"
    );
    let ids: Vec<u64> = server
        .events()
        .await
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![4]);
}
