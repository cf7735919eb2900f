//! The driver: [`run`], the loop of rounds with checkpoints and convergence, over what a run
//! borrows ([`Runner`]).

use std::path::Path;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::RunError;
use super::budget::{CostCap, Halt, StopReason};
use super::checkpoint::Checkpoint;
use super::ctx::{Ctx, Optimizer, Runner, mix};
use super::pool::{Entry, RoundStats, Unscored};
use super::verdict::{Outcome, finish};
use crate::Event;

/// Run `optimizer` on the runner's problem (from `resume` when given), checkpointing into the
/// runner's store.
pub async fn run(
    optimizer: &mut dyn Optimizer,
    runner: Runner<'_>,
    resume: Option<Checkpoint>,
) -> Result<Outcome, RunError> {
    let Runner {
        problem,
        settings,
        budget,
        task,
        store,
        observe,
        ..
    } = runner;
    let n_dev = problem.dev.len();
    if n_dev == 0 {
        return Err(RunError::NoDev);
    }
    if budget.max_metric_calls < n_dev as u64 {
        return Err(RunError::BudgetTooSmall {
            max_metric_calls: budget.max_metric_calls,
            dev: n_dev,
        });
    }
    priced(&runner)?;
    let mut ctx = Ctx::new(&runner);
    let algorithm = optimizer.name();
    let save = |ctx: &Ctx<'_>, rounds: &[RoundStats], ended, stop| {
        store.save(&checkpoint(ctx, algorithm, task, rounds, ended, stop))
    };
    let mut rounds: Vec<RoundStats> = Vec::new();
    let mut ended = None;
    if let Some(cp) = resume {
        ctx.ledger.resume(&cp);
        ctx.pool = cp.pool;
        ctx.rejected = cp.rejected;
        ctx.round = cp.round;
        rounds = cp.rounds;
        // The round limit is decided again from the settings (a resume may allow more).
        ended = cp.ended.or(cp.stop).filter(|s| *s != StopReason::Rounds);
        observe(Event::Step(&format!(
            "resuming after round {} ({} candidates, {} metric calls so far)",
            ctx.round,
            ctx.pool.len(),
            ctx.ledger.metric_calls()
        )));
    } else {
        // Round 0: the seed prompt, checkpointed before anything is spent, so that a run
        // stopped while scoring the seed resumes (and scores it then).
        let mut seed = problem.seed_prompt.clone();
        if seed.constraints.is_empty() {
            seed.constraints.clone_from(&problem.constraints);
        }
        ctx.pool
            .push(Entry::new("p0".into(), seed, Vec::new(), "seed", 0));
        save(&ctx, &rounds, None, None)?;
    }
    if rounds.is_empty() {
        // The seed round: the seed on all of dev.
        let all = ctx.rung(n_dev);
        ctx.ledger.start_round();
        match ctx.score(0, &all).await {
            Ok(_) => {}
            Err(Halt::Stop(s)) => return Err(RunError::Seed(s)),
            Err(Halt::Cancelled) => return Err(RunError::Cancelled { round: 0 }),
            Err(Halt::Unpriced { model, cap }) => return Err(RunError::Unpriced { model, cap }),
        }
        unscored_check(&ctx)?;
        rounds.push(stats(&ctx, 0, 0, 0, None));
        save(&ctx, &rounds, None, None)?;
    }
    let mut since_improvement = stale_rounds(&rounds, n_dev);
    while ended.is_none() {
        if ctx.round >= settings.rounds {
            ended = Some(StopReason::Rounds);
            break;
        }
        // Between rounds: the safe point where nothing is in flight.
        if ctx.cancel.is_cancelled() {
            return Err(RunError::Cancelled { round: ctx.round });
        }
        ctx.round += 1;
        ctx.rng = StdRng::seed_from_u64(mix(settings.seed, ctx.round as u64));
        ctx.ledger.start_round();
        let before_pool = ctx.pool.len();
        let before_rejected = ctx.rejected.len();
        let best_before_round = ctx.pool[ctx.best()].mean().unwrap_or(0.0);
        observe(Event::Step(&format!(
            "round {} · meta temperature {:.2}",
            ctx.round,
            ctx.temperature()
        )));
        let result = optimizer.round(&mut ctx).await;
        let converged = match result {
            // The round in flight is dropped: the last checkpoint stays the previous round's.
            Err(Halt::Cancelled) => {
                return Err(RunError::Cancelled {
                    round: ctx.round - 1,
                });
            }
            Err(Halt::Unpriced { model, cap }) => return Err(RunError::Unpriced { model, cap }),
            Err(Halt::Stop(s)) => {
                ended = Some(s);
                false
            }
            Ok(()) => true,
        };
        // Too much unscored: stop rather than decide on what is left; the previous round's
        // checkpoint stays, to resume once the cause is fixed.
        unscored_check(&ctx)?;
        let new: Vec<f64> = ctx.pool[before_pool..]
            .iter()
            .filter_map(Entry::mean)
            .collect();
        let proposed = ctx.pool.len() - before_pool + ctx.rejected.len() - before_rejected;
        let mean = (!new.is_empty()).then(|| new.iter().sum::<f64>() / new.len() as f64);
        let r = stats(
            &ctx,
            ctx.round,
            proposed,
            ctx.rejected.len() - before_rejected,
            mean,
        );
        if converged {
            let improved = r.best > best_before_round + significant(n_dev);
            since_improvement = if improved { 0 } else { since_improvement + 1 };
            if since_improvement >= settings.patience {
                ended = Some(StopReason::Converged);
            }
        }
        observe(Event::Round(&r));
        rounds.push(r);
        save(&ctx, &rounds, ended, None)?;
    }
    let stop = ended.unwrap_or(StopReason::Rounds);
    let outcome = finish(&mut ctx, algorithm, rounds, stop).await?;
    save(&ctx, &outcome.rounds, Some(stop), Some(stop))?;
    Ok(outcome)
}

