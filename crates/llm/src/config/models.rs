//! Providers and models: the wire protocols, provider endpoints and limits, named models, and
//! the resolution of a model spec into a [`ModelInfo`] with every setting decided.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::CatalogEntry;
use crate::error::LlmError;
use crate::pricing::Pricing;
use crate::retry::RetryPolicy;
use crate::types::PromptFormat;

use super::*;

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's chat completions and completions API, and every server that copies it (vLLM,
    /// Ollama, llama.cpp's server, LM Studio, OpenRouter, …).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// The embedded model, in process.
    Local,
}

impl ProviderKind {
    /// Whether requests go over the network (and so get retries and rate limits).
    pub fn is_remote(self) -> bool {
        !matches!(self, ProviderKind::Local)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Required for a provider name that is not built in.
    pub kind: Option<ProviderKind>,
    pub base_url: Option<String>,
    /// The environment variable holding the API key. When set, the variable must exist; when
    /// absent (user-defined providers), no key is sent — right for local servers.
    pub api_key_env: Option<String>,
    // Limits (serde cannot combine `flatten` with `deny_unknown_fields`, so they are spelled
    // out here and in `ModelConfig`; `limits()` gathers them).
    /// Most requests in flight at once; the adaptive limiter starts here and never exceeds it.
    pub concurrency: Option<u32>,
    /// Per-request timeout in seconds.
    pub timeout_secs: Option<f64>,
    /// Retries after the first attempt, for retryable errors (429, 5xx, timeouts, transport
    /// failures, malformed success bodies).
    pub max_retries: Option<u32>,
    /// First backoff delay in milliseconds; doubles each retry, with full jitter.
    pub retry_base_ms: Option<u64>,
    /// Longest `Retry-After` honoured; a longer demanded wait fails the request instead.
    pub max_retry_after_secs: Option<f64>,
    /// Largest response body read, in bytes (default 16 MiB); a larger one fails the request.
    pub max_response_bytes: Option<u64>,
}

/// Settings that a provider sets for all its models and a model may override.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Most requests in flight at once; the adaptive limiter starts here and never exceeds it.
    pub concurrency: Option<u32>,
    /// Per-request timeout in seconds.
    pub timeout_secs: Option<f64>,
    /// Retries after the first attempt, for retryable errors (429, 5xx, timeouts, transport
    /// failures, malformed success bodies).
    pub max_retries: Option<u32>,
    /// First backoff delay in milliseconds; doubles each retry, with full jitter.
    pub retry_base_ms: Option<u64>,
    /// Longest `Retry-After` honoured; a longer demanded wait fails the request instead.
    pub max_retry_after_secs: Option<f64>,
    /// Largest response body read, in bytes (default 16 MiB); a larger one fails the request.
    pub max_response_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Provider name; defaults to the part before `:` of the table key.
    pub provider: Option<String>,
    /// Model name sent to the provider; defaults to the part after `:` of the table key.
    pub model: Option<String>,
    /// `chat` (instruction-tuned) or `text` (base model, completion endpoint).
    pub format: Option<PromptFormat>,
    pub pricing: Option<Pricing>,
    /// The model's context window in tokens. When known, every prompt is checked against it
    /// before a run spends anything. The embedded model's is `[local] context_size`.
    pub context_tokens: Option<u32>,
    // Limits (serde cannot combine `flatten` with `deny_unknown_fields`, so they are spelled
    // out here and in `ModelConfig`; `limits()` gathers them).
    /// Most requests in flight at once; the adaptive limiter starts here and never exceeds it.
    pub concurrency: Option<u32>,
    /// Per-request timeout in seconds.
    pub timeout_secs: Option<f64>,
    /// Retries after the first attempt, for retryable errors (429, 5xx, timeouts, transport
    /// failures, malformed success bodies).
    pub max_retries: Option<u32>,
    /// First backoff delay in milliseconds; doubles each retry, with full jitter.
    pub retry_base_ms: Option<u64>,
    /// Longest `Retry-After` honoured; a longer demanded wait fails the request instead.
    pub max_retry_after_secs: Option<f64>,
    /// Largest response body read, in bytes (default 16 MiB); a larger one fails the request.
    pub max_response_bytes: Option<u64>,
}

