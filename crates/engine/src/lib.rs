//! The metaprompt application: one engine that the CLI, a server, an agent and workers all
//! drive. It opens the config, the provider hub (with the embedded model), the response cache
//! and the prompt library once, and runs **owned, serializable requests** ([`EvalRequest`],
//! [`CompareRequest`], [`GenerateRequest`], [`TranslateRequest`], [`OptimizeRequest`]) as
//! [`Handle`]s: a `'static + Send` task with a stream of owned [`Progress`] events, cancellation
//! at the next safe point, and a typed result.
//!
//! ```no_run
//! # async fn demo() -> Result<(), metaprompt_engine::EngineError> {
//! use metaprompt_engine::{Engine, EngineOptions, OptimizeRequest};
//!
//! let engine = Engine::open(EngineOptions::default()).await?;
//! let mut request = OptimizeRequest::new("examples/sst2/task.toml");
//! request.algorithm = "fewshot".into();
//! let run = engine.optimize(request).await?; // checked, projected, not yet started
//! println!("projected ≤ {} metric calls", run.projection().metric_calls);
//! let result = run.start().drive(|event| println!("{event:?}")).await?;
//! println!("kept {} · test {:?}", result.outcome.winner, result.outcome.winner_test);
//! # Ok(()) }
//! ```
//!
//! The data path stays one-directional: request → (task, prompt, models, data) → run
//! (`metaprompt-optimize`, checkpointed through a [`metaprompt_optimize::run::RunStore`]) →
//! artifacts → library → result. An optimization's checkpoint stores its request, so
//! [`Engine::resume`] needs only the run directory — the same request a worker will read from a
//! job queue.
//!
//! - [`request`] — the requests, with their defaults and `deny_unknown_fields`.
//! - [`handle`] — [`Handle`], [`Progress`], [`Reporter`].
//! - `evaluate` — eval and compare; `meta` — generate and translate; `optimize` — optimization
//!   runs (prepare, project, start, resume, finish: artifacts, then the library, then done);
//!   `library` — how results become proposed versions with evidence.
//!
//! Library errors never name a command-line flag: the CLI maps them.

mod evaluate;
pub mod handle;
mod library;
mod meta;
mod optimize;
pub mod request;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use metaprompt_eval::dataset::{self, DatasetError};
use metaprompt_eval::prompt::PromptError;
use metaprompt_eval::task::TaskError;
use metaprompt_eval::{EvalOptions, Example, Scorer, Task};
use metaprompt_llm::{Config, Hub, LlmError, ProviderKind, ResponseCache};
use metaprompt_local::LocalModels;
use metaprompt_optimize::MetaError;
use metaprompt_optimize::run::RunError;
use metaprompt_registry::{RegistryError, Store};
use tokio::sync::OnceCell;

pub use evaluate::{CompareResult, EvalResult};
pub use handle::{Handle, Progress, Reporter};
pub use library::Stored;
pub use meta::{GenerateResult, TranslateResult};
/// What a [`Progress::Round`] carries.
pub use metaprompt_optimize::run::RoundStats;
pub use optimize::{OptimizeResult, PreparedRun, Projection};
pub use request::{
    BudgetRequest, CompareRequest, EvalRequest, GenerateRequest, MetaOptions, OnceOptions,
    OptimizeRequest, Scope, TranslateRequest,
};

/// A name that becomes a library key and a file name, checked before anything is spent.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), EngineError> {
    if metaprompt_eval::name::is_valid(name) {
        Ok(())
    } else {
        Err(EngineError::Invalid {
            field,
            message: format!("{name:?}: {}", metaprompt_eval::name::EXPECTED),
        })
    }
}

pub use metaprompt_eval::stats::BOOTSTRAP_SEED;

