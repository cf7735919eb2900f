//! What the prompt service keeps beside the library: every inference it ran, every outcome
//! reported for one, its API tokens (only their hashes), its webhook deliveries and cursor, and
//! the prompt-engineer agent's cases. Same database as the library (schemas 2 to 5), its own
//! trait, because its shape is different: append-mostly, written in batches
//! by the server's recorder, read by the agent in time windows.
//!
//! [`InferenceLog::record`] stores inferences and feedback **in one transaction**; the server
//! answers "ok" only after it returns, which is what makes an acknowledged inference survive a
//! `kill -9`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{RegistryError, Result};

/// How far the service's writes go before [`InferenceLog::record`] returns (`[server]
/// log_sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSync {
    /// Each commit is fsynced: an acknowledged record survives `kill -9`, an operating-system
    /// crash and power loss.
    #[default]
    Full,
    /// Each commit is written to the operating system but not fsynced (SQLite's `synchronous =
    /// NORMAL` in WAL mode): an acknowledged record survives `kill -9` of the server, not an
    /// operating-system crash or power loss, which may lose the last commits (never corrupt
    /// the file).
    Normal,
}

/// One served run of a prompt version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inference {
    pub id: String,
    pub prompt: String,
    /// The version that ran.
    pub hash: String,
    pub seq: u32,
    /// The label it was fetched by, if any.
    pub label: Option<String>,
    /// The execution model's canonical name.
    pub model: String,
    pub inputs: Value,
    /// sha256 of the rendered prompt (the text or the messages as JSON).
    pub rendered_hash: String,
    /// `None` when the call failed.
    pub output: Option<String>,
    /// Why the call failed (already redacted).
    pub error: Option<String>,
    /// The caller's slices (`topic = billing`).
    pub tags: BTreeMap<String, String>,
    pub metadata: Value,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub latency_ms: f64,
    /// The token's name (`local` without tokens).
    pub caller: String,
    pub created_at: DateTime<Utc>,
}

/// Who reported an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackSource {
    /// The application's end user (a thumbs-up).
    User,
    /// A metric, in the application or the task's own.
    Metric,
    /// A person reviewing outputs.
    Human,
}

impl FeedbackSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackSource::User => "user",
            FeedbackSource::Metric => "metric",
            FeedbackSource::Human => "human",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "user" => Ok(FeedbackSource::User),
            "metric" => Ok(FeedbackSource::Metric),
            "human" => Ok(FeedbackSource::Human),
            _ => Err(RegistryError::Invalid {
                what: "feedback source",
                value: s.into(),
                expected: "user, metric or human".into(),
            }),
        }
    }
}

/// An outcome of an inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    pub inference_id: String,
    /// In [0, 1]; `None` when only a label was given.
    pub score: Option<f64>,
    pub label: Option<String>,
    /// The output it should have been (a labelled example).
    pub correction: Option<String>,
    pub comment: Option<String>,
    pub source: FeedbackSource,
    pub caller: String,
    pub created_at: DateTime<Utc>,
}

/// What a token may do; each role may do everything the roles before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read prompts, versions, evidence, runs.
    Viewer,
    /// Run prompts and send feedback.
    Runner,
    /// Add versions, move unprotected labels, start runs.
    Editor,
    /// Approve or reject, move protected labels.
    Reviewer,
    /// Manage tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Runner,
        Role::Editor,
        Role::Reviewer,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Runner => "runner",
            Role::Editor => "editor",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RegistryError::Invalid {
                what: "role",
                value: s.into(),
                expected: "viewer, runner, editor, reviewer or admin".into(),
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API token as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new secret: `mp_` and 64 hex digits. Shown once; only [`token_hash`] of it is stored.
pub fn mint_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("mp_{}", hex::encode(bytes))
}

/// What is stored for a secret.
pub fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The event's id, the same on every retry.
    pub event_id: String,
    pub event: String,
    pub url: String,
    /// 1 for the first try.
    pub attempt: u32,
    /// The HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    /// `None` when delivered.
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// One problem the prompt-engineer agent follows on a served prompt, from the finding through
/// diagnosis, proposal, review and canary to promotion or rollback. The agent owns the shape of
/// `body` (JSON); the library keeps it, so other tools (the server's `GET /v1/agent`, the web
/// console) can show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCase {
    pub id: String,
    pub prompt: String,
    /// `all` or `key=value`.
    pub slice: String,
    /// `open`, `proposed`, `canary`, `promoted`, … (the agent's states).
    pub state: String,
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub body: Value,
}

/// Which inferences to read.
#[derive(Debug, Clone, Default)]
pub struct InferenceQuery {
    pub prompt: Option<String>,
    /// From this time on (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many, newest first; `None`: all.
    pub limit: Option<usize>,
}

/// Scored outcomes of one prompt on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyScore {
    pub prompt: String,
    /// `YYYY-MM-DD` (UTC), of the feedback.
    pub day: String,
    /// Feedback rows with a score.
    pub n: u64,
    /// Σ score.
    pub sum: f64,
}

