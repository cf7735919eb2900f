//! How well the cheap signals of instruction search work on the embedded models: the junk
//! screen's rejection rate, and the rank correlation of the likelihood proxy with the metric.
//!
//! For each task, the meta model is asked for instructions with `ape`'s induction meta-prompt
//! (the same template, one 5-example train subset per sample, as `--algo ape` does) at
//! temperature 0.9. Each answer goes through the junk screen; each survivor is put in the
//! seed prompt's frame and measured twice: the likelihood proxy (the execution model's mean
//! log-probability of the expected outputs on the first 8 train examples) and the task's metric
//! on the first `--dev` dev examples. Printed per task: answers, rejected by reason, the
//! survivors' proxy and metric, Spearman's ρ between the two, and how often the proxy's top
//! half holds the metric's best.
//!
//! `cargo bench -p metaprompt-engine --bench proxy -- [--meta SPEC] [--samples N] [--dev N]
//! [TASK.toml …]` (default: the SST-2, TREC and AG News examples, Gemma as both models, 16
//! samples, 40 dev examples).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use metaprompt_engine::{Engine, EngineOptions};
use metaprompt_eval::{EvalOptions, Scorer, Task, evaluator};
use metaprompt_llm::Config;
use metaprompt_optimize::junk::{Junk, Screen};
use metaprompt_optimize::proxy::{PROXY_EXAMPLES, likelihood, spearman};
use metaprompt_optimize::{Brief, Frame, MetaPrompts, candidate};
use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let meta_spec = arg(&args, "--meta").unwrap_or_else(|| "local:gemma-3-270m".into());
    let samples: u32 = arg(&args, "--samples").map_or(16, |s| s.parse().unwrap());
    let n_dev: usize = arg(&args, "--dev").map_or(40, |s| s.parse().unwrap());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut tasks: Vec<PathBuf> = args
        .iter()
        .filter(|a| a.ends_with(".toml"))
        .map(PathBuf::from)
        .collect();
    if tasks.is_empty() {
        tasks = ["sst2", "trec", "agnews"]
            .iter()
            .map(|t| root.join("examples").join(t).join("task.toml"))
            .collect();
    }
    let engine = Engine::open(EngineOptions {
        config: Config::default(),
        cache: None,
        library: None,
        author: "bench".into(),
    })
    .await
    .unwrap();
    let meta = engine.hub().model(&meta_spec).unwrap();
    let prompts = MetaPrompts::builtin();
    println!(
        "meta {meta_spec} · {samples} samples per task · proxy on {PROXY_EXAMPLES} train examples · metric on {n_dev} dev examples"
    );
    for path in tasks {
        let started = Instant::now();
        let task = Task::load(&path).unwrap();
        let exec = engine.hub().model(&task.config.models.execution).unwrap();
        let brief = Brief::from_task(&task);
        let frame = Frame::of(&task.seed_prompt, &brief);
        let train = task.examples("train").unwrap();
        let dev: Vec<_> = task
            .examples("dev")
            .unwrap()
            .into_iter()
            .take(n_dev)
            .collect();
        let scorer = Scorer::new(&task.config.metrics, None).unwrap();
        let options = EvalOptions {
            temperature: 0.0,
            max_tokens: task.config.models.max_tokens,
            stop: task.config.models.stop.clone(),
            output: task.config.output.clone(),
            seed: 1,
            answer_after: None,
        };
        let screen = Screen::new(
            &brief,
            &task.seed_prompt,
            &train.iter().chain(&dev).collect::<Vec<_>>(),
        );
        let mut rejected: std::collections::BTreeMap<Junk, u64> = Default::default();
        let mut survivors: Vec<(String, f64, f64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for k in 0..samples {
            let shown: Vec<_> =
                metaprompt_optimize::brief::pick_demos(&brief, &train, 5, u64::from(k) + 7)
                    .iter()
                    .map(|e| brief.show(e))
                    .collect();
            let vars =
                json!({"task": brief, "examples": shown, "constraints": Vec::<String>::new()});
            let answers = prompts
                .sample(&meta, "ape", &vars, 0.9, 1000 + u64::from(k), 1)
                .await
                .unwrap();
            for a in answers.into_iter().flatten() {
                let (instruction, _) = candidate::instruction_from(&a);
                if let Some(j) = screen.check(&instruction) {
                    *rejected.entry(j).or_default() += 1;
                    continue;
                }
                if !seen.insert(instruction.clone()) {
                    continue;
                }
                let prompt = frame.prompt(&task.seed_prompt.name, &instruction, &[]);
                let proxy = likelihood(&exec, &prompt, &train[..PROXY_EXAMPLES], &options.output)
                    .await
                    .unwrap();
                let report =
                    evaluator::evaluate(&prompt, &exec, &scorer, &dev, &options, &|_, _| {})
                        .await
                        .unwrap();
                survivors.push((instruction, proxy, report.summary.score.mean));
            }
        }
        println!(
            "\n{} ({:.0} s)",
            task.config.name,
            started.elapsed().as_secs_f64()
        );
        let n_rejected: u64 = rejected.values().sum();
        println!(
            "  junk screen: {n_rejected} of {samples} answers rejected ({:.0}%): {}",
            100.0 * n_rejected as f64 / f64::from(samples),
            rejected
                .iter()
                .map(|(j, n)| format!("{n} {}", j.describe().trim_start_matches("junk: ")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut by_proxy = survivors.clone();
        by_proxy.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (instruction, proxy, metric) in &by_proxy {
            let short: String = instruction.chars().take(70).collect();
            println!("  proxy {proxy:>8.3}  metric {metric:.3}  {short:?}");
        }
        let proxies: Vec<f64> = survivors.iter().map(|s| s.1).collect();
        let metrics: Vec<f64> = survivors.iter().map(|s| s.2).collect();
        match spearman(&proxies, &metrics) {
            Some(rho) => println!(
                "  Spearman ρ(proxy, metric) = {rho:+.3} over {} distinct survivors",
                survivors.len()
            ),
            None => println!("  Spearman ρ undefined ({} survivors)", survivors.len()),
        }
        if !by_proxy.is_empty() {
            let best = metrics.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let top = &by_proxy[..by_proxy.len().div_ceil(2)];
            let kept_best = top.iter().any(|s| s.2 >= best);
            let top_mean = top.iter().map(|s| s.2).sum::<f64>() / top.len() as f64;
            let all_mean = metrics.iter().sum::<f64>() / metrics.len() as f64;
            println!(
                "  proxy's top half: metric mean {top_mean:.3} vs {all_mean:.3} for all survivors; holds the best ({best:.3}): {kept_best}"
            );
        }
    }
}
