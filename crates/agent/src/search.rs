//! A case's search as a resumable piece of work: the sets it searches on are kept beside its
//! task (so a resume rebuilds the same task, whatever traffic came since), its run directory is
//! recorded on the case before anything is spent, and what a stopped search spent is read from
//! its call log.

use std::path::{Path, PathBuf};

use crate::agent::AgentError;
use crate::collect::Sets;

/// The sets a case's search was started on, kept in its work directory.
const SETS: &str = "sets.json";

pub(crate) fn save_sets(work: &Path, sets: &Sets) -> Result<(), AgentError> {
    let path = work.join(SETS);
    let text = serde_json::to_vec(sets).map_err(|e| AgentError::Data(e.to_string()))?;
    std::fs::write(&path, text).map_err(|source| AgentError::Io { path, source })
}

/// The sets of the search in `work`, when they were kept and are readable.
pub(crate) fn load_sets(work: &Path) -> Option<Sets> {
    let text = std::fs::read(work.join(SETS)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Model calls (not answered from the cache) and dollars the run in `run_dir` has logged.
pub(crate) fn logged(run_dir: &Path) -> (u64, f64) {
    let records = metaprompt_llm::CallLog::read(&run_dir.join("calls.jsonl")).unwrap_or_default();
    records
        .iter()
        .filter(|r| !r.cached)
        .fold((0, 0.0), |(n, usd), r| {
            (n + 1, usd + r.cost_usd.unwrap_or(0.0))
        })
}

/// A run directory in `work` that no earlier search used: `run`, then `run-2`, `run-3`, ….
pub(crate) fn fresh_run_dir(work: &Path) -> PathBuf {
    let first = work.join("run");
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|k| work.join(format!("run-{k}")))
        .find(|d| !d.exists())
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_search_never_reuses_an_earlier_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(fresh_run_dir(dir.path()), dir.path().join("run"));
        std::fs::create_dir(dir.path().join("run")).unwrap();
        assert_eq!(fresh_run_dir(dir.path()), dir.path().join("run-2"));
        assert_eq!(logged(&dir.path().join("run")), (0, 0.0));
        assert!(load_sets(dir.path()).is_none());
        save_sets(dir.path(), &Sets::default()).unwrap();
        assert!(load_sets(dir.path()).is_some());
    }
}
