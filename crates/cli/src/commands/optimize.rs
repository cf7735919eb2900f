//! `metaprompt optimize`: the budgeted loop, with checkpoints, resume and reports.

use std::io::IsTerminal as _;

use metaprompt_engine::{BudgetRequest, EngineError, OptimizeRequest, OptimizeResult, Projection};
use metaprompt_optimize::run::{Outcome, RunError};

use crate::args::{Global, OptimizeArgs};
use crate::commands::library;
use crate::commands::meta::{self, Console};
use crate::context;
use crate::format::{self, outln};

pub async fn run(global: &Global, args: OptimizeArgs) -> anyhow::Result<()> {
    let engine = context::engine(global).await?;
    let prepared = match (&args.resume, &args.task) {
        (Some(dir), _) => engine.resume(dir).await,
        (None, Some(task)) => engine.optimize(request(&args, task)?).await,
        (None, None) => anyhow::bail!("give a task file, or --resume RUN_DIR"),
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            engine.close().await;
            return Err(hint(e));
        }
    };
    if !prepared.resumed() {
        confirm(&args, prepared.projection())?;
    }
    eprintln!("{}", prepared.header());
    let console = Console::new(args.meta.json);
    let handle = prepared.start();
    // Ctrl-C stops at the next safe point, leaving a checkpoint that resumes.
    let canceller = handle.canceller();
    let signal = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("· stopping at the next safe point (Ctrl-C again to quit now)");
            canceller.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let result = handle.drive(|p| console.event(p)).await;
    signal.abort();
    engine.close().await;
    let result = result.map_err(hint)?;
    let o = &result.outcome;
    if args.meta.json {
        outln!("{}", serde_json::to_string_pretty(o)?);
        library::print_stored(&result.stored, true);
        return test_unscored_check(&result, args.max_unscored);
    }
    print_outcome(o, result.dev_examples, result.test_examples);
    outln!("prompt     {}", result.prompt_path.display());
    outln!("report     {}", result.report_html.display());
    outln!(
        "run        {} (checkpoint.json, report.json, calls.jsonl)",
        result.run_dir.display()
    );
    library::print_stored(&result.stored, false);
    test_unscored_check(&result, args.max_unscored)
}

/// Test examples left unscored are left out of the test score, never counted as zeros; past
/// `allowed` the command fails (the run's files and library entry are kept), saying how many
/// and why, so a broken endpoint is never a quiet test score.
fn test_unscored_check(result: &OptimizeResult, allowed: u64) -> anyhow::Result<()> {
    let o = &result.outcome;
    let u = &o.test_unscored;
    if u.count <= allowed {
        return Ok(());
    }
    let prompts = if o.kept_seed { 1 } else { 2 };
    let why: Vec<String> = u
        .reasons
        .iter()
        .take(3)
        .map(|r| format!("{} × {}", r.count, r.reason))
        .collect();
    anyhow::bail!(
        "{} of {} test scores ({} on {} test examples) are unscored (left out of the test score above){}; see report.json in {} (or allow some with --max-unscored N)",
        u.count,
        prompts * result.test_examples as u64,
        if o.kept_seed {
            format!("the seed {}", o.winner)
        } else {
            format!("the seed and {}", o.winner)
        },
        result.test_examples,
        if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join("; "))
        },
        result.run_dir.display()
    )
}

/// The engine's errors, with the command-line flags that address them.
fn hint(e: EngineError) -> anyhow::Error {
    let extra = match &e {
        EngineError::Run(RunError::BudgetTooSmall { .. }) => {
            Some("raise --max-metric-calls, or lower --dev-limit / --test-limit".to_string())
        }
        EngineError::Run(RunError::Unscored { .. }) => Some(
            "fix the cause (or allow more with --unscored-rate), then continue with `metaprompt optimize --resume RUN_DIR`".to_string(),
        ),
        EngineError::Cancelled { resume: Some(dir) } => Some(format!(
            "continue with `metaprompt optimize --resume {}`",
            dir.display()
        )),
        _ => None,
    };
    match extra {
        // These errors have no cause to chain: the hint joins the message.
        Some(h) => anyhow::anyhow!("{e}; {h}"),
        None => e.into(),
    }
}

