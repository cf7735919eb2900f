//! One pass of the agent over every served prompt: monitor and detect, then move each live
//! case one step (see [`crate::case`]): propose for an open one, follow the review of a
//! proposed one, watch a canary and promote or roll it back. A pass is idempotent over the
//! library's state: run it every ten minutes (`agent --watch`, `serve --agent`) or once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use metaprompt_engine::{Engine, EngineError, EvalRequest, OptimizeRequest, Scope};
use metaprompt_eval::metric::{ChoiceOptions, MetricConfig, MetricSpec};
use metaprompt_eval::task::{DataConfig, ModelsConfig, PromptSource, TaskConfig};
use metaprompt_eval::{PromptFile, Task};
use metaprompt_llm::config::{AgentConfig, AgentPromptConfig};
use metaprompt_optimize::MetaPrompts;
use metaprompt_registry::model::{
    Batch, Decision, EventKind, Evidence, LabelMove, NewVersion, Origin, ReviewState, SplitChange,
    Version, VersionRef,
};
use metaprompt_registry::service::{Feedback, Inference, InferenceQuery, ServiceStore};
use metaprompt_registry::{RegistryError, Store};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::case::{
    Attempt, Canary, Case, Diagnosis, Proposal, Search, SliceCheck, Spend, State, VersionId,
    slice_key,
};
use crate::collect::{Item, Part, Sets, collect, part};
use crate::monitor::{
    Finding, Outcome, Policy, Shortfall, Slice, SliceReport, detect, report, shortfalls,
};
use crate::stats::{Rate, sequential};

/// Corrected failures a search needs: enough to split into demonstrations, a dev set to race
/// on, and a held-out check with the power to show a real gain (on the embedded model, 12
/// held-out failures were too few to show 0.17 → 0.33).
pub const MIN_FAILING: usize = 40;

/// Model calls a search needs at the least (the day's allowance below this: the case waits).
pub const MIN_SEARCH_CALLS: u64 = 100;

/// Who the agent is in the audit log.
pub const ACTOR: &str = "agent";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("[agent] {field}: {message}")]
    Config { field: String, message: String },
    #[error(transparent)]
    Registry(Box<RegistryError>),
    #[error(transparent)]
    Engine(Box<EngineError>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Data(String),
}

impl From<RegistryError> for AgentError {
    fn from(e: RegistryError) -> Self {
        AgentError::Registry(Box::new(e))
    }
}

impl From<EngineError> for AgentError {
    fn from(e: EngineError) -> Self {
        AgentError::Engine(Box::new(e))
    }
}

/// The `[agent]` policy, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    pub meta: Option<String>,
    pub max_calls_per_day: u64,
    pub max_usd_per_day: Option<f64>,
    /// Percent of the label's traffic.
    pub canary_weight: f64,
    pub canary_min_n: u64,
    pub canary_margin: f64,
    /// The error level of the canary's always-valid interval.
    pub canary_alpha: f64,
    /// How long an attempted or rejected case keeps its slice from reopening.
    pub cooldown: Duration,
    pub prompts: BTreeMap<String, AgentPromptConfig>,
}

impl Settings {
    pub fn from_config(c: &AgentConfig) -> Result<Self, AgentError> {
        let bad = |field: &str, message: String| AgentError::Config {
            field: field.into(),
            message,
        };
        let share = |field: &str, v: Option<f64>, default: f64| match v {
            Some(x) if !(x > 0.0 && x < 1.0) => Err(bad(
                field,
                format!("{x}: expected a number between 0 and 1"),
            )),
            Some(x) => Ok(x),
            None => Ok(default),
        };
        let window = c.window_secs.unwrap_or(3600);
        if window == 0 {
            return Err(bad("window_secs", "0: expected a positive number".into()));
        }
        let weight = c.canary_weight.unwrap_or(10);
        if !(1..=99).contains(&weight) {
            return Err(bad(
                "canary_weight",
                format!("{weight}: expected a percent between 1 and 99"),
            ));
        }
        if let Some(usd) = c.max_usd_per_day
            && !(usd.is_finite() && usd >= 0.0)
        {
            return Err(bad(
                "max_usd_per_day",
                format!("{usd}: expected a finite number of dollars, 0 or more"),
            ));
        }
        for (name, p) in &c.prompts {
            if p.max_tokens == Some(0) {
                return Err(bad(
                    &format!("prompts.{name}.max_tokens"),
                    "0: expected 1 or more tokens".into(),
                ));
            }
            if let Some(policy) = &p.policy
                && policy != "review"
                && policy != "auto-deploy"
            {
                return Err(bad(
                    &format!("prompts.{name}.policy"),
                    format!("`{policy}`: expected `review` or `auto-deploy`"),
                ));
            }
        }
        Ok(Self {
            policy: Policy {
                window: Duration::seconds(window as i64),
                min_n: c.min_n.unwrap_or(30).max(1),
                fdr: share("fdr", c.fdr, 0.05)?,
                min_drop: share("min_drop", c.min_drop, 0.05)?,
            },
            meta: c.meta.clone(),
            max_calls_per_day: c.max_calls_per_day.unwrap_or(5000),
            max_usd_per_day: c.max_usd_per_day,
            canary_weight: f64::from(weight),
            canary_min_n: c.canary_min_n.unwrap_or(30).max(1),
            canary_margin: share("canary_margin", c.canary_margin, 0.05)?,
            canary_alpha: 0.05,
            cooldown: Duration::hours(24),
            prompts: c.prompts.clone(),
        })
    }

    fn prompt(&self, name: &str) -> AgentPromptConfig {
        self.prompts.get(name).cloned().unwrap_or_default()
    }
}

/// What a pass did to a case.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub case: String,
    pub prompt: String,
    pub slice: String,
    pub what: String,
}

/// Everything one pass saw and did.
#[derive(Debug, Clone, Serialize)]
pub struct PassReport {
    pub at: DateTime<Utc>,
    pub inferences: usize,
    pub scored: usize,
    pub slices: Vec<SliceReport>,
    pub findings: Vec<Finding>,
    /// The slices no test could look at, with their counts and what they need.
    pub untested: Vec<Shortfall>,
    pub actions: Vec<Action>,
    /// Every case, after the pass.
    pub cases: Vec<Case>,
    /// Calls the agent made today (UTC), and its allowance.
    pub calls_today: u64,
    pub max_calls_per_day: u64,
}

/// The agent over one library.
#[derive(Debug, Clone)]
pub struct Agent {
    engine: Engine,
    library: Arc<dyn Store>,
    service: Arc<dyn ServiceStore>,
    settings: Settings,
    /// Where proposals' tasks, data and runs are written.
    dir: PathBuf,
    /// Stops the pass at its next safe point: a search in flight leaves its checkpoint, and
    /// its case records the spend and the run to resume.
    cancel: CancellationToken,
    /// Where the pass says what it is doing.
    progress: crate::progress::Progress,
}

