//! The lobby use cases (API.md "Lobby", "Quick match"): create a game,
//! join one, quick-join the one that suits, list the open ones.
//!
//! Create and join change a game server, so each runs in a task the app
//! tracks: the caller awaits its result, but a caller that goes away (a
//! client that disconnects) does not stop it. A join reserves the seat
//! durably first, then tells the game server; if the game server refuses or
//! does not answer, the seat is released durably (and, without an answer,
//! `remove_player` is sent in case it did add the player). So the game and
//! the game server always agree.

use std::sync::Arc;

use super::ports::{LobbyFeed, QuickRule, SeatOutcome, StorageError};
use super::{App, AppError};
use crate::domain::game::{Game, JoinRefusal, State};
use crate::infra::clock::now_us;
use crate::infra::gameserver::GameServerError;
use crate::infra::jwt::Player;
use crate::infra::metrics;

/// What quick match did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    Joined,
    Created,
}

impl Matched {
    /// The `matched` field of the answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Matched::Joined => "joined",
            Matched::Created => "created",
        }
    }
}

impl App {
    /// Creates a game on the product's game server, then stores it.
    pub async fn create_game(
        self: &Arc<Self>,
        product_id: &str,
        player: Player,
    ) -> Result<Game, AppError> {
        self.product(product_id)?;
        let app = self.clone();
        let product_id = product_id.to_string();
        self.run_to_completion(async move { app.create(&product_id, player).await })
            .await
    }

    async fn create(&self, product_id: &str, player: Player) -> Result<Game, AppError> {
        let product = self.product(product_id)?;
        let game_id = uuid::Uuid::new_v4().to_string();
        let token = self
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
            creator_name: player.username,
            players: vec![player.user_id],
            settings: product.settings_json().to_string(),
            num_players: product.num_players(),
            token,
            state: State::Created,
            state_since_us: now,
            last_updated_us: now,
            listing: None,
            target_game_server: product.game_socket_url.clone(),
            curation_failures: 0,
        };
        if let Err(e) = self.storage.insert_game(game.clone()).await {
            if let Err(call) = self
                .game_servers
                .remove_game(&game.game_server_url, &game_id)
                .await
            {
                tracing::warn!(%game_id, error = %call, "could not remove a game that was not stored");
            }
            return Err(e.into());
        }
        metrics::game_moved(&game.product_id, None, Some(game.state.as_str()));
        tracing::info!(%game_id, product = %game.product_id, creator = %game.creator_id, "game created");
        Ok(game)
    }

    /// Joins a game: the seat durably first, then the game server.
    pub async fn join_game(
        self: &Arc<Self>,
        product_id: &str,
        game_id: &str,
        player: Player,
    ) -> Result<Game, AppError> {
        self.product(product_id)?;
        let app = self.clone();
        let (product_id, game_id) = (product_id.to_string(), game_id.to_string());
        self.run_to_completion(async move { app.join(&product_id, &game_id, player).await })
            .await
    }

    async fn join(
        &self,
        product_id: &str,
        game_id: &str,
        player: Player,
    ) -> Result<Game, AppError> {
        let game = match self
            .storage
            .reserve_seat(product_id, game_id, &player.user_id, now_us())
            .await?
        {
            SeatOutcome::Reserved(game) => *game,
            SeatOutcome::NotFound => return Err(AppError::GameNotFound(game_id.to_string())),
            SeatOutcome::Refused(JoinRefusal::AlreadyJoined) => {
                return Err(AppError::AlreadyJoined);
            }
            SeatOutcome::Refused(JoinRefusal::NotJoinable) => {
                return Err(AppError::GameNotJoinable);
            }
        };
        self.seat_on_game_server(game, &player).await
    }

    /// Tells the game server about a reserved seat; if it refuses or does
    /// not answer, the seat is released (and `remove_player` sent when it
    /// did not answer).
    async fn seat_on_game_server(&self, game: Game, player: &Player) -> Result<Game, AppError> {
        let (url, game_id) = (&game.game_server_url, game.game_id.as_str());
        let Err(e) = self
            .game_servers
            .join_game(url, game_id, &player.user_id, &player.username)
            .await
        else {
            tracing::info!(%game_id, user = %player.user_id, players = game.players.len(), "player joined");
            return Ok(game);
        };
        self.release(game_id, &player.user_id).await?;
        let unanswered = matches!(
            e,
            GameServerError::Timeout { .. } | GameServerError::Unreachable { .. }
        );
        if unanswered
            && let Err(call) = self
                .game_servers
                .remove_player(url, game_id, &player.user_id)
                .await
        {
            tracing::warn!(%game_id, user = %player.user_id, error = %call, "remove_player after an unanswered join failed");
        }
        tracing::info!(%game_id, user = %player.user_id, error = %e, "join refused by the game server; seat released");
        Err(e.into())
    }

    /// Quick match: joins the open game that suits the player (the seat is
    /// chosen and reserved in one step), or creates one when none does.
    pub async fn quick_join(
        self: &Arc<Self>,
        product_id: &str,
        player: Player,
    ) -> Result<(Game, Matched), AppError> {
        let product = self.product(product_id)?;
        let rule = match (product.leaderboard.as_str(), self.scoring.get(product_id)) {
            ("elo", Some(scoring)) => QuickRule::Closest {
                initial: scoring.initial(),
                max_gap: self.max_rating_gap,
            },
            _ => QuickRule::Oldest,
        };
        let app = self.clone();
        let product_id = product_id.to_string();
        self.run_to_completion(async move {
            let seat = app
                .storage
                .quick_seat(&product_id, &player.user_id, rule, now_us())
                .await?;
            match seat {
                Some(game) => {
                    let game = app.seat_on_game_server(*game, &player).await?;
                    Ok((game, Matched::Joined))
                }
                None => Ok((app.create(&product_id, player).await?, Matched::Created)),
            }
        })
        .await
    }

    /// Releases a seat; a full queue is waited out, so only a storage
    /// failure (after which nothing is acknowledged) stops it.
    async fn release(&self, game_id: &str, user_id: &str) -> Result<(), StorageError> {
        self.storage
            .release_seat(game_id, user_id, now_us())
            .await
            .map(drop)
    }

    /// Subscribes to a product's live lobby feed (resuming after `after`
    /// when the backend still holds what followed it).
    pub fn lobby_feed(&self, product_id: &str, after: Option<u64>) -> Result<LobbyFeed, AppError> {
        self.product(product_id)?;
        Ok(self.storage.lobby_feed(product_id, after))
    }

    /// One page of a product's open games as a JSON array.
    pub fn open_games(
        &self,
        product_id: &str,
        count: Option<u64>,
        page: Option<u64>,
    ) -> Result<String, AppError> {
        self.product(product_id)?;
        let (default, max) = self.pages;
        let count = count.unwrap_or(default).min(max);
        Ok(self
            .storage
            .open_games(product_id, page.unwrap_or(0), count))
    }

    /// Runs `work` in a tracked task and waits for it; the task goes on if
    /// the caller stops waiting.
    async fn run_to_completion<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, AppError>> + Send + 'static,
    ) -> Result<T, AppError> {
        match self.tasks.spawn(work).await {
            Ok(result) => result,
            Err(e) => Err(AppError::Storage(StorageError::Failed(format!(
                "task failed: {e}"
            )))),
        }
    }
}
