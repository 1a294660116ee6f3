//! The client for the four calls the matchmaker makes to game servers:
//! `create_game`, `join_game`, `remove_player` and `remove_game`.
//!
//! One pooled `reqwest` client (connections are reused) with the configured
//! timeout per call; every call is counted and timed by endpoint and outcome.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

/// A game server call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GameServerError {
    #[error("{endpoint} timed out")]
    Timeout { endpoint: &'static str },
    #[error("{endpoint} failed: {message}")]
    Unreachable {
        endpoint: &'static str,
        message: String,
    },
    #[error("{endpoint} answered {status}")]
    Status { endpoint: &'static str, status: u16 },
    #[error("{endpoint} answered without a gameToken")]
    NoToken { endpoint: &'static str },
}

/// Calls game servers.
#[derive(Clone)]
pub struct GameServerClient {
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct CreateAnswer {
    #[serde(rename = "gameToken")]
    game_token: serde_json::Value,
}

impl GameServerClient {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        GameServerClient { http }
    }

    async fn post(
        &self,
        base: &str,
        endpoint: &'static str,
        body: serde_json::Value,
    ) -> Result<reqwest::Response, GameServerError> {
        let url = format!("{}/{endpoint}", base.trim_end_matches('/'));
        let started = Instant::now();
        let result = self.http.post(&url).json(&body).send().await;
        let outcome = match &result {
            Ok(r) if r.status().is_success() => "ok",
            Ok(_) => "error_status",
            Err(e) if e.is_timeout() => "timeout",
            Err(_) => "unreachable",
        };
        super::metrics::game_server_call(endpoint, outcome, started.elapsed());
        match result {
            Ok(r) if r.status().is_success() => Ok(r),
            Ok(r) => Err(GameServerError::Status {
                endpoint,
                status: r.status().as_u16(),
            }),
            Err(e) if e.is_timeout() => Err(GameServerError::Timeout { endpoint }),
            Err(e) => Err(GameServerError::Unreachable {
                endpoint,
                message: e.to_string(),
            }),
        }
    }

    /// Creates the game; returns the game token.
    pub async fn create_game(
        &self,
        base: &str,
        game_id: &str,
        user_id: &str,
        username: &str,
    ) -> Result<String, GameServerError> {
        let endpoint = "create_game";
        let body = json!({"gameId": game_id, "userId": user_id, "username": username});
        let response = self.post(base, endpoint, body).await?;
        let answer: CreateAnswer = response
            .json()
            .await
            .map_err(|_| GameServerError::NoToken { endpoint })?;
        match answer.game_token {
            serde_json::Value::String(s) if !s.is_empty() => Ok(s),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            _ => Err(GameServerError::NoToken { endpoint }),
        }
    }

    /// Adds a player to the game.
    pub async fn join_game(
        &self,
        base: &str,
        game_id: &str,
        user_id: &str,
        username: &str,
    ) -> Result<(), GameServerError> {
        let body = json!({"gameId": game_id, "userId": user_id, "username": username});
        self.post(base, "join_game", body).await.map(drop)
    }

    /// Removes a player who reserved a seat but never connected.
    pub async fn remove_player(
        &self,
        base: &str,
        game_id: &str,
        user_id: &str,
    ) -> Result<(), GameServerError> {
        let body = json!({"gameId": game_id, "userId": user_id});
        self.post(base, "remove_player", body).await.map(drop)
    }

    /// Removes a game.
    pub async fn remove_game(&self, base: &str, game_id: &str) -> Result<(), GameServerError> {
        self.post(base, "remove_game", json!({"gameId": game_id}))
            .await
            .map(drop)
    }
}
