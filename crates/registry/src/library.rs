//! The library's rules over any [`Backend`]: this is where the [`Store`] trait is implemented.
//!
//! - A version is identified by its content hash; adding stored content again adds nothing
//!   (its new evidence is still attached).
//! - Versions are numbered 1, 2, … per prompt, in the order they were added; parents must be
//!   versions of the same prompt.
//! - Machine-made versions (generate, optimize, translate) start [`ReviewState::Proposed`];
//!   others start with no review.
//! - Label moves are checked against [`policy`] on the state read in the same write
//!   transaction (no label points at a version rejected in review unless forced, `production`
//!   never); a rollback goes back through the label's history ([`policy::rollback_target`]).
//! - Every change is an event in the audit trail, written in the same transaction as the change.
//! - A version whose templates go over the render limits with its own demonstrations
//!   ([`metaprompt_eval::PromptFile::check_limits`]) is refused before anything is written.
//!
//! Each write is one [`Backend::write`] transaction: it commits whole or not at all.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::backend::{Backend, NewEvent, Tx};
use crate::model::{
    Added, Batch, Decision, Event, EventKind, Evidence, Label, LabelMove, Moved, NewVersion,
    PromptSummary, ReviewState, Run, Selector, Split, SplitChange, Version, VersionRef, short,
};
use crate::store::Store;
use crate::{RegistryError, Result, content, policy};

/// The prompt library on a backend. [`crate::SqliteStore`] is `Library<SqliteBackend>`.
#[derive(Debug, Clone)]
pub struct Library<B> {
    backend: B,
}

impl<B: Backend> Library<B> {
    pub fn new(backend: B) -> Self {
        Self { backend }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Release the backend's connections (a SQLite file is complete on disk afterwards).
    pub async fn close(&self) {
        self.backend.close().await;
    }
}

/// The review state a new version starts in.
pub(crate) fn initial_review(origin: crate::model::Origin) -> ReviewState {
    if origin.is_machine() {
        ReviewState::Proposed
    } else {
        ReviewState::None
    }
}

/// A word that can be a hash prefix (at least four hex digits), lowercased.
pub(crate) fn hash_prefix(word: &str) -> Option<String> {
    (word.len() >= 4 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| word.to_ascii_lowercase())
}

/// The version numbers to list in an error, the middle elided when there are many.
pub(crate) fn known_versions(versions: &[Version]) -> Vec<String> {
    let mut k: Vec<String> = versions.iter().map(|v| format!("v{}", v.seq)).collect();
    if k.len() > 8 {
        k.drain(3..k.len() - 3);
        k.insert(3, "…".into());
    }
    k
}

/// The one version a hash prefix names, none, or an error listing the candidates.
pub(crate) fn one_match(prefix: &str, mut found: Vec<Version>) -> Result<Option<Version>> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(RegistryError::AmbiguousHash {
            prefix: prefix.into(),
            matches: found.iter().map(Version::reference).collect(),
        }),
    }
}

fn event(prompt: &str, at: DateTime<Utc>, actor: &str, kind: EventKind) -> NewEvent {
    NewEvent {
        prompt: prompt.into(),
        at,
        actor: actor.into(),
        kind,
        hash: None,
        label: None,
        from_hash: None,
        decision: None,
        comment: None,
    }
}

/// The prompt's review-required mark, or an error listing the known prompts when it does not
/// exist.
async fn existing_prompt<T: Tx>(tx: &mut T, name: &str) -> Result<bool> {
    match tx.review_required(name).await? {
        Some(on) => Ok(on),
        None => Err(RegistryError::UnknownPrompt {
            name: name.into(),
            known: tx.prompts().await?.into_iter().map(|p| p.name).collect(),
        }),
    }
}

async fn by_hash_prefix<T: Tx>(
    tx: &mut T,
    prompt: Option<&str>,
    word: &str,
) -> Result<Option<Version>> {
    let Some(prefix) = hash_prefix(word) else {
        return Ok(None);
    };
    let found = tx.versions_by_prefix(prompt, &prefix).await?;
    one_match(word, found)
}

async fn add_prompt<T: Tx>(tx: &mut T, name: &str, at: DateTime<Utc>, actor: &str) -> Result<()> {
    policy::check_prompt_name(name)?;
    tx.insert_prompt(name, at, actor).await
}