/// A dollar cap needs a price for every model of the layers it covers: refuse to start
/// rather than run unbounded.
fn priced(r: &Runner<'_>) -> Result<(), RunError> {
    let meta = [Some(r.layers.meta.info()), r.guard.judge_info()];
    let execution = [Some(r.layers.execution.info())];
    let caps = [
        (r.budget.max_meta_cost_usd, CostCap::Meta, &meta[..]),
        (r.budget.max_cost_usd, CostCap::Total, &meta[..]),
        (r.budget.max_cost_usd, CostCap::Total, &execution[..]),
    ];
    for (set, cap, models) in caps {
        if set.is_none() {
            continue;
        }
        if let Some(m) = models.iter().flatten().find(|m| m.pricing.is_none()) {
            return Err(RunError::Unpriced {
                model: m.name.clone(),
                cap,
            });
        }
    }
    Ok(())
}

/// `Err(RunError::Unscored)` when more of the round's pairs went unscored than the settings
/// allow.
fn unscored_check(ctx: &Ctx<'_>) -> Result<(), RunError> {
    let t = ctx.ledger.round_tally();
    if !t.too_many(ctx.settings.max_unscored) {
        return Ok(());
    }
    Err(RunError::Unscored {
        round: ctx.round,
        failed: t.failed,
        attempted: t.attempted,
        allowed: ctx.settings.max_unscored,
        reasons: Unscored::from_counts(&t.reasons).reasons,
    })
}

/// The smallest improvement of the best dev mean that counts: one example's worth, at least
/// half a point.
pub(super) fn significant(n_dev: usize) -> f64 {
    (1.0 / n_dev as f64).max(0.005)
}

/// How many of the last rounds did not improve the best significantly.
pub(super) fn stale_rounds(rounds: &[RoundStats], n_dev: usize) -> usize {
    rounds
        .windows(2)
        .rev()
        .take_while(|w| w[1].best <= w[0].best + significant(n_dev))
        .count()
}

fn stats(
    ctx: &Ctx<'_>,
    round: usize,
    proposed: usize,
    rejected: usize,
    mean: Option<f64>,
) -> RoundStats {
    let best = ctx.best();
    let (meta, exec) = ctx.costs();
    RoundStats {
        round,
        temperature: ctx.temperature(),
        proposed,
        rejected,
        best: ctx.pool[best].mean().unwrap_or(0.0),
        best_id: ctx.pool[best].id.clone(),
        mean,
        metric_calls: ctx.ledger.metric_calls(),
        meta_calls: ctx.ledger.meta_calls(),
        meta_cost_usd: meta.cost_usd,
        execution_cost_usd: exec.cost_usd,
        wall_secs: ctx.wall(),
        unscored: ctx.ledger.round_tally().failed,
    }
}

