//! Retries with exponential backoff and full jitter, honouring `Retry-After`, under the model's
//! adaptive concurrency limit.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::limiter::AdaptiveLimiter;
use crate::provider::Provider;
use crate::types::{LabelScores, Request, Response, ScoreRequest};

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff ceiling; it doubles each retry up to `max_delay`. The actual delay is
    /// drawn uniformly below the ceiling ("full jitter").
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A server-demanded wait longer than this fails the request instead of stalling the run.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0-based), jittered.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max_delay);
        ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
    }
}

/// Wraps a provider with retries and the model's adaptive concurrency limit.
#[derive(Debug)]
pub struct Resilient {
    inner: Arc<dyn Provider>,
    limiter: Arc<AdaptiveLimiter>,
}

impl Resilient {
    pub fn new(inner: Arc<dyn Provider>, limiter: Arc<AdaptiveLimiter>) -> Self {
        Self { inner, limiter }
    }

    pub fn limiter(&self) -> &Arc<AdaptiveLimiter> {
        &self.limiter
    }

    /// Run `call` under a limiter slot, again after a pause while it fails with a retryable
    /// error, within the model's retry policy.
    async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, LlmError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        let policy = self.inner.info().retry;
        let model = &self.inner.info().name;
        let mut retry = 0;
        loop {
            let result = {
                let _permit = self.limiter.acquire().await;
                call().await
            };
            let err = match result {
                Ok(answer) => {
                    self.limiter.on_success();
                    return Ok(answer);
                }
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            if err.is_rate_limit() {
                self.limiter.on_rate_limit(err.retry_after());
            }
            if retry >= policy.max_retries {
                return Err(LlmError::RetriesExhausted {
                    model: model.clone(),
                    attempts: retry + 1,
                    last: Box::new(err),
                });
            }
            let delay = match err.retry_after() {
                Some(wait) if wait > policy.max_retry_after => {
                    return Err(LlmError::WaitTooLong {
                        model: model.clone(),
                        wait,
                        limit: policy.max_retry_after,
                        last: Box::new(err),
                    });
                }
                Some(wait) => wait,
                None => policy.backoff(retry),
            };
            tracing::warn!(model = %model, retry = retry + 1, of = policy.max_retries, ?delay, error = %err, "retrying");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

/// Every method goes to the inner provider. Each request of a batch (completions and label
/// scores alike) is sent as its own call under the model's limiter and retried on its own, so
/// the limit counts requests in flight and one failing request does not resend the others.
/// (The hub wraps only remote providers, which make one call per request anyway.)
#[async_trait]
impl Provider for Resilient {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        self.retrying(|| self.inner.complete(request)).await
    }

    async fn complete_batch(&self, requests: &[Request]) -> Vec<Result<Response, LlmError>> {
        futures::future::join_all(requests.iter().map(|r| self.complete(r))).await
    }

    /// Retried whole: a retry after text had been sent would send it twice, and the remote
    /// providers answer whole responses anyway.
    async fn complete_live(
        &self,
        request: &Request,
        text: &crate::TextSink,
    ) -> Result<Response, LlmError> {
        let response = self.complete(request).await?;
        let _ = text.send(response.text.clone());
        Ok(response)
    }

    fn can_score(&self) -> bool {
        self.inner.can_score()
    }

    async fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<LabelScores, LlmError>> {
        if !self.inner.can_score() {
            return self.inner.score(requests).await;
        }
        let one = requests.iter().map(|request| {
            self.retrying(move || async move {
                let mut answers = self.inner.score(std::slice::from_ref(request)).await;
                match (answers.pop(), answers.is_empty()) {
                    (Some(answer), true) => answer,
                    _ => Err(LlmError::Backend {
                        model: self.inner.info().name.clone(),
                        message: "internal: label scoring answered a batch of one with a \
                                  different number of results"
                            .into(),
                    }),
                }
            })
        });
        futures::future::join_all(one).await
    }

    fn can_embed(&self) -> bool {
        self.inner.can_embed()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        if !self.inner.can_embed() {
            return self.inner.embed(texts).await;
        }
        self.retrying(|| self.inner.embed(texts)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        };
        for retry in 0..30 {
            let d = p.backoff(retry);
            let ceiling =
                Duration::from_millis(100 * (1u64 << retry.min(20))).min(Duration::from_secs(1));
            assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
        }
        let draws: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(draws.len() > 1, "jitter draws differ");
    }
}
