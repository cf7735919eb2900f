//! What the library offers its users: every read and write a command, the server or the agent
//! makes. Callers hold an `Arc<dyn Store>` ([`crate::open`]) or a generic `S: Store`.
//!
//! The one implementation is [`crate::Library`], the library's rules over a storage
//! [`crate::backend::Backend`]; a new kind of storage implements `Backend`, not this trait.

use async_trait::async_trait;

use crate::Result;
use crate::model::{
    Added, Batch, Decision, Event, Evidence, Label, LabelMove, Moved, NewVersion, PromptSummary,
    Run, Split, SplitChange, Version, VersionRef,
};

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Where the library lives (a path or a URL), for messages.
    fn location(&self) -> String;

    /// Release the library's connections (a SQLite file is complete on disk afterwards). The
    /// store is not used after this.
    async fn close(&self) {}

    /// Store versions, their evidence and the run that made them, in one transaction. A version
    /// whose content is already stored is not duplicated (its evidence is still attached).
    async fn commit(&self, batch: Batch) -> Result<Vec<Added>>;

    /// Every prompt, by name.
    async fn prompts(&self) -> Result<Vec<PromptSummary>>;

    /// A prompt's versions, oldest first.
    async fn versions(&self, prompt: &str) -> Result<Vec<Version>>;

    /// The version a reference names.
    async fn resolve(&self, reference: &VersionRef) -> Result<Version>;

    async fn labels(&self, prompt: &str) -> Result<Vec<Label>>;

    /// Move (or roll back) a label atomically, checking [`crate::policy::may_label`] on the
    /// state read in the same transaction, and record who, when and why. A version rejected in
    /// review is refused ([`Store::move_label_with`] with `force` moves a label other than
    /// `production` onto one).
    async fn move_label(&self, change: &LabelMove) -> Result<Moved> {
        self.move_label_with(change, false).await
    }

    /// [`Store::move_label`]; with `force` (a person's `--force`, `"force": true` over HTTP), a
    /// label other than `production` may also point at a version rejected in review.
    async fn move_label_with(&self, change: &LabelMove, force: bool) -> Result<Moved>;

    /// A prompt's traffic splits (label canaries), by label.
    async fn splits(&self, prompt: &str) -> Result<Vec<Split>>;

    /// Set or end a label's canary, checking the label's policy on the canary (it serves the
    /// label's traffic), recorded as a `split` event. Moving the label ends its split.
    async fn set_split(&self, change: &SplitChange) -> Result<Option<Split>>;

    /// Record a review decision on a version (and set its review state).
    async fn review(
        &self,
        version: &Version,
        decision: Decision,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<Version>;

    /// Mark a prompt review-required (or not), recorded as a policy event.
    async fn set_review_required(&self, prompt: &str, on: bool, actor: &str) -> Result<()>;

    /// The evidence attached to a version, oldest first.
    async fn evidence(&self, version: &Version) -> Result<Vec<Evidence>>;

    /// A prompt's runs (without their candidates), oldest first.
    async fn runs(&self, prompt: &str) -> Result<Vec<Run>>;

    /// One run, with its candidates.
    async fn run(&self, id: &str) -> Result<Run>;

    /// A prompt's audit trail, oldest first.
    async fn events(&self, prompt: &str) -> Result<Vec<Event>>;

    /// The audit trail of every prompt after event `after` (by id, at most `limit`): how a
    /// follower (the server's webhooks) sees changes whoever made them.
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>>;

    /// The id of the newest event, 0 in an empty library.
    async fn last_event_id(&self) -> Result<i64>;

    /// Every version waiting for review, oldest first.
    async fn proposed(&self) -> Result<Vec<Version>>;

    /// Store one version on its own.
    async fn add(&self, version: NewVersion) -> Result<Added> {
        let mut added = self
            .commit(Batch {
                versions: vec![(version, Vec::new())],
                run: None,
            })
            .await?;
        added
            .pop()
            .ok_or_else(|| crate::RegistryError::Data("the store added nothing".into()))
    }
}
