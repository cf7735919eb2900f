//! Bearer tokens with roles. The secret never reaches the database: a token is looked up by the
//! sha256 of what the caller sent, and the answer is kept for a few seconds so that a busy
//! prompt fetch does not read the token table on every request (a revocation therefore takes
//! effect within [`TOKEN_TTL`]).
//!
//! Without tokens (`--insecure-local`, loopback only) every caller is `local` with every role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use metaprompt_registry::ServiceStore;
use metaprompt_registry::service::{Role, token_hash};

use crate::AppState;
use crate::error::ApiError;

/// How long a token lookup is trusted.
pub const TOKEN_TTL: Duration = Duration::from_secs(5);

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Refuse (403) unless the caller has `role` or a higher one.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "the token `{}` has the role `{}`; this needs `{role}` or above",
                    self.name, self.role
                ),
            ))
        }
    }
}

/// How callers are recognized.
#[derive(Debug)]
pub enum Auth {
    Tokens(TokenCache),
    /// Every caller is `local` with every role (`--insecure-local`).
    Open,
}

#[derive(Debug)]
pub struct TokenCache {
    store: Arc<dyn ServiceStore>,
    seen: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
}

impl TokenCache {
    pub fn new(store: Arc<dyn ServiceStore>) -> Self {
        Self {
            store,
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn caller(&self, secret: &str) -> Result<Option<Caller>, ApiError> {
        let hash = token_hash(secret);
        {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((caller, at)) = seen.get(&hash)
                && at.elapsed() < TOKEN_TTL
            {
                return Ok(caller.clone());
            }
        }
        let caller = self
            .store
            .token(&hash)
            .await
            .map_err(|e| ApiError::internal(format!("cannot read tokens: {e}")))?
            .map(|t| Caller {
                name: t.name,
                role: t.role,
            });
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > 10_000 {
            // Many wrong tokens: forget them rather than grow without bound.
            seen.clear();
        }
        seen.insert(hash, (caller.clone(), Instant::now()));
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let cache = match &state.auth {
            Auth::Open => {
                return Ok(Caller {
                    name: "local".into(),
                    role: Role::Admin,
                });
            }
            Auth::Tokens(cache) => cache,
        };
        let unauthorized = |m: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m).param("Authorization")
        };
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(unauthorized(
                "no token: send `Authorization: Bearer <token>` (metaprompt tokens create)",
            ));
        };
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        cache
            .caller(secret)
            .await?
            .ok_or_else(|| unauthorized("unknown or revoked token"))
    }
}
