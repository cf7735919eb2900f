//! The prompt library of metaprompt: where every prompt version lives, with its lineage, its
//! evidence and its review record, and where labels (`production`, `staging`, any name) say which
//! version is in use.
//!
//! ```text
//! prompt "sst2"
//!   v1 3fa2c1d09e1b  human     ◀── production
//!   v2 9b07e4aa1c55  optimize  parents v1, proposed, evidence: dev 0.885 [0.84, 0.93] vs v1 +0.33
//!   v3 …
//! events: add v1 (alice) · add v2 (run sst2-auto-…) · review v2 approve (bob: "checked") ·
//!         label production v1 → v2 (bob) · rollback production v2 → v1 (carol: "regression")
//! ```
//!
//! The library is two layers, so that where it is stored never changes what it means:
//!
//! ```text
//! callers (CLI, engine, server)  ──  Arc<dyn Store>          what the library offers
//!                                    Library<B: Backend>     the rules, in one place
//!                                    B = SqliteBackend, …    rows in transactions, nothing else
//! ```
//!
//! - [`store`] — the [`Store`] trait: every read and write callers make. Hold an
//!   `Arc<dyn Store>` from [`open`] (or a generic `S: Store`); name no backend.
//! - [`library`] — [`Library`], the one implementation of [`Store`]: the rules. Versions are
//!   numbered per prompt, parents must exist, machine-made versions start proposed, label moves
//!   are checked against [`policy`] on state read in the same write transaction, rollbacks walk
//!   the label's history, every change is an audit event written with it. Each write is one
//!   transaction ([`Store::commit`] stores versions, their evidence and the run that made them
//!   together).
//! - [`backend`] — the [`Backend`] and [`backend::Tx`] traits under the rules: read and write
//!   rows (prompts, versions, labels, evidence, runs, events) inside a transaction, with writers
//!   serialized. A new kind of storage (PostgreSQL next) implements only these, and must pass
//!   the same suite (`tests/store.rs`).
//! - [`sqlite`] — the default backend, a SQLite file through sqlx (WAL, busy timeout, `BEGIN
//!   IMMEDIATE` for writes, so two processes writing at once lose nothing), versioned migrations
//!   under `migrations/sqlite`, clear errors for read-only, corrupted, foreign or newer files.
//!   Queries are portable SQL so a PostgreSQL backend can reuse them. [`SqliteStore`] is
//!   `Library<SqliteBackend>`.
//! - [`service`] — what the prompt service keeps in the same database: inferences, feedback,
//!   API tokens, webhook deliveries (and how far the webhooks have followed the audit trail:
//!   [`Store::events_after`]) and the agent's cases ([`ServiceStore`], on SQLite
//!   [`SqliteService`], opened by [`open_service`]).
//! - [`policy`] — the rules that need no storage at all: label names, who may move
//!   `production` where (a machine-made version needs an approval when the prompt has
//!   protected constraints or is marked review-required), what a rollback returns to.
//! - [`model`] — the data: [`Version`] (immutable, identified by the hash of its behaviour,
//!   [`content::hash`]), [`Origin`], [`ReviewState`], [`Evidence`], [`Label`], [`Run`],
//!   [`Event`] (the audit trail), and [`VersionRef`] (`name`, `name@v3`, `name@production`,
//!   `name@3fa2c1`, `3fa2c1`).
//! - [`content`] — the content hash, export to plain files (TOML, text, chat JSON) and import
//!   back, and diffs.

pub mod backend;
pub mod content;
pub mod library;
pub mod model;
pub mod policy;
pub mod service;
pub mod sqlite;
pub mod store;

pub use backend::Backend;
pub use library::Library;
pub use model::{
    Added, Batch, Decision, Event, EventKind, Evidence, Label, LabelMove, Moved, NewVersion,
    Origin, PromptSummary, ReviewState, Run, RunCandidate, Split, SplitChange, Version, VersionRef,
};
pub use service::ServiceStore;
pub use sqlite::{SqliteBackend, SqliteService, SqliteStore};
pub use store::Store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Open the library at `location` (created and migrated if needed), for callers that should not
/// care how it is stored. Today every location is a SQLite file; a URL (`scheme://…`) is refused
/// until a backend for it exists.
pub async fn open(location: impl AsRef<Path>) -> Result<Arc<dyn Store>> {
    let location = file_location(location.as_ref())?;
    Ok(Arc::new(SqliteStore::open(location).await?))
}

