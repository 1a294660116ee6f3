//! Scenario 14, quick match: `POST /game_lobby/{product}/quick_join` by a
//! distinct fresh player on every call, on every connection for the
//! window, starting from a lobby of 1,000 open games (1,000 distinct
//! creators, listed first).
//!
//! The lobby evolves as it would in production: a quick join that finds
//! a game joins it (a full two-player game leaves the lobby); one that
//! finds none creates a game, which is listed only when its game server
//! reports `creator_joined`, so a reporter task does that for every
//! created game (`POST /ingest`, whatever arrived since its last post, in
//! one body). Under `wins` scoring every join takes the oldest listing,
//! so the first 1,000 quick joins drain the initial lobby and after that
//! joins and creates alternate on a small lobby; the row says how many
//! of each there were and what the lobby held at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{Env, post_events, token, urls};
use crate::load::{drive, expect_ok};
use crate::meter::{Probe, wait_cursor};
use crate::report::Row;
use crate::server::Server;
use crate::workload::state_change;
use crate::{Context, KEY, PRODUCT, Res};

/// Open games before the load.
const LOBBY: u64 = 1000;
/// The page size `open_games` is read with (the config's maximum).
const PAGE: usize = 25;

/// 14: quick joins on every connection for the window.
pub async fn quick_join(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = env.server()?;
    let setup = Instant::now();
    let last = listed_lobby(env, &server).await?;
    let start_size = lobby_size(env, &server).await?;
    if start_size != LOBBY as usize {
        return Err(format!("the lobby holds {start_size} games, not {LOBBY}"));
    }
    let setup = setup.elapsed();

    let (created_tx, created_rx) = mpsc::unbounded_channel::<String>();
    let reporter = tokio::spawn(report_created(
        env.http.clone(),
        format!("{}/ingest", server.base),
        created_rx,
    ));
    let joined = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let urls = urls(
        &server,
        env.opts.conns,
        &format!("/game_lobby/{PRODUCT}/quick_join"),
    );
    let (http, joined2, created2) = (env.http.clone(), joined.clone(), created.clone());
    let max = env.opts.count(1_000_000, 20_000);
    let cpu = Probe::start(&env.http, &server).await;
    let mut load = drive(env.opts.conns, env.opts.window, max, move |task, i| {
        let request = http
            .post(&urls[task])
            .header("authorization", token(&format!("q{i}")))
            .send();
        let (joined, created, created_tx) = (joined2.clone(), created2.clone(), created_tx.clone());
        async move {
            let body = expect_ok(request.await).await?;
            let game: Value = serde_json::from_slice(&body).ctx("game JSON")?;
            match game["matched"].as_str() {
                Some("joined") => {
                    joined.fetch_add(1, Ordering::Relaxed);
                }
                Some("created") => {
                    created.fetch_add(1, Ordering::Relaxed);
                    let id = game["game_id"].as_str().ok_or("no game_id")?;
                    // The reporter stops only after the load.
                    let _ = created_tx.send(id.to_string());
                }
                other => return Err(format!("matched: {other:?}")),
            }
            Ok(())
        }
    })
    .await;
    let probed = cpu.finish(&env.http, &server).await;

    // The reporter ends when the load's senders are gone; then the lobby
    // is counted once the matchmaker has applied every report.
    let (reported, last_report) = reporter.await.ctx("reporter task")??;
    let last = last.max(last_report);
    let (caught_up, cursor) = wait_cursor(
        &env.http,
        &server.bases,
        "matchmaker",
        last,
        Duration::from_secs(60),
    )
    .await?;
    if caught_up.is_none() {
        return Err(format!("matchmaker at {cursor} of {last} after 60 s"));
    }
    server.settle().await;
    let end_size = lobby_size(env, &server).await?;

    let mut row = Row::http(
        14,
        &format!("quick_join, lobby {LOBBY}, {} conns", env.opts.conns),
        &mut load,
        "req/s",
    );
    probed.fill(&mut row);
    let (joined, created) = (
        joined.load(Ordering::Relaxed),
        created.load(Ordering::Relaxed),
    );
    row.prepend_note(format!(
        "joined {joined}, created {created} ({reported} reported creator_joined); \
         lobby {start_size} at start, {end_size} at the end; setup {:.1} s",
        setup.as_secs_f64()
    ));
    row.target(">=5000/s", Some(5000.0), None);
    Ok(vec![row])
}