fn checkpoint(
    ctx: &Ctx<'_>,
    algorithm: &str,
    task: &Path,
    rounds: &[RoundStats],
    ended: Option<StopReason>,
    stop: Option<StopReason>,
) -> Checkpoint {
    let (meta, exec) = ctx.costs();
    Checkpoint {
        algorithm: algorithm.into(),
        task: task.to_path_buf(),
        settings: ctx.settings.clone(),
        budget: ctx.budget.clone(),
        round: ctx.round,
        pool: ctx.pool.clone(),
        rejected: ctx.rejected.clone(),
        rounds: rounds.to_vec(),
        metric_calls: ctx.ledger.metric_calls(),
        meta_calls: ctx.ledger.meta_calls(),
        saved_calls: ctx.ledger.saved_calls(),
        meta_usage: meta,
        execution_usage: exec,
        wall_secs: ctx.wall(),
        unscored: ctx.ledger.unscored().clone(),
        rates: *ctx.ledger.rates(),
        screened: ctx.ledger.screened().clone(),
        proxy_calls: ctx.ledger.proxy_calls(),
        ended,
        stop,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::checkpoint::RunStore;
    use super::super::testkit::{Kit, OneAtATime};
    use super::*;

    #[test]
    fn the_run_future_is_send_so_a_server_can_spawn_it() {
        fn assert_send<T: Send>(_: &T) {}
        let kit = Kit::new(4, 0);
        let mut optimizer = OneAtATime;
        let future = run(&mut optimizer, kit.runner(), None);
        assert_send(&future);
    }

    #[tokio::test]
    async fn a_run_stopped_before_its_seed_is_scored_resumes_from_its_first_checkpoint() {
        let mut kit = Kit::new(8, 2);
        kit.settings.rounds = 2;
        let mut optimizer = OneAtATime;
        let whole = run(&mut optimizer, kit.runner(), None).await.unwrap();

        let mut kit = Kit::new(8, 2);
        kit.settings.rounds = 2;
        kit.cancel.cancel();
        let e = run(&mut optimizer, kit.runner(), None).await.unwrap_err();
        assert!(matches!(e, RunError::Cancelled { round: 0 }), "{e}");
        assert!(e.to_string().contains("resumed"), "{e}");
        let spent = kit.layers.costs(None, kit.layers.execution.as_ref());
        assert_eq!((spent.execution.calls, spent.meta.calls), (0, 0));
        // The first checkpoint was saved before the seed was scored.
        let cp = kit.store.load().unwrap().unwrap();
        assert_eq!((cp.round, cp.stop, cp.metric_calls), (0, None, 0));
        assert_eq!(cp.pool.len(), 1);
        assert!(cp.pool[0].scores.is_empty() && cp.rounds.is_empty());

        kit.cancel = tokio_util::sync::CancellationToken::new();
        let resumed = run(&mut optimizer, kit.runner(), Some(cp)).await.unwrap();
        assert_eq!(
            resumed.pool[0].scores.len(),
            8,
            "the seed was scored on resume"
        );
        assert_eq!(resumed.rounds.len(), whole.rounds.len());
        assert_eq!(
            (resumed.winner, resumed.metric_calls, resumed.meta_calls),
            (whole.winner, whole.metric_calls, whole.meta_calls)
        );
    }

    fn round(n: usize, best: f64) -> RoundStats {
        RoundStats {
            round: n,
            temperature: 0.5,
            proposed: 0,
            rejected: 0,
            best,
            best_id: "p0".into(),
            mean: None,
            metric_calls: 0,
            meta_calls: 0,
            meta_cost_usd: None,
            execution_cost_usd: None,
            wall_secs: 0.0,
            unscored: 0,
        }
    }

    #[test]
    fn one_example_is_the_smallest_significant_step_but_never_below_half_a_point() {
        assert_eq!(significant(10), 0.1);
        assert_eq!(significant(1000), 0.005);
    }

    #[test]
    fn stale_rounds_count_back_from_the_last_significant_improvement() {
        let rs = |bests: &[f64]| -> Vec<RoundStats> {
            bests
                .iter()
                .enumerate()
                .map(|(i, &b)| round(i, b))
                .collect()
        };
        // n_dev 10: a step must exceed 0.1.
        assert_eq!(stale_rounds(&rs(&[0.5]), 10), 0);
        assert_eq!(stale_rounds(&rs(&[0.5, 0.7, 0.75, 0.8]), 10), 2);
        assert_eq!(stale_rounds(&rs(&[0.5, 0.55, 0.7]), 10), 0);
        assert_eq!(stale_rounds(&rs(&[0.5, 0.5, 0.5]), 10), 2);
    }
}