/// Refuse a version whose templates go over the render limits
/// ([`metaprompt_eval::prompt::limits`]) when rendered with its own demonstrations
/// ([`metaprompt_eval::PromptFile::check_limits`]), off the async threads: every add (the CLI,
/// the server, optimizations) comes through here, so such a version is never stored.
async fn check_limits(new: &NewVersion) -> Result<()> {
    let file = new.file.clone();
    let limits = metaprompt_eval::prompt::limits();
    let checked = tokio::task::spawn_blocking(move || file.check_limits(&limits))
        .await
        .map_err(|e| RegistryError::Data(format!("the template check failed: {e}")))?;
    checked.map_err(|e| RegistryError::Invalid {
        what: "template",
        value: new.prompt.clone(),
        expected: format!(
            "{e} (a version must render within the limits with its own demonstrations)"
        ),
    })
}

/// Store one version (or find it stored) and attach its evidence.
async fn add_version<T: Tx>(
    tx: &mut T,
    new: &NewVersion,
    evidence: &[Evidence],
    at: DateTime<Utc>,
) -> Result<Added> {
    add_prompt(tx, &new.prompt, at, &new.author).await?;
    if new.review_required && !existing_prompt(tx, &new.prompt).await? {
        tx.set_review_required(&new.prompt, true).await?;
        tx.insert_event(&NewEvent {
            decision: Some("review-required".into()),
            ..event(&new.prompt, at, &new.author, EventKind::Policy)
        })
        .await?;
    }
    let hash = content::hash(&new.file);
    let existing = tx.version(&new.prompt, &hash).await?;
    let created = existing.is_none();
    let version = match existing {
        Some(v) => v,
        None => {
            for p in &new.parents {
                if tx.version(&new.prompt, p).await?.is_none() {
                    return Err(RegistryError::Invalid {
                        what: "parent",
                        value: p.clone(),
                        expected: format!("a version of `{}`", new.prompt),
                    });
                }
            }
            let version = Version {
                prompt: new.prompt.clone(),
                hash: hash.clone(),
                seq: tx.max_seq(&new.prompt).await? + 1,
                content: content::to_stored(&new.prompt, &new.file)?,
                parents: new.parents.clone(),
                origin: new.origin,
                run: new.run.clone(),
                author: new.author.clone(),
                created_at: at,
                target_model: new.file.target_model.clone(),
                constraints: new.file.constraints.clone(),
                checks: new.checks.clone(),
                message: new.message.clone(),
                review: initial_review(new.origin),
            };
            tx.insert_version(&version).await?;
            tx.insert_event(&NewEvent {
                hash: Some(hash.clone()),
                decision: Some(new.origin.as_str().into()),
                comment: new.message.clone(),
                ..event(&new.prompt, at, &new.author, EventKind::Add)
            })
            .await?;
            version
        }
    };
    for e in evidence {
        let recorded = e.recorded_at.unwrap_or(at);
        tx.insert_evidence(&new.prompt, &hash, e, recorded).await?;
    }
    Ok(Added { version, created })
}

#[async_trait]
impl<B: Backend> Store for Library<B> {
    fn location(&self) -> String {
        self.backend.location()
    }

    async fn close(&self) {
        self.backend.close().await;
    }

