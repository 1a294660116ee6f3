//! Curation (API.md "Curation"): every interval, games whose state clock
//! ran past that state's expiry are reset (a full `creator_joined` game
//! loses the player who never connected) or deleted.
//!
//! Candidates come from the by-state index as range scans, oldest first.
//! The game server is told first; if it cannot be reached the game is left
//! as it is and tried again next pass, up to [`MAX_TRIES`] times, after
//! which the matchmaker acts alone so a dead server cannot pin games.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ExpiryConfig;
use crate::game::{Game, State, now_us};
use crate::gameserver::GameServerClient;
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

/// Failed game-server calls before curation acts without the game server.
pub const MAX_TRIES: u32 = 5;
/// Most games handled per state per pass.
const PASS_LIMIT: usize = 1000;

/// Seconds a game may stay in `state`.
pub fn expiry_secs(expiry: &ExpiryConfig, state: State) -> u64 {
    match state {
        State::Created => expiry.created,
        State::CreatorJoined => expiry.creator_joined,
        State::AllPlayersJoined => expiry.all_players_joined,
        State::InProgress => expiry.in_progress,
        State::Ended => expiry.ended,
    }
}

/// What curation does with an expired game.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Remove this player (the last to reserve a seat) and list it again.
    Reset(String),
    Delete,
}

/// Decides what to do with an expired game.
pub fn decide(game: &Game) -> Action {
    match game.players.last() {
        Some(last)
            if game.state == State::CreatorJoined && game.is_full() && game.players.len() > 1 =>
        {
            Action::Reset(last.clone())
        }
        _ => Action::Delete,
    }
}

/// Runs curation until shutdown.
pub async fn run(
    store: Arc<Store>,
    client: GameServerClient,
    expiry: ExpiryConfig,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(expiry.curation_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        if let Err(e) = pass(&store, &client, &expiry).await {
            tracing::warn!(error = %e, "curation pass failed");
        }
    }
}

/// One curation pass over every state.
pub async fn pass(
    store: &Store,
    client: &GameServerClient,
    expiry: &ExpiryConfig,
) -> Result<(), StoreError> {
    let now = now_us();
    for state in State::ALL {
        let cutoff = now.saturating_sub(expiry_secs(expiry, state).saturating_mul(1_000_000));
        for (game_id, since) in store.expired(state, cutoff, PASS_LIMIT)? {
            if let Some(game) = store.game(&game_id)? {
                curate(store, client, game, since).await?;
            }
        }
    }
    Ok(())
}

async fn curate(
    store: &Store,
    client: &GameServerClient,
    game: Game,
    since: u64,
) -> Result<(), StoreError> {
    let action = decide(&game);
    let called = match &action {
        Action::Reset(player) => {
            client
                .remove_player(&game.game_server_url, &game.game_id, player)
                .await
        }
        Action::Delete => {
            client
                .remove_game(&game.game_server_url, &game.game_id)
                .await
        }
    };
    if let Err(e) = called {
        let failures = game.curation_failures + 1;
        tracing::warn!(game_id = %game.game_id, error = %e, failures, "curation could not reach the game server");
        if failures < MAX_TRIES {
            store.update_if_unchanged(&game.game_id, game.state, since, |g| {
                Some(Game {
                    curation_failures: failures,
                    ..g.clone()
                })
            })?;
            return Ok(());
        }
    }
    let now = now_us();
    let done = store.update_if_unchanged(&game.game_id, game.state, since, |g| match action {
        Action::Reset(_) => {
            let mut g = g.clone();
            g.reset_last_seat(now);
            g.curation_failures = 0;
            Some(g)
        }
        Action::Delete => None,
    })?;
    if done {
        match action {
            Action::Reset(player) => {
                crate::metrics::curated(&game.product_id, "reset");
                tracing::info!(game_id = %game.game_id, %player, "curation reset a full game that did not start");
            }
            Action::Delete => {
                crate::metrics::curated(&game.product_id, "purged");
                crate::metrics::game_moved(&game.product_id, Some(game.state.as_str()), None);
                tracing::info!(game_id = %game.game_id, state = game.state.as_str(), "curation removed an expired game");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_creator_joined_games_are_reset_others_deleted() {
        let mut game = Game {
            game_id: "g".into(),
            product_id: "p".into(),
            game_server_url: String::new(),
            creator_id: "1".into(),
            creator_name: "a".into(),
            players: vec!["1".into()],
            settings: "{}".into(),
            num_players: 2,
            token: String::new(),
            state: State::Created,
            state_since_us: 0,
            last_updated_us: 0,
            listing: None,
            target_game_server: String::new(),
            curation_failures: 0,
        };
        assert_eq!(decide(&game), Action::Delete);
        game.move_to(State::CreatorJoined, 1, 1);
        assert_eq!(decide(&game), Action::Delete, "listed but nobody joined");
        game.join("2", 2).unwrap();
        assert_eq!(decide(&game), Action::Reset("2".into()));
        game.move_to(State::AllPlayersJoined, 1, 3);
        assert_eq!(decide(&game), Action::Delete);
    }
}
