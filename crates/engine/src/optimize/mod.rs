//! Optimization runs: a request is prepared (task, prompt, models, data, budget checked; the
//! projected calls and cost known before anything is spent), then started as a [`Handle`].
//! The run checkpoints through a [`RunStore`] (a directory today), and the checkpoint keeps the
//! request itself, so [`Engine::resume`] needs only the run directory.
//!
//! A request's numbers are checked first ([`check_request`]: counts of at least 1, finite
//! temperatures and dollar caps, shares between 0 and 1), then an algorithm that draws from the
//! train split ([`NEEDS_TRAIN`]) is refused on an empty one, all before anything is written.
//!
//! The end of a run: the run's own verdict, then the artifacts (`best.toml`, `report.json`,
//! `report.html`), then the library entry, and only then the checkpoint that says the run is
//! finished (a run stopped before that resumes and writes them).
//!
//! `check.rs` holds the request's checks and the budget it resolves to, `plan.rs` the projected
//! calls and cost, `keep.rs` what the library keeps of a run.

use std::path::{Path, PathBuf};

use metaprompt_eval::settings::RunSettings;
use metaprompt_eval::{PromptFile, Task};
use metaprompt_llm::{Hub, ResponseCache};
use metaprompt_optimize::algo::{self, Optimizer};
use metaprompt_optimize::run::{
    self, Budget, Checkpoint, FsRunStore, Outcome, Problem, RunError, RunStore, Runner, Schedule,
    Settings,
};
use metaprompt_optimize::{Brief, Frame, Guard, Layers, MetaPrompts};
use serde::{Deserialize, Serialize};

use crate::handle::{Handle, Reporter};
use crate::library::Stored;
use crate::request::OptimizeRequest;
use crate::{Engine, EngineError, absolute};

mod check;
mod keep;
mod plan;

pub(crate) use check::{NEEDS_TRAIN, check_request};
use check::{budget, held_out};
use keep::{LibraryInput, library_batch, rationale};
use plan::project;

/// The run's store, holding back the run's last word: the checkpoint that marks the run
/// finished is written only after the artifacts and the library entry, so a run killed in
/// between resumes (straight to its verdict, the test split answered by the cache) and writes
/// them, instead of calling itself finished with no report.
#[derive(Debug)]
struct DoneLast {
    inner: FsRunStore,
    done: std::sync::Mutex<Option<Checkpoint>>,
}

impl DoneLast {
    fn new(inner: FsRunStore) -> Self {
        Self {
            inner,
            done: std::sync::Mutex::new(None),
        }
    }

    fn dir(&self) -> &Path {
        self.inner.dir()
    }

    /// Write the held-back finished checkpoint.
    fn commit(&self) -> Result<(), RunError> {
        let held = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match held {
            Some(cp) => self.inner.save(&cp),
            None => Ok(()),
        }
    }
}

impl RunStore for DoneLast {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn load(&self) -> Result<Option<Checkpoint>, RunError> {
        self.inner.load()
    }
    fn save(&self, cp: &Checkpoint) -> Result<(), RunError> {
        if cp.stop.is_some() {
            *self
                .done
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cp.clone());
            return Ok(());
        }
        self.inner.save(cp)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RunError> {
        self.inner.write(name, bytes)
    }
    fn exists(&self, name: &str) -> bool {
        self.inner.exists(name)
    }
}

/// What a run may spend, projected before it starts.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    /// The search's metric calls at most (the cap).
    pub metric_calls: u64,
    /// The final test evaluation's metric calls (seed and kept prompt, 2 × |test|; retries of
    /// failed calls come on top), outside the cap.
    pub test_calls: u64,
    /// The held-out confirmation's metric calls at most (seed and best, 2 × |confirm|), outside
    /// the cap.
    pub confirm_calls: u64,
    pub meta_calls: u64,
    /// The meta-token cap, when the budget has one (calls then depend on the answers' length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_tokens: Option<u64>,
    /// `None` where a model has no price.
    pub execution_usd: Option<f64>,
    pub meta_usd: Option<f64>,
    pub total_usd: Option<f64>,
}

