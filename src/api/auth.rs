//! Bearer-token authentication for every `/v1` route.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time, so neither a
//! memory dump of the settings nor response timing gives a token away.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

pub fn token_matches(presented: &str, accepted: &[TokenDigest]) -> bool {
    let presented = digest(presented);
    // Check every token, so timing does not tell which one (or how many) matched.
    accepted
        .iter()
        .fold(subtle::Choice::from(0), |found, t| {
            found | t.ct_eq(&presented)
        })
        .into()
}

pub async fn require_bearer(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(token) if token_matches(token, &state.tokens) => Ok(next.run(req).await),
        _ => Err(ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_by_digest() {
        let accepted = [digest("first-token-0000"), digest("second-token-000")];
        assert!(token_matches("second-token-000", &accepted));
        assert!(!token_matches("second-token-001", &accepted));
        assert!(!token_matches("", &accepted));
        assert!(!token_matches("anything", &[]));
    }
}
