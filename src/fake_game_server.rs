//! A stand-in game server for the README walkthrough and local development:
//! it accepts the four matchmaker calls and answers like a real one.
//!
//! `create_game` answers a fresh `gameToken`; the others answer 200. Every
//! call is logged so a developer can watch what the matchmaker sends.

use axum::Json;
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};

/// The fake game server's routes.
pub fn router() -> Router {
    Router::new()
        .route(
            "/create_game",
            post(|Json(body): Json<Value>| async move {
                tracing::info!(%body, "create_game");
                Json(json!({"gameToken": uuid::Uuid::new_v4().simple().to_string()}))
            }),
        )
        .route("/join_game", post(ok("join_game")))
        .route("/remove_player", post(ok("remove_player")))
        .route("/remove_game", post(ok("remove_game")))
}

fn ok(
    name: &'static str,
) -> impl Fn(Json<Value>) -> std::future::Ready<Json<Value>> + Clone + Send + 'static {
    move |Json(body): Json<Value>| {
        tracing::info!(%body, "{name}");
        std::future::ready(Json(json!({})))
    }
}

/// Serves the fake game server on `bind` until SIGINT/SIGTERM.
pub async fn serve(bind: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let local = listener.local_addr()?;
    println!("fake game server listening on {local}");
    axum::serve(listener, router())
        .with_graceful_shutdown(crate::shutdown::signal())
        .await
}
