//! The machinery every optimizer shares: the problem, the budget, the pool of candidates with
//! their per-example scores, racing, the temperature schedule, rounds, convergence,
//! checkpoints, and the final verdict against the seed prompt.
//!
//! An optimizer ([`Optimizer`], also `crate::algo::Optimizer`) only proposes and selects,
//! through a [`Ctx`]: `ctx.meta(…)` runs a meta-prompt (counted against the meta-call budget),
//! `ctx.propose(…)` checks a prompt (render, duplicate, guardrail) and adds it to the pool,
//! `ctx.score(…)` and `ctx.race(…)` evaluate on dev examples (each (candidate, example) pair is
//! evaluated once, every attempt counted against the metric-call budget). Each of them returns
//! a [`Halt`] when the run must stop; an optimizer passes it on with `?`.
//!
//! The caller hands [`run`] a [`Runner`]: everything the run borrows (meta-prompts, models,
//! guardrail, problem, settings, budget, an observer, a [`CancellationToken`]) plus a
//! [`RunStore`], where checkpoints go ([`FsRunStore`]: a run directory; [`MemoryRunStore`]).
//! The returned future is `Send`, so a server can spawn it.
//!
//! **Durable and reproducible.** Everything an optimizer knows lives in the pool, and every
//! random choice and meta-call seed is derived from (run seed, round, call number). So a run is
//! checkpointed when it starts (the seed not yet scored) and after each round (pool, counters,
//! usage, round statistics), and a resume continues from the last checkpoint: the round in
//! flight is redone with the same seeds, and the response cache answers the calls it had
//! already made.
//!
//! **Caps are kept, not crossed.** Before each step (a meta sample, a scoring, a retry) the
//! caps are checked against what is spent plus what the step is expected to cost and take
//! (from the dearest call seen per prompt character, and the mean seconds per call). The
//! metric-call cap bounds the search; the held-out confirmation and the final test evaluation
//! are counted apart ([`Outcome::confirm_calls`], [`Outcome::test_calls`]), while the dollar and wall caps, which bound the whole run, price
//! its calls in before every step. A dollar cap needs prices: a run whose models have none
//! does not start, and a cost that turns unknown stops it ([`RunError::Unpriced`]).
//!
//! **A failure is not a zero.** A (candidate, example) pair whose model call or metric failed
//! is retried once right away; if it fails again it is recorded in the entry's `failed` and
//! left out. Means, racing, the best entry and the verdict compare candidates on the examples
//! scored for both. A round (or the seed scoring) with more unscored pairs than
//! [`Settings::max_unscored`] stops the run with [`RunError::Unscored`]; the [`Outcome`] says
//! how many were unscored, and why.
//!
//! **Kept only when significantly better.** The best candidate replaces the seed only when a
//! paired bootstrap finds it better (p < 0.05, the interval above zero). On the dev examples
//! the search chose it on, that p-value is the best of many draws and too kind (the winner's
//! curse); a problem with [`Problem::confirm`] examples holds them out of the search, and the
//! verdict is taken on them alone ([`Confirmation`]).
//!
//! **Cancellable.** The runner's [`CancellationToken`] is looked at in the check before every
//! meta call and every scoring, and between rounds. A cancelled run returns
//! [`RunError::Cancelled`] and leaves its last checkpoint unfinished, so a resume redoes the
//! round that was in flight (the same seeds, the same calls).
//!
//! The parts, one concern each: `budget` (caps and their arithmetic), `checkpoint` (the
//! checkpoint and the store), `settings` (problem, settings, schedule), `pool` (entries,
//! paired comparison, the unscored tally), `ledger` (every count of what the run spent, with
//! one owner), `ctx` (what a run borrows and the optimizer's handle: meta calls, proposals,
//! the likelihood proxy), `score` (evaluating candidates, retries), `select` (racing, best,
//! ranking), `driver` (the loop) and `verdict` (best vs seed, the test split, the outcome).
//! The modules import in one direction: `driver` → `verdict` → `ctx` → `ledger`.

mod budget;
mod checkpoint;
mod ctx;
mod driver;
mod ledger;
mod payback;
mod pool;
mod score;
mod select;
mod settings;
#[cfg(test)]
pub(crate) mod testkit;
mod verdict;

pub use budget::{Budget, CostCap, Halt, Rates, StopReason};
pub use checkpoint::{Checkpoint, FsRunStore, MemoryRunStore, RunStore};
pub use ctx::{Ctx, Optimizer, Runner};
pub use driver::run;
pub use ledger::Ledger;
pub use payback::{BreakEven, CostUnit, PerExecution};
pub use pool::{Entry, Reason, Rejected, RoundStats, Unscored, beats, paired_means};
pub use settings::{Problem, Schedule, Settings};
/// Cancels a run at its next safe point (re-exported so callers need not depend on
/// `tokio-util` themselves).
pub use tokio_util::sync::CancellationToken;
pub use verdict::{Confirmation, Outcome};

use crate::meta::MetaError;

/// Why a run could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the dev split has no examples")]
    NoDev,
    #[error(
        "a budget of {max_metric_calls} metric calls cannot even score the seed prompt on dev \
         ({dev} examples); raise the metric-call cap, or use fewer dev examples"
    )]
    BudgetTooSmall { max_metric_calls: u64, dev: usize },
    #[error("cannot score the seed prompt: {}", .0.describe())]
    Seed(StopReason),
    /// The run was cancelled. Its checkpoint after round `round` (0: the seed round) is
    /// unfinished, so a resume redoes the round that was in flight, with the same seeds.
    #[error("the run was cancelled; it can be resumed from its checkpoint after round {round}")]
    Cancelled { round: usize },
    #[error("{}: cannot read the checkpoint", path.display())]
    ReadCheckpoint {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `location`: the file, or where another store keeps it.
    #[error("{location}: not a checkpoint")]
    BadCheckpoint {
        location: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the checkpoint")]
    Encode(#[source] serde_json::Error),
    #[error("{}: cannot write", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A store other than the file system failed.
    #[error("{location}: the run store failed")]
    Store {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// More of a round's (candidate, example) pairs went unscored than `Settings::max_unscored`
    /// allows. The checkpoint before that round is left as it was, to resume once the cause
    /// is fixed.
    #[error(
        "round {round}: {failed} of {attempted} (candidate, example) pairs could not be scored, \
         even after a retry: more than the {:.0}% allowed; most common: {}",
        allowed * 100.0,
        top_reasons(reasons)
    )]
    Unscored {
        round: usize,
        failed: u64,
        attempted: u64,
        allowed: f64,
        /// Most common first.
        reasons: Vec<Reason>,
    },
    /// A dollar cap is set, but a model of the layers it covers has no price (at the start),
    /// or a call's cost came back unknown (during the run): the cap could not be kept, so the
    /// run does not start, or stops (its last checkpoint resumable once the model is priced).
    #[error(
        "{} (`{}`) cannot be enforced: model `{model}` has no price. Give it one in \
         metaprompt.toml, in US dollars per million tokens:\n\n    [models.\"{model}\"]\n    \
         pricing = {{ input_per_mtok = …, output_per_mtok = … }}\n\n(`cached_input_per_mtok` \
         is optional), or drop the cap",
        cap.describe(),
        cap.field()
    )]
    Unpriced { model: String, cap: CostCap },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// The three most common reasons, with counts.
fn top_reasons(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .take(3)
        .map(|r| format!("{} ({}×)", r.reason, r.count))
        .collect::<Vec<_>>()
        .join("; ")
}
