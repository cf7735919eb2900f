//! A case: one problem the agent follows on a served prompt, from the finding to promotion or
//! rollback, stored in the library as an [`AgentCase`] row (typed columns for what is queried,
//! this struct as its JSON body), so the server, the CLI and the web console show the same
//! thing and a finding is not re-reported every pass.
//!
//! ```text
//! open ──propose──> proposed ──approved──> canary ──better or equal──> promoted
//!   │                  │  (auto-deploy skips review)   └──worse──────> rolled_back
//!   │                  └──rejected (comment kept for the meta layer)──> rejected
//!   └──no proposal passed the checks (why, in `attempts`)──> attempted
//! ```

use chrono::{DateTime, Utc};
use metaprompt_registry::service::AgentCase;
use serde::{Deserialize, Serialize};

use crate::monitor::{Finding, Slice};
use crate::stats::Sequential;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Found; no proposal yet.
    Open,
    /// A proposal was searched for and none passed the checks (see `attempts`).
    Attempted,
    /// In the review queue.
    Proposed,
    /// A reviewer rejected the proposal.
    Rejected,
    /// The proposal serves a share of the label's traffic.
    Canary,
    /// The label moved to the proposal.
    Promoted,
    /// The canary did worse and was ended.
    RolledBack,
    /// The label or the split was changed by someone else while the case was open.
    Superseded,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Attempted => "attempted",
            State::Proposed => "proposed",
            State::Rejected => "rejected",
            State::Canary => "canary",
            State::Promoted => "promoted",
            State::RolledBack => "rolled_back",
            State::Superseded => "superseded",
        }
    }

    /// Whether the case still needs the agent (a new finding on its slice joins it).
    pub fn is_live(self) -> bool {
        matches!(self, State::Open | State::Proposed | State::Canary)
    }
}

/// A version, as the case refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionId {
    pub hash: String,
    pub seq: u32,
}

/// The diagnosis: the agent's own counts and the meta layer's hypothesis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// What the failures have in common, counted (`24 of 30 failed; answered world ×12, …`).
    pub summary: String,
    /// The meta model's root-cause hypothesis, in its words.
    pub hypothesis: String,
    pub model: String,
}

/// One slice's score before and after, on the held-out check set, with the paired test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceCheck {
    /// `all`, `key=value`, or `task-dev` (the task's own dev split).
    pub slice: String,
    pub n: usize,
    pub before: f64,
    pub after: f64,
    pub diff: f64,
    pub low: f64,
    pub high: f64,
    /// Two-sided paired bootstrap p-value.
    pub p: f64,
}

/// The proposal filed for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub version: VersionId,
    pub algorithm: String,
    pub run_dir: String,
    /// The failing slice first, then every other slice, then `all`.
    pub checks: Vec<SliceCheck>,
    /// Cost per execution of the proposal on the check set (`None`: unpriced model).
    pub cost_per_execution_usd: Option<f64>,
}

/// A search that filed nothing, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub why: String,
    #[serde(default)]
    pub checks: Vec<SliceCheck>,
    /// The search's run directory (its `report.html` shows every candidate).
    #[serde(default)]
    pub run_dir: Option<String>,
}

/// The canary: a split on the label, and the last look at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub label: String,
    pub weight: f64,
    pub started_at: DateTime<Utc>,
    pub incumbent_n: u64,
    pub incumbent_mean: Option<f64>,
    pub canary_n: u64,
    pub canary_mean: Option<f64>,
    /// Canary minus incumbent, with its always-valid interval.
    pub last: Option<Sequential>,
}

/// Spent by the agent on this case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    pub at: DateTime<Utc>,
    pub calls: u64,
    pub usd: f64,
}

/// The case's search while it has not ended: recorded before it starts, so that a pass stopped
/// midway (cancelled, or the process killed) leaves its run directory on the case and the
/// next pass resumes it instead of starting over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    /// The engine's run directory (`Engine::resume` continues it from its checkpoint).
    pub run_dir: String,
    pub algorithm: String,
    pub started_at: DateTime<Utc>,
    /// When a pass was stopped during it (`None`: running, or the process was killed).
    #[serde(default)]
    pub stopped_at: Option<DateTime<Utc>>,
    /// Calls of this search already in `spent` (a resumed search records only the rest).
    #[serde(default)]
    pub calls_recorded: u64,
    #[serde(default)]
    pub usd_recorded: f64,
}

/// One line of the case's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub prompt: String,
    pub slice: Slice,
    pub state: State,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The label whose traffic was found worse.
    pub label: String,
    /// The version the label served when the case opened.
    pub incumbent: VersionId,
    /// The latest finding on the slice (passes that found it again update it).
    pub finding: Finding,
    pub seen: u32,
    #[serde(default)]
    pub diagnosis: Option<Diagnosis>,
    #[serde(default)]
    pub proposal: Option<Proposal>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The reviewer's comment on a rejection.
    #[serde(default)]
    pub review_comment: Option<String>,
    #[serde(default)]
    pub canary: Option<Canary>,
    #[serde(default)]
    pub spent: Vec<Spend>,
    /// The search in progress or stopped midway (cleared when it ends).
    #[serde(default)]
    pub search: Option<Search>,
    /// Why the case is not being worked on now, exactly (`waiting for corrections: 12 of 30
    /// failing inferences …`, `waiting for budget: …`); `None` once it is.
    #[serde(default)]
    pub waiting: Option<String>,
    #[serde(default)]
    pub log: Vec<Entry>,
}

impl Case {
    pub fn note(&mut self, at: DateTime<Utc>, what: impl Into<String>) {
        self.updated_at = at;
        self.log.push(Entry {
            at,
            what: what.into(),
        });
    }

    /// The row the service stores; a case that cannot be written as JSON is an error, never a
    /// null body in its place.
    pub fn to_row(&self) -> Result<AgentCase, serde_json::Error> {
        Ok(AgentCase {
            id: self.id.clone(),
            prompt: self.prompt.clone(),
            slice: slice_key(&self.slice),
            state: self.state.as_str().into(),
            opened_at: self.opened_at,
            updated_at: self.updated_at,
            body: serde_json::to_value(self)?,
        })
    }

    pub fn from_row(row: &AgentCase) -> Result<Self, String> {
        serde_json::from_value(row.body.clone())
            .map_err(|e| format!("agent case {}: stored body: {e}", row.id))
    }

    /// Calls spent on or after `since`.
    pub fn calls_since(&self, since: DateTime<Utc>) -> u64 {
        self.spent
            .iter()
            .filter(|s| s.at >= since)
            .map(|s| s.calls)
            .sum()
    }

    pub fn usd_since(&self, since: DateTime<Utc>) -> f64 {
        self.spent
            .iter()
            .filter(|s| s.at >= since)
            .map(|s| s.usd)
            .sum()
    }
}

/// `all` or `key=value`: the slice as the library's column stores it.
pub fn slice_key(slice: &Slice) -> String {
    match slice {
        Slice::All => "all".into(),
        Slice::Tag { key, value } => format!("{key}={value}"),
    }
}
