//! The leaderboard and player-stats routes (API.md "Leaderboards and
//! player stats"), over the app's board reads.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::uint_param;
use crate::app::ports::Entry;
use crate::domain::season::rfc3339;

/// Most entries one window returns.
pub const MAX_WINDOW: u64 = 100;

/// The leaderboard and player stats routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/leaderboards/top_ten/{product_id}", get(top_ten))
        .route("/leaderboards/{product_id}", get(window))
        .route("/leaderboards/{product_id}/seasons", get(seasons))
        .route("/leaderboards/{product_id}/players/{user_id}", get(player))
        .route("/stats/{product_id}/{user_id}", get(player_stats))
}

fn entries(list: Vec<Entry>) -> Json<Value> {
    Json(Value::Array(
        list.into_iter()
            .map(|e| json!({"user_id": e.user_id, "score": e.score}))
            .collect(),
    ))
}

/// `?season=`: the board to read (`None`: the current one).
fn season(query: &HashMap<String, String>) -> Option<&str> {
    query.get("season").map(String::as_str)
}

async fn top_ten(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let top = state.app.window(&product_id, season(&query), 0, 10).await?;
    Ok(entries(top))
}

async fn window(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    state.app.product(&product_id)?;
    let offset = uint_param(&query, "offset")?.unwrap_or(0);
    let count = uint_param(&query, "count")?.unwrap_or(10).min(MAX_WINDOW);
    Ok(entries(
        state
            .app
            .window(&product_id, season(&query), offset, count as usize)
            .await?,
    ))
}

/// Most neighbours `?around=` shows either side.
pub const MAX_AROUND: u64 = 50;

async fn player(
    State(state): State<AppState>,
    Path((product_id, user_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(n) = uint_param(&query, "around")? else {
        let (score, rank) = state
            .app
            .rank(&product_id, season(&query), &user_id)
            .await?;
        return Ok(Json(json!({"user_id": user_id, "score": score, "rank": rank})).into_response());
    };
    if n > MAX_AROUND {
        return Err(ApiError::bad_request(format!(
            "`around` must be from 0 to {MAX_AROUND}, got {n}"
        )));
    }
    let found = state
        .app
        .around(&product_id, season(&query), &user_id, n as usize)
        .await?;
    Ok(Json(Around {
        around: found
            .around
            .iter()
            .map(|(e, rank)| Ranked {
                rank: *rank,
                score: e.score,
                user_id: &e.user_id,
            })
            .collect(),
        rank: found.rank,
        score: found.score,
        user_id: &user_id,
    })
    .into_response())
}

/// A board entry with its rank (fields in the order `json!` would sort
/// them, so both answers read the same).
#[derive(Serialize)]
struct Ranked<'a> {
    rank: u64,
    score: i64,
    user_id: &'a str,
}

/// A player's place with the entries around it.
#[derive(Serialize)]
struct Around<'a> {
    around: Vec<Ranked<'a>>,
    rank: u64,
    score: i64,
    user_id: &'a str,
}

async fn seasons(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let list = state.app.seasons(&product_id).await?;
    let time = |ms: Option<i64>| ms.map(rfc3339);
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|s| {
                json!({
                    "season": s.id,
                    "starts": time(s.starts_ms),
                    "ends": time(s.ends_ms),
                    "players": s.players,
                    "current": s.current,
                })
            })
            .collect(),
    )))
}

async fn player_stats(
    State(state): State<AppState>,
    Path((product_id, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let counters = state.app.player_stats(&product_id, &user_id).await?;
    Ok(Json(json!(counters)))
}
