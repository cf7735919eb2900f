//! The persistent response cache: a SQLite file (WAL mode, so several processes can share it),
//! keyed by the SHA-256 of the canonical request plus the model's identity (provider kind,
//! endpoint, model name). Credentials are never part of the key or the stored rows.
//!
//! The cache is disposable: its schema carries a version in `PRAGMA user_version`, and a file
//! from an older version is emptied and recreated. A file from a newer metaprompt, or one that is
//! not a SQLite database, is an error naming the file.
//!
//! Several processes may open one file at the same moment (two commands sharing the default
//! cache): setup waits for, and retries past, the locks they take, and runs its schema check and
//! creation in one `BEGIN IMMEDIATE` transaction, so none fails and none wipes another's entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Row};

use crate::config::ModelInfo;
use crate::error::LlmError;
use crate::provider::Provider;
use crate::types::{LabelScores, Request, Response, ScoreRequest};

/// Bump when the key material or the stored response format changes.
const SCHEMA_VERSION: i64 = 1;
/// Kept beside `SCHEMA_VERSION` (SQL must be a literal); a unit test checks they agree.
const SET_SCHEMA_VERSION: &str = "PRAGMA user_version = 1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS responses (
    key        TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    request    TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    hits       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS responses_model ON responses(model);
";

/// A handle on the cache file; cheap to clone.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    pool: SqlitePool,
    path: Arc<PathBuf>,
}

/// What `metaprompt cache stats` shows.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    pub path: PathBuf,
    pub entries: u64,
    pub hits: u64,
    /// Size of the database file and its write-ahead log.
    pub bytes: u64,
    pub oldest_unix: Option<i64>,
    pub newest_unix: Option<i64>,
    pub models: Vec<ModelStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelStats {
    pub model: String,
    pub entries: u64,
    pub hits: u64,
}

