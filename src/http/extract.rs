//! Who is calling (API.md "Auth"), as extractors with typed rejections:
//! players (HS256 JWT), game servers (ingest keys) and operators (the admin
//! key). Keys are compared in constant time.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use super::AppState;
use super::error::ApiError;
use crate::infra::config::ProductConfig;
use crate::infra::jwt::Player;

/// The credential after `Token ` or `Bearer ` in the Authorization header.
fn credential(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer"))
        .then(|| rest.trim())
        .filter(|c| !c.is_empty())
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// Which products each ingest key admits.
pub struct IngestKeys(Vec<(String, Vec<String>)>);

impl IngestKeys {
    /// The keys of the configured products.
    pub fn new(products: &[ProductConfig]) -> Self {
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        for p in products {
            keys.entry(p.ingest_key.clone())
                .or_default()
                .push(p.product_id.clone());
        }
        IngestKeys(keys.into_iter().collect())
    }

    /// The products admitted by the request's key (header or `?key=`).
    pub fn admit(
        &self,
        headers: &HeaderMap,
        query_key: Option<&str>,
    ) -> Result<Vec<String>, ApiError> {
        let key = credential(headers)
            .or(query_key)
            .ok_or_else(|| ApiError::Unauthorized("missing ingest key".into()))?;
        let mut admitted = None;
        for (known, products) in &self.0 {
            if same_secret(known, key) {
                admitted = Some(products.clone());
            }
        }
        admitted.ok_or_else(|| ApiError::Unauthorized("unknown ingest key".into()))
    }
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

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
