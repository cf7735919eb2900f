//! The machinery every optimizer shares: the problem, the budget, the pool of candidates with
//! their per-example scores, racing, the temperature schedule, rounds, convergence,
//! checkpoints, and the final verdict against the seed prompt.
//!
//! An optimizer ([`crate::algo::Optimizer`]) only proposes and selects, through a [`Ctx`]:
//! `ctx.meta(…)` runs a meta-prompt (counted against the meta-call budget), `ctx.propose(…)`
//! checks a prompt (render, duplicate, guardrail) and adds it to the pool, `ctx.score(…)` and
//! `ctx.race(…)` evaluate on dev examples (each (candidate, example) pair is scored once and
//! counted once against the metric-call budget).
//!
//! **Durable and reproducible.** Everything an optimizer knows lives in the pool, and every
//! random choice and meta-call seed is derived from (run seed, round, call number). So a run is
//! checkpointed after each round (pool, counters, usage, round statistics) and `--resume`
//! continues from the last checkpoint: the round in flight is redone with the same seeds, and
//! the response cache answers the calls it had already made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use metaprompt_eval::evaluator::{self, ExampleResult};
use metaprompt_eval::stats::{self, Estimate, Paired};
use metaprompt_eval::{EvalOptions, Example, PromptFile, Scorer};
use metaprompt_llm::LayerUsage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::brief::{Brief, Frame};
use crate::candidate::{BOOTSTRAP_SEED, Candidate, Checks, Layers, Status};
use crate::guard::Guard;
use crate::meta::{MetaError, MetaPrompts};
use crate::{Event, Observer};

/// What is optimized, and on what data.
#[derive(Debug)]
pub struct Problem {
    pub brief: Brief,
    pub seed_prompt: PromptFile,
    /// The seed prompt's layout, in both forms.
    pub frame: Frame,
    pub constraints: Vec<String>,
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    pub test: Vec<Example>,
    pub scorer: Scorer,
    pub options: EvalOptions,
}

/// Hard caps. Metric calls include the final test evaluation (reserved up front).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub max_metric_calls: u64,
    pub max_meta_calls: u64,
    pub max_meta_cost_usd: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub max_wall_secs: Option<u64>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_metric_calls: 1500,
            max_meta_calls: 40,
            max_meta_cost_usd: None,
            max_cost_usd: None,
            max_wall_secs: None,
        }
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    MetricCalls,
    MetaCalls,
    MetaCost,
    Cost,
    Wall,
    /// No significant improvement for `patience` rounds.
    Converged,
    /// The round limit.
    Rounds,
    /// The optimizer has nothing more to try.
    Exhausted,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::MetricCalls => "the metric-call cap was reached",
            StopReason::MetaCalls => "the meta-call cap was reached",
            StopReason::MetaCost => "the meta-layer cost cap was reached",
            StopReason::Cost => "the total cost cap was reached",
            StopReason::Wall => "the wall-time cap was reached",
            StopReason::Converged => "converged: no significant improvement for `patience` rounds",
            StopReason::Rounds => "the round limit was reached",
            StopReason::Exhausted => "the algorithm had nothing more to try",
        }
    }
}

/// Meta temperature by round: exploration early, exploitation late (linear).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Schedule {
    pub explore: f32,
    pub exploit: f32,
}

impl Default for Schedule {
    /// The seed guidance: 0.7–1.0 early, 0–0.3 late.
    fn default() -> Self {
        Self {
            explore: 0.9,
            exploit: 0.2,
        }
    }
}

impl Schedule {
    pub fn at(&self, round: usize, rounds: usize) -> f32 {
        if rounds <= 1 {
            return self.explore;
        }
        let t = (round.saturating_sub(1)) as f32 / (rounds - 1) as f32;
        self.explore + (self.exploit - self.explore) * t.min(1.0)
    }
}