/// Open the prompt service's records in the library at `location` (the same database), every
/// commit fsynced.
pub async fn open_service(location: impl AsRef<Path>) -> Result<Arc<dyn ServiceStore>> {
    open_service_with(location, service::LogSync::Full).await
}

/// [`open_service`] with commits as durable as `sync` says (the server's `[server] log_sync`).
pub async fn open_service_with(
    location: impl AsRef<Path>,
    sync: service::LogSync,
) -> Result<Arc<dyn ServiceStore>> {
    let location = file_location(location.as_ref())?;
    Ok(Arc::new(SqliteService::open_with(location, sync).await?))
}

/// The location as a file path; a URL is refused until a backend for it exists.
fn file_location(location: &Path) -> Result<&Path> {
    match url_scheme(location) {
        Some(scheme) => Err(RegistryError::Invalid {
            what: "library location",
            value: location.display().to_string(),
            expected: format!(
                "a file path (a library at a `{scheme}` URL is not supported by this build)"
            ),
        }),
        None => Ok(location),
    }
}

/// `postgres` for `postgres://…`; `None` for file paths.
fn url_scheme(location: &Path) -> Option<&str> {
    let (scheme, _) = location.to_str()?.split_once("://")?;
    let mut chars = scheme.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then_some(scheme)
}

/// Everything that can go wrong in the library, each naming what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no prompt named `{name}` in the library{}", known_list(known))]
    UnknownPrompt { name: String, known: Vec<String> },
    #[error("prompt `{prompt}` has no version `{version}`{}", known_list(known))]
    UnknownVersion {
        prompt: String,
        version: String,
        known: Vec<String>,
    },
    #[error("prompt `{prompt}` has no label `{label}`{}", known_list(known))]
    UnknownLabel {
        prompt: String,
        label: String,
        known: Vec<String>,
    },
    #[error("no run `{0}` in the library")]
    UnknownRun(String),
    #[error("no version's hash starts with `{0}`")]
    UnknownHash(String),
    #[error("`{prefix}` is ambiguous: it starts {}; give more characters or NAME@REF", .matches.join(", "))]
    AmbiguousHash {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("invalid {what} `{value}`: {expected}")]
    Invalid {
        what: &'static str,
        value: String,
        expected: String,
    },
    #[error("cannot move `{label}` of `{prompt}` to {version}: {why}")]
    Refused {
        prompt: String,
        label: String,
        version: String,
        why: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("the library {path} is read-only; writing needs a writable file (and directory)")]
    ReadOnly { path: PathBuf },
    #[error(
        "{path} is not a metaprompt library: {message} (a corrupted file, or another program's; move it away or set [library].path / --library)"
    )]
    NotALibrary { path: PathBuf, message: String },
    #[error(
        "the library {path} was written by a newer metaprompt (schema {found}, this one knows up to {known}); upgrade metaprompt"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("library {path}: {what}: {source}")]
    Db {
        path: PathBuf,
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("library data: {0}")]
    Data(String),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (known: {})", known.join(", "))
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The library file when none is configured: `<user data dir>/metaprompt/library.sqlite`.
pub fn default_path() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("metaprompt")
        .join("library.sqlite")
}

/// Now, as stored: RFC 3339 UTC with milliseconds (sorts as text).
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        let scheme = |s: &str| url_scheme(Path::new(s)).map(String::from);
        assert_eq!(scheme("postgres://u@h/db").as_deref(), Some("postgres"));
        assert_eq!(
            scheme("postgresql+tls://h/db").as_deref(),
            Some("postgresql+tls")
        );
        for path in [
            "library.sqlite",
            "/data/lib.sqlite",
            "./a://b",
            "C:\\lib.sqlite",
            "",
        ] {
            assert_eq!(scheme(path), None, "{path}");
        }
    }
}