/// Creates [`LOBBY`] games by as many distinct creators and has them
/// listed; returns the last event id of the reports.
async fn listed_lobby(env: &Arc<Env>, server: &Server) -> Res<u64> {
    let ids = Arc::new(std::sync::Mutex::new(Vec::new()));
    let urls = urls(
        server,
        env.opts.conns,
        &format!("/game_lobby/{PRODUCT}/create_game"),
    );
    let (http, ids2) = (env.http.clone(), ids.clone());
    let load = drive(
        env.opts.conns,
        Duration::from_secs(120),
        LOBBY,
        move |task, i| {
            let request = http
                .post(&urls[task])
                .header("authorization", token(&format!("qc{i}")))
                .send();
            let ids = ids2.clone();
            async move {
                let body = expect_ok(request.await).await?;
                let game: Value = serde_json::from_slice(&body).ctx("game JSON")?;
                let id = game["game_id"].as_str().ok_or("no game_id")?;
                ids.lock().unwrap().push(id.to_string());
                Ok(())
            }
        },
    )
    .await;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    if ids.len() as u64 != LOBBY {
        return Err(format!(
            "created {} of {LOBBY} games; {}",
            ids.len(),
            load.note()
        ));
    }
    let events: Vec<String> = ids
        .iter()
        .map(|id| state_change(id, "creator_joined"))
        .collect();
    let last = post_events(env, server, &events, 500).await?;
    let (done, cursor) = wait_cursor(
        &env.http,
        &server.bases,
        "matchmaker",
        last,
        Duration::from_secs(60),
    )
    .await?;
    if done.is_none() {
        return Err(format!("matchmaker at {cursor} of {last} after 60 s"));
    }
    server.settle().await;
    Ok(last)
}

/// Reports `creator_joined` for every game id received, as the games'
/// server would, in one `POST /ingest` for whatever waits; returns how
/// many it reported and the last event id.
async fn report_created(
    http: reqwest::Client,
    url: String,
    mut ids: mpsc::UnboundedReceiver<String>,
) -> Res<(u64, u64)> {
    let (mut reported, mut last) = (0, 0);
    let mut batch = Vec::with_capacity(1000);
    while ids.recv_many(&mut batch, 1000).await > 0 {
        let events: Vec<String> = batch
            .drain(..)
            .map(|id| state_change(&id, "creator_joined"))
            .collect();
        let body = format!("[{}]", events.join(","));
        let answer = expect_ok(http.post(&url).bearer_auth(KEY).body(body).send().await).await?;
        let answer: Value = serde_json::from_slice(&answer).ctx("ingest answer")?;
        last = answer["last_id"].as_u64().ok_or("no last_id")?;
        reported += events.len() as u64;
    }
    Ok((reported, last))
}

/// The games `open_games` lists, read page by page.
async fn lobby_size(env: &Env, server: &Server) -> Res<usize> {
    let mut total = 0;
    for page in 0..10_000 {
        let url = format!(
            "{}/game_lobby/{PRODUCT}/open_games?count={PAGE}&page={page}",
            server.base
        );
        let body = expect_ok(env.http.get(url).send().await).await?;
        let games: Vec<Value> = serde_json::from_slice(&body).ctx("open_games")?;
        total += games.len();
        if games.len() < PAGE {
            return Ok(total);
        }
    }
    Err("the lobby has over 250,000 games".into())
}
