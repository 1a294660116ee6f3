//! A stand-in game server: the one used by `varcade fake-game-server` (the
//! README walkthrough and local development), by the integration tests and
//! by the benches. It accepts the four calls the matchmaker makes
//! (`create_game`, `join_game`, `remove_player`, `remove_game`) and answers
//! like the original RPS game server, or, per endpoint group, fails, hangs,
//! answers late or answers 404 as a test asks ([`Mode`]).
//!
//! Every call is counted; its JSON body is recorded (in arrival order, before
//! any delay) unless the server was started with
//! [`FakeGameServer::start_unrecorded`], which keeps memory bounded for load
//! runs of millions of calls.
//!
//! This module depends on no other varcade module, so the tests and benches
//! can use it whatever the rest of the crate looks like.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{Value, json};

/// The endpoints, in the order of [`FakeGameServer::call_count`]'s counters.
pub const ENDPOINTS: [&str; 4] = ["create_game", "join_game", "remove_player", "remove_game"];

/// How long [`Mode::Hang`] waits before answering.
pub const HANG: Duration = Duration::from_secs(30);

/// How the fake game server answers a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// 200 at once: `create_game` with `{"gameToken": "tok-<uuid>"}`,
    /// `remove_game` with `text/html` body `ok` (as the original RPS server
    /// does), the others with JSON `{}`.
    #[default]
    Ok,
    /// 500 with a JSON body.
    Fail,
    /// Answers 200 `{}` only after 30 s ([`HANG`]).
    Hang,
    /// 200 `{}` (for `create_game`: an answer without a `gameToken`).
    NoToken,
    /// 404 with a JSON body (the game or player is already gone).
    NotFound,
    /// Waits this many milliseconds, then answers as [`Mode::Ok`].
    Delay(u64),
    /// Waits this many milliseconds, then answers 500.
    DelayFail(u64),
}

/// A fake game server running on the current tokio runtime. Clones share
/// the same server (its modes and its record of calls).
#[derive(Clone)]
pub struct FakeGameServer {
    /// `http://<addr>`, what a product's `game_server_url` should be.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

struct Inner {
    /// Modes for create_game, join_game, and both removes.
    modes: Mutex<(Mode, Mode, Mode)>,
    /// Whether bodies are recorded.
    record: AtomicBool,
    /// Whether each call is logged through `tracing` (the command).
    log: bool,
    /// Recorded calls: (index into ENDPOINTS, body), in arrival order.
    calls: Mutex<Vec<(usize, Value)>>,
    /// Calls per endpoint, recorded or not.
    counts: [AtomicUsize; 4],
}

impl FakeGameServer {
    /// Starts on `127.0.0.1:0`, recording calls. Panics if that bind fails
    /// (see [`FakeGameServer::try_start`]).
    pub async fn start() -> FakeGameServer {
        FakeGameServer::try_start()
            .await
            .expect("bind the fake game server on 127.0.0.1:0")
    }

    /// Starts on `127.0.0.1:0`, recording calls.
    pub async fn try_start() -> std::io::Result<FakeGameServer> {
        FakeGameServer::start_on("127.0.0.1:0").await
    }

    /// Starts on `bind`, recording calls.
    pub async fn start_on(bind: &str) -> std::io::Result<FakeGameServer> {
        FakeGameServer::start_with(bind, true).await
    }

    /// Starts on `127.0.0.1:0` without recording bodies (calls are still
    /// counted), for load runs.
    pub async fn start_unrecorded() -> std::io::Result<FakeGameServer> {
        FakeGameServer::start_with("127.0.0.1:0", false).await
    }

    /// Starts on `bind`; `record` says whether call bodies are kept.
    pub async fn start_with(bind: &str, record: bool) -> std::io::Result<FakeGameServer> {
        let (listener, fake) = FakeGameServer::bind(bind, record, false).await?;
        let app = fake.router();
        let listener = listener.tap_io(nodelay);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(fake)
    }

