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

use std::path::{Path, PathBuf};

use metaprompt_eval::settings::RunSettings;
use metaprompt_eval::{PromptFile, Task};
use metaprompt_llm::{Hub, ModelInfo, ResponseCache, Usage};
use metaprompt_optimize::algo::{self, Optimizer};
use metaprompt_optimize::run::{
    self, Budget, Checkpoint, FsRunStore, Outcome, Problem, RunError, RunStore, Runner, Schedule,
    Settings,
};
use metaprompt_optimize::{Brief, Frame, Guard, Layers, MetaPrompts};
use metaprompt_registry::{Batch, NewVersion, Origin, Run, RunCandidate};
use serde::Serialize;

use crate::handle::{Handle, Reporter};
use crate::library::{self, Stored};
use crate::request::OptimizeRequest;
use crate::{Engine, EngineError, absolute};

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

/// What an optimization produced.
#[derive(Debug, Serialize)]
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
    pub dev_examples: usize,
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
        prompt.run = Some(RunSettings::of_task(&self.task));
        let dir = self.store.dir().to_path_buf();
        self.store.write("best.toml", prompt.to_toml().as_bytes())?;
        let json = serde_json::to_vec_pretty(&outcome).unwrap_or_default();
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
        });
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
            invocation: serde_json::to_value(&request).unwrap_or_default(),
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
        let problem = Problem {
            frame: Frame::of(&seed_prompt, &brief),
            constraints: crate::meta::constraints(
                Some(&task),
                Some(&seed_prompt),
                &request.meta.constraints,
            ),
            seed_prompt,
            train,
            dev: crate::examples(&task, "dev", request.dev_limit, None)?,
            test,
            scorer: crate::scorer(&task, hub, |p| layers.also_meta(p))?,
            options: crate::options(&task),
            brief,
        };
        // Every example the run may send, checked against the execution model's context.
        for examples in [&problem.train, &problem.dev, &problem.test] {
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

/// The algorithms that draw from the train split: demonstrations (`fewshot`, `mipro`) or the
/// examples instructions are induced from (`ape`, `mipro`). On an empty one they could only
/// stop at once or induce from nothing.
pub(crate) const NEEDS_TRAIN: &[&str] = &["fewshot", "ape", "mipro"];

/// The numbers of a request that cannot be meant, whoever sent it (flags, an HTTP body, a
/// checkpoint): counts of 0 where a run needs at least one, temperatures that are not finite
/// numbers >= 0, dollar caps that are negative or not finite, a share outside [0, 1].
pub(crate) fn check_request(r: &OptimizeRequest) -> Result<(), EngineError> {
    let invalid =
        |field: &'static str, message: String| Err(EngineError::Invalid { field, message });
    for (field, n, what) in [
        ("rounds", r.rounds, "rounds to run"),
        (
            "patience",
            r.patience,
            "rounds without improvement before stopping",
        ),
        (
            "per_round",
            r.per_round as usize,
            "candidates proposed per round",
        ),
        (
            "minibatch",
            r.minibatch,
            "dev examples of the first racing rung",
        ),
    ] {
        if n == 0 {
            return invalid(field, format!("must be at least 1 ({what}), got 0"));
        }
    }
    if r.demos == 0 && r.algorithm == "fewshot" {
        return invalid(
            "demos",
            "must be at least 1 for `fewshot`, which searches demonstrations, got 0".into(),
        );
    }
    for (field, t) in [("explore", r.explore), ("exploit", r.exploit)] {
        if let Some(p) = metaprompt_llm::types::temperature_problem(t) {
            return invalid(field, format!("a meta temperature {p}"));
        }
    }
    for (field, usd) in [
        ("max_cost_usd", r.budget.max_cost_usd),
        ("max_meta_cost_usd", r.budget.max_meta_cost_usd),
    ] {
        if let Some(usd) = usd
            && !(usd.is_finite() && usd >= 0.0)
        {
            return invalid(
                field,
                format!("a dollar cap must be a finite number, 0 or more, got {usd}"),
            );
        }
    }
    if let Some(m) = r.max_unscored
        && !(0.0..=1.0).contains(&m)
    {
        return invalid(
            "max_unscored",
            format!("{m} is not a share between 0 and 1"),
        );
    }
    if r.max_prompt_tokens == Some(0) {
        return invalid(
            "max_prompt_tokens",
            "a cap of 0 tokens admits no prompt".into(),
        );
    }
    Ok(())
}

/// Caps: the request's, else the task's `[budget]`, else the defaults.
fn budget(r: &OptimizeRequest, task: &Task) -> Budget {
    let t = &task.config.budget;
    let b = &r.budget;
    let d = Budget::default();
    let max_meta_tokens = b.max_meta_tokens.or(t.max_meta_tokens);
    Budget {
        max_metric_calls: b
            .max_metric_calls
            .or(t.max_metric_calls)
            .unwrap_or(d.max_metric_calls),
        // A token cap alone replaces the default call cap: it is the budget then.
        max_meta_calls: b.max_meta_calls.or(t.max_meta_calls).unwrap_or(
            if max_meta_tokens.is_some() {
                u64::MAX
            } else {
                d.max_meta_calls
            },
        ),
        max_meta_tokens,
        max_meta_cost_usd: b.max_meta_cost_usd.or(t.max_meta_cost_usd),
        max_cost_usd: b.max_cost_usd.or(t.max_cost_usd),
        max_wall_secs: b.max_wall_secs.or(t.max_wall_secs),
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

/// The projected calls and cost: tokens per execution from the seed prompt rendered on a few
/// dev examples (4 characters a token, 1.5x for safety), the caps as call counts.
fn project(problem: &Problem, budget: &Budget, settings: &Settings, layers: &Layers) -> Projection {
    let format = layers.execution.info().format;
    let sample: Vec<usize> = problem
        .dev
        .iter()
        .take(8)
        .filter_map(|e| {
            let mut vars = e.vars.clone();
            vars.remove(&problem.options.output);
            problem
                .seed_prompt
                .longest()
                .render(&vars, format, Some(&problem.options.output))
                .ok()
                .map(|p| match p {
                    metaprompt_llm::Prompt::Text(t) => t.len(),
                    metaprompt_llm::Prompt::Chat(m) => m.iter().map(|m| m.content.len()).sum(),
                })
        })
        .collect();
    let per_call_in = sample.iter().sum::<usize>() as f64 / sample.len().max(1) as f64 / 4.0 * 1.5;
    let metric_calls = budget.max_metric_calls;
    let test_calls = 2 * problem.test.len() as u64;
    let executions = (metric_calls + test_calls) as f64;
    let meta_calls = budget
        .max_meta_calls
        .min(settings.rounds as u64 * u64::from(settings.per_round) * 2);
    let price = |p: &ModelInfo, input: f64, output: f64| {
        p.pricing.map(|pr| {
            pr.cost(&Usage {
                input_tokens: input as u64,
                output_tokens: output as u64,
                cached_input_tokens: None,
            })
        })
    };
    let execution_usd = price(
        layers.execution.info(),
        per_call_in * executions,
        f64::from(problem.options.max_tokens) * executions,
    );
    let meta_usd = price(
        layers.meta.info(),
        2000.0 * meta_calls as f64,
        300.0 * meta_calls as f64,
    );
    Projection {
        metric_calls,
        test_calls,
        meta_calls,
        meta_tokens: budget.max_meta_tokens,
        execution_usd,
        meta_usd,
        total_usd: execution_usd.zip(meta_usd).map(|(a, b)| a + b),
    }
}

/// Why the kept prompt is kept, in a sentence or two (the prompt file's rationale).
fn rationale(o: &Outcome, task: &Task) -> String {
    let mut s = format!(
        "`metaprompt optimize --algo {}` on task {}: ",
        o.algorithm, task.config.name
    );
    s.push_str(&o.verdict());
    s.push('.');
    if let Some(t) = &o.winner_test {
        s.push_str(&format!(
            " Test: {:.3} [{:.3}, {:.3}] (n = {}).",
            t.mean, t.low, t.high, t.n
        ));
    }
    s
}

struct LibraryInput<'a> {
    author: &'a str,
    name: &'a str,
    task: &'a Task,
    outcome: &'a Outcome,
    problem: &'a Problem,
    winner: &'a PromptFile,
    model: &'a str,
    dir: &'a Path,
    settings: &'a Settings,
    budget: &'a Budget,
}

/// What the library keeps of a run: the seed as a person's version with its scores, the winner
/// (unless the seed was kept) as a proposed version with its evidence against the seed, and the
/// run with every candidate it considered.
fn library_batch(i: &LibraryInput<'_>) -> Batch {
    let o = i.outcome;
    let now = chrono::Utc::now();
    let run_id = library::run_id(i.name, &o.algorithm, now);
    let run_ref = Some(run_id.as_str());
    // The seed as it was scored: on the execution model, with the task's run settings.
    let mut seed_file = i.problem.seed_prompt.clone();
    seed_file.target_model = Some(i.model.to_string());
    seed_file.run = Some(RunSettings::of_task(i.task));
    let seed_hash = metaprompt_registry::content::hash(&seed_file);
    let mut seed = NewVersion::new(i.name, seed_file, Origin::Human, i.author);
    seed.message = Some(format!("the seed prompt of {}", i.task.path.display()));
    let mut seed_evidence = vec![library::evidence(
        i.task,
        "dev",
        i.model,
        &o.seed_dev,
        None,
        None,
        run_ref,
    )];
    if let Some(t) = &o.seed_test {
        seed_evidence.push(library::evidence(
            i.task, "test", i.model, t, None, None, run_ref,
        ));
    }
    let mut versions = vec![(seed, seed_evidence)];
    if !o.kept_seed {
        let entry = o.entry(&o.winner);
        let mut won = NewVersion::new(i.name, i.winner.clone(), Origin::Optimize, i.author);
        won.parents = vec![seed_hash.clone()];
        won.run = Some(run_id.clone());
        won.message = Some(format!(
            "optimize · {} · {} (round {})",
            o.algorithm,
            entry.map_or("?", |e| e.op.as_str()),
            entry.map_or(0, |e| e.round)
        ));
        let constraint_rejections = o
            .rejected
            .iter()
            .filter(|r| r.why.iter().any(|w| w.contains("constraint")))
            .count();
        won.checks = Some(serde_json::json!({
            "constraints": i.problem.constraints,
            "passed": true,
            "how": "every candidate entered the pool only after the render check and the protected-constraint guardrail",
            "rejected_in_run": o.rejected.len(),
            "rejected_for_constraints": constraint_rejections,
        }));
        let mut evidence = vec![library::evidence(
            i.task,
            "dev",
            i.model,
            &o.best_dev,
            Some((&seed_hash, &o.dev_test)),
            None,
            run_ref,
        )];
        if let (Some(t), Some(p)) = (&o.winner_test, &o.test_paired) {
            evidence.push(library::evidence(
                i.task,
                "test",
                i.model,
                t,
                Some((&seed_hash, p)),
                None,
                run_ref,
            ));
        }
        versions.push((won, evidence));
    }
    let wall = chrono::Duration::milliseconds((o.wall_secs * 1000.0) as i64);
    let mut candidates: Vec<RunCandidate> = o
        .pool
        .iter()
        .map(|e| RunCandidate {
            id: e.id.clone(),
            hash: metaprompt_registry::content::hash(&e.prompt),
            content: e.prompt.to_toml(),
            parents: e.parents.clone(),
            op: e.op.clone(),
            round: e.round as u32,
            status: if e.id == o.winner {
                "winner".into()
            } else {
                "evaluated".into()
            },
            mean: e.mean(),
            n: e.scores.len() as u64,
            detail: serde_json::json!({}),
        })
        .collect();
    candidates.extend(o.rejected.iter().map(|r| RunCandidate {
        id: r.id.clone(),
        hash: String::new(),
        content: r.instruction.clone().unwrap_or_default(),
        parents: Vec::new(),
        op: r.op.clone(),
        round: r.round as u32,
        status: "rejected".into(),
        mean: None,
        n: 0,
        detail: serde_json::json!({ "why": r.why }),
    }));
    let run = Run {
        id: run_id.clone(),
        kind: Origin::Optimize,
        prompt: i.name.into(),
        task: Some(i.task.path.display().to_string()),
        algorithm: Some(o.algorithm.clone()),
        started_at: now - wall,
        finished_at: now,
        dir: Some(i.dir.display().to_string()),
        author: i.author.to_string(),
        config: serde_json::json!({ "settings": i.settings, "budget": i.budget }),
        usage: serde_json::json!({ "meta": o.meta_usage, "execution": o.execution_usage }),
        summary: serde_json::json!({
            "stop": o.stop,
            "kept_seed": o.kept_seed,
            "winner": o.winner,
            "best": o.best,
            "metric_calls": o.metric_calls,
            "test_calls": o.test_calls,
            "meta_calls": o.meta_calls,
            "saved_calls": o.saved_calls,
            "rounds": o.rounds.len(),
            "candidates": candidates.len(),
            // As `optimize` and the console count them: evaluated (the seed included), and
            // rejected before evaluation.
            "evaluated": o.pool.len(),
            "rejected": o.rejected.len(),
            "wall_secs": o.wall_secs,
        }),
        candidates,
    };
    Batch {
        versions,
        run: Some(run),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: &OptimizeRequest) -> Option<(&'static str, String)> {
        match check_request(r) {
            Err(EngineError::Invalid { field, message }) => Some((field, message)),
            Err(e) => panic!("not an Invalid error: {e}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn numbers_that_cannot_be_meant_are_refused_by_field() {
        assert_eq!(field_of(&OptimizeRequest::new("t.toml")), None);
        type Set = fn(&mut OptimizeRequest);
        let cases: Vec<(&str, Set)> = vec![
            ("rounds", |r| r.rounds = 0),
            ("patience", |r| r.patience = 0),
            ("per_round", |r| r.per_round = 0),
            ("minibatch", |r| r.minibatch = 0),
            ("explore", |r| r.explore = f32::NAN),
            ("exploit", |r| r.exploit = -0.5),
            ("exploit", |r| r.exploit = f32::INFINITY),
            ("max_cost_usd", |r| r.budget.max_cost_usd = Some(-1.0)),
            ("max_meta_cost_usd", |r| {
                r.budget.max_meta_cost_usd = Some(f64::NAN)
            }),
            ("max_unscored", |r| r.max_unscored = Some(1.5)),
            ("max_unscored", |r| r.max_unscored = Some(f64::NAN)),
            ("max_prompt_tokens", |r| r.max_prompt_tokens = Some(0)),
            ("demos", |r| {
                r.algorithm = "fewshot".into();
                r.demos = 0;
            }),
        ];
        for (field, set) in cases {
            let mut r = OptimizeRequest::new("t.toml");
            set(&mut r);
            let (f, message) = field_of(&r).unwrap_or_else(|| panic!("{field} accepted"));
            assert_eq!(f, field, "{message}");
            assert!(!message.is_empty());
        }
        let mut r = OptimizeRequest::new("t.toml");
        r.rounds = 0;
        assert_eq!(
            EngineError::Invalid {
                field: "rounds",
                message: field_of(&r).map(|(_, m)| m).unwrap_or_default()
            }
            .to_string(),
            "rounds: must be at least 1 (rounds to run), got 0"
        );
        // Zero demonstrations is a choice for algorithms that write instructions.
        let mut r = OptimizeRequest::new("t.toml");
        r.demos = 0;
        assert_eq!(field_of(&r), None);
        // And an HTTP body with `"minibatch": 0` is the same request.
        let r: OptimizeRequest = serde_json::from_str(r#"{"task": "t.toml", "minibatch": 0}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(field_of(&r).map(|(f, _)| f), Some("minibatch"));
    }
}
