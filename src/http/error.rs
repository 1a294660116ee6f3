//! The contract's JSON errors, in one place.
//!
//! Handlers return [`ApiError`] (every [`AppError`] maps to one here, once);
//! its `IntoResponse` gives the status and the `{"error", "message"}` body
//! of API.md "Errors". [`json_errors`] gives the same shape to answers the
//! framework makes itself (unknown route, wrong method, body too large,
//! unparsable path).

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppError;
use crate::app::ports::StorageError;
use crate::domain::event::FrameError;

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
    #[error("no season {0:?} on this leaderboard")]
    SeasonNotFound(String),
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
    GameServer(#[from] crate::infra::gameserver::GameServerError),
    #[error("the service is overloaded; retry shortly")]
    Overloaded,
    #[error("{0}")]
    StorageUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Overloaded => ApiError::Overloaded,
            StorageError::Unavailable(why) => ApiError::StorageUnavailable(format!(
                "the database cannot be written ({why}); nothing more is acknowledged"
            )),
            StorageError::Failed(why) => ApiError::Internal(why),
        }
    }
}

impl From<FrameError> for ApiError {
    fn from(e: FrameError) -> Self {
        if e.forbidden {
            ApiError::Forbidden(e.message)
        } else {
            ApiError::BadRequest {
                message: e.message,
                index: e.index,
            }
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::UnknownProduct(p) => ApiError::UnknownProduct(p),
            AppError::GameNotFound(g) => ApiError::GameNotFound(g),
            AppError::GameNotJoinable => ApiError::GameNotJoinable(e.to_string()),
            AppError::AlreadyJoined => ApiError::AlreadyJoined,
            AppError::PlayerNotFound(u) => ApiError::PlayerNotFound(u),
            AppError::SeasonNotFound(s) => ApiError::SeasonNotFound(s),
            AppError::GameServer(e) => ApiError::GameServer(e),
            AppError::Frame(e) => e.into(),
            AppError::Storage(e) => e.into(),
        }
    }
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
            ApiError::SeasonNotFound(_) => "season_not_found",
            ApiError::GameNotJoinable(_) => "game_not_joinable",
            ApiError::AlreadyJoined => "already_joined",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::GameServer(_) => "game_server_error",
            ApiError::Overloaded => "overloaded",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
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
            | ApiError::PlayerNotFound(_)
            | ApiError::SeasonNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::GameNotJoinable(_) | ApiError::AlreadyJoined => StatusCode::CONFLICT,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::GameServer(_) => StatusCode::BAD_GATEWAY,
            ApiError::Overloaded | ApiError::StorageUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
        let mut response = (self.status(), Json(self.body())).into_response();
        if let ApiError::Overloaded = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(Logged(self.to_string()));
        response
    }
}

/// An internal error's text, for the request log (see [`super::observe`]).
#[derive(Clone)]
pub struct Logged(pub String);

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
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the service is not ready"),
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