/// The engine's request from the command line.
fn request(args: &OptimizeArgs, task: &std::path::Path) -> anyhow::Result<OptimizeRequest> {
    Ok(OptimizeRequest {
        task: task.to_path_buf(),
        algorithm: args.algo.clone(),
        prompt: args.prompt.clone(),
        name: args.name.clone(),
        model: args.model.clone(),
        meta: meta::options(&args.meta)?,
        budget: BudgetRequest {
            max_metric_calls: args.max_metric_calls,
            max_meta_calls: args.max_meta_calls,
            max_meta_tokens: args.max_meta_tokens,
            max_meta_cost_usd: args.max_meta_cost,
            max_cost_usd: args.max_cost,
            max_wall_secs: args.max_wall,
        },
        dev_limit: args.dev_limit,
        test_limit: args.test_limit,
        hold_out: args.hold_out,
        max_unscored: args.unscored_rate,
        max_prompt_tokens: args.max_prompt_tokens,
        rounds: args.rounds,
        patience: args.patience,
        per_round: args.per_round,
        minibatch: args.minibatch,
        demos: args.demos,
        explore: args.explore,
        proxy: args.proxy,
        no_worked: args.no_worked,
        exploit: args.exploit,
        run_dir: args.run_dir.clone(),
        store: true,
    })
}

/// Print the projected calls and cost; ask above the threshold.
fn confirm(args: &OptimizeArgs, p: &Projection) -> anyhow::Result<()> {
    let meta = match p.meta_tokens {
        Some(t) => format!("≤ {t} meta tokens"),
        None => format!("≤ {} meta calls", p.meta_calls),
    };
    eprintln!(
        "projected  ≤ {} metric calls for the search{} + {} for the final test, {meta} · ≤ {} (execution {}, meta {})",
        p.metric_calls,
        if p.confirm_calls > 0 {
            format!(" + ≤ {} for the held-out confirmation", p.confirm_calls)
        } else {
            String::new()
        },
        p.test_calls,
        format::cost(p.total_usd),
        format::cost(p.execution_usd),
        format::cost(p.meta_usd)
    );
    let above = p.total_usd.is_none_or(|t| t > args.confirm_above);
    if !above || args.yes {
        return Ok(());
    }
    let what = match p.total_usd {
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

fn print_outcome(o: &Outcome, dev: usize, test: usize) {
    outln!(
        "stopped    {} after round {}",
        o.stop.describe(),
        o.rounds.last().map_or(0, |r| r.round)
    );
    outln!("           dev ({})                  test ({})", dev, test);
    let show = |e: &Option<metaprompt_eval::stats::Estimate>| match e {
        // No example scored: no score (the unscored line below says why).
        Some(e) if e.n == 0 => "none scored".to_string(),
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
    outln!("verdict    {}", o.verdict());
    let tokens = |t: Option<u64>| t.map_or("?".to_string(), |t| format!("~{t}"));
    outln!(
        "length     the prompt's own tokens: seed {}, kept {} (estimated; each execution pays them beside its example)",
        tokens(o.seed_tokens),
        tokens(o.winner_tokens)
    );
    if let Some(c) = o.convergence() {
        outln!("curve      {c}");
    }
    if let Some(b) = &o.break_even {
        outln!("break-even {}", b.describe());
    }
    if let Some(c) = &o.confirm {
        outln!(
            "held out   seed {} · best {} {} on {} dev examples the search never saw",
            show(&Some(c.seed)),
            o.best,
            show(&Some(c.best)),
            c.paired.n
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
        "calls      metric {} for the search (racing saved {}){} + {} for the test, meta {} · {} {}, {} rejected · wall {}",
        o.metric_calls,
        o.saved_calls,
        if o.confirm_calls > 0 {
            format!(" + {} for the held-out confirmation", o.confirm_calls)
        } else {
            String::new()
        },
        o.test_calls,
        o.meta_calls,
        o.pool.len(),
        if o.pool.len() == 1 {
            "candidate"
        } else {
            "candidates"
        },
        o.rejected.len(),
        format::duration(run_duration(o.wall_secs))
    );
    if let Some(junk) = o.screened.summary() {
        outln!("screened   meta-written instructions: {junk} before evaluation");
    }
    if o.proxy_calls > 0 {
        let ranked = o.pool.iter().filter(|e| e.proxy.is_some()).count();
        outln!(
            "proxy      {ranked} candidates ranked by the execution model's likelihood of the expected outputs ({} scoring calls) before racing",
            o.proxy_calls
        );
    }
    for (what, u) in [("dev", &o.unscored), ("test", &o.test_unscored)] {
        if u.count > 0 {
            let why: Vec<String> = u
                .reasons
                .iter()
                .take(3)
                .map(|r| format!("{} × {}", r.count, r.reason))
                .collect();
            outln!(
                "unscored   {} {what} pairs left out of every comparison: {}",
                u.count,
                why.join("; ")
            );
        }
    }
    outln!(
        "cost       meta {} · execution {}",
        format::cost(o.meta_usage.cost_usd),
        format::cost(o.execution_usage.cost_usd)
    );
}

fn run_duration(secs: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(secs.max(0.0))
}