    async fn bind(
        bind: &str,
        record: bool,
        log: bool,
    ) -> std::io::Result<(tokio::net::TcpListener, FakeGameServer)> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let fake = FakeGameServer {
            url: format!("http://{addr}"),
            addr,
            inner: Arc::new(Inner {
                modes: Mutex::new((Mode::Ok, Mode::Ok, Mode::Ok)),
                record: AtomicBool::new(record),
                log,
                calls: Mutex::new(Vec::new()),
                counts: Default::default(),
            }),
        };
        Ok((listener, fake))
    }

    /// The routes, sharing this server's state.
    fn router(&self) -> Router {
        let route = |endpoint: usize| {
            post(move |State(inner): State<Arc<Inner>>, body: Bytes| call(inner, endpoint, body))
        };
        let mut router = Router::new();
        for (i, name) in ENDPOINTS.iter().enumerate() {
            router = router.route(&format!("/{name}"), route(i));
        }
        router.with_state(self.inner.clone())
    }

    /// Sets the modes of `create_game`, `join_game`, and of both
    /// `remove_player` and `remove_game`.
    pub fn set(&self, create: Mode, join: Mode, remove: Mode) {
        *lock(&self.inner.modes) = (create, join, remove);
    }

    /// Turns recording of call bodies on or off (counting goes on).
    pub fn set_recording(&self, on: bool) {
        self.inner.record.store(on, Ordering::Relaxed);
    }

    /// The bodies of the recorded calls to `endpoint` (e.g. `"join_game"`),
    /// in arrival order. A body that is not JSON is recorded as a string.
    pub fn calls(&self, endpoint: &str) -> Vec<Value> {
        let Some(index) = ENDPOINTS.iter().position(|e| *e == endpoint) else {
            return Vec::new();
        };
        lock(&self.inner.calls)
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// How many calls `endpoint` received (recorded or not); 0 for an
    /// unknown endpoint.
    pub fn call_count(&self, endpoint: &str) -> usize {
        ENDPOINTS
            .iter()
            .position(|e| *e == endpoint)
            .map_or(0, |i| self.inner.counts[i].load(Ordering::Relaxed))
    }

    /// Forgets the recorded calls (the counters stay).
    pub fn clear_calls(&self) {
        lock(&self.inner.calls).clear();
    }
}

fn nodelay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One call: count and record it on arrival, then answer per the mode.
async fn call(inner: Arc<Inner>, endpoint: usize, body: Bytes) -> Response {
    let name = ENDPOINTS[endpoint];
    inner.counts[endpoint].fetch_add(1, Ordering::Relaxed);
    if inner.log {
        tracing::info!(body = %String::from_utf8_lossy(&body), "{name}");
    }
    if inner.record.load(Ordering::Relaxed) {
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        lock(&inner.calls).push((endpoint, value));
    }
    let mode = {
        let modes = lock(&inner.modes);
        match endpoint {
            0 => modes.0,
            1 => modes.1,
            _ => modes.2,
        }
    };
    match mode {
        Mode::Ok => ok(name),
        Mode::Fail => fail(),
        Mode::Hang => {
            tokio::time::sleep(HANG).await;
            empty()
        }
        Mode::NoToken => empty(),
        Mode::NotFound => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not_found"})),
        )
            .into_response(),
        Mode::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ok(name)
        }
        Mode::DelayFail(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            fail()
        }
    }
}

fn ok(name: &str) -> Response {
    match name {
        "create_game" => axum::Json(json!({
            "gameToken": format!("tok-{}", uuid::Uuid::new_v4())
        }))
        .into_response(),
        "remove_game" => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "ok",
        )
            .into_response(),
        _ => empty(),
    }
}

fn empty() -> Response {
    axum::Json(json!({})).into_response()
}

fn fail() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({"error": "boom"})),
    )
        .into_response()
}

/// Serves a fake game server that answers every call OK on `bind` until
/// SIGINT/SIGTERM, logging each call. Prints
/// `fake game server listening on <addr>` once bound.
pub async fn serve(bind: &str) -> std::io::Result<()> {
    let (listener, fake) = FakeGameServer::bind(bind, false, true).await?;
    println!("fake game server listening on {}", fake.addr);
    let listener = listener.tap_io(nodelay);
    axum::serve(listener, fake.router())
        .with_graceful_shutdown(crate::infra::shutdown::listen())
        .await
}
