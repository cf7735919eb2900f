//! How a job's result becomes library entries: the version it started from as a person's
//! version with its scores, the result as a proposed version with its evidence against it, and
//! the run with every candidate it considered.

use metaprompt_eval::stats::{Estimate, Paired};
use metaprompt_eval::{PromptFile, Summary, Task};
use metaprompt_optimize::{Candidate, Costs};
use metaprompt_registry::{Added, Batch, Evidence, NewVersion, Origin, Run, RunCandidate};
use serde::{Deserialize, Serialize};

use crate::{Engine, EngineError};

/// What the library kept of a result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "stored", rename_all = "kebab-case")]
pub enum Stored {
    /// The engine has no library (results are not stored).
    Off,
    /// The versions as stored (or found already there), and where.
    In { location: String, added: Vec<Added> },
}

impl Engine {
    /// Store a batch in the library, unless the engine has none.
    pub(crate) async fn store(&self, batch: Batch) -> Result<Stored, EngineError> {
        let Some(store) = self.library().await? else {
            return Ok(Stored::Off);
        };
        let added = store
            .commit(batch)
            .await
            .map_err(|source| EngineError::NotStored {
                location: store.location(),
                source: Box::new(source),
            })?;
        Ok(Stored::In {
            location: store.location(),
            added,
        })
    }
}

/// The task's metric(s), as evidence names them (`label`, `exact+contains`).
pub(crate) fn metric_name(task: &Task) -> String {
    task.config
        .metrics
        .iter()
        .map(|m| m.kind().as_str().to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// Evidence from an estimate, optionally compared with a baseline version (paired).
pub(crate) fn evidence(
    task: &Task,
    split: &str,
    model: &str,
    estimate: &Estimate,
    versus: Option<(&str, &Paired)>,
    cost_per_execution_usd: Option<f64>,
    run: Option<&str>,
) -> Evidence {
    Evidence {
        task: task.config.name.clone(),
        split: split.into(),
        model: model.into(),
        metric: metric_name(task),
        n: estimate.n as u64,
        mean: estimate.mean,
        low: estimate.low,
        high: estimate.high,
        baseline: versus.map(|(h, _)| h.to_string()),
        diff: versus.map(|(_, p)| p.diff),
        diff_low: versus.map(|(_, p)| p.low),
        diff_high: versus.map(|(_, p)| p.high),
        p_value: versus.map(|(_, p)| p.p_value),
        cost_per_execution_usd,
        run: run.map(String::from),
        recorded_at: None,
    }
}

/// A run id: `<prompt>-<kind>-<UTC time to the millisecond>`.
pub(crate) fn run_id(name: &str, kind: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!("{name}-{kind}-{}", at.format("%Y%m%d%H%M%S%3f"))
}

/// What `generate` and `translate` hand the library.
pub(crate) struct OneShot<'a> {
    pub kind: Origin,
    pub author: &'a str,
    pub name: &'a str,
    pub task: Option<&'a Task>,
    pub task_path: Option<&'a std::path::Path>,
    /// The version the result derives from (the task's seed, the translated source), its score
    /// on the same examples, and why it is there.
    pub baseline: Option<(&'a PromptFile, Option<&'a Summary>, String)>,
    pub candidates: &'a [Candidate],
    pub chosen: Option<usize>,
    pub prompt: &'a PromptFile,
    /// The chosen prompt against the baseline (paired, same examples).
    pub versus: Option<&'a Paired>,
    pub split: &'a str,
    /// The model the chosen prompt was scored on.
    pub model: &'a str,
    pub costs: &'a Costs,
    pub config: serde_json::Value,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// The baseline as a person's version, the chosen prompt as a proposed version with its
/// evidence and guardrail report, and the run with every candidate.
pub(crate) fn one_shot_batch(s: &OneShot<'_>) -> Result<Batch, EngineError> {
    let now = chrono::Utc::now();
    let run_id = run_id(s.name, &s.kind.to_string(), now);
    let run_ref = Some(run_id.as_str());
    let mut versions = Vec::new();
    let mut baseline_hash = None;
    if let Some((file, score, why)) = &s.baseline {
        let mut v = NewVersion::new(s.name, (*file).clone(), Origin::Human, s.author);
        v.message = Some(why.clone());
        let evidence = match (s.task, score) {
            (Some(t), Some(sc)) => vec![evidence(
                t,
                s.split,
                &sc.model,
                &sc.score,
                None,
                cost_per_example(sc),
                run_ref,
            )],
            _ => Vec::new(),
        };
        baseline_hash = Some(metaprompt_registry::content::hash(file));
        versions.push((v, evidence));
    }
    let chosen = s.chosen.map(|i| &s.candidates[i]);
    let mut v = NewVersion::new(s.name, s.prompt.clone(), s.kind, s.author);
    v.parents = baseline_hash.iter().cloned().collect();
    v.run = Some(run_id.clone());
    v.checks = chosen.and_then(|c| serde_json::to_value(&c.guard).ok());
    v.message = chosen.map(|c| format!("{} · candidate {}", s.kind, c.id));
    let mut ev = Vec::new();
    if let (Some(t), Some(score)) = (s.task, chosen.and_then(|c| c.score.as_ref())) {
        let versus = match (&baseline_hash, s.versus) {
            (Some(h), Some(p)) => Some((h.as_str(), p)),
            _ => None,
        };
        ev.push(evidence(
            t,
            s.split,
            s.model,
            &score.score,
            versus,
            s.costs.per_execution.as_ref().and_then(|p| p.cost_usd),
            run_ref,
        ));
    }
    versions.push((v, ev));
    let candidates: Vec<RunCandidate> = s
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| -> Result<RunCandidate, EngineError> {
            Ok(RunCandidate {
                id: c.id.clone(),
                hash: c
                    .prompt
                    .as_ref()
                    .map(metaprompt_registry::content::hash)
                    .unwrap_or_default(),
                content: c
                    .prompt
                    .as_ref()
                    .map_or_else(|| Ok(c.answer.clone()), PromptFile::to_toml)?,
                parents: Vec::new(),
                op: s.kind.to_string(),
                round: 0,
                status: if Some(i) == s.chosen {
                    "chosen".into()
                } else {
                    serde_json::to_value(&c.status)
                        .ok()
                        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(String::from))
                        .unwrap_or_else(|| "considered".into())
                },
                mean: c.score.as_ref().map(|s| s.score.mean),
                n: c.score.as_ref().map_or(0, |s| s.score.n as u64),
                detail: serde_json::to_value(&c.status).unwrap_or_default(),
            })
        })
        .collect::<Result<_, _>>()?;
    let run = Run {
        id: run_id,
        kind: s.kind,
        prompt: s.name.into(),
        task: s.task_path.map(|p| p.display().to_string()),
        algorithm: None,
        started_at: s.started_at,
        finished_at: now,
        dir: None,
        author: s.author.to_string(),
        config: s.config.clone(),
        usage: serde_json::json!({ "meta": s.costs.meta, "execution": s.costs.execution }),
        summary: serde_json::json!({
            "chosen": chosen.map(|c| c.id.clone()),
            "candidates": candidates.len(),
            "split": s.split,
        }),
        candidates,
    };
    Ok(Batch {
        versions,
        run: Some(run),
    })
}

fn cost_per_example(s: &Summary) -> Option<f64> {
    (s.examples > 0)
        .then(|| s.cost_usd.map(|c| c / s.examples as f64))
        .flatten()
}
