//! `mipro` — joint search over instruction × demonstration set, after MIPRO (Opsahl-Ong et
//! al., 2024, *Optimizing Instructions and Demonstrations for Multi-Stage Language Model
//! Programs*, arXiv:2406.11695), instead of `auto`'s alternation.
//!
//! A candidate is a pair: one instruction from the run's instruction set, one demonstration
//! set from its demonstration set. Round 1 fills both: `per_round` instructions induced from
//! training subsets (`ape`'s meta-prompt, screened for junk) beside the seed's, and
//! `per_round` label-balanced demonstration sets beside the seed's, and one per-input set (the
//! `k` training examples nearest each input, as `fewshot`'s rival picks them). Every round then proposes
//! pairs not tried yet, chosen by a surrogate of each component's worth: the mean dev score of
//! the candidates that used it (unscored components get the mean of all, plus an exploration
//! bonus), so that a good instruction is tried with the good demonstration sets and vice versa
//! (MIPRO fits a TPE model over the same per-component choices; this is its simplest form).
//! With `--proxy`, when the execution model scores continuations, twice as many pairs are drawn and the
//! likelihood proxy keeps the most likely half. From round 2 on, each round also adds one new
//! instruction (a paraphrase of the best one's, or a fresh induction when it has none) and one
//! new demonstration set (one demonstration of the best set swapped), so the sets keep
//! growing. Pairs race against the incumbent (successive halving).

use async_trait::async_trait;
use metaprompt_eval::PromptFile;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::algo::fewshot::{Demo, demo_vars, knn_embedding, knn_prompt};
use crate::algo::{Optimizer, shown};
use crate::brief::{Frame, pick_demos};
use crate::candidate::instruction_from;
use crate::run::{Ctx, Halt, StopReason};

/// Demonstrations per induction subset (as `ape`).
const SUBSET: usize = 5;
/// Exploration bonus of a component no candidate has been scored with yet.
const BONUS: f64 = 0.05;
/// Where the seed entry keeps the component sets.
const INSTRUCTIONS: &str = "mipro.instructions";
const DEMOS: &str = "mipro.demos";

#[derive(Debug, Default)]
pub struct Mipro;

/// The instruction set and the demonstration set: every component of the pool's candidates,
/// and those made but not paired yet (kept in the seed entry's `attrs`, so they survive a
/// resume with the checkpoint).
struct Parts {
    instructions: Vec<Option<String>>,
    demos: Vec<DemoSet>,
}

/// A demonstration component: one fixed set, or `knn` picked per input from the training
/// examples (stored as a list, or as `{"knn": k}`: checkpoints from before keep loading).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum DemoSet {
    Fixed(Vec<Demo>),
    Knn { knn: usize },
}

impl DemoSet {
    fn of(prompt: &PromptFile) -> Self {
        match &prompt.selector {
            Some(s) => DemoSet::Knn { knn: s.k },
            None => DemoSet::Fixed(prompt.demos.clone()),
        }
    }
}

fn norm(instruction: &Option<String>) -> Option<String> {
    instruction
        .as_deref()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
}

impl Parts {
    fn of(ctx: &Ctx<'_>) -> Self {
        let attr = |k: &str| ctx.pool.first().and_then(|e| e.attrs.get(k));
        let mut p = Parts {
            instructions: attr(INSTRUCTIONS)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
            demos: attr(DEMOS)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
        };
        for e in &ctx.pool {
            p.add_instruction(norm(&e.prompt.instruction));
            p.add_demos(DemoSet::of(&e.prompt));
        }
        p
    }

    fn save(&self, ctx: &mut Ctx<'_>) {
        if let Some(seed) = ctx.pool.first_mut() {
            seed.attrs.insert(
                INSTRUCTIONS.into(),
                serde_json::to_string(&self.instructions).unwrap_or_default(),
            );
            seed.attrs.insert(
                DEMOS.into(),
                serde_json::to_string(&self.demos).unwrap_or_default(),
            );
        }
    }

