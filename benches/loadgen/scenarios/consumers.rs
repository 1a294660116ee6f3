//! Scenarios 8 and 9, the log's consumers: how fast the stats consumer
//! applies `game_over` events and the matchmaker consumer `state_change`
//! events, from the first event ingested until its cursor reaches the last.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Env, create_all};
use crate::load::{ws_parallel, ws_pipeline};
use crate::meter::{Probe, cursor, wait_cursor};
use crate::report::Row;
use crate::server::Server;
use crate::workload::{frame_pool, game_over, state_change};
use crate::{Context, Res};

/// How a consumer caught up once its events were ingested.
struct CatchUp {
    /// Events applied since `start`.
    applied: u64,
    /// Seconds from the first event sent until caught up (or given up).
    secs: f64,
    note: String,
}

/// Waits until `consumer`'s cursor reaches `target` (30 s at most with
/// `--quick`, else 180 s). `start` is its cursor before the scenario,
/// `started` when ingest began and `ingested` how long ingest took.
async fn catch_up(
    env: &Env,
    server: &Server,
    consumer: &str,
    start: u64,
    target: u64,
    started: Instant,
    ingested: Duration,
) -> Res<CatchUp> {
    let at_ingested = cursor(&env.http, &server.bases, consumer).await?;
    let tail_start = Instant::now();
    let limit = Duration::from_secs(if env.opts.quick { 30 } else { 180 });
    let (done, cursor) = wait_cursor(&env.http, &server.bases, consumer, target, limit).await?;
    let end = done.unwrap_or_else(Instant::now);
    let tail = (end - tail_start).as_secs_f64();
    let note = format!(
        "ingest took {:.2} s (consumer at {} then); after ingest {:.0} ev/s{}",
        ingested.as_secs_f64(),
        at_ingested.saturating_sub(start),
        cursor.saturating_sub(at_ingested) as f64 / tail.max(1e-9),
        if done.is_none() {
            "; DID NOT CATCH UP"
        } else {
            ""
        }
    );
    Ok(CatchUp {
        applied: cursor.saturating_sub(start),
        secs: (end - started).as_secs_f64(),
        note,
    })
}

/// Fills a consumer's row from what [`catch_up`] saw.
fn consumer_row(id: usize, measured: String, caught: CatchUp) -> Row {
    let mut row = Row::new(id, measured);
    row.count = caught.applied;
    row.unit = "ev/s";
    row.secs = caught.secs;
    row.rate = Some(caught.applied as f64 / row.secs);
    row.note = caught.note;
    row
}

/// 8: game_over events among 100,000 players in 100-event frames on four
/// sockets.
pub async fn stats(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = env.server()?;
    let n = env.opts.count(300_000, 20_000);
    let per_conn = n / 100 / 4;
    let pools = (0..4)
        .map(|c| frame_pool(20 + c, per_conn as usize, 100, |r| game_over(r, 100_000)))
        .collect();
    let cpu = Probe::start(&env.http, &server).await;
    let started = Instant::now();
    let load = ws_parallel(
        &server.addrs(),
        pools,
        8,
        Duration::from_secs(120),
        per_conn,
        None,
    )
    .await?;
    let ingested = started.elapsed();
    let total = load.frames * 100;
    if load.first_error.is_some() || total != per_conn * 4 * 100 {
        return Err(format!("ingested {total} events: {}", load.note()));
    }
    let caught = catch_up(env, &server, "stats", 0, total, started, ingested).await?;
    let mut row = consumer_row(8, "stats consumer: game_over, 100k players".into(), caught);
    cpu.fill(&mut row, &env.http, &server).await;
    row.target(">=25000 game_over/s", Some(25_000.0), None);
    Ok(vec![row])
}

/// 9: creates games, then walks each through four states with
/// `state_change` events, 100 a frame, on four sockets.
pub async fn matchmaker(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = env.server()?;
    let games = env.opts.count(25_000, 1_000);
    let (_, ids) = create_all(env, &server, games).await?;
    // Connection c walks its games through the states, 100 events a frame,
    // one state after the other, so each game's events stay in order.
    let states = [
        "creator_joined",
        "all_players_joined",
        "in_progress",
        "ended",
    ];
    let pools: Vec<Arc<Vec<Utf8Bytes>>> = (0..4)
        .map(|c| {
            let mine: Vec<&String> = ids.iter().skip(c).step_by(4).collect();
            let mut frames = Vec::new();
            for state in states {
                for chunk in mine.chunks(100) {
                    let events: Vec<String> =
                        chunk.iter().map(|id| state_change(id, state)).collect();
                    frames.push(Utf8Bytes::from(format!("[{}]", events.join(","))));
                }
            }
            Arc::new(frames)
        })
        .collect();
    let frames: u64 = pools.iter().map(|p| p.len() as u64).sum();
    let start_cursor = cursor(&env.http, &server.bases, "matchmaker").await?;
    let cpu = Probe::start(&env.http, &server).await;
    let started = Instant::now();
    // Each connection sends exactly its own frames once (the connections
    // spread over the nodes round-robin).
    let addrs = server.addrs();
    let tasks: Vec<_> = pools
        .into_iter()
        .enumerate()
        .map(|(c, pool)| {
            let len = pool.len() as u64;
            let deadline = started + Duration::from_secs(120);
            tokio::spawn(ws_pipeline(
                addrs[c % addrs.len()].clone(),
                pool,
                8,
                deadline,
                len,
                None,
            ))
        })
        .collect();
    let mut acked = 0;
    for task in tasks {
        let load = task.await.ctx("ws task")??;
        if let Some(e) = load.first_error {
            return Err(e);
        }
        acked += load.frames;
    }
    if acked != frames {
        return Err(format!("{acked} of {frames} frames acknowledged"));
    }
    let ingested = started.elapsed();
    let last = start_cursor + games * 4;
    let caught = catch_up(
        env,
        &server,
        "matchmaker",
        start_cursor,
        last,
        started,
        ingested,
    )
    .await?;
    let measured = format!("matchmaker: state_change, {games} games");
    let mut row = consumer_row(9, measured, caught);
    cpu.fill(&mut row, &env.http, &server).await;
    row.target(">=20000 state_change/s", Some(20_000.0), None);

    // Every game ended.
    server.settle().await;
    if env.first_page(&server).await?.as_ref() != b"[]" {
        row.note.push_str("; lobby not empty afterwards!");
    }
    Ok(vec![row])
}
