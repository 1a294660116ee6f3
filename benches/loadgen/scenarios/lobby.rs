//! Scenarios 1-3, the lobby: `create_game`, `join_game` (and the pair
//! rate of the two), and `open_games` over 1,000 listed games.

use std::sync::Arc;
use std::time::Instant;

use super::{Env, create_games, get_load, listed_games, urls};
use crate::load::{drive, expect_ok};
use crate::meter::Probe;
use crate::report::Row;
use crate::workload::Rng;
use crate::{PRODUCT, Res};

/// 1: create_game on every connection for the window.
pub async fn create(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = env.server()?;
    let max = env.opts.count(1_000_000, 20_000);
    let cpu = Probe::start(&env.http, &server).await;
    let (mut load, _) = create_games(env, &server, env.opts.conns, env.opts.window, max).await;
    let mut row = Row::http(
        1,
        &format!("create_game, {} conns", env.opts.conns),
        &mut load,
        "req/s",
    );
    cpu.fill(&mut row, &env.http, &server).await;
    row.target(">=8000/s, p99<=20ms", Some(8000.0), Some(20.0));
    Ok(vec![row])
}

/// 2: creates and lists games, then joins each once; the pair rate is
/// derived from the two rates.
pub async fn join(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = env.server()?;
    let n = env.opts.count(40_000, 2_000);
    let all = Instant::now();
    let cpu = Probe::start(&env.http, &server).await;
    let (mut created, listing, ids) = listed_games(env, &server, n).await?;
    let create_cpu = cpu.finish(&env.http, &server).await;
    let ids = Arc::new(ids);
    let urls = urls(
        &server,
        env.opts.conns,
        &format!("/game_lobby/{PRODUCT}/join_game/"),
    );
    let env2 = env.clone();
    let cpu = Probe::start(&env.http, &server).await;
    let mut load = drive(env.opts.conns, env.opts.window, n, move |task, i| {
        let request = env2
            .http
            .post(format!("{}{}", urls[task], ids[i as usize]))
            .header("authorization", &env2.joiners[task])
            .send();
        async move { expect_ok(request.await).await.map(|_| ()) }
    })
    .await;
    let join_cpu = cpu.finish(&env.http, &server).await;
    let end_to_end = all.elapsed();

    let mut rows = Vec::new();
    let mut row = Row::http(
        2,
        &format!("setup: create {n} games, {} conns", env.opts.conns),
        &mut created,
        "req/s",
    );
    create_cpu.fill(&mut row);
    row.note = format!(
        "then ingest creator_joined + wait listed: {:.2} s {}",
        listing.as_secs_f64(),
        row.note
    );
    let create_rate = row.rate.unwrap_or(0.0);
    rows.push(row);

    let mut row = Row::http(
        2,
        &format!("join_game, {} conns", env.opts.conns),
        &mut load,
        "req/s",
    );
    join_cpu.fill(&mut row);
    row.target(">=4000/s, p99<=20ms", Some(4000.0), Some(20.0));
    let join_rate = row.rate.unwrap_or(0.0);
    rows.push(row);

    // A pair is one create and one join, each phase at full concurrency.
    let mut row = Row::new(2, "create+join pairs (1/(1/create+1/join))");
    row.count = load.ok;
    row.rate = Some(1.0 / (1.0 / create_rate.max(1e-9) + 1.0 / join_rate.max(1e-9)));
    row.unit = "pair/s";
    row.secs = end_to_end.as_secs_f64();
    row.note = format!(
        "end to end incl. listing: {:.0} pair/s",
        load.ok.min(n) as f64 / end_to_end.as_secs_f64()
    );
    row.target(">=4000/s", Some(4000.0), None);
    rows.push(row);
    Ok(rows)
}

/// 3: a random page of 25 among 1,000 listed games.
pub async fn open_games(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = env.server()?;
    listed_games(env, &server, 1000).await?;
    let urls = urls(
        &server,
        env.opts.conns,
        &format!("/game_lobby/{PRODUCT}/open_games?count=25&page="),
    );
    let cpu = Probe::start(&env.http, &server).await;
    let page = move |task: usize, i: u64| {
        let page = Rng::new(task as u64 * 1_000_003 + i).below(40);
        format!("{}{page}", urls[task])
    };
    let mut load = get_load(env, page, |body| {
        if body.len() < 100 {
            return Err(format!("short page: {}", String::from_utf8_lossy(body)));
        }
        Ok(())
    })
    .await;
    let mut row = Row::http(3, "open_games 1000 listed, random page", &mut load, "req/s");
    cpu.fill(&mut row, &env.http, &server).await;
    row.target(">=30000/s", Some(30_000.0), None);
    Ok(vec![row])
}
