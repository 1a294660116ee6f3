//! Scenarios 4, 10 and 16, one run on one stored data set (1,000,000
//! players and 1,000,000 events by default, written by
//! [`crate::populate`]): `top_ten` and a random player's rank under load
//! (4), how long the server takes to start on that data and how much
//! memory it holds (10), and a random player's rank with the 50 players
//! either side (`?around=50`, and `?around=0` beside it) under load (16).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{Env, get_load, urls};
use crate::common::TempDir;
use crate::load::expect_ok;
use crate::meter::{Probe, memory_mib, metric};
use crate::pg::Database;
use crate::populate::{populate, populate_pg};
use crate::report::Row;
use crate::server::{Server, Store};
use crate::workload::Rng;
use crate::{Context, PRODUCT, Res, StorageKind};

/// Resident memory at most 300 MB.
const RSS_TARGET: &str = "<=300MB";
/// Listening within 3 s.
const START_TARGET: &str = "<=3s";

/// A row comparing resident memory (MiB) with [`RSS_TARGET`].
fn rss_row(measured: &str, mib: f64, note: String) -> Row {
    let mut row = Row::limit(10, measured, mib * 1.048_576, RSS_TARGET, 300.0);
    row.rate = Some(mib);
    row.unit = "MiB";
    row.note = note;
    row
}

/// A row comparing a start-up time with [`START_TARGET`].
fn startup_row(measured: String, startup: Duration) -> Row {
    let mut row = Row::limit(10, measured, startup.as_secs_f64(), START_TARGET, 3.0);
    row.secs = startup.as_secs_f64();
    row
}

/// The stored data set: a sled data directory or a PostgreSQL database.
enum Populated {
    /// The data directory, in a temporary directory removed on drop.
    Sled {
        _dir: TempDir,
        data: std::path::PathBuf,
    },
    Postgres(Database),
}

impl Populated {
    fn store(&self) -> Store<'_> {
        match self {
            Populated::Sled { data, .. } => Store::Sled(data),
            Populated::Postgres(db) => Store::Postgres(db),
        }
    }
}

/// Writes the data set of the configured storage; returns it, how long it
/// took and a one-line summary.
async fn populated(env: &Env) -> Res<(Populated, Duration, String)> {
    let (players, events) = (env.opts.players, env.opts.events);
    eprintln!("populating {players} players and {events} events ...");
    match env.opts.storage {
        StorageKind::Sled => {
            let dir = TempDir::new();
            let data = dir.0.join("db");
            let (took, summary) = populate(&data, players, events)?;
            Ok((Populated::Sled { _dir: dir, data }, took, summary))
        }
        StorageKind::Postgres => {
            let db = Database::create(&env.opts.pg_url)?;
            let (took, summary) = populate_pg(&db, players, events).await?;
            Ok((Populated::Postgres(db), took, summary))
        }
    }
}

