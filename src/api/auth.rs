//! Who is calling, and may they: bearer tokens on every `/v1` route, each with
//! a name, a [`Role`] and optionally an owner; one table ([`required`]) says
//! what each route needs.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time, so neither a
//! memory dump of the settings nor response timing gives a token away.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::auth::parse_sha256;
use crate::config::{Role, TokenEntry};

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// The caller of a request, as the handlers (and the audit trail) see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name; never the token.
    pub name: String,
    pub role: Role,
    /// Set for a token bound to one owner.
    pub owner: Option<String>,
}

/// An accepted token: its digest and who presents it.
#[derive(Debug, Clone)]
pub struct Credential {
    pub digest: TokenDigest,
    pub principal: Principal,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ReadJobs,
    WriteJobs,
    ReadLive,
    WriteLive,
    Admin,
}

impl Role {
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Jobs => matches!(permission, ReadJobs | WriteJobs),
            Role::Live => matches!(permission, ReadLive | WriteLive),
            Role::Read => matches!(permission, ReadJobs | ReadLive),
        }
    }
}

/// The table: what `method` on the `/v1` route template `route` needs.
/// Anything not named here is for admins.
pub fn required(method: &Method, route: &str) -> Permission {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let area = route
        .trim_start_matches("/v1")
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    match (area, read) {
        ("jobs" | "objects", true) => Permission::ReadJobs,
        ("jobs" | "objects", false) => Permission::WriteJobs,
        ("live", true) => Permission::ReadLive,
        ("live", false) => Permission::WriteLive,
        _ => Permission::Admin,
    }
}

/// Every token the node accepts: the admin tokens of `api_token` (named
/// `admin`, `admin-2`, ...; `admin_tokens` holds them, or the generated one)
/// and the scoped `auth.tokens`.
pub fn credentials(admin_tokens: &[String], scoped: &[TokenEntry]) -> Vec<Credential> {
    let admins = admin_tokens
        .iter()
        .enumerate()
        .map(|(i, token)| Credential {
            digest: digest(token),
            principal: Principal {
                name: if i == 0 {
                    "admin".into()
                } else {
                    format!("admin-{}", i + 1)
                },
                role: Role::Admin,
                owner: None,
            },
        });
    let entries = scoped.iter().filter_map(|entry| {
        let digest = match (&entry.token, &entry.token_sha256) {
            (Some(token), _) => digest(token.expose()),
            (None, Some(hex)) => parse_sha256(hex)?,
            (None, None) => return None,
        };
        Some(Credential {
            digest,
            principal: Principal {
                name: entry.name.clone(),
                role: entry.role,
                owner: entry.owner.clone(),
            },
        })
    });
    admins.chain(entries).collect()
}

/// The principal whose token this is. Every credential is compared, so
/// timing does not tell whether (or which) one matched.
pub fn authenticate<'a>(presented: &str, accepted: &'a [Credential]) -> Option<&'a Principal> {
    let presented = digest(presented);
    let mut found = None;
    for credential in accepted {
        if bool::from(credential.digest.ct_eq(&presented)) {
            found = Some(&credential.principal);
        }
    }
    found
}

/// Authenticates the bearer token, checks its role against [`required`] and
/// hands the [`Principal`] to the handler.
pub async fn require_bearer(
    State(state): State<AppState>,
    mut req: Request,
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
    let principal = presented
        .and_then(|token| authenticate(token, &state.credentials))
        .ok_or(ApiError::Unauthorized)?
        .clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let permission = required(req.method(), &route);
    if !principal.role.allows(permission) {
        tracing::info!(token = %principal.name, role = principal.role.as_str(), %route, "refused: role");
        return Err(ApiError::Forbidden(format!(
            "a token of the `{}` role may not do this",
            principal.role.as_str()
        )));
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(token: &str, name: &str, role: Role) -> Credential {
        Credential {
            digest: digest(token),
            principal: Principal {
                name: name.into(),
                role,
                owner: None,
            },
        }
    }

    #[test]
    fn tokens_match_by_digest() {
        let accepted = [
            credential("first-token-0000", "first", Role::Admin),
            credential("second-token-000", "second", Role::Read),
        ];
        assert_eq!(
            authenticate("second-token-000", &accepted).map(|p| p.name.as_str()),
            Some("second")
        );
        assert!(authenticate("second-token-001", &accepted).is_none());
        assert!(authenticate("", &accepted).is_none());
        assert!(authenticate("anything", &[]).is_none());
    }

    #[test]
    fn each_role_does_what_it_says() {
        let get = Method::GET;
        let post = Method::POST;
        let cases = [
            (&get, "/v1/jobs", [true, true, false, true]),
            (&post, "/v1/jobs", [true, true, false, false]),
            (&post, "/v1/jobs/{id}/cancel", [true, true, false, false]),
            (
                &Method::PUT,
                "/v1/objects/{*key}",
                [true, true, false, false],
            ),
            (&get, "/v1/live/streams/{id}", [true, false, true, true]),
            (&post, "/v1/live/streams", [true, false, true, false]),
            (
                &Method::DELETE,
                "/v1/live/streams/{id}/pins/{pin}",
                [true, false, true, false],
            ),
            (&get, "/v1/audit", [true, false, false, false]),
            (&post, "/v1/erasures", [true, false, false, false]),
        ];
        for (method, route, allowed) in cases {
            let permission = required(method, route);
            for (role, allowed) in [Role::Admin, Role::Jobs, Role::Live, Role::Read]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(
                    role.allows(permission),
                    allowed,
                    "{role:?} {method} {route}"
                );
            }
        }
    }
}
