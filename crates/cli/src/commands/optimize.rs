//! `metaprompt optimize`: the budgeted loop, with checkpoints, resume and reports.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use metaprompt_eval::Task;
use metaprompt_llm::{Hub, ResponseCache};
use metaprompt_optimize::run::{
    self, Budget, Checkpoint, Outcome, Problem, RunDir, Schedule, Settings,
};
use metaprompt_optimize::{Brief, Frame, Layers, algo};

use serde::{Deserialize, Serialize};

use crate::args::{Global, MetaArgs, OptimizeArgs};
use crate::commands::eval::{self as evalcmd};
use crate::commands::library;
use crate::commands::meta::{self, Console};
use crate::context;
use crate::format::{self, outln};
use metaprompt_registry::{Batch, NewVersion, Origin, Run, RunCandidate};

pub async fn run(global: &Global, args: OptimizeArgs) -> anyhow::Result<()> {
    // A resumed run takes its task, algorithm, settings and budget from its checkpoint.
    let resume = match &args.resume {
        Some(dir) => {
            let cp =
                Checkpoint::load(&RunDir(dir.clone()).checkpoint()).map_err(anyhow::Error::msg)?;
            if let Some(stop) = cp.stop {
                anyhow::bail!(
                    "the run in {} has finished ({}); see its report.html",
                    dir.display(),
                    stop.describe()
                );
            }
            Some((dir.clone(), cp))
        }
        None => None,
    };
    let task_path = match (&resume, &args.task) {
        (Some((_, cp)), _) => cp.task.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => anyhow::bail!("give a task file, or --resume RUN_DIR"),
    };
    let task = Task::load(&task_path)?;
    let algorithm = resume
        .as_ref()
        .map_or(args.algo.clone(), |(_, cp)| cp.algorithm.clone());
    let mut optimizer = algo::by_name(&algorithm).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown algorithm `{algorithm}`; the algorithms are {}",
            algo::NAMES.join(", ")
        )
    })?;
    // What defines the problem besides the task file; a resumed run reads it back.
    let invocation = match &resume {
        Some((_, cp)) => serde_json::from_value(cp.settings.invocation.clone())
            .map_err(|e| anyhow::anyhow!("the checkpoint's invocation is unreadable: {e}"))?,
        None => Invocation {
            model: args.model.clone(),
            meta: args.meta.meta.clone(),
            meta_system: args.meta.meta_system.clone(),
            templates: args.meta.templates.clone(),
            judge: args.meta.judge.clone(),
            constraints: args.meta.constraints.clone(),
            dev_limit: args.dev_limit,
            test_limit: args.test_limit,
            prompt: args
                .prompt
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            name: args.name.clone(),
        },
    };
    let settings = match &resume {
        Some((_, cp)) => cp.settings.clone(),
        None => Settings {
            invocation: serde_json::to_value(&invocation)?,
            seed: args.meta.seed,
            rounds: args.rounds,
            patience: args.patience.max(1),
            schedule: Schedule {
                explore: args.explore,
                exploit: args.exploit,
            },
            per_round: args.per_round.max(1),
            minibatch: args.minibatch.max(1),
            demos: args.demos,
        },
    };
    let budget = match &resume {
        Some((_, cp)) => cp.budget.clone(),
        None => budget(&args, &task),
    };
    let dir = match (&resume, &args.run_dir) {
        (Some((d, _)), _) => d.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => default_run_dir(&task, &algorithm),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let hub = hub(global, &dir).await?;
    let models = &task.config.models;
    let execution = hub.model(invocation.model.as_deref().unwrap_or(&models.execution))?;
    let meta_model = hub.model(invocation.meta.as_deref().unwrap_or(&models.meta))?;
    let log = dir.join("calls.jsonl");
    let log = metaprompt_llm::CallLog::append(&log)
        .with_context(|| format!("cannot open the call log {}", log.display()))?;
    let layers = Layers::logged(meta_model, execution, log);
    let meta_args = MetaArgs {
        meta: invocation.meta.clone(),
        meta_system: invocation.meta_system.clone(),
        templates: invocation.templates.clone(),
        judge: invocation.judge.clone(),
        constraints: invocation.constraints.clone(),
        seed: settings.seed,
        json: args.meta.json,
    };
    let meta_prompts = meta::meta_prompts(&meta_args, Some(&task))?;
    let guard = meta::guard(&meta_args, &hub, &layers)?;
    let brief = Brief::from_task(&task);
    let seed_prompt = match &invocation.prompt {
        Some(p) => metaprompt_eval::PromptFile::load(p)?,
        None => task.seed_prompt.clone(),
    };
    let dev_limit = invocation.dev_limit;
    let test = match invocation.test_limit {
        Some(0) => Vec::new(),
        limit => match task.examples("test") {
            Ok(t) => metaprompt_eval::dataset::take(t, limit, None),
            Err(_) => Vec::new(),
        },
    };
    let problem = Problem {
        frame: Frame::of(&seed_prompt, &brief),
        constraints: meta::constraints(Some(&task), Some(&seed_prompt), &invocation.constraints),
        seed_prompt,
        train: task.examples("train").unwrap_or_default(),
        dev: evalcmd::examples(&task, "dev", dev_limit, None)?,
        test,
        scorer: evalcmd::scorer(&task, &hub)?,
        options: evalcmd::options(&task),
        brief,
    };
    if resume.is_none() {
        project(&args, &problem, &budget, &settings, &layers)?;
    }
    eprintln!(
        "optimize · {} · {algorithm} · meta {} · execution {} · run {}",
        task.config.name,
        layers.meta.info().name,
        layers.execution.info().name,
        dir.display()
    );
    let console = Console::new(args.meta.json);
    let result = run::run(
        optimizer.as_mut(),
        &meta_prompts,
        &layers,
        &guard,
        &problem,
        &settings,
        &budget,
        &task_path,
        &RunDir(dir.clone()),
        resume.map(|(_, cp)| cp),
        &|e| console.event(e),
    )
    .await;
    evalcmd::close(&hub).await;
    let outcome = result?;
    let winner = outcome
        .entry(&outcome.winner)
        .map(|e| e.prompt.clone())
        .unwrap_or_default();
    let prompt_path = dir.join("best.toml");
    let mut prompt = winner.clone();
    prompt.rationale = Some(rationale(&outcome, &task));
    prompt.target_model = Some(layers.execution.info().name.clone());
    std::fs::write(&prompt_path, prompt.to_toml())
        .with_context(|| format!("cannot write {}", prompt_path.display()))?;
    let report_json = dir.join("report.json");
    std::fs::write(&report_json, serde_json::to_string_pretty(&outcome)?)
        .with_context(|| format!("cannot write {}", report_json.display()))?;
    let report_html = dir.join("report.html");
    std::fs::write(
        &report_html,
        metaprompt_optimize::report::html(&outcome, &task.config.name),
    )
    .with_context(|| format!("cannot write {}", report_html.display()))?;
    let name = invocation
        .name
        .clone()
        .unwrap_or_else(|| task.config.name.clone());
    let batch = library_batch(&LibraryInput {
        global,
        name: &name,
        task: &task,
        task_path: &task_path,
        outcome: &outcome,
        problem: &problem,
        winner: &prompt,
        model: &layers.execution.info().name,
        dir: &dir,
        settings: &settings,
        budget: &budget,
    });
    if args.meta.json {
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
        library::store_result(global, batch, true).await?;
        return Ok(());
    }
    print_outcome(&outcome, &problem);
    outln!("prompt     {}", prompt_path.display());
    outln!("report     {}", report_html.display());
    outln!(
        "run        {} (checkpoint.json, report.json, calls.jsonl)",
        dir.display()
    );
    library::store_result(global, batch, false).await?;
    Ok(())
}

