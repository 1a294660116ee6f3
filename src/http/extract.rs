//! Who is calling (API.md "Auth"), as extractors with typed rejections:
//! players (HS256 JWT), game servers (ingest keys) and operators (the admin
//! key). Keys are compared in constant time.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::AppState;
use super::error::ApiError;
use crate::app::keys::{IngestKeys, same_secret};
use crate::infra::jwt::Player;

/// The credential after `Token ` or `Bearer ` in the Authorization header.
fn credential(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| rest.trim())
        .filter(|c| !c.is_empty())
}

impl FromRequestParts<AppState> for Player {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = credential(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Token <jwt>".into()))?;
        state
            .jwt
            .verify(token)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))
    }
}

/// The products admitted by the request's ingest key (header or `?key=`).
pub fn admit_ingest(
    keys: &IngestKeys,
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let key = credential(headers)
        .or(query_key)
        .ok_or_else(|| ApiError::Unauthorized("missing ingest key".into()))?;
    keys.admit(key)
        .ok_or_else(|| ApiError::Unauthorized("unknown ingest key".into()))
}

/// An operator presenting the admin key.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match (&state.admin_key, credential(&parts.headers)) {
            (Some(expected), Some(given))
                if !expected.is_empty() && same_secret(expected, given) =>
            {
                Ok(Admin)
            }
            _ => Err(ApiError::Unauthorized("admin key required".into())),
        }
    }
}

/// Parses an optional non-negative integer query parameter.
pub fn uint_param(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "`{name}` must be a non-negative integer, got {v:?}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_schemes() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Token abc".parse().unwrap());
        assert_eq!(credential(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(credential(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(credential(&headers), None);
    }
}
