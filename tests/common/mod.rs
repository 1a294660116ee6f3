//! Test harness: starts the real `varcade` binary on 127.0.0.1:0 with a
//! temporary data directory, and a fake game server inside the test whose
//! behaviour each test controls (`varcade::fake_game_server`, the same one
//! `varcade fake-game-server` runs). The benches include this file too, so
//! it assumes nothing a bench does not have.
#![allow(dead_code)]

pub mod redis_server;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[allow(unused_imports)]
pub use varcade::fake_game_server::{FakeGameServer, Mode};

pub const ADMIN: &str = "admin-key";
pub const SECRET: &str = "test-secret";

/// Options for the config file the server is started with.
#[derive(Clone)]
pub struct Options {
    pub game_server_url: String,
    pub timeout_ms: u64,
    /// (created, creator_joined, all_players_joined, in_progress, ended)
    pub expiry: (u64, u64, u64, u64, u64),
    pub curation_interval_ms: u64,
    pub extra: String,
    /// Turns the Redis-protocol listener on (`[resp] bind = "127.0.0.1:0"`).
    pub resp: bool,
}

impl Options {
    pub fn new(fake: &FakeGameServer) -> Options {
        Options {
            game_server_url: fake.url.clone(),
            timeout_ms: 1000,
            expiry: (600, 600, 600, 600, 600),
            curation_interval_ms: 200,
            extra: String::new(),
            resp: false,
        }
    }

    /// Options with these expiries (seconds per state) and curation every 100 ms.
    pub fn curating(fake: &FakeGameServer, expiry: (u64, u64, u64, u64, u64)) -> Options {
        Options {
            expiry,
            curation_interval_ms: 100,
            ..Options::new(fake)
        }
    }

    /// The config file text for a data directory.
    pub fn toml(&self, data_dir: &std::path::Path) -> String {
        let (a, b, c, d, e) = self.expiry;
        format!(
            r#"data_dir = "{dir}"
jwt_secret = "{SECRET}"
admin_key = "{ADMIN}"
game_server_timeout_ms = {timeout}
{extra}
{resp}
[expiry]
created = {a}
creator_joined = {b}
all_players_joined = {c}
in_progress = {d}
ended = {e}
curation_interval_ms = {interval}

[[games]]
product_id = "exrps"
game_server_url = "{url}"
game_socket_url = "127.0.0.1:8085"
ingest_key = "exrps-secret"
leaderboard = "wins"
stats = "exrps"
[games.settings]
num_players = 2

[[games]]
product_id = "chess"
game_server_url = "{url}"
game_socket_url = "127.0.0.1:9095"
ingest_key = "chess-secret"
leaderboard = "elo"
stats = "default"
[games.settings]
num_players = 3
"#,
            dir = data_dir.display(),
            timeout = self.timeout_ms,
            extra = self.extra,
            resp = if self.resp {
                "[resp]\nbind = \"127.0.0.1:0\"\n"
            } else {
                ""
            },
            interval = self.curation_interval_ms,
            url = self.game_server_url,
        )
    }
}

/// Whether the tests run against PostgreSQL (`VARCADE_TEST_STORAGE=postgres`)
/// rather than sled: each server then gets a database of its own on the
/// local PostgreSQL (`VARCADE_TEST_POSTGRES`, default
/// `postgres://postgres@127.0.0.1:5432`), dropped with its [`TempDir`].
pub fn postgres() -> bool {
    std::env::var("VARCADE_TEST_STORAGE").is_ok_and(|v| v == "postgres")
}

/// True (and says so) when running against PostgreSQL: for tests of what
/// only the sled backend has (its data directory, backup files, import).
pub fn sled_only(what: &str) -> bool {
    if postgres() {
        eprintln!("skipped with VARCADE_TEST_STORAGE=postgres: {what} is sled's");
    }
    postgres()
}

