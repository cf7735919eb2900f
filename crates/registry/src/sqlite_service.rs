//! [`ServiceStore`] on the library's SQLite file (the tables of `0002_service.sql`).
//!
//! Writes are one `BEGIN IMMEDIATE` transaction per [`ServiceStore::record`] call; the server
//! batches many requests into one call (group commit), so one fsync acknowledges hundreds.
//!
//! The service's connections never checkpoint the WAL inside a commit (SQLite's automatic
//! checkpoint runs in whichever commit crosses 1,000 pages, fsyncing the WAL and the database
//! and copying pages while every request of that batch waits). A task of the store's own runs
//! a passive checkpoint every [`CHECKPOINT_EVERY`] instead, beside the writes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::service::{
    AgentCase, Counts, DailyScore, Delivery, Feedback, FeedbackSource, Inference, InferenceQuery,
    LogSync, Pruned, Role, ScoreBucket, ServiceStore, Token,
};
use crate::sqlite::{SqliteBackend, Tuning, classify, from_json, get, json, stamp, time};
use crate::{RegistryError, Result};

/// The service's records in a SQLite library file.
#[derive(Debug, Clone)]
pub struct SqliteService {
    backend: SqliteBackend,
    _checkpoints: Arc<Checkpoints>,
}

/// How often the WAL is checkpointed beside the writes.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The checkpointing task; stopped when the last clone of the store goes (or its pool closes).
#[derive(Debug)]
struct Checkpoints(tokio::task::JoinHandle<()>);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqliteService {
    /// Open (creating and migrating if needed) the library file at `path`, every commit
    /// fsynced.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, LogSync::Full).await
    }

    /// [`SqliteService::open`] with commits as durable as `sync` says.
    pub async fn open_with(path: &Path, sync: LogSync) -> Result<Self> {
        let tuning = Tuning {
            sync,
            manual_checkpoints: true,
        };
        let backend = SqliteBackend::open_tuned(path, tuning).await?;
        if backend.is_read_only() {
            return Err(RegistryError::ReadOnly {
                path: path.to_path_buf(),
            });
        }
        let pool = backend.pool().clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if pool.is_closed() {
                    break;
                }
                // Passive: copies what no reader still needs and takes no write lock, so
                // commits go on meanwhile; what it cannot copy now it copies next time.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    if matches!(e, sqlx::Error::PoolClosed) {
                        break;
                    }
                    tracing::warn!(error = %e, "checkpointing the service log failed; retried");
                }
            }
        });
        Ok(Self {
            backend,
            _checkpoints: Arc::new(Checkpoints(task)),
        })
    }

    fn pool(&self) -> &SqlitePool {
        self.backend.pool()
    }

    fn err(&self, what: &'static str) -> impl Fn(sqlx::Error) -> RegistryError + '_ {
        move |e| classify(self.backend.path(), what, e)
    }
}

const SELECT_INFERENCES: &str = "SELECT id, prompt, hash, seq, label, model, inputs, \
     rendered_hash, output, error, tags, metadata, input_tokens, output_tokens, cost_usd, \
     latency_ms, caller, created_at FROM inferences";

/// What an [`InferenceQuery`] selects, bound as $1 prompt, $2 since, $3 until, $4 limit.
/// The filter and order of an [`InferenceQuery`], with a `?` for each condition it has (bound
/// by [`bind_query`] in the same order). Only the conditions present are written, so SQLite
/// can use `inferences_prompt_time` (an `$1 IS NULL OR prompt = $1` form cannot).
fn inference_query(q: &InferenceQuery) -> String {
    let mut conditions = Vec::new();
    if q.prompt.is_some() {
        conditions.push("prompt = ?");
    }
    if q.since.is_some() {
        conditions.push("created_at >= ?");
    }
    if q.until.is_some() {
        conditions.push("created_at < ?");
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    format!("{filter} ORDER BY created_at DESC, id DESC LIMIT ?")
}

fn bind_query<'q>(
    mut sql: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    q: &InferenceQuery,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    if let Some(p) = &q.prompt {
        sql = sql.bind(p.clone());
    }
    if let Some(t) = q.since {
        sql = sql.bind(stamp(t));
    }
    if let Some(t) = q.until {
        sql = sql.bind(stamp(t));
    }
    sql.bind(q.limit.map_or(-1, |n| n as i64))
}

