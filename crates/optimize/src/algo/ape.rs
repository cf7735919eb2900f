//! `ape` — Automatic Prompt Engineer (Zhou et al., 2022, arXiv:2211.01910).
//!
//! Round 1, *induction*: `per_round` demo subsets of the training data (5 examples each), one
//! instruction inferred from each by the `ape` meta-prompt ("The instruction was to…", the
//! forward template, which base models can continue). Later rounds, *resampling*: variations of
//! the best instruction (`paraphrase`), APE's iterative Monte Carlo search; while the leader
//! has no instruction (the seed, when nothing beat it), induction again instead.
//!
//! With `--proxy`, when the execution model scores continuations (the embedded model does), each
//! round samples
//! [`OVERSAMPLE`] times as many candidates, screens out junk, and ranks the rest by the
//! likelihood proxy — the execution model's log-probability of the expected outputs after the
//! candidate, on a few training examples, APE's own score — so only the `per_round` most
//! likely are raced on the metric ([`Ctx::most_likely`]).
//!
//! Selection is a UCB bandit over growing samples, as in the paper: every new candidate starts
//! with a small sample of dev examples; then the arm with the highest upper confidence bound
//! gets the next chunk, until one arm has the whole dev split and still leads.

use async_trait::async_trait;
use serde_json::json;

use crate::algo::{Optimizer, shown};
use crate::brief::Frame;
use crate::run::{Ctx, Halt};

/// Demonstrations per induction subset.
const SUBSET: usize = 5;
/// UCB exploration constant.
const C: f64 = 0.5;
/// Candidates sampled per raced one when the likelihood proxy can rank them.
pub const OVERSAMPLE: u32 = 2;

#[derive(Debug, Default)]
pub struct Ape;

#[async_trait]
impl Optimizer for Ape {
    fn name(&self) -> &'static str {
        "ape"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        let best = ctx.best();
        let frame = Frame::of(&ctx.pool[best].prompt, &ctx.problem.brief);
        let parent = vec![ctx.pool[best].id.clone()];
        let mut answers = Vec::new();
        let instruction = ctx.pool[best]
            .prompt
            .instruction
            .clone()
            .unwrap_or_default();
        // A leader without an instruction (the seed, often) has nothing to paraphrase: induce
        // again, at this round's temperature, rather than stop.
        let (op, induce) = if ctx.round == 1 || instruction.trim().is_empty() {
            ("ape-induce", true)
        } else {
            ("ape-resample", false)
        };
        let per_round = ctx.settings.per_round;
        let samples = if ctx.proxy_ranks() {
            per_round * OVERSAMPLE
        } else {
            per_round
        };
        if induce {
            for _ in 0..samples {
                let vars = json!({
                    "task": ctx.problem.brief,
                    "examples": shown(ctx, SUBSET),
                    "constraints": ctx.problem.constraints,
                });
                answers.extend(ctx.meta("ape", &vars, 1).await?);
            }
        } else {
            let vars = json!({
                "task": ctx.problem.brief,
                "instruction": instruction,
                "constraints": ctx.problem.constraints,
            });
            answers = ctx.meta("paraphrase", &vars, samples).await?;
        }
        let mut arms = Vec::new();
        for a in answers {
            if let Some(i) = ctx
                .propose_instruction(&a, &frame, parent.clone(), op)
                .await
                && i != best
                && !arms.contains(&i)
            {
                arms.push(i);
            }
        }
        if arms.is_empty() {
            return Ok(());
        }
        let mut arms = ctx.most_likely(&arms, per_round as usize).await?;
        arms.push(best);
        ucb(ctx, &arms).await
    }
}

/// UCB1 over `arms`: pull = score the arm on its next `step` dev examples; stop when the leader
/// (by mean) has been evaluated on the whole dev split. Each arm's estimate is its own mean
/// (unscored pairs left out); the run's verdict pairs the leader with the seed.
async fn ucb(ctx: &mut Ctx<'_>, arms: &[usize]) -> Result<(), Halt> {
    let full_cost = ctx.pending(arms);
    let before = ctx.metric_calls();
    let result = pull_until_known(ctx, arms).await;
    ctx.saved(full_cost, before);
    result
}

async fn pull_until_known(ctx: &mut Ctx<'_>, arms: &[usize]) -> Result<(), Halt> {
    let n_dev = ctx.problem.dev.len();
    let step = (ctx.settings.minibatch / 2).max(1);
    for &a in arms {
        let first = ctx.rung(step.min(n_dev));
        ctx.score(a, &first).await?;
    }
    loop {
        let pulls: usize = arms.iter().map(|&a| ctx.pool[a].evaluated_count()).sum();
        let leader = *arms
            .iter()
            .max_by(|&&a, &&b| {
                let (ma, mb) = (
                    ctx.pool[a].mean().unwrap_or(0.0),
                    ctx.pool[b].mean().unwrap_or(0.0),
                );
                ma.total_cmp(&mb).then(b.cmp(&a))
            })
            .unwrap_or(&arms[0]);
        if ctx.pool[leader].complete(n_dev) {
            return Ok(());
        }
        let bound = |a: usize| {
            let e = &ctx.pool[a];
            let n = e.evaluated_count().max(1) as f64;
            let explore = if e.complete(n_dev) {
                f64::NEG_INFINITY // fully known: nothing left to learn
            } else {
                C * ((pulls.max(2) as f64).ln() / n).sqrt()
            };
            e.mean().unwrap_or(0.0) + explore
        };
        let pick = *arms
            .iter()
            .filter(|&&a| !ctx.pool[a].complete(n_dev))
            .max_by(|&&a, &&b| bound(a).total_cmp(&bound(b)).then(b.cmp(&a)))
            .unwrap_or(&leader);
        let have = ctx.pool[pick].evaluated_count();
        let next = ctx.rung((have + step).min(n_dev));
        ctx.score(pick, &next).await?;
    }
}
