//! The lobby (matchmaker) routes of API.md "Lobby": one file per command.

mod create_game;
mod join_game;
mod open_games;

pub use open_games::uint_param;

use axum::Router;
use axum::routing::{get, post};

use crate::config::ProductConfig;
use crate::error::ApiError;
use crate::server::AppState;

/// The lobby routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/game_lobby/{product_id}/create_game",
            post(create_game::handle),
        )
        .route(
            "/game_lobby/{product_id}/join_game/{game_id}",
            post(join_game::handle),
        )
        .route(
            "/game_lobby/{product_id}/open_games",
            get(open_games::handle),
        )
}

/// The configured product, or `unknown_product`.
pub fn product<'a>(app: &'a AppState, product_id: &str) -> Result<&'a ProductConfig, ApiError> {
    app.products
        .get(product_id)
        .ok_or_else(|| ApiError::UnknownProduct(product_id.to_string()))
}
