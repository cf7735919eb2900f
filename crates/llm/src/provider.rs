//! The [`Provider`] trait: one request in, one response out.

use std::fmt;

use async_trait::async_trait;

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::types::{LabelScores, Request, Response, ScoreRequest};

/// Where [`Provider::complete_live`] sends text as it is generated: successive pieces whose
/// concatenation is the response's `text`. A closed receiver means the caller has gone; a
/// provider may stop generating then.
pub type TextSink = tokio::sync::mpsc::UnboundedSender<String>;

/// Something that completes requests: an HTTP endpoint, the embedded model, or a wrapper that
/// adds retries or caching around another provider.
///
/// Implementations must be cheap to share (`Arc<dyn Provider>`) and their futures `Send`, so a
/// server can spawn runs on any thread.
///
/// A wrapper (retries, cache, meter) implements every method, defaulted ones included, by
/// going to its inner provider: a default would silently hide what the inner one can do (label
/// scoring behind retries, a batched evaluation behind a meter). A test in this file wraps a
/// scoring provider in each wrapper of this crate.
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

    /// Whether [`Provider::embed`] is supported.
    fn can_embed(&self) -> bool {
        false
    }

    /// One vector per text, unit length, from the model's own hidden states (mean-pooled), so
    /// a dot product is the cosine similarity. Prompts that pick their demonstrations by
    /// nearest neighbour use it. Unsupported by default.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let _ = texts;
        Err(LlmError::Unsupported {
            model: self.info().name.clone(),
            what: "embeddings".into(),
        })
    }

    /// Complete one request for a caller who is waiting on it (the prompt service), sending the
    /// text to `text` as it is generated.
    ///
    /// The default completes the request whole and sends its text as one piece (HTTP
    /// providers answer whole responses). The embedded model overrides it: concurrent live
    /// requests share decode steps (continuous batching) and each token's text is sent as it is
    /// decoded. Batching makes an answer depend, in the last bits, on its neighbours, so live
    /// answers are never cached and evaluations use [`Provider::complete_batch`], whose scores
    /// are batch-independent.
    async fn complete_live(
        &self,
        request: &Request,
        text: &TextSink,
    ) -> Result<Response, LlmError> {
        let response = self.complete(request).await?;
        // A caller that stopped listening still gets the recorded answer.
        let _ = text.send(response.text.clone());
        Ok(response)
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::cache::{Cached, ResponseCache};
    use crate::limiter::AdaptiveLimiter;
    use crate::meter::{Meter, Metered};
    use crate::retry::Resilient;
    use crate::testing::ScriptedProvider;
    use crate::types::{Prompt, Usage};

    fn scores(request: &ScoreRequest) -> LabelScores {
        let logprobs = (0..request.labels.len())
            .map(|i| -(i as f64) - 1.0)
            .collect();
        let tokens = request.labels.iter().map(|_| 1).collect();
        LabelScores::from_logprobs(logprobs, tokens, Usage::default(), Duration::ZERO, None)
    }

    /// A scoring provider whose first scoring call fails with a retryable error.
    fn scorer() -> Arc<ScriptedProvider> {
        let mut info = ScriptedProvider::new("m").info().clone();
        info.retry.base_delay = Duration::from_millis(1);
        let failed = AtomicUsize::new(0);
        Arc::new(
            ScriptedProvider::new("m")
                .with_info(info)
                .respond_with(|_| Ok("two words".into()))
                .score_with(move |r| {
                    if failed.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(LlmError::Status {
                            model: "scripted:m".into(),
                            status: 503,
                            message: "busy".into(),
                            retry_after: None,
                        });
                    }
                    Ok(scores(r))
                }),
        )
    }

    type Wrap = fn(Arc<dyn Provider>, &ResponseCache) -> Arc<dyn Provider>;

    /// Every wrapper of this crate, alone and stacked the way the hub and a run stack them.
    fn wrappers() -> Vec<(&'static str, Wrap)> {
        fn resilient(p: Arc<dyn Provider>, _: &ResponseCache) -> Arc<dyn Provider> {
            Arc::new(Resilient::new(p, Arc::new(AdaptiveLimiter::new(2))))
        }
        fn cached(p: Arc<dyn Provider>, c: &ResponseCache) -> Arc<dyn Provider> {
            Arc::new(Cached::new(p, c.clone()))
        }
        fn metered(p: Arc<dyn Provider>, _: &ResponseCache) -> Arc<dyn Provider> {
            Metered::wrap(p, Meter::new())
        }
        fn stacked(p: Arc<dyn Provider>, c: &ResponseCache) -> Arc<dyn Provider> {
            metered(cached(resilient(p, c), c), c)
        }
        vec![
            ("Resilient", resilient),
            ("Cached", cached),
            ("Metered", metered),
            ("Metered(Cached(Resilient))", stacked),
        ]
    }

    #[tokio::test]
    async fn every_wrapper_forwards_every_method() {
        let dir = tempfile::tempdir().unwrap();
        for (name, wrap) in wrappers() {
            let cache = ResponseCache::open(&dir.path().join(format!("{name}.sqlite")))
                .await
                .unwrap();
            let inner = scorer();
            let p = wrap(inner.clone(), &cache);
            assert_eq!(p.info(), inner.info(), "{name}: info");
            assert!(p.can_score(), "{name}: can_score");
            let request = ScoreRequest {
                prompt: Prompt::Text("Great film. Sentiment:".into()),
                labels: vec![" positive".into(), " negative".into()],
            };
            let answers = p.score(std::slice::from_ref(&request)).await;
            assert_eq!(answers.len(), 1, "{name}");
            let mut expected = scores(&request);
            let got = match answers.into_iter().next().unwrap() {
                Ok(got) => got,
                // Only a wrapper with retries may hide the scripted first failure.
                Err(e) if !name.contains("Resilient") => {
                    assert!(e.is_retryable(), "{name}: {e}");
                    p.score(std::slice::from_ref(&request))
                        .await
                        .pop()
                        .unwrap()
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                }
                Err(e) => panic!("{name}: score did not arrive: {e}"),
            };
            expected.latency = got.latency;
            assert_eq!(got, expected, "{name}: the inner provider's scores");
            assert_eq!(
                inner.score_calls().len(),
                2,
                "{name}: retried or resent once"
            );
            let batch = p
                .complete_batch(&[crate::Request::text("a"), crate::Request::text("b")])
                .await;
            assert!(batch.iter().all(Result::is_ok), "{name}: complete_batch");
            assert_eq!(inner.calls().len(), 2, "{name}: complete_batch");
            // Live completions reach the inner provider every time (never the cache) and
            // stream its pieces, except through retries, which send the answer whole.
            for round in 1..=2 {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let live = p
                    .complete_live(&crate::Request::text("a"), &tx)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: complete_live: {e}"));
                drop(tx);
                let mut pieces = Vec::new();
                while let Some(piece) = rx.recv().await {
                    pieces.push(piece);
                }
                assert_eq!(pieces.concat(), live.text, "{name}: pieces make the text");
                let expected = if name.contains("Resilient") { 1 } else { 2 };
                assert_eq!(pieces.len(), expected, "{name}: {pieces:?}");
                assert!(!live.cached, "{name}: a live answer is never a cache hit");
                assert_eq!(inner.calls().len(), 2 + round, "{name}: live call {round}");
            }
            assert!(p.can_embed(), "{name}: can_embed");
            let texts = ["a good film".to_string(), "a bad film".to_string()];
            let vectors = p
                .embed(&texts)
                .await
                .unwrap_or_else(|e| panic!("{name}: embed: {e}"));
            assert_eq!(vectors, inner.embed(&texts).await.unwrap(), "{name}: embed");
            assert_eq!(
                inner.embed_calls().len(),
                4,
                "{name}: embedded by the inner one"
            );
        }
    }

    #[tokio::test]
    async fn wrappers_of_a_provider_that_cannot_score_say_so() {
        let dir = tempfile::tempdir().unwrap();
        for (name, wrap) in wrappers() {
            let cache = ResponseCache::open(&dir.path().join(format!("{name}.sqlite")))
                .await
                .unwrap();
            let p = wrap(Arc::new(ScriptedProvider::new("plain")), &cache);
            assert!(!p.can_score(), "{name}");
            let request = ScoreRequest {
                prompt: Prompt::Text("x".into()),
                labels: vec![" a".into()],
            };
            let e = p.score(&[request]).await.pop().unwrap().unwrap_err();
            assert!(matches!(e, LlmError::Unsupported { .. }), "{name}: {e:?}");
        }
    }

    #[test]
    fn api_key_is_redacted_in_debug() {
        let k = ApiKey::new("sk-secret-123");
        assert!(!format!("{k:?}").contains("secret"));
        assert_eq!(k.expose(), "sk-secret-123");
    }
}