/// The PostgreSQL server the tests use.
pub fn postgres_server() -> String {
    std::env::var("VARCADE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Runs one SQL statement on the server's `postgres` database with psql.
pub fn psql(sql: &str) -> std::process::Output {
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-d"])
        .arg(format!("{}/postgres", postgres_server()))
        .args(["-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A database created for a test, dropped on drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        let name = format!("varcade_it_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE DATABASE {name}"));
        TestDb {
            url: format!("{}/{name}", postgres_server()),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-qAt", "-d"])
            .arg(format!("{}/postgres", postgres_server()))
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A temporary directory removed on drop, with the test's own PostgreSQL
/// database when the tests run against PostgreSQL.
pub struct TempDir(pub PathBuf, pub Option<Arc<TestDb>>);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("varcade-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir, postgres().then(|| Arc::new(TestDb::create())))
    }

    /// The config lines that point a server at this directory's database
    /// (nothing with sled).
    pub fn storage_toml(&self) -> String {
        match &self.1 {
            Some(db) => format!(
                "\n[storage]\nkind = \"postgres\"\nurl = \"{}\"\npool_size = 8\nlease_secs = 2\n",
                db.url
            ),
            None => String::new(),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `varcade serve`.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub base: String,
    pub dir: TempDir,
    pub config: PathBuf,
    pub http: reqwest::Client,
    /// Extra environment the process was started with (kept on restarts).
    pub envs: Vec<(String, String)>,
    /// The Redis-protocol address, when `Options::resp` is on.
    pub resp: Option<String>,
}

/// Starts `varcade` with `args` and waits for its `listening on` line.
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> (Child, String) {
    let (child, addr, _) = spawn_with_resp(args, envs);
    (child, addr)
}

/// Like [`spawn`], also returning the address of the `varcade redis
/// protocol on` line when one was printed before `listening on`.
pub fn spawn_with_resp(args: &[&str], envs: &[(&str, &str)]) -> (Child, String, Option<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varcade"));
    cmd.args(args)
        .env_remove("VARCADE_BIND")
        .env_remove("VARCADE_DATA_DIR")
        .env_remove("VARCADE_JWT_SECRET")
        .env("VARCADE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("VARCADE_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start varcade");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let mut resp = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let last_word = || line.rsplit(' ').next().unwrap_or_default().to_string();
            if !sent && line.contains("redis protocol on") {
                resp = Some(last_word());
            } else if !sent && line.contains("listening on") {
                let _ = tx.send((last_word(), resp.take()));
                sent = true;
            }
        }
    });
    let (addr, resp) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("varcade did not print `listening on`");
    (child, addr, resp)
}

impl Server {
    pub async fn start(options: &Options) -> Server {
        let dir = TempDir::new();
        Server::start_in(options, dir).await
    }

    /// Starts with extra environment variables (for example
    /// `VARCADE_LOG`); restarts keep them.
    pub async fn start_with_env(options: &Options, envs: &[(&str, &str)]) -> Server {
        let envs = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::start_in_with_env(options, TempDir::new(), envs).await
    }

    pub async fn start_in(options: &Options, dir: TempDir) -> Server {
        Server::start_in_with_env(options, dir, Vec::new()).await
    }

    /// Writes the config for `options` into `dir` and starts there.
    pub async fn start_in_with_env(
        options: &Options,
        dir: TempDir,
        envs: Vec<(String, String)>,
    ) -> Server {
        let config = dir.0.join("varcade.toml");
        std::fs::write(
            &config,
            options.toml(&dir.0.join("db")) + &dir.storage_toml(),
        )
        .unwrap();
        let env_refs: Vec<(&str, &str)> =
            envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (child, addr, resp) = spawn_with_resp(
            &[
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ],
            &env_refs,
        );
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            dir,
            config,
            http: reqwest::Client::new(),
            envs,
            resp,
        }
    }

    /// `kill -9`, then start again on the same data directory.
    pub async fn crash_and_restart(mut self, options: &Options) -> Server {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let dir = TempDir(std::mem::take(&mut self.dir.0), self.dir.1.clone());
        let envs = std::mem::take(&mut self.envs);
        Server::start_in_with_env(options, dir, envs).await
    }

    /// SIGTERM; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST with an optional `Authorization` header value and JSON body text.
    pub async fn post(&self, path: &str, auth: Option<&str>, body: &str) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).body(body.to_string());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create(&self, product: &str, user: &str) -> (u16, Value) {
        let auth = token(user);
        self.post(
            &format!("/game_lobby/{product}/create_game"),
            Some(&auth),
            "",
        )
        .await
    }

    pub async fn join(&self, product: &str, game_id: &str, user: &str) -> (u16, Value) {
        let auth = token(user);
        self.post(
            &format!("/game_lobby/{product}/join_game/{game_id}"),
            Some(&auth),
            "",
        )
        .await
    }

    pub async fn open_games(&self, product: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/game_lobby/{product}/open_games?count=25"))
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().clone()
    }

    /// POSTs events with the product's ingest key.
    pub async fn ingest(&self, key: &str, body: &Value) -> (u16, Value) {
        self.post("/ingest", Some(&format!("Bearer {key}")), &body.to_string())
            .await
    }

    pub async fn state_change(&self, product: &str, game_id: &str, state: &str) {
        let key = format!("{product}-secret");
        let event = json!({"product_id": product, "game_id": game_id, "type": "state_change", "new_state": state});
        let (status, body) = self.ingest(&key, &event).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Creates a game and has the game server report `creator_joined`.
    pub async fn listed_game(&self, product: &str, creator: &str) -> String {
        let (status, game) = self.create(product, creator).await;
        assert_eq!(status, 200, "{game}");
        let id = game["game_id"].as_str().unwrap().to_string();
        self.state_change(product, &id, "creator_joined").await;
        self.wait_for(|| async {
            self.open_games(product)
                .await
                .iter()
                .any(|g| g["game_id"] == id.as_str())
        })
        .await;
        id
    }

    /// All events via `GET /events`.
    pub async fn events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .http
                .get(self.url(&format!("/events?after={after}&limit=1000")))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let page: Vec<Value> = r.json().await.unwrap();
            match page.last() {
                Some(last) => after = last["id"].as_u64().unwrap(),
                None => return out,
            }
            out.extend(page);
        }
    }

    /// Polls `check` until it holds (10 s at most).
    pub async fn wait_for<F, Fut>(&self, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check().await {
            assert!(Instant::now() < deadline, "condition not met within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET /readyz`: the status code.
    pub async fn readyz(&self) -> u16 {
        self.get("/readyz").await.0
    }

    /// `GET /metrics` as text (asserts 200).
    pub async fn metrics_text(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET /metrics");
        r.text().await.unwrap()
    }

    /// GET with the admin key.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST a JSON body with the admin key.
    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, Some(&format!("Bearer {ADMIN}")), &body.to_string())
            .await
    }

    /// `GET /admin/status` (asserts 200): `{"last_event_id", "consumers":
    /// {"matchmaker": {"cursor", "lag", "state", "error"}, "stats": …},
    /// "layout_version", "size_on_disk", "storage"}`.
    pub async fn status(&self) -> Value {
        let (status, body) = self.admin_get("/admin/status").await;
        assert_eq!(status, 200, "GET /admin/status: {body}");
        body
    }

    /// Sets the fail point `name` to `actions` (a `fail` crate action
    /// string; `""` removes it) through `POST /admin/failpoints`. Only a
    /// binary built with the `failpoints` feature has that route.
    pub async fn failpoint(&self, name: &str, actions: &str) {
        let body = json!({"name": name, "actions": actions});
        let (status, answer) = self.admin_post("/admin/failpoints", &body).await;
        assert_eq!(status, 200, "failpoint {name}={actions:?}: {answer}");
    }
}

/// Polls `check` every 20 ms until it holds; panics after `limit`, naming
/// `what`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Token <jwt>` for a player (username = "user<id>").
pub fn token(user: &str) -> String {
    format!(
        "Token {}",
        mint_token(SECRET, user, &format!("user{user}"), 3600)
    )
}

pub use varcade::infra::jwt::mint_token;

impl Server {
    /// Starts again on the same data directory after the process exited
    /// (for example after [`Server::terminate`]); kills it first if it runs.
    pub async fn restart(mut self, options: &Options) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = TempDir(std::mem::take(&mut self.dir.0), self.dir.1.clone());
        let envs = std::mem::take(&mut self.envs);
        Server::start_in_with_env(options, dir, envs).await
    }

    /// Opens `GET /ingest{query}` as a WebSocket, with an optional
    /// `Authorization` header value.
    pub async fn ws_connect(
        &self,
        query: &str,
        auth: Option<&str>,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ingest{query}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(auth) = auth {
            request
                .headers_mut()
                .insert("authorization", auth.parse().unwrap());
        }
        let connect = tokio_tungstenite::connect_async(request);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(result) => result.map(|(ws, _)| ws),
            Err(_) => panic!("WebSocket connect timed out"),
        }
    }

    /// A WebSocket on `/ingest` authenticated with `Authorization: Bearer <key>`.
    pub async fn ws(&self, key: &str) -> Ws {
        self.ws_connect("", Some(&format!("Bearer {key}")))
            .await
            .expect("WebSocket upgrade")
    }
}

/// An ingest WebSocket client.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one text frame.
pub async fn ws_send(ws: &mut Ws, text: &str) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .expect("send a frame");
}