struct LibraryInput<'a> {
    global: &'a Global,
    name: &'a str,
    task: &'a Task,
    task_path: &'a Path,
    outcome: &'a Outcome,
    problem: &'a Problem,
    winner: &'a metaprompt_eval::PromptFile,
    model: &'a str,
    dir: &'a Path,
    settings: &'a Settings,
    budget: &'a Budget,
}

/// What the library keeps of a run: the seed as a person's version with its scores, the winner
/// (unless the seed was kept) as a proposed version with its evidence against the seed, and the
/// run with every candidate it considered.
fn library_batch(i: &LibraryInput<'_>) -> Batch {
    let o = i.outcome;
    let author = library::author(i.global);
    let now = chrono::Utc::now();
    let run_id = format!(
        "{}-{}-{}",
        i.name,
        o.algorithm,
        now.format("%Y%m%d%H%M%S%3f")
    );
    let run_ref = Some(run_id.as_str());
    let seed_file = &i.problem.seed_prompt;
    let seed_hash = metaprompt_registry::content::hash(seed_file);
    let mut seed = NewVersion::new(i.name, seed_file.clone(), Origin::Human, &author);
    seed.message = Some(format!("the seed prompt of {}", i.task_path.display()));
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
        let mut won = NewVersion::new(i.name, i.winner.clone(), Origin::Optimize, &author);
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
        .map(|e| RunCandidate {
            id: e.id.clone(),
            hash: metaprompt_registry::content::hash(&e.prompt),
            content: e.prompt.to_toml(),
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
        .collect();
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
        task: Some(i.task_path.display().to_string()),
        algorithm: Some(o.algorithm.clone()),
        started_at: now - wall,
        finished_at: now,
        dir: Some(i.dir.display().to_string()),
        author,
        config: serde_json::json!({ "settings": i.settings, "budget": i.budget }),
        usage: serde_json::json!({ "meta": o.meta_usage, "execution": o.execution_usage }),
        summary: serde_json::json!({
            "stop": o.stop,
            "kept_seed": o.kept_seed,
            "winner": o.winner,
            "best": o.best,
            "metric_calls": o.metric_calls,
            "meta_calls": o.meta_calls,
            "saved_calls": o.saved_calls,
            "rounds": o.rounds.len(),
            "candidates": candidates.len(),
            "wall_secs": o.wall_secs,
        }),
        candidates,
    };
    Batch {
        versions,
        run: Some(run),
    }
}

/// The command-line choices that define a run's problem, kept in its checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Invocation {
    model: Option<String>,
    meta: Option<String>,
    meta_system: Option<String>,
    templates: Option<PathBuf>,
    judge: Option<String>,
    constraints: Vec<String>,
    dev_limit: Option<usize>,
    test_limit: Option<usize>,
    /// The starting prompt, when not the task's seed.
    #[serde(default)]
    prompt: Option<PathBuf>,
    /// The prompt's name in the library.
    #[serde(default)]
    name: Option<String>,
}

