//! Event ingest over HTTP (API.md "Event ingest"): `POST /ingest` and the
//! `GET /ingest` WebSocket, both through the app's ingest use case.
//!
//! On a WebSocket the reader validates and queues frames without waiting
//! for durability, and a writer task answers them in order as each becomes
//! durable, so clients may pipeline. What one connection may have in flight
//! is bounded twice: by bytes ([`MAX_IN_FLIGHT`]) and by frames (the answer
//! queue). When either is full, or the storage writer's queue is, the
//! connection is simply not read until there is room (backpressure);
//! nothing accepted is dropped.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::AppState;
use super::error::ApiError;
use super::extract::admit_ingest;
use crate::app::ingest::{Kinds, count_ingested};
use crate::app::ports::{Appended, PendingAppend};
use crate::domain::event::MAX_FRAME;
use crate::infra::metrics;

/// Bytes of frames one WebSocket may have read but not yet acknowledged.
pub const MAX_IN_FLIGHT: usize = 16 * MAX_FRAME;
/// Frames one WebSocket may have read but not yet acknowledged.
const MAX_FRAMES_IN_FLIGHT: usize = 4096;

fn ack_json(appended: &Appended) -> Value {
    let mut ack = json!({"ack": appended.last_id, "count": appended.count});
    if appended.duplicate {
        ack["duplicate"] = json!(true);
    }
    ack
}

fn admitted(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    admit_ingest(
        &state.ingest_keys,
        headers,
        query.get("key").map(String::as_str),
    )
}

/// `POST /ingest`.
pub async fn post(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let admitted = admitted(&state, &headers, &query)?;
    let body = body?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
    let frame = state.app.validate_frame(text, &admitted)?;
    let appended = state.app.append_frame(frame).await?;
    let mut answer = json!({
        "first_id": appended.first_id,
        "last_id": appended.last_id,
        "count": appended.count,
    });
    if appended.duplicate {
        answer["duplicate"] = json!(true);
    }
    Ok(Json(answer))
}

/// `GET /ingest`: the WebSocket upgrade, refused with 401 without a key.
pub async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let admitted = match admitted(&state, &headers, &query) {
        Ok(products) => products,
        Err(e) => return e.into_response(),
    };
    upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| serve_socket(state, socket, admitted))
}

/// What the writer sends next, in frame order.
enum Answer {
    Now(Value),
    Durable(PendingAppend, Kinds, OwnedSemaphorePermit),
    Close(u16, &'static str),
}

async fn serve_socket(state: AppState, socket: WebSocket, admitted: Vec<String>) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Answer>(MAX_FRAMES_IN_FLIGHT);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let writer = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let message = match answer {
                Answer::Now(value) => Message::Text(value.to_string().into()),
                Answer::Durable(pending, kinds, permit) => {
                    let result = pending.wait().await;
                    drop(permit);
                    match result {
                        Ok(appended) => {
                            count_ingested(&appended, &kinds);
                            Message::Text(ack_json(&appended).to_string().into())
                        }
                        Err(e) => Message::Text(ApiError::from(e).body().to_string().into()),
                    }
                }
                Answer::Close(code, reason) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    break;
                }
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(message) = stream.next().await {
        let answer = match message {
            Ok(Message::Text(text)) => frame(&state, &in_flight, text.as_str(), &admitted).await,
            Ok(Message::Binary(_)) => {
                metrics::frame_rejected("binary");
                Answer::Close(close_code::UNSUPPORTED, "binary frames are not accepted")
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                let text = e.to_string().to_lowercase();
                if text.contains("too long") || text.contains("size") {
                    metrics::frame_rejected("too_large");
                    Answer::Close(close_code::SIZE, "frame larger than 1 MiB")
                } else {
                    break;
                }
            }
        };
        let closing = matches!(answer, Answer::Close(..));
        if tx.send(answer).await.is_err() || closing {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Validates and queues one text frame, waiting for room first.
async fn frame(
    state: &AppState,
    in_flight: &Arc<Semaphore>,
    text: &str,
    admitted: &[String],
) -> Answer {
    let frame = match state.app.validate_frame(text, admitted) {
        Ok(frame) => frame,
        Err(e) => return Answer::Now(e.to_json()),
    };
    let bytes = u32::try_from(text.len().clamp(1, MAX_FRAME)).unwrap_or(u32::MAX);
    let Ok(permit) = in_flight.clone().acquire_many_owned(bytes).await else {
        return Answer::Close(close_code::ERROR, "the connection is closing");
    };
    match state.app.submit_frame(frame).await {
        Ok((pending, kinds)) => Answer::Durable(pending, kinds, permit),
        Err(e) => Answer::Now(ApiError::from(e).body()),
    }
}
