//! From global flags to a ready engine (and its [`Hub`]): config discovery, the cache
//! decision, the library and the author.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use metaprompt_llm::{Config, Hub, ResponseCache};

use crate::args::Global;

/// Load the config (flag, env, working directory, user config dir — in that order).
pub fn load_config(global: &Global) -> anyhow::Result<Config> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    Ok(match Config::discover(global.config.as_deref(), &cwd)? {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    })
}

/// The cache file: flag/env, else config, else the user cache dir.
pub fn cache_path(global: &Global, config: &Config) -> Option<PathBuf> {
    global
        .cache_path
        .clone()
        .or_else(|| config.cache.path.clone())
        .or_else(ResponseCache::default_path)
}

/// Why the cache is off for this run, if it is.
pub fn cache_disabled_by(global: &Global, config: &Config) -> Option<&'static str> {
    if global.no_cache {
        Some("--no-cache / METAPROMPT_NO_CACHE")
    } else if config.cache.enabled == Some(false) {
        Some("[cache] enabled = false")
    } else if cache_path(global, config).is_none() {
        Some("no user cache directory on this system (set METAPROMPT_CACHE)")
    } else {
        None
    }
}

/// The provider hub a command that calls a model directly uses: the engine's, so it is opened
/// one way only (config, cache unless it is off, every provider this binary carries).
pub async fn hub(global: &Global) -> anyhow::Result<Arc<Hub>> {
    Ok(engine(global).await?.hub().clone())
}

/// The engine every job-running command drives: config, cache, library and author from the
/// global flags.
pub async fn engine(global: &Global) -> anyhow::Result<metaprompt_engine::Engine> {
    engine_with(global, load_config(global)?).await
}

/// [`engine`] with a config the command adjusted (flags over the file).
pub async fn engine_with(
    global: &Global,
    config: Config,
) -> anyhow::Result<metaprompt_engine::Engine> {
    let cache = match cache_disabled_by(global, &config) {
        None => cache_path(global, &config),
        Some(_) => None,
    };
    let library = if global.no_library {
        None
    } else {
        Some(crate::commands::library::path(global)?)
    };
    let options = metaprompt_engine::EngineOptions {
        config,
        cache,
        library,
        author: crate::commands::library::author(global),
    };
    Ok(metaprompt_engine::Engine::open(options).await?)
}