const SELECT_FEEDBACK: &str = "SELECT inference_id, score, label, correction, comment, source, \
     caller, created_at FROM feedback";

fn feedback(r: &SqliteRow) -> Result<Feedback> {
    Ok(Feedback {
        inference_id: get(r, "inference_id")?,
        score: get(r, "score")?,
        label: get(r, "label")?,
        correction: get(r, "correction")?,
        comment: get(r, "comment")?,
        source: FeedbackSource::parse(&get::<String>(r, "source")?)?,
        caller: get(r, "caller")?,
        created_at: time(&get::<String>(r, "created_at")?)?,
    })
}

/// Rows per multi-row `INSERT` at most (18 columns × 64 rows stays far below SQLite's limit
/// on bound parameters).
const ROWS_PER_INSERT: usize = 64;

/// `rows` cut into statements of 64, 32, 16, … rows (the binary digits of what is left after
/// the full ones), so a batch of any size uses at most seven distinct statements and each
/// stays in sqlx's prepared-statement cache.
fn chunks<T>(rows: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    let mut size = ROWS_PER_INSERT;
    while !rest.is_empty() {
        while size > rest.len() {
            size /= 2;
        }
        let (head, tail) = rest.split_at(size);
        out.push(head);
        rest = tail;
    }
    out
}

/// `head` followed by `rows` groups of `columns` numbered parameters.
fn many_rows(head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * columns * 5);
    sql.push_str(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * columns + c + 1));
        }
        sql.push(')');
    }
    sql
}

#[async_trait]
impl ServiceStore for SqliteService {
    fn location(&self) -> String {
        self.backend.path().display().to_string()
    }

