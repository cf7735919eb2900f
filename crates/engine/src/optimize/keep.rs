//! What the library keeps of a run: the seed as a person's version with its scores, the kept
//! prompt as a proposed version with its evidence, and the run with every candidate.

use std::path::Path;

use metaprompt_eval::settings::RunSettings;
use metaprompt_eval::{PromptFile, Task};
use metaprompt_optimize::run::{Budget, Outcome, Problem, Settings};
use metaprompt_registry::{Batch, NewVersion, Origin, Run, RunCandidate};

use crate::library::{self};

/// Why the kept prompt is kept, in a sentence or two (the prompt file's rationale).
pub(super) fn rationale(o: &Outcome, task: &Task) -> String {
    let mut s = format!(
        "`metaprompt optimize --algo {}` on task {}: ",
        o.algorithm, task.config.name
    );
    s.push_str(&o.verdict());
    s.push('.');
    if let Some(t) = &o.winner_test {
        s.push_str(&format!(
            " Test: {:.3} [{:.3}, {:.3}] (n = {}).",
            t.mean, t.low, t.high, t.n
        ));
    }
    s
}

pub(super) struct LibraryInput<'a> {
    pub(super) author: &'a str,
    pub(super) name: &'a str,
    pub(super) task: &'a Task,
    pub(super) outcome: &'a Outcome,
    pub(super) problem: &'a Problem,
    pub(super) winner: &'a PromptFile,
    pub(super) model: &'a str,
    pub(super) dir: &'a Path,
    pub(super) settings: &'a Settings,
    pub(super) budget: &'a Budget,
}

/// What the library keeps of a run: the seed as a person's version with its scores, the winner
/// (unless the seed was kept) as a proposed version with its evidence against the seed, and the
/// run with every candidate it considered.
pub(super) fn library_batch(i: &LibraryInput<'_>) -> Result<Batch, crate::EngineError> {
    let o = i.outcome;
    let now = chrono::Utc::now();
    let run_id = library::run_id(i.name, &o.algorithm, now);
    let run_ref = Some(run_id.as_str());
    // The seed as it was scored: on the execution model, with the task's run settings.
    let mut seed_file = i.problem.seed_prompt.clone();
    seed_file.target_model = Some(i.model.to_string());
    seed_file.run = Some(RunSettings::scored(i.task, seed_file.run.as_ref()));
    let seed_hash = metaprompt_registry::content::hash(&seed_file);
    let mut seed = NewVersion::new(i.name, seed_file, Origin::Human, i.author);
    seed.message = Some(format!("the seed prompt of {}", i.task.path.display()));
    let mut seed_evidence = vec![library::evidence(
        i.task,
        "dev",
        i.model,
        &o.seed_dev,
        None,
        None,
        run_ref,
    )];
    if let Some(t) = &o.seed_test {
        seed_evidence.push(library::evidence(
            i.task, "test", i.model, t, None, None, run_ref,
        ));
    }
    let mut versions = vec![(seed, seed_evidence)];
    if !o.kept_seed {
        let entry = o.entry(&o.winner);
        let mut won = NewVersion::new(i.name, i.winner.clone(), Origin::Optimize, i.author);
        won.parents = vec![seed_hash.clone()];
        won.run = Some(run_id.clone());
        won.message = Some(format!(
            "optimize · {} · {} (round {})",
            o.algorithm,
            entry.map_or("?", |e| e.op.as_str()),
            entry.map_or(0, |e| e.round)
        ));
        let constraint_rejections = o
            .rejected
            .iter()
            .filter(|r| r.why.iter().any(|w| w.contains("constraint")))
            .count();
        won.checks = Some(serde_json::json!({
            "constraints": i.problem.constraints,
            "passed": true,
            "how": "every candidate entered the pool only after the render check and the protected-constraint guardrail",
            "rejected_in_run": o.rejected.len(),
            "rejected_for_constraints": constraint_rejections,
        }));
        let mut evidence = vec![library::evidence(
            i.task,
            "dev",
            i.model,
            &o.best_dev,
            Some((&seed_hash, &o.dev_test)),
            None,
            run_ref,
        )];
        if let Some(c) = &o.confirm {
            evidence.push(library::evidence(
                i.task,
                "dev-held-out",
                i.model,
                &c.best,
                Some((&seed_hash, &c.paired)),
                None,
                run_ref,
            ));
        }
        if let (Some(t), Some(p)) = (&o.winner_test, &o.test_paired) {
            evidence.push(library::evidence(
                i.task,
                "test",
                i.model,
                t,
                Some((&seed_hash, p)),
                None,
                run_ref,
            ));
        }
        versions.push((won, evidence));
    }
    let wall = chrono::Duration::milliseconds((o.wall_secs * 1000.0) as i64);
    let mut candidates: Vec<RunCandidate> = o
        .pool
        .iter()
        .map(|e| -> Result<RunCandidate, crate::EngineError> {
            Ok(RunCandidate {
                id: e.id.clone(),
                hash: metaprompt_registry::content::hash(&e.prompt),
                content: e.prompt.to_toml()?,
                parents: e.parents.clone(),
                op: e.op.clone(),
                round: e.round as u32,
                status: if e.id == o.winner {
                    "winner".into()
                } else {
                    "evaluated".into()
                },
                mean: e.mean(),
                n: e.scores.len() as u64,
                detail: serde_json::json!({}),
            })
        })
        .collect::<Result<_, _>>()?;
    candidates.extend(o.rejected.iter().map(|r| RunCandidate {
        id: r.id.clone(),
        hash: String::new(),
        content: r.instruction.clone().unwrap_or_default(),
        parents: Vec::new(),
        op: r.op.clone(),
        round: r.round as u32,
        status: "rejected".into(),
        mean: None,
        n: 0,
        detail: serde_json::json!({ "why": r.why }),
    }));
    let run = Run {
        id: run_id.clone(),
        kind: Origin::Optimize,
        prompt: i.name.into(),
        task: Some(i.task.path.display().to_string()),
        algorithm: Some(o.algorithm.clone()),
        started_at: now - wall,
        finished_at: now,
        dir: Some(i.dir.display().to_string()),
        author: i.author.to_string(),
        config: serde_json::json!({ "settings": i.settings, "budget": i.budget }),
        usage: serde_json::json!({ "meta": o.meta_usage, "execution": o.execution_usage }),
        summary: serde_json::json!({
            "stop": o.stop,
            "kept_seed": o.kept_seed,
            "winner": o.winner,
            "best": o.best,
            "metric_calls": o.metric_calls,
            "test_calls": o.test_calls,
            "confirm_calls": o.confirm_calls,
            "meta_calls": o.meta_calls,
            "saved_calls": o.saved_calls,
            "rounds": o.rounds.len(),
            "candidates": candidates.len(),
            // As `optimize` and the console count them: evaluated (the seed included), and
            // rejected before evaluation.
            "evaluated": o.pool.len(),
            "rejected": o.rejected.len(),
            "wall_secs": o.wall_secs,
        }),
        candidates,
    };
    Ok(Batch {
        versions,
        run: Some(run),
    })
}
