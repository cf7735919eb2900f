//! The run's ledger: every count of what a run has spent and seen. Metric calls of the search,
//! of the held-out confirmation and of the final test split, meta calls, likelihood-proxy calls, calls saved by racing, the
//! usage and wall time carried over a resume, the round's unscored tally and the run's unscored
//! pairs by reason, the look-ahead's rates, and the screened instructions.
//!
//! One owner: [`super::Ctx`] holds the ledger; the optimizer's handle, the driver and the
//! verdict read it through its getters and change it only through the methods named for what
//! happened (`count`, `meta_spent`, `failed`, `start_test`…). Its fields are private, so no
//! other file can move a counter behind its back.

use std::collections::BTreeMap;
use std::time::Instant;

use metaprompt_llm::LayerUsage;

use super::budget::{Budget, Rates};
use super::checkpoint::Checkpoint;
use super::pool::Tally;
use crate::candidate::Layers;
use crate::junk::{Junk, Screened};

/// Which calls a run is making: after the search, the held-out confirmation of the best
/// candidate, then the test split. Calls after the search are counted apart from its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Search,
    Confirm,
    Test,
}

/// What a run has spent and counted (see the module docs).
#[derive(Debug)]
pub struct Ledger {
    /// Metric calls of the search (what `max_metric_calls` bounds).
    metric_calls: u64,
    /// Metric calls of the held-out confirmation, counted apart from the search.
    confirm_calls: u64,
    /// Metric calls of the final test evaluation, counted apart from the search.
    test_calls: u64,
    /// Which calls are being made: the search's, the confirmation's or the test split's.
    phase: Phase,
    meta_calls: u64,
    /// Metric calls the confirmation and the final test evaluation will make (2 × |confirm|
    /// and 2 × |test|): the dollar and wall caps' look-ahead prices them in before every step.
    reserve: (u64, u64),
    /// Metric calls racing did not have to make.
    saved_calls: u64,
    /// Scoring calls of the likelihood proxy (one prompt, one example, no decoding).
    proxy_calls: u64,
    /// Usage per layer before a resume (this process's usage is read from the layers).
    base_meta: LayerUsage,
    base_execution: LayerUsage,
    /// Wall seconds before a resume.
    wall_before: f64,
    started: Instant,
    /// Attempted and unscored pairs of the round in flight.
    round: Tally,
    /// Unscored pairs over the whole run, by reason.
    unscored: BTreeMap<String, u64>,
    /// What calls have cost so far, for the caps' look-ahead.
    rates: Rates,
    /// Instructions screened so far, and those rejected as junk.
    screened: Screened,
}

impl Ledger {
    /// A fresh run's ledger: nothing spent, metric calls kept for the held-out confirmation
    /// (`confirm`) and the test split (`test`).
    pub(super) fn new(confirm: u64, test: u64) -> Self {
        Self {
            metric_calls: 0,
            confirm_calls: 0,
            test_calls: 0,
            phase: Phase::Search,
            meta_calls: 0,
            reserve: (confirm, test),
            saved_calls: 0,
            proxy_calls: 0,
            base_meta: LayerUsage::default(),
            base_execution: LayerUsage::default(),
            wall_before: 0.0,
            started: Instant::now(),
            round: Tally::default(),
            unscored: BTreeMap::new(),
            rates: Rates::default(),
            screened: Screened::default(),
        }
    }

    /// Carry over what a checkpoint counted, for a resume.
    pub(super) fn resume(&mut self, cp: &Checkpoint) {
        self.metric_calls = cp.metric_calls;
        self.meta_calls = cp.meta_calls;
        self.saved_calls = cp.saved_calls;
        self.proxy_calls = cp.proxy_calls;
        self.base_meta = cp.meta_usage.clone();
        self.base_execution = cp.execution_usage.clone();
        self.wall_before = cp.wall_secs;
        self.unscored = cp.unscored.clone();
        self.rates = cp.rates;
        self.screened = cp.screened.clone();
    }

    /// Metric calls of the search so far.
    pub fn metric_calls(&self) -> u64 {
        self.metric_calls
    }

    /// Metric calls of the held-out confirmation so far.
    pub fn confirm_calls(&self) -> u64 {
        self.confirm_calls
    }

    /// Metric calls of the final test evaluation so far.
    pub fn test_calls(&self) -> u64 {
        self.test_calls
    }

    pub fn meta_calls(&self) -> u64 {
        self.meta_calls
    }

    pub fn saved_calls(&self) -> u64 {
        self.saved_calls
    }

