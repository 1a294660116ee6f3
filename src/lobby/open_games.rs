//! `GET /game_lobby/{product_id}/open_games?count=N&page=P`: listed games,
//! oldest listing first, in the partial form.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::server::AppState;

/// Parses an optional non-negative integer query parameter.
pub fn uint_param(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "`{name}` must be a non-negative integer, got {v:?}"
            ))
        }),
    }
}

pub async fn handle(
    State(app): State<AppState>,
    Path(product_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    super::product(&app, &product_id)?;
    let lobby = &app.config.lobby;
    let count = uint_param(&query, "count")?
        .unwrap_or(lobby.default_page_size)
        .min(lobby.max_page_size);
    let page = uint_param(&query, "page")?.unwrap_or(0);
    let json = app.store.open_games(&product_id, page, count);
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
