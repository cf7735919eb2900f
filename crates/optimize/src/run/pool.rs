//! The pool: candidates with lineage and their scores per dev example ([`Entry`]), the
//! proposals that did not enter it ([`Rejected`]), the per-round statistics, and the tally of
//! what could not be scored ([`Unscored`]).
//!
//! A (candidate, example) pair whose model call or metric failed twice is *unscored*: it is
//! kept in [`Entry::failed`] with the reason, never in [`Entry::scores`], and comparisons
//! between candidates use only the examples scored for both ([`paired_means`]).

use std::collections::BTreeMap;

use metaprompt_eval::PromptFile;
use serde::{Deserialize, Serialize};

/// A candidate in the pool, with lineage and its scores per dev example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// `p0` is the seed prompt; `p1`, `p2`, … in order of proposal.
    pub id: String,
    pub prompt: PromptFile,
    pub parents: Vec<String>,
    /// The operation that made it (`seed`, `opro`, `ape-induce`, `fewshot`, …).
    pub op: String,
    pub round: usize,
    /// Score per dev example (index into the run's dev split). Only scored examples.
    pub scores: BTreeMap<usize, f64>,
    /// Dev examples that could not be scored (the call or the metric failed, and failed again
    /// on the retry), and why. Disjoint from `scores`; never retried again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<usize, String>,
    /// The model's output per dev example (what reflective algorithms read as the trace).
    #[serde(default)]
    pub outputs: BTreeMap<usize, String>,
    /// The metric's feedback per dev example, where it gave any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feedback: BTreeMap<usize, String>,
    /// Algorithm-specific state that must survive a resume (Promptbreeder: whether the unit is
    /// alive, its mutation prompt).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
    /// The likelihood proxy, where the candidate was ranked by it before racing
    /// ([`crate::proxy`]): mean log-probability of the expected outputs of the proxy examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<f64>,
}

impl Entry {
    /// A new, unscored entry.
    pub fn new(
        id: String,
        prompt: PromptFile,
        parents: Vec<String>,
        op: &str,
        round: usize,
    ) -> Self {
        Self {
            id,
            prompt,
            parents,
            op: op.to_string(),
            round,
            scores: BTreeMap::new(),
            failed: BTreeMap::new(),
            outputs: BTreeMap::new(),
            feedback: BTreeMap::new(),
            attrs: BTreeMap::new(),
            proxy: None,
        }
    }

    /// Mean over the examples scored (unscored ones are not zeros).
    pub fn mean(&self) -> Option<f64> {
        (!self.scores.is_empty())
            .then(|| self.scores.values().sum::<f64>() / self.scores.len() as f64)
    }

    /// Whether dev example `i` was evaluated: scored, or failed for good.
    pub fn evaluated(&self, i: usize) -> bool {
        self.scores.contains_key(&i) || self.failed.contains_key(&i)
    }

    /// How many dev examples were evaluated (scored or failed).
    pub fn evaluated_count(&self) -> usize {
        self.scores.len() + self.failed.len()
    }

    /// Whether every one of the `n_dev` examples was evaluated (scored or failed).
    pub fn complete(&self, n_dev: usize) -> bool {
        self.evaluated_count() >= n_dev
    }
}

/// Means of `entries` on the examples of `on` scored for every one of them that was scored on
/// any of `on`: the paired comparison. An entry scored on none of `on` gets `None`. When
/// those entries share no scored example (they failed on disjoint sets), each gets its mean
/// on its own scored examples of `on`.
pub fn paired_means(entries: &[&Entry], on: &[usize]) -> Vec<Option<f64>> {
    let scored_on = |e: &Entry| on.iter().any(|i| e.scores.contains_key(i));
    let common: Vec<usize> = on
        .iter()
        .copied()
        .filter(|i| {
            entries
                .iter()
                .filter(|e| scored_on(e))
                .all(|e| e.scores.contains_key(i))
        })
        .collect();
    entries
        .iter()
        .map(|e| {
            if !scored_on(e) {
                return None;
            }
            let own: Vec<usize>;
            let over = if common.is_empty() {
                own = on
                    .iter()
                    .copied()
                    .filter(|i| e.scores.contains_key(i))
                    .collect();
                &own
            } else {
                &common
            };
            Some(over.iter().map(|i| e.scores[i]).sum::<f64>() / over.len() as f64)
        })
        .collect()
}

/// Whether `a` beats `b` on the examples of `on` scored for both (see [`paired_means`]).
pub fn beats(a: &Entry, b: &Entry, on: &[usize]) -> bool {
    match paired_means(&[a, b], on)[..] {
        [Some(x), Some(y)] => x > y,
        [Some(_), None] => true,
        _ => false,
    }
}

