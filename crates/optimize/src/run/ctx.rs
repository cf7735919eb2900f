//! What a run borrows ([`Runner`]), an optimizer's handle on the run ([`Ctx`]) and the trait
//! optimizers implement ([`Optimizer`]). Through the `Ctx` an optimizer runs meta-prompts,
//! proposes prompts and scores them; the `Ctx` keeps the pool, and its [`Ledger`] counts every
//! call against the budget.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use metaprompt_eval::{Example, PromptFile};
use metaprompt_llm::{LayerUsage, Prompt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::budget::{Ahead, Budget, Halt, Over, Spend, StopReason};
use super::checkpoint::RunStore;
use super::ledger::Ledger;
use super::pool::{Entry, Rejected};
use super::settings::{Problem, Settings};
use crate::brief::Frame;
use crate::candidate::{Candidate, Checks, Layers, Status};
use crate::guard::Guard;
use crate::junk::Screen;
use crate::meta::MetaPrompts;
use crate::proxy::PROXY_EXAMPLES;
use crate::{Event, Observer};

/// Tokens a meta sample is expected to generate when the meta-prompt does not render (it fails
/// below, and says why).
const META_TOKENS_GUESS: u64 = 300;

/// What a run borrows from its caller.
#[derive(Clone)]
pub struct Runner<'a> {
    pub meta_prompts: &'a MetaPrompts,
    pub layers: &'a Layers,
    pub guard: &'a Guard,
    pub problem: &'a Problem,
    pub settings: &'a Settings,
    pub budget: &'a Budget,
    /// The task file, recorded in the checkpoint (a resume rebuilds the problem from it).
    pub task: &'a Path,
    /// Where the checkpoint goes.
    pub store: &'a dyn RunStore,
    pub observe: Observer<'a>,
    /// Cancels the run at its next safe point.
    pub cancel: CancellationToken,
}

impl std::fmt::Debug for Runner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("task", &self.task)
            .field("store", &self.store.location())
            .field("settings", self.settings)
            .field("budget", self.budget)
            .finish_non_exhaustive()
    }
}

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

