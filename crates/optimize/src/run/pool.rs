//! The pool: candidates with lineage and their scores per dev example ([`Entry`]), the
//! proposals that did not enter it ([`Rejected`]), and the per-round statistics.

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
    /// Score per dev example (index into the run's dev split).
    pub scores: BTreeMap<usize, f64>,
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
            outputs: BTreeMap::new(),
            feedback: BTreeMap::new(),
            attrs: BTreeMap::new(),
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (!self.scores.is_empty())
            .then(|| self.scores.values().sum::<f64>() / self.scores.len() as f64)
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
}