/// How a run proceeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub seed: u64,
    pub rounds: usize,
    /// Rounds without significant improvement before stopping.
    pub patience: usize,
    pub schedule: Schedule,
    /// Candidates proposed per round (where the algorithm samples several).
    pub per_round: u32,
    /// First rung of racing (dev examples); doubles each rung.
    pub minibatch: usize,
    /// Demonstrations in a prompt (few-shot search).
    pub demos: usize,
    /// What the caller needs to rebuild the same problem on resume (models, data limits, extra
    /// constraints…); opaque to the run, kept in the checkpoint.
    #[serde(default)]
    pub invocation: Value,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seed: 0,
            rounds: 6,
            patience: 2,
            schedule: Schedule::default(),
            per_round: 4,
            minibatch: 20,
            demos: 4,
            invocation: Value::Null,
        }
    }
}

/// A candidate in the pool, with lineage and its scores per dev example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// `p0` is the seed prompt; `p1`, `p2`, … in order of proposal.
    pub id: String,
    pub prompt: PromptFile,
    pub parents: Vec<String>,
    /// The operation that made it (`seed`, `opro`, `ape-induce`, `fewshot`, …).
    pub op: String,
    pub round: usize,
    /// Score per dev example (index into the run's dev split).
    pub scores: BTreeMap<usize, f64>,
    /// The model's output per dev example (what reflective algorithms read as the trace).
    #[serde(default)]
    pub outputs: BTreeMap<usize, String>,
    /// The metric's feedback per dev example, where it gave any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feedback: BTreeMap<usize, String>,
    /// Algorithm-specific state that must survive a resume (Promptbreeder: whether the unit is
    /// alive, its mutation prompt).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

impl Entry {
    pub fn mean(&self) -> Option<f64> {
        (!self.scores.is_empty())
            .then(|| self.scores.values().sum::<f64>() / self.scores.len() as f64)
    }
}

/// A proposal that did not enter the pool, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub id: String,
    pub round: usize,
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    pub why: Vec<String>,
}

/// One round's statistics (the per-round curves of the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundStats {
    pub round: usize,
    pub temperature: f32,
    pub proposed: usize,
    pub rejected: usize,
    /// Best full-dev mean so far, and whose.
    pub best: f64,
    pub best_id: String,
    /// Mean of this round's candidates' scores (on whatever examples they reached).
    pub mean: Option<f64>,
    pub metric_calls: u64,
    pub meta_calls: u64,
    pub meta_cost_usd: Option<f64>,
    pub execution_cost_usd: Option<f64>,
    pub wall_secs: f64,
}

/// Everything a run needs to continue: written after each round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub algorithm: String,
    pub task: PathBuf,
    pub settings: Settings,
    pub budget: Budget,
    /// The last completed round.
    pub round: usize,
    pub pool: Vec<Entry>,
    pub rejected: Vec<Rejected>,
    pub rounds: Vec<RoundStats>,
    pub metric_calls: u64,
    pub meta_calls: u64,
    pub saved_calls: u64,
    pub meta_usage: LayerUsage,
    pub execution_usage: LayerUsage,
    pub wall_secs: f64,
    /// Set when the run finished.
    pub stop: Option<StopReason>,
}

impl Checkpoint {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a checkpoint: {e}", path.display()))
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a checkpoint.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }
}

/// An optimizer's handle on the run.
pub struct Ctx<'a> {
    pub meta_prompts: &'a MetaPrompts,
    pub layers: &'a Layers,
    pub guard: &'a Guard,
    pub problem: &'a Problem,
    pub settings: &'a Settings,
    pub budget: &'a Budget,
    pub pool: Vec<Entry>,
    pub rejected: Vec<Rejected>,
    pub round: usize,
    /// Seeded from (run seed, round): the same round draws the same choices.
    pub rng: StdRng,
    /// Dev indices in a seeded random order; racing rungs take prefixes of it.
    order: Vec<usize>,
    metric_calls: u64,
    meta_calls: u64,
    /// Metric calls held back for the final test evaluation.
    reserve: u64,
    calls_this_round: u64,
    saved_calls: u64,
    base_meta: LayerUsage,
    base_execution: LayerUsage,
    wall_before: f64,
    started: Instant,
    observe: Observer<'a>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("round", &self.round)
            .field("pool", &self.pool.len())
            .field("metric_calls", &self.metric_calls)
            .field("meta_calls", &self.meta_calls)
            .finish_non_exhaustive()
    }
}

