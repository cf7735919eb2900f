//! [`ServiceStore`] on the library's SQLite file (the tables of `0002_service.sql`).
//!
//! Writes are one `BEGIN IMMEDIATE` transaction per [`InferenceLog::record`](crate::service::InferenceLog::record) call; the server
//! batches many requests into one call (group commit), so one fsync acknowledges hundreds.
//!
//! The service's connections never checkpoint the WAL inside a commit (SQLite's automatic
//! checkpoint runs in whichever commit crosses 1,000 pages, fsyncing the WAL and the database
//! and copying pages while every request of that batch waits). A task of the store's own runs
//! a passive checkpoint every [`CHECKPOINT_EVERY`] instead, beside the writes.
//!
//! One file per concern, as the traits are: `inferences` ([`InferenceLog`]), `tokens`
//! ([`TokenStore`]), `webhooks` ([`WebhookLog`]), `cases` ([`CaseStore`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqlitePool;

use crate::service::{LogSync, ServiceStore};
use crate::sqlite::{SqliteBackend, Tuning, classify};
use crate::{RegistryError, Result};

mod cases;
mod inferences;
mod tokens;
mod webhooks;

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

#[async_trait]
impl ServiceStore for SqliteService {
    fn location(&self) -> String {
        self.backend.path().display().to_string()
    }

    async fn close(&self) {
        self.pool().close().await;
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::inferences::{chunks, many_rows};
    use super::*;
    use crate::service::{
        Feedback, FeedbackSource, Inference, InferenceLog, InferenceQuery, Role, Token, TokenStore,
        WebhookLog,
    };
    use crate::service::{mint_token, token_hash};
    use crate::sqlite::{stamp, time};
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
