//! The hard caps of a run ([`Budget`]), why a run stopped ([`StopReason`]), and the arithmetic
//! of the cap checks, kept free of I/O so it can be tested on numbers alone.

use serde::{Deserialize, Serialize};

/// Hard caps. Metric calls include the final test evaluation (reserved up front).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub max_metric_calls: u64,
    pub max_meta_calls: u64,
    pub max_meta_cost_usd: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub max_wall_secs: Option<u64>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_metric_calls: 1500,
            max_meta_calls: 40,
            max_meta_cost_usd: None,
            max_cost_usd: None,
            max_wall_secs: None,
        }
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    MetricCalls,
    MetaCalls,
    MetaCost,
    Cost,
    Wall,
    /// No significant improvement for `patience` rounds.
    Converged,
    /// The round limit.
    Rounds,
    /// The optimizer has nothing more to try.
    Exhausted,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::MetricCalls => "the metric-call cap was reached",
            StopReason::MetaCalls => "the meta-call cap was reached",
            StopReason::MetaCost => "the meta-layer cost cap was reached",
            StopReason::Cost => "the total cost cap was reached",
            StopReason::Wall => "the wall-time cap was reached",
            StopReason::Converged => "converged: no significant improvement for `patience` rounds",
            StopReason::Rounds => "the round limit was reached",
            StopReason::Exhausted => "the algorithm had nothing more to try",
        }
    }
}

/// Why an optimizer's round ended early: the error of every [`crate::run::Ctx`] method that
/// spends, and of [`crate::run::Optimizer::round`].
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// The run stops normally (a cap, convergence, nothing left to try): the verdict follows.
    Stop(StopReason),
    /// The run was cancelled: it ends with `RunError::Cancelled`, its last checkpoint
    /// resumable.
    Cancelled,
}

impl From<StopReason> for Halt {
    fn from(s: StopReason) -> Self {
        Halt::Stop(s)
    }
}

/// What a run has spent so far, as the cap checks see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    /// Meta-layer dollars; `None` when some call's price is unknown.
    pub meta_usd: Option<f64>,
    /// Execution-layer dollars; `None` when some call's price is unknown.
    pub execution_usd: Option<f64>,
    pub wall_secs: f64,
}

impl Budget {
    /// Metric calls the rounds may still spend, with `reserve` held back for the test split.
    pub fn metric_calls_left(&self, spent: u64, reserve: u64) -> u64 {
        self.max_metric_calls.saturating_sub(reserve + spent)
    }

    /// Meta calls still allowed.
    pub fn meta_calls_left(&self, spent: u64) -> u64 {
        self.max_meta_calls.saturating_sub(spent)
    }

    /// The caps other than calls: the first one reached, if any.
    pub fn check_spend(&self, s: &Spend) -> Result<(), StopReason> {
        if let (Some(cap), Some(c)) = (self.max_meta_cost_usd, s.meta_usd)
            && c >= cap
        {
            return Err(StopReason::MetaCost);
        }
        if let (Some(cap), Some(m), Some(e)) = (self.max_cost_usd, s.meta_usd, s.execution_usd)
            && m + e >= cap
        {
            return Err(StopReason::Cost);
        }
        if let Some(cap) = self.max_wall_secs
            && s.wall_secs >= cap as f64
        {
            return Err(StopReason::Wall);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(meta: f64, exec: f64, wall: f64) -> Spend {
        Spend {
            meta_usd: Some(meta),
            execution_usd: Some(exec),
            wall_secs: wall,
        }
    }

    #[test]
    fn call_counts_keep_the_reserve_and_never_go_negative() {
        let b = Budget {
            max_metric_calls: 100,
            max_meta_calls: 5,
            ..Budget::default()
        };
        assert_eq!(b.metric_calls_left(30, 20), 50);
        assert_eq!(b.metric_calls_left(90, 20), 0);
        assert_eq!(b.meta_calls_left(3), 2);
        assert_eq!(b.meta_calls_left(7), 0);
    }

    #[test]
    fn each_spend_cap_stops_with_its_reason() {
        let b = Budget {
            max_meta_cost_usd: Some(1.0),
            max_cost_usd: Some(2.0),
            max_wall_secs: Some(10),
            ..Budget::default()
        };
        assert_eq!(b.check_spend(&spend(0.5, 0.5, 1.0)), Ok(()));
        assert_eq!(
            b.check_spend(&spend(1.0, 0.0, 1.0)),
            Err(StopReason::MetaCost)
        );
        assert_eq!(b.check_spend(&spend(0.9, 1.1, 1.0)), Err(StopReason::Cost));
        assert_eq!(b.check_spend(&spend(0.1, 0.1, 10.0)), Err(StopReason::Wall));
        assert_eq!(Budget::default().check_spend(&spend(1e9, 1e9, 1e9)), Ok(()));
    }
}
