//! The verdict: the best candidate against the seed (paired), on dev or, when the problem holds
//! dev examples out of the search, on those alone ([`Confirmation`]); the test split scored once
//! at the end; and the [`Outcome`] of the run.

use metaprompt_eval::Example;
use metaprompt_eval::stats::{self, Estimate, Paired};
use metaprompt_llm::LayerUsage;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::RunError;
use super::budget::{Ahead, Halt, StopReason};
use super::ctx::Ctx;
use super::payback::{BreakEven, PerExecution};
use super::pool::{Entry, Rejected, RoundStats, Unscored};
use crate::candidate::{BOOTSTRAP_SEED, Shorter, shortest_tie};
use crate::junk::Screened;

/// The outcome of a run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub algorithm: String,
    pub stop: StopReason,
    pub rounds: Vec<RoundStats>,
    pub pool: Vec<Entry>,
    pub rejected: Vec<Rejected>,
    /// The best candidate by dev score (may be the seed).
    pub best: String,
    /// The kept prompt: the best, or the seed when the best is not significantly better.
    pub winner: String,
    pub kept_seed: bool,
    pub seed_dev: Estimate,
    pub best_dev: Estimate,
    /// Best vs seed on dev (paired).
    pub dev_test: Paired,
    /// Best vs seed on the dev examples held out of the search, when there are any and the
    /// best scored above the seed on dev: what decides the verdict then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Confirmation>,
    /// Seed and winner on the test split, once, at the end (when there is one).
    pub seed_test: Option<Estimate>,
    pub winner_test: Option<Estimate>,
    pub test_paired: Option<Paired>,
    /// Metric calls of the search: what `max_metric_calls` bounds.
    pub metric_calls: u64,
    /// Metric calls of the final test evaluation (seed and kept prompt on the test split,
    /// retries included), counted apart from the search.
    #[serde(default)]
    pub test_calls: u64,
    /// Metric calls of the held-out confirmation (seed and best), counted apart from the search.
    #[serde(default)]
    pub confirm_calls: u64,
    pub meta_calls: u64,
    pub saved_calls: u64,
    pub meta_usage: LayerUsage,
    pub execution_usage: LayerUsage,
    pub wall_secs: f64,
    /// Dev (and training, for bootstrapped demonstrations) pairs left unscored over the run:
    /// the call or the metric failed, and failed again on the retry. Left out of every mean and
    /// comparison.
    pub unscored: Unscored,
    /// Test examples left unscored (seed and winner together), and why.
    pub test_unscored: Unscored,
    /// Meta-written instructions screened, and those rejected as junk before evaluation.
    #[serde(default)]
    pub screened: Screened,
    /// Scoring calls of the likelihood proxy (outside the metric-call cap).
    #[serde(default)]
    pub proxy_calls: u64,
    /// Tokens the seed and the kept prompt spend on themselves, estimated
    /// ([`metaprompt_eval::evaluator::own_tokens`]): what every execution pays beside its
    /// example.
    #[serde(default)]
    pub seed_tokens: Option<u64>,
    #[serde(default)]
    pub winner_tokens: Option<u64>,
    /// The higher-scoring candidate the best was preferred to, as shorter and not
    /// significantly worse ([`Shorter`]); `None` when the top scorer is the best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shorter: Option<Shorter>,
    /// When the run pays for itself: its cost against the kept prompt's saving per correct
    /// answer on test ([`BreakEven`]); `None` without a test split or when the seed is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_even: Option<BreakEven>,
}

/// The best candidate against the seed on dev examples the search never saw: chosen on one
/// part of dev, judged on the other, so its p-value is not that of the best of many.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    /// The seed and the best on the held-out examples.
    pub seed: Estimate,
    pub best: Estimate,
    /// Best minus seed, paired on the held-out examples scored for both.
    pub paired: Paired,
    /// Held-out examples left unscored (seed and best together), and why.
    pub unscored: Unscored,
}

impl Outcome {
    pub fn entry(&self, id: &str) -> Option<&Entry> {
        self.pool.iter().find(|e| e.id == id)
    }

