//! The lobby routes (API.md "Lobby", "Quick match", "Live lobby feed"):
//! thin handlers over the app's use cases. A join, quick join or create
//! keeps going if the client disconnects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};

use super::AppState;
use super::error::ApiError;
use super::extract::uint_param;
use super::limits::Cutoff;
use crate::app::ports::{FeedEvent, LobbyChange};
use crate::infra::jwt::Player;
use crate::infra::metrics;

/// The lobby routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/game_lobby/{product_id}/create_game", post(create_game))
        .route(
            "/game_lobby/{product_id}/join_game/{game_id}",
            post(join_game),
        )
        .route("/game_lobby/{product_id}/quick_join", post(quick_join))
        .route("/game_lobby/{product_id}/open_games", get(open_games))
        .route(
            "/game_lobby/{product_id}/open_games/stream",
            get(open_games_stream),
        )
}

/// How often an idle feed sends a `: keep-alive` comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Most bytes of feed events sent in one chunk.
const CHUNK: usize = 64 * 1024;

/// One Server-Sent Event's text.
fn sse(event: &str, id: u64, data: &str) -> String {
    format!("event: {event}\nid: {id}\ndata: {data}\n\n")
}

/// A feed event's text, encoded once and shared by every client (the
/// data is compact JSON, so one `data:` line).
fn feed_bytes(event: &FeedEvent) -> Bytes {
    event
        .encoded
        .get_or_init(|| {
            Bytes::from(match &event.change {
                LobbyChange::Listed { json, .. } => sse("listed", event.version, json),
                LobbyChange::Unlisted { game_id } => {
                    let data = serde_json::json!({"game_id": game_id}).to_string();
                    sse("unlisted", event.version, &data)
                }
            })
        })
        .clone()
}

/// The next chunk for a client: every event waiting in its buffer (up to
/// [`CHUNK`] bytes) in one write, or a keep-alive comment after
/// [`KEEP_ALIVE`] without any; `None` once the buffer is closed.
async fn next_chunk(rx: &mut mpsc::Receiver<Arc<FeedEvent>>) -> Option<Bytes> {
    let first = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
        Ok(event) => feed_bytes(event?.as_ref()),
        Err(_) => return Some(Bytes::from_static(b": keep-alive\n\n")),
    };
    let Ok(next) = rx.try_recv() else {
        return Some(first);
    };
    let mut chunk = BytesMut::with_capacity(CHUNK);
    chunk.extend_from_slice(&first);
    chunk.extend_from_slice(&feed_bytes(&next));
    while chunk.len() < CHUNK {
        match rx.try_recv() {
            Ok(event) => chunk.extend_from_slice(&feed_bytes(&event)),
            Err(_) => break,
        }
    }
    Some(chunk.freeze())
}

/// `GET /game_lobby/{product_id}/open_games/stream` (API.md "Live lobby
/// feed"): a snapshot (or, with `Last-Event-ID`, the missed events), then
/// every change. A client that falls behind by more than the backend holds
/// is cut off (its reconnect gets a snapshot); nothing waits for it.
async fn open_games_stream(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    ConnectInfo(cutoff): ConnectInfo<Cutoff>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let feed = state.app.lobby_feed(&product_id, after)?;
    let mut first = BytesMut::new();
    if let Some((games, version)) = &feed.snapshot {
        let mut data = String::from("[");
        for (i, game) in games.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            data.push_str(game);
        }
        data.push(']');
        first.extend_from_slice(sse("snapshot", *version, &data).as_bytes());
    }
    for event in &feed.replay {
        first.extend_from_slice(&feed_bytes(event));
    }
    let (tx, rx) = mpsc::channel::<Arc<FeedEvent>>(CLIENT_BUFFER);
    tokio::spawn(forward(feed.live, tx, cutoff));
    let live = futures_util::stream::unfold(rx, |mut rx| async move {
        next_chunk(&mut rx)
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let stream = futures_util::stream::iter([Ok(first.freeze())]).chain(live);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Feed events one client may have waiting to be written.
const CLIENT_BUFFER: usize = 256;
/// How long a client's full buffer may stay full before it is cut off.
const CLIENT_STALL: Duration = Duration::from_secs(2);

/// Moves a subscriber's events into its bounded buffer. A burst larger
/// than the buffer waits for the client to make room (this task's wait
/// slows no one else: the broadcast does not wait for it); a client whose
/// buffer stays full for [`CLIENT_STALL`], or that falls behind what the
/// backend holds, has its connection cut off.
async fn forward(
    mut live: broadcast::Receiver<Arc<FeedEvent>>,
    tx: mpsc::Sender<Arc<FeedEvent>>,
    cutoff: Cutoff,
) {
    loop {
        let event = match live.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(_)) => break cutoff.pull(),
            Err(RecvError::Closed) => return,
        };
        match tokio::time::timeout(CLIENT_STALL, tx.send(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => break cutoff.pull(),
        }
    }
    metrics::feed_client_cut_off();
}

async fn quick_join(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    player: Player,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body?;
    let (game, matched) = state.app.quick_join(&product_id, player).await?;
    Ok(json(game.full_json_matched(Some(matched.as_str()))))
}

async fn create_game(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    player: Player,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body?;
    let game = state.app.create_game(&product_id, player).await?;
    Ok(json(game.full_json()))
}

async fn join_game(
    State(state): State<AppState>,
    Path((product_id, game_id)): Path<(String, String)>,
    player: Player,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body?;
    let game = state.app.join_game(&product_id, &game_id, player).await?;
    Ok(json(game.full_json()))
}

/// A JSON text as a response.
fn json(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn open_games(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    state.app.product(&product_id)?;
    let count = uint_param(&query, "count")?;
    let page = uint_param(&query, "page")?;
    Ok(json(state.app.open_games(&product_id, count, page)?))
}
