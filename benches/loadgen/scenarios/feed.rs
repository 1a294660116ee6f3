//! Scenario 15, the live lobby feed under load: create/join pairs at full
//! speed on the HTTP connections, first on a server with no feed client,
//! then on a fresh one with 1,000 (`--feed-clients`) clients of
//! `open_games/stream` connected ([`crate::sse`]); the pair rate with and
//! without them, how long a `listed` event takes to reach the clients, and
//! how many were cut off.
//!
//! A pair (one iteration on a connection) is: join the oldest game this
//! load reported listed, once more than two rounds of them wait (so it is
//! listed by then; a `409 game_not_joinable` puts it back at the end of
//! the queue), then create a game and report its `creator_joined` by
//! `POST /ingest`, as its game server would: a game is listed only then.
//! So every pair lists one game and fills (unlists) another.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Env, urls};
use crate::load::{Load, drive, expect_ok, percentiles};
use crate::meter::{Probe, metric_sum};
use crate::report::Row;
use crate::server::Server;
use crate::sse::{Feed, Target, client, game_id_of, game_key};
use crate::workload::state_change;
use crate::{Context, KEY, PRODUCT, Res};

/// How long all clients may take to connect and get their snapshot.
const CONNECT_LIMIT: Duration = Duration::from_secs(60);
/// How long the clients keep reading after the load, for late events.
const GRACE: Duration = Duration::from_millis(500);
/// The server's counter of clients cut off for not keeping up.
const CUT_OFF: &str = "varcade_feed_clients_cut_off_total";

