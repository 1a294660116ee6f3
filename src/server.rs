//! The service: shared application state, the router, and `serve` from
//! start-up to graceful stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::{Any, CorsLayer};

use axum::Json;
use serde_json::{Value, json};

use crate::auth::{Admin, IngestKeys, JwtVerifier};
use crate::config::{Config, ProductConfig};
use crate::error::ApiError;
use crate::error::json_errors;
use crate::events::{self, ingest::MAX_FRAME};
use crate::gameserver::GameServerClient;
use crate::shutdown;
use crate::store::{Store, StoreError};

/// Everything handlers share.
pub struct App {
    pub config: Config,
    pub products: HashMap<String, ProductConfig>,
    pub store: Arc<Store>,
    pub game_servers: GameServerClient,
    pub jwt: JwtVerifier,
    pub ingest_keys: IngestKeys,
    pub metrics: Option<PrometheusHandle>,
}

/// The state handed to handlers.
pub type AppState = Arc<App>;

/// Start-up failures (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

impl App {
    /// Opens the store and builds the shared state.
    pub fn open(config: Config) -> Result<AppState, StartError> {
        let dir = config.data_dir.clone();
        let data_dir_error = |source| StartError::DataDir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(data_dir_error)?;
        let probe = dir.join(".varcade-write-test");
        std::fs::write(&probe, b"ok").map_err(data_dir_error)?;
        let _ = std::fs::remove_file(probe);
        let store = Store::open(&dir).map_err(|e| match e {
            StoreError::Sled(sled::Error::Io(source)) => data_dir_error(source),
            e => StartError::Store(e),
        })?;
        Ok(Arc::new(App {
            products: config.products(),
            game_servers: GameServerClient::new(Duration::from_millis(
                config.game_server_timeout_ms,
            )),
            jwt: JwtVerifier::new(&config.jwt_secret),
            ingest_keys: IngestKeys::new(&config.games),
            metrics: crate::metrics::install(),
            store,
            config,
        }))
    }
}

/// The whole HTTP surface.
pub fn router(app: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([HeaderName::from_static("content-type")])
        .max_age(Duration::from_secs(3600));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/status", get(admin_status))
        .route("/admin/{*rest}", axum::routing::any(admin_unknown))
        .merge(crate::lobby::routes())
        .merge(crate::stats::routes())
        .merge(events::routes())
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(MAX_FRAME))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(observe))
        .layer(cors)
        .with_state(app)
}

async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.meta.get(b"layout_version") {
        Ok(_) => "ready".into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// `GET /admin/status` (admin key): the log's end, each consumer's cursor
/// and the layout version.
async fn admin_status(State(app): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let durable = app.store.durable_id();
    let consumers: serde_json::Map<String, Value> = events::cursors(&app.store)
        .into_iter()
        .map(|(name, cursor)| {
            let lag = durable.saturating_sub(cursor);
            (name.to_string(), json!({"cursor": cursor, "lag": lag}))
        })
        .collect();
    Ok(Json(json!({
        "last_event_id": durable,
        "consumers": consumers,
        "layout_version": app.store.layout_version()?,
        "size_on_disk": app.store.size_on_disk(),
    })))
}

/// Any other `/admin` path: 401 without the admin key, else 404.
async fn admin_unknown(_admin: Admin) -> ApiError {
    ApiError::NotFound("no such admin route".into())
}

async fn metrics(State(app): State<AppState>) -> Response {
    crate::metrics::store_size(app.store.size_on_disk());
    match &app.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// One debug line and the request metrics per request, by route template.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let template = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    crate::metrics::http_request(method.as_str(), template, status, started.elapsed());
    tracing::debug!(%method, path = uri.path(), status, elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}

/// Drains the histograms' pending samples even when nobody scrapes, so
/// they do not accumulate in memory.
async fn metrics_upkeep(handle: PrometheusHandle, mut shutdown: shutdown::Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.recv() => return,
        }
    }
}

/// Seeds the games gauges from the store (once, at start).
fn seed_game_gauges(store: &Store) {
    for game in store.all_games().flatten() {
        crate::metrics::game_moved(&game.product_id, None, Some(game.state.as_str()));
    }
}

/// Runs the service until SIGINT/SIGTERM; flushes before returning.
pub async fn serve(config: Config) -> Result<(), StartError> {
    let app = App::open(config)?;
    seed_game_gauges(&app.store);
    let addr = app.config.bind.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;

    let (trigger, shutdown) = shutdown::channel();
    let store = app.store.clone();
    let mut tasks = vec![
        tokio::spawn(events::consumer::run(
            store.clone(),
            events::matchmaker::Matchmaker::new(store.clone()),
            trigger.subscribe(),
        )),
        tokio::spawn(crate::stats::consumer::spawn(
            app.clone(),
            trigger.subscribe(),
        )),
        tokio::spawn(crate::curation::run(
            store.clone(),
            app.game_servers.clone(),
            app.config.expiry.clone(),
            trigger.subscribe(),
        )),
        tokio::spawn(events::retention(
            store.clone(),
            Duration::from_secs(app.config.event_retention_secs),
            trigger.subscribe(),
        )),
    ];
    if let Some(handle) = app.metrics.clone() {
        tasks.push(tokio::spawn(metrics_upkeep(handle, trigger.subscribe())));
    }
    drop(shutdown);

    println!("varcade listening on {local}");
    tracing::info!(%local, data_dir = %app.config.data_dir.display(), "varcade listening on {local}");
    let result = axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(shutdown::signal())
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "server error");
    }
    trigger.fire();
    for task in tasks.drain(..) {
        let _ = task.await;
    }
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}