impl Agent {
    /// `dir`: the agent's working directory (default: `agent/` beside the library file).
    pub fn new(
        engine: Engine,
        library: Arc<dyn Store>,
        service: Arc<dyn ServiceStore>,
        dir: PathBuf,
    ) -> Result<Self, AgentError> {
        let settings = Settings::from_config(&engine.config().agent)?;
        Ok(Self {
            engine,
            library,
            service,
            settings,
            dir,
            cancel: CancellationToken::new(),
            progress: crate::progress::Progress::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The token that stops this agent's passes midway (Ctrl-C, a server shutting down). A
    /// stopped search is recorded on its case and the next pass resumes it.
    pub fn canceller(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The same agent, saying what each pass is doing to `progress`.
    #[must_use]
    pub fn with_progress(mut self, progress: crate::progress::Progress) -> Self {
        self.progress = progress;
        self
    }

    /// The same agent, stopped by `token`.
    #[must_use]
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// The stored cases, oldest first.
    pub async fn cases(&self, prompt: Option<&str>) -> Result<Vec<Case>, AgentError> {
        self.service
            .cases(prompt)
            .await?
            .iter()
            .map(|r| Case::from_row(r).map_err(AgentError::Data))
            .collect()
    }

    /// One pass at `now`.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<PassReport, AgentError> {
        let policy = self.settings.policy;
        let query = InferenceQuery {
            prompt: None,
            since: Some(now - policy.window - policy.window),
            until: Some(now),
            limit: None,
        };
        self.progress.start();
        self.progress.say("reading the inference and feedback log");
        let (inferences, feedback) = self.read(&query).await?;
        let outcomes = outcomes(&inferences, &feedback);
        let slices = report(&outcomes, now, &policy);
        let findings = detect(&slices, &policy);
        let untested = shortfalls(&slices, &policy);
        self.progress.say(&format!(
            "{} inferences, {} scored · {} slices · {} found worse · {} too small to test",
            inferences.len(),
            outcomes.len(),
            slices.len(),
            findings.len(),
            untested.len()
        ));

        let mut cases = self.cases(None).await?;
        let mut actions = Vec::new();
        let mut changed = BTreeSet::new();

        // Findings join their slice's live case, or open one.
        let mut strongest: BTreeMap<(String, Slice), &Finding> = BTreeMap::new();
        for f in &findings {
            let e = strongest
                .entry((f.prompt.clone(), f.slice.clone()))
                .or_insert(f);
            if f.q < e.q {
                *e = f;
            }
        }
        // A tagged slice found worse explains its prompt's whole-traffic drop: one case, not two.
        let tagged: BTreeSet<String> = strongest
            .keys()
            .filter(|(_, s)| *s != Slice::All)
            .map(|(p, _)| p.clone())
            .collect();
        for ((prompt, slice), f) in strongest {
            if slice == Slice::All && tagged.contains(&prompt) {
                continue;
            }
            let same = |c: &Case| c.prompt == prompt && c.slice == slice;
            if let Some(c) = cases.iter_mut().find(|c| same(c) && c.state.is_live()) {
                c.finding = f.clone();
                c.seen += 1;
                c.updated_at = now;
                changed.insert(c.id.clone());
                continue;
            }
            let cooling = cases.iter().any(|c| {
                same(c)
                    && matches!(c.state, State::Attempted | State::Rejected)
                    && now - c.updated_at < self.settings.cooldown
            });
            if cooling {
                continue;
            }
            let label = served_label(&inferences, &prompt, &slice);
            let version = match self
                .library
                .resolve(&VersionRef::parse(&format!("{prompt}@{label}"))?)
                .await
            {
                Ok(v) => v,
                // A prompt served by version or hash only: nothing the agent may move.
                Err(_) => continue,
            };
            let mut case = Case {
                id: format!(
                    "{prompt}.{}.{}",
                    slug(&slice_key(&slice)),
                    now.format("%Y%m%dT%H%M%S%3f")
                ),
                prompt: prompt.clone(),
                slice: slice.clone(),
                state: State::Open,
                opened_at: now,
                updated_at: now,
                label,
                incumbent: VersionId {
                    hash: version.hash.clone(),
                    seq: version.seq,
                },
                finding: f.clone(),
                seen: 1,
                diagnosis: None,
                proposal: None,
                attempts: Vec::new(),
                review_comment: None,
                canary: None,
                spent: Vec::new(),
                search: None,
                waiting: None,
                log: Vec::new(),
            };
            case.note(
                now,
                format!(
                    "found: {} at {:.3} (n {}) against {:?} {:.3} (n {}), q = {:.2e}",
                    slice, f.mean, f.n, f.against, f.reference_mean, f.reference_n, f.q
                ),
            );
            actions.push(action(&case, "opened"));
            changed.insert(case.id.clone());
            cases.push(case);
        }

        // Move each live case one step; open ones in the order of what they may gain.
        let mut order: Vec<usize> = (0..cases.len())
            .filter(|&i| cases[i].state.is_live())
            .collect();
        order.sort_by(|&a, &b| gain(&cases[b]).total_cmp(&gain(&cases[a])));
        for i in order {
            // Stopped: what was done is saved below; the rest waits for the next pass.
            if self.cancel.is_cancelled() {
                break;
            }
            let snapshot = cases[i].clone();
            let before = (cases[i].state, cases[i].log.len());
            // One proposal per prompt in review or canary at a time (they share its labels).
            let busy = cases.iter().find(|c| {
                c.prompt == cases[i].prompt
                    && c.id != cases[i].id
                    && matches!(c.state, State::Proposed | State::Canary)
            });
            if cases[i].state == State::Open
                && let Some(other) = busy
            {
                let what = format!(
                    "waiting: case {} of this prompt is {}",
                    other.id,
                    other.state.as_str()
                );
                wait(&mut cases[i], now, what);
                if cases[i] != snapshot {
                    changed.insert(cases[i].id.clone());
                }
                continue;
            }
            self.progress.say(&format!(
                "case {} ({} {}): {}",
                cases[i].id,
                cases[i].prompt,
                cases[i].slice,
                match cases[i].state {
                    State::Open => "collecting its failing and regression sets",
                    State::Proposed => "following its review",
                    _ => "watching its canary",
                }
            ));
            let result = match cases[i].state {
                State::Open => {
                    let (calls_all, calls_prompt) = spent_today(&cases, &cases[i].prompt, now);
                    let mut case = cases[i].clone();
                    let r = self
                        .propose(&mut case, now, calls_all, calls_prompt, &cases)
                        .await;
                    cases[i] = case;
                    r
                }
                State::Proposed => self.review_step(&mut cases[i], now).await,
                State::Canary => self.watch_canary(&mut cases[i], now).await,
                _ => Ok(()),
            };
            if let Err(e) = result {
                note_once(&mut cases[i], now, &format!("error: {e}"));
            }
            if (cases[i].state, cases[i].log.len()) != before {
                let last = cases[i].log.last().map(|e| e.what.clone());
                actions.push(action(&cases[i], &last.unwrap_or_default()));
            }
            // A canary's latest numbers are stored too, not only its decisions.
            if cases[i] != snapshot {
                changed.insert(cases[i].id.clone());
            }
        }
        for c in cases.iter().filter(|c| changed.contains(&c.id)) {
            self.service.save_case(&c.to_row()).await?;
        }
        let (calls_today, _) = spent_today(&cases, "", now);
        Ok(PassReport {
            at: now,
            inferences: inferences.len(),
            scored: outcomes.len(),
            slices,
            findings,
            untested,
            actions,
            cases,
            calls_today,
            max_calls_per_day: self.settings.max_calls_per_day,
        })
    }

    async fn read(
        &self,
        query: &InferenceQuery,
    ) -> Result<(Vec<Inference>, Vec<Feedback>), AgentError> {
        Ok((
            self.service.inferences(query).await?,
            self.service.feedback_for(query).await?,
        ))
    }

    /// Collect, diagnose, search, check; file the proposal or record the attempt.
    async fn propose(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
        calls_all: u64,
        calls_prompt: u64,
        all_cases: &[Case],
    ) -> Result<(), AgentError> {
        let cfg = self.settings.prompt(&case.prompt);
        if cfg.act == Some(false) {
            wait(
                case,
                now,
                "reporting only: [agent.prompts] act = false".into(),
            );
            return Ok(());
        }
        let cap_prompt = cfg.max_calls_per_day.unwrap_or(1000);
        let allowance = self
            .settings
            .max_calls_per_day
            .saturating_sub(calls_all)
            .min(cap_prompt.saturating_sub(calls_prompt));
        let usd_left = self.settings.max_usd_per_day.map(|cap| {
            let day = day_start(now);
            cap - all_cases.iter().map(|c| c.usd_since(day)).sum::<f64>()
        });
        // What the day's budget lacks for a search, in words (`None`: enough).
        let budget_short = if allowance < MIN_SEARCH_CALLS {
            Some(format!(
                "a search needs at least {MIN_SEARCH_CALLS} model calls and {allowance} are left \
                 today ({} of {} spent by all prompts, {calls_prompt} of {cap_prompt} by {})",
                calls_all, self.settings.max_calls_per_day, case.prompt
            ))
        } else if let (Some(left), Some(cap)) = (usd_left, self.settings.max_usd_per_day)
            && left <= 0.0
        {
            Some(format!("today's ${cap:.2} are spent"))
        } else {
            None
        };
        let incumbent = self
            .library
            .resolve(&VersionRef::parse(&case.incumbent.hash)?)
            .await?;
        let (inferences, feedback) = self
            .read(&InferenceQuery {
                prompt: Some(case.prompt.clone()),
                since: Some(now - Duration::days(7)),
                until: Some(now),
                limit: Some(5000),
            })
            .await?;
        let work_dir = self.dir.join(slug(&case.id));
        // A search stopped midway resumes on the sets it started with.
        let stopped = case
            .search
            .clone()
            .filter(|s| Path::new(&s.run_dir).is_dir());
        let kept_sets = stopped
            .as_ref()
            .and_then(|_| crate::search::load_sets(&work_dir));
        let resuming = kept_sets.is_some();
        let sets = kept_sets.unwrap_or_else(|| {
            collect(&inferences, &feedback, case.incumbent.seq, &case.slice, 240)
        });
        let scored = sets.failing_scored().count();
        if !resuming && scored < MIN_FAILING {
            // Both when both: the budget does not hide what the data lacks.
            let also = budget_short
                .as_deref()
                .map_or(String::new(), |b| format!("; and the budget: {b}"));
            wait(
                case,
                now,
                format!(
                    "waiting for corrections: {scored} of {} failing inferences on {} have a \
                     corrected output ({MIN_FAILING} needed to search on){also}",
                    sets.failing.len(),
                    case.slice
                ),
            );
            return Ok(());
        }
        if let Some(b) = budget_short {
            wait(case, now, format!("waiting for budget: {b}"));
            return Ok(());
        }
        case.waiting = None;
        let model = inferences
            .iter()
            .find(|i| i.seq == case.incumbent.seq)
            .map(|i| i.model.clone())
            .ok_or_else(|| AgentError::Data("no inference of the incumbent".into()))?;
        let meta = self.settings.meta.clone().unwrap_or_else(|| model.clone());
        let file = incumbent.file()?;

        if !(resuming && case.diagnosis.is_some()) {
            self.progress.say(&format!(
                "case {}: {} failing ({scored} corrected), {} passing · diagnosing with {meta}",
                case.id,
                sets.failing.len(),
                sets.passing.len()
            ));
            let rejections: Vec<String> = all_cases
                .iter()
                .filter(|c| c.prompt == case.prompt && c.state == State::Rejected)
                .filter_map(|c| c.review_comment.clone())
                .collect();
            let diagnosis = self.diagnose(case, &file, &sets, &meta, &rejections).await;
            case.note(
                now,
                format!(
                    "diagnosed: {} · {}",
                    diagnosis.summary, diagnosis.hypothesis
                ),
            );
            case.diagnosis = Some(diagnosis);
        }

        let work = Work::write(
            &work_dir, case, &incumbent, &file, &sets, &cfg, &model, &meta,
        )?;
        crate::search::save_sets(&work_dir, &sets)?;
        let algorithm = cfg.algorithm.clone().unwrap_or_else(|| {
            if work.labels.is_some() {
                "fewshot".into()
            } else {
                "protegi".into()
            }
        });
        let resumed = match (&stopped, resuming) {
            (Some(s), true) => match self.engine.resume(Path::new(&s.run_dir)).await {
                Ok(run) => Some((run, s.clone())),
                Err(e) => {
                    case.note(
                        now,
                        format!(
                            "the search in {} does not resume ({e}); a new one starts",
                            s.run_dir
                        ),
                    );
                    None
                }
            },
            _ => None,
        };
        let (run, mut search) = match resumed {
            Some((run, s)) => {
                case.note(now, format!("resumed search: {}", s.run_dir));
                (run, s)
            }
            None => {
                let mut request = OptimizeRequest::new(&work.task);
                request.algorithm = algorithm.clone();
                request.name = Some(case.prompt.clone());
                request.meta.seed = 7;
                request.meta.meta = Some(meta.clone());
                request.budget.max_metric_calls = Some(allowance.min(600));
                request.budget.max_meta_calls = Some(20);
                request.budget.max_cost_usd = usd_left;
                request.test_limit = Some(0);
                request.rounds = 3;
                request.patience = 2;
                request.minibatch = work.dev.max(1);
                request.demos = file.demos.len().max(4);
                request.run_dir = Some(crate::search::fresh_run_dir(&work.dir));
                request.store = false;
                let run = self.engine.optimize(request).await?;
                case.note(now, format!("search: {}", run.run_dir().display()));
                let s = Search {
                    run_dir: run.run_dir().display().to_string(),
                    algorithm: algorithm.clone(),
                    started_at: now,
                    stopped_at: None,
                    calls_recorded: 0,
                    usd_recorded: 0.0,
                };
                (run, s)
            }
        };
        let algorithm = search.algorithm.clone();
        // Recorded before anything is spent: a process killed during the search leaves its
        // run on the case, and the next pass resumes it.
        search.stopped_at = None;
        case.search = Some(search.clone());
        self.service.save_case(&case.to_row()).await?;
        self.progress.say(&format!(
            "case {}: searching ({algorithm}, at most {} metric calls) in {}",
            case.id,
            allowance.min(600),
            search.run_dir
        ));
        let handle = run.start();
        let stop = handle.canceller();
        let token = self.cancel.clone();
        let watch = tokio::spawn(async move {
            token.cancelled().await;
            stop.cancel();
        });
        let id = case.id.clone();
        let result = handle.drive(|p| self.progress.event(&id, &p)).await;
        watch.abort();
        let result = match result {
            Ok(r) => r,
            Err(EngineError::Cancelled { .. }) => {
                // Stopped midway: keep what it spent and the run to resume.
                let (calls, usd) = crate::search::logged(Path::new(&search.run_dir));
                let spend = Spend {
                    at: now,
                    calls: calls.saturating_sub(search.calls_recorded),
                    usd: (usd - search.usd_recorded).max(0.0),
                };
                search.calls_recorded += spend.calls;
                search.usd_recorded += spend.usd;
                search.stopped_at = Some(Utc::now());
                case.spent.push(spend.clone());
                case.search = Some(search.clone());
                case.note(
                    now,
                    format!(
                        "stopped midway after {} model calls: the search in {} resumes next pass",
                        spend.calls, search.run_dir
                    ),
                );
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        case.search = None;
        let o = &result.outcome;
        // A resumed search's totals include what its stopped part already recorded.
        let mut spend = Spend {
            at: now,
            calls: (o.metric_calls + o.test_calls + o.meta_calls + o.proxy_calls + 1)
                .saturating_sub(search.calls_recorded),
            usd: (o.execution_usage.cost_usd.unwrap_or(0.0) + o.meta_usage.cost_usd.unwrap_or(0.0)
                - search.usd_recorded)
                .max(0.0),
        };
        // The candidates above the incumbent on dev, best first, even when the run's own
        // verdict kept the seed: its dev set is a slice's worth of live examples, too small for
        // that test's power; the gate is the held-out check below, per slice. The first that
        // passes it is filed: the best on dev can still trade one slice for another (a
        // per-input demonstration set that helps the failing topic and hurts a neighbour),
        // and the runner-up may not.
        let kept = (!o.kept_seed).then_some((o.winner.as_str(), &result.prompt));
        let candidates = ranked(kept, &o.pool, &file, MAX_CHECKED);
        if candidates.is_empty() {
            case.spent.push(spend);
            let guarded: Vec<&String> = o
                .rejected
                .iter()
                .flat_map(|r| r.why.iter())
                .filter(|w| w.contains("constraint"))
                .collect();
            let guard = match guarded.first() {
                Some(w) => format!(
                    "; the guardrail rejected {} candidates (first: {w})",
                    guarded.len()
                ),
                None => String::new(),
            };
            return self.attempted(
                case,
                now,
                format!(
                    "{algorithm} found nothing better than the incumbent on the failing and \
                     regression sets ({} metric calls){guard}",
                    o.metric_calls
                ),
                Vec::new(),
            );
        }
        let mut refused: Vec<(String, Vec<SliceCheck>)> = Vec::new();
        let mut before = None;
        let mut chosen = None;
        for (id, candidate) in candidates {
            if let Err(why) = guardrail(&incumbent.constraints, &candidate) {
                refused.push((format!("{id}: {why}"), Vec::new()));
                continue;
            }
            // The first candidate is always checked; the others only within the day's
            // allowance.
            let check_calls = work.check.len() as u64;
            if before.is_some() && spend.calls + check_calls > allowance {
                break;
            }
            self.progress.say(&format!(
                "case {}: checking candidate {id} on {} held-out examples ({} calls spent)",
                case.id,
                work.check.len(),
                spend.calls
            ));
            if before.is_none() {
                spend.calls += check_calls;
                before = Some(self.score(&work, "incumbent", &file).await?);
            }
            let a = before.as_ref().expect("scored above");
            let b = self
                .score(&work, &format!("proposal-{id}"), &candidate)
                .await?;
            spend.calls += check_calls;
            let checks = compare(&work, case, a, &b);
            match passes(&checks) {
                Ok(()) => {
                    let cost = b
                        .summary
                        .cost_usd
                        .map(|c| c / b.results.len().max(1) as f64);
                    chosen = Some((id, candidate, checks, cost));
                    break;
                }
                Err(why) => refused.push((format!("{id}: {why}"), checks)),
            }
        }
        case.spent.push(spend);
        let Some((id, winner, checks, cost)) = chosen else {
            let mut refused = refused.into_iter();
            let (first, checks) = refused.next().expect("at least one candidate");
            let rest: Vec<String> = refused.map(|(why, _)| why).collect();
            let why = if rest.is_empty() {
                first
            } else {
                format!("{first}; also refused: {}", rest.join("; "))
            };
            return self.attempted(case, now, why, checks);
        };
        if !refused.is_empty() {
            let why: Vec<&str> = refused.iter().map(|(why, _)| why.as_str()).collect();
            case.note(
                now,
                format!(
                    "{id} is the best on dev that passed the held-out check; refused before it: {}",
                    why.join("; ")
                ),
            );
        }
        let target = &checks[0];
        let version = self
            .file(case, &incumbent, winner, &checks, cost, &model, &algorithm)
            .await?;
        case.proposal = Some(Proposal {
            version: VersionId {
                hash: version.hash.clone(),
                seq: version.seq,
            },
            algorithm,
            run_dir: result.run_dir.display().to_string(),
            checks: checks.clone(),
            cost_per_execution_usd: cost,
        });
        case.state = State::Proposed;
        case.note(
            now,
            format!(
                "proposed {}: {} {:.3} → {:.3} (p = {:.3}), no other slice significantly worse",
                version.reference(),
                target.slice,
                target.before,
                target.after,
                target.p
            ),
        );
        if cfg.policy.as_deref() == Some("auto-deploy") {
            if !incumbent.constraints.is_empty() {
                case.note(
                    now,
                    "auto-deploy refused: the prompt has protected constraints; waiting for review",
                );
            } else {
                self.start_canary(case, now, "auto-deploy: no review needed")
                    .await?;
            }
        }
        Ok(())
    }

    fn attempted(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
        why: String,
        checks: Vec<SliceCheck>,
    ) -> Result<(), AgentError> {
        case.attempts.push(Attempt {
            at: now,
            why: why.clone(),
            checks,
            run_dir: case
                .log
                .iter()
                .rev()
                .find_map(|e| e.what.strip_prefix("search: ").map(String::from)),
        });
        case.state = State::Attempted;
        case.note(now, format!("not filed: {why}"));
        Ok(())
    }

    /// The agent's counts, and the meta model's hypothesis.
    async fn diagnose(
        &self,
        case: &Case,
        file: &PromptFile,
        sets: &Sets,
        meta: &str,
        rejections: &[String],
    ) -> Diagnosis {
        let summary = summarize(case, sets);
        let labels = shown_answers(file);
        let show = |i: &Item| {
            i.inputs
                .values()
                .map(text)
                .collect::<Vec<_>>()
                .join(" · ")
                .chars()
                .take(200)
                .collect::<String>()
        };
        let ctx = json!({
            "prompt": {
                "name": case.prompt,
                "instruction": file.instruction,
                "template": file.template.clone().unwrap_or_default(),
                "labels": labels,
            },
            "slice": case.slice.to_string(),
            "summary": summary,
            "failing": sets.failing.iter().take(6).map(|i| json!({
                "input": show(i), "output": i.output.trim(), "expected": i.expected,
            })).collect::<Vec<_>>(),
            "passing": sets.passing.iter().filter(|i| !i.in_slice(&case.slice)).take(4)
                .map(|i| json!({"input": show(i), "output": i.output.trim()})).collect::<Vec<_>>(),
            "rejections": rejections,
        });
        let hypothesis = match self.engine.hub().model(meta) {
            Err(e) => format!("(no hypothesis: the meta model {meta} cannot be opened: {e})"),
            Ok(model) => match MetaPrompts::builtin()
                .sample(&model, "diagnose", &ctx, 0.0, 7, 1)
                .await
            {
                Ok(mut answers) => match answers.pop() {
                    Some(Ok(a)) if crate::diagnose::copies_example(&a) => {
                        crate::diagnose::COPIED.into()
                    }
                    Some(Ok(a)) if !a.trim().is_empty() => a.trim().to_string(),
                    Some(Err(e)) => format!("(no hypothesis: {e})"),
                    _ => "(the meta model wrote nothing)".into(),
                },
                Err(e) => format!("(no hypothesis: {e})"),
            },
        };
        Diagnosis {
            summary,
            hypothesis,
            model: meta.to_string(),
        }
    }

    /// One prompt on the held-out check set.
    async fn score(
        &self,
        work: &Work,
        name: &str,
        prompt: &PromptFile,
    ) -> Result<metaprompt_eval::Report, AgentError> {
        let path = work.dir.join(format!("{name}.check.toml"));
        write(&path, prompt.to_toml().as_bytes())?;
        let mut scope = Scope::new(&work.task);
        scope.split = "test".into();
        let r = self
            .engine
            .eval(EvalRequest {
                scope,
                prompt: Some(path),
                out: Some(work.dir.join(format!("{name}.check.jsonl"))),
            })
            .wait()
            .await?;
        Ok(r.report)
    }

    /// Add the proposal to the library (proposed, in the review queue) with its evidence.
    #[allow(clippy::too_many_arguments)]
    async fn file(
        &self,
        case: &Case,
        incumbent: &Version,
        mut winner: PromptFile,
        checks: &[SliceCheck],
        cost: Option<f64>,
        model: &str,
        algorithm: &str,
    ) -> Result<Version, AgentError> {
        let diagnosis = case.diagnosis.clone();
        let before = incumbent.file()?;
        winner.name = before.name;
        winner.target_model = before.target_model.or(winner.target_model);
        // It was checked with the incumbent's settings, and is served with them.
        winner.run = before.run.clone();
        winner.rationale = Some(format!(
            "Agent case {} on {}: {}{}",
            case.id,
            case.slice,
            diagnosis
                .as_ref()
                .map_or(String::new(), |d| d.summary.clone()),
            diagnosis
                .as_ref()
                .map_or(String::new(), |d| format!(" Hypothesis: {}", d.hypothesis)),
        ));
        let evidence = checks
            .iter()
            .map(|c| Evidence {
                task: format!("agent:{}", case.id),
                split: format!("live {}", c.slice),
                model: model.to_string(),
                metric: "held-out live outcomes".into(),
                n: c.n as u64,
                mean: c.after,
                low: (c.after - (c.diff - c.low)).clamp(0.0, 1.0),
                high: (c.after + (c.high - c.diff)).clamp(0.0, 1.0),
                baseline: Some(incumbent.hash.clone()),
                diff: Some(c.diff),
                diff_low: Some(c.low),
                diff_high: Some(c.high),
                p_value: Some(c.p),
                cost_per_execution_usd: cost,
                run: None,
                recorded_at: None,
            })
            .collect();
        let mut v = NewVersion::new(&case.prompt, winner, Origin::Optimize, ACTOR);
        v.parents = vec![incumbent.hash.clone()];
        v.checks = Some(json!({"agent_case": case.id, "slices": checks, "diagnosis": diagnosis}));
        v.message = Some(format!(
            "agent: {} on {} ({algorithm})",
            case.id, case.slice
        ));
        let mut added = self
            .library
            .commit(Batch {
                versions: vec![(v, evidence)],
                run: None,
            })
            .await?;
        added
            .pop()
            .map(|a| a.version)
            .ok_or_else(|| AgentError::Data("the library added nothing".into()))
    }

    async fn review_step(&self, case: &mut Case, now: DateTime<Utc>) -> Result<(), AgentError> {
        let Some(p) = case.proposal.clone() else {
            return Ok(());
        };
        let version = self
            .library
            .resolve(&VersionRef::parse(&p.version.hash)?)
            .await?;
        match version.review {
            ReviewState::Approved => self.start_canary(case, now, "approved").await,
            ReviewState::Rejected => {
                let comment = self
                    .library
                    .events(&case.prompt)
                    .await?
                    .into_iter()
                    .rev()
                    .find(|e| {
                        e.kind == EventKind::Review
                            && e.hash.as_deref() == Some(&version.hash)
                            && e.decision.as_deref() == Some(Decision::Reject.as_str())
                    })
                    .and_then(|e| e.comment);
                case.review_comment.clone_from(&comment);
                case.state = State::Rejected;
                case.note(
                    now,
                    format!(
                        "rejected by review: {}",
                        comment.as_deref().unwrap_or("(no comment)")
                    ),
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn start_canary(
        &self,
        case: &mut Case,
        now: DateTime<Utc>,
        why: &str,
    ) -> Result<(), AgentError> {
        let Some(p) = case.proposal.clone() else {
            return Ok(());
        };
        // The guardrail again, on what is about to be served: whatever filed it.
        let incumbent = self
            .library
            .resolve(&VersionRef::parse(&case.incumbent.hash)?)
            .await?;
        let proposal = self
            .library
            .resolve(&VersionRef::parse(&p.version.hash)?)
            .await?;
        if let Err(why) = guardrail(&incumbent.constraints, &proposal.file()?) {
            return self.attempted(case, now, format!("not served: {why}"), Vec::new());
        }
        let weight = self.settings.canary_weight;
        self.library
            .set_split(&SplitChange {
                prompt: case.prompt.clone(),
                label: case.label.clone(),
                to: Some(p.version.hash.clone()),
                weight,
                actor: ACTOR.into(),
                comment: Some(format!("canary of agent case {} ({why})", case.id)),
            })
            .await?;
        case.canary = Some(Canary {
            label: case.label.clone(),
            weight,
            started_at: now,
            incumbent_n: 0,
            incumbent_mean: None,
            canary_n: 0,
            canary_mean: None,
            last: None,
        });
        case.state = State::Canary;
        case.note(
            now,
            format!(
                "canary started ({why}): v{} serves {weight}% of {}",
                p.version.seq, case.label
            ),
        );
        Ok(())
    }

    /// Compare the canary with the incumbent on the label's live outcomes since the split
    /// began; promote, roll back, or wait.
    async fn watch_canary(&self, case: &mut Case, now: DateTime<Utc>) -> Result<(), AgentError> {
        let (Some(p), Some(mut canary)) = (case.proposal.clone(), case.canary.clone()) else {
            return Ok(());
        };
        let splits = self.library.splits(&case.prompt).await?;
        let live = splits
            .iter()
            .any(|s| s.label == canary.label && s.hash == p.version.hash);
        if !live {
            case.state = State::Superseded;
            case.note(
                now,
                "the split was ended or changed by someone else; the case is closed",
            );
            return Ok(());
        }
        let (inferences, feedback) = self
            .read(&InferenceQuery {
                prompt: Some(case.prompt.clone()),
                since: Some(canary.started_at),
                until: None,
                limit: None,
            })
            .await?;
        let mut scores: HashMap<&str, Vec<f64>> = HashMap::new();
        for f in &feedback {
            if let Some(s) = f.score {
                scores.entry(f.inference_id.as_str()).or_default().push(s);
            }
        }
        let (mut inc, mut can) = (Rate::default(), Rate::default());
        let (mut inc_err, mut can_err) = (Rate::default(), Rate::default());
        for i in inferences
            .iter()
            .filter(|i| i.label.as_deref() == Some(canary.label.as_str()))
        {
            let (rate, err) = if i.seq == p.version.seq {
                (&mut can, &mut can_err)
            } else if i.seq == case.incumbent.seq {
                (&mut inc, &mut inc_err)
            } else {
                continue;
            };
            err.add(if i.error.is_some() { 0.0 } else { 1.0 });
            if let Some(s) = scores.get(i.id.as_str()) {
                rate.add(s.iter().sum::<f64>() / s.len() as f64);
            }
        }
        let alpha = self.settings.canary_alpha;
        let s = sequential(&inc, &can, alpha, 0.1);
        let errors = sequential(&inc_err, &can_err, alpha, 0.1);
        canary.incumbent_n = inc.n;
        canary.incumbent_mean = inc.mean();
        canary.canary_n = can.n;
        canary.canary_mean = can.mean();
        canary.last = Some(s);
        case.canary = Some(canary.clone());
        let enough = inc.n >= self.settings.canary_min_n && can.n >= self.settings.canary_min_n;
        let seen = format!(
            "canary {:.3} (n {}) vs incumbent {:.3} (n {}): difference {:+.3}, always-valid \
             95% interval [{:+.3}, {:+.3}]",
            can.mean().unwrap_or(0.0),
            can.n,
            inc.mean().unwrap_or(0.0),
            inc.n,
            s.diff,
            s.low,
            s.high
        );
        let worse = (inc.n >= 10 && can.n >= 10 && s.high < 0.0)
            || (inc_err.n >= 10 && can_err.n >= 10 && errors.high < 0.0);
        if worse {
            self.library
                .set_split(&SplitChange {
                    prompt: case.prompt.clone(),
                    label: canary.label.clone(),
                    to: None,
                    weight: 0.0,
                    actor: ACTOR.into(),
                    comment: Some(format!("rollback of agent case {}: {seen}", case.id)),
                })
                .await?;
            case.state = State::RolledBack;
            case.note(now, format!("rolled back: {seen}"));
        } else if enough && s.low > -self.settings.canary_margin {
            self.library
                .move_label(&LabelMove {
                    prompt: case.prompt.clone(),
                    label: canary.label.clone(),
                    to: Some(p.version.hash.clone()),
                    actor: ACTOR.into(),
                    comment: Some(format!("promotion of agent case {}: {seen}", case.id)),
                })
                .await?;
            case.state = State::Promoted;
            case.note(
                now,
                format!("promoted v{} to {}: {seen}", p.version.seq, canary.label),
            );
        }
        Ok(())
    }
}

/// A case's task directory: the incumbent as the seed, the sets as data.
struct Work {
    dir: PathBuf,
    task: PathBuf,
    labels: Option<Vec<String>>,
    dev: usize,
    check: Vec<Item>,
}

impl Work {
    #[allow(clippy::too_many_arguments)]
    fn write(
        dir: &Path,
        case: &Case,
        incumbent: &Version,
        file: &PromptFile,
        sets: &Sets,
        cfg: &AgentPromptConfig,
        model: &str,
        meta: &str,
    ) -> Result<Self, AgentError> {
        std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let own_task = match &cfg.task {
            Some(t) => Some(Task::load(t).map_err(|e| AgentError::Config {
                field: format!("prompts.{}.task", case.prompt),
                message: e.to_string(),
            })?),
            None => None,
        };
        let output = own_task
            .as_ref()
            .map(|t| t.config.output.clone())
            .or_else(|| demo_output(file))
            .unwrap_or_else(|| "answer".into());
        let items: Vec<&Item> = sets.failing_scored().chain(sets.passing.iter()).collect();
        let mut inputs: BTreeSet<String> = file.variables().into_iter().collect();
        for i in &items {
            inputs.extend(i.inputs.keys().cloned());
        }
        inputs.remove(&output);
        let expected: BTreeSet<String> = items.iter().filter_map(|i| i.expected.clone()).collect();
        let labels =
            (own_task.is_none() && expected.len() <= 12 && expected.len() * 2 < items.len())
                .then(|| expected.iter().cloned().collect::<Vec<_>>());
        let (mut train, mut dev, mut check) = (Vec::new(), Vec::new(), Vec::new());
        for i in &items {
            match part(i) {
                Part::Train => train.push((*i).clone()),
                Part::Dev => dev.push((*i).clone()),
                Part::Check => check.push((*i).clone()),
            }
        }
        let line = |i: &Item| {
            let mut row: serde_json::Map<String, serde_json::Value> =
                i.inputs.clone().into_iter().collect();
            row.insert(
                output.clone(),
                json!(i.expected.clone().unwrap_or_default()),
            );
            serde_json::Value::Object(row).to_string()
        };
        for (name, part) in [("train", &train), ("dev", &dev), ("check", &check)] {
            let text: String = part.iter().map(|i| line(i) + "\n").collect();
            write(&dir.join(format!("{name}.jsonl")), text.as_bytes())?;
        }
        write(&dir.join("incumbent.toml"), file.to_toml().as_bytes())?;
        // Proposals are checked the way the incumbent is served: with its `[run]` settings
        // when it has them (a choice scored over its labels), else as the server's defaults
        // run it (generated and read).
        let run = file.run.clone();
        let metrics = match (
            &own_task,
            run.as_ref().and_then(|r| r.labels.clone()),
            &labels,
        ) {
            (Some(t), _, _) => t.config.metrics.clone(),
            (None, Some(l), _) => vec![MetricConfig::new(MetricSpec::Choice(ChoiceOptions {
                labels: l,
                generate: false,
            }))],
            (None, None, Some(l)) => vec![MetricConfig::new(MetricSpec::Choice(ChoiceOptions {
                labels: l.clone(),
                generate: true,
            }))],
            (None, None, None) => vec![MetricConfig::equals()],
        };
        let config = TaskConfig {
            name: slug(&case.prompt),
            description: file.description.clone().unwrap_or_else(|| {
                format!(
                    "The served prompt `{}`, on its live traffic ({} failing).",
                    case.prompt, case.slice
                )
            }),
            inputs: inputs.into_iter().collect(),
            output,
            prompt: PromptSource::File("incumbent.toml".into()),
            constraints: incumbent.constraints.clone(),
            data: DataConfig {
                train: Some("train.jsonl".into()),
                dev: Some("dev.jsonl".into()),
                test: Some("check.jsonl".into()),
                ..DataConfig::default()
            },
            metrics,
            models: ModelsConfig {
                execution: model.to_string(),
                meta: meta.to_string(),
                max_tokens: run
                    .as_ref()
                    .map(|r| r.max_tokens)
                    .or(cfg.max_tokens)
                    .unwrap_or(16),
                stop: run
                    .as_ref()
                    .map_or_else(|| cfg.stop.clone(), |r| r.stop.clone()),
                execution_temperature: run.as_ref().map_or(0.0, |r| r.temperature),
                ..ModelsConfig::default()
            },
            budget: Default::default(),
        };
        let task = dir.join("task.toml");
        let text = toml::to_string_pretty(&config)
            .map_err(|e| AgentError::Data(format!("task of case {}: {e}", case.id)))?;
        write(&task, text.as_bytes())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            task,
            labels,
            dev: dev.len(),
            check,
        })
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    std::fs::write(path, bytes).map_err(|source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Scored outcomes of the inferences.
pub fn outcomes(inferences: &[Inference], feedback: &[Feedback]) -> Vec<Outcome> {
    let mut by_id: HashMap<&str, Vec<Feedback>> = HashMap::new();
    for f in feedback {
        by_id
            .entry(f.inference_id.as_str())
            .or_default()
            .push(f.clone());
    }
    inferences
        .iter()
        .filter_map(|i| {
            Outcome::from_records(i, by_id.get(i.id.as_str()).map_or(&[], Vec::as_slice))
        })
        .collect()
}

/// The label most of the slice's inferences came through (`production` when none says).
fn served_label(inferences: &[Inference], prompt: &str, slice: &Slice) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in inferences.iter().filter(|i| i.prompt == prompt) {
        let in_slice = match slice {
            Slice::All => true,
            Slice::Tag { key, value } => i.tags.get(key) == Some(value),
        };
        if let (true, Some(l)) = (in_slice, i.label.as_deref()) {
            *counts.entry(l).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(|| "production".into(), |(l, _)| l.to_string())
}

/// What fixing the case may gain: the drop times the traffic it affects.
fn gain(c: &Case) -> f64 {
    (c.finding.reference_mean - c.finding.mean).max(0.0) * c.finding.n as f64
}

/// Calls spent today by every case, and by `prompt`'s.
fn spent_today(cases: &[Case], prompt: &str, now: DateTime<Utc>) -> (u64, u64) {
    let day = day_start(now);
    let all = cases.iter().map(|c| c.calls_since(day)).sum();
    let mine = cases
        .iter()
        .filter(|c| c.prompt == prompt)
        .map(|c| c.calls_since(day))
        .sum();
    (all, mine)
}

fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |d| d.and_utc())
}

/// The case waits, and says exactly why (in its `waiting` field and, once, in its log).
fn wait(case: &mut Case, now: DateTime<Utc>, why: String) {
    note_once(case, now, &why);
    case.waiting = Some(why);
}

/// Note `what` unless it is already the case's last note (a waiting case says so once).
fn note_once(case: &mut Case, now: DateTime<Utc>, what: &str) {
    if case.log.last().map(|e| e.what.as_str()) != Some(what) {
        case.note(now, what);
    }
}

fn action(c: &Case, what: &str) -> Action {
    Action {
        case: c.id.clone(),
        prompt: c.prompt.clone(),
        slice: slice_key(&c.slice),
        what: what.to_string(),
    }
}

/// The variable a prompt's demonstrations hold the answer in: the demo key that no
/// example-side template reads.
/// The answers a prompt's demonstrations show (the fixed ones, or the pool a selector picks each
/// input's from), each once, in order.
fn shown_answers(file: &PromptFile) -> Vec<String> {
    let mut answers: Vec<String> = Vec::new();
    if let Some(o) = demo_output(file) {
        for a in file
            .demo_entries()
            .iter()
            .filter_map(|d| d.get(&o).map(text))
        {
            if !answers.contains(&a) {
                answers.push(a);
            }
        }
    }
    answers
}

fn demo_output(file: &PromptFile) -> Option<String> {
    let inputs = file.variables();
    file.demo_entries()
        .first()?
        .keys()
        .find(|k| !inputs.contains(k))
        .cloned()
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The failures counted: how many, what was answered, what was expected.
fn summarize(case: &Case, sets: &Sets) -> String {
    let count = |it: &mut dyn Iterator<Item = String>| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for s in it {
            *m.entry(s).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.iter()
            .take(4)
            .map(|(s, n)| format!("`{s}` ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let answered = count(&mut sets.failing.iter().map(|i| short(i.output.trim())));
    let expected = count(
        &mut sets
            .failing
            .iter()
            .filter_map(|i| i.expected.as_deref())
            .map(short),
    );
    format!(
        "{} failing inferences on {} ({:.0}% of its scored traffic now, against {:.0}% for the \
         reference); answered {answered}{}.",
        sets.failing.len(),
        case.slice,
        100.0 * case.finding.mean,
        100.0 * case.finding.reference_mean,
        if expected.is_empty() {
            String::new()
        } else {
            format!("; corrected to {expected}")
        }
    )
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(40).collect();
    s.replace('\n', " ")
}

/// How many of a search's candidates the agent checks on the held-out set, best on dev first,
/// before it records the attempt as refused.
pub const MAX_CHECKED: usize = 4;

/// The search's candidates that scored above the seed (`pool[0]`, the incumbent) on dev, best
/// first, at most `n`, without the incumbent or repeats: the run's kept prompt first where it
/// kept one.
fn ranked(
    kept: Option<(&str, &PromptFile)>,
    pool: &[metaprompt_optimize::run::Entry],
    incumbent: &PromptFile,
    n: usize,
) -> Vec<(String, PromptFile)> {
    let hash = metaprompt_registry::content::hash;
    let mut seen = BTreeSet::from([hash(incumbent)]);
    let mut out = Vec::new();
    let mut push = |id: &str, p: &PromptFile, out: &mut Vec<(String, PromptFile)>| {
        if out.len() < n && seen.insert(hash(p)) {
            out.push((id.to_string(), p.clone()));
        }
    };
    if let Some((id, p)) = kept {
        push(id, p, &mut out);
    }
    let bar = pool.first().and_then(|seed| seed.mean()).unwrap_or(0.0);
    let mut rest: Vec<(&str, f64, &PromptFile)> = pool
        .iter()
        .skip(1)
        .filter(|e| kept.is_none_or(|(id, _)| id != e.id))
        .filter_map(|e| e.mean().map(|m| (e.id.as_str(), m, &e.prompt)))
        .filter(|(_, m, _)| *m > bar)
        .collect();
    // Stable: among equal means, the earlier proposal first.
    rest.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (id, _, p) in rest {
        push(id, p, &mut out);
    }
    out
}

/// Two prompts' held-out scores compared slice by slice: the case's slice first, then each
/// tag value on the check set, `all` last.
fn compare(
    work: &Work,
    case: &Case,
    a: &metaprompt_eval::Report,
    b: &metaprompt_eval::Report,
) -> Vec<SliceCheck> {
    let mut slices = vec![case.slice.clone()];
    for i in &work.check {
        for (k, v) in &i.tags {
            let s = Slice::Tag {
                key: k.clone(),
                value: v.clone(),
            };
            if !slices.contains(&s) {
                slices.push(s);
            }
        }
    }
    if case.slice != Slice::All {
        slices.push(Slice::All);
    }
    let mut checks = Vec::new();
    for s in slices {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (k, item) in work.check.iter().enumerate() {
            if !item.in_slice(&s) {
                continue;
            }
            if let (Some(p), Some(q)) = (
                a.results.get(k).and_then(|r| r.score),
                b.results.get(k).and_then(|r| r.score),
            ) {
                x.push(p);
                y.push(q);
            }
        }
        if x.is_empty() {
            continue;
        }
        let paired = metaprompt_eval::stats::paired_bootstrap(&x, &y, 7);
        checks.push(SliceCheck {
            slice: slice_key(&s),
            n: x.len(),
            before: metaprompt_eval::stats::mean(&x),
            after: metaprompt_eval::stats::mean(&y),
            diff: paired.diff,
            low: paired.low,
            high: paired.high,
            p: paired.p_value,
        });
    }
    checks
}

/// The gate a proposal passes before it is filed: significantly better on the case's slice
/// (the first check), and no slice of at least 5 examples significantly worse.
fn passes(checks: &[SliceCheck]) -> Result<(), String> {
    let Some(target) = checks.first() else {
        return Err("nothing on the held-out check could be scored".into());
    };
    if !(target.diff > 0.0 && target.p < 0.05) {
        return Err(format!(
            "{} did not improve significantly on the held-out check: {:.3} → {:.3} (n {}, p = {:.3})",
            target.slice, target.before, target.after, target.n, target.p
        ));
    }
    if let Some(worse) = checks[1..]
        .iter()
        .find(|c| c.diff < 0.0 && c.p < 0.05 && c.n >= 5)
    {
        return Err(format!(
            "{} got significantly worse: {:.3} → {:.3} (n {}, p = {:.3})",
            worse.slice, worse.before, worse.after, worse.n, worse.p
        ));
    }
    Ok(())
}

/// The agent's own guardrail, after the optimizer's: a proposal must keep every protected
/// constraint of the incumbent word for word (whitespace aside), in its constraints, its
/// instruction or its templates. Stricter than the optimizer's check (which accepts a faithful
/// paraphrase): what the agent files unattended keeps the exact sentences a person wrote.
pub fn guardrail(constraints: &[String], proposal: &PromptFile) -> Result<(), String> {
    match constraints.iter().find(|c| !keeps_constraint(proposal, c)) {
        Some(lost) => Err(format!(
            "the candidate drops the protected constraint \"{lost}\""
        )),
        None => Ok(()),
    }
}

/// Whether `prompt` still states `constraint` (in its instruction, templates or constraints).
pub fn keeps_constraint(prompt: &PromptFile, constraint: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let c = norm(constraint);
    prompt.constraints.iter().any(|x| norm(x) == c)
        || [prompt.instruction.as_deref(), prompt.template.as_deref()]
            .into_iter()
            .flatten()
            .chain(prompt.messages.iter().map(|m| m.content.as_str()))
            .any(|t| norm(t).contains(&c))
}

/// A name safe as a file name.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One slice as `agent status` and `GET /v1/agent` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SliceStatus {
    pub prompt: String,
    pub slice: Slice,
    pub n: u64,
    pub mean: Option<f64>,
    /// 95% interval of the mean.
    pub low: f64,
    pub high: f64,
    pub baseline_n: u64,
    pub baseline_mean: Option<f64>,
    pub rest_mean: Option<f64>,
    /// Every call in the current window, scored or not.
    pub calls: u64,
    /// Calls that failed (no output).
    pub error_rate: f64,
    pub mean_latency_ms: f64,
    /// `None` when some call's cost is unknown (an unpriced model).
    pub cost_per_call_usd: Option<f64>,
}

/// Calls, failures, latency and cost of one slice over a window.
#[derive(Debug, Clone, Copy, Default)]
struct Ops {
    calls: u64,
    errors: u64,
    latency_ms: f64,
    cost: Option<f64>,
}

/// [`Ops`] per prompt and slice of the inferences in `[since, until)`.
fn ops(
    inferences: &[Inference],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> BTreeMap<(String, Slice), Ops> {
    let mut m: BTreeMap<(String, Slice), Ops> = BTreeMap::new();
    for i in inferences
        .iter()
        .filter(|i| (since..until).contains(&i.created_at))
    {
        let slices = std::iter::once(Slice::All).chain(i.tags.iter().map(|(k, v)| Slice::Tag {
            key: k.clone(),
            value: v.clone(),
        }));
        for s in slices {
            let o = m.entry((i.prompt.clone(), s)).or_insert(Ops {
                cost: Some(0.0),
                ..Ops::default()
            });
            o.calls += 1;
            o.errors += u64::from(i.error.is_some());
            o.latency_ms += i.latency_ms;
            o.cost = o.cost.zip(i.cost_usd).map(|(a, b)| a + b);
        }
    }
    m
}

/// What the agent sees now, without acting: every slice with its interval, the findings, and
/// the stored cases.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub at: DateTime<Utc>,
    pub window_secs: i64,
    pub min_n: u64,
    pub fdr: f64,
    pub inferences: usize,
    pub scored: usize,
    pub slices: Vec<SliceStatus>,
    #[serde(skip)]
    pub reports: Vec<SliceReport>,
    pub findings: Vec<Finding>,
    /// The slices no test could look at, with their counts and what they need.
    pub untested: Vec<Shortfall>,
    pub cases: Vec<Case>,
}

/// Read-only: the current windows' slices and findings, and the cases (of `prompt`, or all).
pub async fn status(
    service: &dyn ServiceStore,
    settings: &Settings,
    prompt: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Status, AgentError> {
    let query = InferenceQuery {
        prompt: None,
        since: Some(status_since(settings, now)),
        until: Some(now),
        limit: None,
    };
    let inferences = service.inferences(&query).await?;
    let feedback = service.feedback_for(&query).await?;
    status_of(service, settings, prompt, now, &inferences, &feedback).await
}

/// Where [`status`] reads its records: every prompt's, over the two windows ending at `now`.
pub fn status_since(settings: &Settings, now: DateTime<Utc>) -> DateTime<Utc> {
    now - settings.policy.window - settings.policy.window
}

/// [`status`] over records the caller already read (of every prompt, from
/// [`status_since`] or earlier; what lies outside the two windows is left out).
pub async fn status_of(
    service: &dyn ServiceStore,
    settings: &Settings,
    prompt: Option<&str>,
    now: DateTime<Utc>,
    inferences: &[Inference],
    feedback: &[Feedback],
) -> Result<Status, AgentError> {
    let policy = settings.policy;
    let start = status_since(settings, now);
    let inferences: Vec<Inference> = inferences
        .iter()
        .filter(|i| i.created_at >= start && i.created_at < now)
        .cloned()
        .collect();
    let outcomes = outcomes(&inferences, feedback);
    let reports: Vec<SliceReport> = report(&outcomes, now, &policy);
    let untested = shortfalls(&reports, &policy)
        .into_iter()
        .filter(|s| prompt.is_none_or(|p| p == s.prompt))
        .collect();
    let findings = detect(&reports, &policy)
        .into_iter()
        .filter(|f| prompt.is_none_or(|p| p == f.prompt))
        .collect();
    let reports: Vec<SliceReport> = reports
        .into_iter()
        .filter(|r| prompt.is_none_or(|p| p == r.prompt))
        .collect();
    let ops = ops(&inferences, now - policy.window, now);
    let slices = reports
        .iter()
        .map(|r| {
            let (low, high) = r.current.interval();
            let o = ops
                .get(&(r.prompt.clone(), r.slice.clone()))
                .copied()
                .unwrap_or_default();
            let per = |x: f64| x / o.calls.max(1) as f64;
            SliceStatus {
                calls: o.calls,
                error_rate: per(o.errors as f64),
                mean_latency_ms: per(o.latency_ms),
                cost_per_call_usd: o.cost.map(per),
                prompt: r.prompt.clone(),
                slice: r.slice.clone(),
                n: r.current.n,
                mean: r.current.mean(),
                low,
                high,
                baseline_n: r.baseline.n,
                baseline_mean: r.baseline.mean(),
                rest_mean: r.rest.mean(),
            }
        })
        .collect();
    let cases = service
        .cases(prompt)
        .await?
        .iter()
        .map(|r| Case::from_row(r).map_err(AgentError::Data))
        .collect::<Result<_, _>>()?;
    Ok(Status {
        at: now,
        window_secs: policy.window.num_seconds(),
        min_n: policy.min_n,
        fdr: policy.fdr,
        inferences: inferences.len(),
        scored: outcomes.len(),
        slices,
        reports,
        findings,
        untested,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diagnosis_sees_the_answers_of_fixed_demos_or_of_a_selectors_pool_once_each() {
        let fixed: PromptFile = toml::from_str(
            "name = \"support\"\ntemplate = \"Q: {{ q }}\\nTeam:\"\n\
             [[demos]]\nq = \"a\"\nteam = \"billing\"\n\
             [[demos]]\nq = \"b\"\nteam = \"tech\"\n\
             [[demos]]\nq = \"c\"\nteam = \"billing\"\n",
        )
        .unwrap();
        assert_eq!(shown_answers(&fixed), ["billing", "tech"]);
        let knn: PromptFile = toml::from_str(
            "name = \"support\"\ntemplate = \"Q: {{ q }}\\nTeam:\"\n\
             [selector]\nkind = \"knn\"\nk = 1\nembed = \"words\"\n\
             [[pool]]\nq = \"a\"\nteam = \"other\"\n\
             [[pool]]\nq = \"b\"\nteam = \"tech\"\n\
             [[pool]]\nq = \"c\"\nteam = \"other\"\n",
        )
        .unwrap();
        assert_eq!(shown_answers(&knn), ["other", "tech"]);
        assert!(shown_answers(&PromptFile::from_template("p", "{{ q }}")).is_empty());
    }

    #[test]
    fn candidates_are_checked_best_on_dev_first_without_the_incumbent_or_repeats() {
        use metaprompt_optimize::run::Entry;
        let seed = PromptFile::from_template("news", "{{ q }}");
        let with = |i: &str| {
            let mut p = seed.clone();
            p.instruction = Some(i.into());
            p
        };
        let entry = |id: &str, p: &PromptFile, scores: &[f64]| {
            let mut e = Entry::new(id.into(), p.clone(), vec![], "test", 1);
            e.scores = scores.iter().copied().enumerate().collect();
            e
        };
        let pool = vec![
            entry("p0", &seed, &[1.0, 0.0]),
            entry("p1", &with("a"), &[1.0, 1.0]),
            entry("p2", &with("b"), &[0.0, 0.0]),
            entry("p3", &with("c"), &[1.0, 0.5]),
            entry("p4", &with("a"), &[1.0, 1.0]),
            entry("p5", &seed, &[1.0, 1.0]),
            entry("p6", &with("d"), &[1.0, 0.5]),
        ];
        let ids = |kept, n| -> Vec<String> {
            ranked(kept, &pool, &seed, n)
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        // Below the seed (p2), a twin (p4) and the incumbent itself (p5) are left out; ties keep
        // the order of proposal.
        assert_eq!(ids(None, 9), ["p1", "p3", "p6"]);
        assert_eq!(ids(None, 2), ["p1", "p3"]);
        // The run's kept prompt leads, and is not checked twice.
        let c = with("c");
        assert_eq!(ids(Some(("p3", &c)), 9), ["p3", "p1", "p6"]);
        assert!(ranked(None, &pool[..1], &seed, 9).is_empty());
    }

    #[test]
    fn a_proposal_passes_only_better_on_its_slice_and_worse_on_none() {
        let check = |slice: &str, n, diff: f64, p| SliceCheck {
            slice: slice.into(),
            n,
            before: 0.5,
            after: 0.5 + diff,
            diff,
            low: diff - 0.1,
            high: diff + 0.1,
            p,
        };
        let good = check("topic=business", 30, 0.4, 0.001);
        assert!(passes(&[good.clone(), check("topic=sports", 20, -0.05, 0.4)]).is_ok());
        // Worse on too few examples to count.
        assert!(passes(&[good.clone(), check("topic=world", 4, -0.5, 0.01)]).is_ok());
        let e = passes(&[good.clone(), check("topic=technology", 14, -0.36, 0.005)]).unwrap_err();
        assert!(
            e.contains("topic=technology got significantly worse"),
            "{e}"
        );
        let e = passes(&[check("topic=business", 30, 0.1, 0.2)]).unwrap_err();
        assert!(e.contains("did not improve significantly"), "{e}");
        assert!(passes(&[]).is_err());
    }

    #[test]
    fn the_guardrail_refuses_a_proposal_without_a_protected_constraint() {
        let keep = "Never reveal the customer's account number.".to_string();
        let mut p = PromptFile::from_template("support", "Question: {{ q }}\nAnswer:");
        p.instruction = Some(format!("Answer the question.  {}", keep.replace(' ', "\n")));
        assert!(guardrail(std::slice::from_ref(&keep), &p).is_ok());
        p.instruction = Some("Answer the question.".into());
        let e = guardrail(std::slice::from_ref(&keep), &p).unwrap_err();
        assert!(e.contains("account number"), "{e}");
        p.constraints = vec![keep.clone()];
        assert!(guardrail(&[keep], &p).is_ok());
        assert!(guardrail(&[], &p).is_ok());
    }

    #[test]
    fn settings_name_the_field_at_fault() {
        let mut c = AgentConfig::default();
        assert!(Settings::from_config(&c).is_ok());
        c.fdr = Some(1.5);
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("[agent] fdr") && e.contains("1.5"), "{e}");
        c.fdr = None;
        c.canary_weight = Some(100);
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("canary_weight"), "{e}");
        c.canary_weight = None;
        c.prompts.insert(
            "news".into(),
            AgentPromptConfig {
                policy: Some("yolo".into()),
                ..AgentPromptConfig::default()
            },
        );
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(
            e.contains("prompts.news.policy") && e.contains("auto-deploy"),
            "{e}"
        );
        c.prompts.insert(
            "news".into(),
            AgentPromptConfig {
                max_tokens: Some(0),
                ..AgentPromptConfig::default()
            },
        );
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("prompts.news.max_tokens"), "{e}");
        c.prompts.clear();
        c.max_usd_per_day = Some(-1.0);
        let e = Settings::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("max_usd_per_day"), "{e}");
    }
}