macro_rules! limits_of {
    ($t:ty) => {
        impl $t {
            pub fn limits(&self) -> Limits {
                Limits {
                    concurrency: self.concurrency,
                    timeout_secs: self.timeout_secs,
                    max_retries: self.max_retries,
                    retry_base_ms: self.retry_base_ms,
                    max_retry_after_secs: self.max_retry_after_secs,
                    max_response_bytes: self.max_response_bytes,
                }
            }
        }
    };
}
limits_of!(ProviderConfig);

impl Limits {
    /// Each unset field taken from `other`.
    fn or(self, other: Limits) -> Limits {
        Limits {
            concurrency: self.concurrency.or(other.concurrency),
            timeout_secs: self.timeout_secs.or(other.timeout_secs),
            max_retries: self.max_retries.or(other.max_retries),
            retry_base_ms: self.retry_base_ms.or(other.retry_base_ms),
            max_retry_after_secs: self.max_retry_after_secs.or(other.max_retry_after_secs),
            max_response_bytes: self.max_response_bytes.or(other.max_response_bytes),
        }
    }
}
limits_of!(ModelConfig);

/// A model spec with every setting decided: what a provider is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The canonical `provider:model` name.
    pub name: String,
    pub provider: String,
    pub kind: ProviderKind,
    /// The model name sent to the provider (for `local`: a model name or a `.gguf` path).
    pub model: String,
    /// Empty for the local provider.
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub format: PromptFormat,
    /// `None`: unknown, costs are reported as unknown.
    pub pricing: Option<Pricing>,
    pub concurrency: u32,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Largest response body read, in bytes; a larger one fails the request
    /// ([`LlmError::ResponseTooLarge`]).
    pub max_response_bytes: u64,
    /// The context window in tokens, when known (`context_tokens` in config; for the embedded
    /// model, its context size): prompts longer than this are refused before a run starts.
    pub context_tokens: Option<u32>,
}

impl ModelInfo {
    /// A minimal description, for tests and for providers built by hand.
    pub fn new(kind: ProviderKind, model: &str) -> Self {
        Self {
            name: format!("{}:{model}", kind.as_str()),
            provider: kind.as_str().to_string(),
            kind,
            model: model.to_string(),
            base_url: String::new(),
            api_key_env: None,
            format: PromptFormat::Chat,
            pricing: None,
            concurrency: 4,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            context_tokens: None,
        }
    }
}

pub(super) struct Builtin {
    pub(super) kind: ProviderKind,
    pub(super) base_url: &'static str,
    pub(super) base_url_env: Option<&'static str>,
    pub(super) api_key_env: Option<&'static str>,
    pub(super) concurrency: u32,
}

pub(super) fn builtin(name: &str) -> Option<Builtin> {
    Some(match name {
        "openai" => Builtin {
            kind: ProviderKind::Openai,
            base_url: "https://api.openai.com/v1",
            base_url_env: Some("OPENAI_BASE_URL"),
            api_key_env: Some("OPENAI_API_KEY"),
            concurrency: 8,
        },
        "anthropic" => Builtin {
            kind: ProviderKind::Anthropic,
            base_url: "https://api.anthropic.com",
            base_url_env: Some("ANTHROPIC_BASE_URL"),
            api_key_env: Some("ANTHROPIC_API_KEY"),
            concurrency: 4,
        },
        "local" => Builtin {
            kind: ProviderKind::Local,
            base_url: "",
            base_url_env: None,
            api_key_env: None,
            concurrency: 1,
        },
        _ => return None,
    })
}

