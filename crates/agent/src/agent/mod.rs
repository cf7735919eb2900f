//! One pass of the agent over every served prompt: monitor and detect, then move each live
//! case one step (see [`crate::case`]): propose for an open one, follow the review of a
//! proposed one, watch a canary and promote or roll it back. A pass is idempotent over the
//! library's state: run it every ten minutes (`agent --watch`, `serve --agent`) or once.
//!
//! The pass lives here; the rest of the agent is split by what it does:
//! - `settings` — the `[agent]` policy, checked ([`Settings`]);
//! - `propose` — collect, diagnose, search and check; file the proposal or record the attempt;
//! - `checks` — the candidates checked on every slice, and the agent's own guardrail;
//! - `work` — a case's task directory (the incumbent as the seed, the sets as data);
//! - `canary` — follow a proposal's review, start its canary, promote or roll it back;
//! - `status` — what `agent status` and `GET /v1/agent` show.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use metaprompt_engine::{Engine, EngineError};
use metaprompt_registry::model::VersionRef;
use metaprompt_registry::service::{Feedback, Inference, InferenceQuery, ServiceStore};
use metaprompt_registry::{RegistryError, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::case::{Case, State, VersionId, slice_key};
use crate::monitor::{Finding, Outcome, Shortfall, Slice, SliceReport, detect, report, shortfalls};

mod canary;
mod checks;
mod propose;
mod settings;
mod status;
mod work;

pub use checks::{MAX_CHECKED, guardrail, keeps_constraint};
use checks::{compare, passes, ranked};
use propose::demo_output;
pub use settings::Settings;
pub use status::{SliceStatus, Status, status, status_of, status_since};
use work::Work;

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
    /// The `[agent]` table cannot be read (its file, line and column).
    #[error(transparent)]
    ConfigFile(Box<metaprompt_llm::LlmError>),
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
    /// `dir`: the agent's working directory (default: `agent/` beside the library file);
    /// `settings`: usually [`Settings::load`] of the engine's config.
    pub fn new(
        engine: Engine,
        library: Arc<dyn Store>,
        service: Arc<dyn ServiceStore>,
        dir: PathBuf,
        settings: Settings,
    ) -> Self {
        Self {
            engine,
            library,
            service,
            settings,
            dir,
            cancel: CancellationToken::new(),
            progress: crate::progress::Progress::default(),
        }
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
            self.service.save_case(&row(c)?).await?;
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

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A case as the service stores it.
fn row(case: &Case) -> Result<metaprompt_registry::service::AgentCase, AgentError> {
    case.to_row()
        .map_err(|e| AgentError::Data(format!("case {} cannot be stored: {e}", case.id)))
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