    /// The convergence curve in one sentence: the share of the best dev score's gain over the
    /// seed reached by each round (`None` when there was no gain), e.g. `dev gain by round:
    /// 1 → 80%, 2 → 80%, 3 → 100%`.
    pub fn convergence(&self) -> Option<String> {
        let start = self.rounds.first()?.best;
        let end = self.rounds.last()?.best;
        let gain = end - start;
        if gain <= 0.0 || self.rounds.len() < 2 {
            return None;
        }
        let steps: Vec<String> = self.rounds[1..]
            .iter()
            .map(|r| format!("{} → {:.0}%", r.round, 100.0 * (r.best - start) / gain))
            .collect();
        Some(format!(
            "best dev score {start:.3} → {end:.3}; share of the gain by round: {}",
            steps.join(", ")
        ))
    }

    /// Why the kept prompt is kept, in one sentence. When the seed itself scored best there is
    /// no comparison to report (it would compare the seed with itself).
    pub fn verdict(&self) -> String {
        let d = &self.dev_test;
        let shorter = self
            .shorter
            .as_ref()
            .map_or(String::new(), |s| format!("; {}", s.describe()));
        if let Some(c) = &self.confirm {
            let p = &c.paired;
            let held = format!(
                "on {} held-out dev examples by {:+.3} [{:+.3}, {:+.3}] (paired bootstrap p = {:.4}; {:+.3} on the {} it was chosen on)",
                p.n, p.diff, p.low, p.high, p.p_value, d.diff, d.n
            );
            return if self.kept_seed {
                format!(
                    "the best candidate {} is not significantly better than the seed {held}: the seed is kept",
                    self.best
                )
            } else {
                format!("{} beats the seed {held}{shorter}", self.winner)
            };
        }
        if !self.kept_seed {
            format!(
                "{} beats the seed on dev by {:+.3} [{:+.3}, {:+.3}] (paired bootstrap p = {:.4}){shorter}",
                self.winner, d.diff, d.low, d.high, d.p_value
            )
        } else if self.pool.first().is_some_and(|seed| seed.id == self.best) {
            "no candidate scored above the seed on dev: the seed is kept".into()
        } else {
            format!(
                "the best candidate {} is not significantly better than the seed on dev ({:+.3} [{:+.3}, {:+.3}], p = {:.4}): the seed is kept",
                self.best, d.diff, d.low, d.high, d.p_value
            )
        }
    }
}

/// `b` minus `a` on the dev examples scored for both (paired bootstrap).
fn paired(a: &Entry, b: &Entry, n_dev: usize) -> Paired {
    let (x, y): (Vec<f64>, Vec<f64>) = (0..n_dev)
        .filter_map(|i| Some((*a.scores.get(&i)?, *b.scores.get(&i)?)))
        .unzip();
    stats::paired_bootstrap(&x, &y, BOOTSTRAP_SEED)
}

/// The shortest candidate to prefer to the top scorer `top` ([`Shorter`]), if any: evaluated
/// on every dev example, at most nine tenths of the top's own tokens, not significantly worse
/// than the top, and significantly better than the seed (only when the top is).
fn shorter(ctx: &Ctx<'_>, top: usize, n_dev: usize) -> Option<(usize, Shorter)> {
    let pool = &ctx.pool;
    if top == 0 || !beats_seed(&paired(&pool[0], &pool[top], n_dev)) {
        return None;
    }
    let format = ctx.layers.execution.info().format;
    let output = &ctx.problem.brief.output;
    let tokens = |i: usize| metaprompt_eval::evaluator::own_tokens(&pool[i].prompt, format, output);
    let top_tokens = tokens(top)?;
    let rivals = (1..pool.len())
        .filter(|&i| i != top && pool[i].complete(n_dev) && !pool[i].scores.is_empty())
        .filter(|&i| beats_seed(&paired(&pool[0], &pool[i], n_dev)))
        .filter_map(|i| Some((i, tokens(i)?, paired(&pool[top], &pool[i], n_dev))));
    shortest_tie(&pool[top].id, top_tokens, rivals)
}

