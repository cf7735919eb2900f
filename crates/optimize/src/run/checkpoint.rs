//! What a run needs to continue ([`Checkpoint`]) and where it keeps it and its artifacts
//! ([`RunStore`]): the loop only says "save this checkpoint" or "write this artifact"; a
//! directory ([`FsRunStore`]), memory ([`MemoryRunStore`]) or, later, a database decides how.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use metaprompt_llm::LayerUsage;
use serde::{Deserialize, Serialize};

use super::RunError;
use super::budget::{Budget, Rates, StopReason};
use super::pool::{Entry, Rejected, RoundStats};
use super::settings::Settings;
use crate::junk::Screened;

/// Everything a run needs to continue: saved before the seed is scored and after each round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub algorithm: String,
    pub task: PathBuf,
    pub settings: Settings,
    pub budget: Budget,
    /// The last completed round (0: the seed round, possibly not scored yet).
    pub round: usize,
    pub pool: Vec<Entry>,
    pub rejected: Vec<Rejected>,
    pub rounds: Vec<RoundStats>,
    pub metric_calls: u64,
    pub meta_calls: u64,
    pub saved_calls: u64,
    pub meta_usage: LayerUsage,
    pub execution_usage: LayerUsage,
    pub wall_secs: f64,
    /// Pairs left unscored so far, by reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unscored: BTreeMap<String, u64>,
    /// What calls have cost so far (the caps' look-ahead).
    #[serde(default)]
    pub rates: Rates,
    /// Meta-written instructions screened so far, and those rejected as junk.
    #[serde(default)]
    pub screened: Screened,
    /// Scoring calls of the likelihood proxy so far.
    #[serde(default)]
    pub proxy_calls: u64,
    /// The rounds are over, and why; the verdict and the test split are still to come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<StopReason>,
    /// Set when the run finished (verdict made, test split scored): nothing left to resume.
    pub stop: Option<StopReason>,
}

impl Checkpoint {
    fn to_json(&self) -> Result<Vec<u8>, RunError> {
        serde_json::to_vec_pretty(self).map_err(RunError::Encode)
    }

    fn from_json(bytes: &[u8], location: &str) -> Result<Self, RunError> {
        serde_json::from_slice(bytes).map_err(|source| RunError::BadCheckpoint {
            location: location.to_string(),
            source,
        })
    }
}

/// Where a run keeps its checkpoint and its artifacts (`best.toml`, `report.json`, …).
pub trait RunStore: Send + Sync + std::fmt::Debug {
    /// Where the run is kept, for messages (a directory, a key).
    fn location(&self) -> String;
    /// The last checkpoint saved, if any.
    fn load(&self) -> Result<Option<Checkpoint>, RunError>;
    /// Replace the checkpoint. A crash leaves the old one or the new one, never half of one.
    fn save(&self, cp: &Checkpoint) -> Result<(), RunError>;
    /// Write the artifact `name` (a plain file name), as atomically as `save`.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RunError>;
    /// Whether the artifact `name` exists.
    fn exists(&self, name: &str) -> bool;
}

/// A run directory: `checkpoint.json` and the artifacts side by side, each written to a
/// temporary file in the same directory and renamed over the old one.
#[derive(Debug, Clone)]
pub struct FsRunStore {
    dir: PathBuf,
}

impl FsRunStore {
    /// The checkpoint's file name in the directory.
    pub const CHECKPOINT: &'static str = "checkpoint.json";

    /// A store in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the checkpoint file.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.dir.join(Self::CHECKPOINT)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), RunError> {
        let path = self.dir.join(name);
        let fail = |source| RunError::Write {
            path: path.clone(),
            source,
        };
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|n| n == std::ffi::OsStr::new(name));
        if !plain {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an artifact name is a plain file name",
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(fail)
    }
}

impl RunStore for FsRunStore {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn load(&self) -> Result<Option<Checkpoint>, RunError> {
        let path = self.checkpoint_path();
        match std::fs::read(&path) {
            Ok(bytes) => Checkpoint::from_json(&bytes, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RunError::ReadCheckpoint { path, source }),
        }
    }

