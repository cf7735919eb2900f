//! `gepa` — Genetic-Pareto reflective prompt evolution (Agrawal et al., 2025, "GEPA: Reflective
//! Prompt Evolution Can Outperform Reinforcement Learning", arXiv:2507.19457).
//!
//! Each round runs `per_round` iterations of:
//! 1. **Select** a parent from the Pareto front over dev instances: the candidates that reach the
//!    best score on at least one instance, drawn with probability proportional to how many
//!    instances they lead on (so candidates that are best somewhere keep a chance even when
//!    their mean is lower).
//! 2. **Reflect** on a minibatch of dev examples: the parent's outputs (its execution traces),
//!    the expected answers, the scores and the metric's feedback go to the `reflect`
//!    meta-prompt, which writes a new instruction.
//! 3. **Gate** on the same minibatch: the child is scored on it; only if it beats the parent
//!    there is it scored on the whole dev split (full validation only for minibatch winners,
//!    the main source of GEPA's small rollout budgets) and kept.
//!
//! The paper's optional merge of two candidates is not implemented.

use std::collections::BTreeMap;

use async_trait::async_trait;
use metaprompt_eval::dataset::as_text;
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::algo::Optimizer;
use crate::brief::Frame;
use crate::run::{Ctx, Halt, StopReason};

/// Examples per reflective minibatch (the paper uses 3 with strong models; with the 270M base
/// model, 4-example minibatches let almost no child show an improvement on SST-2).
const MINIBATCH: usize = 8;

#[derive(Debug, Default)]
pub struct Gepa;

#[async_trait]
impl Optimizer for Gepa {
    fn name(&self) -> &'static str {
        "gepa"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        for _ in 0..ctx.settings.per_round {
            iteration(ctx).await?;
        }
        Ok(())
    }
}

/// The Pareto front over dev instances: (pool index, instances it leads on), among candidates
/// evaluated on the whole split; on each instance, among those scored on it.
pub fn pareto_front(ctx: &Ctx<'_>) -> Vec<(usize, usize)> {
    let n_dev = ctx.problem.dev.len();
    let full: Vec<usize> = (0..ctx.pool.len())
        .filter(|&i| ctx.pool[i].complete(n_dev))
        .collect();
    let mut leads: BTreeMap<usize, usize> = BTreeMap::new();
    for k in 0..n_dev {
        let scored = || {
            full.iter()
                .filter_map(|&i| Some((i, *ctx.pool[i].scores.get(&k)?)))
        };
        let best = scored().map(|(_, s)| s).fold(f64::NEG_INFINITY, f64::max);
        for (i, s) in scored() {
            if s >= best {
                *leads.entry(i).or_default() += 1;
            }
        }
    }
    leads.into_iter().collect()
}

async fn iteration(ctx: &mut Ctx<'_>) -> Result<(), Halt> {
    let front = pareto_front(ctx);
    let total: usize = front.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return Err(StopReason::Exhausted.into());
    }
    let mut pick = ctx.rng.random_range(0..total);
    let parent = front
        .iter()
        .find(|(_, n)| {
            if pick < *n {
                true
            } else {
                pick -= n;
                false
            }
        })
        .map_or(front[0].0, |(i, _)| *i);
    let mut batch: Vec<usize> = (0..ctx.problem.dev.len()).collect();
    batch.shuffle(&mut ctx.rng);
    batch.truncate(MINIBATCH);
    ctx.score(parent, &batch).await?;
    let entry = &ctx.pool[parent];
    let brief = &ctx.problem.brief;
    // The traces to reflect on: the minibatch examples the parent was scored on.
    let results: Vec<serde_json::Value> = batch
        .iter()
        .filter(|&i| entry.scores.contains_key(i))
        .map(|&i| {
            let ex = &ctx.problem.dev[i];
            json!({
                "input": brief.show(ex)["input"],
                "output": entry.outputs.get(&i).cloned().unwrap_or_default(),
                "expected": ex.expected.as_ref().map(as_text).unwrap_or_default(),
                "score": entry.scores.get(&i).copied().unwrap_or(0.0),
                "feedback": entry.feedback.get(&i).cloned().unwrap_or_default(),
            })
        })
        .collect();
    let vars = json!({
        "task": brief,
        "instruction": entry.prompt.instruction.clone().unwrap_or_default(),
        "results": results,
        "constraints": ctx.problem.constraints,
    });
    let frame = Frame::of(&entry.prompt, brief);
    let parents = vec![entry.id.clone()];
    let Some(answer) = ctx.meta("reflect", &vars, 1).await?.pop() else {
        return Ok(());
    };
    let Some(child) = ctx
        .propose_instruction(&answer, &frame, parents, "gepa-reflect")
        .await
        .filter(|&c| c != parent)
    else {
        return Ok(());
    };
    let full_cost = ctx.pending(&[child]);
    let before = ctx.metric_calls();
    ctx.score(child, &batch).await?;
    // The gate: child against parent on the minibatch examples scored for both.
    let child_better = matches!(
        ctx.paired_means(&[parent, child], &batch)[..],
        [p, Some(c)] if p.is_none_or(|p| c > p)
    );
    if child_better {
        let all = ctx.rung(ctx.problem.dev.len());
        ctx.score(child, &all).await?;
    }
    ctx.saved(full_cost, before);
    Ok(())
}