/// Microseconds since `epoch`, saturated to `u32`.
fn micros(epoch: Instant) -> u32 {
    epoch.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// What one pair load did.
struct Pairs {
    load: Load,
    joins: u64,
    /// Joins answered 409 (not listed yet), put back in the queue.
    early: u64,
    /// (game key, create answered, creator_joined acknowledged), in µs
    /// since the epoch.
    games: Vec<(u64, u32, u32)>,
}

/// Create/join pairs on every connection for the window.
async fn pairs(env: &Arc<Env>, server: &Server, epoch: Instant) -> Pairs {
    let conns = env.opts.conns;
    let max = env.opts.count(1_000_000, 20_000);
    let queue = Arc::new(Mutex::new(VecDeque::<String>::new()));
    let games = Arc::new(Mutex::new(Vec::new()));
    let joins = Arc::new(AtomicU64::new(0));
    let early = Arc::new(AtomicU64::new(0));
    // Each connection talks to one node (round-robin): its joins, creates
    // and reports.
    let bases = urls(server, conns, &format!("/game_lobby/{PRODUCT}"));
    let ingests = urls(server, conns, "/ingest");
    let (env2, queue2, games2, joins2, early2) = (
        env.clone(),
        queue.clone(),
        games.clone(),
        joins.clone(),
        early.clone(),
    );
    let load = drive(conns, env.opts.window, max, move |task, _| {
        let (env, queue, games) = (env2.clone(), queue2.clone(), games2.clone());
        let (joins, early) = (joins2.clone(), early2.clone());
        let (base, ingest) = (bases[task].clone(), ingests[task].clone());
        async move {
            let oldest = {
                let mut queue = queue.lock().unwrap();
                if queue.len() > 2 * conns {
                    queue.pop_front()
                } else {
                    None
                }
            };
            if let Some(id) = oldest {
                let response = env
                    .http
                    .post(format!("{base}/join_game/{id}"))
                    .header("authorization", &env.joiners[task])
                    .send()
                    .await
                    .ctx("join")?;
                let status = response.status();
                let body = response.bytes().await.ctx("join body")?;
                match status.as_u16() {
                    200 => {
                        joins.fetch_add(1, Ordering::Relaxed);
                    }
                    409 if String::from_utf8_lossy(&body).contains("game_not_joinable") => {
                        early.fetch_add(1, Ordering::Relaxed);
                        queue.lock().unwrap().push_back(id);
                    }
                    _ => {
                        return Err(format!("join {status}: {}", String::from_utf8_lossy(&body)));
                    }
                }
            }
            let request = env
                .http
                .post(format!("{base}/create_game"))
                .header("authorization", &env.creators[task])
                .send();
            let body = expect_ok(request.await).await?;
            let created = micros(epoch);
            let id = game_id_of(&body).ok_or("no game_id in the created game")?;
            let id = String::from_utf8_lossy(id).into_owned();
            let request = env
                .http
                .post(&ingest)
                .bearer_auth(KEY)
                .body(state_change(&id, "creator_joined"))
                .send();
            expect_ok(request.await).await?;
            let acked = micros(epoch);
            games
                .lock()
                .unwrap()
                .push((game_key(id.as_bytes()), created, acked));
            queue.lock().unwrap().push_back(id);
            Ok(())
        }
    })
    .await;
    let games = std::mem::take(&mut *games.lock().unwrap());
    Pairs {
        load,
        joins: joins.load(Ordering::Relaxed),
        early: early.load(Ordering::Relaxed),
        games,
    }
}

/// A row of a pair load: joins (each completes a pair) per second, and
/// the latency of a whole iteration (join, create, report).
fn pair_row(env: &Env, measured: &str, pairs: &mut Pairs) -> Row {
    let mut row = Row::http(15, measured, &mut pairs.load, "pair/s");
    row.count = pairs.joins;
    row.rate = Some(pairs.joins as f64 / row.secs.max(1e-9));
    row.prepend_note(format!(
        "{} conns; {} games created+listed ({:.0}/s); {} joins retried (not listed yet); p50/p99 of one iteration",
        env.opts.conns,
        pairs.games.len(),
        pairs.games.len() as f64 / row.secs.max(1e-9),
        pairs.early
    ));
    row
}

/// 15: the pair load without, then with, the feed clients.
pub async fn feed(env: &Arc<Env>) -> Res<Vec<Row>> {
    let n = env.opts.feed_clients;
    ensure_open_files((n + 4 * env.opts.conns + 512) as u64)?;
    let mut rows = Vec::new();

    // Without feed clients.
    let server = env.server()?;
    let cpu = Probe::start(&env.http, &server).await;
    let mut alone = pairs(env, &server, Instant::now()).await;
    let mut row = pair_row(env, "create+join pairs, no feed client", &mut alone);
    cpu.fill(&mut row, &env.http, &server).await;
    let alone_rate = row.rate.unwrap_or(0.0);
    rows.push(row);
    drop(server);

    // With `n` feed clients on a fresh server (the nodes round-robin).
    let server = env.server()?;
    let epoch = Instant::now();
    let targets: Vec<Arc<Target>> = server
        .addrs()
        .into_iter()
        .map(|addr| {
            Arc::new(Target {
                addr,
                path: format!("/game_lobby/{PRODUCT}/open_games/stream"),
                epoch,
                ready: Default::default(),
            })
        })
        .collect();
    let stop = CancellationToken::new();
    let connecting = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|i| tokio::spawn(client(targets[i % targets.len()].clone(), stop.clone())))
        .collect();
    let ready = || -> usize { targets.iter().map(|t| t.ready.load(Ordering::SeqCst)).sum() };
    while ready() < n && connecting.elapsed() < CONNECT_LIMIT {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready = ready();
    let connect_secs = connecting.elapsed().as_secs_f64();
    let cut_before = metric_sum(&env.http, &server.bases, CUT_OFF).await;
    let cpu = Probe::start(&env.http, &server).await;
    let mut with = pairs(env, &server, epoch).await;
    let probed = cpu.finish(&env.http, &server).await;
    tokio::time::sleep(GRACE).await;
    stop.cancel();
    let cut = metric_sum(&env.http, &server.bases, CUT_OFF).await - cut_before;
    let mut feeds = Vec::with_capacity(n);
    for task in clients {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(feed)) => feeds.push(feed),
            Ok(Err(e)) => return Err(format!("feed client task: {e}")),
            Err(_) => return Err("a feed client did not stop within 10 s".into()),
        }
    }
    drop(server);

    let mut row = pair_row(
        env,
        &format!("create+join pairs, {n} feed clients"),
        &mut with,
    );
    probed.fill(&mut row);
    let rate = row.rate.unwrap_or(0.0);
    let loss = 100.0 * (1.0 - rate / alone_rate.max(1e-9));
    row.target(
        "loss<=10% vs no client",
        Some(0.9 * alone_rate.max(1e-9)),
        None,
    );
    let disconnects: u64 = feeds.iter().map(|f| f.disconnects).sum();
    let cut_clients = feeds.iter().filter(|f| f.disconnects > 0).count();
    let refused: u64 = feeds.iter().map(|f| f.refused).sum();
    let mib = feeds.iter().map(|f| f.bytes).sum::<u64>() as f64 / (1024.0 * 1024.0);
    let first_error = feeds.iter().find_map(|f| f.first_error.clone());
    row.prepend_note(format!(
        "loss {loss:.1} %; {ready}/{n} clients connected in {connect_secs:.1} s; \
         {disconnects} disconnects ({cut_clients} clients; server cut off {cut:.0}), \
         {refused} reconnects refused{}; {mib:.0} MiB of events received",
        first_error.map_or(String::new(), |e| format!(", first: {e}"))
    ));
    rows.push(row);
    rows.extend(delivery_rows(&with, &feeds, n));
    Ok(rows)
}