impl Config {
    /// A provider's effective base URL (untrimmed) and where it came from: the environment
    /// variable of a built-in provider, else `base_url` in the config file, else the built-in
    /// URL. `None` when the provider has none.
    pub fn base_url_of(
        &self,
        provider_name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        let user = self.providers.get(provider_name);
        let base = builtin(provider_name);
        let from_env = base
            .as_ref()
            .and_then(|b| b.base_url_env)
            .and_then(|var| Some((env(var)?, format!("the environment variable {var}"))));
        from_env
            .or_else(|| {
                let url = user.and_then(|p| p.base_url.clone())?;
                Some((
                    url,
                    format!(
                        "`base_url` of [providers.{provider_name}] in {}",
                        self.describe_source()
                    ),
                ))
            })
            .or_else(|| {
                let url = base.as_ref()?.base_url.to_string();
                Some((url, format!("the built-in base URL of `{provider_name}`")))
            })
    }

    /// Resolve a model spec against this config and the environment (`env` looks up a variable).
    pub fn resolve(
        &self,
        spec: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ModelInfo, LlmError> {
        let spec = spec.trim();
        let entry = self.models.get(spec);
        let split = spec.split_once(':');
        let provider_name = entry
            .and_then(|m| m.provider.clone())
            .or_else(|| split.map(|(p, _)| p.to_string()))
            .ok_or_else(|| {
                LlmError::Config(format!(
                    "model `{spec}` is neither `provider:model` (providers: {}) nor a model named in {}",
                    self.provider_names().join(", "),
                    self.describe_source()
                ))
            })?;
        let model = entry
            .and_then(|m| m.model.clone())
            .or_else(|| split.map(|(_, m)| m.to_string()))
            .unwrap_or_default();
        if model.is_empty() {
            return Err(LlmError::Config(format!(
                "model spec `{spec}` names no model after `{provider_name}:`"
            )));
        }
        let user = self.providers.get(&provider_name);
        let base = builtin(&provider_name);
        let kind = match (user.and_then(|p| p.kind), &base) {
            (Some(k), _) => k,
            (None, Some(b)) => b.kind,
            (None, None) => {
                return Err(LlmError::Config(format!(
                    "unknown provider `{provider_name}` in model `{spec}`; known: {} (define others under [providers.NAME] in {})",
                    self.provider_names().join(", "),
                    self.describe_source()
                )));
            }
        };
        let name = format!("{provider_name}:{model}");
        // A table keyed by the canonical name also applies to a named alias of it.
        let by_name = if entry.is_some() {
            None
        } else {
            self.models.get(&name)
        };
        let entry = entry.or(by_name);
        // Where the base URL came from, for an error about it.
        let (base_url, origin) = self.base_url_of(&provider_name, env).ok_or_else(|| {
            LlmError::Config(format!(
                "[providers.{provider_name}] needs a `base_url` (in {})",
                self.describe_source()
            ))
        })?;
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        if kind.is_remote()
            && let Some(problem) = base_url_problem(&base_url)
        {
            return Err(LlmError::Config(format!(
                "model `{spec}`: {origin} is {base_url:?}, which is not a usable base URL: {problem}"
            )));
        }
        let api_key_env = user.and_then(|p| p.api_key_env.clone()).or_else(|| {
            base.as_ref()
                .and_then(|b| b.api_key_env.map(str::to_string))
        });
        // A model's own limits win over its provider's.
        let l = entry
            .map(ModelConfig::limits)
            .unwrap_or_default()
            .or(user.map(ProviderConfig::limits).unwrap_or_default());
        let concurrency = l
            .concurrency
            .or(base.as_ref().map(|b| b.concurrency))
            .unwrap_or(4);
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_retries: l.max_retries.unwrap_or(defaults.max_retries),
            base_delay: l
                .retry_base_ms
                .map_or(defaults.base_delay, Duration::from_millis),
            max_retry_after: l
                .max_retry_after_secs
                .map_or(defaults.max_retry_after, Duration::from_secs_f64),
            ..defaults
        };
        let timeout = l
            .timeout_secs
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
        let format = entry.and_then(|m| m.format).unwrap_or(match kind {
            ProviderKind::Local => self
                .catalog()
                .get(&model)
                .map_or(PromptFormat::Text, CatalogEntry::format),
            _ => PromptFormat::Chat,
        });
        let pricing = entry.and_then(|m| m.pricing).or_else(|| match kind {
            ProviderKind::Local => Some(Pricing::FREE),
            _ => Pricing::builtin(kind.as_str(), &model),
        });
        Ok(ModelInfo {
            name,
            provider: provider_name,
            kind,
            model,
            base_url,
            api_key_env,
            format,
            pricing,
            concurrency,
            timeout,
            retry,
            max_response_bytes: l.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            context_tokens: entry.and_then(|m| m.context_tokens).or(match kind {
                ProviderKind::Local => {
                    Some(self.local.context_size.unwrap_or(DEFAULT_LOCAL_CONTEXT))
                }
                _ => None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn builtin_specs_resolve_with_defaults() {
        let c = Config::default();
        let m = c.resolve("openai:gpt-4o-mini", &no_env).unwrap();
        assert_eq!(m.kind, ProviderKind::Openai);
        assert_eq!(m.base_url, "https://api.openai.com/v1");
        assert_eq!(m.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(m.pricing.unwrap().input_per_mtok, 0.15);
        assert_eq!(m.format, PromptFormat::Chat);
        let a = c
            .resolve("anthropic:claude-3-5-haiku-latest", &no_env)
            .unwrap();
        assert_eq!(a.kind, ProviderKind::Anthropic);
        let l = c.resolve("local:gemma-3-270m", &no_env).unwrap();
        assert_eq!(
            (l.kind, l.format, l.pricing),
            (ProviderKind::Local, PromptFormat::Text, Some(Pricing::FREE))
        );
        // Paths may contain ':' after the first one.
        assert_eq!(
            c.resolve("local:/m/x:y.gguf", &no_env).unwrap().model,
            "/m/x:y.gguf"
        );
    }

    #[test]
    fn embedded_models_take_their_prompt_form_from_the_catalog() {
        let c = Config::default();
        let smol = c.resolve("local:smollm2-135m-instruct", &no_env).unwrap();
        assert_eq!(
            (smol.kind, smol.format),
            (ProviderKind::Local, PromptFormat::Chat)
        );
        let c = Config::parse(&format!(
            "[local.models.mine]\nfile = \"mine.gguf\"\nsha256 = \"{}\"\nurl = \"https://models.example/mine.gguf\"\nformat = \"chat\"\n",
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(
            c.resolve("local:mine", &no_env).unwrap().format,
            PromptFormat::Chat
        );
        assert_eq!(c.catalog().len(), crate::catalog::builtin().len() + 1);
        let upper = Config::parse(&format!(
            "[local.models.mine]\nfile = \"mine.gguf\"\nsha256 = \"{}\"\nurl = \"https://models.example/mine.gguf\"\n",
            "AB".repeat(32)
        ))
        .unwrap();
        assert_eq!(upper.catalog()["mine"].sha256, "ab".repeat(32));
        // A model table still wins over the catalog's form.
        let c =
            Config::parse("[models.\"local:smollm2-135m-instruct\"]\nformat = \"text\"\n").unwrap();
        assert_eq!(
            c.resolve("local:smollm2-135m-instruct", &no_env)
                .unwrap()
                .format,
            PromptFormat::Text
        );
        // Bad entries name the table and the field.
        let e = Config::parse("[local.models.mine]\nfile = \"mine.gguf\"\nsha256 = \"00\"\nurl = \"https://h/x.gguf\"\n")
            .unwrap_err();
        assert!(e.contains("[local.models.mine] sha256"), "{e}");
        let e = Config::parse("[local.models.mine]\nfile = \"mine.gguf\"\nchecksum = \"00\"\n")
            .unwrap_err();
        assert!(e.contains("checksum"), "{e}");
    }

    #[test]
    fn the_context_window_is_known_for_the_embedded_model_and_where_configured() {
        let c = Config::default();
        assert_eq!(
            c.resolve("openai:gpt-4o", &no_env).unwrap().context_tokens,
            None
        );
        let l = c.resolve("local:gemma-3-270m", &no_env).unwrap();
        assert_eq!(l.context_tokens, Some(DEFAULT_LOCAL_CONTEXT));
        let c = Config::parse(
            "[local]\ncontext_size = 1024\n[models.\"openai:gpt-4o\"]\ncontext_tokens = 128000\n",
        )
        .unwrap();
        assert_eq!(
            c.resolve("openai:gpt-4o", &no_env).unwrap().context_tokens,
            Some(128_000)
        );
        assert_eq!(
            c.resolve("local:gemma-3-270m", &no_env)
                .unwrap()
                .context_tokens,
            Some(1024)
        );
        let e = Config::parse("[models.\"openai:gpt-4o\"]\ncontext_tokens = 0\n").unwrap_err();
        assert!(e.contains("context_tokens must be at least 1"), "{e}");
    }

    #[test]
    fn base_url_of_says_where_the_url_came_from() {
        let c = Config::default();
        let env = |k: &str| (k == "OPENAI_BASE_URL").then(|| "http://env/v1".to_string());
        let (url, origin) = c.base_url_of("openai", &env).unwrap();
        assert_eq!(url, "http://env/v1");
        assert!(origin.contains("OPENAI_BASE_URL"), "{origin}");
        let (url, origin) = c.base_url_of("anthropic", &env).unwrap();
        assert_eq!(url, "https://api.anthropic.com");
        assert!(origin.contains("built-in"), "{origin}");
        assert!(c.base_url_of("nope", &env).is_none());
    }

    #[test]
    fn env_base_url_overrides_file() {
        let c = Config::parse("[providers.openai]\nbase_url = \"http://file/v1\"\n").unwrap();
        let env = |k: &str| (k == "OPENAI_BASE_URL").then(|| "http://env/v1/".to_string());
        assert_eq!(
            c.resolve("openai:x", &env).unwrap().base_url,
            "http://env/v1"
        );
        assert_eq!(
            c.resolve("openai:x", &no_env).unwrap().base_url,
            "http://file/v1"
        );
    }

    #[test]
    fn named_models_and_user_providers() {
        let c = Config::parse(
            r#"
[providers.ollama]
kind = "openai"
base_url = "http://localhost:11434/v1"
concurrency = 2
max_response_bytes = 1024

[models.fast]
provider = "ollama"
model = "llama3.2"
format = "text"
pricing = { input_per_mtok = 0.1, output_per_mtok = 0.2 }
timeout_secs = 5

[models."openai:gpt-4o"]
max_retries = 9
pricing = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
"#,
        )
        .unwrap();
        let m = c.resolve("fast", &no_env).unwrap();
        assert_eq!(m.name, "ollama:llama3.2");
        assert_eq!(m.kind, ProviderKind::Openai);
        assert_eq!(m.api_key_env, None);
        assert_eq!(m.concurrency, 2);
        assert_eq!(m.timeout, Duration::from_secs(5));
        assert_eq!(m.format, PromptFormat::Text);
        assert_eq!(m.pricing.unwrap().output_per_mtok, 0.2);
        assert_eq!(m.max_response_bytes, 1024, "from the provider");
        let o = c.resolve("openai:gpt-4o", &no_env).unwrap();
        assert_eq!(o.retry.max_retries, 9);
        assert_eq!(o.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
        assert_eq!(o.pricing.unwrap().input_per_mtok, 1.0);
        assert!(
            c.resolve("ollama:other", &no_env)
                .unwrap()
                .pricing
                .is_none()
        );
    }
}
