//! When an optimization pays for itself: its one-off cost against what the kept prompt saves
//! per correct answer, measured on the test split ([`BreakEven`]).
//!
//! A prompt that answers correctly more often needs fewer executions for the same number of
//! correct answers. With `c` the cost of one execution and `a` the test accuracy (mean score),
//! a correct answer costs `c / a`; each execution of the kept prompt (accuracy `a_w`, cost
//! `c_w`) gives `a_w` correct answers that the seed would have needed `a_w / a_s` executions
//! for, so it saves `a_w · c_s / a_s − c_w`. The run's spend (meta and execution layers,
//! search and test) divided by that saving is the number of executions after which the
//! optimization has paid for itself. Costs are in dollars when every call was priced, else in
//! model seconds (the embedded models are free, not costless); cached answers, which cost
//! nothing, are left out of the per-execution means.

use metaprompt_eval::evaluator::ExampleResult;
use metaprompt_llm::LayerUsage;
use serde::{Deserialize, Serialize};

/// What a cost is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostUnit {
    Dollars,
    ModelSeconds,
}

/// One prompt's executions on the test split: their mean cost and accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PerExecution {
    /// Mean dollars per live (uncached) execution; `None` when one was not priced.
    pub cost_usd: Option<f64>,
    /// Mean model seconds per live execution.
    pub model_secs: f64,
    /// Mean score of the scored executions.
    pub accuracy: f64,
    /// Live executions the means are over.
    pub live: u64,
}

impl PerExecution {
    /// The means over `results`; `None` when none was live and scored.
    pub fn of(results: &[ExampleResult]) -> Option<Self> {
        // A failed call's cost is not known (it reads as zero): left out with the cached.
        let live: Vec<&ExampleResult> = results
            .iter()
            .filter(|r| !r.cached && r.error.is_none())
            .collect();
        let scores: Vec<f64> = results.iter().filter_map(|r| r.score).collect();
        if live.is_empty() || scores.is_empty() {
            return None;
        }
        let n = live.len() as f64;
        let cost_usd = live
            .iter()
            .map(|r| r.cost_usd)
            .sum::<Option<f64>>()
            .map(|c| c / n);
        Some(Self {
            cost_usd,
            model_secs: live.iter().map(|r| r.latency_ms as f64).sum::<f64>() / 1000.0 / n,
            accuracy: scores.iter().sum::<f64>() / scores.len() as f64,
            live: live.len() as u64,
        })
    }

    fn cost(&self, unit: CostUnit) -> Option<f64> {
        match unit {
            CostUnit::Dollars => self.cost_usd,
            CostUnit::ModelSeconds => Some(self.model_secs),
        }
    }
}

/// The optimization's one-off cost against the kept prompt's saving per execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakEven {
    pub unit: CostUnit,
    /// What the run spent, meta and execution layers together (search and test).
    pub one_off: f64,
    pub seed: PerExecution,
    pub kept: PerExecution,
    /// Cost of one correct answer: per execution over accuracy.
    pub seed_per_correct: f64,
    pub kept_per_correct: f64,
    /// Executions of the kept prompt after which the run has paid for itself; `None` when the
    /// kept prompt costs as much or more per correct answer (it never does).
    pub executions: Option<u64>,
}

impl BreakEven {
    /// The break-even of a run that spent `meta` and `execution`, from the seed's and the kept
    /// prompt's test executions; `None` without both, or with an accuracy of zero.
    pub fn of(
        meta: &LayerUsage,
        execution: &LayerUsage,
        seed: Option<PerExecution>,
        kept: Option<PerExecution>,
    ) -> Option<Self> {
        let (seed, kept) = (seed?, kept?);
        if seed.accuracy <= 0.0 || kept.accuracy <= 0.0 {
            return None;
        }
        let dollars = match (
            meta.cost_usd,
            execution.cost_usd,
            seed.cost_usd,
            kept.cost_usd,
        ) {
            (Some(m), Some(e), Some(s), Some(k)) if m + e > 0.0 && s > 0.0 && k > 0.0 => {
                Some(m + e)
            }
            _ => None,
        };
        let (unit, one_off) = match dollars {
            Some(d) => (CostUnit::Dollars, d),
            None => (
                CostUnit::ModelSeconds,
                (meta.model_time + execution.model_time).as_secs_f64(),
            ),
        };
        let (cs, ck) = (seed.cost(unit)?, kept.cost(unit)?);
        let saving = kept.accuracy * cs / seed.accuracy - ck;
        let executions = (saving > 0.0).then(|| (one_off / saving).ceil() as u64);
        Some(Self {
            unit,
            one_off,
            seed,
            kept,
            seed_per_correct: cs / seed.accuracy,
            kept_per_correct: ck / kept.accuracy,
            executions,
        })
    }