    async fn record(&self, inferences: &[Inference], feedback: &[Feedback]) -> Result<()> {
        if inferences.is_empty() && feedback.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(self.err("cannot start a write"))?;
        // Several rows per statement: each statement is a round trip to sqlx's SQLite worker
        // thread, and a group commit of a few hundred one-row statements spent most of its
        // time on those (the batch is on every waiting request's critical path).
        for rows in chunks(inferences) {
            let sql = many_rows(
                "INSERT INTO inferences (id, prompt, hash, seq, label, model, inputs, \
                 rendered_hash, output, error, tags, metadata, input_tokens, output_tokens, \
                 cost_usd, latency_ms, caller, created_at) VALUES ",
                18,
                rows.len(),
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for i in rows {
                q = q
                    .bind(&i.id)
                    .bind(&i.prompt)
                    .bind(&i.hash)
                    .bind(i64::from(i.seq))
                    .bind(&i.label)
                    .bind(&i.model)
                    .bind(json(&i.inputs))
                    .bind(&i.rendered_hash)
                    .bind(&i.output)
                    .bind(&i.error)
                    .bind(json(&i.tags))
                    .bind(json(&i.metadata))
                    .bind(i.input_tokens as i64)
                    .bind(i.output_tokens as i64)
                    .bind(i.cost_usd)
                    .bind(i.latency_ms)
                    .bind(&i.caller)
                    .bind(stamp(i.created_at));
            }
            q.execute(&mut *tx)
                .await
                .map_err(self.err("cannot record an inference"))?;
        }
        for rows in chunks(feedback) {
            let sql = many_rows(
                "INSERT INTO feedback (inference_id, score, label, correction, comment, source, \
                 caller, created_at) VALUES ",
                8,
                rows.len(),
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for f in rows {
                q = q
                    .bind(&f.inference_id)
                    .bind(f.score)
                    .bind(&f.label)
                    .bind(&f.correction)
                    .bind(&f.comment)
                    .bind(f.source.as_str())
                    .bind(&f.caller)
                    .bind(stamp(f.created_at));
            }
            q.execute(&mut *tx)
                .await
                .map_err(self.err("cannot record feedback"))?;
        }
        tx.commit().await.map_err(self.err("cannot commit"))
    }

    async fn inference(&self, id: &str) -> Result<Option<Inference>> {
        let row = sqlx::query(AssertSqlSafe(format!("{SELECT_INFERENCES} WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(self.err("cannot read inferences"))?;
        row.as_ref().map(inference).transpose()
    }

    async fn known(&self, ids: &[String]) -> Result<HashSet<String>> {
        let mut known = HashSet::new();
        // SQLite's default limit on bound parameters is well above this chunk.
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|k| format!("${k}")).collect();
            let sql = format!(
                "SELECT id FROM inferences WHERE id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            known.extend(
                q.fetch_all(self.pool())
                    .await
                    .map_err(self.err("cannot read inferences"))?,
            );
        }
        Ok(known)
    }

    async fn inferences(&self, query: &InferenceQuery) -> Result<Vec<Inference>> {
        let sql = sqlx::query(AssertSqlSafe(format!(
            "{SELECT_INFERENCES} {}",
            inference_query(query)
        )));
        let rows = bind_query(sql, query)
            .fetch_all(self.pool())
            .await
            .map_err(self.err("cannot read inferences"))?;
        rows.iter().map(inference).collect()
    }

    async fn feedback(&self, inference_id: &str) -> Result<Vec<Feedback>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT_FEEDBACK} WHERE inference_id = $1 ORDER BY id"
        )))
        .bind(inference_id)
        .fetch_all(self.pool())
        .await
        .map_err(self.err("cannot read feedback"))?;
        rows.iter().map(feedback).collect()
    }

    async fn feedback_for(&self, query: &InferenceQuery) -> Result<Vec<Feedback>> {
        let sql = sqlx::query(AssertSqlSafe(format!(
            "{SELECT_FEEDBACK} WHERE inference_id IN (SELECT id FROM inferences {}) ORDER BY id",
            inference_query(query)
        )));
        let rows = bind_query(sql, query)
            .fetch_all(self.pool())
            .await
            .map_err(self.err("cannot read feedback"))?;
        rows.iter().map(feedback).collect()
    }

    async fn daily_scores(
        &self,
        prompts: &[String],
        since: DateTime<Utc>,
    ) -> Result<Vec<DailyScore>> {
        let mut out = Vec::new();
        // SQLite binds at most a few hundred values at once comfortably: chunks of 200.
        for chunk in prompts.chunks(200) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT i.prompt AS prompt, substr(f.created_at, 1, 10) AS day, \
                 COUNT(*) AS n, SUM(f.score) AS total \
                 FROM feedback f JOIN inferences i ON i.id = f.inference_id \
                 WHERE i.prompt IN ({marks}) AND f.created_at >= ? AND f.score IS NOT NULL \
                 GROUP BY i.prompt, day ORDER BY i.prompt, day"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for p in chunk {
                q = q.bind(p.clone());
            }
            let rows = q
                .bind(stamp(since))
                .fetch_all(self.pool())
                .await
                .map_err(self.err("cannot read outcomes per day"))?;
            for r in &rows {
                out.push(DailyScore {
                    prompt: get(r, "prompt")?,
                    day: get(r, "day")?,
                    n: get::<i64>(r, "n")? as u64,
                    sum: get::<f64>(r, "total")?,
                });
            }
        }
        Ok(out)
    }

    async fn score_buckets(
        &self,
        prompt: Option<&str>,
        start: DateTime<Utc>,
        width_secs: i64,
    ) -> Result<Vec<ScoreBucket>> {
        let filter = if prompt.is_some() {
            "WHERE i.prompt = ? AND i.created_at >= ?"
        } else {
            "WHERE i.created_at >= ?"
        };
        let sql = format!(
            "SELECT prompt, seq, tags, bucket, COUNT(*) AS calls, COUNT(score) AS n, \
             TOTAL(score) AS total FROM (\
               SELECT i.prompt AS prompt, i.seq AS seq, i.tags AS tags, \
                 CAST((julianday(i.created_at) - julianday(?)) * 86400.0 / ? AS INTEGER) AS bucket, \
                 (SELECT AVG(f.score) FROM feedback f WHERE f.inference_id = i.id AND f.score IS NOT NULL) AS score \
               FROM inferences i {filter}) \
             GROUP BY prompt, seq, tags, bucket ORDER BY prompt, seq, bucket"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(stamp(start))
            .bind(width_secs.max(1) as f64);
        if let Some(p) = prompt {
            q = q.bind(p.to_string());
        }
        let rows = q
            .bind(stamp(start))
            .fetch_all(self.pool())
            .await
            .map_err(self.err("cannot read outcomes over time"))?;
        rows.iter()
            .map(|r| {
                Ok(ScoreBucket {
                    prompt: get(r, "prompt")?,
                    seq: get::<i64>(r, "seq")? as u32,
                    tags: from_json(&get::<String>(r, "tags")?)?,
                    bucket: get(r, "bucket")?,
                    calls: get::<i64>(r, "calls")? as u64,
                    n: get::<i64>(r, "n")? as u64,
                    sum: get(r, "total")?,
                })
            })
            .collect()
    }

    async fn first_inference(
        &self,
        prompt: Option<&str>,
        since: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>> {
        let sql = if prompt.is_some() {
            "SELECT MIN(created_at) AS t FROM inferences WHERE prompt = ? AND created_at >= ?"
        } else {
            "SELECT MIN(created_at) AS t FROM inferences WHERE created_at >= ?"
        };
        let mut q = sqlx::query(sql);
        if let Some(p) = prompt {
            q = q.bind(p.to_string());
        }
        let row = q
            .bind(stamp(since))
            .fetch_one(self.pool())
            .await
            .map_err(self.err("cannot read inferences"))?;
        get::<Option<String>>(&row, "t")?
            .map(|t| time(&t))
            .transpose()
    }

    async fn counts(&self) -> Result<Counts> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM inferences) AS i, (SELECT COUNT(*) FROM feedback) AS f",
        )
        .fetch_one(self.pool())
        .await
        .map_err(self.err("cannot count"))?;
        Ok(Counts {
            inferences: get::<i64>(&row, "i")? as u64,
            feedback: get::<i64>(&row, "f")? as u64,
        })
    }

    async fn prune(&self, before: DateTime<Utc>) -> Result<Pruned> {
        let mut tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(self.err("cannot start a write"))?;
        let cut = stamp(before);
        let feedback = sqlx::query(
            "DELETE FROM feedback WHERE inference_id IN \
             (SELECT id FROM inferences WHERE created_at < $1)",
        )
        .bind(&cut)
        .execute(&mut *tx)
        .await
        .map_err(self.err("cannot prune feedback"))?
        .rows_affected();
        let inferences = sqlx::query("DELETE FROM inferences WHERE created_at < $1")
            .bind(&cut)
            .execute(&mut *tx)
            .await
            .map_err(self.err("cannot prune inferences"))?
            .rows_affected();
        tx.commit().await.map_err(self.err("cannot commit"))?;
        Ok(Pruned {
            inferences,
            feedback,
        })
    }

    async fn add_token(&self, token: &Token, hash: &str) -> Result<()> {
        crate::policy::check_prompt_name(&token.name).map_err(|_| RegistryError::Invalid {
            what: "token name",
            value: token.name.clone(),
            expected: "letters, digits, `-`, `_` or `.`, starting with a letter or digit".into(),
        })?;
        let done = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(hash)
        .bind(stamp(token.created_at))
        .bind(&token.created_by)
        .execute(self.pool())
        .await
        .map_err(self.err("cannot store the token"))?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::Invalid {
                what: "token name",
                value: token.name.clone(),
                expected: "a name no other token has (`tokens list` shows them)".into(),
            });
        }
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<Token>> {
        let row = sqlx::query(
            "SELECT name, role, created_at, created_by, revoked_at FROM tokens \
             WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await
        .map_err(self.err("cannot read tokens"))?;
        row.as_ref().map(token).transpose()
    }

    async fn tokens(&self) -> Result<Vec<Token>> {
        let rows = sqlx::query(
            "SELECT name, role, created_at, created_by, revoked_at FROM tokens ORDER BY name",
        )
        .fetch_all(self.pool())
        .await
        .map_err(self.err("cannot read tokens"))?;
        rows.iter().map(token).collect()
    }

    async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .bind(stamp(at))
                .execute(self.pool())
                .await
                .map_err(self.err("cannot revoke the token"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_delivery(&self, d: &Delivery) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (event_id, event, url, attempt, status, error, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&d.event_id)
        .bind(&d.event)
        .bind(&d.url)
        .bind(i64::from(d.attempt))
        .bind(d.status.map(i64::from))
        .bind(&d.error)
        .bind(stamp(d.at))
        .execute(self.pool())
        .await
        .map_err(self.err("cannot log the delivery"))?;
        Ok(())
    }

    async fn webhook_cursor(&self) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT event_id FROM webhook_cursor WHERE id = 1")
            .fetch_optional(self.pool())
            .await
            .map_err(self.err("cannot read the webhook cursor"))
    }

    async fn set_webhook_cursor(&self, event_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_cursor (id, event_id) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET event_id = excluded.event_id",
        )
        .bind(event_id)
        .execute(self.pool())
        .await
        .map_err(self.err("cannot store the webhook cursor"))?;
        Ok(())
    }

    async fn save_case(&self, c: &AgentCase) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_cases (id, prompt, slice, state, opened_at, updated_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
             state = excluded.state, updated_at = excluded.updated_at, body = excluded.body",
        )
        .bind(&c.id)
        .bind(&c.prompt)
        .bind(&c.slice)
        .bind(&c.state)
        .bind(stamp(c.opened_at))
        .bind(stamp(c.updated_at))
        .bind(json(&c.body))
        .execute(self.pool())
        .await
        .map_err(self.err("cannot store the agent's case"))?;
        Ok(())
    }

    async fn cases(&self, prompt: Option<&str>) -> Result<Vec<AgentCase>> {
        let rows = sqlx::query(
            "SELECT id, prompt, slice, state, opened_at, updated_at, body FROM agent_cases \
             WHERE ($1 IS NULL OR prompt = $1) ORDER BY opened_at, id",
        )
        .bind(prompt)
        .fetch_all(self.pool())
        .await
        .map_err(self.err("cannot read the agent's cases"))?;
        rows.iter()
            .map(|r| {
                Ok(AgentCase {
                    id: get(r, "id")?,
                    prompt: get(r, "prompt")?,
                    slice: get(r, "slice")?,
                    state: get(r, "state")?,
                    opened_at: time(&get::<String>(r, "opened_at")?)?,
                    updated_at: time(&get::<String>(r, "updated_at")?)?,
                    body: from_json(&get::<String>(r, "body")?)?,
                })
            })
            .collect()
    }

    async fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT event_id, event, url, attempt, status, error, at FROM webhook_deliveries \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await
        .map_err(self.err("cannot read deliveries"))?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    event_id: get(r, "event_id")?,
                    event: get(r, "event")?,
                    url: get(r, "url")?,
                    attempt: get::<i64>(r, "attempt")? as u32,
                    status: get::<Option<i64>>(r, "status")?.map(|s| s as u16),
                    error: get(r, "error")?,
                    at: time(&get::<String>(r, "at")?)?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        self.pool().close().await;
    }
}