/// The next message that is not a ping or pong (10 s at most); `None` when
/// the stream ended.
pub async fn ws_next(
    ws: &mut Ws,
) -> Option<Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>>
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no WebSocket message within 10 s");
        match next {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => return other,
        }
    }
}

/// The next text frame, parsed as JSON.
pub async fn ws_recv(ws: &mut Ws) -> Value {
    use tokio_tungstenite::tungstenite::Message;
    match ws_next(ws).await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(text.as_str())
            .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Reads until the server's close frame and returns its code (as a number).
pub async fn ws_close_code(ws: &mut Ws) -> Option<u16> {
    use tokio_tungstenite::tungstenite::Message;
    for _ in 0..10_000 {
        match ws_next(ws).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
    panic!("no close frame")
}

/// Opens an ingest WebSocket that the server must refuse; returns the
/// HTTP status of the refusal and its body.
pub async fn ws_refused(server: &Server, query: &str, auth: Option<&str>) -> (u16, Value) {
    match server.ws_connect(query, auth).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            (response.status().as_u16(), body)
        }
        Ok(_) => panic!("the upgrade was accepted ({query} {auth:?})"),
        Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
    }
}

/// A fake game server and a server started against it.
pub async fn setup() -> (FakeGameServer, Server) {
    let fake = FakeGameServer::start().await;
    let server = Server::start(&Options::new(&fake)).await;
    (fake, server)
}

/// Asserts a contract error: status, code and a message.
pub fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// The lobby listing of `game`, if it is listed.
pub async fn listed(server: &Server, product: &str, game: &str) -> Option<Value> {
    server
        .open_games(product)
        .await
        .into_iter()
        .find(|g| g["game_id"] == game)
}

/// The whole board of `product`, paged like a client would, as (user,
/// score).
pub async fn board(server: &Server, product: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    loop {
        let (status, body) = server
            .get(&format!(
                "/leaderboards/{product}?offset={}&count=100",
                out.len()
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        let page = body.as_array().unwrap();
        if page.is_empty() {
            return out;
        }
        for e in page {
            out.push((
                e["user_id"].as_str().unwrap().to_string(),
                e["score"].as_i64().unwrap(),
            ));
        }
    }
}
