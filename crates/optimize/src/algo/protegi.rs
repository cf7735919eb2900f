//! `protegi` — Prompt Optimization with Textual Gradients (Pryzant et al., 2023, "Automatic
//! Prompt Optimization with 'Gradient Descent' and Beam Search", arXiv:2305.03495).
//!
//! Each round, for every prompt in the beam (the `BEAM` best so far): a minibatch of its errors
//! on the dev examples it was scored on goes to the `gradient` meta-prompt, which says in words
//! what is wrong with the instruction (the "gradient"); the `edit` meta-prompt then rewrites the
//! instruction against that diagnosis, several times (the step, with Monte Carlo samples at the
//! run's temperature). The expanded set races with the beam, and the best `BEAM` survive
//! (successive halving standing in for the paper's bandit selection).

use async_trait::async_trait;
use metaprompt_eval::dataset::as_text;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::algo::Optimizer;
use crate::brief::Frame;
use crate::run::{Ctx, Halt};

/// Prompts kept between rounds.
const BEAM: usize = 2;
/// Errors shown per gradient.
const ERRORS: usize = 4;

#[derive(Debug, Default)]
pub struct Protegi;

#[async_trait]
impl Optimizer for Protegi {
    fn name(&self) -> &'static str {
        "protegi"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        let min = ctx.settings.minibatch.min(ctx.problem.dev.len());
        let beam: Vec<usize> = ctx.ranked(min).into_iter().take(BEAM).collect();
        let edits_per_prompt = ctx
            .settings
            .per_round
            .div_ceil(beam.len().max(1) as u32)
            .max(1);
        let mut proposed = Vec::new();
        for &b in &beam {
            let entry = &ctx.pool[b];
            let mut wrong: Vec<usize> = entry
                .scores
                .iter()
                .filter(|(_, s)| **s < 1.0)
                .map(|(i, _)| *i)
                .collect();
            if wrong.is_empty() {
                continue;
            }
            wrong.shuffle(&mut ctx.rng);
            let brief = &ctx.problem.brief;
            let errors: Vec<serde_json::Value> = wrong
                .iter()
                .take(ERRORS)
                .map(|&i| {
                    let ex = &ctx.problem.dev[i];
                    let shown = brief.show(ex);
                    json!({
                        "input": shown["input"],
                        "output": entry.outputs.get(&i).cloned().unwrap_or_default(),
                        "expected": ex.expected.as_ref().map(as_text).unwrap_or_default(),
                    })
                })
                .collect();
            let instruction = entry.prompt.instruction.clone().unwrap_or_default();
            let parent = vec![entry.id.clone()];
            let frame = Frame::of(&entry.prompt, brief);
            let vars = json!({
                "task": brief,
                "instruction": instruction,
                "errors": errors,
                "constraints": ctx.problem.constraints,
            });
            let Some(gradient) = ctx.meta("gradient", &vars, 1).await?.pop() else {
                continue;
            };
            let mut vars = vars;
            vars["gradient"] = json!(gradient);
            for answer in ctx.meta("edit", &vars, edits_per_prompt).await? {
                if let Some(i) = ctx
                    .propose_instruction(&answer, &frame, parent.clone(), "protegi-edit")
                    .await
                    && !beam.contains(&i)
                    && !proposed.contains(&i)
                {
                    proposed.push(i);
                }
            }
        }
        if proposed.is_empty() {
            return Ok(());
        }
        proposed.extend(&beam);
        ctx.race(proposed, BEAM).await?;
        Ok(())
    }
}
