//! An optimizer's handle on the run ([`Ctx`]) and the trait optimizers implement
//! ([`Optimizer`]). Through the `Ctx` an optimizer runs meta-prompts, proposes prompts and
//! scores them; the `Ctx` counts every call against the budget and keeps the pool.

use std::time::Instant;

use async_trait::async_trait;
use metaprompt_eval::evaluator::{self, ExampleResult};
use metaprompt_eval::{Example, PromptFile};
use metaprompt_llm::LayerUsage;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, Halt, Spend, StopReason};
use super::driver::Runner;
use super::pool::{Entry, Rejected};
use super::settings::{Problem, Settings};
use crate::brief::Frame;
use crate::candidate::{Candidate, Checks, Layers, Status};
use crate::guard::Guard;
use crate::meta::MetaPrompts;
use crate::{Event, Observer};

/// An optimization algorithm: each round it proposes candidates through the [`Ctx`] and
/// selects among them; the run owns the budget, evaluation, checkpoints, convergence and the
/// verdict. Futures are `Send`, so a server can spawn a run.
#[async_trait]
pub trait Optimizer: Send + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// One round. `Err` ends the run: a cap was hit or nothing is left to try
    /// ([`Halt::Stop`]), or the run was cancelled ([`Halt::Cancelled`]; pass it on with `?`).
    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt>;
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
    pub(super) order: Vec<usize>,
    pub(super) metric_calls: u64,
    pub(super) meta_calls: u64,
    /// Metric calls held back for the final test evaluation.
    pub(super) reserve: u64,
    pub(super) saved_calls: u64,
    pub(super) base_meta: LayerUsage,
    pub(super) base_execution: LayerUsage,
    pub(super) wall_before: f64,
    pub(super) started: Instant,
    pub(super) observe: Observer<'a>,
    pub(super) cancel: CancellationToken,
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

/// SplitMix64 of a combination: distinct, well-spread seeds per (seed, round, call).
pub(super) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<'a> Ctx<'a> {
    /// A fresh run's handle: empty pool, round 0, nothing spent.
    pub(super) fn new(r: &Runner<'a>) -> Self {
        let n_dev = r.problem.dev.len();
        let mut order: Vec<usize> = (0..n_dev).collect();
        rand::seq::SliceRandom::shuffle(
            &mut order[..],
            &mut StdRng::seed_from_u64(mix(r.settings.seed, 0xD0)),
        );
        Self {
            meta_prompts: r.meta_prompts,
            layers: r.layers,
            guard: r.guard,
            problem: r.problem,
            settings: r.settings,
            budget: r.budget,
            pool: Vec::new(),
            rejected: Vec::new(),
            round: 0,
            rng: StdRng::seed_from_u64(mix(r.settings.seed, 0)),
            order,
            metric_calls: 0,
            meta_calls: 0,
            reserve: 2 * r.problem.test.len() as u64,
            saved_calls: 0,
            base_meta: LayerUsage::default(),
            base_execution: LayerUsage::default(),
            wall_before: 0.0,
            started: Instant::now(),
            observe: r.observe,
            cancel: r.cancel.clone(),
        }
    }

    /// The meta temperature of this round.
    pub fn temperature(&self) -> f32 {
        self.settings.schedule.at(self.round, self.settings.rounds)
    }

    pub fn metric_calls(&self) -> u64 {
        self.metric_calls
    }

    /// Usage per layer over the whole run (before a resume included): (meta, execution).
    pub(super) fn costs(&self) -> (LayerUsage, LayerUsage) {
        let c = self.layers.costs(None, self.layers.execution.as_ref());
        let mut meta = self.base_meta.clone();
        meta.merge(&c.meta);
        let mut exec = self.base_execution.clone();
        exec.merge(&c.execution);
        (meta, exec)
    }

    pub(super) fn wall(&self) -> f64 {
        self.wall_before + self.started.elapsed().as_secs_f64()
    }

    /// The safe point before anything is spent: cancellation, then the caps other than calls.
    pub fn check(&self) -> Result<(), Halt> {
        if self.cancel.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        let (meta, exec) = self.costs();
        self.budget.check_spend(&Spend {
            meta_usd: meta.cost_usd,
            execution_usd: exec.cost_usd,
            wall_secs: self.wall(),
        })?;
        Ok(())
    }

    /// Run meta-prompt `name` `n` times at this round's temperature (fewer when the meta-call
    /// budget allows fewer). Failed samples are dropped (and logged).
    pub async fn meta(&mut self, name: &str, vars: &Value, n: u32) -> Result<Vec<String>, Halt> {
        self.check()?;
        let left = self.budget.meta_calls_left(self.meta_calls);
        let n = u64::from(n).min(left) as u32;
        if n == 0 {
            return Err(StopReason::MetaCalls.into());
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
                let prompt = c.prompt.unwrap_or_default();
                self.pool
                    .push(Entry::new(id, prompt, parents, op, self.round));
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

    /// Score entry `idx` on dev examples `examples` (only the missing ones are evaluated and
    /// counted). Returns its mean over them; `Err` when the budget cannot cover them.
    pub async fn score(&mut self, idx: usize, examples: &[usize]) -> Result<f64, Halt> {
        self.check()?;
        let missing: Vec<usize> = examples
            .iter()
            .copied()
            .filter(|i| !self.pool[idx].scores.contains_key(i))
            .collect();
        if !missing.is_empty() {
            let left = self
                .budget
                .metric_calls_left(self.metric_calls, self.reserve);
            if (missing.len() as u64) > left {
                return Err(StopReason::MetricCalls.into());
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
            let results = self
                .evaluate(&self.pool[idx].prompt, &subset, &progress)
                .await;
            self.metric_calls += missing.len() as u64;
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
    ) -> Result<Vec<ExampleResult>, Halt> {
        self.check()?;
        let left = self
            .budget
            .metric_calls_left(self.metric_calls, self.reserve);
        if examples.len() as u64 > left {
            return Err(StopReason::MetricCalls.into());
        }
        let observe = self.observe;
        let progress = |done, total| {
            observe(Event::Evaluating {
                label: "teacher on train",
                done,
                total,
            })
        };
        let results = self.evaluate(prompt, examples, &progress).await;
        self.metric_calls += examples.len() as u64;
        Ok(results)
    }

    /// Evaluate `prompt` on `examples` with the execution model; a prompt that does not render
    /// scores 0 on every example (it passed the render check on a probe, so this is rare).
    pub(super) async fn evaluate(
        &self,
        prompt: &PromptFile,
        examples: &[Example],
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<ExampleResult> {
        let p = &self.problem;
        match evaluator::evaluate(
            prompt,
            &self.layers.execution,
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
}
