//! `opro` — Optimization by PROmpting (Yang et al., 2023, arXiv:2309.03409). Each round the meta
//! model sees up to 20 earlier instructions with their scores in ascending order (the best
//! last, where a model pays most attention) and 3 solved training problems, and writes
//! `per_round` new instructions (the paper: 8 per step at temperature 1.0; here the run's
//! temperature schedule, exploring early and exploiting late). New instructions keep the best
//! prompt's layout and demonstrations, and race against it.

use async_trait::async_trait;
use serde_json::json;

use crate::algo::{Optimizer, shown};
use crate::brief::Frame;
use crate::run::{Ctx, Halt};

/// Trajectory length shown to the meta model (the paper's choice).
const TRAJECTORY: usize = 20;
/// Solved problems shown (the paper's choice).
const EXEMPLARS: usize = 3;

#[derive(Debug, Default)]
pub struct Opro;

#[async_trait]
impl Optimizer for Opro {
    fn name(&self) -> &'static str {
        "opro"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        instruction_round(ctx).await
    }
}

/// One OPRO step around the current best (also used by `auto`).
pub(crate) async fn instruction_round(ctx: &mut Ctx<'_>) -> Result<(), Halt> {
    let best = ctx.best();
    let min = ctx.settings.minibatch.min(ctx.problem.dev.len());
    let mut trajectory: Vec<(String, f64)> = Vec::new();
    for i in ctx.ranked(min) {
        let e = &ctx.pool[i];
        let text = e.prompt.instruction.clone().unwrap_or_default();
        if !text.trim().is_empty() && !trajectory.iter().any(|(t, _)| *t == text) {
            trajectory.push((text, e.mean().unwrap_or(0.0)));
        }
        if trajectory.len() == TRAJECTORY {
            break;
        }
    }
    trajectory.reverse(); // ascending: the best last
    let vars = json!({
        "task": ctx.problem.brief,
        "examples": shown(ctx, EXEMPLARS),
        "constraints": ctx.problem.constraints,
        "trajectory": trajectory
            .iter()
            .map(|(t, s)| json!({"instruction": t, "score": (s * 100.0).round() as i64}))
            .collect::<Vec<_>>(),
    });
    let answers = ctx.meta("opro", &vars, ctx.settings.per_round).await?;
    let frame = Frame::of(&ctx.pool[best].prompt, &ctx.problem.brief);
    let parent = vec![ctx.pool[best].id.clone()];
    let mut proposed = Vec::new();
    for a in answers {
        if let Some(i) = ctx
            .propose_instruction(&a, &frame, parent.clone(), "opro")
            .await
            && i != best
            && !proposed.contains(&i)
        {
            proposed.push(i);
        }
    }
    if proposed.is_empty() {
        return Ok(()); // nothing new this round; convergence counts it
    }
    proposed.push(best);
    ctx.race(proposed, 1).await?;
    Ok(())
}