/// Everything that can go wrong in a job, each naming the file, model or field involved.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// An example whose prompt does not fit the execution model's context window.
    #[error(transparent)]
    TooLong(#[from] Box<metaprompt_eval::evaluator::TooLong>),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Library(Box<RegistryError>),
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The task's metrics cannot be built.
    #[error("{}: {message}", path.display())]
    Metrics { path: PathBuf, message: String },
    /// A request field holds something unusable.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The result's files are written but the library refused it.
    #[error("the result is in its files, but not in the library {location}")]
    NotStored {
        location: String,
        #[source]
        source: Box<RegistryError>,
    },
    /// Stopped on request; an optimization's run directory resumes.
    #[error("cancelled{}", resume.as_ref().map(|d| format!("; the run in {} resumes from its checkpoint", d.display())).unwrap_or_default())]
    Cancelled { resume: Option<PathBuf> },
    /// A finished run cannot be resumed.
    #[error("the run in {} has finished ({why}); see its report.html", dir.display())]
    Finished { dir: PathBuf, why: String },
    #[error("the job stopped unexpectedly: {0}")]
    Crashed(String),
}

impl From<RegistryError> for EngineError {
    fn from(e: RegistryError) -> Self {
        EngineError::Library(Box::new(e))
    }
}

impl EngineError {
    fn io(path: &Path, what: &'static str, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    }
}

/// How the engine is opened.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub config: Config,
    /// The shared response cache file; `None`: no shared cache (an optimization then replays
    /// from a cache inside its own run directory).
    pub cache: Option<PathBuf>,
    /// The prompt library; `None`: results are not stored.
    pub library: Option<PathBuf>,
    /// Who is acting, as recorded in the library.
    pub author: String,
}

/// The application, opened once and shared (cheap to clone).
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    local: Arc<LocalModels>,
    hub: Arc<Hub>,
    library_path: Option<PathBuf>,
    library: OnceCell<Arc<dyn Store>>,
    author: String,
}

impl Engine {
    /// Open the cache (when configured) and register every provider this build carries.
    pub async fn open(options: EngineOptions) -> Result<Self, EngineError> {
        // Every render in this process (evaluations, optimizations, serving, library adds)
        // runs under the config's `[templates]` limits.
        metaprompt_eval::prompt::set_limits(metaprompt_eval::prompt::TemplateLimits::from_config(
            &options.config.templates,
        ));
        let local = Arc::new(LocalModels::from_config(&options.config));
        let cache = match &options.cache {
            Some(path) => Some(ResponseCache::open(path).await?),
            None => None,
        };
        let hub = Arc::new(hub(&options.config, &local, cache));
        Ok(Self {
            inner: Arc::new(Inner {
                config: options.config,
                local,
                hub,
                library_path: options.library,
                library: OnceCell::new(),
                author: if options.author.trim().is_empty() {
                    "unknown".into()
                } else {
                    options.author
                },
            }),
        })
    }

    /// The provider hub (models open on first use and are shared).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn author(&self) -> &str {
        &self.inner.author
    }

    /// Where results are stored, when they are.
    pub fn library_path(&self) -> Option<&Path> {
        self.inner.library_path.as_deref()
    }

    /// The prompt library, opened on first use; `None` when results are not stored.
    pub async fn library(&self) -> Result<Option<Arc<dyn Store>>, EngineError> {
        let Some(path) = &self.inner.library_path else {
            return Ok(None);
        };
        let store = self
            .inner
            .library
            .get_or_try_init(|| metaprompt_registry::open(path))
            .await?;
        Ok(Some(store.clone()))
    }

    /// A hub like the engine's but with another cache (shares the loaded embedded models).
    fn hub_with_cache(&self, cache: Option<ResponseCache>) -> Hub {
        hub(&self.inner.config, &self.inner.local, cache)
    }

    /// Flush and close what the engine opened (the response cache, the library).
    pub async fn close(&self) {
        if let Some(cache) = self.inner.hub.cache() {
            cache.close().await;
        }
        if let Some(library) = self.inner.library.get() {
            library.close().await;
        }
    }
}

fn hub(config: &Config, local: &Arc<LocalModels>, cache: Option<ResponseCache>) -> Hub {
    Hub::new(config.clone())
        .with_cache(cache)
        .with_factory(ProviderKind::Local, local.factory())
}