/// Caps: command line, else the task's `[budget]`, else the defaults.
fn budget(args: &OptimizeArgs, task: &Task) -> Budget {
    let t = &task.config.budget;
    let d = Budget::default();
    Budget {
        max_metric_calls: args
            .max_metric_calls
            .or(t.max_metric_calls)
            .unwrap_or(d.max_metric_calls),
        max_meta_calls: args
            .max_meta_calls
            .or(t.max_meta_calls)
            .unwrap_or(d.max_meta_calls),
        max_meta_cost_usd: args.max_meta_cost.or(t.max_meta_cost_usd),
        max_cost_usd: args.max_cost.or(t.max_cost_usd),
        max_wall_secs: args.max_wall.or(t.max_wall_secs),
    }
}

/// The response cache: the user's, else (when it is off) one inside the run directory, so a
/// resumed run replays the calls it already made.
async fn hub(global: &Global, dir: &Path) -> anyhow::Result<Hub> {
    let config = context::load_config(global)?;
    if context::cache_disabled_by(global, &config).is_none() {
        return context::hub(global).await;
    }
    let cache = ResponseCache::open(&dir.join("calls.sqlite")).await?;
    Ok(context::hub(global).await?.with_cache(Some(cache)))
}

fn default_run_dir(task: &Task, algo: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    task.dir()
        .join("runs")
        .join(format!("{}-{algo}-{secs}", task.config.name))
}

/// Print the projected calls and cost; ask above the threshold.
fn project(
    args: &OptimizeArgs,
    problem: &Problem,
    budget: &Budget,
    settings: &Settings,
    layers: &Layers,
) -> anyhow::Result<()> {
    // Tokens per execution from the seed prompt rendered on a few dev examples (4 chars/token).
    let format = layers.execution.info().format;
    let sample: Vec<usize> = problem
        .dev
        .iter()
        .take(8)
        .filter_map(|e| {
            let mut vars = e.vars.clone();
            vars.remove(&problem.options.output);
            problem
                .seed_prompt
                .render(&vars, format, Some(&problem.options.output))
                .ok()
                .map(|p| match p {
                    metaprompt_llm::Prompt::Text(t) => t.len(),
                    metaprompt_llm::Prompt::Chat(m) => m.iter().map(|m| m.content.len()).sum(),
                })
        })
        .collect();
    let per_call_in = sample.iter().sum::<usize>() as f64 / sample.len().max(1) as f64 / 4.0 * 1.5;
    let metric_calls = budget.max_metric_calls;
    let meta_calls = budget
        .max_meta_calls
        .min(settings.rounds as u64 * u64::from(settings.per_round) * 2);
    let price = |p: &metaprompt_llm::ModelInfo, input: f64, output: f64| {
        p.pricing.map(|pr| {
            pr.cost(&metaprompt_llm::Usage {
                input_tokens: input as u64,
                output_tokens: output as u64,
                cached_input_tokens: None,
            })
        })
    };
    let exec = price(
        layers.execution.info(),
        per_call_in * metric_calls as f64,
        f64::from(problem.options.max_tokens) * metric_calls as f64,
    );
    let meta = price(
        layers.meta.info(),
        2000.0 * meta_calls as f64,
        300.0 * meta_calls as f64,
    );
    let total = exec.zip(meta).map(|(a, b)| a + b);
    eprintln!(
        "projected  ≤ {metric_calls} metric calls, ≤ {meta_calls} meta calls · ≤ {} (execution {}, meta {})",
        format::cost(total),
        format::cost(exec),
        format::cost(meta)
    );
    let above = total.is_none_or(|t| t > args.confirm_above);
    if !above || args.yes {
        return Ok(());
    }
    let what = match total {
        Some(t) => format!(
            "the projected cost {} is above ${}",
            format::cost(Some(t)),
            args.confirm_above
        ),
        None => "the projected cost is unknown (a model has no price)".to_string(),
    };
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{what}; pass --yes to run anyway, or lower the caps");
    }
    eprint!("{what}. Run? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        anyhow::bail!("not started");
    }
    Ok(())
}

