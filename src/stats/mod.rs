//! The stats tracker (API.md "Leaderboards and player stats"): leaderboards
//! with pluggable scoring and per-player stats, kept by a consumer of the
//! event log; and their read routes.

pub mod board;
pub mod consumer;
pub mod handlers;
pub mod scoring;

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::lobby::{product, uint_param};
use crate::server::AppState;
use board::{Boards, Entry};

/// One registered implementation: its config name and its constructor.
pub type Registered<T> = (&'static str, fn() -> Box<T>);

/// Implementations chosen by name in the config.
pub struct Registry<T: ?Sized + 'static>(pub &'static [Registered<T>]);

impl<T: ?Sized> Registry<T> {
    /// The registered names (checked when the config is loaded).
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|(name, _)| *name).collect()
    }

    /// A new instance of the implementation called `name`.
    pub fn make(&self, name: &str) -> Option<Box<T>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, make)| make())
    }
}

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

/// `GET /leaderboards/top_ten/{product_id}`.
async fn top_ten(
    State(app): State<AppState>,
    Path(product_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    product(&app, &product_id)?;
    Ok(entries(Boards(&app.store).window(&product_id, 0, 10)?))
}

/// `GET /leaderboards/{product_id}?offset=O&count=N`.
async fn window(
    State(app): State<AppState>,
    Path(product_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    product(&app, &product_id)?;
    let offset = uint_param(&query, "offset")?.unwrap_or(0);
    let count = uint_param(&query, "count")?.unwrap_or(10).min(MAX_WINDOW);
    Ok(entries(Boards(&app.store).window(
        &product_id,
        offset,
        count as usize,
    )?))
}

/// `GET /leaderboards/{product_id}/players/{user_id}`.
async fn player(
    State(app): State<AppState>,
    Path((product_id, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    product(&app, &product_id)?;
    match Boards(&app.store).rank(&product_id, &user_id)? {
        Some((score, rank)) => Ok(Json(
            json!({"user_id": user_id, "score": score, "rank": rank}),
        )),
        None => Err(ApiError::PlayerNotFound(user_id)),
    }
}

/// `GET /stats/{product_id}/{user_id}`.
async fn player_stats(
    State(app): State<AppState>,
    Path((product_id, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    product(&app, &product_id)?;
    let counters = Boards(&app.store).stats(&product_id, &user_id)?;
    Ok(Json(json!(counters)))
}
