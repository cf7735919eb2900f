//! The storage seam under the library's rules: rows in, rows out, inside transactions.
//!
//! A backend knows how to keep the library's rows (prompts, versions, labels, evidence, runs,
//! events) and nothing about what they mean: it does not number versions, pick review states,
//! check policy, or write audit events. [`crate::Library`] does all of that, on any backend, by
//! calling these methods inside one [`Tx`].
//!
//! What a backend must guarantee:
//!
//! - [`Backend::write`] serializes writers: from its start until [`Tx::commit`], no other write
//!   commits, and its reads see every write committed before it. The rules read state (the
//!   latest number, where a label points, the review state) and write on that basis in the same
//!   transaction; two processes writing at once must queue, not interleave. (SQLite: `BEGIN
//!   IMMEDIATE`. PostgreSQL: a lock taken at the start, or `SERIALIZABLE` with retries.)
//! - A transaction dropped without [`Tx::commit`] leaves nothing behind: a refused or failed
//!   write adds nothing.
//! - [`Backend::read`] gives one consistent view for the reads of one call; writing through it
//!   is a bug in the caller.
//! - Values come back as they went in (times to the millisecond), in the orders documented on
//!   each method.
//! - Errors name the library's location and say what a user can do: a read-only library is
//!   [`crate::RegistryError::ReadOnly`], a file or database that is not a metaprompt library
//!   [`crate::RegistryError::NotALibrary`], a newer schema [`crate::RegistryError::TooNew`].
//!
//! Every backend passes the same suite (`tests/store.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::model::{Event, EventKind, Evidence, Label, ReviewState, Run, Split, Version};

/// Where the library's rows live: opens transactions on them.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    type Tx: Tx;

    /// Where the library lives (a path or a URL), for messages.
    fn location(&self) -> String;

    /// A transaction for reading: one consistent view. The library drops it when done (it is
    /// never committed).
    async fn read(&self) -> Result<Self::Tx>;

    /// A transaction for writing, serialized with every other writer (see the module docs).
    async fn write(&self) -> Result<Self::Tx>;

    /// Release the backend's connections (for files: flush everything into the file).
    async fn close(&self) {}
}

/// One transaction's reads and writes, row by row.
#[async_trait]
pub trait Tx: Send {
    /// Make the transaction's writes durable. Dropping a transaction instead discards them.
    async fn commit(self) -> Result<()>;

    /// Every prompt with counts of its versions, by name.
    async fn prompts(&mut self) -> Result<Vec<PromptRow>>;

    /// Whether the prompt is marked review-required; `None` when there is no such prompt.
    async fn review_required(&mut self, prompt: &str) -> Result<Option<bool>>;

    /// Add a prompt unless one has that name (then nothing changes).
    async fn insert_prompt(&mut self, name: &str, at: DateTime<Utc>, by: &str) -> Result<()>;

    async fn set_review_required(&mut self, prompt: &str, on: bool) -> Result<()>;

    async fn version(&mut self, prompt: &str, hash: &str) -> Result<Option<Version>>;

    /// A prompt's versions by number.
    async fn versions(&mut self, prompt: &str) -> Result<Vec<Version>>;

    /// The versions whose hash starts with `prefix` (lowercase hex digits, at least four), of
    /// one prompt or of all, by prompt and number.
    async fn versions_by_prefix(
        &mut self,
        prompt: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<Version>>;

    /// Every version in a review state, by creation time, prompt and number.
    async fn versions_in_review(&mut self, state: ReviewState) -> Result<Vec<Version>>;

    /// The highest version number of a prompt, 0 when it has none.
    async fn max_seq(&mut self, prompt: &str) -> Result<u32>;

    /// Store a version as given (its number, review state and time are already decided).
    async fn insert_version(&mut self, version: &Version) -> Result<()>;

    async fn set_review(&mut self, prompt: &str, hash: &str, state: ReviewState) -> Result<()>;

    /// A prompt's labels, by name, each with the number of the version it points at.
    async fn labels(&mut self, prompt: &str) -> Result<Vec<Label>>;

    /// Point a label at a version (creating the label or moving it).
    async fn set_label(
        &mut self,
        prompt: &str,
        label: &str,
        hash: &str,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<()>;

    /// A prompt's traffic splits, by label. A backend without splits has none.
    async fn splits(&mut self, _prompt: &str) -> Result<Vec<Split>> {
        Ok(Vec::new())
    }

    /// Set a label's canary (replacing any other).
    async fn set_split(
        &mut self,
        _prompt: &str,
        _label: &str,
        _hash: &str,
        _weight: f64,
        _at: DateTime<Utc>,
        _by: &str,
    ) -> Result<()> {
        Err(crate::RegistryError::Data(
            "this library's storage does not keep traffic splits".into(),
        ))
    }

    /// End a label's split; `false` when it had none.
    async fn clear_split(&mut self, _prompt: &str, _label: &str) -> Result<bool> {
        Ok(false)
    }

    /// The evidence attached to a version, in the order it was stored.
    async fn evidence(&mut self, prompt: &str, hash: &str) -> Result<Vec<Evidence>>;

    /// Attach evidence to a version (`recorded_at` is stored in place of `evidence.recorded_at`).
    async fn insert_evidence(
        &mut self,
        prompt: &str,
        hash: &str,
        evidence: &Evidence,
        recorded_at: DateTime<Utc>,
    ) -> Result<()>;

    /// A prompt's runs, without their candidates, by start time.
    async fn runs(&mut self, prompt: &str) -> Result<Vec<Run>>;

    /// One run with its candidates (in their order).
    async fn run(&mut self, id: &str) -> Result<Option<Run>>;

    /// Store a run and its candidates.
    async fn insert_run(&mut self, run: &Run) -> Result<()>;

    /// A prompt's events in the order they were stored.
    async fn events(&mut self, prompt: &str) -> Result<Vec<Event>>;

    /// Events of every prompt with an id above `after`, by id, at most `limit`. Ids grow in
    /// commit order (writers are serialized), so a reader that remembers the last id it saw
    /// misses nothing.
    async fn events_after(&mut self, after: i64, limit: usize) -> Result<Vec<Event>>;

    /// The highest event id, 0 when there are none.
    async fn last_event_id(&mut self) -> Result<i64>;

    /// Append an event (the backend gives it the next id).
    async fn insert_event(&mut self, event: &NewEvent) -> Result<()>;
}

/// A prompt as stored, with counts of its versions.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    pub name: String,
    pub review_required: bool,
    pub created_at: DateTime<Utc>,
    pub versions: u32,
    /// The highest version number (0 without versions).
    pub latest: u32,
    /// How many versions are [`ReviewState::Proposed`].
    pub proposed: u32,
}

/// An event to append: an [`Event`] before the backend gives it an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub prompt: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: EventKind,
    pub hash: Option<String>,
    pub label: Option<String>,
    pub from_hash: Option<String>,
    pub decision: Option<String>,
    pub comment: Option<String>,
}