/// A checked run, ready to start.
#[derive(Debug)]
pub struct PreparedRun {
    engine: Engine,
    request: OptimizeRequest,
    task: Task,
    /// Taken when the run starts (an optimizer is `Send`, not `Sync`).
    optimizer: std::sync::Mutex<Option<Box<dyn Optimizer>>>,
    meta_prompts: MetaPrompts,
    layers: Layers,
    guard: Guard,
    problem: Problem,
    settings: Settings,
    budget: Budget,
    store: DoneLast,
    resume: Option<Checkpoint>,
    /// The run's own hub when it replays from its run directory's cache.
    own_hub: Option<Hub>,
    projection: Projection,
}

/// What an optimization produced (as the server keeps it and the console reads it back).
#[derive(Debug, Serialize, Deserialize)]
pub struct OptimizeResult {
    pub outcome: Outcome,
    pub task: String,
    pub run_dir: PathBuf,
    /// The kept prompt as a plain prompt file (`best.toml`), with its rationale.
    #[serde(skip)]
    pub prompt: PromptFile,
    pub prompt_path: PathBuf,
    pub report_html: PathBuf,
    pub report_json: PathBuf,
    /// Dev examples of the search.
    pub dev_examples: usize,
    /// Dev examples held out of the search for the verdict (0: none).
    pub confirm_examples: usize,
    pub test_examples: usize,
    pub stored: Stored,
}

impl PreparedRun {
    pub fn projection(&self) -> &Projection {
        &self.projection
    }

    /// Whether this continues an interrupted run.
    pub fn resumed(&self) -> bool {
        self.resume.is_some()
    }

    pub fn run_dir(&self) -> &Path {
        self.store.dir()
    }

    /// The request as it will run (and as the checkpoint stores it).
    pub fn request(&self) -> &OptimizeRequest {
        &self.request
    }

    /// `optimize · <task> · <algorithm> · meta <model> · execution <model> · run <dir>`.
    pub fn header(&self) -> String {
        format!(
            "optimize · {} · {} · meta {} · execution {} · run {}",
            self.task.config.name,
            self.request.algorithm,
            self.layers.meta.info().name,
            self.layers.execution.info().name,
            self.store.dir().display()
        )
    }

    /// Start the run.
    pub fn start(self) -> Handle<OptimizeResult> {
        Handle::spawn(move |report, cancel| async move {
            let mut me = self;
            let result = me.drive(&report, cancel).await;
            if let Some(hub) = &me.own_hub
                && let Some(cache) = hub.cache()
            {
                cache.close().await;
            }
            result
        })
    }

