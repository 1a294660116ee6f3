//! The lobby routes (API.md "Lobby"): thin handlers over the app's use
//! cases. A join or create keeps going if the client disconnects.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use super::error::ApiError;
use super::extract::uint_param;
use crate::infra::jwt::Player;

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
}

async fn quick_join(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    player: Player,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    body?;
    let (game, matched) = state.app.quick_join(&product_id, player).await?;
    let mut value: serde_json::Value = serde_json::from_str(&game.full_json())
        .map_err(|e| ApiError::Internal(format!("game JSON: {e}")))?;
    value["matched"] = serde_json::Value::from(matched.as_str());
    Ok(json(value.to_string()))
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