fn mix(a: u64, b: u64) -> u64 {
    // SplitMix64 of a combination: distinct, well-spread seeds per (seed, round, call).
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<'a> Ctx<'a> {
    /// The meta temperature of this round.
    pub fn temperature(&self) -> f32 {
        self.settings.schedule.at(self.round, self.settings.rounds)
    }

    pub fn metric_calls(&self) -> u64 {
        self.metric_calls
    }

    fn costs(&self) -> (LayerUsage, LayerUsage) {
        let c = self.layers.costs(None, self.layers.execution.as_ref());
        let mut meta = self.base_meta.clone();
        meta.merge(&c.meta);
        let mut exec = self.base_execution.clone();
        exec.merge(&c.execution);
        (meta, exec)
    }

    fn wall(&self) -> f64 {
        self.wall_before + self.started.elapsed().as_secs_f64()
    }

    /// The caps other than calls.
    pub fn check(&self) -> Result<(), StopReason> {
        let (meta, exec) = self.costs();
        if let (Some(cap), Some(c)) = (self.budget.max_meta_cost_usd, meta.cost_usd)
            && c >= cap
        {
            return Err(StopReason::MetaCost);
        }
        if let (Some(cap), Some(m), Some(e)) =
            (self.budget.max_cost_usd, meta.cost_usd, exec.cost_usd)
            && m + e >= cap
        {
            return Err(StopReason::Cost);
        }
        if let Some(cap) = self.budget.max_wall_secs
            && self.wall() >= cap as f64
        {
            return Err(StopReason::Wall);
        }
        Ok(())
    }

    /// Run meta-prompt `name` `n` times at this round's temperature (fewer when the meta-call
    /// budget allows fewer). Failed samples are dropped (and logged).
    pub async fn meta(
        &mut self,
        name: &str,
        vars: &Value,
        n: u32,
    ) -> Result<Vec<String>, StopReason> {
        self.check()?;
        let left = self.budget.max_meta_calls.saturating_sub(self.meta_calls);
        let n = u64::from(n).min(left) as u32;
        if n == 0 {
            return Err(StopReason::MetaCalls);
        }
        let seed = mix(mix(self.settings.seed, self.round as u64), self.meta_calls);
        self.meta_calls += u64::from(n);
        let temperature = self.temperature();
        let answers = match self
            .meta_prompts
            .sample(&self.layers.meta, name, vars, temperature, seed, n)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                (self.observe)(Event::Step(&format!("meta-prompt `{name}` failed: {e}")));
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        for a in answers {
            match a {
                Ok(text) => out.push(text),
                Err(e) => (self.observe)(Event::Step(&format!("a meta call failed: {e}"))),
            }
        }
        Ok(out)
    }

    /// Check a prompt (render, duplicate of a pool entry, guardrail) and add it to the pool.
    /// Returns its index; a duplicate returns the existing entry's index; a rejected or failed
    /// one is recorded with its reasons and returns `None`.
    pub async fn propose(
        &mut self,
        prompt: PromptFile,
        parents: Vec<String>,
        op: &str,
        answer: &str,
    ) -> Option<usize> {
        let id = format!("p{}", self.pool.len() + self.rejected.len());
        let checks = Checks {
            meta: self.meta_prompts,
            guard: self.guard,
            constraints: &self.problem.constraints,
            probe: self.problem.dev.first(),
            output: &self.problem.brief.output,
            seed: mix(self.settings.seed, self.pool.len() as u64),
        };
        let earlier: Vec<Candidate> = self
            .pool
            .iter()
            .map(|e| Candidate {
                id: e.id.clone(),
                answer: String::new(),
                notes: None,
                prompt: Some(e.prompt.clone()),
                status: Status::Accepted,
                guard: Default::default(),
                score: None,
                report: None,
            })
            .collect();
        let c = checks
            .check(id.clone(), answer.to_string(), None, prompt, &earlier)
            .await;
        (self.observe)(Event::Candidate(&c));
        match &c.status {
            Status::Accepted => {
                self.pool.push(Entry {
                    id,
                    prompt: c.prompt.unwrap_or_default(),
                    parents,
                    op: op.to_string(),
                    round: self.round,
                    scores: BTreeMap::new(),
                    outputs: BTreeMap::new(),
                    feedback: BTreeMap::new(),
                    attrs: BTreeMap::new(),
                });
                Some(self.pool.len() - 1)
            }
            Status::Duplicate(twin) => self.pool.iter().position(|e| &e.id == twin),
            Status::Rejected(why) => {
                self.rejected.push(Rejected {
                    id: c.id.clone(),
                    round: self.round,
                    op: op.to_string(),
                    instruction: c.prompt.as_ref().and_then(|p| p.instruction.clone()),
                    why: why.clone(),
                });
                None
            }
            Status::Failed(why) => {
                self.rejected.push(Rejected {
                    id: c.id.clone(),
                    round: self.round,
                    op: op.to_string(),
                    instruction: None,
                    why: vec![why.clone()],
                });
                None
            }
        }
    }

    /// A prompt from a meta answer: the instruction read from it, in `frame`.
    pub async fn propose_instruction(
        &mut self,
        answer: &str,
        frame: &Frame,
        parents: Vec<String>,
        op: &str,
    ) -> Option<usize> {
        let (instruction, _) = crate::candidate::instruction_from(answer);
        if instruction.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
            return None;
        }
        let name = self.problem.seed_prompt.name.clone();
        let prompt = frame.prompt(&name, &instruction, &self.problem.constraints);
        self.propose(prompt, parents, op, answer).await
    }

    /// The first `n` dev examples of the run's seeded order.
    pub fn rung(&self, n: usize) -> Vec<usize> {
        self.order.iter().copied().take(n).collect()
    }

    /// Score entry `idx` on dev examples `examples` (only the missing ones are evaluated and
    /// counted). Returns its mean over them; `Err` when the budget cannot cover them.
    pub async fn score(&mut self, idx: usize, examples: &[usize]) -> Result<f64, StopReason> {
        self.check()?;
        let missing: Vec<usize> = examples
            .iter()
            .copied()
            .filter(|i| !self.pool[idx].scores.contains_key(i))
            .collect();
        if !missing.is_empty() {
            let left = self
                .budget
                .max_metric_calls
                .saturating_sub(self.reserve + self.metric_calls);
            if (missing.len() as u64) > left {
                return Err(StopReason::MetricCalls);
            }
            let subset: Vec<Example> = missing
                .iter()
                .map(|&i| self.problem.dev[i].clone())
                .collect();
            let label = self.pool[idx].id.clone();
            let observe = self.observe;
            let progress = |done, total| {
                observe(Event::Evaluating {
                    label: &label,
                    done,
                    total,
                })
            };
            let results = evaluate(self, &self.pool[idx].prompt, &subset, &progress).await;
            self.metric_calls += missing.len() as u64;
            self.calls_this_round += missing.len() as u64;
            for (i, r) in missing.iter().zip(results) {
                self.pool[idx].scores.insert(*i, r.score);
                self.pool[idx].outputs.insert(*i, r.output);
                if let Some(f) = r.feedback {
                    self.pool[idx].feedback.insert(*i, f);
                }
            }
        }
        let e = &self.pool[idx];
        Ok(examples.iter().map(|i| e.scores[i]).sum::<f64>() / examples.len().max(1) as f64)
    }

    /// Evaluate `prompt` on examples outside the dev split (a teacher run on training data, for
    /// bootstrapped demonstrations); counted against the metric-call budget like any other.
    pub async fn evaluate_extra(
        &mut self,
        prompt: &PromptFile,
        examples: &[Example],
    ) -> Result<Vec<ExampleResult>, StopReason> {
        self.check()?;
        let left = self
            .budget
            .max_metric_calls
            .saturating_sub(self.reserve + self.metric_calls);
        if examples.len() as u64 > left {
            return Err(StopReason::MetricCalls);
        }
        let observe = self.observe;
        let progress = |done, total| {
            observe(Event::Evaluating {
                label: "teacher on train",
                done,
                total,
            })
        };
        let results = evaluate(self, prompt, examples, &progress).await;
        self.metric_calls += examples.len() as u64;
        self.calls_this_round += examples.len() as u64;
        Ok(results)
    }

    /// Dev examples `idxs` still lack (what scoring them all on the whole split would cost).
    pub fn unscored(&self, idxs: &[usize]) -> u64 {
        let n_dev = self.problem.dev.len();
        idxs.iter()
            .map(|&i| {
                (0..n_dev)
                    .filter(|k| !self.pool[i].scores.contains_key(k))
                    .count() as u64
            })
            .sum()
    }

    /// Record calls a selection strategy did not spend compared with scoring every candidate
    /// on the whole dev split.
    pub fn saved(&mut self, full_cost: u64, calls_before: u64) {
        let spent = self.metric_calls - calls_before;
        self.saved_calls += full_cost.saturating_sub(spent);
    }

    /// Successive halving over dev: all of `idxs` on the first rung (`minibatch` examples),
    /// the better half on twice as many, …, until `keep` survive on the whole dev split.
    /// Returns the survivors, best first. Calls not spent on losers are counted as saved.
    pub async fn race(&mut self, idxs: Vec<usize>, keep: usize) -> Result<Vec<usize>, StopReason> {
        let n_dev = self.problem.dev.len();
        let keep = keep.max(1);
        let mut alive = idxs;
        alive.dedup();
        let mut size = self.settings.minibatch.min(n_dev).max(1);
        let full_cost: u64 = alive
            .iter()
            .map(|&i| {
                (0..n_dev)
                    .filter(|k| !self.pool[i].scores.contains_key(k))
                    .count() as u64
            })
            .sum();
        let before = self.metric_calls;
        loop {
            let rung = self.rung(size);
            let mut scored = Vec::new();
            for &i in &alive {
                scored.push((i, self.score(i, &rung).await?));
            }
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if size >= n_dev {
                self.saved(full_cost, before);
                return Ok(scored.into_iter().take(keep).map(|(i, _)| i).collect());
            }
            let next = (alive.len().div_ceil(2)).max(keep);
            alive = scored.into_iter().take(next).map(|(i, _)| i).collect();
            size = (size * 2).min(n_dev);
        }
    }

    /// The pool entry with the best mean over the whole dev split (among those scored on all of
    /// it); the seed when nothing else is.
    pub fn best(&self) -> usize {
        let n = self.problem.dev.len();
        let mut best = 0;
        let mut best_mean = f64::NEG_INFINITY;
        for (i, e) in self.pool.iter().enumerate() {
            if e.scores.len() == n
                && let Some(m) = e.mean()
                && m > best_mean
            {
                best = i;
                best_mean = m;
            }
        }
        best
    }

    /// Entries ordered by mean (best first) among those scored on at least `min` examples.
    pub fn ranked(&self, min: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.pool.len())
            .filter(|&i| self.pool[i].scores.len() >= min.max(1))
            .collect();
        v.sort_by(|&a, &b| {
            let (ma, mb) = (
                self.pool[a].mean().unwrap_or(0.0),
                self.pool[b].mean().unwrap_or(0.0),
            );
            mb.total_cmp(&ma).then(a.cmp(&b))
        });
        v
    }
}