/// An optimizer's handle on the run. The six references at the top are the [`Runner`]'s, copied
/// on purpose rather than holding the runner: an algorithm sees what it searches with (the
/// problem, the layers, the meta-prompts, the guard, the settings, the budget) and not what
/// only the run may touch (the checkpoint store, the task path, the observer, cancellation).
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
    /// What the run has spent and counted.
    pub(super) ledger: Ledger,
    pub(super) observe: Observer<'a>,
    pub(super) cancel: CancellationToken,
    /// What meta-written instructions are screened against (built from the problem).
    pub(super) screen: Screen,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("round", &self.round)
            .field("pool", &self.pool.len())
            .field("metric_calls", &self.ledger.metric_calls())
            .field("meta_calls", &self.ledger.meta_calls())
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
            ledger: Ledger::new(
                2 * r.problem.confirm.len() as u64,
                2 * r.problem.test.len() as u64,
            ),
            observe: r.observe,
            cancel: r.cancel.clone(),
            screen: Screen::new(
                &r.problem.brief,
                &r.problem.seed_prompt,
                &r.problem
                    .train
                    .iter()
                    .chain(&r.problem.dev)
                    .collect::<Vec<_>>(),
            )
            .with_shown(&r.meta_prompts.shown_instructions()),
        }
    }

    /// The meta temperature of this round.
    pub fn temperature(&self) -> f32 {
        self.settings.schedule.at(self.round, self.settings.rounds)
    }

    /// Metric calls of the search so far.
    pub fn metric_calls(&self) -> u64 {
        self.ledger.metric_calls()
    }

    /// Metric calls the next step may make (see [`Ledger::calls_left`]).
    pub(super) fn calls_left(&self) -> u64 {
        self.ledger.calls_left(self.budget)
    }

    /// Usage per layer over the whole run (before a resume included): (meta, execution).
    pub(super) fn costs(&self) -> (LayerUsage, LayerUsage) {
        self.ledger.costs(self.layers)
    }

    pub(super) fn wall(&self) -> f64 {
        self.ledger.wall()
    }

    /// The safe point before a step spends: cancellation, then the caps other than call
    /// counts, looking ahead at what the step (and the test split's reserve) will cost.
    pub(super) fn check(&self, ahead: Ahead) -> Result<(), Halt> {
        if self.cancel.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        let (meta, exec) = self.costs();
        let spend = Spend {
            meta_usd: meta.cost_usd,
            execution_usd: exec.cost_usd,
            wall_secs: self.wall(),
        };
        let ahead = Ahead {
            reserve: self.ledger.reserve(),
            ..ahead
        };
        match self.budget.check_spend(&spend, self.ledger.rates(), &ahead) {
            Ok(()) => Ok(()),
            Err(Over::Cap(s)) => Err(Halt::Stop(s)),
            Err(Over::Unpriced(cap, meta_layer)) => {
                let model = if meta_layer {
                    &self.layers.meta
                } else {
                    &self.layers.execution
                };
                Err(Halt::Unpriced {
                    model: model.info().name.clone(),
                    cap,
                })
            }
        }
    }

    /// Size of `prompt` rendered for the execution model on the first dev example: what the
    /// cost look-ahead scales by.
    pub fn prompt_chars(&self, prompt: &PromptFile) -> usize {
        let Some(e) = self.problem.dev.first() else {
            return 0;
        };
        let output = &self.problem.options.output;
        let mut vars = e.vars.clone();
        vars.remove(output);
        let format = self.layers.execution.info().format;
        prompt
            .longest()
            .render(&vars, format, Some(output))
            .map_or(0, |p| chars(&p))
    }

    /// Run meta-prompt `name` `n` times at this round's temperature (fewer when the meta-call
    /// or meta-token budget allows fewer). Failed samples are dropped (and logged).
    pub async fn meta(&mut self, name: &str, vars: &Value, n: u32) -> Result<Vec<String>, Halt> {
        let rendered = self
            .meta_prompts
            .render(name, self.layers.meta.info().format, vars);
        let meta_chars = rendered.as_ref().map_or(0, |m| chars(&m.request.prompt));
        // Tokens a sample is expected to generate: the mean so far, else the cap it asks for.
        let (spent, _) = self.costs();
        let per_call = if spent.calls > 0 {
            spent.output_tokens.div_ceil(spent.calls)
        } else {
            rendered
                .as_ref()
                .map_or(META_TOKENS_GUESS, |m| u64::from(m.request.max_tokens))
        };
        let by_calls = self.budget.meta_calls_left(self.ledger.meta_calls());
        let by_tokens = self
            .budget
            .meta_calls_by_tokens(spent.output_tokens, per_call);
        let n = u64::from(n).min(by_calls).min(by_tokens) as u32;
        self.check(Ahead {
            meta_calls: u64::from(n),
            meta_chars,
            ..Ahead::default()
        })?;
        if n == 0 {
            return Err(if by_tokens < by_calls {
                StopReason::MetaTokens
            } else {
                StopReason::MetaCalls
            }
            .into());
        }
        let seed = mix(
            mix(self.settings.seed, self.round as u64),
            self.ledger.meta_calls(),
        );
        self.ledger.meta_spent(u64::from(n));
        let temperature = self.temperature();
        let before = self.meta_cost();
        let started = Instant::now();
        let sampled = self
            .meta_prompts
            .sample(&self.layers.meta, name, vars, temperature, seed, n)
            .await;
        let usd = self.meta_cost().zip(before).map(|(a, b)| a - b);
        self.ledger.meta_rate(
            u64::from(n),
            meta_chars,
            usd,
            started.elapsed().as_secs_f64(),
        );
        let answers = match sampled {
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
            format: Some(self.layers.execution.info().format),
            max_prompt_tokens: self.settings.max_prompt_tokens,
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

    /// Say what the run is doing (a step of the run's log).
    pub fn step(&self, message: &str) {
        (self.observe)(Event::Step(message));
    }

    /// Screen a meta-written instruction for junk ([`crate::junk`]): `false` when it is junk,
    /// which is then counted and recorded as a rejection (by `op`) with its reason.
    pub fn screen_instruction(&mut self, instruction: &str, op: &str) -> bool {
        let junk = self.screen.check(instruction);
        self.ledger.screened_one(junk);
        let Some(junk) = junk else {
            return true;
        };
        let id = format!("p{}", self.pool.len() + self.rejected.len());
        (self.observe)(Event::Step(&format!(
            "{id} rejected before evaluation ({}): {:?}",
            junk.describe(),
            instruction.chars().take(80).collect::<String>()
        )));
        self.rejected.push(Rejected {
            id,
            round: self.round,
            op: op.to_string(),
            instruction: (!instruction.is_empty()).then(|| instruction.to_string()),
            why: vec![junk.describe().to_string()],
        });
        false
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
        if !self.screen_instruction(&instruction, op) {
            return None;
        }
        let name = self.problem.seed_prompt.name.clone();
        let prompt = frame.prompt(&name, &instruction, &self.problem.constraints);
        self.propose(prompt, parents, op, answer).await
    }

    /// Whether this run ranks candidates by the likelihood proxy: asked for
    /// ([`Settings::proxy`]) and the execution model scores continuations.
    pub fn proxy_ranks(&self) -> bool {
        self.settings.proxy && self.layers.execution.can_score()
    }

    /// The `keep` most promising of `idxs` by the likelihood proxy ([`crate::proxy`]), best
    /// first, each ranked one's `proxy` recorded; all of `idxs` when there are no more than
    /// `keep` or the run does not rank by the proxy ([`Ctx::proxy_ranks`]). The proxy examples are the
    /// first training examples (dev's racing order without a train split); their scoring
    /// calls are counted as `proxy_calls` and priced into the dollar and wall caps' look-ahead.
    pub async fn most_likely(&mut self, idxs: &[usize], keep: usize) -> Result<Vec<usize>, Halt> {
        if idxs.len() <= keep || !self.proxy_ranks() {
            return Ok(idxs.to_vec());
        }
        let examples: Vec<Example> = if self.problem.train.is_empty() {
            self.order
                .iter()
                .take(PROXY_EXAMPLES)
                .map(|&i| self.problem.dev[i].clone())
                .collect()
        } else {
            self.problem
                .train
                .iter()
                .take(PROXY_EXAMPLES)
                .cloned()
                .collect()
        };
        let chars = idxs
            .iter()
            .map(|&i| self.prompt_chars(&self.pool[i].prompt))
            .max()
            .unwrap_or(0);
        self.check(Ahead {
            metric_calls: (idxs.len() * examples.len()) as u64,
            metric_chars: chars,
            ..Ahead::default()
        })?;
        let output = self.problem.options.output.clone();
        let mut ranked: Vec<(usize, f64)> = Vec::new();
        for &i in idxs {
            let prompt = self.pool[i].prompt.clone();
            let l =
                crate::proxy::likelihood(&self.layers.execution, &prompt, &examples, &output).await;
            self.ledger.proxy_spent(examples.len() as u64);
            match l {
                Ok(v) => {
                    self.pool[i].proxy = Some(v);
                    ranked.push((i, v));
                }
                Err(e) => {
                    (self.observe)(Event::Step(&format!(
                        "{}: no likelihood proxy ({e})",
                        self.pool[i].id
                    )));
                    ranked.push((i, f64::NEG_INFINITY));
                }
            }
        }
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let kept: Vec<usize> = ranked.iter().take(keep).map(|&(i, _)| i).collect();
        (self.observe)(Event::Step(&format!(
            "likelihood proxy on {} examples: racing {} of {} candidates ({})",
            examples.len(),
            kept.len(),
            idxs.len(),
            kept.iter()
                .map(|&i| self.pool[i].id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
        Ok(kept)
    }

    /// What the meta layer has cost in this process.
    fn meta_cost(&self) -> Option<f64> {
        self.layers
            .costs(None, self.layers.execution.as_ref())
            .meta
            .cost_usd
    }
}

/// Size of a prompt (bytes of its text or its messages).
fn chars(p: &Prompt) -> usize {
    match p {
        Prompt::Text(t) => t.len(),
        Prompt::Chat(m) => m.iter().map(|m| m.content.len()).sum(),
    }
}