    /// `the run's 412 model seconds are paid back after ~1,200 executions (…)`.
    pub fn describe(&self) -> String {
        let amount = |x: f64| match self.unit {
            CostUnit::Dollars => metaprompt_llm::pricing::usd(x),
            CostUnit::ModelSeconds => format!("{x:.3} model s"),
        };
        let spent = match self.unit {
            CostUnit::Dollars => metaprompt_llm::pricing::usd(self.one_off),
            CostUnit::ModelSeconds => format!("{:.0} model s", self.one_off),
        };
        let per = format!(
            "a correct answer costs {} with the kept prompt, {} with the seed",
            amount(self.kept_per_correct),
            amount(self.seed_per_correct)
        );
        match self.executions {
            Some(n) => format!("the run's {spent} are paid back after ~{n} executions ({per})"),
            None => format!("the run's {spent} are never paid back in cost ({per})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn result(score: f64, latency_ms: u64, cost: Option<f64>, cached: bool) -> ExampleResult {
        let example = metaprompt_eval::Example {
            id: "e".into(),
            vars: Default::default(),
            expected: None,
        };
        let mut r = ExampleResult::unscored(&example, Default::default(), String::new());
        r.error = None;
        r.score = Some(score);
        r.latency_ms = latency_ms;
        r.cost_usd = cost;
        r.cached = cached;
        r
    }

    fn usage(secs: u64, cost: Option<f64>) -> LayerUsage {
        LayerUsage {
            model_time: Duration::from_secs(secs),
            cost_usd: cost,
            ..LayerUsage::default()
        }
    }

    #[test]
    fn a_more_accurate_prompt_pays_back_the_run_in_executions() {
        // Seed: half right at 100 ms; kept: all right at 100 ms. A correct answer costs 0.2 s
        // against 0.1 s, so each execution saves 0.1 s and 100 s are paid back after 1,000.
        let seed =
            PerExecution::of(&[result(1.0, 100, None, false), result(0.0, 100, None, false)]);
        let kept = PerExecution::of(&[result(1.0, 100, None, false), result(1.0, 100, None, true)]);
        assert_eq!(kept.unwrap().live, 1, "a cached answer is not a cost");
        let b = BreakEven::of(&usage(60, None), &usage(40, None), seed, kept).unwrap();
        assert_eq!(b.unit, CostUnit::ModelSeconds);
        assert!((b.seed_per_correct - 0.2).abs() < 1e-9);
        assert!((b.kept_per_correct - 0.1).abs() < 1e-9);
        assert_eq!(b.executions, Some(1000));
        assert!(
            b.describe().contains("after ~1000 executions"),
            "{}",
            b.describe()
        );
    }

    #[test]
    fn priced_calls_count_in_dollars_and_a_dearer_prompt_is_never_paid_back() {
        let seed = PerExecution::of(&[result(1.0, 10, Some(0.001), false)]);
        let kept = PerExecution::of(&[result(1.0, 10, Some(0.002), false)]);
        let b = BreakEven::of(&usage(1, Some(0.5)), &usage(1, Some(0.5)), seed, kept).unwrap();
        assert_eq!(b.unit, CostUnit::Dollars);
        assert_eq!(b.one_off, 1.0);
        assert_eq!(b.executions, None);
        assert!(b.describe().contains("never paid back"), "{}", b.describe());
        // An unpriced call anywhere: model seconds instead.
        let b = BreakEven::of(&usage(1, None), &usage(1, Some(0.5)), seed, kept).unwrap();
        assert_eq!(b.unit, CostUnit::ModelSeconds);
    }

    #[test]
    fn without_live_scored_executions_or_accuracy_there_is_none() {
        assert_eq!(PerExecution::of(&[result(1.0, 0, None, true)]), None);
        let zero = PerExecution::of(&[result(0.0, 10, None, false)]);
        let one = PerExecution::of(&[result(1.0, 10, None, false)]);
        assert!(BreakEven::of(&usage(1, None), &usage(1, None), zero, one).is_none());
    }
}
