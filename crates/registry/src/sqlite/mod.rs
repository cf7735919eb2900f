//! The default backend: one SQLite file. Only storage lives here; the rules are in
//! [`crate::library`].
//!
//! - WAL journal and a 30 s busy timeout; every write is one `BEGIN IMMEDIATE` transaction, so
//!   two processes writing at once queue instead of failing, and a rule checked inside a write
//!   sees the state the write changes. Reads are deferred transactions: one snapshot per call.
//! - Versioned migrations (`migrations/sqlite/NNNN_*.sql`, compiled in) run on open; a file
//!   migrated by a newer metaprompt is refused rather than misread.
//! - A file without write permission opens read-only: reads work, writes say why they cannot.
//! - A file that is not a SQLite database, or is another program's, is refused with its path.
//! - Queries are portable SQL (`$N` parameters, `ON CONFLICT`); times are RFC 3339 text with
//!   milliseconds, JSON columns are text.
//!
//! The library's transactions are in `tx` ([`SqliteTx`]); the service's records (inferences,
//! tokens, webhook deliveries, agent cases) in `service` ([`SqliteService`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::sqlite::{SqlitePoolOptions, SqliteRow};
use sqlx::{Row, SqlSafeStr};

use crate::backend::Backend;
use crate::library::Library;
use crate::model::{Event, EventKind};
use crate::service::LogSync;
use crate::{RegistryError, Result};

/// The newest schema this build knows.
const SCHEMA: i64 = 5;

/// The oldest schema whose library tables this build reads as they are (a read-only file at
/// schema 1 still lists, shows and exports; only the service's tables need schema 2 to 5).
const READABLE: i64 = 1;

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "library".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0001_library.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "service".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0002_service.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "webhooks".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0003_webhooks.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "agent".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0004_agent.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "webhook cursor".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0005_webhook_cursor.sql").into_sql_str(),
            false,
        ),
    ])
}

macro_rules! select_events {
    () => {
        "SELECT id, prompt, at, actor, kind, hash, label, from_hash, decision, comment FROM events "
    };
}

fn event_row(r: &SqliteRow) -> Result<Event> {
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

mod service;
mod tx;

pub use service::{CHECKPOINT_EVERY, SqliteService};
pub use tx::SqliteTx;

/// The library in a SQLite file: [`Library`] on a [`SqliteBackend`].
pub type SqliteStore = Library<SqliteBackend>;

impl Library<SqliteBackend> {
    /// Open (creating and migrating if needed) the library at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        Ok(Library::new(SqliteBackend::open(path).await?))
    }

    pub fn path(&self) -> &Path {
        self.backend().path()
    }

    pub fn is_read_only(&self) -> bool {
        self.backend().is_read_only()
    }
}

/// An exclusive lock on `<library>.lock` (blocking until other openers are done); `None` when
/// the lock file cannot be made (a read-only directory), then opening goes on unlocked.
async fn open_lock(path: &Path) -> Option<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))
        .ok()?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .ok()?
        .ok()
}

/// A SQLite file's rows.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
    path: Arc<Path>,
    read_only: bool,
}

/// How a pool's connections write: the library's defaults, or the service log's tuning.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tuning {
    pub sync: LogSync,
    /// No checkpoint inside a commit (`wal_autocheckpoint = 0`): the owner checkpoints from a
    /// task of its own, so no acknowledged request waits for one.
    pub manual_checkpoints: bool,
}

impl SqliteBackend {
    /// Open (creating and migrating if needed) the file at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_tuned(path, Tuning::default()).await
    }

    pub(crate) async fn open_tuned(path: &Path, tuning: Tuning) -> Result<Self> {
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
        // Opening creates, switches to WAL and migrates: one process at a time, under an OS
        // lock on a sidecar file. SQLite answers a second process doing the same at that moment
        // with "database is locked" instead of waiting, and two migrators race (seen with two
        // shells adding versions to a fresh library). Held until this function returns.
        let _open_lock = if read_only {
            None
        } else {
            open_lock(path).await
        };
        let mut options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| file_err(e.to_string()))?
            .filename(path)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        options = if read_only {
            options.read_only(true)
        } else {
            let options = options
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match tuning.sync {
                    LogSync::Full => SqliteSynchronous::Full,
                    LogSync::Normal => SqliteSynchronous::Normal,
                });
            if tuning.manual_checkpoints {
                options.pragma("wal_autocheckpoint", "0")
            } else {
                options
            }
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| classify(path, "cannot open", e))?;
        let backend = Self {
            pool,
            path: path.into(),
            read_only,
        };
        backend.check_schema().await?;
        Ok(backend)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
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
                path: self.path_buf(),
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
                    path: self.path_buf(),
                    found,
                    known: SCHEMA,
                });
            }
            if found == SCHEMA || (self.read_only && found >= READABLE) {
                return Ok(());
            }
        }
        if self.read_only {
            return Err(RegistryError::ReadOnly {
                path: self.path_buf(),
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

    fn path_buf(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    fn err(&self, what: &str, e: sqlx::Error) -> RegistryError {
        classify(&self.path, what, e)
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    type Tx = SqliteTx;

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn read(&self) -> Result<SqliteTx> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(|e| self.err("cannot read", e))?;
        Ok(SqliteTx {
            tx,
            path: self.path.clone(),
        })
    }

    async fn write(&self) -> Result<SqliteTx> {
        if self.read_only {
            return Err(RegistryError::ReadOnly {
                path: self.path_buf(),
            });
        }
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err("cannot start a write", e))?;
        Ok(SqliteTx {
            tx,
            path: self.path.clone(),
        })
    }

    /// Close every connection (the WAL is checkpointed into the file when the last one closes).
    async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn get<'r, T>(r: &'r SqliteRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    r.try_get(col)
        .map_err(|e| RegistryError::Data(format!("column `{col}`: {e}")))
}

/// `v` as the text of a JSON column; a value that cannot be written is an error, never a
/// `null` stored in its place.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| RegistryError::Data(format!("cannot write JSON: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| RegistryError::Data(format!("stored JSON: {e}")))
}

pub(crate) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn time(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| RegistryError::Data(format!("stored time `{s}`: {e}")))
}

/// Name the file and say what is wrong, for the errors a user can act on.
pub(crate) fn classify(path: &Path, what: &str, e: sqlx::Error) -> RegistryError {
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