/// 4, 10 and 16: populates, starts, loads top_ten (with 4 or 10; and rank,
/// with 4), around-me (with 16), stops, starts again (with 10). With
/// several nodes the loads spread over them and the memory rows are the
/// first node's.
pub async fn big(env: &Arc<Env>) -> Res<Vec<Row>> {
    let (data, took, summary) = populated(env).await?;
    eprintln!("populated in {:.1} s: {summary}", took.as_secs_f64());
    let mut rows = Vec::new();
    let mut server = env.server_on(data.store())?;
    let startup = server.startup;
    let (rss_start, _) = memory_mib(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle, _) = memory_mib(server.pid());

    // Sanity: the board is there.
    let url = format!("{}/leaderboards/top_ten/{PRODUCT}", server.base);
    let top = expect_ok(env.http.get(&url).send().await).await?;
    let top: Vec<Value> = serde_json::from_slice(&top).ctx("top_ten")?;
    if top.len() != 10 {
        return Err(format!("top_ten has {} entries", top.len()));
    }

    // Optionally scrape /metrics during the loads, as Prometheus would.
    let scraper = env.opts.scrape_ms.map(|ms| {
        let (http, base) = (env.http.clone(), server.base.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = metric(&http, &base, "none").await;
            }
        })
    });
    let (mut rss_after, mut hwm_after) = (0.0, 0.0);
    if env.opts.wants("top_ten") || env.opts.wants("startup") {
        let urls = urls(
            &server,
            env.opts.conns,
            &format!("/leaderboards/top_ten/{PRODUCT}"),
        );
        let cpu = Probe::start(&env.http, &server).await;
        let mut load = get_load(env, move |task, _| urls[task].clone(), |_| Ok(())).await;
        let top_cpu = cpu.finish(&env.http, &server).await;
        (rss_after, hwm_after) = memory_mib(server.pid());
        if env.opts.wants("top_ten") {
            let mut row = Row::http(
                4,
                &format!(
                    "top_ten, {} players, {} conns",
                    env.opts.players, env.opts.conns
                ),
                &mut load,
                "req/s",
            );
            top_cpu.fill(&mut row);
            row.target(">=30000/s, p99<=5ms", Some(30_000.0), Some(5.0));
            rows.push(row);
        }
    }
    if env.opts.wants("top_ten") {
        // Not a target: a random player's rank on the same board.
        let players = env.opts.players;
        let urls = urls(
            &server,
            env.opts.conns,
            &format!("/leaderboards/{PRODUCT}/players/"),
        );
        let cpu = Probe::start(&env.http, &server).await;
        let player = move |task: usize, i: u64| {
            let user = Rng::new(task as u64 * 7_000_003 + i).below(players);
            format!("{}{user}", urls[task])
        };
        let mut load = get_load(env, player, |_| Ok(())).await;
        let mut row = Row::http(4, "rank of a random player (no target)", &mut load, "req/s");
        cpu.fill(&mut row, &env.http, &server).await;
        rows.push(row);
    }
    let (rss_end, hwm_end) = memory_mib(server.pid());
    if env.opts.wants("around_me") {
        for around in [50, 0] {
            rows.push(around_me(env, &server, around).await);
        }
    }
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    server.stop();
    drop(server);

    if env.opts.wants("startup") {
        let measured = format!(
            "listening after start, {}p/{}ev",
            env.opts.players, env.opts.events
        );
        let mut row = startup_row(measured, startup);
        row.note = format!("first start after populating ({summary})");
        rows.push(row);

        // Again after a clean shutdown (SIGTERM).
        let mut again = env.server_on(data.store())?;
        let measured = "listening after restart (after SIGTERM)".to_string();
        rows.push(startup_row(measured, again.startup));
        again.stop();

        rows.push(rss_row(
            "RSS MiB: at listening / +1s idle",
            rss_idle,
            format!("at the listening line {rss_start:.0} MiB"),
        ));
        rows.push(rss_row(
            "RSS MiB: after the top_ten load",
            rss_after,
            format!("peak so far (VmHWM) {hwm_after:.0} MiB"),
        ));
        if env.opts.wants("top_ten") {
            let mut row = Row::new(10, "RSS MiB: after the rank load too");
            row.rate = Some(rss_end);
            row.unit = "MiB";
            row.note = format!("peak (VmHWM) {hwm_end:.0} MiB; no target, for the cache growth");
            rows.push(row);
        }
        if env.nodes() > 1 {
            for row in rows.iter_mut().filter(|r| r.id == 10) {
                if row.measured.starts_with("RSS") {
                    row.add_note(&format!("first of {} nodes", env.nodes()));
                } else {
                    row.add_note(&format!("slowest of {} nodes", env.nodes()));
                }
            }
        }
    }
    Ok(rows)
}

/// 16: a random player's rank with `around` players either side, on every
/// connection for the window; the target is for `?around=50`.
async fn around_me(env: &Env, server: &Server, around: u64) -> Row {
    let players = env.opts.players;
    let urls = urls(
        server,
        env.opts.conns,
        &format!("/leaderboards/{PRODUCT}/players/"),
    );
    let cpu = Probe::start(&env.http, server).await;
    let player = move |task: usize, i: u64| {
        let user = Rng::new(task as u64 * 9_000_011 + i + 1).below(players);
        format!("{}{user}?around={around}", urls[task])
    };
    // The answer has its neighbours (the player among them): a cheap check
    // that does not parse 101 entries per call.
    let mut load = get_load(env, player, |body| {
        if body.windows(12).any(|w| w == b"\"around\":[{\"") {
            Ok(())
        } else {
            Err(format!("no around: {}", String::from_utf8_lossy(body)))
        }
    })
    .await;
    let mut row = Row::http(
        16,
        &format!(
            "around={around}, {players} players, {} conns",
            env.opts.conns
        ),
        &mut load,
        "req/s",
    );
    cpu.fill(&mut row, &env.http, server).await;
    if around == 50 {
        row.target(">=20000/s", Some(20_000.0), None);
    }
    row
}