    fn save(&self, cp: &Checkpoint) -> Result<(), RunError> {
        self.put(Self::CHECKPOINT, &cp.to_json()?)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RunError> {
        self.put(name, bytes)
    }

    fn exists(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }
}

/// A store in memory (tests, and callers that keep runs elsewhere). The checkpoint is kept
/// serialized, so a load goes through the same format as a file.
#[derive(Debug, Default)]
pub struct MemoryRunStore {
    checkpoint: Mutex<Option<Vec<u8>>>,
    files: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryRunStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes of artifact `name`, if written.
    pub fn artifact(&self, name: &str) -> Option<Vec<u8>> {
        lock(&self.files).get(name).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RunStore for MemoryRunStore {
    fn location(&self) -> String {
        "memory".into()
    }

    fn load(&self) -> Result<Option<Checkpoint>, RunError> {
        lock(&self.checkpoint)
            .as_deref()
            .map(|b| Checkpoint::from_json(b, "memory"))
            .transpose()
    }

    fn save(&self, cp: &Checkpoint) -> Result<(), RunError> {
        let bytes = cp.to_json()?;
        *lock(&self.checkpoint) = Some(bytes);
        Ok(())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RunError> {
        lock(&self.files).insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    fn exists(&self, name: &str) -> bool {
        lock(&self.files).contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            algorithm: "opro".into(),
            task: "task.toml".into(),
            settings: Settings::default(),
            budget: Budget::default(),
            round: 2,
            pool: Vec::new(),
            rejected: Vec::new(),
            rounds: Vec::new(),
            metric_calls: 40,
            meta_calls: 6,
            saved_calls: 3,
            meta_usage: LayerUsage::default(),
            execution_usage: LayerUsage::default(),
            wall_secs: 1.5,
            unscored: BTreeMap::new(),
            rates: Rates::default(),
            screened: Screened::default(),
            proxy_calls: 0,
            ended: None,
            stop: None,
        }
    }

    #[test]
    fn a_checkpoint_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsRunStore::new(dir.path().join("run"));
        assert!(store.load().unwrap().is_none(), "nothing saved yet");
        store.save(&checkpoint()).unwrap();
        let mut cp = store.load().unwrap().unwrap();
        assert_eq!((cp.round, cp.metric_calls, cp.meta_calls), (2, 40, 6));
        cp.round = 3;
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap().unwrap().round, 3);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FsRunStore::CHECKPOINT]);
        assert_eq!(store.checkpoint_path(), store.dir().join("checkpoint.json"));
    }

    #[test]
    fn artifacts_are_plain_names_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsRunStore::new(dir.path());
        assert!(!store.exists("report.json"));
        store.write("report.json", b"{}").unwrap();
        assert!(store.exists("report.json"));
        assert_eq!(
            std::fs::read(dir.path().join("report.json")).unwrap(),
            b"{}"
        );
        let e = store.write("../escape", b"x").unwrap_err();
        assert!(matches!(e, RunError::Write { .. }), "{e}");
        // A directory where the checkpoint should be: a read error naming the file.
        let odd = FsRunStore::new(dir.path().join("odd"));
        std::fs::create_dir_all(odd.checkpoint_path()).unwrap();
        let e = odd.load().unwrap_err();
        let RunError::ReadCheckpoint { path, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(path, &odd.checkpoint_path());
        assert!(e.to_string().contains("checkpoint.json"), "{e}");
        let e = odd.save(&checkpoint()).unwrap_err();
        assert!(
            matches!(&e, RunError::Write { path, .. } if path.ends_with("checkpoint.json")),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_checkpoint_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsRunStore::new(dir.path());
        std::fs::write(store.checkpoint_path(), "{ not json").unwrap();
        let e = store.load().unwrap_err();
        assert!(matches!(e, RunError::BadCheckpoint { .. }));
        assert!(e.to_string().contains("checkpoint.json"), "{e}");
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    }

    #[test]
    fn the_memory_store_round_trips_too() {
        let store = MemoryRunStore::new();
        assert!(store.load().unwrap().is_none());
        store.save(&checkpoint()).unwrap();
        assert_eq!(store.load().unwrap().unwrap().saved_calls, 3);
        store.write("best.toml", b"x").unwrap();
        assert!(store.exists("best.toml"));
        assert_eq!(store.artifact("best.toml").unwrap(), b"x");
    }
}
