//! The provider layer of metaprompt: everything between "a request for a model" and "its answer,
//! with usage and cost".
//!
//! The design in one picture — each layer is a [`Provider`], so callers never know which ones
//! are present:
//!
//! ```text
//! Hub::model("openai:gpt-4o-mini")
//!   └─ Cached        persistent SQLite response cache (hits cost $0 and say so)
//!       └─ Resilient retries with backoff + jitter, Retry-After, adaptive concurrency (AIMD)
//!           └─ OpenAi | Anthropic | (local, registered by the embedded-model crate)
//! ```
//!
//! - [`types`] — [`Request`] (chat or raw text, temperature, max tokens, stop, seed, sample index)
//!   and [`Response`] (text, finish reason, usage, latency, cost, cached).
//! - [`config`] — `metaprompt.toml`, strict; model specs resolve to a [`ModelInfo`].
//! - [`catalog`] — the embedded models by name (built in, or `[local.models.NAME]`): file,
//!   source, checksum, prompt form.
//! - [`openai`], [`anthropic`] — one file per wire protocol, owning its wire types.
//! - [`retry`], [`limiter`] — the resilience policy; [`cache`] — the response cache.
//! - [`meter`] — per-layer usage accounting (meta layer apart from execution layer).
//! - [`hub`] — builds and shares providers. No global state: pass the hub (or the
//!   `Arc<dyn Provider>` it returns) explicitly.
//!
//! Errors are typed ([`LlmError`]) and say whether a retry could help. Text in them that came
//! from a server or the network passes through a [`Redactor`] first (servers echo
//! credentials), so no configured key reaches results, logs or stderr.

pub mod anthropic;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod error;
mod http;
pub mod hub;
pub mod limiter;
pub mod meter;
pub mod openai;
pub mod pricing;
pub mod provider;
pub mod redact;
pub mod retry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod types;

pub use cache::{CacheStats, ResponseCache};
pub use config::{Config, ModelInfo, ProviderKind};
pub use error::LlmError;
pub use hub::Hub;
pub use meter::{CallLog, CallRecord, LayerUsage, Meter, Metered};
pub use pricing::Pricing;
pub use provider::{ApiKey, Provider, TextSink};
pub use redact::Redactor;
pub use types::{
    FinishReason, LabelScores, Message, Prompt, PromptFormat, Request, Response, Role,
    ScoreRequest, Usage,
};
