//! Operations routes (API.md "Operations"): health, readiness, metrics,
//! the admin status, online backup, reading the log, and (with the `failpoints` feature,
//! for tests) setting fail points.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, uint_param};
use crate::app::ports::ConsumerName;
use crate::infra::metrics;

/// Most events `GET /events` returns at once.
pub const MAX_READ: u64 = 1000;

/// `GET /readyz`: 200 while writes succeed and no consumer is failing.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let status = state.app.storage.status();
    if let Some(why) = status.failure {
        return ApiError::StorageUnavailable(why).into_response();
    }
    if state.app.health.any_failing() {
        let body =
            json!({"error": "unavailable", "message": "a consumer is failing; see /admin/status"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    "ready".into_response()
}

/// `POST /admin/backup` (admin key): a consistent point-in-time copy of
/// the whole database as the body. The backend writes it to a file in one
/// moment (writes wait meanwhile); the body is streamed from that file,
/// which is removed when the response ends, however it ends.
pub async fn backup(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let file = state.app.storage.backup().await?;
    let opened = tokio::fs::File::open(&file.path)
        .await
        .map_err(|e| ApiError::Internal(format!("backup file: {e}")))?;
    let (bytes, records) = (file.bytes, file.records);
    let body = tokio_util::io::ReaderStream::with_capacity(opened, 256 * 1024).map(move |chunk| {
        let _keep_until_sent = &file;
        chunk
    });
    let name = format!(
        "attachment; filename=\"varcade-{}.backup\"",
        crate::infra::clock::now_us() / 1_000_000
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, bytes.to_string()),
            (header::CONTENT_DISPOSITION, name),
            (
                header::HeaderName::from_static("x-varcade-backup-records"),
                records.to_string(),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// `GET /admin/status` (admin key): the log's end, each consumer's cursor,
/// lag and health, the layout version, the store's size and health.
pub async fn admin_status(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Value>, ApiError> {
    let app = &state.app;
    let durable = *app.storage.durable().borrow();
    let mut consumers = serde_json::Map::new();
    for consumer in ConsumerName::ALL {
        let cursor = app.storage.cursor(consumer).await?;
        let health = app.health.get(consumer);
        consumers.insert(
            consumer.as_str().to_string(),
            json!({
                "cursor": cursor,
                "lag": durable.saturating_sub(cursor),
                "state": if health.failing.is_some() { "failing" } else { "ok" },
                "error": health.failing,
                "failures": health.failures,
            }),
        );
    }
    let status = app.storage.status();
    Ok(Json(json!({
        "last_event_id": durable,
        "consumers": consumers,
        "layout_version": status.layout_version,
        "size_on_disk": status.size_on_disk,
        "storage": if status.failure.is_some() { "unavailable" } else { "ok" },
        "storage_error": status.failure,
    })))
}

/// Any other `/admin` path: 401 without the admin key, else 404.
pub async fn admin_unknown(_admin: Admin) -> ApiError {
    ApiError::NotFound("no such admin route".into())
}

/// `GET /metrics`: the Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics::store_size(state.app.storage.status().size_on_disk);
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// One event as `GET /events` returns it.
#[derive(Serialize)]
pub struct EventOut {
    id: u64,
    ts_ms: u64,
    event: Box<RawValue>,
}

/// `GET /events?after=ID&limit=N` (admin key).
pub async fn read_events(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<EventOut>>, ApiError> {
    let after = uint_param(&query, "after")?.unwrap_or(0);
    let limit = uint_param(&query, "limit")?.unwrap_or(100).min(MAX_READ);
    let events = state.app.storage.read(after, limit as usize).await?;
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

/// `POST /admin/failpoints` (admin key; only with the `failpoints`
/// feature): `{"name", "actions"}` sets a fail point, empty actions remove it.
#[cfg(feature = "failpoints")]
pub async fn failpoints(_admin: Admin, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not JSON: {e}")))?;
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let actions = body["actions"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request("`name` is required"));
    }
    if actions.is_empty() {
        fail::remove(&name);
    } else {
        fail::cfg(&name, actions).map_err(ApiError::bad_request)?;
    }
    Ok(Json(json!({"name": name, "actions": actions})))
}
