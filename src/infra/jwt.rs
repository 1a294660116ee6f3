//! Player tokens (API.md "Auth"): HS256 JWTs with `user_id` and
//! `username`, `exp` enforced without leeway. Verification errors are
//! worded for the caller, never the library's internal names.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a token was refused (one line, for the 401 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidToken(pub String);

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
    /// A verifier for tokens signed with `secret`.
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
    pub fn verify(&self, token: &str) -> Result<Player, InvalidToken> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| InvalidToken(describe(e.kind()).into()))?;
        let user_id = match data.claims.user_id {
            Value::String(s) if !s.is_empty() => s,
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(InvalidToken(
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
    let exp = super::clock::now_us() / 1_000_000 + ttl_secs;
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

/// A refusal in words a client can act on.
fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::InvalidSignature => "the token's signature does not match",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token must be signed with HS256"
        }
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_) => {
            "the token lacks the user_id and username claims"
        }
        _ => "the token is not a valid JWT",
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
}
