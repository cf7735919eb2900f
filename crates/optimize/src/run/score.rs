//! Scoring through the optimizer's handle: [`Ctx::score`] evaluates a pool entry on dev
//! examples (each pair once, a failed pair retried once right away, every attempt counted in
//! the [`super::Ledger`]), [`Ctx::evaluate_extra`] runs a prompt on examples outside dev (a
//! teacher on training data), and both go through [`Ctx::attempt`], which times the calls for
//! the caps' look-ahead.

use std::time::Instant;

use metaprompt_eval::evaluator::{self, ExampleResult};
use metaprompt_eval::{Example, PromptFile};

use super::budget::{Ahead, Halt, StopReason};
use super::ctx::Ctx;
use crate::Event;

impl Ctx<'_> {
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
            self.ledger.attempted(missing.len() as u64);
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
                        self.ledger.failed(&why);
                        entry.failed.insert(i, why);
                    }
                    // Not retried (the budget ran out first): left to be evaluated again.
                    (None, _) => self.ledger.unsettled(),
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
        self.ledger.attempted(examples.len() as u64);
        for (r, &settled) in done.results.iter().zip(&done.settled) {
            match (&r.error, settled) {
                (Some(why), true) if r.score.is_none() => self.ledger.failed(why),
                (_, false) => self.ledger.unsettled(),
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
                self.ledger.count(examples.len());
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
        self.ledger.count(examples.len());
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
            self.ledger.count(now.len());
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
            self.ledger.execution_rate(
                r.len() as u64,
                prompt_chars,
                usd,
                started.elapsed().as_secs_f64(),
            );
        }
        results
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

    use metaprompt_llm::LlmError;
    use metaprompt_llm::testing::ScriptedProvider;

    use super::super::testkit::{self, Kit};

    /// Right with "magic"; the first call for every third review fails, later ones answer.
    fn flaky() -> ScriptedProvider {
        let seen = Mutex::new(BTreeSet::new());
        testkit::text_model().respond_with(move |r| {
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
        assert_eq!(
            (
                ctx.ledger.round_tally().attempted,
                ctx.ledger.round_tally().failed
            ),
            (9, 0)
        );
    }

    #[tokio::test]
    async fn a_pair_that_fails_twice_is_recorded_as_failed_and_not_tried_again() {
        let exec = testkit::text_model().respond_with(|r| {
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
        assert_eq!(
            (
                ctx.ledger.round_tally().attempted,
                ctx.ledger.round_tally().failed
            ),
            (6, 1)
        );
        assert_eq!(ctx.ledger.unscored().values().sum::<u64>(), 1);
        // Evaluated for good: scoring again spends nothing.
        ctx.score(p, &all).await.unwrap();
        assert_eq!(ctx.metric_calls(), 7);
        assert_eq!(ctx.pending(&[p]), 0);
    }

    #[tokio::test]
    async fn a_retry_the_metric_budget_cannot_cover_is_left_for_later() {
        let exec = testkit::text_model().respond_with(|_| Err(LlmError::Config("down".into())));
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
            ctx.ledger.round_tally().attempted,
            2,
            "the two not retried are not settled"
        );
    }
}