/// Whether `best` (paired against the seed) is significantly better: p < 0.05 and the
/// interval above zero.
pub(super) fn beats_seed(p: &Paired) -> bool {
    p.p_value < 0.05 && p.low > 0.0
}

/// The paired test of the best against the seed on dev, the test split once, the outcome.
///
/// Everything is paired on the examples scored for both prompts: an example unscored for
/// either (the call or the metric failed twice) is left out and counted in the outcome.
pub(super) async fn finish(
    ctx: &mut Ctx<'_>,
    algorithm: &str,
    rounds: Vec<RoundStats>,
    stop: StopReason,
) -> Result<Outcome, RunError> {
    let n_dev = ctx.problem.dev.len();
    let top = ctx.best();
    let vs_seed = |i: usize| paired(&ctx.pool[0], &ctx.pool[i], n_dev);
    let (best, shorter) = match shorter(ctx, top, n_dev) {
        Some((i, s)) => (i, Some(s)),
        None => (top, None),
    };
    let (seed_e, best_e) = (&ctx.pool[0], &ctx.pool[best]);
    let own = |e: &Entry| e.scores.values().copied().collect::<Vec<f64>>();
    let dev_test = vs_seed(best);
    let seed_dev = stats::bootstrap(&own(seed_e), BOOTSTRAP_SEED);
    let best_dev = stats::bootstrap(&own(best_e), BOOTSTRAP_SEED);
    // With dev examples held out of the search, they alone decide (when the best is ahead on
    // the examples it was chosen on); else the dev examples the search chose it on.
    let confirm = if best != 0 && !ctx.problem.confirm.is_empty() && dev_test.diff > 0.0 {
        Some(confirmation(ctx, best).await?)
    } else {
        None
    };
    let kept_seed = best == 0
        || match &confirm {
            Some(c) => !beats_seed(&c.paired),
            None => !ctx.problem.confirm.is_empty() || !beats_seed(&dev_test),
        };
    let winner = if kept_seed { 0 } else { best };
    // The test split, once, outside the search's metric-call cap (the dollar and wall caps'
    // look-ahead has priced it in all along).
    ctx.ledger.start_test();
    let (mut seed_test, mut winner_test, mut test_paired) = (None, None, None);
    let (mut seed_runs, mut winner_runs) = (None, None);
    let mut test_failed = BTreeMap::new();
    if !ctx.problem.test.is_empty() {
        // Only cancellation or an unknown cost under a dollar cap stops the test split (the
        // caps' look-ahead kept room for it); the checkpoint of the last round says the rounds ended, so a
        // resume comes straight back here.
        stops_the_test(ctx.check(Ahead::default()), ctx.round)?;
        let test = ctx.problem.test.clone();
        let (s, runs) = scores_on(ctx, 0, &test, "test", &mut test_failed).await?;
        seed_runs = runs;
        seed_test = Some(stats::bootstrap(&flat(&s), BOOTSTRAP_SEED));
        if winner != 0 {
            let (w, runs) = scores_on(ctx, winner, &test, "test", &mut test_failed).await?;
            winner_runs = runs;
            winner_test = Some(stats::bootstrap(&flat(&w), BOOTSTRAP_SEED));
            test_paired = Some(paired_on(&s, &w));
        } else {
            winner_test = seed_test;
        }
    }
    let (meta, exec) = ctx.costs();
    let own_tokens = |i: usize| {
        metaprompt_eval::evaluator::own_tokens(
            &ctx.pool[i].prompt,
            ctx.layers.execution.info().format,
            &ctx.problem.brief.output,
        )
    };
    let (seed_tokens, winner_tokens) = (own_tokens(0), own_tokens(winner));
    let break_even = BreakEven::of(&meta, &exec, seed_runs, winner_runs);
    Ok(Outcome {
        algorithm: algorithm.into(),
        stop,
        best: ctx.pool[best].id.clone(),
        winner: ctx.pool[winner].id.clone(),
        kept_seed,
        seed_dev,
        best_dev,
        dev_test,
        confirm,
        seed_test,
        winner_test,
        test_paired,
        metric_calls: ctx.ledger.metric_calls(),
        test_calls: ctx.ledger.test_calls(),
        confirm_calls: ctx.ledger.confirm_calls(),
        meta_calls: ctx.ledger.meta_calls(),
        saved_calls: ctx.ledger.saved_calls(),
        meta_usage: meta,
        execution_usage: exec,
        wall_secs: ctx.wall(),
        unscored: Unscored::from_counts(ctx.ledger.unscored()),
        test_unscored: Unscored::from_counts(&test_failed),
        screened: ctx.ledger.screened().clone(),
        proxy_calls: ctx.ledger.proxy_calls(),
        seed_tokens,
        winner_tokens,
        shorter,
        break_even,
        rounds,
        rejected: ctx.rejected.clone(),
        pool: ctx.pool.clone(),
    })
}