fn rationale(o: &Outcome, task: &Task) -> String {
    let mut s = format!(
        "`metaprompt optimize --algo {}` on task {}: ",
        o.algorithm, task.config.name
    );
    if o.kept_seed {
        s.push_str(&format!(
            "the best candidate ({}) was not significantly better than the seed on dev (p = {:.4}), so the seed is kept.",
            o.best, o.dev_test.p_value
        ));
    } else {
        s.push_str(&format!(
            "{} beats the seed on dev by {:+.3} [{:+.3}, {:+.3}] (paired bootstrap p = {:.4}).",
            o.winner, o.dev_test.diff, o.dev_test.low, o.dev_test.high, o.dev_test.p_value
        ));
    }
    if let Some(t) = &o.winner_test {
        s.push_str(&format!(
            " Test: {:.3} [{:.3}, {:.3}] (n = {}).",
            t.mean, t.low, t.high, t.n
        ));
    }
    s
}

fn print_outcome(o: &Outcome, problem: &Problem) {
    outln!(
        "stopped    {} after round {}",
        o.stop.describe(),
        o.rounds.last().map_or(0, |r| r.round)
    );
    outln!(
        "           dev ({})                  test ({})",
        problem.dev.len(),
        problem.test.len()
    );
    let show = |e: &Option<metaprompt_eval::stats::Estimate>| match e {
        Some(e) => format!("{:.3} [{:.3}, {:.3}]", e.mean, e.low, e.high),
        None => "–".to_string(),
    };
    outln!(
        "seed  p0   {:<26} {}",
        show(&Some(o.seed_dev)),
        show(&o.seed_test)
    );
    let kept_dev = if o.kept_seed {
        &o.seed_dev
    } else {
        &o.best_dev
    };
    outln!(
        "kept  {:<4} {:<26} {}",
        o.winner,
        show(&Some(*kept_dev)),
        show(&o.winner_test)
    );
    let d = &o.dev_test;
    if o.kept_seed {
        outln!(
            "verdict    the seed is kept: the best candidate {} is not significantly better on dev ({:+.3} [{:+.3}, {:+.3}], p = {:.4})",
            o.best,
            d.diff,
            d.low,
            d.high,
            d.p_value
        );
    } else {
        outln!(
            "verdict    {} beats the seed on dev: {:+.3} [{:+.3}, {:+.3}], paired bootstrap p = {:.4}",
            o.winner,
            d.diff,
            d.low,
            d.high,
            d.p_value
        );
    }
    if let Some(t) = &o.test_paired {
        outln!(
            "test       {:+.3} [{:+.3}, {:+.3}], p = {:.4} (scored once, at the end)",
            t.diff,
            t.low,
            t.high,
            t.p_value
        );
    }
    outln!(
        "calls      metric {} (racing saved {}), meta {} · {} candidates, {} rejected · wall {}",
        o.metric_calls,
        o.saved_calls,
        o.meta_calls,
        o.pool.len(),
        o.rejected.len(),
        format::duration(run_duration(o.wall_secs))
    );
    outln!(
        "cost       meta {} · execution {}",
        format::cost(o.meta_usage.cost_usd),
        format::cost(o.execution_usage.cost_usd)
    );
}

fn run_duration(secs: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(secs.max(0.0))
}
