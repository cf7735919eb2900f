//! `metaprompt eval` and `metaprompt compare`.
//!
//! A prompt with no example scored has no score: the summary says so and why (the first
//! error) instead of printing a score of 0, and the command fails unless `--max-unscored`
//! allows every example to go unscored.

use crate::format::outln;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use metaprompt_engine::{CompareRequest, EvalRequest, Progress, Scope};
use metaprompt_eval::Summary;
use metaprompt_eval::evaluator::{Comparison, shorten};

use crate::args::{CompareArgs, EvalArgs, EvalScope, Global};
use crate::{context, format};

/// Seed of the bootstrap resampling: fixed, so a report reproduces.
/// One progress bar per prompt being scored.
#[derive(Debug, Default)]
struct Bars {
    bar: Option<(String, ProgressBar)>,
}

impl Bars {
    fn event(&mut self, p: Progress) {
        match p {
            Progress::Evaluating { label, done, total } => {
                if self.bar.as_ref().is_none_or(|(l, _)| *l != label) {
                    self.clear();
                    self.bar = Some((label.clone(), bar(total, &label)));
                }
                if let Some((_, b)) = &self.bar {
                    b.set_position(done as u64);
                }
            }
            Progress::Evaluated { .. } => self.clear(),
            _ => {}
        }
    }

    fn clear(&mut self) {
        if let Some((_, b)) = self.bar.take() {
            b.finish_and_clear();
        }
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

fn scope(s: &EvalScope) -> Scope {
    Scope {
        task: s.task.clone(),
        model: s.model.clone(),
        split: s.split.clone(),
        limit: s.limit,
        sample_seed: s.sample_seed,
    }
}

pub async fn run(global: &Global, args: EvalArgs) -> anyhow::Result<()> {
    let engine = context::engine(global).await?;
    let request = EvalRequest {
        scope: scope(&args.scope),
        prompt: args.prompt.clone(),
        out: args.out.clone(),
    };
    let mut bars = Bars::default();
    let result = engine.eval(request).drive(|p| bars.event(p)).await;
    bars.clear();
    engine.close().await;
    let result = result?;
    let summary = &result.report.summary;
    if args.scope.json {
        outln!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        print_summary(&result.task, &result.split, summary);
        outln!("results   {}", result.out.display());
    }
    let reasons = reasons(
        result
            .report
            .results
            .iter()
            .filter_map(|r| r.error.as_deref()),
    );
    unscored_check(summary, args.scope.max_unscored, &reasons, &result.out)
}

/// The most common reasons examples went unscored, with counts.
fn reasons<'a>(errors: impl Iterator<Item = &'a str>) -> Vec<(usize, String)> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for e in errors {
        *counts.entry(shorten(e, 160)).or_default() += 1;
    }
    let mut v: Vec<(usize, String)> = counts.into_iter().map(|(r, n)| (n, r)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v.truncate(3);
    v
}

/// Unscored examples are left out of the score, never counted as zeros; past `allowed` the
/// command fails, saying how many and why, so a broken endpoint is never a quiet low score.
fn unscored_check(
    s: &Summary,
    allowed: usize,
    reasons: &[(usize, String)],
    out: &std::path::Path,
) -> anyhow::Result<()> {
    if s.errors <= allowed {
        return Ok(());
    }
    if s.scored() == 0 {
        anyhow::bail!(
            "no example of `{}` was scored ({} of {} unscored): {}; see `error` in {} (or allow some with --max-unscored N)",
            s.prompt,
            s.errors,
            s.examples,
            shorten(
                s.first_error.as_deref().unwrap_or("no reason was recorded"),
                240
            ),
            out.display()
        );
    }
    let why: Vec<String> = reasons.iter().map(|(n, r)| format!("{n} × {r}")).collect();
    anyhow::bail!(
        "{} of {} examples of `{}` are unscored (left out of the score above){}; see `error` in {} (or allow some with --max-unscored N)",
        s.errors,
        s.examples,
        s.prompt,
        if why.is_empty() {
            String::new()
        } else {
            format!(": {}", why.join("; "))
        },
        out.display()
    )
}

pub async fn compare(global: &Global, args: CompareArgs) -> anyhow::Result<()> {
    let engine = context::engine(global).await?;
    let request = CompareRequest {
        scope: scope(&args.scope),
        a: args.a.clone(),
        b: args.b.clone(),
    };
    let mut bars = Bars::default();
    let result = engine.compare(request).drive(|p| bars.event(p)).await;
    bars.clear();
    engine.close().await;
    let result = result?;
    let c = &result.comparison;
    if args.scope.json {
        outln!("{}", serde_json::to_string_pretty(c)?);
    } else {
        outln!("A: {}", args.a.display());
        print_summary(&result.task, &result.split, &c.a);
        outln!("B: {}", args.b.display());
        print_summary(&result.task, &result.split, &c.b);
        if c.pairs > 0 {
            print_comparison(c);
        } else {
            outln!("B - A     no example was scored for both A and B: nothing to compare");
        }
    }
    let unscored = c.a.errors + c.b.errors;
    if unscored > args.scope.max_unscored {
        for (side, s) in [("A", &c.a), ("B", &c.b)] {
            if s.scored() == 0 && s.examples > 0 {
                anyhow::bail!(
                    "no example of {side} (`{}`) was scored, so there is nothing to compare: {} (allow unscored examples with --max-unscored N)",
                    s.prompt,
                    shorten(
                        s.first_error.as_deref().unwrap_or("no reason was recorded"),
                        240
                    )
                );
            }
        }
        anyhow::bail!(
            "{unscored} examples are unscored ({} for A, {} for B) and left out of the comparison (allow some with --max-unscored N)",
            c.a.errors,
            c.b.errors
        );
    }
    Ok(())
}

pub fn print_summary(task: &str, split: &str, s: &Summary) {
    outln!(
        "{} · prompt {} · {} · {split}, {} examples ({})",
        task,
        s.prompt,
        s.model,
        s.examples,
        s.mode
    );
    if s.scored() == 0 {
        outln!(
            "score     none: no example was scored ({} unscored){}",
            s.errors,
            s.first_error
                .as_deref()
                .map(|e| format!("; the first: {}", shorten(e, 200)))
                .unwrap_or_default()
        );
    } else {
        outln!(
            "score     {:.3}  95% CI [{:.3}, {:.3}]   pass rate {:.1}%",
            s.score.mean,
            s.score.low,
            s.score.high,
            100.0 * s.pass_rate
        );
    }
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
    if c.unpaired > 0 {
        outln!(
            "paired    on {} examples; {} unscored for A or B are left out",
            c.pairs,
            c.unpaired
        );
    }
    let verdict = if p.p_value < 0.05 && p.low > 0.0 {
        "B is significantly better than A (p < 0.05)"
    } else if p.p_value < 0.05 && p.high < 0.0 {
        "B is significantly worse than A (p < 0.05)"
    } else {
        "no significant difference between A and B at p < 0.05"
    };
    outln!("verdict   {verdict}");
}
