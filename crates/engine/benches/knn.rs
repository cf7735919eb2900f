//! Fixed demonstrations against per-input nearest-neighbour ones, on the embedded model.
//!
//! For each task: the few-shot prompt its `prompts/human.toml` names (the seed of the
//! small-budget table), and the same prompt with as many demonstrations picked per test input
//! from a pool of the training split (`[selector] kind = "knn"`), once by the model's own
//! embeddings and once by words. All three are scored on the same test examples; each kNN
//! variant is compared with the fixed set by the paired bootstrap. Also printed: the wall time
//! of each evaluation (the kNN ones include embedding the pool and the inputs).
//!
//! `cargo bench -p metaprompt-engine --bench knn -- [--test N] [--model SPEC] [TASK …]`
//! (default: sst2 trec agnews, 100 test examples, the task's execution model).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use metaprompt_engine::{Engine, EngineOptions};
use metaprompt_eval::select::{Embedding, Selector};
use metaprompt_eval::stats::paired_bootstrap;
use metaprompt_eval::{EvalOptions, PromptFile, Scorer, Task, evaluator};
use metaprompt_llm::Config;
use metaprompt_optimize::{Brief, Frame};

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
    let n_test: usize = arg(&args, "--test").map_or(100, |s| s.parse().unwrap());
    let model_spec = arg(&args, "--model");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut names: Vec<String> = Vec::new();
    let mut skip = false;
    for a in &args {
        if skip {
            skip = false;
            continue;
        }
        if a.starts_with("--") {
            skip = true;
            continue;
        }
        names.push(a.clone());
    }
    if names.is_empty() {
        names = ["sst2", "trec", "agnews"].map(String::from).to_vec();
    }
    let engine = Engine::open(EngineOptions {
        config: Config::default(),
        cache: None,
        library: None,
        author: "bench".into(),
    })
    .await
    .unwrap();
    println!("| task | prompt | test ({n_test}) | vs fixed [95% CI], p | wall |");
    println!("|---|---|---|---|---|");
    for name in names {
        let dir = root.join("examples").join(&name);
        let task = Task::load(&dir.join("task.toml")).unwrap();
        let human = std::fs::read_to_string(dir.join("prompts/human.toml")).unwrap();
        let seed_file = human
            .split("same demonstrations as ")
            .nth(1)
            .and_then(|r| r.split(".toml").next())
            .map(|s| format!("{s}.toml"))
            .expect("human.toml names its few-shot prompt");
        let fixed = PromptFile::load(&dir.join("prompts").join(&seed_file)).unwrap();
        let spec = model_spec
            .clone()
            .unwrap_or_else(|| task.config.models.execution.clone());
        let exec = engine.hub().model(&spec).unwrap();
        let brief = Brief::from_task(&task);
        let train = task.examples("train").unwrap();
        let test: Vec<_> = task
            .examples("test")
            .unwrap()
            .into_iter()
            .take(n_test)
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
        let pool = Frame::fresh(&brief).with_demos(&brief, &train).demos;
        let knn = |embed: Embedding| {
            let mut p = fixed.clone();
            p.selector = Some(Selector::knn(fixed.demos.len(), embed));
            p.pool = pool.clone();
            p.demos.clear();
            p.validate().unwrap();
            p
        };
        let variants = [
            (format!("fixed ({seed_file})"), fixed.clone()),
            (
                format!("knn k={} by the model's embeddings", fixed.demos.len()),
                knn(Embedding::Model),
            ),
            (
                format!("knn k={} by words", fixed.demos.len()),
                knn(Embedding::Words),
            ),
        ];
        let mut base: Option<Vec<f64>> = None;
        for (label, prompt) in variants {
            let started = Instant::now();
            let report = evaluator::evaluate(&prompt, &exec, &scorer, &test, &options, &|_, _| {})
                .await
                .unwrap();
            let wall = started.elapsed().as_secs_f64();
            let scores: Vec<f64> = report
                .results
                .iter()
                .map(|r| r.score.unwrap_or(0.0))
                .collect();
            let versus = match &base {
                None => String::new(),
                Some(b) => {
                    let t = paired_bootstrap(b, &scores, 7);
                    format!(
                        "{:+.3} [{:+.3}, {:+.3}], p = {:.4}",
                        t.diff, t.low, t.high, t.p_value
                    )
                }
            };
            println!(
                "| {} | {label} (pool {}) | {:.3} | {versus} | {wall:.0} s |",
                task.config.name,
                pool.len(),
                report.summary.score.mean
            );
            if base.is_none() {
                base = Some(scores);
            }
        }
    }
}
