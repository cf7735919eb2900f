//! The hard caps of a run ([`Budget`]), why a run stopped ([`StopReason`]), and the arithmetic
//! of the cap checks, kept free of I/O so it can be tested on numbers alone.

use serde::{Deserialize, Serialize};

/// Hard caps. `max_metric_calls` bounds the search (seed, candidates, teacher runs on train);
/// the final test evaluation (seed and kept prompt on the test split, 2 × |test| at most) is
/// counted apart, in [`crate::run::Outcome::test_calls`]. The dollar and wall caps cover the
/// whole run, so their look-ahead prices the test split in before every step.
///
/// `max_meta_tokens` caps what the meta layer generates, the unit that costs time on a local
/// meta model (the samples of one meta call share their prompt's prefill): each meta call then
/// asks for as many samples as the tokens left are expected to pay for, at the mean length of
/// the answers so far (the meta-prompt's `max_tokens` before the first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Budget {
    pub max_metric_calls: u64,
    pub max_meta_calls: u64,
    #[serde(default)]
    pub max_meta_tokens: Option<u64>,
    pub max_meta_cost_usd: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub max_wall_secs: Option<u64>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_metric_calls: 1500,
            max_meta_calls: 40,
            max_meta_tokens: None,
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
    MetaTokens,
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
            StopReason::MetaTokens => "the meta-token cap was reached",
            StopReason::MetaCost => "the meta-layer cost cap was reached",
            StopReason::Cost => "the total cost cap was reached",
            StopReason::Wall => "the wall-time cap was reached",
            StopReason::Converged => "converged: no significant improvement for `patience` rounds",
            StopReason::Rounds => "the round limit was reached",
            StopReason::Exhausted => "the algorithm had nothing more to try",
        }
    }
}

/// A dollar cap of the [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostCap {
    /// `max_meta_cost_usd`: the meta layer (meta-prompts, the guardrail's judge).
    Meta,
    /// `max_cost_usd`: both layers.
    Total,
}

impl CostCap {
    /// The budget field (in a task's `[budget]` table and in the checkpoint).
    pub fn field(self) -> &'static str {
        match self {
            CostCap::Meta => "max_meta_cost_usd",
            CostCap::Total => "max_cost_usd",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CostCap::Meta => "the meta-layer cost cap",
            CostCap::Total => "the total cost cap",
        }
    }
}

/// Why an optimizer's round ended early: the error of every [`crate::run::Ctx`] method that
/// spends, and of [`crate::run::Optimizer::round`]. Pass it on with `?`.
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// The run stops normally (a cap, convergence, nothing left to try): the verdict follows.
    Stop(StopReason),
    /// The run was cancelled: it ends with `RunError::Cancelled`, its last checkpoint
    /// resumable.
    Cancelled,
    /// A dollar cap is set but a cost became unknown (a call without a price): the run ends
    /// with `RunError::Unpriced` rather than run unbounded.
    Unpriced { model: String, cap: CostCap },
}

impl From<StopReason> for Halt {
    fn from(s: StopReason) -> Self {
        Halt::Stop(s)
    }
}

/// What a run has spent so far, as the cap checks see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Spend {
    /// Meta-layer dollars; `None` when some call's price is unknown.
    pub meta_usd: Option<f64>,
    /// Execution-layer dollars; `None` when some call's price is unknown.
    pub execution_usd: Option<f64>,
    pub wall_secs: f64,
}

/// What the next step will spend, in calls and prompt sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Ahead {
    pub metric_calls: u64,
    /// Characters of one execution prompt of the step.
    pub metric_chars: usize,
    pub meta_calls: u64,
    /// Characters of the step's meta-prompt.
    pub meta_chars: usize,
    /// Metric calls held back for the test split (priced at the dearest call seen).
    pub reserve: u64,
}

/// What calls have cost so far: the look-ahead of the cap checks. Dollars are the dearest
/// seen per prompt character (output included), so a longer prompt is expected to cost more;
/// seconds are the average per call (calls overlap in batches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rates {
    pub execution_usd_per_char: f64,
    /// The dearest execution call seen (what the test split's reserve is priced at).
    pub execution_usd_per_call: f64,
    pub meta_usd_per_char: f64,
    pub execution_secs: f64,
    pub execution_timed: u64,
    pub meta_secs: f64,
    pub meta_timed: u64,
}

impl Rates {
    /// `calls` execution calls of `chars`-character prompts cost `usd` (`None`: unknown) and
    /// took `secs`.
    pub(super) fn execution(&mut self, calls: u64, chars: usize, usd: Option<f64>, secs: f64) {
        if calls == 0 {
            return;
        }
        if let Some(usd) = usd {
            let per_call = usd / calls as f64;
            self.execution_usd_per_call = self.execution_usd_per_call.max(per_call);
            self.execution_usd_per_char = self
                .execution_usd_per_char
                .max(per_call / chars.max(1) as f64);
        }
        self.execution_secs += secs;
        self.execution_timed += calls;
    }

