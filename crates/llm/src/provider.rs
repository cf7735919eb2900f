//! The [`Provider`] trait: one request in, one response out.

use std::fmt;

use async_trait::async_trait;

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::types::{LabelScores, Request, Response, ScoreRequest};

/// Something that completes requests: an HTTP endpoint, the embedded model, or a wrapper that
/// adds retries or caching around another provider.
///
/// Implementations must be cheap to share (`Arc<dyn Provider>`) and their futures `Send`, so a
/// server can spawn runs on any thread.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// What this provider is: canonical name, endpoint, prompt format, pricing, limits.
    fn info(&self) -> &ModelInfo;

    /// Complete one request.
    async fn complete(&self, request: &Request) -> Result<Response, LlmError>;

    /// Complete many requests; results come back in the order of `requests`.
    ///
    /// The default sends them concurrently through [`Provider::complete`] (the model's limiter
    /// bounds how many are in flight). The embedded model overrides it to evaluate the batch
    /// with a shared prompt prefix. Callers evaluating a prompt over a dataset should use this.
    async fn complete_batch(&self, requests: &[Request]) -> Vec<Result<Response, LlmError>> {
        futures::future::join_all(requests.iter().map(|r| self.complete(r))).await
    }

    /// Whether [`Provider::score`] is supported.
    fn can_score(&self) -> bool {
        false
    }

    /// Score fixed continuations of each prompt by log-probability (classification without
    /// generation). Unsupported by default.
    async fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<LabelScores, LlmError>> {
        requests
            .iter()
            .map(|_| {
                Err(LlmError::Unsupported {
                    model: self.info().name.clone(),
                    what: "label scoring".into(),
                })
            })
            .collect()
    }
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_is_redacted_in_debug() {
        let k = ApiKey::new("sk-secret-123");
        assert!(!format!("{k:?}").contains("secret"));
        assert_eq!(k.expose(), "sk-secret-123");
    }
}
