//! The event log and what feeds and follows it: ingest (WebSocket and
//! POST), the read route, the consumer driver, the matchmaker consumer and
//! retention.

pub mod consumer;
pub mod ingest;
pub mod log;
pub mod matchmaker;

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::auth::Admin;
use crate::error::ApiError;
use crate::lobby::uint_param;
use crate::server::AppState;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Most events `GET /events` returns at once.
pub const MAX_READ: u64 = 1000;

/// The ingest and log-reading routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ingest", get(ingest::websocket).post(ingest::post))
        .route("/events", get(read_events))
}

#[derive(Serialize)]
struct EventOut {
    id: u64,
    ts_ms: u64,
    event: Box<RawValue>,
}

/// `GET /events?after=ID&limit=N` (admin key).
async fn read_events(
    State(app): State<AppState>,
    _admin: Admin,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<EventOut>>, ApiError> {
    let after = uint_param(&query, "after")?.unwrap_or(0);
    let limit = uint_param(&query, "limit")?.unwrap_or(100).min(MAX_READ);
    let events = log::read(&app.store.log, after, limit as usize)?;
    let out = events
        .into_iter()
        .filter_map(|e| {
            let event = RawValue::from_string(e.json).ok()?;
            Some(EventOut {
                id: e.id,
                ts_ms: e.ts_ms,
                event,
            })
        })
        .collect();
    Ok(Json(out))
}

/// Every consumer's cursor, by name.
pub fn cursors(store: &Store) -> Vec<(&'static str, u64)> {
    vec![
        (matchmaker::NAME, matchmaker::cursor(store)),
        (
            crate::stats::consumer::NAME,
            crate::stats::consumer::cursor(store),
        ),
    ]
}

/// Drops events every consumer has applied once they are older than the
/// retention window; runs until shutdown.
pub async fn retention(store: std::sync::Arc<Store>, window: Duration, mut shutdown: Shutdown) {
    let period = (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let upto = cursors(&store)
            .into_iter()
            .map(|(_, c)| c)
            .min()
            .unwrap_or(0);
        let before_ms = (crate::game::now_us() / 1000).saturating_sub(window.as_millis() as u64);
        let store = store.clone();
        match tokio::task::spawn_blocking(move || log::drop_before(&store.log, upto, before_ms))
            .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(events = n, upto, "retention dropped old events"),
            Ok(Err(e)) => tracing::warn!(error = %e, "retention failed"),
            Err(e) => tracing::warn!(error = %e, "retention task failed"),
        }
    }
}
