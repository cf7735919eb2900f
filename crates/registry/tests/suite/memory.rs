//! A backend that keeps the rows in memory: the smallest [`Backend`] there is, written only
//! against the public traits. Running the suite on it checks that the library's rules live in
//! [`Library`], not in SQL; it is no substitute for a real database.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use metaprompt_registry::backend::{Backend, NewEvent, PromptRow, Tx};
use metaprompt_registry::{
    Event, Evidence, Label, Library, RegistryError, Result, ReviewState, Run, Store, Version,
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::Fixture;

#[derive(Debug, Clone, Default)]
struct Rows {
    /// name → (review required, created at)
    prompts: BTreeMap<String, (bool, DateTime<Utc>)>,
    /// In insertion order.
    versions: Vec<Version>,
    /// (prompt, label) → (hash, moved at, moved by)
    labels: BTreeMap<(String, String), (String, DateTime<Utc>, String)>,
    evidence: Vec<(String, String, Evidence)>,
    runs: Vec<Run>,
    events: Vec<Event>,
}

#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    rows: Arc<Mutex<Rows>>,
}

/// A snapshot of the rows; a write also holds the lock until it commits or is dropped.
#[derive(Debug)]
pub struct MemoryTx {
    rows: Rows,
    lock: Option<OwnedMutexGuard<Rows>>,
}

#[async_trait]
impl Backend for MemoryBackend {
    type Tx = MemoryTx;

    fn location(&self) -> String {
        "memory".into()
    }

    async fn read(&self) -> Result<MemoryTx> {
        Ok(MemoryTx {
            rows: self.rows.lock().await.clone(),
            lock: None,
        })
    }

    async fn write(&self) -> Result<MemoryTx> {
        let lock = self.rows.clone().lock_owned().await;
        Ok(MemoryTx {
            rows: lock.clone(),
            lock: Some(lock),
        })
    }
}

impl MemoryTx {
    fn write(&mut self) -> &mut Rows {
        assert!(self.lock.is_some(), "a write in a read transaction");
        &mut self.rows
    }

    fn find(&self, prompt: &str, hash: &str) -> Option<&Version> {
        self.rows
            .versions
            .iter()
            .find(|v| v.prompt == prompt && v.hash == hash)
    }

    fn select(&self, keep: impl Fn(&Version) -> bool) -> Vec<Version> {
        let mut out: Vec<Version> = self
            .rows
            .versions
            .iter()
            .filter(|v| keep(v))
            .cloned()
            .collect();
        out.sort_by(|a, b| (&a.prompt, a.seq).cmp(&(&b.prompt, b.seq)));
        out
    }
}

#[async_trait]
impl Tx for MemoryTx {
    async fn commit(self) -> Result<()> {
        if let Some(mut lock) = self.lock {
            *lock = self.rows;
        }
        Ok(())
    }

    async fn prompts(&mut self) -> Result<Vec<PromptRow>> {
        Ok(self
            .rows
            .prompts
            .iter()
            .map(|(name, (review_required, created_at))| {
                let of: Vec<&Version> = self
                    .rows
                    .versions
                    .iter()
                    .filter(|v| &v.prompt == name)
                    .collect();
                PromptRow {
                    name: name.clone(),
                    review_required: *review_required,
                    created_at: *created_at,
                    versions: of.len() as u32,
                    latest: of.iter().map(|v| v.seq).max().unwrap_or(0),
                    proposed: of
                        .iter()
                        .filter(|v| v.review == ReviewState::Proposed)
                        .count() as u32,
                }
            })
            .collect())
    }

    async fn review_required(&mut self, prompt: &str) -> Result<Option<bool>> {
        Ok(self.rows.prompts.get(prompt).map(|p| p.0))
    }

    async fn insert_prompt(&mut self, name: &str, at: DateTime<Utc>, _by: &str) -> Result<()> {
        self.write()
            .prompts
            .entry(name.into())
            .or_insert((false, at));
        Ok(())
    }

    async fn set_review_required(&mut self, prompt: &str, on: bool) -> Result<()> {
        if let Some(p) = self.write().prompts.get_mut(prompt) {
            p.0 = on;
        }
        Ok(())
    }

    async fn version(&mut self, prompt: &str, hash: &str) -> Result<Option<Version>> {
        Ok(self.find(prompt, hash).cloned())
    }

    async fn versions(&mut self, prompt: &str) -> Result<Vec<Version>> {
        Ok(self.select(|v| v.prompt == prompt))
    }