    async fn commit(&self, batch: Batch) -> Result<Vec<Added>> {
        for (new, _) in &batch.versions {
            check_limits(new).await?;
        }
        let mut tx = self.backend.write().await?;
        let at = crate::now();
        let mut added = Vec::new();
        for (new, evidence) in &batch.versions {
            added.push(add_version(&mut tx, new, evidence, at).await?);
        }
        if let Some(run) = &batch.run {
            add_prompt(&mut tx, &run.prompt, at, &run.author).await?;
            tx.insert_run(run).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn prompts(&self) -> Result<Vec<PromptSummary>> {
        let mut tx = self.backend.read().await?;
        let mut out = Vec::new();
        for p in tx.prompts().await? {
            let labels = tx.labels(&p.name).await?;
            out.push(PromptSummary {
                review_required: p.review_required,
                versions: p.versions,
                latest: p.latest,
                proposed: p.proposed,
                labels: labels.into_iter().map(|l| (l.label, l.seq)).collect(),
                created_at: p.created_at,
                name: p.name,
            });
        }
        Ok(out)
    }

    async fn versions(&self, prompt: &str) -> Result<Vec<Version>> {
        let mut tx = self.backend.read().await?;
        existing_prompt(&mut tx, prompt).await?;
        tx.versions(prompt).await
    }

    async fn resolve(&self, reference: &VersionRef) -> Result<Version> {
        let mut tx = self.backend.read().await?;
        let Some(name) = reference.prompt.as_deref() else {
            return Err(RegistryError::Data("a reference without a prompt".into()));
        };
        if let Err(unknown) = existing_prompt(&mut tx, name).await {
            // A bare word that is no prompt's name may be a hash prefix.
            if reference.selector == Selector::Latest
                && let Some(v) = by_hash_prefix(&mut tx, None, name).await?
            {
                return Ok(v);
            }
            return Err(unknown);
        }
        let versions = tx.versions(name).await?;
        match &reference.selector {
            Selector::Latest => {
                versions
                    .last()
                    .cloned()
                    .ok_or_else(|| RegistryError::UnknownVersion {
                        prompt: name.into(),
                        version: "latest".into(),
                        known: vec![],
                    })
            }
            Selector::Seq(n) => versions
                .iter()
                .find(|v| v.seq == *n)
                .cloned()
                .ok_or_else(|| RegistryError::UnknownVersion {
                    prompt: name.into(),
                    version: format!("v{n}"),
                    known: known_versions(&versions),
                }),
            Selector::Word(w) => {
                let labels = tx.labels(name).await?;
                if let Some(l) = labels.iter().find(|l| &l.label == w) {
                    return versions
                        .into_iter()
                        .find(|v| v.hash == l.hash)
                        .ok_or_else(|| {
                            RegistryError::Data(format!("label `{w}` points at a missing version"))
                        });
                }
                if let Some(v) = by_hash_prefix(&mut tx, Some(name), w).await? {
                    return Ok(v);
                }
                if hash_prefix(w).is_some() {
                    Err(RegistryError::UnknownVersion {
                        prompt: name.into(),
                        version: w.clone(),
                        known: known_versions(&versions),
                    })
                } else {
                    Err(RegistryError::UnknownLabel {
                        prompt: name.into(),
                        label: w.clone(),
                        known: labels.into_iter().map(|l| l.label).collect(),
                    })
                }
            }
        }
    }

    async fn labels(&self, prompt: &str) -> Result<Vec<Label>> {
        self.backend.read().await?.labels(prompt).await
    }

    async fn move_label_with(&self, change: &LabelMove, force: bool) -> Result<Moved> {
        policy::check_label(&change.label)?;
        let mut tx = self.backend.write().await?;
        let at = crate::now();
        let prompt = change.prompt.as_str();
        let label = change.label.as_str();
        let review_required = existing_prompt(&mut tx, prompt).await?;
        let labels = tx.labels(prompt).await?;
        let current = labels
            .iter()
            .find(|l| l.label == label)
            .map(|l| l.hash.clone());
        let rollback = change.to.is_none();
        let target = match &change.to {
            Some(h) => h.clone(),
            None => {
                if current.is_none() {
                    return Err(RegistryError::UnknownLabel {
                        prompt: prompt.into(),
                        label: label.into(),
                        known: labels.into_iter().map(|l| l.label).collect(),
                    });
                }
                let events = tx.events(prompt).await?;
                policy::rollback_target(label, &events).ok_or_else(|| RegistryError::Refused {
                    prompt: prompt.into(),
                    label: label.into(),
                    version: "an earlier version".into(),
                    why: "it has pointed at no other version before (nothing to roll back to)"
                        .into(),
                })?
            }
        };
        let to =
            tx.version(prompt, &target)
                .await?
                .ok_or_else(|| RegistryError::UnknownVersion {
                    prompt: prompt.into(),
                    version: short(&target).into(),
                    known: vec![],
                })?;
        policy::may_label(label, &to, review_required, force).map_err(|why| {
            RegistryError::Refused {
                prompt: prompt.into(),
                label: label.into(),
                version: to.reference(),
                why,
            }
        })?;
        let from = match &current {
            Some(h) => tx.version(prompt, h).await?,
            None => None,
        };
        if current.as_deref() != Some(to.hash.as_str()) || rollback {
            tx.set_label(prompt, label, &to.hash, at, &change.actor)
                .await?;
            // A moved label serves one version: a canary split ends (promoted or abandoned).
            tx.clear_split(prompt, label).await?;
            let kind = if rollback {
                EventKind::Rollback
            } else {
                EventKind::Label
            };
            tx.insert_event(&NewEvent {
                hash: Some(to.hash.clone()),
                label: Some(label.into()),
                from_hash: current.clone(),
                comment: change.comment.clone(),
                ..event(prompt, at, &change.actor, kind)
            })
            .await?;
        }
        tx.commit().await?;
        Ok(Moved {
            label: label.into(),
            from,
            to,
            rollback,
        })
    }

    async fn splits(&self, prompt: &str) -> Result<Vec<Split>> {
        self.backend.read().await?.splits(prompt).await
    }

    async fn set_split(&self, change: &SplitChange) -> Result<Option<Split>> {
        policy::check_label(&change.label)?;
        let mut tx = self.backend.write().await?;
        let at = crate::now();
        let prompt = change.prompt.as_str();
        let label = change.label.as_str();
        let review_required = existing_prompt(&mut tx, prompt).await?;
        let labels = tx.labels(prompt).await?;
        let refused = |version: String, why: String| RegistryError::Refused {
            prompt: prompt.into(),
            label: label.into(),
            version,
            why,
        };
        let Some(current) = labels.iter().find(|l| l.label == label) else {
            return Err(RegistryError::UnknownLabel {
                prompt: prompt.into(),
                label: label.into(),
                known: labels.into_iter().map(|l| l.label).collect(),
            });
        };
        let Some(hash) = &change.to else {
            if tx.clear_split(prompt, label).await? {
                tx.insert_event(&NewEvent {
                    label: Some(label.into()),
                    decision: Some("0".into()),
                    comment: change.comment.clone(),
                    ..event(prompt, at, &change.actor, EventKind::Split)
                })
                .await?;
            }
            tx.commit().await?;
            return Ok(None);
        };
        if !(change.weight > 0.0 && change.weight < 100.0) {
            return Err(RegistryError::Invalid {
                what: "split weight",
                value: change.weight.to_string(),
                expected:
                    "a percent between 0 and 100 (exclusive); 100 moves the label, 0 ends the split"
                        .into(),
            });
        }
        let to = tx
            .version(prompt, hash)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion {
                prompt: prompt.into(),
                version: short(hash).into(),
                known: vec![],
            })?;
        if to.hash == current.hash {
            return Err(refused(
                to.reference(),
                format!("`{label}` already serves it; a canary must be another version"),
            ));
        }
        // A canary of a version rejected in review is refused outright (no `force` here).
        if to.review == ReviewState::Rejected {
            return Err(refused(
                to.reference(),
                "it was rejected in review, and a canary never serves a rejected version".into(),
            ));
        }
        policy::may_label(label, &to, review_required, false).map_err(|why| {
            refused(
                to.reference(),
                format!("its canary serves `{label}` traffic, and {why}"),
            )
        })?;
        tx.set_split(prompt, label, &to.hash, change.weight, at, &change.actor)
            .await?;
        tx.insert_event(&NewEvent {
            hash: Some(to.hash.clone()),
            label: Some(label.into()),
            from_hash: Some(current.hash.clone()),
            decision: Some(format!("{}", change.weight)),
            comment: change.comment.clone(),
            ..event(prompt, at, &change.actor, EventKind::Split)
        })
        .await?;
        tx.commit().await?;
        Ok(Some(Split {
            prompt: prompt.into(),
            label: label.into(),
            hash: to.hash.clone(),
            seq: to.seq,
            weight: change.weight,
            set_at: at,
            set_by: change.actor.clone(),
        }))
    }

    async fn review(
        &self,
        version: &Version,
        decision: Decision,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<Version> {
        let mut tx = self.backend.write().await?;
        let at = crate::now();
        let current = tx
            .version(&version.prompt, &version.hash)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion {
                prompt: version.prompt.clone(),
                version: version.short().into(),
                known: vec![],
            })?;
        tx.set_review(&current.prompt, &current.hash, decision.state())
            .await?;
        tx.insert_event(&NewEvent {
            hash: Some(current.hash.clone()),
            decision: Some(decision.as_str().into()),
            comment: comment.map(String::from),
            ..event(&current.prompt, at, actor, EventKind::Review)
        })
        .await?;
        tx.commit().await?;
        Ok(Version {
            review: decision.state(),
            ..current
        })
    }

    async fn set_review_required(&self, prompt: &str, on: bool, actor: &str) -> Result<()> {
        let mut tx = self.backend.write().await?;
        let at = crate::now();
        existing_prompt(&mut tx, prompt).await?;
        tx.set_review_required(prompt, on).await?;
        let decision = if on {
            "review-required"
        } else {
            "review-optional"
        };
        tx.insert_event(&NewEvent {
            decision: Some(decision.into()),
            ..event(prompt, at, actor, EventKind::Policy)
        })
        .await?;
        tx.commit().await
    }

    async fn evidence(&self, version: &Version) -> Result<Vec<Evidence>> {
        let mut tx = self.backend.read().await?;
        tx.evidence(&version.prompt, &version.hash).await
    }

    async fn runs(&self, prompt: &str) -> Result<Vec<Run>> {
        self.backend.read().await?.runs(prompt).await
    }

    async fn run(&self, id: &str) -> Result<Run> {
        let mut tx = self.backend.read().await?;
        tx.run(id)
            .await?
            .ok_or_else(|| RegistryError::UnknownRun(id.into()))
    }

    async fn events(&self, prompt: &str) -> Result<Vec<Event>> {
        let mut tx = self.backend.read().await?;
        existing_prompt(&mut tx, prompt).await?;
        tx.events(prompt).await
    }

    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let mut tx = self.backend.read().await?;
        tx.events_after(after, limit).await
    }

