//! The library's data, independent of how it is stored.

use std::fmt;

use chrono::{DateTime, Utc};
use metaprompt_eval::PromptFile;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RegistryError;

/// Where a version came from. Machine origins start as [`ReviewState::Proposed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Added by a person (`prompts add`, or a task's seed prompt).
    Human,
    /// Read from a plain file (`prompts import`).
    Import,
    Generate,
    Optimize,
    Translate,
}

impl Origin {
    pub const ALL: [Origin; 5] = [
        Origin::Human,
        Origin::Import,
        Origin::Generate,
        Origin::Optimize,
        Origin::Translate,
    ];

    /// Written by the meta layer, not a person.
    pub fn is_machine(self) -> bool {
        matches!(
            self,
            Origin::Generate | Origin::Optimize | Origin::Translate
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Human => "human",
            Origin::Import => "import",
            Origin::Generate => "generate",
            Origin::Optimize => "optimize",
            Origin::Translate => "translate",
        }
    }

    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| RegistryError::Data(format!("unknown origin `{s}`")))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a version stands in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    /// Made by a person; no review asked for (one may still be recorded).
    None,
    /// Made by the machine, waiting for a person.
    Proposed,
    Approved,
    Rejected,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::None => "none",
            ReviewState::Proposed => "proposed",
            ReviewState::Approved => "approved",
            ReviewState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        [
            ReviewState::None,
            ReviewState::Proposed,
            ReviewState::Approved,
            ReviewState::Rejected,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| RegistryError::Data(format!("unknown review state `{s}`")))
    }
}

impl fmt::Display for ReviewState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn state(self) -> ReviewState {
        match self {
            Decision::Approve => ReviewState::Approved,
            Decision::Reject => ReviewState::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// One immutable version of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub prompt: String,
    /// The hash of the prompt's behaviour ([`crate::content::hash`]), 64 hex digits.
    pub hash: String,
    /// 1, 2, … in the order versions were added to this prompt.
    pub seq: u32,
    /// The prompt file as TOML (what `export` writes).
    pub content: String,
    pub parents: Vec<String>,
    pub origin: Origin,
    pub run: Option<String>,
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub target_model: Option<String>,
    pub constraints: Vec<String>,
    /// The protected-constraint check results, when the producing command made them.
    pub checks: Option<Value>,
    pub message: Option<String>,
    pub review: ReviewState,
}

impl Version {
    /// `name@v3`.
    pub fn reference(&self) -> String {
        format!("{}@v{}", self.prompt, self.seq)
    }

    /// The first 12 hex digits of the hash.
    pub fn short(&self) -> &str {
        short(&self.hash)
    }

    pub fn file(&self) -> Result<PromptFile, RegistryError> {
        crate::content::parse_stored(&self.content)
    }
}

pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A version to add.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub prompt: String,
    pub file: PromptFile,
    /// Parent hashes (they must be versions of the same prompt).
    pub parents: Vec<String>,
    pub origin: Origin,
    pub run: Option<String>,
    pub author: String,
    pub checks: Option<Value>,
    pub message: Option<String>,
    /// Mark the prompt review-required (recorded as a policy event when it was not; never turns
    /// the mark off).
    pub review_required: bool,
}

impl NewVersion {
    pub fn new(prompt: &str, file: PromptFile, origin: Origin, author: &str) -> Self {
        Self {
            prompt: prompt.into(),
            file,
            parents: Vec::new(),
            origin,
            run: None,
            author: author.into(),
            checks: None,
            message: None,
            review_required: false,
        }
    }
}

/// A measured score of a version (with its interval) and, when compared, the paired difference
/// against a baseline version on the same examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub task: String,
    pub split: String,
    pub model: String,
    pub metric: String,
    pub n: u64,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    /// The hash of the version this one was compared with.
    pub baseline: Option<String>,
    pub diff: Option<f64>,
    pub diff_low: Option<f64>,
    pub diff_high: Option<f64>,
    pub p_value: Option<f64>,
    pub cost_per_execution_usd: Option<f64>,
    pub run: Option<String>,
    /// Set by the store.
    #[serde(default)]
    pub recorded_at: Option<DateTime<Utc>>,
}

/// A label: a name pointing at one version of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub prompt: String,
    pub label: String,
    pub hash: String,
    pub seq: u32,
    pub moved_at: DateTime<Utc>,
    pub moved_by: String,
}

/// Move a label (`to` = a version hash), or roll it back (`to: None`: to where it pointed
/// before its last move).
#[derive(Debug, Clone)]
pub struct LabelMove {
    pub prompt: String,
    pub label: String,
    pub to: Option<String>,
    pub actor: String,
    pub comment: Option<String>,
}

/// What a label move did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moved {
    pub label: String,
    pub from: Option<Version>,
    pub to: Version,
    pub rollback: bool,
}

/// A prompt and a summary of its versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptSummary {
    pub name: String,
    pub review_required: bool,
    pub versions: u32,
    pub latest: u32,
    pub proposed: u32,
    pub labels: Vec<(String, u32)>,
    pub created_at: DateTime<Utc>,
}

