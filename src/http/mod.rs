//! The HTTP front end: the router, its state, request observation, and
//! serving with a connection cap. Handlers are thin: they extract, call
//! the app's use cases, and map errors to the contract once
//! ([`error::ApiError`]). Nothing below this layer imports it.

pub mod error;
pub mod extract;
pub mod ingest;
pub mod leaderboards;
pub mod limits;
pub mod lobby;
pub mod ops;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::cors::{Any, CorsLayer};

use crate::app::App;
use crate::app::keys::IngestKeys;
use crate::domain::event::MAX_FRAME;
use crate::infra::config::Config;
use crate::infra::jwt::JwtVerifier;
use crate::infra::metrics;
use error::json_errors;

/// What handlers share.
pub struct HttpState {
    /// The use cases.
    pub app: Arc<App>,
    pub jwt: JwtVerifier,
    pub ingest_keys: IngestKeys,
    pub admin_key: Option<String>,
    pub metrics: Option<PrometheusHandle>,
}

/// The state handed to handlers.
pub type AppState = Arc<HttpState>;

impl HttpState {
    /// The HTTP state over `app`, with the config's secrets.
    pub fn new(config: &Config, app: Arc<App>, metrics: Option<PrometheusHandle>) -> AppState {
        Arc::new(HttpState {
            app,
            jwt: JwtVerifier::new(&config.jwt_secret),
            ingest_keys: IngestKeys::new(&config.games),
            admin_key: config.admin_key.clone(),
            metrics,
        })
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([HeaderName::from_static("content-type")])
        .max_age(Duration::from_secs(3600));
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/admin/status", get(ops::admin_status))
        .route("/admin/backup", axum::routing::post(ops::backup));
    #[cfg(feature = "failpoints")]
    let router = router.route("/admin/failpoints", axum::routing::post(ops::failpoints));
    router
        .route("/admin/{*rest}", axum::routing::any(ops::admin_unknown))
        .route("/ingest", get(ingest::websocket).post(ingest::post))
        .route("/events", get(ops::read_events))
        .merge(lobby::routes())
        .merge(leaderboards::routes())
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
        .layer(DefaultBodyLimit::max(MAX_FRAME))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(observe))
        .layer(cors)
        .with_state(state)
}

/// One debug line and the request metrics per request, by route template;
/// internal errors are logged here with their cause.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let template = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics::http_request(method.as_str(), template, status, started.elapsed());
    if status >= 500
        && let Some(error::Logged(why)) = response.extensions().get::<error::Logged>()
    {
        tracing::warn!(%method, route = template, status, error = %why, "request failed");
    }
    tracing::debug!(%method, route = template, status, elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}