    async fn last_event_id(&self) -> Result<i64> {
        let mut tx = self.backend.read().await?;
        tx.last_event_id().await
    }

    async fn proposed(&self) -> Result<Vec<Version>> {
        let mut tx = self.backend.read().await?;
        tx.versions_in_review(ReviewState::Proposed).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Origin;

    fn v(seq: u32, hash: &str) -> Version {
        Version {
            prompt: "p".into(),
            hash: hash.into(),
            seq,
            content: String::new(),
            parents: vec![],
            origin: Origin::Human,
            run: None,
            author: "a".into(),
            created_at: crate::now(),
            target_model: None,
            constraints: vec![],
            checks: None,
            message: None,
            review: ReviewState::None,
        }
    }

    #[test]
    fn machine_made_versions_start_proposed() {
        for origin in Origin::ALL {
            let expected = match origin {
                Origin::Human | Origin::Import => ReviewState::None,
                Origin::Generate | Origin::Optimize | Origin::Translate => ReviewState::Proposed,
            };
            assert_eq!(initial_review(origin), expected, "{origin}");
        }
    }

    #[test]
    fn hash_prefixes_are_four_hex_digits_or_more() {
        assert_eq!(hash_prefix("3FA2c1").as_deref(), Some("3fa2c1"));
        assert_eq!(hash_prefix("abcd").as_deref(), Some("abcd"));
        for not in ["abc", "production", "3fa2c1x", "", "v3"] {
            assert_eq!(hash_prefix(not), None, "{not}");
        }
    }

    #[test]
    fn long_version_lists_are_elided_in_errors() {
        let few: Vec<Version> = (1..=3).map(|i| v(i, "aa")).collect();
        assert_eq!(known_versions(&few), ["v1", "v2", "v3"]);
        let many: Vec<Version> = (1..=40).map(|i| v(i, "aa")).collect();
        assert_eq!(
            known_versions(&many),
            ["v1", "v2", "v3", "…", "v38", "v39", "v40"]
        );
    }

    #[test]
    fn a_prefix_matching_several_versions_names_them() {
        assert_eq!(one_match("abcd", vec![]).unwrap(), None);
        assert_eq!(
            one_match("abcd", vec![v(2, "abcd01")])
                .unwrap()
                .unwrap()
                .seq,
            2
        );
        let e = one_match("abcd", vec![v(1, "abcd01"), v(2, "abcd02")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`abcd` is ambiguous") && e.contains("p@v1, p@v2"),
            "{e}"
        );
    }
}