/// A generate / optimize / translate run, with its candidates and usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub kind: Origin,
    pub prompt: String,
    pub task: Option<String>,
    pub algorithm: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub dir: Option<String>,
    pub author: String,
    pub config: Value,
    /// Usage per layer (`{"meta": {...}, "execution": {...}}`).
    pub usage: Value,
    pub summary: Value,
    pub candidates: Vec<RunCandidate>,
}

/// One candidate a run considered (kept or not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCandidate {
    pub id: String,
    pub hash: String,
    pub content: String,
    pub parents: Vec<String>,
    pub op: String,
    pub round: u32,
    pub status: String,
    pub mean: Option<f64>,
    pub n: u64,
    pub detail: Value,
}

/// One write to the library, made in one transaction: versions (each with its evidence) and,
/// optionally, the run that produced them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub versions: Vec<(NewVersion, Vec<Evidence>)>,
    pub run: Option<Run>,
}

/// A version as stored by a write; `created` is false when the same content was already there
/// (the existing version is returned, and new evidence is attached to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub version: Version,
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Add,
    Review,
    Label,
    Rollback,
    Policy,
    /// A label's traffic split set or ended (`decision` holds the canary's weight, in percent).
    Split,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Add => "add",
            EventKind::Review => "review",
            EventKind::Label => "label",
            EventKind::Rollback => "rollback",
            EventKind::Policy => "policy",
            EventKind::Split => "split",
        }
    }

    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        [
            EventKind::Add,
            EventKind::Review,
            EventKind::Label,
            EventKind::Rollback,
            EventKind::Policy,
            EventKind::Split,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| RegistryError::Data(format!("unknown event kind `{s}`")))
    }
}

/// A label's canary: a second version serving `weight` percent of the label's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub prompt: String,
    pub label: String,
    /// The canary version.
    pub hash: String,
    pub seq: u32,
    /// Percent of requests, in (0, 100).
    pub weight: f64,
    pub set_at: DateTime<Utc>,
    pub set_by: String,
}

/// Set (`to: Some`) or end (`to: None`) a label's canary.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitChange {
    pub prompt: String,
    pub label: String,
    /// The canary's hash; `None` ends the split (the label serves only its version).
    pub to: Option<String>,
    /// Percent of requests the canary serves, in (0, 100).
    pub weight: f64,
    pub actor: String,
    pub comment: Option<String>,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub prompt: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: EventKind,
    pub hash: Option<String>,
    pub label: Option<String>,
    pub from_hash: Option<String>,
    /// `approve` / `reject` for reviews; `review-required` / `review-optional` for policy.
    pub decision: Option<String>,
    pub comment: Option<String>,
}

/// How a command names a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    /// `None`: a bare hash prefix, searched across the library.
    pub prompt: Option<String>,
    pub selector: Selector,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `name`: the newest version.
    Latest,
    /// `name@v3` or `name@3`.
    Seq(u32),
    /// `name@WORD`: a label if one has that name, else a hash prefix.
    Word(String),
}

impl VersionRef {
    /// `name`, `name@v3`, `name@3`, `name@production`, `name@3fa2c1`; a bare word that is not a
    /// prompt name is taken as a hash prefix by the store.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = |expected: &str| RegistryError::Invalid {
            what: "version reference",
            value: s.into(),
            expected: expected.into(),
        };
        let s = s.trim();
        let Some((name, sel)) = s.split_once('@') else {
            if s.is_empty() {
                return Err(invalid("NAME, NAME@vN, NAME@LABEL or NAME@HASH"));
            }
            return Ok(Self {
                prompt: Some(s.into()),
                selector: Selector::Latest,
            });
        };
        if name.is_empty() || sel.is_empty() {
            return Err(invalid("NAME@vN, NAME@LABEL or NAME@HASH"));
        }
        let digits = sel.strip_prefix('v').unwrap_or(sel);
        let selector = match digits.parse::<u32>() {
            Ok(n) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                if n == 0 {
                    return Err(invalid("versions count from v1"));
                }
                Selector::Seq(n)
            }
            _ => Selector::Word(sel.into()),
        };
        Ok(Self {
            prompt: Some(name.into()),
            selector,
        })
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.prompt.as_deref().unwrap_or_default();
        match &self.selector {
            Selector::Latest => write!(f, "{name}"),
            Selector::Seq(n) => write!(f, "{name}@v{n}"),
            Selector::Word(w) if name.is_empty() => write!(f, "{w}"),
            Selector::Word(w) => write!(f, "{name}@{w}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = VersionRef::parse("sst2@v3").unwrap();
        assert_eq!(r.selector, Selector::Seq(3));
        assert_eq!(
            VersionRef::parse("sst2@3").unwrap().selector,
            Selector::Seq(3)
        );
        assert_eq!(
            VersionRef::parse("sst2@production").unwrap().selector,
            Selector::Word("production".into())
        );
        assert_eq!(
            VersionRef::parse("sst2").unwrap().selector,
            Selector::Latest
        );
        assert_eq!(VersionRef::parse("sst2@v3").unwrap().to_string(), "sst2@v3");
        for bad in ["", "@v1", "sst2@", "sst2@v0"] {
            let e = VersionRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains("version reference"), "{bad}: {e}");
        }
    }
}