/// Pairs that could not be scored, and why (most common reason first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unscored {
    pub count: u64,
    pub reasons: Vec<Reason>,
}

/// One reason pairs went unscored, and how many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub reason: String,
    pub count: u64,
}

impl Unscored {
    pub fn from_counts(counts: &BTreeMap<String, u64>) -> Self {
        let mut reasons: Vec<Reason> = counts
            .iter()
            .map(|(r, &n)| Reason {
                reason: r.clone(),
                count: n,
            })
            .collect();
        reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        Self {
            count: counts.values().sum(),
            reasons,
        }
    }
}

/// What was attempted and what failed for good, over a round (or the seed scoring).
#[derive(Debug, Clone, Default)]
pub(super) struct Tally {
    /// (candidate, example) pairs attempted (a retry is not a new pair).
    pub attempted: u64,
    /// Of those, unscored after their retry.
    pub failed: u64,
    pub reasons: BTreeMap<String, u64>,
}

impl Tally {
    pub fn fail(&mut self, why: &str) {
        self.failed += 1;
        *self.reasons.entry(why.to_string()).or_default() += 1;
    }

    /// Whether more than `allowed` (a fraction) of the attempted pairs went unscored.
    pub fn too_many(&self, allowed: f64) -> bool {
        self.attempted > 0 && self.failed as f64 > allowed * self.attempted as f64
    }
}

/// A proposal that did not enter the pool, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub id: String,
    pub round: usize,
    pub op: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    pub why: Vec<String>,
}

/// One round's statistics (the per-round curves of the report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundStats {
    pub round: usize,
    pub temperature: f32,
    pub proposed: usize,
    pub rejected: usize,
    /// Best full-dev mean so far, and whose.
    pub best: f64,
    pub best_id: String,
    /// Mean of this round's candidates' scores (on whatever examples they reached).
    pub mean: Option<f64>,
    pub metric_calls: u64,
    pub meta_calls: u64,
    pub meta_cost_usd: Option<f64>,
    pub execution_cost_usd: Option<f64>,
    pub wall_secs: f64,
    /// Pairs of this round left unscored (the call or the metric failed twice).
    #[serde(default)]
    pub unscored: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(scores: &[(usize, f64)], failed: &[usize]) -> Entry {
        let mut e = Entry::new("p".into(), PromptFile::default(), Vec::new(), "test", 0);
        e.scores = scores.iter().copied().collect();
        e.failed = failed.iter().map(|&i| (i, "boom".to_string())).collect();
        e
    }

    #[test]
    fn candidates_are_compared_on_the_examples_scored_for_both() {
        // a failed on 2 and 3, where b is wrong: zeros would make a look no better than b.
        let a = entry(&[(0, 1.0), (1, 1.0)], &[2, 3]);
        let b = entry(&[(0, 1.0), (1, 0.0), (2, 0.0), (3, 0.0)], &[]);
        let on = [0, 1, 2, 3];
        assert_eq!(paired_means(&[&a, &b], &on), [Some(1.0), Some(0.5)]);
        assert!(beats(&a, &b, &on) && !beats(&b, &a, &on));
        assert!(a.complete(4) && !a.complete(5));
        assert_eq!((a.evaluated_count(), a.mean()), (4, Some(1.0)));
        // Not scored on any of `on`: no mean, and it loses.
        let c = entry(&[(9, 1.0)], &[]);
        assert_eq!(paired_means(&[&a, &c], &on), [Some(1.0), None]);
        assert!(beats(&a, &c, &on) && !beats(&c, &a, &on));
        // Disjoint scored sets: each on its own.
        let d = entry(&[(2, 0.0), (3, 1.0)], &[0, 1]);
        assert_eq!(paired_means(&[&a, &d], &on), [Some(1.0), Some(0.5)]);
    }

    #[test]
    fn the_tally_says_when_too_much_went_unscored_and_why() {
        let mut t = Tally {
            attempted: 20,
            ..Tally::default()
        };
        t.fail("timeout");
        assert!(!t.too_many(0.05), "1 of 20 is 5%, not above");
        t.fail("timeout");
        t.fail("HTTP 500");
        assert!(t.too_many(0.05) && !t.too_many(0.2));
        let u = Unscored::from_counts(&t.reasons);
        assert_eq!(u.count, 3);
        assert_eq!(u.reasons[0].reason, "timeout");
        assert_eq!(u.reasons[0].count, 2);
        assert!(!Tally::default().too_many(0.0));
    }
}