/// Inferences of one prompt version and tag set in one time bucket, with their outcomes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreBucket {
    pub prompt: String,
    pub seq: u32,
    pub tags: BTreeMap<String, String>,
    /// `(created_at − start) / width`, whole buckets.
    pub bucket: i64,
    /// Every inference, scored or not.
    pub calls: u64,
    /// Inferences with a numeric score (the mean of their scores is the outcome).
    pub n: u64,
    /// Σ outcome.
    pub sum: f64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub inferences: u64,
    pub feedback: u64,
}

/// How many records the service holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub inferences: u64,
    pub feedback: u64,
}

/// Everything the service keeps beside the library, one trait per concern: the inference and
/// feedback log ([`InferenceLog`]), API tokens ([`TokenStore`]), webhook deliveries
/// ([`WebhookLog`]) and the agent's cases ([`CaseStore`]). A backend implements all four; a
/// caller names the concern it uses (`use metaprompt_registry::service::InferenceLog;`).
#[async_trait]
pub trait ServiceStore: InferenceLog + TokenStore + WebhookLog + CaseStore + fmt::Debug {
    fn location(&self) -> String;

    /// Release the connections.
    async fn close(&self) {}
}

/// Every inference the service ran and every outcome reported for one: append-mostly, written
/// in batches, read in time windows.
#[async_trait]
pub trait InferenceLog: Send + Sync {
    /// Store inferences and feedback together, in one transaction: all or nothing.
    async fn record(&self, inferences: &[Inference], feedback: &[Feedback]) -> Result<()>;

    async fn inference(&self, id: &str) -> Result<Option<Inference>>;

    /// Which of `ids` are stored inferences.
    async fn known(&self, ids: &[String]) -> Result<HashSet<String>>;

    /// Inferences matching the query, newest first.
    async fn inferences(&self, query: &InferenceQuery) -> Result<Vec<Inference>>;

    /// The feedback on one inference, oldest first.
    async fn feedback(&self, inference_id: &str) -> Result<Vec<Feedback>>;

    /// The feedback on every inference `query` selects (its `limit` counts inferences), in
    /// one read: what the agent's monitor joins with [`InferenceLog::inferences`].
    async fn feedback_for(&self, query: &InferenceQuery) -> Result<Vec<Feedback>>;

    async fn counts(&self) -> Result<Counts>;

    /// Scored feedback given from `since` on for inferences of `prompts`, summed per prompt and
    /// day (computed by the database: the library page's sparklines).
    async fn daily_scores(
        &self,
        prompts: &[String],
        since: DateTime<Utc>,
    ) -> Result<Vec<DailyScore>>;

    /// The inferences from `start` on (of `prompt`, or all), counted per prompt, version, tag
    /// set and time bucket of `width_secs`, with the sum of their outcomes (the mean of each
    /// one's numeric scores): the production plots, computed by the database.
    async fn score_buckets(
        &self,
        prompt: Option<&str>,
        start: DateTime<Utc>,
        width_secs: i64,
    ) -> Result<Vec<ScoreBucket>>;

    /// When the first inference from `since` on (of `prompt`, or all) was made.
    async fn first_inference(
        &self,
        prompt: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>>;

    /// Remove inferences (and their feedback) older than `before`.
    async fn prune(&self, before: DateTime<Utc>) -> Result<Pruned>;
}

/// The API tokens (their hashes only; a token is shown once, when it is made).
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Store a token's hash under a new name (a taken name is an error).
    async fn add_token(&self, token: &Token, hash: &str) -> Result<()>;

    /// The live (not revoked) token with this hash.
    async fn token(&self, hash: &str) -> Result<Option<Token>>;

    /// Every token, revoked ones included, by name.
    async fn tokens(&self) -> Result<Vec<Token>>;

    /// Revoke a token by name; `false` when there is no live token of that name.
    async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> Result<bool>;
}

/// Webhook deliveries and the cursor up to which the library's events are delivered.
#[async_trait]
pub trait WebhookLog: Send + Sync {
    /// Log a webhook delivery attempt.
    async fn record_delivery(&self, delivery: &Delivery) -> Result<()>;

    /// The latest delivery attempts, newest first.
    async fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>>;

    /// The library event up to which every webhook delivery is done; `None` before the first
    /// server with webhooks started.
    async fn webhook_cursor(&self) -> Result<Option<i64>>;

    async fn set_webhook_cursor(&self, event_id: i64) -> Result<()>;
}

/// The prompt-engineer agent's cases.
#[async_trait]
pub trait CaseStore: Send + Sync {
    /// Store an agent case (a new id adds it, a known id replaces it).
    async fn save_case(&self, case: &AgentCase) -> Result<()>;

    /// The agent's cases, of one prompt or all, oldest first.
    async fn cases(&self, prompt: Option<&str>) -> Result<Vec<AgentCase>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(Role::Viewer < Role::Runner && Role::Reviewer < Role::Admin);
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()).unwrap(), r);
        }
        assert!(
            Role::parse("root")
                .unwrap_err()
                .to_string()
                .contains("viewer")
        );
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (mint_token(), mint_token());
        assert_ne!(a, b);
        assert!(a.starts_with("mp_") && a.len() == 67);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