fn inference(r: &SqliteRow) -> Result<Inference> {
    Ok(Inference {
        id: get(r, "id")?,
        prompt: get(r, "prompt")?,
        hash: get(r, "hash")?,
        seq: get::<i64>(r, "seq")? as u32,
        label: get(r, "label")?,
        model: get(r, "model")?,
        inputs: from_json(&get::<String>(r, "inputs")?)?,
        rendered_hash: get(r, "rendered_hash")?,
        output: get(r, "output")?,
        error: get(r, "error")?,
        tags: from_json(&get::<String>(r, "tags")?)?,
        metadata: from_json(&get::<String>(r, "metadata")?)?,
        input_tokens: get::<i64>(r, "input_tokens")? as u64,
        output_tokens: get::<i64>(r, "output_tokens")? as u64,
        cost_usd: get(r, "cost_usd")?,
        latency_ms: get(r, "latency_ms")?,
        caller: get(r, "caller")?,
        created_at: time(&get::<String>(r, "created_at")?)?,
    })
}

fn token(r: &SqliteRow) -> Result<Token> {
    Ok(Token {
        name: get(r, "name")?,
        role: Role::parse(&get::<String>(r, "role")?)?,
        created_at: time(&get::<String>(r, "created_at")?)?,
        created_by: get(r, "created_by")?,
        revoked_at: get::<Option<String>>(r, "revoked_at")?
            .map(|s| time(&s))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{mint_token, token_hash};
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        time(&stamp(Utc::now())).unwrap()
    }

    fn inf(id: &str, at: DateTime<Utc>) -> Inference {
        Inference {
            id: id.into(),
            prompt: "support".into(),
            hash: "ab".repeat(32),
            seq: 1,
            label: Some("production".into()),
            model: "openai:gpt-4o-mini".into(),
            inputs: json!({"question": "where is my invoice?"}),
            rendered_hash: "cd".repeat(32),
            output: Some("billing".into()),
            error: None,
            tags: [("topic".to_string(), "billing".to_string())].into(),
            metadata: json!({"user": 7}),
            input_tokens: 12,
            output_tokens: 1,
            cost_usd: None,
            latency_ms: 3.5,
            caller: "app".into(),
            created_at: at,
        }
    }

    #[test]
    fn batches_are_cut_into_few_statement_shapes() {
        let rows: Vec<u32> = (0..203).collect();
        let sizes: Vec<usize> = chunks(&rows).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![64, 64, 64, 8, 2, 1]);
        assert_eq!(chunks(&rows).concat(), rows);
        assert!(chunks::<u32>(&[]).is_empty());
        assert_eq!(many_rows("V ", 2, 2), "V ($1, $2), ($3, $4)");
    }

    #[tokio::test]
    async fn a_large_batch_is_stored_row_for_row() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteService::open(&dir.path().join("lib.db"))
            .await
            .unwrap();
        let t0 = now();
        let infs: Vec<Inference> = (0..203).map(|k| inf(&format!("inf_{k}"), t0)).collect();
        let fbs: Vec<Feedback> = (0..77)
            .map(|k| Feedback {
                inference_id: format!("inf_{k}"),
                score: Some(f64::from(k) / 100.0),
                label: None,
                correction: None,
                comment: Some(format!("c{k}")),
                source: FeedbackSource::Metric,
                caller: "app".into(),
                created_at: t0,
            })
            .collect();
        s.record(&infs, &fbs).await.unwrap();
        for i in &infs {
            assert_eq!(s.inference(&i.id).await.unwrap().as_ref(), Some(i));
        }
        for f in &fbs {
            assert_eq!(s.feedback(&f.inference_id).await.unwrap(), vec![f.clone()]);
        }
        // A duplicate id anywhere refuses the whole batch, so the recorder can retry each alone.
        let again = vec![inf("inf_new", t0), inf("inf_5", t0)];
        assert!(s.record(&again, &[]).await.is_err());
        assert!(s.inference("inf_new").await.unwrap().is_none());
    }
    // SQLite's automatic checkpoint would run inside whichever commit crossed 1,000 pages, with
    // every request of that batch waiting; the store's own task checkpoints instead.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_log_is_checkpointed_beside_the_commits_not_inside_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.db");
        for sync in [LogSync::Full, LogSync::Normal] {
            let s = SqliteService::open_with(&path, sync).await.unwrap();
            let (auto, level): (i64, i64) = (
                sqlx::query_scalar("PRAGMA wal_autocheckpoint")
                    .fetch_one(s.pool())
                    .await
                    .unwrap(),
                sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(s.pool())
                    .await
                    .unwrap(),
            );
            assert_eq!(auto, 0, "{sync:?}");
            // SQLite's levels: 1 NORMAL, 2 FULL.
            assert_eq!(level, if sync == LogSync::Full { 2 } else { 1 });
            s.close().await;
        }
        // Rows committed to the WAL reach the database file within a few checkpoint periods.
        let s = SqliteService::open(&path).await.unwrap();
        let size = || std::fs::metadata(&path).unwrap().len();
        let before = size();
        let t0 = now();
        let rows: Vec<Inference> = (0..2000).map(|k| inf(&format!("inf_{k}"), t0)).collect();
        s.record(&rows, &[]).await.unwrap();
        let deadline = std::time::Instant::now() + CHECKPOINT_EVERY * 5;
        while size() < before + 200_000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            size() >= before + 200_000,
            "the database file stayed at {} bytes (from {before}) with 2,000 rows in the WAL",
            size()
        );
        s.close().await;
    }

    #[tokio::test]
    async fn records_read_back_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteService::open(&dir.path().join("lib.db"))
            .await
            .unwrap();
        let t0 = now();
        let old = t0 - chrono::Duration::days(40);
        let fb = Feedback {
            inference_id: "inf_1".into(),
            score: Some(1.0),
            label: None,
            correction: Some("billing".into()),
            comment: Some("right".into()),
            source: FeedbackSource::User,
            caller: "app".into(),
            created_at: t0,
        };
        s.record(
            &[inf("inf_1", t0), inf("inf_0", old)],
            std::slice::from_ref(&fb),
        )
        .await
        .unwrap();
        assert_eq!(
            s.inference("inf_1").await.unwrap().unwrap(),
            inf("inf_1", t0)
        );
        assert_eq!(s.feedback("inf_1").await.unwrap(), vec![fb.clone()]);
        let known = s
            .known(&["inf_1".into(), "inf_9".into(), "inf_0".into()])
            .await
            .unwrap();
        assert_eq!(known.len(), 2);
        let recent = s
            .inferences(&InferenceQuery {
                since: Some(t0 - chrono::Duration::days(1)),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(recent.len(), 1);
        // Feedback of the inferences a query selects, in one read.
        let old_fb = Feedback {
            inference_id: "inf_0".into(),
            ..fb.clone()
        };
        s.record(&[], std::slice::from_ref(&old_fb)).await.unwrap();
        let all = s.feedback_for(&InferenceQuery::default()).await.unwrap();
        assert_eq!(all.len(), 2);
        let since = InferenceQuery {
            since: Some(t0 - chrono::Duration::days(1)),
            ..Default::default()
        };
        assert_eq!(s.feedback_for(&since).await.unwrap(), vec![fb.clone()]);
        let other = InferenceQuery {
            prompt: Some("other".into()),
            ..Default::default()
        };
        assert!(s.feedback_for(&other).await.unwrap().is_empty());
        let pruned = s.prune(t0 - chrono::Duration::days(30)).await.unwrap();
        assert_eq!(pruned.inferences, 1);
        assert_eq!(s.counts().await.unwrap().inferences, 1);
        // The library opens the same file as a library.
        let lib = crate::open(&dir.path().join("lib.db")).await.unwrap();
        assert!(lib.prompts().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn tokens_by_hash_names_unique_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteService::open(&dir.path().join("lib.db"))
            .await
            .unwrap();
        let secret = mint_token();
        let t = Token {
            name: "alice".into(),
            role: Role::Reviewer,
            created_at: now(),
            created_by: "admin".into(),
            revoked_at: None,
        };
        s.add_token(&t, &token_hash(&secret)).await.unwrap();
        assert_eq!(
            s.token(&token_hash(&secret)).await.unwrap(),
            Some(t.clone())
        );
        let taken = s.add_token(&t, &token_hash(&mint_token())).await;
        assert!(taken.unwrap_err().to_string().contains("no other token"));
        assert!(s.revoke_token("alice", crate::now()).await.unwrap());
        assert_eq!(s.token(&token_hash(&secret)).await.unwrap(), None);
        assert!(!s.revoke_token("alice", crate::now()).await.unwrap());
        assert!(s.tokens().await.unwrap()[0].revoked_at.is_some());
    }

    #[tokio::test]
    async fn the_webhook_cursor_starts_unset_and_keeps_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lib.db");
        let s = SqliteService::open(&path).await.unwrap();
        assert_eq!(s.webhook_cursor().await.unwrap(), None);
        s.set_webhook_cursor(7).await.unwrap();
        s.set_webhook_cursor(12).await.unwrap();
        let again = SqliteService::open(&path).await.unwrap();
        assert_eq!(again.webhook_cursor().await.unwrap(), Some(12));
    }
}
