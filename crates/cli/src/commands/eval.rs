//! `metaprompt eval` and `metaprompt compare`.

use crate::format::outln;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metaprompt_eval::evaluator::{self, Comparison};
use metaprompt_eval::metric::MetricKind;
use metaprompt_eval::{EvalOptions, Example, PromptFile, Report, Scorer, Summary, Task};
use metaprompt_llm::{Hub, Provider};

use crate::args::{CompareArgs, EvalArgs, EvalScope, Global};
use crate::{context, format};

/// Seed of the bootstrap resampling: fixed, so a report reproduces.
const BOOTSTRAP_SEED: u64 = 0x5EED;

struct Setup {
    task: Task,
    model: Arc<dyn Provider>,
    scorer: Scorer,
    examples: Vec<Example>,
    options: EvalOptions,
    hub: Hub,
}

async fn setup(global: &Global, scope: &EvalScope) -> anyhow::Result<Setup> {
    let task = Task::load(&scope.task)?;
    let hub = context::hub(global).await?;
    let model = hub.model(
        scope
            .model
            .as_deref()
            .unwrap_or(&task.config.models.execution),
    )?;
    let scorer = scorer(&task, &hub)?;
    let examples = examples(&task, &scope.split, scope.limit, scope.sample_seed)?;
    let options = options(&task);
    Ok(Setup {
        task,
        model,
        scorer,
        examples,
        options,
        hub,
    })
}

/// The task's metrics, with a judge model opened only when a metric needs one (it may be a
/// hosted model needing a key).
pub fn scorer(task: &Task, hub: &Hub) -> anyhow::Result<Scorer> {
    let needs_judge = task
        .config
        .metrics
        .iter()
        .any(|m| m.kind() == MetricKind::LlmRubric);
    let judge = if needs_judge {
        let spec = task
            .config
            .metrics
            .iter()
            .find_map(|m| m.judge_model().map(str::to_owned))
            .unwrap_or_else(|| task.config.models.meta.clone());
        Some(hub.model(&spec)?)
    } else {
        None
    };
    Scorer::new(&task.config.metrics, judge)
        .map_err(|e| anyhow::anyhow!("{}: {e}", task.path.display()))
}

/// The examples of `split` (the first `limit`, or a seeded sample of them); an empty split is an
/// error.
pub fn examples(
    task: &Task,
    split: &str,
    limit: Option<usize>,
    sample_seed: Option<u64>,
) -> anyhow::Result<Vec<Example>> {
    let examples = metaprompt_eval::dataset::take(task.examples(split)?, limit, sample_seed);
    if examples.is_empty() {
        anyhow::bail!("{}: split `{split}` has no examples", task.path.display());
    }
    Ok(examples)
}

/// How the task's execution model is called.
pub fn options(task: &Task) -> EvalOptions {
    EvalOptions {
        temperature: task.config.models.execution_temperature,
        max_tokens: task.config.models.max_tokens,
        stop: task.config.models.stop.clone(),
        output: task.config.output.clone(),
        seed: BOOTSTRAP_SEED,
    }
}

fn bar(total: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} examples, {elapsed} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    bar
}

async fn run_one(s: &Setup, prompt: &PromptFile) -> anyhow::Result<Report> {
    let progress = bar(s.examples.len(), &prompt.name);
    let report = evaluator::evaluate(
        prompt,
        &s.model,
        &s.scorer,
        &s.examples,
        &s.options,
        &|done, _| progress.set_position(done as u64),
    )
    .await?;
    progress.finish_and_clear();
    Ok(report)
}

fn load_prompt(path: &Path) -> anyhow::Result<PromptFile> {
    Ok(PromptFile::load(path)?)
}

pub async fn run(global: &Global, args: EvalArgs) -> anyhow::Result<()> {
    let s = setup(global, &args.scope).await?;
    let prompt = match &args.prompt {
        Some(p) => load_prompt(p)?,
        None => s.task.seed_prompt.clone(),
    };
    let report = run_one(&s, &prompt).await?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&s.task, &prompt, &args.scope.split));
    report
        .write_jsonl(&out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    close(&s.hub).await;
    if args.scope.json {
        outln!("{}", serde_json::to_string_pretty(&report.summary)?);
        return Ok(());
    }
    print_summary(&s.task, &args.scope.split, &report.summary);
    outln!("results   {}", out.display());
    if report.summary.errors > 0 {
        outln!(
            "warning   {} examples failed (scored 0); see `error` in the results",
            report.summary.errors
        );
    }
    Ok(())
}

pub async fn compare(global: &Global, args: CompareArgs) -> anyhow::Result<()> {
    let s = setup(global, &args.scope).await?;
    let a = load_prompt(&args.a)?;
    let b = load_prompt(&args.b)?;
    let ra = run_one(&s, &a).await?;
    let rb = run_one(&s, &b).await?;
    close(&s.hub).await;
    let c = evaluator::compare(&ra, &rb, BOOTSTRAP_SEED);
    if args.scope.json {
        outln!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    outln!("A: {}", args.a.display());
    print_summary(&s.task, &args.scope.split, &c.a);
    outln!("B: {}", args.b.display());
    print_summary(&s.task, &args.scope.split, &c.b);
    print_comparison(&c);
    Ok(())
}

pub async fn close(hub: &Hub) {
    if let Some(cache) = hub.cache() {
        cache.close().await;
    }
}

pub fn default_out(task: &Task, prompt: &PromptFile, split: &str) -> PathBuf {
    let name: String = prompt
        .name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    task.dir()
        .join("results")
        .join(format!("{name}.{split}.jsonl"))
}

pub fn print_summary(task: &Task, split: &str, s: &Summary) {
    outln!(
        "{} · prompt {} · {} · {split}, {} examples ({})",
        task.config.name,
        s.prompt,
        s.model,
        s.examples,
        s.mode
    );
    outln!(
        "score     {:.3}  95% CI [{:.3}, {:.3}]   pass rate {:.1}%",
        s.score.mean,
        s.score.low,
        s.score.high,
        100.0 * s.pass_rate
    );
    outln!(
        "tokens    {} in / {} out · {} of {} from cache",
        s.usage.input_tokens,
        s.usage.output_tokens,
        s.cached,
        s.examples
    );
    outln!(
        "cost      {} · wall {} · errors {}",
        format::cost(s.cost_usd),
        format::duration(s.wall),
        s.errors
    );
}

pub fn print_comparison(c: &Comparison) {
    let p = &c.paired;
    let m = &c.mcnemar;
    outln!(
        "B - A     {:+.3}  95% CI [{:+.3}, {:+.3}]  paired bootstrap p = {:.4}",
        p.diff,
        p.low,
        p.high,
        p.p_value
    );
    outln!(
        "McNemar   only A passed: {}, only B passed: {}, exact p = {:.4}",
        m.only_a,
        m.only_b,
        m.p_value
    );
    let verdict = if p.p_value < 0.05 && p.low > 0.0 {
        "B is significantly better than A (p < 0.05)"
    } else if p.p_value < 0.05 && p.high < 0.0 {
        "B is significantly worse than A (p < 0.05)"
    } else {
        "no significant difference between A and B at p < 0.05"
    };
    outln!("verdict   {verdict}");
}
