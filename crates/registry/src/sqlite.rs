//! The default store: one SQLite file.
//!
//! - WAL journal and a 30 s busy timeout; every write is one `BEGIN IMMEDIATE` transaction, so
//!   two processes writing at once queue instead of failing, and a rule checked inside a write
//!   sees the state the write changes.
//! - Versioned migrations (`migrations/sqlite/NNNN_*.sql`, compiled in) run on open; a file
//!   migrated by a newer metaprompt is refused rather than misread.
//! - A file without write permission opens read-only: reads work, writes say why they cannot.
//! - A file that is not a SQLite database, or is another program's, is refused with its path.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool};
use sqlx::sqlite::{SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlSafeStr};

use crate::model::{
    Added, Batch, Decision, Event, EventKind, Evidence, Label, LabelMove, Moved, Origin,
    PromptSummary, ReviewState, Run, RunCandidate, Selector, Version, VersionRef,
};
use crate::store::Store;
use crate::{RegistryError, Result, content, policy};

/// The newest schema this build knows.
const SCHEMA: i64 = 1;

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![Migration::new(
        1,
        "library".into(),
        MigrationType::Simple,
        include_str!("../migrations/sqlite/0001_library.sql").into_sql_str(),
        false,
    )])
}

macro_rules! select_versions {
    ($rest:literal) => {
        concat!(
            "SELECT prompt, hash, seq, content, parents, origin, run_id, author, created_at, ",
            "target_model, constraints, checks, message, review FROM versions ",
            $rest
        )
    };
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    read_only: bool,
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the library at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let file_err = |message: String| RegistryError::File {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| file_err(format!("cannot create its directory: {e}")))?;
        }
        let read_only = match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => return Err(file_err("is a directory, not a file".into())),
            Ok(m) => m.permissions().readonly(),
            Err(_) => false,
        };
        let mut options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| file_err(e.to_string()))?
            .filename(path)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        options = if read_only {
            options.read_only(true)
        } else {
            options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| classify(path, "cannot open", e))?;
        let store = Self {
            pool,
            path: path.to_path_buf(),
            read_only,
        };
        store.check_schema().await?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close every connection (the WAL is checkpointed into the file when the last one closes).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Refuse other programs' databases and newer schemas; migrate ours.
    async fn check_schema(&self) -> Result<()> {
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err("cannot read", e))?;
        let ours = tables.iter().any(|t| t == "_sqlx_migrations");
        let foreign: Vec<&String> = tables
            .iter()
            .filter(|t| !t.starts_with("sqlite_") && !ours)
            .collect();
        if !foreign.is_empty() {
            return Err(RegistryError::NotALibrary {
                path: self.path.clone(),
                message: format!(
                    "it holds other tables ({})",
                    foreign
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if ours {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|e| self.err("cannot read the schema version", e))?;
            let found = found.unwrap_or(0);
            if found > SCHEMA {
                return Err(RegistryError::TooNew {
                    path: self.path.clone(),
                    found,
                    known: SCHEMA,
                });
            }
            if found == SCHEMA {
                return Ok(());
            }
        }
        if self.read_only {
            return Err(RegistryError::ReadOnly {
                path: self.path.clone(),
            });
        }
        // Two processes opening a new library at once may both try the first migration; the
        // loser finds it applied on the next try.
        let mut last = None;
        for _ in 0..3 {
            match migrator().run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(match last {
            Some(sqlx::migrate::MigrateError::Execute(e)) => self.err("cannot migrate", e),
            Some(e) => RegistryError::Data(format!("{}: cannot migrate: {e}", self.path.display())),
            None => RegistryError::Data("migration did not run".into()),
        })
    }

    fn err(&self, what: &str, e: sqlx::Error) -> RegistryError {
        classify(&self.path, what, e)
    }

    async fn write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        if self.read_only {
            return Err(RegistryError::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err("cannot start a write", e))
    }

    async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        self.pool
            .acquire()
            .await
            .map_err(|e| self.err("cannot read", e))
    }

    async fn prompt_row(&self, c: &mut SqliteConnection, name: &str) -> Result<bool> {
        let row: Option<i64> =
            sqlx::query_scalar("SELECT review_required FROM prompts WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *c)
                .await
                .map_err(|e| self.err("cannot read prompts", e))?;
        match row {
            Some(r) => Ok(r != 0),
            None => Err(RegistryError::UnknownPrompt {
                name: name.into(),
                known: self.names(c).await?,
            }),
        }
    }

    async fn names(&self, c: &mut SqliteConnection) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT name FROM prompts ORDER BY name")
            .fetch_all(&mut *c)
            .await
            .map_err(|e| self.err("cannot read prompts", e))
    }

    async fn version_in(
        &self,
        c: &mut SqliteConnection,
        prompt: &str,
        hash: &str,
    ) -> Result<Option<Version>> {
        let row = sqlx::query(select_versions!("WHERE prompt = $1 AND hash = $2"))
            .bind(prompt)
            .bind(hash)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err("cannot read versions", e))?;
        row.map(|r| version(&r)).transpose()
    }

    async fn versions_in(&self, c: &mut SqliteConnection, prompt: &str) -> Result<Vec<Version>> {
        let rows = sqlx::query(select_versions!("WHERE prompt = $1 ORDER BY seq"))
            .bind(prompt)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| self.err("cannot read versions", e))?;
        rows.iter().map(version).collect()
    }

    async fn events_in(&self, c: &mut SqliteConnection, prompt: &str) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT id, prompt, at, actor, kind, hash, label, from_hash, decision, comment \
             FROM events WHERE prompt = $1 ORDER BY id",
        )
        .bind(prompt)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err("cannot read events", e))?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: get(r, "id")?,
                    prompt: get(r, "prompt")?,
                    at: time(&get::<String>(r, "at")?)?,
                    actor: get(r, "actor")?,
                    kind: EventKind::parse(&get::<String>(r, "kind")?)?,
                    hash: get(r, "hash")?,
                    label: get(r, "label")?,
                    from_hash: get(r, "from_hash")?,
                    decision: get(r, "decision")?,
                    comment: get(r, "comment")?,
                })
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        c: &mut SqliteConnection,
        prompt: &str,
        actor: &str,
        kind: EventKind,
        hash: Option<&str>,
        label: Option<&str>,
        from: Option<&str>,
        decision: Option<&str>,
        comment: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (prompt, at, actor, kind, hash, label, from_hash, decision, comment) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(prompt)
        .bind(stamp(crate::now()))
        .bind(actor)
        .bind(kind.as_str())
        .bind(hash)
        .bind(label)
        .bind(from)
        .bind(decision)
        .bind(comment)
        .execute(&mut *c)
        .await
        .map_err(|e| self.err("cannot record the event", e))?;
        Ok(())
    }

    async fn insert_evidence(
        &self,
        c: &mut SqliteConnection,
        prompt: &str,
        hash: &str,
        e: &Evidence,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO evidence (prompt, hash, run_id, task, split, model, metric, n, mean, low, \
             high, baseline, diff, diff_low, diff_high, p_value, cost_per_execution_usd, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(prompt)
        .bind(hash)
        .bind(&e.run)
        .bind(&e.task)
        .bind(&e.split)
        .bind(&e.model)
        .bind(&e.metric)
        .bind(e.n as i64)
        .bind(e.mean)
        .bind(e.low)
        .bind(e.high)
        .bind(&e.baseline)
        .bind(e.diff)
        .bind(e.diff_low)
        .bind(e.diff_high)
        .bind(e.p_value)
        .bind(e.cost_per_execution_usd)
        .bind(stamp(e.recorded_at.unwrap_or_else(crate::now)))
        .execute(&mut *c)
        .await
        .map_err(|e| self.err("cannot store evidence", e))?;
        Ok(())
    }

    async fn insert_run(&self, c: &mut SqliteConnection, run: &Run) -> Result<()> {
        sqlx::query(
            "INSERT INTO runs (id, kind, prompt, task, algorithm, started_at, finished_at, dir, \
             author, config, usage, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&run.id)
        .bind(run.kind.as_str())
        .bind(&run.prompt)
        .bind(&run.task)
        .bind(&run.algorithm)
        .bind(stamp(run.started_at))
        .bind(stamp(run.finished_at))
        .bind(&run.dir)
        .bind(&run.author)
        .bind(run.config.to_string())
        .bind(run.usage.to_string())
        .bind(run.summary.to_string())
        .execute(&mut *c)
        .await
        .map_err(|e| self.err(&format!("cannot store run `{}`", run.id), e))?;
        for (ord, k) in run.candidates.iter().enumerate() {
            sqlx::query(
                "INSERT INTO run_candidates (run_id, ord, id, hash, content, parents, op, round, \
                 status, mean, n, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&run.id)
            .bind(ord as i64)
            .bind(&k.id)
            .bind(&k.hash)
            .bind(&k.content)
            .bind(json(&k.parents))
            .bind(&k.op)
            .bind(i64::from(k.round))
            .bind(&k.status)
            .bind(k.mean)
            .bind(k.n as i64)
            .bind(k.detail.to_string())
            .execute(&mut *c)
            .await
            .map_err(|e| self.err("cannot store a run candidate", e))?;
        }
        Ok(())
    }

    async fn ensure_prompt(&self, c: &mut SqliteConnection, name: &str, actor: &str) -> Result<()> {
        policy::check_prompt_name(name)?;
        sqlx::query(
            "INSERT INTO prompts (name, review_required, created_at, created_by) \
             VALUES ($1, 0, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(stamp(crate::now()))
        .bind(actor)
        .execute(&mut *c)
        .await
        .map_err(|e| self.err("cannot add the prompt", e))?;
        Ok(())
    }

    /// Mark a prompt review-required (recorded as a policy event) unless it already is.
    async fn require_review(
        &self,
        c: &mut SqliteConnection,
        prompt: &str,
        actor: &str,
    ) -> Result<()> {
        let changed = sqlx::query(
            "UPDATE prompts SET review_required = 1 WHERE name = $1 AND review_required = 0",
        )
        .bind(prompt)
        .execute(&mut *c)
        .await
        .map_err(|e| self.err("cannot change the policy", e))?
        .rows_affected();
        if changed > 0 {
            self.event(
                c,
                prompt,
                actor,
                EventKind::Policy,
                None,
                None,
                None,
                Some("review-required"),
                None,
            )
            .await?;
        }
        Ok(())
    }

    async fn by_hash_prefix(
        &self,
        c: &mut SqliteConnection,
        prompt: Option<&str>,
        prefix: &str,
    ) -> Result<Option<Version>> {
        if prefix.len() < 4 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let pattern = format!("{}%", prefix.to_ascii_lowercase());
        let rows = match prompt {
            Some(p) => {
                sqlx::query(select_versions!(
                    "WHERE prompt = $1 AND hash LIKE $2 ORDER BY prompt, seq"
                ))
                .bind(p)
                .bind(pattern)
                .fetch_all(&mut *c)
                .await
            }
            None => {
                sqlx::query(select_versions!("WHERE hash LIKE $1 ORDER BY prompt, seq"))
                    .bind(pattern)
                    .fetch_all(&mut *c)
                    .await
            }
        }
        .map_err(|e| self.err("cannot read versions", e))?;
        let mut found: Vec<Version> = rows.iter().map(version).collect::<Result<_>>()?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(RegistryError::AmbiguousHash {
                prefix: prefix.into(),
                matches: found.iter().map(Version::reference).collect(),
            }),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn commit(&self, batch: Batch) -> Result<Vec<Added>> {
        let mut tx = self.write().await?;
        let mut added = Vec::new();
        for (new, evidence) in &batch.versions {
            self.ensure_prompt(&mut tx, &new.prompt, &new.author)
                .await?;
            if new.review_required {
                self.require_review(&mut tx, &new.prompt, &new.author)
                    .await?;
            }
            let hash = content::hash(&new.file);
            let existing = self.version_in(&mut tx, &new.prompt, &hash).await?;
            let created = existing.is_none();
            if created {
                for p in &new.parents {
                    if self.version_in(&mut tx, &new.prompt, p).await?.is_none() {
                        return Err(RegistryError::Invalid {
                            what: "parent",
                            value: p.clone(),
                            expected: format!("a version of `{}`", new.prompt),
                        });
                    }
                }
                let seq: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM versions WHERE prompt = $1",
                )
                .bind(&new.prompt)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| self.err("cannot number the version", e))?;
                let review = if new.origin.is_machine() {
                    ReviewState::Proposed
                } else {
                    ReviewState::None
                };
                sqlx::query(
                    "INSERT INTO versions (prompt, hash, seq, content, parents, origin, run_id, \
                     author, created_at, target_model, constraints, checks, message, review) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(&new.prompt)
                .bind(&hash)
                .bind(seq)
                .bind(content::to_stored(&new.prompt, &new.file))
                .bind(json(&new.parents))
                .bind(new.origin.as_str())
                .bind(&new.run)
                .bind(&new.author)
                .bind(stamp(crate::now()))
                .bind(&new.file.target_model)
                .bind(json(&new.file.constraints))
                .bind(new.checks.as_ref().map(Value::to_string))
                .bind(&new.message)
                .bind(review.as_str())
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err("cannot add the version", e))?;
                self.event(
                    &mut tx,
                    &new.prompt,
                    &new.author,
                    EventKind::Add,
                    Some(&hash),
                    None,
                    None,
                    Some(new.origin.as_str()),
                    new.message.as_deref(),
                )
                .await?;
            }
            for e in evidence {
                self.insert_evidence(&mut tx, &new.prompt, &hash, e).await?;
            }
            let version = self
                .version_in(&mut tx, &new.prompt, &hash)
                .await?
                .ok_or_else(|| RegistryError::Data("a version vanished while added".into()))?;
            added.push(Added { version, created });
        }
        if let Some(run) = &batch.run {
            self.ensure_prompt(&mut tx, &run.prompt, &run.author)
                .await?;
            self.insert_run(&mut tx, run).await?;
        }
        tx.commit()
            .await
            .map_err(|e| self.err("cannot commit", e))?;
        Ok(added)
    }

    async fn prompts(&self) -> Result<Vec<PromptSummary>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT p.name, p.review_required, p.created_at, \
               (SELECT COUNT(*) FROM versions v WHERE v.prompt = p.name) AS n, \
               (SELECT COALESCE(MAX(seq), 0) FROM versions v WHERE v.prompt = p.name) AS latest, \
               (SELECT COUNT(*) FROM versions v WHERE v.prompt = p.name AND v.review = 'proposed') AS proposed \
             FROM prompts p ORDER BY p.name",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err("cannot read prompts", e))?;
        let mut out = Vec::new();
        for r in &rows {
            let name: String = get(r, "name")?;
            let labels = self.labels(&name).await?;
            out.push(PromptSummary {
                review_required: get::<i64>(r, "review_required")? != 0,
                versions: get::<i64>(r, "n")? as u32,
                latest: get::<i64>(r, "latest")? as u32,
                proposed: get::<i64>(r, "proposed")? as u32,
                labels: labels.into_iter().map(|l| (l.label, l.seq)).collect(),
                created_at: time(&get::<String>(r, "created_at")?)?,
                name,
            });
        }
        Ok(out)
    }

    async fn versions(&self, prompt: &str) -> Result<Vec<Version>> {
        let mut c = self.read().await?;
        self.prompt_row(&mut c, prompt).await?;
        self.versions_in(&mut c, prompt).await
    }

    async fn resolve(&self, reference: &VersionRef) -> Result<Version> {
        let mut c = self.read().await?;
        let Some(name) = reference.prompt.as_deref() else {
            return Err(RegistryError::Data("a reference without a prompt".into()));
        };
        let exists = self.prompt_row(&mut c, name).await;
        if let Err(unknown) = exists {
            // A bare word that is no prompt's name may be a hash prefix.
            if reference.selector == Selector::Latest
                && let Some(v) = self.by_hash_prefix(&mut c, None, name).await?
            {
                return Ok(v);
            }
            return Err(unknown);
        }
        let versions = self.versions_in(&mut c, name).await?;
        let known = || {
            let mut k: Vec<String> = versions.iter().map(|v| format!("v{}", v.seq)).collect();
            if k.len() > 8 {
                k.drain(3..k.len() - 3);
                k.insert(3, "…".into());
            }
            k
        };
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
                    known: known(),
                }),
            Selector::Word(w) => {
                let label: Option<String> =
                    sqlx::query_scalar("SELECT hash FROM labels WHERE prompt = $1 AND label = $2")
                        .bind(name)
                        .bind(w)
                        .fetch_optional(&mut *c)
                        .await
                        .map_err(|e| self.err("cannot read labels", e))?;
                if let Some(h) = label {
                    return versions.into_iter().find(|v| v.hash == h).ok_or_else(|| {
                        RegistryError::Data(format!("label `{w}` points at a missing version"))
                    });
                }
                if let Some(v) = self.by_hash_prefix(&mut c, Some(name), w).await? {
                    return Ok(v);
                }
                let looks_hex = w.len() >= 4 && w.bytes().all(|b| b.is_ascii_hexdigit());
                if looks_hex {
                    Err(RegistryError::UnknownVersion {
                        prompt: name.into(),
                        version: w.clone(),
                        known: known(),
                    })
                } else {
                    let labels = self.labels(name).await?;
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
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT l.prompt, l.label, l.hash, v.seq, l.moved_at, l.moved_by FROM labels l \
             JOIN versions v ON v.prompt = l.prompt AND v.hash = l.hash \
             WHERE l.prompt = $1 ORDER BY l.label",
        )
        .bind(prompt)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err("cannot read labels", e))?;
        rows.iter()
            .map(|r| {
                Ok(Label {
                    prompt: get(r, "prompt")?,
                    label: get(r, "label")?,
                    hash: get(r, "hash")?,
                    seq: get::<i64>(r, "seq")? as u32,
                    moved_at: time(&get::<String>(r, "moved_at")?)?,
                    moved_by: get(r, "moved_by")?,
                })
            })
            .collect()
    }

    async fn move_label(&self, change: &LabelMove) -> Result<Moved> {
        policy::check_label(&change.label)?;
        let mut tx = self.write().await?;
        let prompt = change.prompt.as_str();
        let label = change.label.as_str();
        let review_required = self.prompt_row(&mut tx, prompt).await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT hash FROM labels WHERE prompt = $1 AND label = $2")
                .bind(prompt)
                .bind(label)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.err("cannot read labels", e))?;
        let rollback = change.to.is_none();
        let target = match &change.to {
            Some(h) => h.clone(),
            None => {
                if current.is_none() {
                    let labels: Vec<String> =
                        sqlx::query_scalar("SELECT label FROM labels WHERE prompt = $1")
                            .bind(prompt)
                            .fetch_all(&mut *tx)
                            .await
                            .map_err(|e| self.err("cannot read labels", e))?;
                    return Err(RegistryError::UnknownLabel {
                        prompt: prompt.into(),
                        label: label.into(),
                        known: labels,
                    });
                }
                let events = self.events_in(&mut tx, prompt).await?;
                policy::rollback_target(label, &events).ok_or_else(|| RegistryError::Refused {
                    prompt: prompt.into(),
                    label: label.into(),
                    version: "an earlier version".into(),
                    why: "it has pointed at no other version before (nothing to roll back to)"
                        .into(),
                })?
            }
        };
        let to = self
            .version_in(&mut tx, prompt, &target)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion {
                prompt: prompt.into(),
                version: content_short(&target),
                known: vec![],
            })?;
        policy::may_label(label, &to, review_required).map_err(|why| RegistryError::Refused {
            prompt: prompt.into(),
            label: label.into(),
            version: to.reference(),
            why,
        })?;
        let from = match &current {
            Some(h) => self.version_in(&mut tx, prompt, h).await?,
            None => None,
        };
        if current.as_deref() != Some(to.hash.as_str()) || rollback {
            sqlx::query(
                "INSERT INTO labels (prompt, label, hash, moved_at, moved_by) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (prompt, label) DO UPDATE SET hash = excluded.hash, \
                 moved_at = excluded.moved_at, moved_by = excluded.moved_by",
            )
            .bind(prompt)
            .bind(label)
            .bind(&to.hash)
            .bind(stamp(crate::now()))
            .bind(&change.actor)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err("cannot move the label", e))?;
            let kind = if rollback {
                EventKind::Rollback
            } else {
                EventKind::Label
            };
            self.event(
                &mut tx,
                prompt,
                &change.actor,
                kind,
                Some(&to.hash),
                Some(label),
                current.as_deref(),
                None,
                change.comment.as_deref(),
            )
            .await?;
        }
        tx.commit()
            .await
            .map_err(|e| self.err("cannot commit", e))?;
        Ok(Moved {
            label: label.into(),
            from,
            to,
            rollback,
        })
    }

    async fn review(
        &self,
        version: &Version,
        decision: Decision,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<Version> {
        let mut tx = self.write().await?;
        let current = self
            .version_in(&mut tx, &version.prompt, &version.hash)
            .await?
            .ok_or_else(|| RegistryError::UnknownVersion {
                prompt: version.prompt.clone(),
                version: version.short().into(),
                known: vec![],
            })?;
        sqlx::query("UPDATE versions SET review = $1 WHERE prompt = $2 AND hash = $3")
            .bind(decision.state().as_str())
            .bind(&current.prompt)
            .bind(&current.hash)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err("cannot record the review", e))?;
        self.event(
            &mut tx,
            &current.prompt,
            actor,
            EventKind::Review,
            Some(&current.hash),
            None,
            None,
            Some(decision.as_str()),
            comment,
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| self.err("cannot commit", e))?;
        Ok(Version {
            review: decision.state(),
            ..current
        })
    }

    async fn set_review_required(&self, prompt: &str, on: bool, actor: &str) -> Result<()> {
        let mut tx = self.write().await?;
        self.prompt_row(&mut tx, prompt).await?;
        sqlx::query("UPDATE prompts SET review_required = $1 WHERE name = $2")
            .bind(i64::from(on))
            .bind(prompt)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err("cannot change the policy", e))?;
        let decision = if on {
            "review-required"
        } else {
            "review-optional"
        };
        self.event(
            &mut tx,
            prompt,
            actor,
            EventKind::Policy,
            None,
            None,
            None,
            Some(decision),
            None,
        )
        .await?;
        tx.commit().await.map_err(|e| self.err("cannot commit", e))
    }

    async fn evidence(&self, version: &Version) -> Result<Vec<Evidence>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(
            "SELECT run_id, task, split, model, metric, n, mean, low, high, baseline, diff, \
             diff_low, diff_high, p_value, cost_per_execution_usd, recorded_at FROM evidence \
             WHERE prompt = $1 AND hash = $2 ORDER BY id",
        )
        .bind(&version.prompt)
        .bind(&version.hash)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err("cannot read evidence", e))?;
        rows.iter()
            .map(|r| {
                Ok(Evidence {
                    task: get(r, "task")?,
                    split: get(r, "split")?,
                    model: get(r, "model")?,
                    metric: get(r, "metric")?,
                    n: get::<i64>(r, "n")? as u64,
                    mean: get(r, "mean")?,
                    low: get(r, "low")?,
                    high: get(r, "high")?,
                    baseline: get(r, "baseline")?,
                    diff: get(r, "diff")?,
                    diff_low: get(r, "diff_low")?,
                    diff_high: get(r, "diff_high")?,
                    p_value: get(r, "p_value")?,
                    cost_per_execution_usd: get(r, "cost_per_execution_usd")?,
                    run: get(r, "run_id")?,
                    recorded_at: Some(time(&get::<String>(r, "recorded_at")?)?),
                })
            })
            .collect()
    }

    async fn runs(&self, prompt: &str) -> Result<Vec<Run>> {
        let mut c = self.read().await?;
        let rows = sqlx::query("SELECT * FROM runs WHERE prompt = $1 ORDER BY started_at")
            .bind(prompt)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| self.err("cannot read runs", e))?;
        rows.iter().map(run).collect()
    }

    async fn run(&self, id: &str) -> Result<Run> {
        let mut c = self.read().await?;
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| self.err("cannot read runs", e))?
            .ok_or_else(|| RegistryError::UnknownRun(id.into()))?;
        let mut out = run(&row)?;
        let rows = sqlx::query("SELECT * FROM run_candidates WHERE run_id = $1 ORDER BY ord")
            .bind(id)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| self.err("cannot read run candidates", e))?;
        out.candidates = rows
            .iter()
            .map(|r| {
                Ok(RunCandidate {
                    id: get(r, "id")?,
                    hash: get(r, "hash")?,
                    content: get(r, "content")?,
                    parents: from_json(&get::<String>(r, "parents")?)?,
                    op: get(r, "op")?,
                    round: get::<i64>(r, "round")? as u32,
                    status: get(r, "status")?,
                    mean: get(r, "mean")?,
                    n: get::<i64>(r, "n")? as u64,
                    detail: from_json(&get::<String>(r, "detail")?)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(out)
    }

    async fn events(&self, prompt: &str) -> Result<Vec<Event>> {
        let mut c = self.read().await?;
        self.prompt_row(&mut c, prompt).await?;
        self.events_in(&mut c, prompt).await
    }

    async fn proposed(&self) -> Result<Vec<Version>> {
        let mut c = self.read().await?;
        let rows = sqlx::query(select_versions!(
            "WHERE review = 'proposed' ORDER BY created_at, prompt, seq"
        ))
        .fetch_all(&mut *c)
        .await
        .map_err(|e| self.err("cannot read versions", e))?;
        rows.iter().map(version).collect()
    }
}

fn content_short(hash: &str) -> String {
    crate::model::short(hash).to_string()
}

fn version(r: &SqliteRow) -> Result<Version> {
    Ok(Version {
        prompt: get(r, "prompt")?,
        hash: get(r, "hash")?,
        seq: get::<i64>(r, "seq")? as u32,
        content: get(r, "content")?,
        parents: from_json(&get::<String>(r, "parents")?)?,
        origin: Origin::parse(&get::<String>(r, "origin")?)?,
        run: get(r, "run_id")?,
        author: get(r, "author")?,
        created_at: time(&get::<String>(r, "created_at")?)?,
        target_model: get(r, "target_model")?,
        constraints: from_json(&get::<String>(r, "constraints")?)?,
        checks: get::<Option<String>>(r, "checks")?
            .map(|s| from_json(&s))
            .transpose()?,
        message: get(r, "message")?,
        review: ReviewState::parse(&get::<String>(r, "review")?)?,
    })
}

fn run(r: &SqliteRow) -> Result<Run> {
    Ok(Run {
        id: get(r, "id")?,
        kind: Origin::parse(&get::<String>(r, "kind")?)?,
        prompt: get(r, "prompt")?,
        task: get(r, "task")?,
        algorithm: get(r, "algorithm")?,
        started_at: time(&get::<String>(r, "started_at")?)?,
        finished_at: time(&get::<String>(r, "finished_at")?)?,
        dir: get(r, "dir")?,
        author: get(r, "author")?,
        config: from_json(&get::<String>(r, "config")?)?,
        usage: from_json(&get::<String>(r, "usage")?)?,
        summary: from_json(&get::<String>(r, "summary")?)?,
        candidates: Vec::new(),
    })
}

fn get<'r, T>(r: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    r.try_get(col)
        .map_err(|e| RegistryError::Data(format!("column `{col}`: {e}")))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| RegistryError::Data(format!("stored JSON: {e}")))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| RegistryError::Data(format!("stored time `{s}`: {e}")))
}

/// Name the file and say what is wrong, for the errors a user can act on.
fn classify(path: &Path, what: &str, e: sqlx::Error) -> RegistryError {
    if let sqlx::Error::Database(d) = &e {
        let m = d.message().to_ascii_lowercase();
        if m.contains("not a database") || m.contains("malformed") || m.contains("corrupt") {
            return RegistryError::NotALibrary {
                path: path.to_path_buf(),
                message: d.message().to_string(),
            };
        }
        if m.contains("readonly") || m.contains("read-only") {
            return RegistryError::ReadOnly {
                path: path.to_path_buf(),
            };
        }
    }
    RegistryError::Db {
        path: path.to_path_buf(),
        what: what.into(),
        source: e,
    }
}
