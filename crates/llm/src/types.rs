//! Requests and responses: the values that cross the provider boundary.
//!
//! A [`Request`] is plain data with a canonical serialized form, so that it can be hashed into a
//! cache key. It never carries credentials: those live in the provider.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// What the model is asked to continue: a chat (instruction-tuned models) or a raw text
/// (base models, completion endpoints).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    Chat(Vec<Message>),
    Text(String),
}

/// Which prompt form a model prefers. Callers that render templates (the evaluator, the meta
/// layer) ask the provider and render accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    /// Messages with roles; the provider applies the model's chat template.
    #[default]
    Chat,
    /// A single text that the model continues (base models).
    Text,
}

impl PromptFormat {
    /// The name config files use.
    pub fn as_str(self) -> &'static str {
        match self {
            PromptFormat::Chat => "chat",
            PromptFormat::Text => "text",
        }
    }
}

/// One request to a model.
///
/// `sample` distinguishes N samples of otherwise identical requests: each sample index is its own
/// cache entry and, where the provider supports seeds, its own reproducible seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub prompt: Prompt,
    pub temperature: f32,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default)]
    pub sample: u32,
}

impl Request {
    /// A deterministic (temperature 0) request with a default output length.
    pub fn new(prompt: Prompt) -> Self {
        Self {
            prompt,
            temperature: 0.0,
            max_tokens: 256,
            stop: Vec::new(),
            seed: None,
            sample: 0,
        }
    }
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Prompt::Text(text.into()))
    }
    pub fn chat(messages: Vec<Message>) -> Self {
        Self::new(Prompt::Chat(messages))
    }
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = n;
        self
    }
    pub fn stop(mut self, s: impl Into<String>) -> Self {
        self.stop.push(s.into());
        self
    }
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    pub fn sample(mut self, index: u32) -> Self {
        self.sample = index;
        self
    }

    /// Why this request cannot be sent as it is, if it cannot: a temperature that is not a
    /// finite number >= 0 ([`temperature_problem`]) or `max_tokens` of 0. HTTP providers check
    /// it before sending (a NaN temperature would reach the server as JSON `null`).
    pub fn problem(&self) -> Option<String> {
        temperature_problem(self.temperature)
            .map(|p| format!("temperature {p}"))
            .or_else(|| max_tokens_problem(self.max_tokens).map(|p| format!("max_tokens {p}")))
    }

    /// The seed sent to the provider: the request's seed mixed with the sample index, so sample
    /// `i` of a seeded request is reproducible and differs from sample `j`. `None` when the
    /// request has no seed.
    pub fn effective_seed(&self) -> Option<u64> {
        self.seed.map(|seed| {
            // splitmix64 of (seed, sample): cheap, well-spread, stable across versions.
            let mut z = seed ^ (u64::from(self.sample)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) & 0x7FFF_FFFF_FFFF_FFFF
        })
    }
}

/// Why `t` cannot be a sampling temperature, if it cannot: NaN and infinities (TOML can write
/// `nan` and `inf`; JSON has neither, so a provider would get `null`) and negative numbers.
/// For messages after the setting's name: "must be a finite number >= 0, got NaN".
pub fn temperature_problem(t: f32) -> Option<String> {
    (!(t.is_finite() && t >= 0.0)).then(|| format!("must be a finite number >= 0, got {t}"))
}

/// Why `n` cannot be a limit on generated tokens, if it cannot (0: nothing could be generated).
pub fn max_tokens_problem(n: u32) -> Option<String> {
    (n == 0).then(|| "must be at least 1, got 0".to_string())
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The provider filtered the content.
    ContentFilter,
    /// Anything else the provider reported, kept verbatim.
    Other(String),
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinishReason::Stop => f.write_str("stop"),
            FinishReason::Length => f.write_str("length"),
            FinishReason::ContentFilter => f.write_str("content_filter"),
            FinishReason::Other(s) => f.write_str(s),
        }
    }
}

/// Token usage as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache, where reported (part of
    /// `input_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_tokens: Option<u64>,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_input_tokens = match (self.cached_input_tokens, o.cached_input_tokens) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
    }
}