/// Evaluate `prompt` on `examples` with the execution model; a prompt that does not render
/// scores 0 on every example (it passed the render check on a probe, so this is rare).
async fn evaluate(
    ctx: &Ctx<'_>,
    prompt: &PromptFile,
    examples: &[Example],
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<ExampleResult> {
    let p = &ctx.problem;
    match evaluator::evaluate(
        prompt,
        &ctx.layers.execution,
        &p.scorer,
        examples,
        &p.options,
        progress,
    )
    .await
    {
        Ok(r) => r.results,
        Err(e) => examples
            .iter()
            .map(|ex| ExampleResult {
                id: ex.id.clone(),
                input: ex.vars.clone(),
                output: String::new(),
                expected: ex.expected.clone(),
                score: 0.0,
                passed: false,
                scores: BTreeMap::new(),
                feedback: Some(e.to_string()),
                label_probs: None,
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: Some(0.0),
                latency_ms: 0,
                cached: false,
                error: Some(e.to_string()),
            })
            .collect(),
    }
}

/// The outcome of a run.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub algorithm: String,
    pub stop: StopReason,
    pub rounds: Vec<RoundStats>,
    pub pool: Vec<Entry>,
    pub rejected: Vec<Rejected>,
    /// The best candidate by dev score (may be the seed).
    pub best: String,
    /// The kept prompt: the best, or the seed when the best is not significantly better.
    pub winner: String,
    pub kept_seed: bool,
    pub seed_dev: Estimate,
    pub best_dev: Estimate,
    /// Best vs seed on dev (paired).
    pub dev_test: Paired,
    /// Seed and winner on the test split, once, at the end (when there is one).
    pub seed_test: Option<Estimate>,
    pub winner_test: Option<Estimate>,
    pub test_paired: Option<Paired>,
    pub metric_calls: u64,
    pub meta_calls: u64,
    pub saved_calls: u64,
    pub meta_usage: LayerUsage,
    pub execution_usage: LayerUsage,
    pub wall_secs: f64,
}