    fn add_instruction(&mut self, i: Option<String>) {
        if !self.instructions.contains(&i) {
            self.instructions.push(i);
        }
    }

    fn add_demos(&mut self, d: DemoSet) {
        if !self.demos.contains(&d) {
            self.demos.push(d);
        }
    }

    /// Each component's surrogate worth: the mean score of the scored candidates that use it,
    /// else the mean of all scored candidates plus [`BONUS`].
    fn worth(&self, ctx: &Ctx<'_>) -> (Vec<f64>, Vec<f64>) {
        let scored: Vec<(Option<String>, DemoSet, f64)> = ctx
            .pool
            .iter()
            .filter_map(|e| {
                Some((
                    norm(&e.prompt.instruction),
                    DemoSet::of(&e.prompt),
                    e.mean()?,
                ))
            })
            .collect();
        let overall = if scored.is_empty() {
            0.0
        } else {
            scored.iter().map(|s| s.2).sum::<f64>() / scored.len() as f64
        };
        let mean = |xs: Vec<f64>| {
            if xs.is_empty() {
                overall + BONUS
            } else {
                xs.iter().sum::<f64>() / xs.len() as f64
            }
        };
        let instructions = self
            .instructions
            .iter()
            .map(|i| mean(scored.iter().filter(|s| &s.0 == i).map(|s| s.2).collect()))
            .collect();
        let demos = self
            .demos
            .iter()
            .map(|d| mean(scored.iter().filter(|s| &s.1 == d).map(|s| s.2).collect()))
            .collect();
        (instructions, demos)
    }
}

/// The seed's layout with `instruction` and `demos`.
fn pair(ctx: &Ctx<'_>, instruction: &Option<String>, demos: &DemoSet) -> PromptFile {
    let seed = &ctx.problem.seed_prompt;
    let mut frame = Frame::of(seed, &ctx.problem.brief);
    match demos {
        DemoSet::Fixed(demos) => {
            frame.demos = demos.clone();
            frame.prompt_with(&seed.name, instruction.as_deref(), &ctx.problem.constraints)
        }
        DemoSet::Knn { knn } => {
            let base = PromptFile {
                instruction: instruction.clone(),
                ..seed.clone()
            };
            knn_prompt(ctx, &base, &frame, *knn, knn_embedding(ctx))
        }
    }
}