/// The halts that stop the test split: cancellation, and an unknown cost under a dollar cap
/// (the caps themselves do not: the look-ahead of every search step priced the test split in).
fn stops_the_test(check: Result<(), Halt>, round: usize) -> Result<(), RunError> {
    match check {
        Err(Halt::Cancelled) => Err(RunError::Cancelled { round }),
        Err(Halt::Unpriced { model, cap }) => Err(RunError::Unpriced { model, cap }),
        Ok(()) | Err(Halt::Stop(_)) => Ok(()),
    }
}

fn flat(xs: &[Option<f64>]) -> Vec<f64> {
    xs.iter().flatten().copied().collect()
}

/// `b` minus `a`, paired on the examples scored for both.
fn paired_on(a: &[Option<f64>], b: &[Option<f64>]) -> Paired {
    let (x, y): (Vec<f64>, Vec<f64>) = a
        .iter()
        .zip(b)
        .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
        .unzip();
    stats::paired_bootstrap(&x, &y, BOOTSTRAP_SEED)
}

/// The seed and entry `best` on the dev examples held out of the search, paired.
async fn confirmation(ctx: &mut Ctx<'_>, best: usize) -> Result<Confirmation, RunError> {
    // Like the test split, only cancellation or an unknown cost under a dollar cap stops it.
    stops_the_test(ctx.check(Ahead::default()), ctx.round)?;
    ctx.ledger.start_confirm();
    let held = ctx.problem.confirm.clone();
    let mut failed = BTreeMap::new();
    let (s, _) = scores_on(ctx, 0, &held, "held-out dev", &mut failed).await?;
    let (b, _) = scores_on(ctx, best, &held, "held-out dev", &mut failed).await?;
    Ok(Confirmation {
        seed: stats::bootstrap(&flat(&s), BOOTSTRAP_SEED),
        best: stats::bootstrap(&flat(&b), BOOTSTRAP_SEED),
        paired: paired_on(&s, &b),
        unscored: Unscored::from_counts(&failed),
    })
}

