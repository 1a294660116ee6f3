//! Scenarios 11-13, event ingest over the Redis protocol (API.md
//! "Redis-protocol ingest"), as a game server that `XADD`s to
//! `game_event_stream` does: `XADD` pipelined on one connection, on 16
//! connections, and one at a time (the latency floor of group commit).
//! The events are the `gameplay` events of the WebSocket scenarios (5-7),
//! their fields as field/value pairs in the same order; each connection
//! authenticates with the product's ingest key first. Any reply other
//! than `<id>-0` fails the scenario.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::Env;
use crate::load::{WsLoad, resp_command, resp_parallel};
use crate::meter::{Probe, Probed};
use crate::report::Row;
use crate::server::Server;
use crate::workload::{Rng, gameplay};
use crate::{Context, Res};

/// The stream varcade accepts by default (`resp.stream`).
const STREAM: &str = "game_event_stream";
/// Connections of scenario 12.
const CONNS: usize = 16;

/// `XADD game_event_stream * <field> <value> ...` of one event's JSON
/// text: its fields in the order they are written, values as strings.
fn xadd(event: &str) -> Res<Bytes> {
    let Value::Object(object) = serde_json::from_str(event).ctx("event JSON")? else {
        return Err(format!("not an object: {event}"));
    };
    let mut pairs: Vec<(usize, String, String)> = object
        .into_iter()
        .map(|(field, value)| {
            let at = event.find(&format!("\"{field}\":")).unwrap_or(usize::MAX);
            let value = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (at, field, value)
        })
        .collect();
    pairs.sort();
    let mut args: Vec<&[u8]> = vec![b"XADD", STREAM.as_bytes(), b"*"];
    for (_, field, value) in &pairs {
        args.push(field.as_bytes());
        args.push(value.as_bytes());
    }
    Ok(resp_command(&args))
}

/// 4,096 `XADD`s of `gameplay` events from the generator seeded `seed`.
fn pool(seed: u64) -> Res<Arc<Vec<Bytes>>> {
    let mut rng = Rng::new(seed);
    let commands = (0..4096)
        .map(|_| xadd(&gameplay(&mut rng)))
        .collect::<Res<Vec<_>>>()?;
    Ok(Arc::new(commands))
}

/// Starts a server with the RESP listener on and sends each command pool
/// on a connection of its own (the nodes round-robin; a lone connection
/// goes to the first node), `window` commands in flight on each, for
/// the scenario window or `max` commands a connection; returns the load
/// and the server's CPU and flushes meanwhile. Any error fails it.
async fn ingest(
    env: &Env,
    pools: Vec<Arc<Vec<Bytes>>>,
    window: usize,
    max: u64,
) -> Res<(WsLoad, Probed)> {
    let server = Server::start_resp(&env.fake.url, &env.opts)?;
    let addrs = server.resps();
    let cpu = Probe::start(&env.http, &server).await;
    let load = resp_parallel(&addrs, pools, window, env.opts.window, max).await?;
    let probed = cpu.finish(&env.http, &server).await;
    if load.errors > 0 || load.first_error.is_some() {
        return Err(format!(
            "{} acknowledged in {:.1} s; {}",
            load.frames,
            load.elapsed.as_secs_f64(),
            load.note()
        ));
    }
    Ok((load, probed))
}

/// The row of an `XADD` load.
fn row(id: usize, measured: String, load: &mut WsLoad, probed: Probed) -> Row {
    let mut row = Row::ws(id, measured, load, 1, "ev/s");
    probed.fill(&mut row);
    row.add_note(&load.note());
    row
}

/// 11: `XADD` pipelined on one connection, `--window` in flight.
pub async fn pipelined(env: &Arc<Env>) -> Res<Vec<Row>> {
    let max = env.opts.count(5_000_000, 20_000);
    let window = env.opts.ws_window;
    let (mut load, probed) = ingest(env, vec![pool(1)?], window, max).await?;
    let measured = format!("XADD pipelined, 1 conn, window {window}");
    let mut row = row(11, measured, &mut load, probed);
    row.target(">=50000 ev/s, p99<=5ms", Some(50_000.0), Some(5.0));
    Ok(vec![row])
}

/// 12: `XADD` pipelined on 16 connections, `--window` in flight on each.
pub async fn conns16(env: &Arc<Env>) -> Res<Vec<Row>> {
    let max = env.opts.count(1_000_000, 2_000);
    let window = env.opts.ws_window;
    let pools = (0..CONNS as u64)
        .map(|c| pool(20 + c))
        .collect::<Res<Vec<_>>>()?;
    let (mut load, probed) = ingest(env, pools, window, max).await?;
    let measured = format!("XADD, {CONNS} conns, window {window} each");
    Ok(vec![row(12, measured, &mut load, probed)])
}

/// 13: `XADD` one at a time on one connection (each command written once
/// the previous one is answered).
pub async fn sync(env: &Arc<Env>) -> Res<Vec<Row>> {
    let max = env.opts.count(1_000_000, 2_000);
    let (mut load, probed) = ingest(env, vec![pool(3)?], 1, max).await?;
    let measured = "XADD one at a time, 1 conn".to_string();
    Ok(vec![row(13, measured, &mut load, probed)])
}
