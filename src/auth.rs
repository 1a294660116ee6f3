//! Who is calling: players (HS256 JWT), game servers (ingest keys) and
//! operators (the admin key), per API.md "Auth".

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::server::AppState;

/// An authenticated player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Player {
    pub user_id: String,
    pub username: String,
}

#[derive(Deserialize)]
struct Claims {
    user_id: Value,
    username: String,
}

/// Checks player tokens.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        validation.leeway = 0;
        JwtVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Verifies a token (HS256, `exp` when present) and reads the player.
    pub fn verify(&self, token: &str) -> Result<Player, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?;
        let user_id = match data.claims.user_id {
            Value::String(s) if !s.is_empty() => s,
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(ApiError::Unauthorized(
                    "claim user_id must be a string or an integer".into(),
                ));
            }
        };
        Ok(Player {
            user_id,
            username: data.claims.username,
        })
    }
}

#[derive(Serialize)]
struct NewClaims<'a> {
    user_id: &'a str,
    username: &'a str,
    exp: u64,
}

/// Signs a player token valid for `ttl_secs` (for the walkthrough and tests).
pub fn mint_token(secret: &str, user_id: &str, username: &str, ttl_secs: u64) -> String {
    let exp = crate::game::now_us() / 1_000_000 + ttl_secs;
    let claims = NewClaims {
        user_id,
        username,
        exp,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

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

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = credential(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Token <jwt>".into()))?;
        app.jwt.verify(token)
    }
}

/// Which products each ingest key admits.
pub struct IngestKeys(HashMap<String, Vec<String>>);

impl IngestKeys {
    pub fn new(products: &[crate::config::ProductConfig]) -> Self {
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        for p in products {
            keys.entry(p.ingest_key.clone())
                .or_default()
                .push(p.product_id.clone());
        }
        IngestKeys(keys)
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
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| ApiError::Unauthorized("unknown ingest key".into()))
    }
}

/// An operator presenting the admin key.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match (&app.config.admin_key, credential(&parts.headers)) {
            (Some(expected), Some(given)) if !expected.is_empty() && expected == given => Ok(Admin),
            _ => Err(ApiError::Unauthorized("admin key required".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_fail() {
        let verifier = JwtVerifier::new("s3cret");
        let token = mint_token("s3cret", "17", "alice", 60);
        assert_eq!(
            verifier.verify(&token).unwrap(),
            Player {
                user_id: "17".into(),
                username: "alice".into()
            }
        );
        assert!(
            verifier
                .verify(&mint_token("other", "17", "alice", 60))
                .is_err()
        );
        assert!(verifier.verify("not.a.jwt").is_err());
    }

    #[test]
    fn integer_user_ids_become_strings_and_expiry_is_enforced() {
        let key = EncodingKey::from_secret(b"k");
        let verifier = JwtVerifier::new("k");
        let int_id = jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"user_id": 23, "username": "bob"}),
            &key,
        )
        .unwrap();
        assert_eq!(verifier.verify(&int_id).unwrap().user_id, "23");
        let expired = jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"user_id": "1", "username": "x", "exp": 1000}),
            &key,
        )
        .unwrap();
        assert!(verifier.verify(&expired).is_err());
        let no_name = jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"user_id": "1"}),
            &key,
        )
        .unwrap();
        assert!(verifier.verify(&no_name).is_err());
    }

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
