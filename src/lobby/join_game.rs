//! `POST /game_lobby/{product_id}/join_game/{game_id}`: reserve the seat in
//! a transaction, then tell the game server; undo the seat if it refuses.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde_json::Value;

use crate::auth::Player;
use crate::error::ApiError;
use crate::game::JoinRefusal;
use crate::server::AppState;
use crate::store::games::SeatError;

pub async fn handle(
    State(app): State<AppState>,
    Path((product_id, game_id)): Path<(String, String)>,
    player: Player,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    body?;
    super::product(&app, &product_id)?;
    let game = match app
        .store
        .reserve_seat(&product_id, &game_id, &player.user_id)?
    {
        Ok(game) => game,
        Err(SeatError::NotFound) => return Err(ApiError::GameNotFound(game_id)),
        Err(SeatError::Refused(JoinRefusal::AlreadyJoined)) => return Err(ApiError::AlreadyJoined),
        Err(SeatError::Refused(JoinRefusal::NotJoinable)) => {
            return Err(ApiError::GameNotJoinable(
                "the game is not open for joining or has no free seat".into(),
            ));
        }
    };
    let joined = app
        .game_servers
        .join_game(
            &game.game_server_url,
            &game_id,
            &player.user_id,
            &player.username,
        )
        .await;
    if let Err(e) = joined {
        let (game, user) = (game_id.clone(), player.user_id.clone());
        app.store
            .blocking(move |store| store.release_seat(&game, &user))
            .await?;
        tracing::info!(%game_id, user = %player.user_id, error = %e, "join refused by the game server; seat released");
        return Err(e.into());
    }
    app.store.flush().await?;
    tracing::info!(%game_id, user = %player.user_id, players = game.players.len(), "player joined");
    Ok(Json(game.full_json()))
}