impl Outcome {
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.pool.iter().find(|e| e.id == id)
    }
}

/// Where a run keeps its files.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.json")
    }
}

/// Run `optimizer` on `problem` (from `resume` when given), checkpointing into `dir`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    optimizer: &mut dyn crate::algo::Optimizer,
    meta_prompts: &MetaPrompts,
    layers: &Layers,
    guard: &Guard,
    problem: &Problem,
    settings: &Settings,
    budget: &Budget,
    task_path: &Path,
    dir: &RunDir,
    resume: Option<Checkpoint>,
    observe: Observer<'_>,
) -> Result<Outcome, RunError> {
    let n_dev = problem.dev.len();
    if n_dev == 0 {
        return Err(RunError::Setup("the dev split has no examples".into()));
    }
    let reserve = 2 * problem.test.len() as u64;
    if budget.max_metric_calls < reserve + n_dev as u64 {
        return Err(RunError::Setup(format!(
            "a budget of {} metric calls cannot even score the seed prompt on dev ({n_dev}) and \
             keep {reserve} for the final test evaluation; raise --max-metric-calls or use \
             --dev-limit / --test-limit",
            budget.max_metric_calls
        )));
    }
    std::fs::create_dir_all(&dir.0)
        .map_err(|e| RunError::Setup(format!("cannot create {}: {e}", dir.0.display())))?;
    let mut order: Vec<usize> = (0..n_dev).collect();
    rand::seq::SliceRandom::shuffle(
        &mut order[..],
        &mut StdRng::seed_from_u64(mix(settings.seed, 0xD0)),
    );
    let mut ctx = Ctx {
        meta_prompts,
        layers,
        guard,
        problem,
        settings,
        budget,
        pool: Vec::new(),
        rejected: Vec::new(),
        round: 0,
        rng: StdRng::seed_from_u64(mix(settings.seed, 0)),
        order,
        metric_calls: 0,
        meta_calls: 0,
        reserve,
        calls_this_round: 0,
        saved_calls: 0,
        base_meta: LayerUsage::default(),
        base_execution: LayerUsage::default(),
        wall_before: 0.0,
        started: Instant::now(),
        observe,
    };
    let mut rounds: Vec<RoundStats> = Vec::new();
    let mut stop = None;
    if let Some(cp) = resume {
        ctx.pool = cp.pool;
        ctx.rejected = cp.rejected;
        ctx.round = cp.round;
        ctx.metric_calls = cp.metric_calls;
        ctx.meta_calls = cp.meta_calls;
        ctx.saved_calls = cp.saved_calls;
        ctx.base_meta = cp.meta_usage;
        ctx.base_execution = cp.execution_usage;
        ctx.wall_before = cp.wall_secs;
        rounds = cp.rounds;
        stop = cp.stop;
        observe(Event::Step(&format!(
            "resuming after round {} ({} candidates, {} metric calls so far)",
            ctx.round,
            ctx.pool.len(),
            ctx.metric_calls
        )));
    } else {
        // Round 0: the seed prompt, on all of dev.
        let mut seed = problem.seed_prompt.clone();
        if seed.constraints.is_empty() {
            seed.constraints.clone_from(&problem.constraints);
        }
        ctx.pool.push(Entry {
            id: "p0".into(),
            prompt: seed,
            parents: Vec::new(),
            op: "seed".into(),
            round: 0,
            scores: BTreeMap::new(),
            outputs: BTreeMap::new(),
            feedback: BTreeMap::new(),
            attrs: BTreeMap::new(),
        });
        let all = ctx.rung(n_dev);
        ctx.score(0, &all).await.map_err(|s| {
            RunError::Setup(format!("cannot score the seed prompt: {}", s.describe()))
        })?;
        rounds.push(stats(&ctx, 0, 0, 0, None));
        save(&ctx, optimizer.name(), task_path, &rounds, None, dir)?;
    }
    let mut since_improvement = stale_rounds(&rounds, n_dev);
    while stop.is_none() {
        if ctx.round >= settings.rounds {
            stop = Some(StopReason::Rounds);
            break;
        }
        ctx.round += 1;
        ctx.rng = StdRng::seed_from_u64(mix(settings.seed, ctx.round as u64));
        ctx.calls_this_round = 0;
        let before_pool = ctx.pool.len();
        let before_rejected = ctx.rejected.len();
        let best_before_round = ctx.pool[ctx.best()].mean().unwrap_or(0.0);
        observe(Event::Step(&format!(
            "round {} · meta temperature {:.2}",
            ctx.round,
            ctx.temperature()
        )));
        let result = optimizer.round(&mut ctx).await;
        let new: Vec<f64> = ctx.pool[before_pool..]
            .iter()
            .filter_map(Entry::mean)
            .collect();
        let proposed = ctx.pool.len() - before_pool + ctx.rejected.len() - before_rejected;
        let mean = (!new.is_empty()).then(|| new.iter().sum::<f64>() / new.len() as f64);
        let r = stats(
            &ctx,
            ctx.round,
            proposed,
            ctx.rejected.len() - before_rejected,
            mean,
        );
        let improved = r.best > best_before_round + significant(n_dev);
        observe(Event::Round(&r));
        rounds.push(r);
        match result {
            Err(s) => stop = Some(s),
            Ok(()) => {
                since_improvement = if improved { 0 } else { since_improvement + 1 };
                if since_improvement >= settings.patience {
                    stop = Some(StopReason::Converged);
                }
            }
        }
        save(&ctx, optimizer.name(), task_path, &rounds, None, dir)?;
    }
    let stop = stop.unwrap_or(StopReason::Rounds);
    finish(ctx, optimizer.name(), task_path, rounds, stop, dir).await
}

