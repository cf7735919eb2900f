//! Which version serves a reference (a name, a label, a split, a version): resolved against the library and trusted for [`RESOLVE_TTL`].

use crate::error::{self, ApiError, ApiResult};
use metaprompt_eval::prompt::PromptFile;
use metaprompt_registry::Store;
use metaprompt_registry::model::{Version, VersionRef};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// How long a resolved reference is trusted. Label moves through this server are seen at once;
/// moves made elsewhere (the CLI on the same library) within this time.
pub const RESOLVE_TTL: Duration = Duration::from_secs(1);

/// A version ready to serve.
#[derive(Debug)]
pub struct Target {
    pub version: Version,
    /// The label it was reached by.
    pub label: Option<String>,
    pub file: PromptFile,
    /// The input variables its templates use.
    pub variables: Vec<String>,
}

impl Target {
    /// The demonstrations' answer field: the one demo key that is not an input.
    pub fn output_field(&self) -> Option<String> {
        let first = self.file.demo_entries().first()?;
        let mut extra = first.keys().filter(|k| !self.variables.contains(k));
        let field = extra.next()?;
        extra.next().is_none().then(|| field.clone())
    }
}

/// What a reference resolves to: the label's version, and its canary when it has a split.
#[derive(Debug)]
pub(super) struct Resolved {
    pub(super) primary: Arc<Target>,
    pub(super) canary: Option<(Arc<Target>, f64)>,
}

impl Resolved {
    /// The version that serves this request: the canary for `weight` percent of keys (the same
    /// key always lands on the same side), else the label's version. Without a key, at random.
    pub(super) fn pick(&self, name: &str, key: Option<&str>) -> Arc<Target> {
        let Some((canary, weight)) = &self.canary else {
            return self.primary.clone();
        };
        let label = self.primary.label.as_deref().unwrap_or_default();
        let bucket = match key {
            Some(k) => {
                let h = Sha256::digest(format!("{name}\u{0}{label}\u{0}{k}").as_bytes());
                u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) % 10_000
            }
            None => rand::random::<u64>() % 10_000,
        };
        if (bucket as f64) < weight * 100.0 {
            canary.clone()
        } else {
            self.primary.clone()
        }
    }
}

/// Resolves references, keeping answers for [`RESOLVE_TTL`]. When an answer goes stale, one
/// request looks it up again while the others keep being served the stale one (so a busy
/// prompt does not send every request in flight to the library at once, every second).
#[derive(Debug)]
pub struct Resolver {
    pub(super) store: Arc<dyn Store>,
    pub(super) cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
pub(super) struct Cache {
    pub(super) entries: HashMap<String, (Arc<Resolved>, Instant)>,
    /// Keys being looked up again right now.
    pub(super) refreshing: std::collections::HashSet<String>,
}

impl Resolver {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// `name` at `version` (`v3`, a hash prefix) or `label` (default `production`); `param` is
    /// the request part that named them, for errors. A label with a traffic split picks its
    /// canary or its version by `key` (sticky).
    pub async fn resolve(
        &self,
        name: &str,
        label: Option<&str>,
        version: Option<&str>,
        param: &str,
        key: Option<&str>,
    ) -> ApiResult<Arc<Target>> {
        if label.is_some() && version.is_some() {
            return Err(ApiError::invalid(
                param,
                "give `label` or `version`, not both",
            ));
        }
        let (selector, label) = match (label, version) {
            (_, Some(v)) => (v.to_string(), None),
            (l, None) => {
                let l = l.unwrap_or(DEFAULT_LABEL);
                (l.to_string(), Some(l.to_string()))
            }
        };
        let key_s = format!("{name}@{selector}");
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((r, at)) = cache.entries.get(&key_s) {
                let r = r.clone();
                let fresh = at.elapsed() < RESOLVE_TTL;
                if fresh || !cache.refreshing.insert(key_s.clone()) {
                    return Ok(r.pick(name, key));
                }
                // Stale, and this request refreshes it.
            }
        }
        let looked = self.lookup(name, &selector, label, param).await;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.refreshing.remove(&key_s);
        let resolved = match looked {
            Ok(r) => Arc::new(r),
            Err(e) => {
                cache.entries.remove(&key_s);
                return Err(e);
            }
        };
        if cache.entries.len() > 10_000 {
            cache.entries.clear();
        }
        cache
            .entries
            .insert(key_s, (resolved.clone(), Instant::now()));
        Ok(resolved.pick(name, key))
    }

    pub(super) async fn lookup(
        &self,
        name: &str,
        selector: &str,
        label: Option<String>,
        param: &str,
    ) -> ApiResult<Resolved> {
        let lib = |e| error::library(e, param);
        let reference = VersionRef::parse(&format!("{name}@{selector}")).map_err(lib)?;
        let mut canary = None;
        if let Some(w) = &label {
            // A label must be a label here, not a hash prefix that happens to match.
            let labels = self.store.labels(name).await.map_err(lib)?;
            if !labels.iter().any(|l| &l.label == w) {
                let versions = self.store.versions(name).await.map_err(lib)?;
                let known: Vec<String> = labels.iter().map(|l| l.label.clone()).collect();
                let hint = if versions.is_empty() {
                    String::new()
                } else if known.is_empty() {
                    format!(
                        "; it has no labels yet (point one: PUT /v1/prompts/{name}/labels/{w}, or `metaprompt prompts label {name}@v{} {w}`), or ask for a `version`",
                        versions.len()
                    )
                } else {
                    format!(" (labels: {})", known.join(", "))
                };
                return Err(ApiError::not_found(
                    param,
                    format!("prompt `{name}` has no label `{w}`{hint}"),
                ));
            }
            let splits = self.store.splits(name).await.map_err(lib)?;
            if let Some(s) = splits.into_iter().find(|s| &s.label == w) {
                let r = VersionRef::parse(&format!("{name}@{}", s.hash)).map_err(lib)?;
                let v = self.store.resolve(&r).await.map_err(lib)?;
                canary = Some((Arc::new(target(v, label.clone())?), s.weight));
            }
        }
        let version = self.store.resolve(&reference).await.map_err(lib)?;
        Ok(Resolved {
            primary: Arc::new(target(version, label)?),
            canary,
        })
    }

    /// Forget what is cached for a prompt (after a label move here).
    pub fn forget(&self, prompt: &str) {
        let prefix = format!("{prompt}@");
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .retain(|k, _| !k.starts_with(&prefix));
    }
}

pub(super) fn target(version: Version, label: Option<String>) -> ApiResult<Target> {
    let file = version
        .file()
        .map_err(|e| ApiError::internal(format!("stored version {}: {e}", version.reference())))?;
    let variables = file.variables();
    Ok(Target {
        version,
        label,
        file,
        variables,
    })
}
