//! The projected calls and cost of a run, known before anything is spent.

use metaprompt_llm::{ModelInfo, Usage};
use metaprompt_optimize::Layers;
use metaprompt_optimize::run::{Budget, Problem, Settings};

use super::*;

/// The projected calls and cost: tokens per execution from the seed prompt rendered on a few
/// dev examples (4 characters a token, 1.5x for safety), the caps as call counts.
pub(super) fn project(
    problem: &Problem,
    budget: &Budget,
    settings: &Settings,
    layers: &Layers,
) -> Projection {
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
                .longest()
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
    let test_calls = 2 * problem.test.len() as u64;
    let confirm_calls = 2 * problem.confirm.len() as u64;
    let executions = (metric_calls + test_calls + confirm_calls) as f64;
    let meta_calls = budget
        .max_meta_calls
        .min(settings.rounds as u64 * u64::from(settings.per_round) * 2);
    let price = |p: &ModelInfo, input: f64, output: f64| {
        p.pricing.map(|pr| {
            pr.cost(&Usage {
                input_tokens: input as u64,
                output_tokens: output as u64,
                cached_input_tokens: None,
            })
        })
    };
    let execution_usd = price(
        layers.execution.info(),
        per_call_in * executions,
        f64::from(problem.options.max_tokens) * executions,
    );
    let meta_usd = price(
        layers.meta.info(),
        2000.0 * meta_calls as f64,
        300.0 * meta_calls as f64,
    );
    Projection {
        metric_calls,
        test_calls,
        confirm_calls,
        meta_calls,
        meta_tokens: budget.max_meta_tokens,
        execution_usd,
        meta_usd,
        total_usd: execution_usd.zip(meta_usd).map(|(a, b)| a + b),
    }
}
