//! The stats tracker: leaderboards with pluggable scoring and per-player
//! stats, kept by a consumer of the event log.

pub mod consumer;
pub mod handlers;
pub mod scoring;

use axum::Router;

use crate::server::AppState;

/// The leaderboard and player stats routes.
pub fn routes() -> Router<AppState> {
    Router::new()
}
