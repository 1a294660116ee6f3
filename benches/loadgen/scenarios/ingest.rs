//! Scenarios 5-7, event ingest over WebSocket: 1-event frames pipelined on
//! one socket, 100-event frames on four, and the ack latency at a steady
//! 10,000 events/s.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Env;
use crate::Res;
use crate::load::{WsLoad, ws_parallel};
use crate::meter::{Probe, Probed};
use crate::report::Row;
use crate::workload::{frame_pool, gameplay};

/// Starts a server and sends each frame pool on a socket of its own (the
/// sockets spread over the nodes round-robin; a lone socket goes to the
/// first node), with `window` frames in flight on each, for the scenario
/// window or `max` frames a socket, paced at `pace` frames/s if given;
/// returns the load and the server's CPU and flushes meanwhile.
async fn ingest(
    env: &Env,
    pools: Vec<Arc<Vec<Utf8Bytes>>>,
    window: usize,
    max: u64,
    pace: Option<f64>,
) -> Res<(WsLoad, Probed)> {
    let server = env.server()?;
    let cpu = Probe::start(&env.http, &server).await;
    let load = ws_parallel(&server.addrs(), pools, window, env.opts.window, max, pace).await?;
    let probed = cpu.finish(&env.http, &server).await;
    Ok((load, probed))
}

/// Says that a one-socket load went to the first node only.
fn first_node_only(env: &Env, row: &mut Row) {
    if env.nodes() > 1 {
        row.add_note(&format!("one socket: first of {} nodes only", env.nodes()));
    }
}

/// 5: 1-event frames, `--window` of them in flight on one socket.
pub async fn single(env: &Arc<Env>) -> Res<Vec<Row>> {
    let pool = frame_pool(1, 4096, 1, gameplay);
    let max = env.opts.count(5_000_000, 20_000);
    let (mut load, probed) = ingest(env, vec![pool], env.opts.ws_window, max, None).await?;
    let measured = format!("1-event frames, 1 ws, window {}", env.opts.ws_window);
    let mut row = Row::ws(5, measured, &mut load, 1, "frame/s");
    probed.fill(&mut row);
    first_node_only(env, &mut row);
    row.add_note(&load.note());
    row.target(">=30000 frames/s", Some(30_000.0), None);
    Ok(vec![row])
}

/// 6: 100-event frames on four sockets, 8 in flight on each.
pub async fn batch(env: &Arc<Env>) -> Res<Vec<Row>> {
    let pools = (0..4)
        .map(|c| frame_pool(10 + c, 64, 100, gameplay))
        .collect();
    let max = env.opts.count(1_000_000, 500);
    let (mut load, probed) = ingest(env, pools, 8, max, None).await?;
    let measured = "100-event frames, 4 ws, window 8 each";
    let mut row = Row::ws(6, measured, &mut load, 100, "ev/s");
    probed.fill(&mut row);
    row.add_note(&format!(
        "{} frames, latency is per 100-event frame",
        load.frames
    ));
    row.add_note(&load.note());
    row.target(">=300000 ev/s", Some(300_000.0), None);
    Ok(vec![row])
}

/// 7: 1-event frames paced at 10,000/s on one socket, no window limit.
pub async fn ack_steady(env: &Arc<Env>) -> Res<Vec<Row>> {
    let pool = frame_pool(2, 4096, 1, gameplay);
    let max = env.opts.count(1_000_000, 10_000);
    let (mut load, probed) = ingest(env, vec![pool], 100_000, max, Some(10_000.0)).await?;
    let measured = "ack latency, 1-event frames paced 10k/s";
    let mut row = Row::ws(7, measured, &mut load, 1, "ev/s");
    probed.fill(&mut row);
    first_node_only(env, &mut row);
    row.add_note(&load.note());
    row.target("p99<=5ms at 10k ev/s", Some(9_000.0), Some(5.0));
    Ok(vec![row])
}
