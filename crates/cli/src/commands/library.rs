//! The prompt library as the commands see it: where it is, who is acting, and how a command's
//! result becomes proposed versions.

use std::path::PathBuf;

use anyhow::Context;
use metaprompt_registry::model::short;
use metaprompt_registry::{Added, Batch, SqliteStore, Store, Version, VersionRef};

use crate::args::Global;
use crate::context;
use crate::format::outln;

/// The library file: flag/env, else config, else the user data directory.
pub fn path(global: &Global) -> anyhow::Result<PathBuf> {
    if let Some(p) = &global.library {
        return Ok(p.clone());
    }
    let config = context::load_config(global)?;
    Ok(config
        .library
        .path
        .clone()
        .unwrap_or_else(metaprompt_registry::default_path))
}

pub async fn open(global: &Global) -> anyhow::Result<SqliteStore> {
    let path = path(global)?;
    Ok(SqliteStore::open(&path).await?)
}

/// Who is acting: --author / METAPROMPT_AUTHOR, else $USER, else `unknown`.
pub fn author(global: &Global) -> String {
    global
        .author
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub async fn resolve(store: &SqliteStore, reference: &str) -> anyhow::Result<Version> {
    Ok(store.resolve(&VersionRef::parse(reference)?).await?)
}

/// `sst2@v3 (3fa2c1d09e1b)`.
pub fn describe(v: &Version) -> String {
    format!("{} ({})", v.reference(), short(&v.hash))
}

/// Store a command's result unless the library is turned off; print what was stored and how to
/// review it. A failure here is an error (the command's files are already written).
/// With `json` (stdout holds a JSON document) the lines go to standard error.
pub async fn store_result(global: &Global, batch: Batch, json: bool) -> anyhow::Result<Vec<Added>> {
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            outln!("{line}");
        }
    };
    if global.no_library {
        say("library    not stored (--no-library)".into());
        return Ok(Vec::new());
    }
    let path = path(global)?;
    let store = SqliteStore::open(&path).await?;
    let added = store.commit(batch).await.with_context(|| {
        format!(
            "the result is in its files, but not in the library {}",
            path.display()
        )
    })?;
    store.close().await;
    for a in &added {
        let v = &a.version;
        let what = if a.created { "stored" } else { "already had" };
        say(format!(
            "library    {what} {} · {} · {}",
            describe(v),
            v.origin,
            v.review
        ));
        if v.review == metaprompt_registry::ReviewState::Proposed {
            say(format!(
                "review     metaprompt review show {}",
                v.reference()
            ));
        }
    }
    say(format!("library    {}", path.display()));
    Ok(added)
}

/// The task's metric(s), as evidence names them (`label`, `exact+contains`).
pub fn metric_name(task: &metaprompt_eval::Task) -> String {
    task.config
        .metrics
        .iter()
        .map(|m| {
            serde_json::to_value(m.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_else(|| "metric".into())
        })
        .collect::<Vec<_>>()
        .join("+")
}

/// Evidence from an estimate, optionally compared with a baseline version (paired).
pub fn evidence(
    task: &metaprompt_eval::Task,
    split: &str,
    model: &str,
    estimate: &metaprompt_eval::stats::Estimate,
    versus: Option<(&str, &metaprompt_eval::stats::Paired)>,
    cost_per_execution_usd: Option<f64>,
    run: Option<&str>,
) -> metaprompt_registry::Evidence {
    metaprompt_registry::Evidence {
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

/// What `generate` and `translate` hand the library.
pub struct OneShot<'a> {
    pub kind: metaprompt_registry::Origin,
    pub name: &'a str,
    pub task: Option<&'a metaprompt_eval::Task>,
    pub task_path: Option<&'a std::path::Path>,
    /// The version the result derives from (the task's seed, the translated source), its score
    /// on the same examples, and why it is there.
    pub baseline: Option<(
        &'a metaprompt_eval::PromptFile,
        Option<&'a metaprompt_eval::Summary>,
        String,
    )>,
    pub candidates: &'a [metaprompt_optimize::Candidate],
    pub chosen: Option<usize>,
    pub prompt: &'a metaprompt_eval::PromptFile,
    /// The chosen prompt against the baseline (paired, same examples).
    pub versus: Option<&'a metaprompt_eval::stats::Paired>,
    pub split: &'a str,
    /// The model the chosen prompt was scored on.
    pub model: &'a str,
    pub costs: &'a metaprompt_optimize::Costs,
    pub config: serde_json::Value,
    /// When the command started.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

/// The baseline as a person's version, the chosen prompt as a proposed version with its
/// evidence and guardrail report, and the run with every candidate.
pub fn one_shot_batch(global: &Global, s: &OneShot<'_>) -> Batch {
    use metaprompt_registry::{NewVersion, Origin, Run, RunCandidate};
    let author = author(global);
    let now = chrono::Utc::now();
    let run_id = format!("{}-{}-{}", s.name, s.kind, now.format("%Y%m%d%H%M%S%3f"));
    let run_ref = Some(run_id.as_str());
    let mut versions = Vec::new();
    let mut baseline_hash = None;
    if let Some((file, score, why)) = &s.baseline {
        let mut v = NewVersion::new(s.name, (*file).clone(), Origin::Human, &author);
        v.message = Some(why.clone());
        let evidence = match (s.task, score) {
            (Some(t), Some(sc)) => vec![evidence(
                t,
                s.split,
                &sc.model,
                &sc.score,
                None,
                sc_cost(sc),
                run_ref,
            )],
            _ => Vec::new(),
        };
        baseline_hash = Some(metaprompt_registry::content::hash(file));
        versions.push((v, evidence));
    }
    let chosen = s.chosen.map(|i| &s.candidates[i]);
    let mut v = NewVersion::new(s.name, s.prompt.clone(), s.kind, &author);
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
        .map(|(i, c)| RunCandidate {
            id: c.id.clone(),
            hash: c
                .prompt
                .as_ref()
                .map(metaprompt_registry::content::hash)
                .unwrap_or_default(),
            content: c
                .prompt
                .as_ref()
                .map_or_else(|| c.answer.clone(), |p| p.to_toml()),
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
        .collect();
    let run = Run {
        id: run_id,
        kind: s.kind,
        prompt: s.name.into(),
        task: s.task_path.map(|p| p.display().to_string()),
        algorithm: None,
        started_at: s.started_at,
        finished_at: now,
        dir: None,
        author,
        config: s.config.clone(),
        usage: serde_json::json!({ "meta": s.costs.meta, "execution": s.costs.execution }),
        summary: serde_json::json!({
            "chosen": chosen.map(|c| c.id.clone()),
            "candidates": candidates.len(),
            "split": s.split,
        }),
        candidates,
    };
    Batch {
        versions,
        run: Some(run),
    }
}

fn sc_cost(s: &metaprompt_eval::Summary) -> Option<f64> {
    (s.examples > 0)
        .then(|| s.cost_usd.map(|c| c / s.examples as f64))
        .flatten()
}
