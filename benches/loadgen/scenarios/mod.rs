//! The scenarios, one file per group (the lobby, the stored board and
//! start-up, ingest, the consumers, ingest by `XADD`, quick match, the
//! live lobby feed), and what they share: the [`Env`] (HTTP client, fake game server, player tokens,
//! options) and the steps
//! several of them take (creating games, listing them, posting events).

pub mod board;
pub mod consumers;
pub mod feed;
pub mod ingest;
pub mod lobby;
pub mod quick;
pub mod resp;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{FakeGameServer, SECRET, mint_token};
use crate::load::{Load, drive, expect_ok};
use crate::meter::wait_cursor;
use crate::server::{Server, Store};
use crate::workload::state_change;
use crate::{Context, KEY, Opts, PRODUCT, Res};

/// What the scenarios share.
pub struct Env {
    pub http: reqwest::Client,
    /// The fake game server every server is configured with (it answers
    /// at once and records no bodies, so memory stays bounded).
    pub fake: FakeGameServer,
    pub opts: Opts,
    /// `Token <jwt>` of creators (c0..) and joiners (j0..), one per connection.
    pub creators: Vec<String>,
    pub joiners: Vec<String>,
}

impl Env {
    pub async fn new(opts: Opts) -> Res<Env> {
        let fake = FakeGameServer::start_unrecorded()
            .await
            .ctx("start the fake game server")?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .ctx("http client")?;
        let tokens = |prefix: &str| -> Vec<String> {
            (0..opts.conns)
                .map(|i| token(&format!("{prefix}{i}")))
                .collect()
        };
        Ok(Env {
            http,
            fake,
            creators: tokens("c"),
            joiners: tokens("j"),
            opts,
        })
    }

    /// Starts a server on a fresh store (`--nodes` of them on one fresh
    /// database with postgres).
    pub fn server(&self) -> Res<Server> {
        Server::start(&self.fake.url, Store::Fresh, &self.opts)
    }

    /// The server processes a scenario starts (`--nodes` with postgres).
    pub fn nodes(&self) -> usize {
        match self.opts.storage {
            crate::StorageKind::Sled => 1,
            crate::StorageKind::Postgres => self.opts.nodes,
        }
    }

    /// Starts a server on a pre-populated store.
    pub fn server_on(&self, store: Store) -> Res<Server> {
        Server::start(&self.fake.url, store, &self.opts)
    }

    /// `GET /game_lobby/{PRODUCT}/open_games?count=25`: the body.
    pub async fn first_page(&self, server: &Server) -> Res<axum::body::Bytes> {
        let url = format!("{}/game_lobby/{PRODUCT}/open_games?count=25", server.base);
        expect_ok(self.http.get(url).send().await).await
    }
}

/// `Token <jwt>` for `user`, valid for a day (a long run outlasts the
/// harness's one-hour tokens).
pub fn token(user: &str) -> String {
    let jwt = mint_token(SECRET, user, &format!("user-{user}"), 24 * 3600);
    format!("Token {jwt}")
}

/// `{base}{path}` for each connection of `conns`, the nodes round-robin.
pub fn urls(server: &Server, conns: usize, path: &str) -> Arc<Vec<String>> {
    Arc::new(
        (0..conns)
            .map(|task| format!("{}{path}", server.base_for(task)))
            .collect(),
    )
}

/// Creates up to `n` games on `conns` connections (spread over the nodes)
/// within `timeout`; returns the load and the ids created.
pub async fn create_games(
    env: &Arc<Env>,
    server: &Server,
    conns: usize,
    timeout: Duration,
    n: u64,
) -> (Load, Vec<String>) {
    let ids = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let urls = urls(server, conns, &format!("/game_lobby/{PRODUCT}/create_game"));
    let (env2, ids2) = (env.clone(), ids.clone());
    let load = drive(conns, timeout, n, move |task, _| {
        let request = env2
            .http
            .post(&urls[task])
            .header("authorization", &env2.creators[task])
            .send();
        let ids = ids2.clone();
        async move {
            let body = expect_ok(request.await).await?;
            let game: Value = serde_json::from_slice(&body).ctx("game JSON")?;
            let id = game["game_id"].as_str().ok_or("no game_id")?.to_string();
            ids.lock().unwrap().push(id);
            Ok(())
        }
    })
    .await;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    (load, ids)
}

/// Creates exactly `n` games (120 s at most) on the configured connections.
pub async fn create_all(env: &Arc<Env>, server: &Server, n: u64) -> Res<(Load, Vec<String>)> {
    let (load, ids) = create_games(env, server, env.opts.conns, Duration::from_secs(120), n).await;
    if ids.len() as u64 != n {
        return Err(format!(
            "created {} of {n} games; {}",
            ids.len(),
            load.note()
        ));
    }
    Ok((load, ids))
}

/// A read load: `GET url(connection, i)` on every connection for the
/// window (at most 5,000,000 calls, 50,000 with `--quick`); `check` judges
/// each 200 answer's body.
pub async fn get_load(
    env: &Env,
    url: impl Fn(usize, u64) -> String + Send + Sync + 'static,
    check: fn(&[u8]) -> Res<()>,
) -> Load {
    let http = env.http.clone();
    let max = env.opts.count(5_000_000, 50_000);
    drive(env.opts.conns, env.opts.window, max, move |task, i| {
        let request = http.get(url(task, i)).send();
        async move { check(&expect_ok(request.await).await?) }
    })
    .await
}

/// POSTs `events` to the first node's /ingest in frames of `per_frame`;
/// returns the last id.
pub async fn post_events(
    env: &Env,
    server: &Server,
    events: &[String],
    per_frame: usize,
) -> Res<u64> {
    let mut last = 0;
    for chunk in events.chunks(per_frame) {
        let body = format!("[{}]", chunk.join(","));
        let response = env
            .http
            .post(format!("{}/ingest", server.base))
            .bearer_auth(KEY)
            .body(body)
            .send()
            .await;
        let answer: Value = serde_json::from_slice(&expect_ok(response).await?).ctx("ack")?;
        last = answer["last_id"].as_u64().ok_or("no last_id")?;
    }
    Ok(last)
}

/// Creates `n` games and has them listed (creator_joined applied); returns
/// the create load, how long the listing took and the ids.
pub async fn listed_games(
    env: &Arc<Env>,
    server: &Server,
    n: u64,
) -> Res<(Load, Duration, Vec<String>)> {
    let (load, ids) = create_all(env, server, n).await?;
    let started = Instant::now();
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
        Duration::from_secs(120),
    )
    .await?;
    if done.is_none() {
        return Err(format!("matchmaker at {cursor} of {last} after 120 s"));
    }
    // The matchmaker may run on another node than the first.
    server.settle().await;
    let listed: Vec<Value> =
        serde_json::from_slice(&env.first_page(server).await?).ctx("open_games")?;
    if listed.len() != 25.min(n as usize) {
        return Err(format!("the lobby lists {} games", listed.len()));
    }
    Ok((load, started.elapsed(), ids))
}