/// One response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub text: String,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    /// The model name the provider reported (may be more specific than the one asked for).
    pub model: String,
    /// Wall time of the call that produced this response (for a cache hit: the lookup).
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    /// Cost in US dollars from the model's pricing table; `None` when the model has no known
    /// pricing. A cached response costs `Some(0.0)`.
    pub cost_usd: Option<f64>,
    /// True when served from the response cache.
    #[serde(default)]
    pub cached: bool,
}

/// A request to score a fixed set of continuations ("labels") of a prompt by their
/// log-probabilities, without generating: the cheap and reliable way to classify with a base
/// model. Labels may span several tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScoreRequest {
    pub prompt: Prompt,
    /// The continuations, written as they would follow the prompt (mind the leading space:
    /// `" positive"`).
    pub labels: Vec<String>,
}

/// The scores of each label of a [`ScoreRequest`], in the order given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScores {
    /// Total log-probability of each label's tokens after the prompt: log P(label | prompt).
    pub logprobs: Vec<f64>,
    /// How many tokens each label took.
    pub label_tokens: Vec<u32>,
    /// The distribution over the labels: `logprobs` renormalized to sum to one.
    pub probs: Vec<f64>,
    pub usage: Usage,
    #[serde(with = "duration_ms")]
    pub latency: Duration,
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub cached: bool,
}

impl LabelScores {
    /// Build from per-label log-probabilities (renormalizing them into `probs`).
    pub fn from_logprobs(
        logprobs: Vec<f64>,
        label_tokens: Vec<u32>,
        usage: Usage,
        latency: Duration,
        cost_usd: Option<f64>,
    ) -> Self {
        let max = logprobs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logprobs.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let probs = exp.iter().map(|e| e / sum).collect();
        Self {
            logprobs,
            label_tokens,
            probs,
            usage,
            latency,
            cost_usd,
            cached: false,
        }
    }

    /// The index of the most probable label (the first on a tie).
    pub fn best(&self) -> usize {
        let mut best = 0;
        for (i, p) in self.logprobs.iter().enumerate() {
            if *p > self.logprobs[best] {
                best = i;
            }
        }
        best
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperatures_and_token_limits_that_cannot_be_meant() {
        for t in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.1] {
            assert!(temperature_problem(t).is_some(), "{t}");
            assert!(Request::text("x").temperature(t).problem().is_some(), "{t}");
        }
        for t in [0.0, 0.7, 2.0] {
            assert_eq!(temperature_problem(t), None, "{t}");
        }
        assert_eq!(
            Request::text("x")
                .temperature(f32::NAN)
                .problem()
                .as_deref(),
            Some("temperature must be a finite number >= 0, got NaN")
        );
        assert_eq!(
            Request::text("x").max_tokens(0).problem().as_deref(),
            Some("max_tokens must be at least 1, got 0")
        );
        assert_eq!(Request::text("x").problem(), None);
    }

    #[test]
    fn effective_seed_differs_per_sample_and_is_stable() {
        let a = Request::text("x").seed(7);
        let b = a.clone().sample(1);
        assert_eq!(
            a.effective_seed(),
            Request::text("y").seed(7).effective_seed()
        );
        assert_ne!(a.effective_seed(), b.effective_seed());
        assert_eq!(Request::text("x").effective_seed(), None);
        // Pinned: a change here silently changes every seeded sample a user has cached.
        assert_eq!(a.effective_seed(), Some(1_346_066_267_577_507_604));
    }

    #[test]
    fn label_scores_renormalize() {
        let s = LabelScores::from_logprobs(
            vec![-1.0, -3.0],
            vec![1, 2],
            Usage::default(),
            Duration::ZERO,
            None,
        );
        assert!((s.probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((s.probs[0] - 1.0 / (1.0 + (-2.0f64).exp())).abs() < 1e-12);
        assert_eq!(s.best(), 0);
    }

    #[test]
    fn usage_adds_cached_tokens_only_when_reported() {
        let mut u = Usage {
            input_tokens: 3,
            output_tokens: 1,
            cached_input_tokens: None,
        };
        u += Usage {
            input_tokens: 2,
            output_tokens: 2,
            cached_input_tokens: None,
        };
        assert_eq!(u.cached_input_tokens, None);
        u += Usage {
            input_tokens: 1,
            output_tokens: 0,
            cached_input_tokens: Some(1),
        };
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cached_input_tokens),
            (6, 3, Some(1))
        );
    }
}
