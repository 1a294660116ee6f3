//! The contract's JSON errors, in one place.
//!
//! Handlers return [`ApiError`]; its `IntoResponse` gives the status and the
//! `{"error", "message"}` body of API.md "Errors". [`json_errors`] gives the
//! same shape to answers the framework makes itself (unknown route, wrong
//! method, body too large, unparsable path).

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An error answer of the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    #[error("no game {0:?}")]
    GameNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("player {0:?} has no score on this leaderboard")]
    PlayerNotFound(String),
    #[error("{0}")]
    GameNotJoinable(String),
    #[error("you have already joined this game")]
    AlreadyJoined,
    #[error("{message}")]
    BadRequest {
        message: String,
        index: Option<usize>,
    },
    #[error("the request body is larger than 1 MiB")]
    PayloadTooLarge,
    #[error("game server: {0}")]
    GameServer(#[from] crate::gameserver::GameServerError),
    #[error("internal error")]
    Internal(#[from] StoreError),
}

impl ApiError {
    /// A `bad_request` without an index.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            index: None,
        }
    }

    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UnknownProduct(_) => "unknown_product",
            ApiError::GameNotFound(_) => "game_not_found",
            ApiError::NotFound(_) => "not_found",
            ApiError::PlayerNotFound(_) => "player_not_found",
            ApiError::GameNotJoinable(_) => "game_not_joinable",
            ApiError::AlreadyJoined => "already_joined",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::GameServer(_) => "game_server_error",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnknownProduct(_)
            | ApiError::GameNotFound(_)
            | ApiError::NotFound(_)
            | ApiError::PlayerNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::GameNotJoinable(_) | ApiError::AlreadyJoined => StatusCode::CONFLICT,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::GameServer(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        if let ApiError::BadRequest {
            index: Some(index), ..
        } = self
        {
            body["index"] = json!(index);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "internal error");
        }
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    }
}

/// Turns the framework's own non-JSON error answers into contract errors.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this route")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("payload_too_large", "the request body is larger than 1 MiB")
        }
        StatusCode::UNAUTHORIZED => ("unauthorized", "unauthorized"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the database does not answer"),
        s if s.is_client_error() => ("bad_request", "the request could not be understood"),
        _ => ("internal", "internal error"),
    };
    let mut json_response =
        (status, Json(json!({"error": code, "message": message}))).into_response();
    for name in [header::ALLOW, header::VARY] {
        if let Some(value) = response.headers().get(&name) {
            json_response.headers_mut().insert(name, value.clone());
        }
    }
    for (name, value) in response.headers() {
        if name.as_str().starts_with("access-control-") {
            json_response
                .headers_mut()
                .insert(name.clone(), value.clone());
        }
    }
    json_response
}