/// The smallest improvement of the best dev mean that counts: one example's worth, at least
/// half a point.
fn significant(n_dev: usize) -> f64 {
    (1.0 / n_dev as f64).max(0.005)
}

/// How many of the last rounds did not improve the best significantly.
fn stale_rounds(rounds: &[RoundStats], n_dev: usize) -> usize {
    rounds
        .windows(2)
        .rev()
        .take_while(|w| w[1].best <= w[0].best + significant(n_dev))
        .count()
}

fn stats(
    ctx: &Ctx<'_>,
    round: usize,
    proposed: usize,
    rejected: usize,
    mean: Option<f64>,
) -> RoundStats {
    let best = ctx.best();
    let (meta, exec) = ctx.costs();
    RoundStats {
        round,
        temperature: ctx.temperature(),
        proposed,
        rejected,
        best: ctx.pool[best].mean().unwrap_or(0.0),
        best_id: ctx.pool[best].id.clone(),
        mean,
        metric_calls: ctx.metric_calls,
        meta_calls: ctx.meta_calls,
        meta_cost_usd: meta.cost_usd,
        execution_cost_usd: exec.cost_usd,
        wall_secs: ctx.wall(),
    }
}

fn save(
    ctx: &Ctx<'_>,
    algorithm: &str,
    task: &Path,
    rounds: &[RoundStats],
    stop: Option<StopReason>,
    dir: &RunDir,
) -> Result<(), RunError> {
    let (meta, exec) = ctx.costs();
    let cp = Checkpoint {
        algorithm: algorithm.into(),
        task: task.to_path_buf(),
        settings: ctx.settings.clone(),
        budget: ctx.budget.clone(),
        round: ctx.round,
        pool: ctx.pool.clone(),
        rejected: ctx.rejected.clone(),
        rounds: rounds.to_vec(),
        metric_calls: ctx.metric_calls,
        meta_calls: ctx.meta_calls,
        saved_calls: ctx.saved_calls,
        meta_usage: meta,
        execution_usage: exec,
        wall_secs: ctx.wall(),
        stop,
    };
    cp.save(&dir.checkpoint())
        .map_err(|e| RunError::Setup(format!("cannot write {}: {e}", dir.checkpoint().display())))
}