    /// `calls` meta calls of a `chars`-character meta-prompt cost `usd` and took `secs`.
    pub(super) fn meta(&mut self, calls: u64, chars: usize, usd: Option<f64>, secs: f64) {
        if calls == 0 {
            return;
        }
        if let Some(usd) = usd {
            let per_call = usd / calls as f64;
            self.meta_usd_per_char = self.meta_usd_per_char.max(per_call / chars.max(1) as f64);
        }
        self.meta_secs += secs;
        self.meta_timed += calls;
    }

    fn per(secs: f64, calls: u64) -> f64 {
        if calls == 0 { 0.0 } else { secs / calls as f64 }
    }
}

/// A cap the next step would cross, or a dollar cap that cannot be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    Cap(StopReason),
    /// The cost of a layer is unknown (`true`: the meta layer) while `CostCap` is set.
    Unpriced(CostCap, bool),
}

impl Budget {
    /// Metric calls the search may still spend (the test split is not part of this cap).
    pub fn metric_calls_left(&self, spent: u64) -> u64 {
        self.max_metric_calls.saturating_sub(spent)
    }

    /// Meta calls still allowed.
    pub fn meta_calls_left(&self, spent: u64) -> u64 {
        self.max_meta_calls.saturating_sub(spent)
    }

    /// Meta calls the token cap still pays for, each expected to generate `per_call` tokens,
    /// after `spent` generated tokens (no cap: unlimited).
    pub fn meta_calls_by_tokens(&self, spent: u64, per_call: u64) -> u64 {
        match self.max_meta_tokens {
            None => u64::MAX,
            Some(cap) => cap.saturating_sub(spent) / per_call.max(1),
        }
    }