/// Entry `idx` on `examples` (the split named `split`), per example (`None`: unscored, its
/// reason counted in `failed`). Failures are retried once as far as the metric calls left allow.
async fn scores_on(
    ctx: &mut Ctx<'_>,
    idx: usize,
    examples: &[Example],
    split: &str,
    failed: &mut BTreeMap<String, u64>,
) -> Result<(Vec<Option<f64>>, Option<PerExecution>), RunError> {
    let label = format!("{} on {split}", ctx.pool[idx].id);
    let prompt = ctx.pool[idx].prompt.clone();
    let done = ctx.attempt(&prompt, examples, &label).await;
    stops_the_test(done.halt.map_or(Ok(()), Err), ctx.round)?;
    let runs = PerExecution::of(&done.results);
    let scores = done
        .results
        .into_iter()
        .map(|r| {
            if r.score.is_none() {
                let why = r.error.unwrap_or_else(|| "unscored".into());
                *failed.entry(why).or_default() += 1;
            }
            r.score
        })
        .collect();
    Ok((scores, runs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::testkit::Kit;
    use super::*;

    #[tokio::test]
    async fn the_seed_is_kept_unless_the_best_is_significantly_better() {
        let kit = Kit::new(20, 4);
        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let magic = kit.add(&mut ctx, "with magic");
        let all = ctx.rung(20);
        ctx.score(seed, &all).await.unwrap();
        ctx.score(magic, &all).await.unwrap();
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert_eq!((o.best.as_str(), o.winner.as_str()), ("p1", "p1"));
        assert!(!o.kept_seed);
        assert!(
            o.verdict()
                .starts_with("p1 beats the seed on dev by +0.500"),
            "{}",
            o.verdict()
        );
        assert!((o.dev_test.diff - 0.5).abs() < 1e-12, "{:?}", o.dev_test);
        assert_eq!(o.winner_test.unwrap().mean, 1.0);
        assert_eq!(o.seed_test.unwrap().mean, 0.5);
        // The break-even, from the test executions: twice the accuracy, so a correct answer
        // costs half as much (the mock's calls take no model time, so nothing is paid back).
        let b = o.break_even.as_ref().unwrap();
        assert_eq!((b.seed.accuracy, b.kept.accuracy), (0.5, 1.0));
        assert_eq!((b.seed.live, b.kept.live), (4, 4));
        assert!(b.kept_per_correct <= b.seed_per_correct, "{b:?}");
        // 40 dev calls for the search; the test split for both, counted apart.
        assert_eq!((o.metric_calls, o.test_calls), (40, 8));

        // A candidate no better than the seed: the seed is kept and tested alone.
        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let other = kit.add(&mut ctx, "carefully");
        ctx.score(seed, &all).await.unwrap();
        ctx.score(other, &all).await.unwrap();
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert!(o.kept_seed);
        assert_eq!(o.winner, "p0");
        assert_eq!((o.metric_calls, o.test_calls), (40, 4));
        // The seed scored best: nothing to compare it with, and the verdict says so.
        if o.best == "p0" {
            assert_eq!(
                o.verdict(),
                "no candidate scored above the seed on dev: the seed is kept"
            );
        } else {
            assert!(
                o.verdict().contains("is not significantly better"),
                "{}",
                o.verdict()
            );
        }
    }

    #[tokio::test]
    async fn held_out_dev_examples_decide_and_a_lucky_best_keeps_the_seed() {
        use super::super::testkit::{self, example, review, text};
        // "lucky" is right on the search's dev examples (0..20) only; "magic" everywhere; the
        // seed ("plainly") on the positive half.
        let exec = testkit::text_model().respond_with(|r| {
            let (i, t) = (review(r), text(r));
            let right = t.contains("magic") || (t.contains("lucky") && i < 20);
            Ok(if right && i % 2 == 1 {
                "negative"
            } else {
                "positive"
            }
            .into())
        });
        let mut problem = testkit::problem(20, 4);
        problem.confirm = (600..620).map(example).collect();
        let kit = Kit::with(testkit::meta_model(), exec, problem);
        let all = kit.ctx().rung(20);

        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let lucky = kit.add(&mut ctx, "lucky");
        for i in [seed, lucky] {
            ctx.score(i, &all).await.unwrap();
        }
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert!(beats_seed(&o.dev_test), "{:?}", o.dev_test);
        let c = o.confirm.as_ref().unwrap();
        assert_eq!((c.paired.n, c.paired.diff), (20, 0.0));
        assert_eq!((c.seed.mean, c.best.mean), (0.5, 0.5));
        assert!(o.kept_seed, "the held-out examples decide");
        assert_eq!((o.best.as_str(), o.winner.as_str()), ("p1", "p0"));
        assert!(
            o.verdict().starts_with(
                "the best candidate p1 is not significantly better than the seed on 20 held-out dev examples by +0.000"
            ) && o.verdict().contains("+0.500 on the 20 it was chosen on"),
            "{}",
            o.verdict()
        );
        // Seed and best on the held-out examples, counted apart from the search and the test.
        assert_eq!((o.metric_calls, o.confirm_calls, o.test_calls), (40, 40, 4));

        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let magic = kit.add(&mut ctx, "magic");
        for i in [seed, magic] {
            ctx.score(i, &all).await.unwrap();
        }
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert!(!o.kept_seed);
        assert_eq!(o.winner, "p1");
        assert!(
            o.verdict()
                .starts_with("p1 beats the seed on 20 held-out dev examples by +0.500"),
            "{}",
            o.verdict()
        );
        assert_eq!((o.confirm_calls, o.test_calls), (40, 8));

        // No candidate ahead of the seed on dev: nothing to confirm, nothing spent on it.
        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let other = kit.add(&mut ctx, "carefully");
        for i in [seed, other] {
            ctx.score(i, &all).await.unwrap();
        }
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert!(o.kept_seed && o.confirm.is_none());
        assert_eq!(o.confirm_calls, 0);
    }

    #[tokio::test]
    async fn of_two_prompts_that_score_alike_the_shorter_is_kept() {
        let kit = Kit::new(20, 4);
        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let long = kit.add(
            &mut ctx,
            &format!(
                "with magic. {}",
                "Read every word of the review with care. ".repeat(6)
            ),
        );
        let short = kit.add(&mut ctx, "with magic");
        let all = ctx.rung(20);
        for i in [seed, long, short] {
            ctx.score(i, &all).await.unwrap();
        }
        assert_eq!(ctx.best(), long, "the first of two equal scores tops dev");
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert_eq!((o.best.as_str(), o.winner.as_str()), ("p2", "p2"));
        let s = o.shorter.as_ref().unwrap();
        assert_eq!(s.over, "p1");
        assert!(s.tokens * 2 < s.over_tokens, "{s:?}");
        assert_eq!(o.winner_tokens, Some(s.tokens));
        assert!(
            o.verdict()
                .contains("preferred to p1, which is not significantly better"),
            "{}",
            o.verdict()
        );

        // A shorter prompt that is significantly worse is not preferred.
        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let long = kit.add(
            &mut ctx,
            &format!("with magic. {}", "Be careful. ".repeat(20)),
        );
        let short = kit.add(&mut ctx, "plainly, briefly");
        for i in [seed, long, short] {
            ctx.score(i, &all).await.unwrap();
        }
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert_eq!(o.winner, "p1");
        assert!(o.shorter.is_none());
    }

    #[tokio::test]
    async fn the_verdict_pairs_seed_and_best_on_the_examples_scored_for_both() {
        use metaprompt_llm::LlmError;

        use super::super::testkit::{self, review, text};
        // The seed ("plainly") cannot be scored on reviews 1, 6, 11, 16; the best ("magic")
        // on 0, 5, 10, 15 (every call fails, retries too).
        let exec = testkit::text_model().respond_with(|r| {
            let (i, t) = (review(r), text(r));
            let magic = t.contains("magic");
            if (magic && i % 5 == 0) || (t.contains("plainly") && i % 5 == 1) {
                return Err(LlmError::Config("down".into()));
            }
            Ok(if magic && i % 2 == 1 {
                "negative"
            } else {
                "positive"
            }
            .into())
        });
        let kit = Kit::with(testkit::meta_model(), exec, testkit::problem(20, 0));
        let mut ctx = kit.ctx();
        let seed = kit.add(&mut ctx, "plainly");
        let magic = kit.add(&mut ctx, "with magic");
        let all = ctx.rung(20);
        ctx.score(seed, &all).await.unwrap();
        ctx.score(magic, &all).await.unwrap();
        assert_eq!(
            ctx.best(),
            magic,
            "complete: scored or failed on all of dev"
        );
        let o = finish(&mut ctx, "test", Vec::new(), StopReason::Rounds)
            .await
            .unwrap();
        assert_eq!((o.seed_dev.n, o.best_dev.n), (16, 16));
        // 12 examples are scored for both; on them magic is right everywhere, the seed on the
        // positive half.
        assert_eq!(o.dev_test.n, 12);
        assert!((o.dev_test.diff - 0.5).abs() < 1e-12, "{:?}", o.dev_test);
        assert!(!o.kept_seed);
        assert_eq!(o.unscored.count, 8);
        assert_eq!(o.unscored.reasons[0].count, 8);
        // Every failure was tried twice.
        assert_eq!((o.metric_calls, o.test_calls), (40 + 8, 0));
    }
}
