//! Bearer tokens with roles. The secret never reaches the database: a token is looked up by the
//! sha256 of what the caller sent, and the answer is kept for a few seconds so that a busy
//! prompt fetch does not read the token table on every request (a revocation therefore takes
//! effect within [`TOKEN_TTL`]). When an answer goes stale, one request reads the table again
//! while the others are answered from the stale entry, so hundreds of requests in flight at
//! that moment do not all queue for the database.
//!
//! Without tokens (`--insecure-local`, loopback only) every caller is `local` with every role.

use std::collections::{HashMap, HashSet};
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
    ttl: Duration,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    answers: HashMap<String, (Option<Caller>, Instant)>,
    /// Hashes whose stale answer one request is reading again.
    refreshing: HashSet<String>,
}

impl TokenCache {
    pub fn new(store: Arc<dyn ServiceStore>) -> Self {
        Self::with_ttl(store, TOKEN_TTL)
    }

    fn with_ttl(store: Arc<dyn ServiceStore>, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            seen: Mutex::new(Seen::default()),
        }
    }

    pub(crate) async fn caller(&self, secret: &str) -> Result<Option<Caller>, ApiError> {
        let hash = token_hash(secret);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((caller, at)) = seen.answers.get(&hash) {
                let caller = caller.clone();
                if at.elapsed() < self.ttl || !seen.refreshing.insert(hash.clone()) {
                    return Ok(caller);
                }
                // Stale, and this request reads it again.
            }
        }
        let read = self.store.token(&hash).await;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.refreshing.remove(&hash);
        let caller = read
            .map_err(|e| ApiError::internal(format!("cannot read tokens: {e}")))?
            .map(|t| Caller {
                name: t.name,
                role: t.role,
            });
        if seen.answers.len() > 10_000 {
            // Many wrong tokens: forget them rather than grow without bound.
            seen.answers.clear();
        }
        seen.answers.insert(hash, (caller.clone(), Instant::now()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use metaprompt_registry::service::{Token, mint_token};

    #[tokio::test]
    async fn a_stale_token_is_read_again_by_one_request_while_the_others_use_the_stale_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = metaprompt_registry::open_service(dir.path().join("lib.db"))
            .await
            .unwrap();
        let secret = mint_token();
        let token = Token {
            name: "app".into(),
            role: Role::Runner,
            created_at: chrono::Utc::now(),
            created_by: "admin".into(),
            revoked_at: None,
        };
        store.add_token(&token, &token_hash(&secret)).await.unwrap();
        let cache = TokenCache::with_ttl(store.clone(), Duration::from_millis(50));
        let name = |c: Option<Caller>| c.map(|c| c.name);
        assert_eq!(
            name(cache.caller(&secret).await.unwrap()).as_deref(),
            Some("app")
        );
        assert!(store.revoke_token("app", chrono::Utc::now()).await.unwrap());
        // Fresh: the revocation is not seen yet.
        assert!(cache.caller(&secret).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Stale while another request is reading it again: the stale answer.
        let hash = token_hash(&secret);
        cache.seen.lock().unwrap().refreshing.insert(hash.clone());
        assert!(cache.caller(&secret).await.unwrap().is_some());
        cache.seen.lock().unwrap().refreshing.remove(&hash);
        // Stale and nobody reading: this request reads it and sees the revocation, as do the
        // ones after it.
        assert!(cache.caller(&secret).await.unwrap().is_none());
        assert!(cache.caller(&secret).await.unwrap().is_none());
        assert!(cache.seen.lock().unwrap().refreshing.is_empty());
    }
}