    /// The caps other than call counts, before a step: stop when a cap is reached, or when
    /// the step (and the reserve for the test split) is expected to cross it. A dollar cap
    /// with an unknown cost fails closed.
    pub(super) fn check_spend(&self, s: &Spend, r: &Rates, a: &Ahead) -> Result<(), Over> {
        let meta_next = r.meta_usd_per_char * a.meta_chars as f64 * a.meta_calls as f64;
        let execution_next =
            r.execution_usd_per_char * a.metric_chars as f64 * a.metric_calls as f64
                + r.execution_usd_per_call * a.reserve as f64;
        if let Some(cap) = self.max_meta_cost_usd {
            let m = s.meta_usd.ok_or(Over::Unpriced(CostCap::Meta, true))?;
            if m >= cap || m + meta_next > cap {
                return Err(Over::Cap(StopReason::MetaCost));
            }
        }
        if let Some(cap) = self.max_cost_usd {
            let m = s.meta_usd.ok_or(Over::Unpriced(CostCap::Total, true))?;
            let e = s
                .execution_usd
                .ok_or(Over::Unpriced(CostCap::Total, false))?;
            if m + e >= cap || m + e + meta_next + execution_next > cap {
                return Err(Over::Cap(StopReason::Cost));
            }
        }
        if let Some(cap) = self.max_wall_secs {
            let next = Rates::per(r.execution_secs, r.execution_timed)
                * (a.metric_calls + a.reserve) as f64
                + Rates::per(r.meta_secs, r.meta_timed) * a.meta_calls as f64;
            let cap = cap as f64;
            if s.wall_secs >= cap || s.wall_secs + next > cap {
                return Err(Over::Cap(StopReason::Wall));
            }
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
    fn call_counts_never_go_negative() {
        let b = Budget {
            max_metric_calls: 100,
            max_meta_calls: 5,
            ..Budget::default()
        };
        assert_eq!(b.metric_calls_left(30), 70);
        assert_eq!(b.metric_calls_left(120), 0);
        assert_eq!(b.meta_calls_left(3), 2);
        assert_eq!(b.meta_calls_left(7), 0);
    }

    #[test]
    fn a_token_cap_pays_for_whole_calls_only() {
        let b = Budget {
            max_meta_tokens: Some(1000),
            ..Budget::default()
        };
        assert_eq!(b.meta_calls_by_tokens(0, 300), 3);
        assert_eq!(b.meta_calls_by_tokens(800, 300), 0);
        assert_eq!(b.meta_calls_by_tokens(1200, 300), 0);
        assert_eq!(b.meta_calls_by_tokens(0, 0), 1000);
        assert_eq!(Budget::default().meta_calls_by_tokens(5000, 10), u64::MAX);
    }

    fn capped() -> Budget {
        Budget {
            max_meta_cost_usd: Some(1.0),
            max_cost_usd: Some(2.0),
            max_wall_secs: Some(10),
            ..Budget::default()
        }
    }

    const NOTHING: Ahead = Ahead {
        metric_calls: 0,
        metric_chars: 0,
        meta_calls: 0,
        meta_chars: 0,
        reserve: 0,
    };

    #[test]
    fn each_spend_cap_stops_with_its_reason_once_reached() {
        let b = capped();
        let r = Rates::default();
        let check = |s| b.check_spend(&s, &r, &NOTHING);
        assert_eq!(check(spend(0.5, 0.5, 1.0)), Ok(()));
        assert_eq!(
            check(spend(1.0, 0.0, 1.0)),
            Err(Over::Cap(StopReason::MetaCost))
        );
        assert_eq!(
            check(spend(0.9, 1.1, 1.0)),
            Err(Over::Cap(StopReason::Cost))
        );
        assert_eq!(
            check(spend(0.1, 0.1, 10.0)),
            Err(Over::Cap(StopReason::Wall))
        );
        let free = Budget::default();
        assert_eq!(
            free.check_spend(&spend(1e9, 1e9, 1e9), &r, &NOTHING),
            Ok(())
        );
    }

    #[test]
    fn a_step_expected_to_cross_a_cap_is_not_started() {
        let b = capped();
        let mut r = Rates::default();
        // 10 calls of 100-character prompts cost $0.10 and took 2.5 s: $0.0001 per character,
        // 0.25 s per call.
        r.execution(10, 100, Some(0.10), 2.5);
        r.meta(2, 1000, Some(0.2), 1.0);
        assert_eq!(r.execution_usd_per_call, 0.01);
        let step = |metric_calls, meta_calls| Ahead {
            metric_calls,
            metric_chars: 100,
            meta_calls,
            meta_chars: 1000,
            reserve: 0,
        };
        let s = spend(0.5, 1.0, 1.0);
        assert_eq!(b.check_spend(&s, &r, &step(10, 0)), Ok(()));
        // Four meta calls at $0.10 each would take the meta layer to $0.90 ≤ $1; six would not.
        assert_eq!(b.check_spend(&s, &r, &step(0, 4)), Ok(()));
        assert_eq!(
            b.check_spend(&s, &r, &step(0, 6)),
            Err(Over::Cap(StopReason::MetaCost))
        );
        // 60 execution calls ($0.60) would take the total past $2.
        assert_eq!(
            b.check_spend(&s, &r, &step(60, 0)),
            Err(Over::Cap(StopReason::Cost))
        );
        // The test split's reserve is priced in, at the dearest call seen: 45 calls, $0.45.
        let with_reserve = Ahead {
            reserve: 45,
            ..step(10, 0)
        };
        assert_eq!(
            b.check_spend(&s, &r, &with_reserve),
            Err(Over::Cap(StopReason::Cost))
        );
        // Wall: 1 s spent, 0.25 s per call: 36 calls fit under 10 s, 37 do not.
        let loose = Budget {
            max_wall_secs: Some(10),
            ..Budget::default()
        };
        assert_eq!(loose.check_spend(&s, &r, &step(36, 0)), Ok(()));
        assert_eq!(
            loose.check_spend(&s, &r, &step(37, 0)),
            Err(Over::Cap(StopReason::Wall))
        );
    }

    #[test]
    fn a_dollar_cap_with_an_unknown_cost_fails_closed() {
        let r = Rates::default();
        let unknown_meta = Spend {
            meta_usd: None,
            execution_usd: Some(0.0),
            wall_secs: 0.0,
        };
        let unknown_execution = Spend {
            meta_usd: Some(0.0),
            execution_usd: None,
            wall_secs: 0.0,
        };
        let meta_cap = Budget {
            max_meta_cost_usd: Some(1.0),
            ..Budget::default()
        };
        let total_cap = Budget {
            max_cost_usd: Some(1.0),
            ..Budget::default()
        };
        assert_eq!(
            meta_cap.check_spend(&unknown_meta, &r, &NOTHING),
            Err(Over::Unpriced(CostCap::Meta, true))
        );
        assert_eq!(
            meta_cap.check_spend(&unknown_execution, &r, &NOTHING),
            Ok(())
        );
        assert_eq!(
            total_cap.check_spend(&unknown_execution, &r, &NOTHING),
            Err(Over::Unpriced(CostCap::Total, false))
        );
        // Without a dollar cap an unknown cost is only unknown.
        assert_eq!(
            Budget::default().check_spend(&unknown_meta, &r, &NOTHING),
            Ok(())
        );
        assert_eq!(CostCap::Total.field(), "max_cost_usd");
    }
}