/// The delays from a game's create answer (and from its `creator_joined`
/// acknowledgement) to each client's `listed` event for it.
fn delivery_rows(pairs: &Pairs, feeds: &[Feed], clients: usize) -> Vec<Row> {
    let games: HashMap<u64, (u32, u32)> = pairs
        .games
        .iter()
        .map(|&(key, created, acked)| (key, (created, acked)))
        .collect();
    let mut first = HashMap::<u64, u32>::with_capacity(games.len());
    for &(key, at) in feeds.iter().flat_map(|f| &f.deliveries) {
        let slot = first.entry(key).or_insert(at);
        *slot = (*slot).min(at);
    }
    let total: usize = feeds.iter().map(|f| f.deliveries.len()).sum();
    let (mut from_create, mut from_ack, mut spread) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
    );
    let mut before_ack = 0u64;
    for &(key, at) in feeds.iter().flat_map(|f| &f.deliveries) {
        let Some(&(created, acked)) = games.get(&key) else {
            continue;
        };
        from_create.push(at.saturating_sub(created));
        if at < acked {
            before_ack += 1;
        }
        from_ack.push(at.saturating_sub(acked));
        spread.push(at - first[&key]);
    }
    let max_ms = |v: &[u32]| v.iter().max().map_or(0.0, |&m| m as f64 / 1000.0);
    let expected = games.len() as f64 * clients as f64;
    let (spread_max, create_max, ack_max) =
        (max_ms(&spread), max_ms(&from_create), max_ms(&from_ack));
    let (_, spread_p99) = percentiles(&mut spread);

    let mut row = Row::new(15, "listed delivery: create answer -> event");
    row.count = from_create.len() as u64;
    row.unit = "ms";
    (row.p50, row.p99) = percentiles(&mut from_create);
    row.note = format!(
        "max {create_max:.1} ms; {} of {} deliveries expected ({:.1} %)",
        from_create.len(),
        expected as u64,
        100.0 * from_create.len() as f64 / expected.max(1.0)
    );
    row.target("p99<=50ms", None, Some(50.0));
    let mut rows = vec![row];

    let mut row = Row::new(15, "listed delivery: creator_joined ack -> event");
    row.count = from_ack.len() as u64;
    row.unit = "ms";
    (row.p50, row.p99) = percentiles(&mut from_ack);
    row.note = format!(
        "max {ack_max:.1} ms; {before_ack} arrived before the ack (counted as 0); \
         fan-out, first client -> each: p99 {:.1} ms, max {spread_max:.1} ms",
        spread_p99.unwrap_or(0.0)
    );
    rows.push(row);
    rows
}

/// Makes sure this process (and the server it starts next, which inherits
/// the limit) may open `need` files: raises the soft limit with `prlimit`
/// (util-linux) when it is lower; the error says what to run otherwise.
fn ensure_open_files(need: u64) -> Res<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").ctx("read /proc/self/limits")?;
    let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) else {
        return Ok(());
    };
    let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let limit = |i: usize| values.get(i).and_then(|v| v.parse::<u64>().ok());
    let (soft, hard) = (limit(0).unwrap_or(u64::MAX), limit(1).unwrap_or(u64::MAX));
    if soft >= need {
        return Ok(());
    }
    let nofile = format!("--nofile={need}:{}", hard.max(need));
    let pid = format!("--pid={}", std::process::id());
    let raised = std::process::Command::new("prlimit")
        .args([&pid, &nofile])
        .status()
        .is_ok_and(|s| s.success());
    if raised {
        eprintln!("open-file limit raised from {soft} to {need}");
        Ok(())
    } else {
        Err(format!(
            "the open-file limit is {soft}, {need} are needed: run `ulimit -n {need}` first"
        ))
    }
}
