//! [`InferenceLog`] on SQLite: inferences and feedback, written in multi-row batches, read by
//! query and in time windows.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::sqlite::SqliteRow;

use crate::Result;
use crate::service::InferenceLog;
use crate::service::{
    Counts, DailyScore, Feedback, FeedbackSource, Inference, InferenceQuery, Pruned, ScoreBucket,
};
use crate::sqlite::{from_json, get, json, stamp, time};

use super::*;

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
pub(super) fn chunks<T>(rows: &[T]) -> Vec<&[T]> {
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
pub(super) fn many_rows(head: &str, columns: usize, rows: usize) -> String {
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
impl InferenceLog for SqliteService {
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
                    .bind(json(&i.inputs)?)
                    .bind(&i.rendered_hash)
                    .bind(&i.output)
                    .bind(&i.error)
                    .bind(json(&i.tags)?)
                    .bind(json(&i.metadata)?)
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
