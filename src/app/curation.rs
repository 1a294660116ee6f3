//! Curation (API.md "Curation"): every interval, games whose state clock
//! ran past that state's expiry are reset (a full `creator_joined` game
//! loses the player who never connected) or deleted.
//!
//! The game server is told first; a 404 means it already did what was
//! asked. If it cannot be reached the failure is recorded on the game and
//! tried again next pass, up to [`MAX_TRIES`] times, after which the
//! matchmaker acts alone so a dead server cannot pin games. The change is
//! applied only if the game is still as curation saw it. Shutdown is seen
//! between games and interrupts a game-server call, so a stop never waits
//! for a whole pass.

use std::sync::Arc;

use super::{App, AppError};
use crate::domain::game::{Curation, CurationChange, Game, State};
use crate::infra::clock::now_us;
use crate::infra::gameserver::GameServerError;
use crate::infra::metrics;
use crate::infra::shutdown::Shutdown;

/// Failed game-server calls before curation acts without the game server.
pub const MAX_TRIES: u32 = 5;
/// Most games handled per state per pass.
const PASS_LIMIT: usize = 1000;

/// Runs curation until shutdown.
pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(app.curation_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        match app
            .storage
            .hold_lease("curation", &app.node, app.lease)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "curation cannot take its lease");
                continue;
            }
        }
        if let Err(e) = pass(&app, &mut shutdown).await {
            tracing::warn!(error = %e, "curation pass failed");
        }
    }
}

/// One curation pass over every state; stops early on shutdown.
pub async fn pass(app: &App, shutdown: &mut Shutdown) -> Result<(), AppError> {
    let now = now_us();
    for state in State::ALL {
        let expiry = app.expiry.secs(state).saturating_mul(1_000_000);
        let cutoff = now.saturating_sub(expiry);
        for game in app.storage.expired(state, cutoff, PASS_LIMIT).await? {
            if shutdown.is_fired() {
                return Ok(());
            }
            tokio::select! {
                done = curate(app, game) => done?,
                _ = shutdown.recv() => return Ok(()),
            }
        }
    }
    Ok(())
}

/// Whether a game-server answer means the work is done (404: already gone).
fn done(result: Result<(), GameServerError>) -> Result<(), GameServerError> {
    match result {
        Err(GameServerError::Status { status: 404, .. }) => Ok(()),
        other => other,
    }
}

async fn curate(app: &App, game: Game) -> Result<(), AppError> {
    let action = Curation::decide(&game);
    let url = &game.game_server_url;
    let called = done(match &action {
        Curation::Reset(player) => {
            app.game_servers
                .remove_player(url, &game.game_id, player)
                .await
        }
        Curation::Delete => app.game_servers.remove_game(url, &game.game_id).await,
    });
    let (state, since) = (game.state, game.state_since_us);
    if let Err(e) = called {
        let failures = game.curation_failures + 1;
        tracing::warn!(game_id = %game.game_id, error = %e, failures, "curation could not reach the game server");
        if failures < MAX_TRIES {
            let change = CurationChange::Failed(failures);
            app.storage
                .curate(&game.game_id, state, since, change, now_us())
                .await?;
            return Ok(());
        }
    }
    let change = match action {
        Curation::Reset(_) => CurationChange::Reset,
        Curation::Delete => CurationChange::Delete,
    };
    let applied = app
        .storage
        .curate(&game.game_id, state, since, change.clone(), now_us())
        .await?;
    if applied {
        match (change, action) {
            (CurationChange::Reset, Curation::Reset(player)) => {
                metrics::curated(&game.product_id, "reset");
                tracing::info!(game_id = %game.game_id, %player, "curation reset a full game that did not start");
            }
            _ => {
                metrics::curated(&game.product_id, "purged");
                metrics::game_moved(&game.product_id, Some(state.as_str()), None);
                tracing::info!(game_id = %game.game_id, state = state.as_str(), "curation removed an expired game");
            }
        }
    }
    Ok(())
}