    pub fn proxy_calls(&self) -> u64 {
        self.proxy_calls
    }

    /// Metric calls kept for the confirmation and the test split, which the caps' look-ahead
    /// prices in.
    pub fn reserve(&self) -> u64 {
        self.reserve.0 + self.reserve.1
    }

    /// Unscored pairs over the whole run, by reason.
    pub fn unscored(&self) -> &BTreeMap<String, u64> {
        &self.unscored
    }

    /// The round in flight's attempted and unscored pairs.
    pub(super) fn round_tally(&self) -> &Tally {
        &self.round
    }

    pub fn rates(&self) -> &Rates {
        &self.rates
    }

    pub fn screened(&self) -> &Screened {
        &self.screened
    }

    /// Wall seconds of the whole run (before a resume included).
    pub fn wall(&self) -> f64 {
        self.wall_before + self.started.elapsed().as_secs_f64()
    }

    /// Usage per layer over the whole run (before a resume included): (meta, execution).
    pub fn costs(&self, layers: &Layers) -> (LayerUsage, LayerUsage) {
        let c = layers.costs(None, layers.execution.as_ref());
        let mut meta = self.base_meta.clone();
        meta.merge(&c.meta);
        let mut exec = self.base_execution.clone();
        exec.merge(&c.execution);
        (meta, exec)
    }

    /// Metric calls the next step may make: what the search cap leaves, or (after the search)
    /// no limit, since those calls are counted apart and bounded by their split.
    pub(super) fn calls_left(&self, budget: &Budget) -> u64 {
        match self.phase {
            Phase::Search => budget.metric_calls_left(self.metric_calls),
            Phase::Confirm | Phase::Test => u64::MAX,
        }
    }

    /// Count `n` metric calls as spent, against the search, the confirmation or the test
    /// evaluation.
    pub(super) fn count(&mut self, n: usize) {
        let n = n as u64;
        match self.phase {
            Phase::Search => self.metric_calls += n,
            Phase::Confirm => self.confirm_calls += n,
            Phase::Test => self.test_calls += n,
        }
    }

    /// From here on calls are the held-out confirmation's: counted apart, its reserve spent.
    pub(super) fn start_confirm(&mut self) {
        self.reserve.0 = 0;
        self.phase = Phase::Confirm;
    }

    /// From here on calls are the test split's: counted apart, nothing more kept in reserve.
    pub(super) fn start_test(&mut self) {
        self.reserve = (0, 0);
        self.phase = Phase::Test;
    }

    /// A new round: its unscored tally starts empty.
    pub(super) fn start_round(&mut self) {
        self.round = Tally::default();
    }

    /// `n` meta calls made.
    pub(super) fn meta_spent(&mut self, n: u64) {
        self.meta_calls += n;
    }

    /// `n` scoring calls of the likelihood proxy made.
    pub(super) fn proxy_spent(&mut self, n: u64) {
        self.proxy_calls += n;
    }

    /// `n` metric calls racing did not have to make.
    pub(super) fn saved(&mut self, n: u64) {
        self.saved_calls += n;
    }

    /// `n` (candidate, example) pairs attempted in this round.
    pub(super) fn attempted(&mut self, n: u64) {
        self.round.attempted += n;
    }

    /// One attempted pair whose retry the budget did not allow: not settled, so not counted as
    /// attempted (it will be evaluated again).
    pub(super) fn unsettled(&mut self) {
        self.round.attempted -= 1;
    }

    /// One pair unscored after its retry, because of `why`.
    pub(super) fn failed(&mut self, why: &str) {
        self.round.fail(why);
        *self.unscored.entry(why.to_string()).or_default() += 1;
    }

    /// `n` meta calls over `chars` prompt characters took `secs` and cost `usd`.
    pub(super) fn meta_rate(&mut self, n: u64, chars: usize, usd: Option<f64>, secs: f64) {
        self.rates.meta(n, chars, usd, secs);
    }

    /// `n` metric calls over a prompt of `chars` characters took `secs` and cost `usd`.
    pub(super) fn execution_rate(&mut self, n: u64, chars: usize, usd: Option<f64>, secs: f64) {
        self.rates.execution(n, chars, usd, secs);
    }

    /// One meta-written instruction screened: `junk` is why it was rejected, if it was.
    pub(super) fn screened_one(&mut self, junk: Option<Junk>) {
        self.screened.instructions += 1;
        if let Some(junk) = junk {
            *self.screened.rejected.entry(junk).or_default() += 1;
        }
    }
}
