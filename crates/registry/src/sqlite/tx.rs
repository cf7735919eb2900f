//! One transaction on a SQLite library: every read and write of the prompt library's tables.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;

use super::*;
use crate::backend::{NewEvent, PromptRow, Tx};
use crate::model::{
    Event, Evidence, Label, Origin, ReviewState, Run, RunCandidate, Split, Version,
};
use crate::{RegistryError, Result};

/// One transaction on a SQLite library.
pub struct SqliteTx {
    pub(super) tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    pub(super) path: Arc<Path>,
}

impl std::fmt::Debug for SqliteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTx")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteTx {
    fn err(&self, what: &str) -> impl FnOnce(sqlx::Error) -> RegistryError + use<'_> {
        let path = &self.path;
        let what = what.to_string();
        move |e| classify(path, &what, e)
    }
}

#[async_trait]
impl Tx for SqliteTx {
    async fn commit(self) -> Result<()> {
        let path = self.path.clone();
        self.tx
            .commit()
            .await
            .map_err(|e| classify(&path, "cannot commit", e))
    }

    async fn prompts(&mut self) -> Result<Vec<PromptRow>> {
        let rows = sqlx::query(
            "SELECT p.name, p.review_required, p.created_at, \
               (SELECT COUNT(*) FROM versions v WHERE v.prompt = p.name) AS n, \
               (SELECT COALESCE(MAX(seq), 0) FROM versions v WHERE v.prompt = p.name) AS latest, \
               (SELECT COUNT(*) FROM versions v WHERE v.prompt = p.name AND v.review = 'proposed') AS proposed \
             FROM prompts p ORDER BY p.name",
        )
        .fetch_all(&mut *self.tx)
        .await
        .map_err(self.err("cannot read prompts"))?;
        rows.iter()
            .map(|r| {
                Ok(PromptRow {
                    name: get(r, "name")?,
                    review_required: get::<i64>(r, "review_required")? != 0,
                    created_at: time(&get::<String>(r, "created_at")?)?,
                    versions: get::<i64>(r, "n")? as u32,
                    latest: get::<i64>(r, "latest")? as u32,
                    proposed: get::<i64>(r, "proposed")? as u32,
                })
            })
            .collect()
    }

    async fn review_required(&mut self, prompt: &str) -> Result<Option<bool>> {
        let row: Option<i64> =
            sqlx::query_scalar("SELECT review_required FROM prompts WHERE name = $1")
                .bind(prompt)
                .fetch_optional(&mut *self.tx)
                .await
                .map_err(self.err("cannot read prompts"))?;
        Ok(row.map(|r| r != 0))
    }