/// Full dev for the best, the paired test against the seed, the test split once.
async fn finish(
    mut ctx: Ctx<'_>,
    algorithm: &str,
    task: &Path,
    rounds: Vec<RoundStats>,
    stop: StopReason,
    dir: &RunDir,
) -> Result<Outcome, RunError> {
    let n_dev = ctx.problem.dev.len();
    let best = ctx.best();
    let all: Vec<usize> = (0..n_dev).collect();
    let scores = |e: &Entry| all.iter().map(|i| e.scores[i]).collect::<Vec<f64>>();
    let seed_scores = scores(&ctx.pool[0]);
    let best_scores = scores(&ctx.pool[best]);
    let dev_test = stats::paired_bootstrap(&seed_scores, &best_scores, BOOTSTRAP_SEED);
    let kept_seed = best == 0 || !(dev_test.p_value < 0.05 && dev_test.low > 0.0);
    let winner = if kept_seed { 0 } else { best };
    // The test split, once: the reserve guarantees the budget for it.
    ctx.reserve = 0;
    let (mut seed_test, mut winner_test, mut test_paired) = (None, None, None);
    if !ctx.problem.test.is_empty() {
        let n_test = ctx.problem.test.len() as u64;
        let s = test_scores(&ctx, 0).await;
        ctx.metric_calls += n_test;
        seed_test = Some(stats::bootstrap(&s, BOOTSTRAP_SEED));
        if winner != 0 {
            let w = test_scores(&ctx, winner).await;
            ctx.metric_calls += n_test;
            winner_test = Some(stats::bootstrap(&w, BOOTSTRAP_SEED));
            test_paired = Some(stats::paired_bootstrap(&s, &w, BOOTSTRAP_SEED));
        } else {
            winner_test = seed_test;
        }
    }
    save(&ctx, algorithm, task, &rounds, Some(stop), dir)?;
    let (meta, exec) = ctx.costs();
    Ok(Outcome {
        algorithm: algorithm.into(),
        stop,
        best: ctx.pool[best].id.clone(),
        winner: ctx.pool[winner].id.clone(),
        kept_seed,
        seed_dev: stats::bootstrap(&seed_scores, BOOTSTRAP_SEED),
        best_dev: stats::bootstrap(&best_scores, BOOTSTRAP_SEED),
        dev_test,
        seed_test,
        winner_test,
        test_paired,
        metric_calls: ctx.metric_calls,
        meta_calls: ctx.meta_calls,
        saved_calls: ctx.saved_calls,
        meta_usage: meta,
        execution_usage: exec,
        wall_secs: ctx.wall(),
        rounds,
        rejected: ctx.rejected,
        pool: ctx.pool,
    })
}

async fn test_scores(ctx: &Ctx<'_>, idx: usize) -> Vec<f64> {
    let observe = ctx.observe;
    let label = format!("{} on test", ctx.pool[idx].id);
    let progress = |done, total| {
        observe(Event::Evaluating {
            label: &label,
            done,
            total,
        })
    };
    evaluate(ctx, &ctx.pool[idx].prompt, &ctx.problem.test, &progress)
        .await
        .iter()
        .map(|r| r.score)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}
