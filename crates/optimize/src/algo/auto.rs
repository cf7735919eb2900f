//! `auto`: the default chain for someone who does not know which algorithm to pick.
//!
//! Demonstrations first, then the instruction: on base models (the embedded one) and small
//! models, which and how many examples a prompt shows moves accuracy far more than its wording
//! (measured here: 4-shot 0.85 vs zero-shot 0.50 on SST-2), and demo search costs no meta
//! calls. Then OPRO improves the instruction around the best demonstrations, because it uses
//! the score trajectory and so needs the fewest calls per improvement among the
//! instruction-search methods implemented. Rounds alternate from there: odd rounds after the
//! first two go back to demonstrations. Round 2 first tries the worked-answer form of the best
//! prompt ([`crate::worked`]: short working lines before the answer, written by the meta model
//! for the demonstrations), unless `--no-worked`: on tasks of several steps it moves a small
//! executor more than any wording does.

use async_trait::async_trait;

use crate::algo::{Optimizer, fewshot, opro};
use crate::run::{Ctx, Halt, StopReason};

#[derive(Debug, Default)]
pub struct Auto;

#[async_trait]
impl Optimizer for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }

    async fn round(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Halt> {
        // A prompt that works its answers out shows working in its demonstrations: a demo move
        // would mix in bare answers from the train split.
        let best = &ctx.pool[ctx.best()].prompt;
        let worked = best.run.as_ref().is_some_and(|r| r.answer_after.is_some());
        let demos_possible = !ctx.problem.train.is_empty() && ctx.settings.demos > 0 && !worked;
        if demos_possible && ctx.round % 2 == 1 {
            match fewshot::demo_round(ctx).await {
                Err(Halt::Stop(StopReason::Exhausted)) => {}
                other => return other,
            }
        }
        if ctx.round == 2 && ctx.settings.worked && crate::worked::round(ctx).await?.is_some() {
            return Ok(());
        }
        opro::instruction_round(ctx).await
    }
}
