//! An optimizer's handle on the run ([`Ctx`]) and the trait optimizers implement
//! ([`Optimizer`]). Through the `Ctx` an optimizer runs meta-prompts, proposes prompts and
//! scores them; the `Ctx` counts every call against the budget and keeps the pool.

use std::time::Instant;

use async_trait::async_trait;
use metaprompt_eval::evaluator::{self, ExampleResult};
use metaprompt_eval::{Example, PromptFile};
use metaprompt_llm::{LayerUsage, Prompt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

use super::budget::{Ahead, Budget, Halt, Over, Rates, Spend, StopReason};
use super::driver::Runner;
use super::pool::{Entry, Rejected, Tally};
use super::settings::{Problem, Settings};
use crate::brief::Frame;
use crate::candidate::{Candidate, Checks, Layers, Status};
use crate::guard::Guard;
use crate::junk::{Screen, Screened};
use crate::meta::MetaPrompts;
use crate::proxy::PROXY_EXAMPLES;
use crate::{Event, Observer};

/// Tokens a meta sample is expected to generate when the meta-prompt does not render (it fails
/// below, and says why).
const META_TOKENS_GUESS: u64 = 300;

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
    /// Metric calls of the search (what `max_metric_calls` bounds).
    pub(super) metric_calls: u64,
    /// Metric calls of the final test evaluation, counted apart from the search.
    pub(super) test_calls: u64,
    /// Set while the final test evaluation runs: calls count as `test_calls`, and failed
    /// pairs are always retried once (the metric-call cap is the search's).
    pub(super) testing: bool,
    pub(super) meta_calls: u64,
    /// Metric calls the final test evaluation will make (2 × |test|): the dollar and wall
    /// caps' look-ahead prices them in before every search step.
    pub(super) reserve: u64,
    pub(super) saved_calls: u64,
    pub(super) base_meta: LayerUsage,
    pub(super) base_execution: LayerUsage,
    pub(super) wall_before: f64,
    pub(super) started: Instant,
    pub(super) observe: Observer<'a>,
    pub(super) cancel: CancellationToken,
    /// Attempted and unscored pairs of the round in flight.
    pub(super) round_tally: Tally,
    /// Unscored pairs over the whole run, by reason.
    pub(super) unscored: BTreeMap<String, u64>,
    /// What calls have cost so far, for the caps' look-ahead.
    pub(super) rates: Rates,
    /// What meta-written instructions are screened against (built from the problem).
    pub(super) screen: Screen,
    /// Instructions screened so far, and those rejected as junk.
    pub(super) screened: Screened,
    /// Scoring calls of the likelihood proxy (one prompt, one example, no decoding).
    pub(super) proxy_calls: u64,
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
            test_calls: 0,
            testing: false,
            meta_calls: 0,
            reserve: 2 * r.problem.test.len() as u64,
            saved_calls: 0,
            base_meta: LayerUsage::default(),
            base_execution: LayerUsage::default(),
            wall_before: 0.0,
            started: Instant::now(),
            observe: r.observe,
            cancel: r.cancel.clone(),
            round_tally: Tally::default(),
            unscored: BTreeMap::new(),
            rates: Rates::default(),
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
            screened: Screened::default(),
            proxy_calls: 0,
        }
    }

    /// The meta temperature of this round.
    pub fn temperature(&self) -> f32 {
        self.settings.schedule.at(self.round, self.settings.rounds)
    }

    /// Metric calls of the search so far.
    pub fn metric_calls(&self) -> u64 {
        self.metric_calls
    }

    /// Metric calls the next step may make: what the search cap leaves, or (during the final
    /// test evaluation) no limit, since its calls are counted apart and bounded by the split.
    fn calls_left(&self) -> u64 {
        if self.testing {
            u64::MAX
        } else {
            self.budget.metric_calls_left(self.metric_calls)
        }
    }

    /// Count `n` metric calls as spent, against the search or the test evaluation.
    fn count(&mut self, n: usize) {
        if self.testing {
            self.test_calls += n as u64;
        } else {
            self.metric_calls += n as u64;
        }
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
            reserve: self.reserve,
            ..ahead
        };
        match self.budget.check_spend(&spend, &self.rates, &ahead) {
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
        let by_calls = self.budget.meta_calls_left(self.meta_calls);
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
        let seed = mix(mix(self.settings.seed, self.round as u64), self.meta_calls);
        self.meta_calls += u64::from(n);
        let temperature = self.temperature();
        let before = self.meta_cost();
        let started = Instant::now();
        let sampled = self
            .meta_prompts
            .sample(&self.layers.meta, name, vars, temperature, seed, n)
            .await;
        let usd = self.meta_cost().zip(before).map(|(a, b)| a - b);
        self.rates.meta(
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

    /// Screen a meta-written instruction for junk ([`crate::junk`]): `false` when it is junk,
    /// which is then counted and recorded as a rejection (by `op`) with its reason.
    pub fn screen_instruction(&mut self, instruction: &str, op: &str) -> bool {
        self.screened.instructions += 1;
        let Some(junk) = self.screen.check(instruction) else {
            return true;
        };
        *self.screened.rejected.entry(junk).or_default() += 1;
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
            self.proxy_calls += examples.len() as u64;
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

    /// Score entry `idx` on dev examples `examples`: only those not evaluated yet are run and
    /// counted; a failed pair is retried once right away, and recorded in the entry's `failed`
    /// if it fails again. Returns the entry's mean over the scored ones among `examples`
    /// (`None`: none is scored). `Err` when the budget cannot cover them, or on cancellation.
    ///
    /// To compare entries, use [`Ctx::paired_means`] on the same examples, not these means:
    /// two entries may have failed on different examples.
    pub async fn score(&mut self, idx: usize, examples: &[usize]) -> Result<Option<f64>, Halt> {
        let missing: Vec<usize> = examples
            .iter()
            .copied()
            .filter(|&i| !self.pool[idx].evaluated(i))
            .collect();
        self.check(Ahead {
            metric_calls: missing.len() as u64,
            metric_chars: self.prompt_chars(&self.pool[idx].prompt),
            ..Ahead::default()
        })?;
        if !missing.is_empty() {
            let left = self.calls_left();
            if (missing.len() as u64) > left {
                return Err(StopReason::MetricCalls.into());
            }
            let subset: Vec<Example> = missing
                .iter()
                .map(|&i| self.problem.dev[i].clone())
                .collect();
            let label = self.pool[idx].id.clone();
            let prompt = self.pool[idx].prompt.clone();
            let done = self.attempt(&prompt, &subset, &label).await;
            self.round_tally.attempted += missing.len() as u64;
            for ((&i, r), settled) in missing.iter().zip(done.results).zip(done.settled) {
                let entry = &mut self.pool[idx];
                match (r.score, r.error) {
                    (Some(score), _) => {
                        entry.scores.insert(i, score);
                        entry.outputs.insert(i, r.output);
                        if let Some(f) = r.feedback {
                            entry.feedback.insert(i, f);
                        }
                    }
                    (None, Some(why)) if settled => {
                        self.round_tally.fail(&why);
                        *self.unscored.entry(why.clone()).or_default() += 1;
                        entry.failed.insert(i, why);
                    }
                    // Not retried (the budget ran out first): left to be evaluated again.
                    (None, _) => self.round_tally.attempted -= 1,
                }
            }
            if let Some(halt) = done.halt {
                return Err(halt);
            }
        }
        let e = &self.pool[idx];
        let scored: Vec<f64> = examples
            .iter()
            .filter_map(|i| e.scores.get(i))
            .copied()
            .collect();
        Ok((!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64))
    }

    /// Means of entries `idxs` on the examples of `on` scored for all of them: the paired
    /// comparison ([`super::paired_means`]); `None` for an entry scored on none of `on`.
    pub fn paired_means(&self, idxs: &[usize], on: &[usize]) -> Vec<Option<f64>> {
        let entries: Vec<&Entry> = idxs.iter().map(|&i| &self.pool[i]).collect();
        super::pool::paired_means(&entries, on)
    }

    /// Entries `idxs`, best first by [`Ctx::paired_means`] on `on` (ties: the earlier entry);
    /// those scored on none of `on` last.
    pub fn rank_on(&self, idxs: &[usize], on: &[usize]) -> Vec<usize> {
        let means = self.paired_means(idxs, on);
        let mut v: Vec<(usize, Option<f64>)> = idxs.iter().copied().zip(means).collect();
        v.sort_by(|a, b| {
            let (x, y) = (
                a.1.unwrap_or(f64::NEG_INFINITY),
                b.1.unwrap_or(f64::NEG_INFINITY),
            );
            y.total_cmp(&x).then(a.0.cmp(&b.0))
        });
        v.into_iter().map(|(i, _)| i).collect()
    }

    /// Evaluate `prompt` on examples outside the dev split (a teacher run on training data, for
    /// bootstrapped demonstrations); counted against the metric-call budget like any other, and
    /// retried like any other. Unscored results (`score: None`) say why in `error`.
    pub async fn evaluate_extra(
        &mut self,
        prompt: &PromptFile,
        examples: &[Example],
    ) -> Result<Vec<ExampleResult>, Halt> {
        self.check(Ahead {
            metric_calls: examples.len() as u64,
            metric_chars: self.prompt_chars(prompt),
            ..Ahead::default()
        })?;
        let left = self.calls_left();
        if examples.len() as u64 > left {
            return Err(StopReason::MetricCalls.into());
        }
        let done = self.attempt(prompt, examples, "teacher on train").await;
        self.round_tally.attempted += examples.len() as u64;
        for (r, &settled) in done.results.iter().zip(&done.settled) {
            match (&r.error, settled) {
                (Some(why), true) if r.score.is_none() => {
                    self.round_tally.fail(why);
                    *self.unscored.entry(why.clone()).or_default() += 1;
                }
                (_, false) => self.round_tally.attempted -= 1,
                _ => {}
            }
        }
        match done.halt {
            Some(halt) => Err(halt),
            None => Ok(done.results),
        }
    }

    /// Evaluate `prompt` on `examples` (the caller has checked the budget for them), then
    /// retry the failed ones once, as far as the budget allows. Every attempt is counted as a
    /// metric call: it was spent.
    pub(super) async fn attempt(
        &mut self,
        prompt: &PromptFile,
        examples: &[Example],
        label: &str,
    ) -> Attempted {
        let prompt_chars = self.prompt_chars(prompt);
        let mut results = match self.timed(prompt, prompt_chars, examples, label).await {
            Ok(r) => r,
            // A prompt that does not render fails the same way every time: no retry.
            Err(why) => {
                self.count(examples.len());
                return Attempted {
                    settled: vec![true; examples.len()],
                    results: examples
                        .iter()
                        .map(|e| ExampleResult::unscored(e, e.vars.clone(), why.clone()))
                        .collect(),
                    halt: None,
                };
            }
        };
        self.count(examples.len());
        let mut settled = vec![true; examples.len()];
        let failed: Vec<usize> = (0..results.len())
            .filter(|&k| !results[k].is_scored())
            .collect();
        if failed.is_empty() {
            return Attempted {
                results,
                settled,
                halt: None,
            };
        }
        let mut halt = self
            .check(Ahead {
                metric_calls: failed.len() as u64,
                metric_chars: prompt_chars,
                ..Ahead::default()
            })
            .err();
        let fit = if halt.is_some() {
            0
        } else {
            let left = self.calls_left();
            failed.len().min(left as usize)
        };
        if fit < failed.len() && halt.is_none() {
            halt = Some(StopReason::MetricCalls.into());
        }
        let (now, later) = failed.split_at(fit);
        for &k in later {
            settled[k] = false;
        }
        if !now.is_empty() {
            let again: Vec<Example> = now.iter().map(|&k| examples[k].clone()).collect();
            let retried = self
                .timed(prompt, prompt_chars, &again, &format!("{label} (retry)"))
                .await;
            self.count(now.len());
            if let Ok(retried) = retried {
                for (&k, r) in now.iter().zip(retried) {
                    results[k] = r;
                }
            }
        }
        Attempted {
            results,
            settled,
            halt,
        }
    }

    /// [`Ctx::evaluate`], its cost and time recorded in the rates of the look-ahead.
    async fn timed(
        &mut self,
        prompt: &PromptFile,
        prompt_chars: usize,
        examples: &[Example],
        label: &str,
    ) -> Result<Vec<ExampleResult>, String> {
        let started = Instant::now();
        let results = self.evaluate(prompt, examples, label).await;
        if let Ok(r) = &results {
            let usd = r.iter().map(|r| r.cost_usd).sum::<Option<f64>>();
            self.rates.execution(
                r.len() as u64,
                prompt_chars,
                usd,
                started.elapsed().as_secs_f64(),
            );
        }
        results
    }

    /// What the meta layer has cost in this process.
    fn meta_cost(&self) -> Option<f64> {
        self.layers
            .costs(None, self.layers.execution.as_ref())
            .meta
            .cost_usd
    }

    /// Evaluate `prompt` on `examples` with the execution model, reporting progress under
    /// `label`; `Err` (why) when the prompt does not render for some example (it passed the
    /// render check on a probe, so this is rare).
    pub(super) async fn evaluate(
        &self,
        prompt: &PromptFile,
        examples: &[Example],
        label: &str,
    ) -> Result<Vec<ExampleResult>, String> {
        let observe = self.observe;
        let progress = |done, total| observe(Event::Evaluating { label, done, total });
        let p = &self.problem;
        evaluator::evaluate(
            prompt,
            &self.layers.execution,
            &p.scorer,
            examples,
            &p.options,
            &progress,
        )
        .await
        .map(|r| r.results)
        .map_err(|e| format!("the prompt does not render: {e}"))
    }
}

/// Size of a prompt (bytes of its text or its messages).
fn chars(p: &Prompt) -> usize {
    match p {
        Prompt::Text(t) => t.len(),
        Prompt::Chat(m) => m.iter().map(|m| m.content.len()).sum(),
    }
}

/// What [`Ctx::attempt`] made of some examples.
#[derive(Debug)]
pub(super) struct Attempted {
    /// Per example: its result, from the retry if it was retried (`score: None` and `error`
    /// set when it failed).
    pub results: Vec<ExampleResult>,
    /// Per example: whether the result is final (scored, or failed after its retry); `false`
    /// for a failure whose retry the budget did not allow.
    pub settled: Vec<bool>,
    /// Why retries were cut short.
    pub halt: Option<Halt>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use metaprompt_llm::testing::ScriptedProvider;
    use metaprompt_llm::{LlmError, ModelInfo, PromptFormat, ProviderKind};

    use super::super::testkit::{self, Kit};

    /// Right with "magic"; the first call for every third review fails, later ones answer.
    fn flaky() -> ScriptedProvider {
        let mut info = ModelInfo::new(ProviderKind::Local, "exec");
        info.format = PromptFormat::Text;
        let seen = Mutex::new(BTreeSet::new());
        ScriptedProvider::new("exec")
            .with_info(info)
            .respond_with(move |r| {
                let i = testkit::review(r);
                if i.is_multiple_of(3) && seen.lock().unwrap().insert(i) {
                    return Err(LlmError::Config("a hiccup".into()));
                }
                Ok(if i % 2 == 1 { "negative" } else { "positive" }.into())
            })
    }

    #[tokio::test]
    async fn a_failed_pair_is_retried_once_right_away_and_both_attempts_are_counted() {
        let kit = Kit::with(testkit::meta_model(), flaky(), testkit::problem(9, 0));
        let mut ctx = kit.ctx();
        let p = kit.add(&mut ctx, "magic");
        let all = ctx.rung(9);
        assert_eq!(ctx.score(p, &all).await.unwrap(), Some(1.0));
        let e = &ctx.pool[p];
        assert_eq!(
            (e.scores.len(), e.failed.len()),
            (9, 0),
            "the retries answered"
        );
        // Reviews 0, 3 and 6 were tried twice.
        assert_eq!(ctx.metric_calls(), 9 + 3);
        assert_eq!((ctx.round_tally.attempted, ctx.round_tally.failed), (9, 0));
    }

    #[tokio::test]
    async fn a_pair_that_fails_twice_is_recorded_as_failed_and_not_tried_again() {
        let mut info = ModelInfo::new(ProviderKind::Local, "exec");
        info.format = PromptFormat::Text;
        let exec = ScriptedProvider::new("exec")
            .with_info(info)
            .respond_with(|r| {
                if testkit::review(r) == 4 {
                    return Err(LlmError::Config("always down".into()));
                }
                Ok("positive".into())
            });
        let kit = Kit::with(testkit::meta_model(), exec, testkit::problem(6, 0));
        let mut ctx = kit.ctx();
        let p = kit.add(&mut ctx, "plainly");
        let all = ctx.rung(6);
        ctx.score(p, &all).await.unwrap();
        let e = &ctx.pool[p];
        assert_eq!(e.scores.len(), 5);
        assert!(e.failed[&4].contains("always down"), "{:?}", e.failed);
        assert!(!e.scores.contains_key(&4), "not a zero");
        assert!(e.complete(6));
        assert_eq!(ctx.metric_calls(), 6 + 1);
        assert_eq!((ctx.round_tally.attempted, ctx.round_tally.failed), (6, 1));
        assert_eq!(ctx.unscored.values().sum::<u64>(), 1);
        // Evaluated for good: scoring again spends nothing.
        ctx.score(p, &all).await.unwrap();
        assert_eq!(ctx.metric_calls(), 7);
        assert_eq!(ctx.pending(&[p]), 0);
    }

    #[tokio::test]
    async fn a_retry_the_metric_budget_cannot_cover_is_left_for_later() {
        let mut info = ModelInfo::new(ProviderKind::Local, "exec");
        info.format = PromptFormat::Text;
        let exec = ScriptedProvider::new("exec")
            .with_info(info)
            .respond_with(|_| Err(LlmError::Config("down".into())));
        let mut kit = Kit::with(testkit::meta_model(), exec, testkit::problem(4, 0));
        kit.budget.max_metric_calls = 6;
        let mut ctx = kit.ctx();
        let p = kit.add(&mut ctx, "plainly");
        let all = ctx.rung(4);
        let e = ctx.score(p, &all).await.unwrap_err();
        assert_eq!(e, super::Halt::Stop(super::StopReason::MetricCalls));
        assert_eq!(ctx.metric_calls(), 6, "never past the cap");
        let entry = &ctx.pool[p];
        assert_eq!((entry.scores.len(), entry.failed.len()), (0, 2));
        assert_eq!(
            ctx.round_tally.attempted, 2,
            "the two not retried are not settled"
        );
    }
}
