//! A scripted provider for unit tests of code that calls models (feature `testing`; not a
//! user-facing provider). It answers from a queue of scripted replies or from a function of the
//! request, records every request, and reports deterministic usage (whitespace-separated words)
//! and cost from its pricing. Its embeddings are hashed bags of lower-cased words (texts that
//! share words are near), so nearest-neighbour code can be tested without a model.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ModelInfo, ProviderKind};
use crate::error::LlmError;
use crate::pricing::Pricing;
use crate::provider::Provider;
use crate::types::{FinishReason, LabelScores, Prompt, Request, Response, ScoreRequest, Usage};

type Responder = Box<dyn Fn(&Request) -> Result<String, LlmError> + Send + Sync>;
type Scorer = Box<dyn Fn(&ScoreRequest) -> Result<LabelScores, LlmError> + Send + Sync>;

pub struct ScriptedProvider {
    info: ModelInfo,
    script: Mutex<VecDeque<Result<String, LlmError>>>,
    responder: Option<Responder>,
    scorer: Option<Scorer>,
    calls: Mutex<Vec<Request>>,
    score_calls: Mutex<Vec<ScoreRequest>>,
    embed_calls: Mutex<Vec<String>>,
}

impl std::fmt::Debug for ScriptedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedProvider")
            .field("info", &self.info.name)
            .finish_non_exhaustive()
    }
}

impl ScriptedProvider {
    /// A provider named `scripted:<name>` that costs $1 / $2 per million tokens in / out.
    pub fn new(name: &str) -> Self {
        let mut info = ModelInfo::new(ProviderKind::Openai, name);
        info.name = format!("scripted:{name}");
        info.provider = "scripted".into();
        info.pricing = Some(Pricing {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: None,
        });
        Self {
            info,
            script: Mutex::new(VecDeque::new()),
            responder: None,
            scorer: None,
            calls: Mutex::new(Vec::new()),
            score_calls: Mutex::new(Vec::new()),
            embed_calls: Mutex::new(Vec::new()),
        }
    }

    pub fn with_info(mut self, info: ModelInfo) -> Self {
        self.info = info;
        self
    }

    /// Queue a reply; queued replies are used in order before the responder function.
    pub fn reply(self, text: impl Into<String>) -> Self {
        self.lock_script().push_back(Ok(text.into()));
        self
    }

    /// Queue an error.
    pub fn fail(self, error: LlmError) -> Self {
        self.lock_script().push_back(Err(error));
        self
    }

    /// Answer every request (after the queue runs out) with a function of it.
    pub fn respond_with(
        mut self,
        f: impl Fn(&Request) -> Result<String, LlmError> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Some(Box::new(f));
        self
    }

    /// Score labels with a function of the request (without one, scoring is unsupported).
    pub fn score_with(
        mut self,
        f: impl Fn(&ScoreRequest) -> Result<LabelScores, LlmError> + Send + Sync + 'static,
    ) -> Self {
        self.scorer = Some(Box::new(f));
        self
    }

    /// Every text embedded, in order.
    pub fn embed_calls(&self) -> Vec<String> {
        self.embed_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every scoring request received, in order.
    pub fn score_calls(&self) -> Vec<ScoreRequest> {
        self.score_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<Request> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock_script(&self) -> std::sync::MutexGuard<'_, VecDeque<Result<String, LlmError>>> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Dimensions of the scripted embeddings.
const EMBED_DIMS: usize = 64;

/// A hashed bag of lower-cased alphanumeric words, unit length (all zeros for a text without
/// words).
fn hashed_words(text: &str) -> Vec<f32> {
    use std::hash::{Hash, Hasher};
    let mut v = vec![0.0f32; EMBED_DIMS];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        w.to_lowercase().hash(&mut h);
        v[(h.finish() % EMBED_DIMS as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn words(prompt: &Prompt) -> u64 {
    match prompt {
        Prompt::Text(t) => t.split_whitespace().count() as u64,
        Prompt::Chat(m) => m
            .iter()
            .map(|m| m.content.split_whitespace().count() as u64)
            .sum(),
    }
}

#[async_trait]
impl Provider for ScriptedProvider {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.clone());
        let next = self.lock_script().pop_front();
        let text = match (next, &self.responder) {
            (Some(result), _) => result?,
            (None, Some(f)) => f(request)?,
            (None, None) => {
                return Err(LlmError::Unsupported {
                    model: self.info.name.clone(),
                    what: "another call (the script ran out)".into(),
                });
            }
        };
        let usage = Usage {
            input_tokens: words(&request.prompt),
            output_tokens: text.split_whitespace().count() as u64,
            cached_input_tokens: None,
        };
        Ok(Response {
            text,
            finish_reason: FinishReason::Stop,
            usage,
            model: self.info.model.clone(),
            latency: Duration::from_millis(1),
            cost_usd: self.info.pricing.map(|p| p.cost(&usage)),
            cached: false,
        })
    }

    /// Sends the text word by word (each piece keeps its leading space), so tests see a
    /// stream of several pieces through wrappers.
    async fn complete_live(
        &self,
        request: &Request,
        text: &crate::TextSink,
    ) -> Result<Response, LlmError> {
        let response = self.complete(request).await?;
        let mut piece = String::new();
        for c in response.text.chars() {
            if c.is_whitespace() && !piece.trim().is_empty() {
                let _ = text.send(std::mem::take(&mut piece));
            }
            piece.push(c);
        }
        if !piece.is_empty() {
            let _ = text.send(piece);
        }
        Ok(response)
    }

    fn can_score(&self) -> bool {
        self.scorer.is_some()
    }

    async fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<LabelScores, LlmError>> {
        self.score_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(requests.iter().cloned());
        requests
            .iter()
            .map(|r| match &self.scorer {
                Some(f) => f(r),
                None => Err(LlmError::Unsupported {
                    model: self.info.name.clone(),
                    what: "label scoring".into(),
                }),
            })
            .collect()
    }

    fn can_embed(&self) -> bool {
        true
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        self.embed_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(texts.iter().cloned());
        Ok(texts.iter().map(|t| hashed_words(t)).collect())
    }
}