    async fn insert_prompt(&mut self, name: &str, at: DateTime<Utc>, by: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO prompts (name, review_required, created_at, created_by) \
             VALUES ($1, 0, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(stamp(at))
        .bind(by)
        .execute(&mut *self.tx)
        .await
        .map_err(self.err("cannot add the prompt"))?;
        Ok(())
    }

    async fn set_review_required(&mut self, prompt: &str, on: bool) -> Result<()> {
        sqlx::query("UPDATE prompts SET review_required = $1 WHERE name = $2")
            .bind(i64::from(on))
            .bind(prompt)
            .execute(&mut *self.tx)
            .await
            .map_err(self.err("cannot change the policy"))?;
        Ok(())
    }

    async fn version(&mut self, prompt: &str, hash: &str) -> Result<Option<Version>> {
        let row = sqlx::query(select_versions!("WHERE prompt = $1 AND hash = $2"))
            .bind(prompt)
            .bind(hash)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(self.err("cannot read versions"))?;
        row.map(|r| version(&r)).transpose()
    }

    async fn versions(&mut self, prompt: &str) -> Result<Vec<Version>> {
        let rows = sqlx::query(select_versions!("WHERE prompt = $1 ORDER BY seq"))
            .bind(prompt)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(self.err("cannot read versions"))?;
        rows.iter().map(version).collect()
    }

    async fn versions_by_prefix(
        &mut self,
        prompt: Option<&str>,
        prefix: &str,
    ) -> Result<Vec<Version>> {
        // The prefix is hex digits only, so it holds no LIKE wildcards.
        let pattern = format!("{prefix}%");
        let rows = match prompt {
            Some(p) => {
                sqlx::query(select_versions!(
                    "WHERE prompt = $1 AND hash LIKE $2 ORDER BY prompt, seq"
                ))
                .bind(p)
                .bind(pattern)
                .fetch_all(&mut *self.tx)
                .await
            }
            None => {
                sqlx::query(select_versions!("WHERE hash LIKE $1 ORDER BY prompt, seq"))
                    .bind(pattern)
                    .fetch_all(&mut *self.tx)
                    .await
            }
        }
        .map_err(self.err("cannot read versions"))?;
        rows.iter().map(version).collect()
    }

    async fn versions_in_review(&mut self, state: ReviewState) -> Result<Vec<Version>> {
        let rows = sqlx::query(select_versions!(
            "WHERE review = $1 ORDER BY created_at, prompt, seq"
        ))
        .bind(state.as_str())
        .fetch_all(&mut *self.tx)
        .await
        .map_err(self.err("cannot read versions"))?;
        rows.iter().map(version).collect()
    }

    async fn max_seq(&mut self, prompt: &str) -> Result<u32> {
        let seq: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM versions WHERE prompt = $1")
                .bind(prompt)
                .fetch_one(&mut *self.tx)
                .await
                .map_err(self.err("cannot number the version"))?;
        Ok(seq as u32)
    }

    async fn insert_version(&mut self, v: &Version) -> Result<()> {
        sqlx::query(
            "INSERT INTO versions (prompt, hash, seq, content, parents, origin, run_id, \
             author, created_at, target_model, constraints, checks, message, review) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&v.prompt)
        .bind(&v.hash)
        .bind(i64::from(v.seq))
        .bind(&v.content)
        .bind(json(&v.parents)?)
        .bind(v.origin.as_str())
        .bind(&v.run)
        .bind(&v.author)
        .bind(stamp(v.created_at))
        .bind(&v.target_model)
        .bind(json(&v.constraints)?)
        .bind(v.checks.as_ref().map(Value::to_string))
        .bind(&v.message)
        .bind(v.review.as_str())
        .execute(&mut *self.tx)
        .await
        .map_err(self.err("cannot add the version"))?;
        Ok(())
    }

    async fn set_review(&mut self, prompt: &str, hash: &str, state: ReviewState) -> Result<()> {
        sqlx::query("UPDATE versions SET review = $1 WHERE prompt = $2 AND hash = $3")
            .bind(state.as_str())
            .bind(prompt)
            .bind(hash)
            .execute(&mut *self.tx)
            .await
            .map_err(self.err("cannot record the review"))?;
        Ok(())
    }

    async fn labels(&mut self, prompt: &str) -> Result<Vec<Label>> {
        let rows = sqlx::query(
            "SELECT l.prompt, l.label, l.hash, v.seq, l.moved_at, l.moved_by FROM labels l \
             JOIN versions v ON v.prompt = l.prompt AND v.hash = l.hash \
             WHERE l.prompt = $1 ORDER BY l.label",
        )
        .bind(prompt)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(self.err("cannot read labels"))?;
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

    async fn set_label(
        &mut self,
        prompt: &str,
        label: &str,
        hash: &str,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO labels (prompt, label, hash, moved_at, moved_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (prompt, label) DO UPDATE SET hash = excluded.hash, \
             moved_at = excluded.moved_at, moved_by = excluded.moved_by",
        )
        .bind(prompt)
        .bind(label)
        .bind(hash)
        .bind(stamp(at))
        .bind(by)
        .execute(&mut *self.tx)
        .await
        .map_err(self.err("cannot move the label"))?;
        Ok(())
    }

    async fn splits(&mut self, prompt: &str) -> Result<Vec<Split>> {
        let rows = sqlx::query(
            "SELECT s.prompt, s.label, s.hash, v.seq, s.weight, s.set_at, s.set_by \
             FROM label_splits s JOIN versions v ON v.prompt = s.prompt AND v.hash = s.hash \
             WHERE s.prompt = $1 ORDER BY s.label",
        )
        .bind(prompt)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(self.err("cannot read traffic splits"))?;
        rows.iter()
            .map(|r| {
                Ok(Split {
                    prompt: get(r, "prompt")?,
                    label: get(r, "label")?,
                    hash: get(r, "hash")?,
                    seq: get::<i64>(r, "seq")? as u32,
                    weight: get(r, "weight")?,
                    set_at: time(&get::<String>(r, "set_at")?)?,
                    set_by: get(r, "set_by")?,
                })
            })
            .collect()
    }

    async fn set_split(
        &mut self,
        prompt: &str,
        label: &str,
        hash: &str,
        weight: f64,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO label_splits (prompt, label, hash, weight, set_at, set_by) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (prompt, label) DO UPDATE SET \
             hash = excluded.hash, weight = excluded.weight, set_at = excluded.set_at, \
             set_by = excluded.set_by",
        )
        .bind(prompt)
        .bind(label)
        .bind(hash)
        .bind(weight)
        .bind(stamp(at))
        .bind(by)
        .execute(&mut *self.tx)
        .await
        .map_err(self.err("cannot set the traffic split"))?;
        Ok(())
    }

    async fn clear_split(&mut self, prompt: &str, label: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM label_splits WHERE prompt = $1 AND label = $2")
            .bind(prompt)
            .bind(label)
            .execute(&mut *self.tx)
            .await
            .map_err(self.err("cannot end the traffic split"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn evidence(&mut self, prompt: &str, hash: &str) -> Result<Vec<Evidence>> {
        let rows = sqlx::query(
            "SELECT run_id, task, split, model, metric, n, mean, low, high, baseline, diff, \
             diff_low, diff_high, p_value, cost_per_execution_usd, recorded_at FROM evidence \
             WHERE prompt = $1 AND hash = $2 ORDER BY id",
        )
        .bind(prompt)
        .bind(hash)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(self.err("cannot read evidence"))?;
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

    async fn insert_evidence(
        &mut self,
        prompt: &str,
        hash: &str,
        e: &Evidence,
        recorded_at: DateTime<Utc>,
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
        .bind(stamp(recorded_at))
        .execute(&mut *self.tx)
        .await
        .map_err(self.err("cannot store evidence"))?;
        Ok(())
    }

    async fn runs(&mut self, prompt: &str) -> Result<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE prompt = $1 ORDER BY started_at")
            .bind(prompt)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(self.err("cannot read runs"))?;
        rows.iter().map(run).collect()
    }

    async fn run(&mut self, id: &str) -> Result<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(self.err("cannot read runs"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut out = run(&row)?;
        let rows = sqlx::query("SELECT * FROM run_candidates WHERE run_id = $1 ORDER BY ord")
            .bind(id)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(self.err("cannot read run candidates"))?;
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
        Ok(Some(out))
    }

    async fn insert_run(&mut self, run: &Run) -> Result<()> {
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
        .execute(&mut *self.tx)
        .await
        .map_err(self.err(&format!("cannot store run `{}`", run.id)))?;
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
            .bind(json(&k.parents)?)
            .bind(&k.op)
            .bind(i64::from(k.round))
            .bind(&k.status)
            .bind(k.mean)
            .bind(k.n as i64)
            .bind(k.detail.to_string())
            .execute(&mut *self.tx)
            .await
            .map_err(self.err("cannot store a run candidate"))?;
        }
        Ok(())
    }

    async fn events(&mut self, prompt: &str) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!(select_events!(), "WHERE prompt = $1 ORDER BY id"))
            .bind(prompt)
            .fetch_all(&mut *self.tx)
            .await
            .map_err(self.err("cannot read events"))?;
        rows.iter().map(event_row).collect()
    }

    async fn events_after(&mut self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let rows = sqlx::query(concat!(
            select_events!(),
            "WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(self.err("cannot read events"))?;
        rows.iter().map(event_row).collect()
    }

    async fn last_event_id(&mut self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM events")
            .fetch_one(&mut *self.tx)
            .await
            .map_err(self.err("cannot read events"))?;
        Ok(id.unwrap_or(0))
    }

    async fn insert_event(&mut self, e: &NewEvent) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (prompt, at, actor, kind, hash, label, from_hash, decision, comment) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&e.prompt)
        .bind(stamp(e.at))
        .bind(&e.actor)
        .bind(e.kind.as_str())
        .bind(&e.hash)
        .bind(&e.label)
        .bind(&e.from_hash)
        .bind(&e.decision)
        .bind(&e.comment)
        .execute(&mut *self.tx)
        .await
        .map_err(self.err("cannot record the event"))?;
        Ok(())
    }
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