impl ResponseCache {
    /// `<user cache dir>/metaprompt/responses.sqlite`, if the platform has a cache dir.
    pub fn default_path() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("metaprompt").join("responses.sqlite"))
    }

    /// Open (creating if needed) the cache at `path`.
    pub async fn open(path: &Path) -> Result<Self, LlmError> {
        let err = |what: String, source: Option<sqlx::Error>| LlmError::Cache {
            path: path.to_path_buf(),
            what,
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                err(
                    format!("cannot create its directory {}: {e}", dir.display()),
                    None,
                )
            })?;
        }
        // No `journal_mode` here: every pooled connection would try to switch the file into WAL,
        // and that switch takes a lock the busy timeout cannot wait for. `setup` switches it
        // once (WAL is a property of the file) before the pool opens.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| err(not_a_database(&e), Some(e)))?;
        let setup = Self::setup_retrying(&mut conn, path).await;
        // The setup connection's work is done either way; a failed close loses nothing.
        let _ = conn.close().await;
        setup?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| err(not_a_database(&e), Some(e)))?;
        Ok(Self {
            pool,
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// [`Self::setup`], again while the file is busy: other processes opening the same fresh
    /// file at the same moment take locks that SQLite's busy timeout does not wait for (the
    /// switch into WAL mode, a read transaction that cannot become a write one: codes 5 and
    /// 517). Every attempt is idempotent; the wait grows with jitter up to [`BUSY_TIMEOUT`].
    async fn setup_retrying(conn: &mut SqliteConnection, path: &Path) -> Result<(), LlmError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            match Self::setup(conn, path).await {
                Err(Setup::Sql(what, e)) if is_busy(&e) && start.elapsed() < BUSY_TIMEOUT => {
                    tracing::debug!(path = %path.display(), what, error = %e, "cache busy during setup; retrying");
                    // The thread-local generator must not live across the await (the future
                    // would not be `Send`).
                    let jitter = rand::rng().random_range(0.5..=1.0);
                    tokio::time::sleep(pause.mul_f64(jitter)).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                Err(Setup::Sql(what, e)) => {
                    return Err(LlmError::Cache {
                        path: path.to_path_buf(),
                        what: match what {
                            "" => not_a_database(&e),
                            what => format!("{what}: {e}"),
                        },
                        source: Some(e),
                    });
                }
                Err(Setup::Refused(what)) => {
                    return Err(LlmError::Cache {
                        path: path.to_path_buf(),
                        what,
                        source: None,
                    });
                }
                Ok(()) => return Ok(()),
            }
        }
    }

    /// Put the file in WAL mode and its tables at [`SCHEMA_VERSION`]. The version is read and
    /// acted on inside one `BEGIN IMMEDIATE` transaction (the write lock taken up front, waited
    /// for by the busy timeout), so two processes cannot both see an old file and the second
    /// drop what the first has already written.
    async fn setup(conn: &mut SqliteConnection, path: &Path) -> Result<(), Setup> {
        let sql = |what: &'static str| move |e| Setup::Sql(what, e);
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .map_err(sql(""))?;
        if !mode.eq_ignore_ascii_case("wal") {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(&mut *conn)
                .await
                .map_err(sql("cannot switch to WAL mode"))?;
            if !mode.eq_ignore_ascii_case("wal") {
                // Some file systems cannot do WAL; the cache still works, one writer at a time.
                tracing::warn!(path = %path.display(), mode, "the response cache could not use WAL mode");
            }
        }
        let newer = |version: i64| {
            Setup::Refused(format!(
                "was written by a newer metaprompt (cache schema {version}, this one knows {SCHEMA_VERSION})"
            ))
        };
        // The common case, a file already set up, needs no write lock.
        match user_version(&mut *conn).await.map_err(sql(""))? {
            SCHEMA_VERSION => return Ok(()),
            v if v > SCHEMA_VERSION => return Err(newer(v)),
            _ => {}
        }
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql("cannot write"))?;
        let v = user_version(&mut tx).await.map_err(sql(""))?;
        if v >= SCHEMA_VERSION {
            // Another process set it up meanwhile (or a newer one did).
            tx.rollback().await.map_err(sql("cannot write"))?;
            return if v == SCHEMA_VERSION {
                Ok(())
            } else {
                Err(newer(v))
            };
        }
        sqlx::query("DROP TABLE IF EXISTS responses")
            .execute(&mut *tx)
            .await
            .map_err(sql("cannot drop the old tables"))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *tx)
            .await
            .map_err(sql("cannot create tables"))?;
        sqlx::query(SET_SCHEMA_VERSION)
            .execute(&mut *tx)
            .await
            .map_err(sql("cannot set the schema version"))?;
        tx.commit().await.map_err(sql("cannot write"))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, what: &str, e: sqlx::Error) -> LlmError {
        LlmError::Cache {
            path: self.path.to_path_buf(),
            what: format!("{what}: {e}"),
            source: Some(e),
        }
    }

    /// The cache key of a request to a model: hex SHA-256 of canonical JSON. Deliberately not
    /// including credentials, pricing, timeouts or retry settings: none of them changes the answer.
    pub fn key(info: &ModelInfo, request: &Request) -> String {
        Self::key_of(info, request)
    }

    /// The cache key of a label-scoring request (its own key space: the material differs in
    /// shape from a completion request).
    pub fn score_key(info: &ModelInfo, request: &ScoreRequest) -> String {
        Self::key_of(info, request)
    }

    fn key_of<T: Serialize>(info: &ModelInfo, request: &T) -> String {
        #[derive(Serialize)]
        struct KeyMaterial<'a, T> {
            schema: i64,
            kind: &'static str,
            endpoint: &'a str,
            model: &'a str,
            request: &'a T,
        }
        let material = KeyMaterial {
            schema: SCHEMA_VERSION,
            kind: info.kind.as_str(),
            endpoint: &info.base_url,
            model: &info.model,
            request,
        };
        // A request is plain data (strings, numbers, JSON values; maps keyed by strings), which
        // always serializes; were that ever to change, failing loudly beats every request
        // sharing the key of an empty string.
        #[allow(clippy::expect_used)]
        let bytes = serde_json::to_vec(&material).expect("a model request serializes to JSON");
        hex::encode(Sha256::digest(bytes))
    }

    /// Look a key up; counts a hit.
    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, LlmError> {
        let row =
            sqlx::query("UPDATE responses SET hits = hits + 1 WHERE key = ? RETURNING response")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error("lookup failed", e))?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row
            .try_get("response")
            .map_err(|e| self.error("lookup failed", e))?;
        match serde_json::from_str(&text) {
            Ok(response) => Ok(Some(response)),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), key, error = %e, "unreadable cache entry ignored");
                Ok(None)
            }
        }
    }

    /// Store a response (replacing any earlier one under the key).
    pub async fn put<Q: Serialize, R: Serialize>(
        &self,
        key: &str,
        info: &ModelInfo,
        request: &Q,
        response: &R,
    ) -> Result<(), LlmError> {
        let json = |what: &str, v: Result<String, serde_json::Error>| {
            v.map_err(|e| LlmError::Cache {
                path: self.path.to_path_buf(),
                what: format!("cannot store the {what}: {e}"),
                source: None,
            })
        };
        let request = json("request", serde_json::to_string(request))?;
        let response = json("response", serde_json::to_string(response))?;
        sqlx::query(
            "INSERT OR REPLACE INTO responses (key, model, request, response, created_at, hits) VALUES (?, ?, ?, ?, ?, 0)",
        )
        .bind(key)
        .bind(&info.name)
        .bind(request)
        .bind(response)
        .bind(unix_now())
        .execute(&self.pool)
        .await
        .map_err(|e| self.error("write failed", e))?;
        Ok(())
    }

    pub async fn stats(&self) -> Result<CacheStats, LlmError> {
        let e = |e| self.error("cannot read statistics", e);
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(hits), 0) AS hits, MIN(created_at) AS oldest, MAX(created_at) AS newest FROM responses",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(e)?;
        let models = sqlx::query(
            "SELECT model, COUNT(*) AS n, COALESCE(SUM(hits), 0) AS hits FROM responses GROUP BY model ORDER BY n DESC, model",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(e)?
        .into_iter()
        .map(|r| {
            Ok(ModelStats {
                model: r.try_get("model")?,
                entries: r.try_get::<i64, _>("n")? as u64,
                hits: r.try_get::<i64, _>("hits")? as u64,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(e)?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(CacheStats {
            path: self.path.to_path_buf(),
            entries: row.try_get::<i64, _>("n").map_err(e)? as u64,
            hits: row.try_get::<i64, _>("hits").map_err(e)? as u64,
            bytes: size(&self.path) + size(Path::new(&wal)),
            oldest_unix: row.try_get("oldest").map_err(e)?,
            newest_unix: row.try_get("newest").map_err(e)?,
            models,
        })
    }

    /// Delete every entry, or those of one model (canonical `provider:model` name). Returns how
    /// many were deleted. Space is given back to the file system.
    pub async fn clear(&self, model: Option<&str>) -> Result<u64, LlmError> {
        let e = |e| self.error("cannot clear", e);
        let done = match model {
            Some(m) => {
                sqlx::query("DELETE FROM responses WHERE model = ?")
                    .bind(m)
                    .execute(&self.pool)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM responses")
                    .execute(&self.pool)
                    .await
            }
        }
        .map_err(e)?;
        sqlx::query("VACUUM").execute(&self.pool).await.map_err(e)?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(e)?;
        Ok(done.rows_affected())
    }

    /// Close the pool, flushing the write-ahead log.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How long one statement waits for another process's lock, and how long setup keeps retrying.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why setting the file up failed: a SQL error (retried while it says the file is busy), or a
/// file this version refuses.
enum Setup {
    /// What was being done (`""`: merely reading the file), and the error.
    Sql(&'static str, sqlx::Error),
    Refused(String),
}

/// SQLITE_BUSY or SQLITE_LOCKED, with any extended code (517 is BUSY_SNAPSHOT, 261
/// BUSY_RECOVERY): another connection holds a lock; trying again later can succeed.
fn is_busy(e: &sqlx::Error) -> bool {
    let code = match e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    code.is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

async fn user_version(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(conn)
        .await
}

fn not_a_database(e: &sqlx::Error) -> String {
    format!("cannot open as a SQLite database ({e}); delete it or pass --no-cache")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Serves repeated requests from the cache; a hit costs nothing and says so.
#[derive(Debug)]
pub struct Cached {
    inner: Arc<dyn Provider>,
    cache: ResponseCache,
}

impl Cached {
    pub fn new(inner: Arc<dyn Provider>, cache: ResponseCache) -> Self {
        Self { inner, cache }
    }
}

impl Cached {
    /// Serve what the cache has; send the rest to `fetch` in one call (so a batching provider
    /// still sees one batch); store and merge the answers in order.
    async fn through<Q, R, F>(
        &self,
        requests: &[Q],
        key: fn(&ModelInfo, &Q) -> String,
        fetch: F,
    ) -> Vec<Result<R, LlmError>>
    where
        Q: Serialize + Clone + Sync,
        R: Serialize + serde::de::DeserializeOwned + Hit + Send,
        F: AsyncFnOnce(Vec<Q>) -> Vec<Result<R, LlmError>>,
    {
        let start = Instant::now();
        let info = self.info();
        let keys: Vec<String> = requests.iter().map(|r| key(info, r)).collect();
        let mut results: Vec<Option<Result<R, LlmError>>> = Vec::with_capacity(requests.len());
        let mut misses = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match self.cache.get::<R>(k).await {
                Ok(Some(mut hit)) => {
                    hit.mark_hit(start.elapsed());
                    results.push(Some(Ok(hit)));
                }
                Ok(None) => {
                    misses.push(i);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        if !misses.is_empty() {
            let fresh = fetch(misses.iter().map(|&i| requests[i].clone()).collect()).await;
            for (&i, result) in misses.iter().zip(fresh) {
                if let Ok(answer) = &result
                    && let Err(e) = self.cache.put(&keys[i], info, &requests[i], answer).await
                {
                    // The answer is still good; only its reuse is lost. Say so.
                    tracing::warn!(error = %e, "response not cached");
                }
                results[i] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(LlmError::Config(
                        "internal: a batch answer went missing".into(),
                    ))
                })
            })
            .collect()
    }
}

/// What a cache hit changes in an answer: it is marked cached, costs nothing, and took the
/// lookup's time.
trait Hit {
    fn mark_hit(&mut self, lookup: Duration);
}

impl Hit for Response {
    fn mark_hit(&mut self, lookup: Duration) {
        self.cached = true;
        self.cost_usd = Some(0.0);
        self.latency = lookup;
    }
}

impl Hit for LabelScores {
    fn mark_hit(&mut self, lookup: Duration) {
        self.cached = true;
        self.cost_usd = Some(0.0);
        self.latency = lookup;
    }
}

#[async_trait]
impl Provider for Cached {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let mut results = self.complete_batch(std::slice::from_ref(request)).await;
        results
            .pop()
            .unwrap_or_else(|| Err(LlmError::Config("internal: empty batch answer".into())))
    }

    async fn complete_batch(&self, requests: &[Request]) -> Vec<Result<Response, LlmError>> {
        self.through(
            requests,
            ResponseCache::key,
            async |misses: Vec<Request>| self.inner.complete_batch(&misses).await,
        )
        .await
    }

    /// Not cached: a live answer may depend on the requests it was batched with, and an
    /// evaluation must never read one back as if it were canonical.
    async fn complete_live(
        &self,
        request: &Request,
        text: &crate::TextSink,
    ) -> Result<Response, LlmError> {
        self.inner.complete_live(request, text).await
    }

    fn can_score(&self) -> bool {
        self.inner.can_score()
    }

    async fn score(&self, requests: &[ScoreRequest]) -> Vec<Result<LabelScores, LlmError>> {
        if !self.inner.can_score() {
            return self.inner.score(requests).await;
        }
        self.through(
            requests,
            ResponseCache::score_key,
            async |misses: Vec<ScoreRequest>| self.inner.score(&misses).await,
        )
        .await
    }

    fn can_embed(&self) -> bool {
        self.inner.can_embed()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, LlmError> {
        self.inner.embed(texts).await
    }
}

#[cfg(test)]
mod tests;
