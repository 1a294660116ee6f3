//! `POST /game_lobby/{product_id}/create_game`: the game server creates the
//! game, then it is stored in `created` with the creator as only player.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde_json::Value;

use crate::auth::Player;
use crate::error::ApiError;
use crate::game::{Game, State as GameState, now_us};
use crate::server::AppState;

pub async fn handle(
    State(app): State<AppState>,
    Path(product_id): Path<String>,
    player: Player,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    body?;
    let product = super::product(&app, &product_id)?;
    let game_id = uuid::Uuid::new_v4().to_string();
    let token = app
        .game_servers
        .create_game(
            &product.game_server_url,
            &game_id,
            &player.user_id,
            &player.username,
        )
        .await?;
    let now = now_us();
    let game = Game {
        game_id: game_id.clone(),
        product_id: product.product_id.clone(),
        game_server_url: product.game_server_url.clone(),
        creator_id: player.user_id.clone(),
        creator_name: player.username.clone(),
        players: vec![player.user_id.clone()],
        settings: product.settings_json().to_string(),
        num_players: product.num_players(),
        token,
        state: GameState::Created,
        state_since_us: now,
        last_updated_us: now,
        listing: None,
        target_game_server: product.game_socket_url.clone(),
        curation_failures: 0,
    };
    let record = game.clone();
    let inserted = app
        .store
        .blocking(move |store| store.insert_game(&record))
        .await;
    let stored = match inserted {
        Ok(()) => app.store.flush().await,
        Err(e) => Err(e),
    };
    if let Err(e) = stored {
        let (client, url) = (app.game_servers.clone(), game.game_server_url.clone());
        tokio::spawn(async move {
            if let Err(e) = client.remove_game(&url, &game_id).await {
                tracing::warn!(%game_id, error = %e, "could not remove a game that was not stored");
            }
        });
        return Err(e.into());
    }
    crate::metrics::game_moved(&game.product_id, None, Some(game.state.as_str()));
    tracing::info!(game_id = %game.game_id, product = %game.product_id, creator = %game.creator_id, "game created");
    Ok(Json(game.full_json()))
}
