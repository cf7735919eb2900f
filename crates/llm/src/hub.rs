//! The [`Hub`] turns model specs into ready providers: it resolves the spec against the config,
//! reads the API key from the environment, builds the provider for the spec's wire protocol, and
//! wraps it in retries, the model's adaptive limiter and (unless switched off) the response
//! cache. Each model is opened once per hub and shared, so all callers of one model share one
//! concurrency limit.
//!
//! Adding a wire protocol is one provider file plus one `with_factory` line.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::anthropic::Anthropic;
use crate::cache::{Cached, ResponseCache};
use crate::config::{Config, ModelInfo, ProviderKind};
use crate::error::LlmError;
use crate::limiter::AdaptiveLimiter;
use crate::openai::OpenAi;
use crate::provider::{ApiKey, Provider};
use crate::retry::Resilient;

/// Builds the bare provider for a resolved model.
pub type Factory =
    Arc<dyn Fn(&ModelInfo, Option<ApiKey>) -> Result<Arc<dyn Provider>, LlmError> + Send + Sync>;

type EnvLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct Hub {
    config: Config,
    cache: Option<ResponseCache>,
    env: EnvLookup,
    factories: HashMap<ProviderKind, Factory>,
    opened: Mutex<HashMap<String, Arc<dyn Provider>>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config.source)
            .field("cache", &self.cache.as_ref().map(ResponseCache::path))
            .field("factories", &self.factories.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub with the HTTP providers, the process environment and no cache.
    pub fn new(config: Config) -> Self {
        let openai: Factory = Arc::new(|info, key| Ok(Arc::new(OpenAi::new(info.clone(), key)?)));
        let anthropic: Factory =
            Arc::new(|info, key| Ok(Arc::new(Anthropic::new(info.clone(), key)?)));
        Self {
            config,
            cache: None,
            env: Box::new(|name| std::env::var(name).ok()),
            factories: HashMap::from([
                (ProviderKind::Openai, openai),
                (ProviderKind::Anthropic, anthropic),
            ]),
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// Serve repeated requests from this cache (`None`: no caching).
    pub fn with_cache(mut self, cache: Option<ResponseCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Look environment variables up with this function instead of the process environment.
    pub fn with_env(
        mut self,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.env = Box::new(env);
        self
    }

    /// Register the builder of a wire protocol (the embedded model registers itself this way).
    pub fn with_factory(mut self, kind: ProviderKind, factory: Factory) -> Self {
        self.factories.insert(kind, factory);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn cache(&self) -> Option<&ResponseCache> {
        self.cache.as_ref()
    }

    /// Resolve a spec without opening it.
    pub fn resolve(&self, spec: &str) -> Result<ModelInfo, LlmError> {
        self.config.resolve(spec, &*self.env)
    }

    /// The provider for a spec, opened on first use and shared afterwards.
    pub fn model(&self, spec: &str) -> Result<Arc<dyn Provider>, LlmError> {
        let info = self.resolve(spec)?;
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = opened.get(&info.name) {
            return Ok(p.clone());
        }
        let key = match &info.api_key_env {
            Some(var) => match (self.env)(var).filter(|k| !k.trim().is_empty()) {
                Some(key) => Some(ApiKey::new(key.trim())),
                None => {
                    return Err(LlmError::MissingApiKey {
                        model: info.name.clone(),
                        provider: info.provider.clone(),
                        var: var.clone(),
                    });
                }
            },
            None => None,
        };
        let factory = self.factories.get(&info.kind).ok_or_else(|| {
            LlmError::Config(format!(
                "{}: the `{}` provider is not available in this build",
                info.name,
                info.kind.as_str()
            ))
        })?;
        let mut provider = factory(&info, key)?;
        // Retries and rate limits are HTTP concerns; the embedded model batches in process.
        if info.kind.is_remote() {
            let limiter = Arc::new(AdaptiveLimiter::new(info.concurrency));
            provider = Arc::new(Resilient::new(provider, limiter));
        }
        if let Some(cache) = &self.cache {
            provider = Arc::new(Cached::new(provider, cache.clone()));
        }
        opened.insert(info.name.clone(), provider.clone());
        Ok(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_key_names_the_variable() {
        let hub = Hub::new(Config::default()).with_env(|_| None);
        let e = hub.model("openai:gpt-4o-mini").unwrap_err().to_string();
        assert!(e.contains("OPENAI_API_KEY") && e.contains("not set"), "{e}");
    }

    #[test]
    fn models_are_opened_once_and_shared() {
        let hub = Hub::new(Config::default())
            .with_env(|k| (k == "OPENAI_API_KEY").then(|| "sk-test".into()));
        let a = hub.model("openai:gpt-4o-mini").unwrap();
        let b = hub.model(" openai:gpt-4o-mini").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_bad_base_url_fails_when_the_model_is_opened() {
        let hub = Hub::new(Config::default()).with_env(|k| match k {
            "OPENAI_API_KEY" => Some("sk-test".into()),
            "OPENAI_BASE_URL" => Some("not a url".into()),
            _ => None,
        });
        let e = hub.model("openai:gpt-4o-mini").unwrap_err().to_string();
        assert!(
            e.contains("OPENAI_BASE_URL") && e.contains("\"not a url\""),
            "{e}"
        );
        // A provider built by hand checks its URL too.
        let mut info = ModelInfo::new(ProviderKind::Anthropic, "claude");
        info.base_url = "not a url".into();
        let e = Anthropic::new(info.clone(), None).unwrap_err().to_string();
        assert!(
            e.contains("anthropic:claude") && e.contains("\"not a url\""),
            "{e}"
        );
        info.kind = ProviderKind::Openai;
        assert!(OpenAi::new(info, None).is_err());
    }

    #[test]
    fn local_needs_its_factory() {
        let hub = Hub::new(Config::default());
        let e = hub.model("local:gemma-3-270m").unwrap_err().to_string();
        assert!(e.contains("not available in this build"), "{e}");
    }
}