/// The task's metrics, with the judge model of an `llm-rubric` metric opened through `wrap`
/// (so a run meters and logs its calls like every other model call).
pub(crate) fn scorer(
    task: &Task,
    hub: &Hub,
    wrap: impl Fn(Arc<dyn metaprompt_llm::Provider>) -> Arc<dyn metaprompt_llm::Provider>,
) -> Result<Scorer, EngineError> {
    let judge = match judge_spec(task) {
        Some(spec) => Some(wrap(hub.model(spec.unwrap_or(&task.config.models.meta))?)),
        None => None,
    };
    Scorer::new(&task.config.metrics, judge).map_err(|e| EngineError::Metrics {
        path: task.path.clone(),
        message: e.to_string(),
    })
}

/// `Some` when a metric needs a judge model, with the model it names (if any).
fn judge_spec(task: &Task) -> Option<Option<&str>> {
    use metaprompt_eval::metric::MetricKind;
    let metrics = &task.config.metrics;
    metrics
        .iter()
        .any(|m| m.kind() == MetricKind::LlmRubric)
        .then(|| metrics.iter().find_map(|m| m.judge_model()))
}

/// Whether the task defines `split` (an explicit file, or a share of the split file).
pub(crate) fn has_split(task: &Task, split: &str) -> bool {
    let d = &task.config.data;
    let explicit = match split {
        "train" => d.train.is_some(),
        "dev" => d.dev.is_some(),
        "test" => d.test.is_some(),
        _ => false,
    };
    explicit || d.split.as_ref().is_some_and(|r| r.contains_key(split))
}

/// The examples of a split the job can do without (train for demonstrations, test for the final
/// evaluation): empty when the task defines no such split, an error (with file and line) when it
/// does and the file is broken.
pub(crate) fn optional_split(task: &Task, split: &str) -> Result<Vec<Example>, EngineError> {
    if has_split(task, split) {
        Ok(task.examples(split)?)
    } else {
        Ok(Vec::new())
    }
}

/// The examples of `split` (the first `limit`, or a seeded sample); an empty split is an error.
pub(crate) fn examples(
    task: &Task,
    split: &str,
    limit: Option<usize>,
    sample_seed: Option<u64>,
) -> Result<Vec<Example>, EngineError> {
    let examples = dataset::take(task.examples(split)?, limit, sample_seed);
    if examples.is_empty() {
        return Err(EngineError::Task(TaskError::File {
            path: task.path.clone(),
            message: format!("split `{split}` has no examples"),
        }));
    }
    Ok(examples)
}

/// Before any call: `prompt` rendered for every one of `examples` fits the context window of
/// `model` (when it is known), leaving room for the output. The one check eval, compare and
/// optimize all make, so a 10 MB row fails at start naming its file and line, instead of being
/// sent whole or failing every call.
pub(crate) fn fits(
    prompt: &metaprompt_eval::PromptFile,
    model: &dyn metaprompt_llm::Provider,
    examples: &[Example],
    options: &EvalOptions,
) -> Result<(), EngineError> {
    metaprompt_eval::evaluator::check_context(prompt, model.info(), examples, options)
        .map_err(EngineError::TooLong)
}

/// How the task's execution model is called.
pub(crate) fn options(task: &Task) -> EvalOptions {
    EvalOptions {
        temperature: task.config.models.execution_temperature,
        max_tokens: task.config.models.max_tokens,
        stop: task.config.models.stop.clone(),
        output: task.config.output.clone(),
        seed: BOOTSTRAP_SEED,
        answer_after: task.config.models.answer_after.clone(),
    }
}

/// A path made absolute against the working directory (kept as given when that fails).
pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Run `fut` unless `cancel` fires first.
pub(crate) async fn cancellable<T>(
    cancel: &tokio_util::sync::CancellationToken,
    fut: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    tokio::select! {
        r = fut => r,
        () = cancel.cancelled() => Err(EngineError::Cancelled { resume: None }),
    }
}

#[cfg(test)]
mod send {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    /// A server spawns jobs on a multi-threaded runtime: preparing and resuming a run must be
    /// `Send` futures (a thread-local RNG held across an await once made them not).
    #[test]
    fn preparing_and_resuming_runs_are_send_futures() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let engine = rt.block_on(Engine::open(EngineOptions::default())).unwrap();
        is_send(&engine.optimize(OptimizeRequest::new("task.toml")));
        is_send(&engine.resume(Path::new("run")));
    }
}
