//! The leaderboard and player-stats routes (API.md "Leaderboards and
//! player stats"), over the app's board reads.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::uint_param;
use crate::app::ports::Entry;

/// Most entries one window returns.
pub const MAX_WINDOW: u64 = 100;

/// The leaderboard and player stats routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/leaderboards/top_ten/{product_id}", get(top_ten))
        .route("/leaderboards/{product_id}", get(window))
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

async fn top_ten(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(entries(state.app.window(&product_id, 0, 10).await?))
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
            .window(&product_id, offset, count as usize)
            .await?,
    ))
}

/// Most neighbours `?around=` shows either side.
pub const MAX_AROUND: u64 = 50;

async fn player(
    State(state): State<AppState>,
    Path((product_id, user_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let Some(n) = uint_param(&query, "around")? else {
        let (score, rank) = state.app.rank(&product_id, &user_id).await?;
        return Ok(Json(
            json!({"user_id": user_id, "score": score, "rank": rank}),
        ));
    };
    if n > MAX_AROUND {
        return Err(ApiError::bad_request(format!(
            "`around` must be from 0 to {MAX_AROUND}, got {n}"
        )));
    }
    let found = state.app.around(&product_id, &user_id, n as usize).await?;
    let around: Vec<Value> = found
        .around
        .iter()
        .map(|(e, rank)| json!({"user_id": e.user_id, "score": e.score, "rank": rank}))
        .collect();
    Ok(Json(json!({
        "user_id": user_id,
        "score": found.score,
        "rank": found.rank,
        "around": around,
    })))
}

async fn player_stats(
    State(state): State<AppState>,
    Path((product_id, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let counters = state.app.player_stats(&product_id, &user_id).await?;
    Ok(Json(json!(counters)))
}