    async fn versions_by_prefix(
        &mut self,
        prompt: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<Version>> {
        Ok(self.select(|v| prompt.is_none_or(|p| v.prompt == p) && v.hash.starts_with(prefix)))
    }

    async fn versions_in_review(&mut self, state: ReviewState) -> Result<Vec<Version>> {
        let mut out = self.select(|v| v.review == state);
        out.sort_by(|a, b| (a.created_at, &a.prompt, a.seq).cmp(&(b.created_at, &b.prompt, b.seq)));
        Ok(out)
    }

    async fn max_seq(&mut self, prompt: &str) -> Result<u32> {
        Ok(self
            .rows
            .versions
            .iter()
            .filter(|v| v.prompt == prompt)
            .map(|v| v.seq)
            .max()
            .unwrap_or(0))
    }

    async fn insert_version(&mut self, version: &Version) -> Result<()> {
        let taken = self.rows.versions.iter().any(|v| {
            v.prompt == version.prompt && (v.hash == version.hash || v.seq == version.seq)
        });
        if taken || !self.rows.prompts.contains_key(&version.prompt) {
            return Err(RegistryError::Data(format!(
                "version {} cannot be stored",
                version.reference()
            )));
        }
        self.write().versions.push(version.clone());
        Ok(())
    }

    async fn set_review(&mut self, prompt: &str, hash: &str, state: ReviewState) -> Result<()> {
        for v in &mut self.write().versions {
            if v.prompt == prompt && v.hash == hash {
                v.review = state;
            }
        }
        Ok(())
    }

    async fn labels(&mut self, prompt: &str) -> Result<Vec<Label>> {
        let mut out = Vec::new();
        for ((p, label), (hash, moved_at, moved_by)) in &self.rows.labels {
            if p != prompt {
                continue;
            }
            let seq = self
                .find(p, hash)
                .map(|v| v.seq)
                .ok_or_else(|| RegistryError::Data("a label on a missing version".into()))?;
            out.push(Label {
                prompt: p.clone(),
                label: label.clone(),
                hash: hash.clone(),
                seq,
                moved_at: *moved_at,
                moved_by: moved_by.clone(),
            });
        }
        Ok(out)
    }

    async fn set_label(
        &mut self,
        prompt: &str,
        label: &str,
        hash: &str,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<()> {
        self.write()
            .labels
            .insert((prompt.into(), label.into()), (hash.into(), at, by.into()));
        Ok(())
    }

    async fn evidence(&mut self, prompt: &str, hash: &str) -> Result<Vec<Evidence>> {
        Ok(self
            .rows
            .evidence
            .iter()
            .filter(|(p, h, _)| p == prompt && h == hash)
            .map(|(_, _, e)| e.clone())
            .collect())
    }

    async fn insert_evidence(
        &mut self,
        prompt: &str,
        hash: &str,
        evidence: &Evidence,
        recorded_at: DateTime<Utc>,
    ) -> Result<()> {
        let e = Evidence {
            recorded_at: Some(recorded_at),
            ..evidence.clone()
        };
        self.write().evidence.push((prompt.into(), hash.into(), e));
        Ok(())
    }

    async fn runs(&mut self, prompt: &str) -> Result<Vec<Run>> {
        let mut out: Vec<Run> = self
            .rows
            .runs
            .iter()
            .filter(|r| r.prompt == prompt)
            .map(|r| Run {
                candidates: Vec::new(),
                ..r.clone()
            })
            .collect();
        out.sort_by_key(|r| r.started_at);
        Ok(out)
    }

    async fn run(&mut self, id: &str) -> Result<Option<Run>> {
        Ok(self.rows.runs.iter().find(|r| r.id == id).cloned())
    }

    async fn insert_run(&mut self, run: &Run) -> Result<()> {
        if self.rows.runs.iter().any(|r| r.id == run.id) {
            return Err(RegistryError::Data(format!("run `{}` exists", run.id)));
        }
        self.write().runs.push(run.clone());
        Ok(())
    }

    async fn events(&mut self, prompt: &str) -> Result<Vec<Event>> {
        Ok(self
            .rows
            .events
            .iter()
            .filter(|e| e.prompt == prompt)
            .cloned()
            .collect())
    }

    async fn events_after(&mut self, after: i64, limit: usize) -> Result<Vec<Event>> {
        Ok(self
            .rows
            .events
            .iter()
            .filter(|e| e.id > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn last_event_id(&mut self) -> Result<i64> {
        Ok(self.rows.events.last().map_or(0, |e| e.id))
    }

    async fn insert_event(&mut self, e: &NewEvent) -> Result<()> {
        let rows = self.write();
        let id = rows.events.len() as i64 + 1;
        rows.events.push(Event {
            id,
            prompt: e.prompt.clone(),
            at: e.at,
            actor: e.actor.clone(),
            kind: e.kind,
            hash: e.hash.clone(),
            label: e.label.clone(),
            from_hash: e.from_hash.clone(),
            decision: e.decision.clone(),
            comment: e.comment.clone(),
        });
        Ok(())
    }
}

/// One in-memory library; every handle shares its rows.
#[derive(Debug, Default)]
pub struct MemoryFixture {
    backend: MemoryBackend,
}

#[async_trait]
impl Fixture for MemoryFixture {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(Library::new(self.backend.clone()))
    }
}

pub async fn fixture() -> MemoryFixture {
    MemoryFixture::default()
}