    async fn drive(
        &mut self,
        report: &Reporter,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<OptimizeResult, EngineError> {
        let task_path = self.task.path.clone();
        let taken = self
            .optimizer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut optimizer) = taken else {
            return Err(EngineError::Crashed("the run was started twice".into()));
        };
        let runner = Runner {
            meta_prompts: &self.meta_prompts,
            layers: &self.layers,
            guard: &self.guard,
            problem: &self.problem,
            settings: &self.settings,
            budget: &self.budget,
            task: &task_path,
            store: &self.store,
            observe: &|e| report.event(e),
            cancel,
        };
        let outcome = match run::run(optimizer.as_mut(), runner, self.resume.take()).await {
            Ok(o) => o,
            Err(RunError::Cancelled { .. }) => {
                return Err(EngineError::Cancelled {
                    resume: Some(self.store.dir().to_path_buf()),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.finish(outcome).await
    }

    /// Artifacts, then the library.
    async fn finish(&self, outcome: Outcome) -> Result<OptimizeResult, EngineError> {
        let winner = outcome
            .entry(&outcome.winner)
            .map(|e| e.prompt.clone())
            .unwrap_or_default();
        let name = self
            .request
            .name
            .clone()
            .unwrap_or_else(|| self.task.config.name.clone());
        let mut prompt = winner;
        // Candidates inherit the seed file's `name`; the kept prompt is named as the library
        // stores it (the candidate id is in the rationale).
        prompt.name.clone_from(&name);
        prompt.rationale = Some(rationale(&outcome, &self.task));
        prompt.target_model = Some(self.layers.execution.info().name.clone());
        // What was evaluated is what is served: the settings the run scored it with.
        prompt.run = Some(RunSettings::scored(&self.task, prompt.run.as_ref()));
        let dir = self.store.dir().to_path_buf();
        self.store
            .write("best.toml", prompt.to_toml()?.as_bytes())?;
        let json = serde_json::to_vec_pretty(&outcome).map_err(|e| {
            EngineError::io(
                &dir.join("report.json"),
                "cannot write",
                std::io::Error::other(e),
            )
        })?;
        self.store.write("report.json", &json)?;
        let html = metaprompt_optimize::report::html(&outcome, &self.task.config.name);
        self.store.write("report.html", html.as_bytes())?;
        let batch = library_batch(&LibraryInput {
            author: self.engine.author(),
            name: &name,
            task: &self.task,
            outcome: &outcome,
            problem: &self.problem,
            winner: &prompt,
            model: &self.layers.execution.info().name,
            dir: &dir,
            settings: &self.settings,
            budget: &self.budget,
        })?;
        let stored = if self.request.store {
            self.engine.store(batch).await?
        } else {
            Stored::Off
        };
        self.store.commit()?;
        Ok(OptimizeResult {
            task: self.task.config.name.clone(),
            prompt_path: dir.join("best.toml"),
            report_html: dir.join("report.html"),
            report_json: dir.join("report.json"),
            run_dir: dir,
            prompt,
            dev_examples: self.problem.dev.len(),
            confirm_examples: self.problem.confirm.len(),
            test_examples: self.problem.test.len(),
            outcome,
            stored,
        })
    }
}

impl Engine {
    /// Check an optimization request and project its cost; nothing is spent until
    /// [`PreparedRun::start`].
    pub async fn optimize(&self, request: OptimizeRequest) -> Result<PreparedRun, EngineError> {
        check_request(&request)?;
        let mut request = request;
        request.task = absolute(&request.task);
        request.prompt = request.prompt.as_deref().map(absolute);
        request.meta.templates = request.meta.templates.as_deref().map(absolute);
        let task = Task::load(&request.task)?;
        let dir = match &request.run_dir {
            Some(d) => d.clone(),
            None => default_run_dir(&task, &request.algorithm),
        };
        request.run_dir = Some(absolute(&dir));
        let budget = budget(&request, &task);
        let settings = Settings {
            max_unscored: request
                .max_unscored
                .unwrap_or(Settings::default().max_unscored),
            // What a resume rebuilds the run from: never a null in its place.
            invocation: serde_json::to_value(&request).map_err(|e| EngineError::Invalid {
                field: "request",
                message: format!("cannot be recorded for a resume: {e}"),
            })?,
            seed: request.meta.seed,
            rounds: request.rounds,
            patience: request.patience.max(1),
            schedule: Schedule {
                explore: request.explore,
                exploit: request.exploit,
            },
            per_round: request.per_round.max(1),
            minibatch: request.minibatch.max(1),
            demos: request.demos,
            proxy: request.proxy,
            max_prompt_tokens: request.max_prompt_tokens,
            worked: !request.no_worked,
        };
        self.prepare(request, task, dir, settings, budget, None)
            .await
    }

    /// Continue the run in `dir` from its last checkpoint, with the request, settings and
    /// budget it started with.
    pub async fn resume(&self, dir: &Path) -> Result<PreparedRun, EngineError> {
        let store = FsRunStore::new(dir.to_path_buf());
        let Some(cp) = store.load()? else {
            return Err(EngineError::Invalid {
                field: "run directory",
                message: format!("{} holds no checkpoint", dir.display()),
            });
        };
        if let Some(stop) = cp.stop {
            return Err(EngineError::Finished {
                dir: dir.to_path_buf(),
                why: stop.describe().to_string(),
            });
        }
        let request: OptimizeRequest = serde_json::from_value(cp.settings.invocation.clone())
            .map_err(|e| EngineError::Invalid {
                field: "checkpoint",
                message: format!(
                    "{}: its request is unreadable ({e}); it was written by another version of metaprompt",
                    store.location()
                ),
            })?;
        let task = Task::load(&request.task)?;
        let (settings, budget) = (cp.settings.clone(), cp.budget.clone());
        self.prepare(request, task, dir.to_path_buf(), settings, budget, Some(cp))
            .await
    }

    async fn prepare(
        &self,
        request: OptimizeRequest,
        task: Task,
        dir: PathBuf,
        settings: Settings,
        budget: Budget,
        resume: Option<Checkpoint>,
    ) -> Result<PreparedRun, EngineError> {
        let optimizer = algo::by_name(&request.algorithm).ok_or_else(|| EngineError::Invalid {
            field: "algorithm",
            message: format!(
                "unknown algorithm `{}`; the algorithms are {}",
                request.algorithm,
                algo::NAMES.join(", ")
            ),
        })?;
        // An algorithm that draws from the train split needs examples there, known before
        // anything is written (the split is loaded once, here).
        let train = crate::optional_split(&task, "train")?;
        if train.is_empty() && NEEDS_TRAIN.contains(&request.algorithm.as_str()) {
            return Err(EngineError::Invalid {
                field: "algorithm",
                message: format!(
                    "`{}` draws demonstrations or examples from the train split, and split `train` of {} {}; give the task a train split (or choose another algorithm, such as `opro`, `protegi` or `gepa`)",
                    request.algorithm,
                    task.path.display(),
                    if crate::has_split(&task, "train") {
                        "has no examples"
                    } else {
                        "is not defined"
                    }
                ),
            });
        }
        // Every place a result goes is checked before anything is spent.
        if let Some(name) = &request.name {
            crate::check_name("name", name)?;
        }
        self.library().await?;
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, "cannot create", e))?;
        let store = DoneLast::new(FsRunStore::new(dir.clone()));
        // Without a shared cache, the run replays from a cache in its own directory.
        let own_hub = match self.hub().cache() {
            Some(_) => None,
            None => {
                let path = dir.join("calls.sqlite");
                Some(self.hub_with_cache(Some(ResponseCache::open(&path).await?)))
            }
        };
        let hub = own_hub.as_ref().unwrap_or(self.hub());
        let models = &task.config.models;
        let execution = hub.model(request.model.as_deref().unwrap_or(&models.execution))?;
        let meta_model = hub.model(request.meta.meta.as_deref().unwrap_or(&models.meta))?;
        let log_path = dir.join("calls.jsonl");
        let log = metaprompt_llm::CallLog::append(&log_path)
            .map_err(|e| EngineError::io(&log_path, "cannot open the call log", e))?;
        let layers = Layers::logged(meta_model, execution, log);
        let meta_prompts = crate::meta::meta_prompts(&request.meta, Some(&task))?;
        let guard = crate::meta::guard(&request.meta, self, &layers)?;
        let brief = Brief::from_task(&task);
        let seed_prompt = match &request.prompt {
            Some(p) => PromptFile::load(p)?,
            None => task.seed_prompt.clone(),
        };
        let test = match request.test_limit {
            Some(0) => Vec::new(),
            limit => {
                metaprompt_eval::dataset::take(crate::optional_split(&task, "test")?, limit, None)
            }
        };
        let (dev, confirm) = held_out(
            crate::examples(&task, "dev", request.dev_limit, None)?,
            request.hold_out,
        )?;
        let problem = Problem {
            frame: Frame::of(&seed_prompt, &brief),
            constraints: crate::meta::constraints(
                Some(&task),
                Some(&seed_prompt),
                &request.meta.constraints,
            ),
            seed_prompt,
            train,
            dev,
            confirm,
            test,
            scorer: crate::scorer(&task, hub, |p| layers.also_meta(p))?,
            options: crate::options(&task),
            brief,
        };
        // Every example the run may send, checked against the execution model's context.
        for examples in [
            &problem.train,
            &problem.dev,
            &problem.confirm,
            &problem.test,
        ] {
            crate::fits(
                &problem.seed_prompt,
                layers.execution.as_ref(),
                examples,
                &problem.options,
            )?;
        }
        let projection = project(&problem, &budget, &settings, &layers);
        Ok(PreparedRun {
            engine: self.clone(),
            request,
            task,
            optimizer: std::sync::Mutex::new(Some(optimizer)),
            meta_prompts,
            layers,
            guard,
            problem,
            settings,
            budget,
            store,
            resume,
            own_hub,
            projection,
        })
    }
}

fn default_run_dir(task: &Task, algo: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    task.dir()
        .join("runs")
        .join(metaprompt_eval::name::slug(&format!(
            "{}-{algo}-{secs}",
            task.config.name
        )))
}