#[async_trait]
impl Optimizer for Mipro {
    fn name(&self) -> &'static str {
        "mipro"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        let per_round = ctx.settings.per_round as usize;
        let mut parts = Parts::of(ctx);
        let brief = ctx.problem.brief.clone();
        if ctx.round == 1 {
            for _ in 0..per_round {
                if let Some(i) = self.induce(ctx).await? {
                    parts.add_instruction(Some(i));
                }
            }
            if !ctx.problem.train.is_empty() && ctx.settings.demos > 0 {
                let k = ctx.settings.demos.max(brief.labels.len());
                for _ in 0..per_round {
                    let seed = ctx.rng.random();
                    parts.add_demos(DemoSet::Fixed(
                        pick_demos(&brief, &ctx.problem.train, k, seed)
                            .iter()
                            .map(|e| demo_vars(&brief, e))
                            .collect(),
                    ));
                }
                // Per input, as many as the seed shows (or the set size).
                let shown = ctx.problem.seed_prompt.demos.len();
                let knn = if shown > 0 { shown } else { k };
                if ctx.problem.train.len() > knn {
                    parts.add_demos(DemoSet::Knn { knn });
                }
            }
        } else {
            let best = ctx.best();
            let leader = norm(&ctx.pool[best].prompt.instruction);
            let fresh = match &leader {
                Some(instruction) => self.paraphrase(ctx, instruction).await?,
                None => self.induce(ctx).await?,
            };
            if let Some(i) = fresh {
                parts.add_instruction(Some(i));
            }
            // One demonstration of the best set in place of a training example not shown
            // yet (of the same label in a classification): `fewshot`'s swap.
            let base = ctx.pool[best].prompt.clone();
            let frame = Frame::of(&base, &brief);
            if let Some((_, demos)) = crate::algo::fewshot::mutate(ctx, &base, &frame, "swap") {
                parts.add_demos(DemoSet::Fixed(demos));
            }
        }
        parts.save(ctx);
        // Pairs not tried yet, best surrogate first (ties broken at random).
        let tried: Vec<(Option<String>, DemoSet)> = ctx
            .pool
            .iter()
            .map(|e| (norm(&e.prompt.instruction), DemoSet::of(&e.prompt)))
            .collect();
        let (wi, wd) = parts.worth(ctx);
        let mut open: Vec<(f64, f64, usize, usize)> = Vec::new();
        for (a, i) in parts.instructions.iter().enumerate() {
            for (b, d) in parts.demos.iter().enumerate() {
                if !tried.iter().any(|(ti, td)| ti == i && td == d) {
                    open.push((wi[a] + wd[b], ctx.rng.random(), a, b));
                }
            }
        }
        if open.is_empty() {
            return Err(StopReason::Exhausted.into());
        }
        open.sort_by(|x, y| y.0.total_cmp(&x.0).then(y.1.total_cmp(&x.1)));
        let draw = if ctx.proxy_ranks() {
            2 * per_round
        } else {
            per_round
        };
        let best = ctx.best();
        let parent = vec![ctx.pool[best].id.clone()];
        let mut proposed = Vec::new();
        for &(_, _, a, b) in open.iter().take(draw) {
            let prompt = pair(ctx, &parts.instructions[a], &parts.demos[b]);
            if let Some(i) = ctx.propose(prompt, parent.clone(), "mipro", "").await
                && i != best
                && !proposed.contains(&i)
            {
                proposed.push(i);
            }
        }
        if proposed.is_empty() {
            return Err(StopReason::Exhausted.into());
        }
        let mut raced = ctx.most_likely(&proposed, per_round).await?;
        raced.push(best);
        ctx.race(raced, 1).await?;
        Ok(())
    }
}

impl Mipro {
    /// One instruction induced from a training subset, screened; `None` when the meta model
    /// wrote junk (counted by the screen) or nothing.
    async fn induce(&self, ctx: &mut Ctx<'_>) -> Result<Option<String>, Halt> {
        let vars = json!({
            "task": ctx.problem.brief,
            "examples": shown(ctx, SUBSET),
            "constraints": ctx.problem.constraints,
        });
        let answers = ctx.meta("ape", &vars, 1).await?;
        Ok(self.screened(ctx, answers, "mipro-induce"))
    }

    async fn paraphrase(
        &self,
        ctx: &mut Ctx<'_>,
        instruction: &str,
    ) -> Result<Option<String>, Halt> {
        let vars = json!({
            "task": ctx.problem.brief,
            "instruction": instruction,
            "constraints": ctx.problem.constraints,
        });
        let answers = ctx.meta("paraphrase", &vars, 1).await?;
        Ok(self.screened(ctx, answers, "mipro-paraphrase"))
    }

    fn screened(&self, ctx: &mut Ctx<'_>, answers: Vec<String>, op: &str) -> Option<String> {
        answers.iter().find_map(|a| {
            let (instruction, _) = instruction_from(a);
            ctx.screen_instruction(&instruction, op)
                .then_some(instruction)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demonstration_sets_keep_loading_from_checkpoints_written_before_knn_sets() {
        let old = r#"[[{"text": "fine", "label": "positive"}], []]"#;
        let sets: Vec<DemoSet> = serde_json::from_str(old).unwrap();
        assert!(matches!(&sets[0], DemoSet::Fixed(d) if d.len() == 1));
        assert_eq!(sets[1], DemoSet::Fixed(Vec::new()));
        let now = vec![sets[0].clone(), DemoSet::Knn { knn: 3 }];
        let text = serde_json::to_string(&now).unwrap();
        assert!(text.ends_with(r#"{"knn":3}]"#), "{text}");
        assert_eq!(serde_json::from_str::<Vec<DemoSet>>(&text).unwrap(), now);
    }
}
