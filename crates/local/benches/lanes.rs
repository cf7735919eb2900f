//! Generation one request at a time against several at once (lanes), side by side in one run:
//! GSM8K test questions with the example task's two worked demonstrations, greedy, up to
//! `--max-tokens` tokens (default 128), stopping at a blank line.
//!
//!     cargo bench -p metaprompt-local --bench lanes [-- N] [--model NAME] [--max-tokens T] [--lanes W]
//!
//! Prints examples/s and generated tokens/s for both paths (W lanes, default 8) and their
//! ratio; checks the lanes' promise (see `lanes` in the crate): the same batch in another order
//! gives the same texts; counts the texts that agree with the one-at-a-time path and gives
//! both paths' accuracy (the number after `####` against the reference). Data: `../shared/benchmarks/gsm8k` (or
//! `$METAPROMPT_BENCHMARKS`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use metaprompt_llm::{Config, Request, Response};
use metaprompt_local::{LocalModels, Strategy};

const DEMOS: &str = "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?\nAnswer: Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72\n\nQuestion: Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?\nAnswer: Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10\n\n";

fn questions(n: usize) -> Vec<(String, String)> {
    let dir = std::env::var_os("METAPROMPT_BENCHMARKS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/benchmarks")
        });
    let path = dir.join("gsm8k/test.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let answer = v["answer"].as_str().unwrap();
            let gold = answer
                .rsplit("####")
                .next()
                .unwrap()
                .trim()
                .replace(',', "");
            (v["question"].as_str().unwrap().to_string(), gold)
        })
        .collect()
}

/// The number after the first `####`, commas dropped.
fn final_number(text: &str) -> Option<String> {
    let after = text.split("####").nth(1)?;
    let number: String = after
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',' || *c == '-')
        .filter(|c| *c != ',')
        .collect();
    (!number.is_empty()).then_some(number)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(24);
    let model_name = arg(&args, "--model").unwrap_or_else(|| "gemma-3-270m".into());
    let max_tokens: u32 = arg(&args, "--max-tokens").map_or(128, |t| t.parse().unwrap());
    let lanes: u32 = arg(&args, "--lanes").map_or(8, |t| t.parse().unwrap());
    let data = questions(n);
    let requests: Vec<Request> = data
        .iter()
        .map(|(q, _)| {
            Request::text(format!("{DEMOS}Question: {q}\nAnswer:"))
                .max_tokens(max_tokens)
                .stop("\n\n")
        })
        .collect();

    let config = Config::default();
    let mut options = metaprompt_local::LocalOptions::from_config(&config);
    options.lanes = lanes;
    let models = Arc::new(LocalModels::new(options));
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
        println!(
            "model: {}, threads: {}, lanes: {lanes}, examples: {n}, max_tokens: {max_tokens}",
            facts.description,
            models.options().threads,
        );
        let run = |strategy| {
            let model = &model;
            let requests = &requests;
            async move {
                let start = Instant::now();
                let out: Vec<Response> = model
                    .complete_with(requests, strategy)
                    .await
                    .into_iter()
                    .map(Result::unwrap)
                    .collect();
                (out, start.elapsed())
            }
        };
        let (one, one_time) = run(Strategy::SharedPrefix).await;
        let (lanes, lanes_time) = run(Strategy::Lanes).await;
        let tokens: u64 = one.iter().map(|r| r.usage.output_tokens).sum();
        let mut reversed = requests.clone();
        reversed.reverse();
        let mut again: Vec<Response> = model
            .complete_with(&reversed, Strategy::Lanes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        again.reverse();
        let promise = again
            .iter()
            .zip(&lanes)
            .filter(|(a, b)| a.text == b.text)
            .count();
        let same = one
            .iter()
            .zip(&lanes)
            .filter(|(a, b)| a.text == b.text)
            .count();
        for (i, (a, b)) in one
            .iter()
            .zip(&lanes)
            .enumerate()
            .filter(|(_, (a, b))| a.text != b.text)
        {
            let at = a
                .text
                .chars()
                .zip(b.text.chars())
                .take_while(|(x, y)| x == y)
                .count();
            println!(
                "example {i} differs at character {at}: {:?} | {:?}",
                a.text.chars().skip(at).take(30).collect::<String>(),
                b.text.chars().skip(at).take(30).collect::<String>()
            );
        }
        let show = |name: &str, t: std::time::Duration| {
            println!(
                "{name:<24} {:>6.2} examples/s  {:>6.1} generated tok/s  ({:.1} s)",
                n as f64 / t.as_secs_f64(),
                tokens as f64 / t.as_secs_f64(),
                t.as_secs_f64()
            )
        };
        println!(
            "generated tokens: {tokens} ({:.0} per example)",
            tokens as f64 / n as f64
        );
        show("one by one (canonical)", one_time);
        show("lanes", lanes_time);
        println!(
            "speedup: {:.2}x",
            one_time.as_secs_f64() / lanes_time.as_secs_f64()
        );
        let accuracy = |rs: &[Response]| {
            rs.iter()
                .zip(&data)
                .filter(|(r, (_, gold))| final_number(&r.text).as_deref() == Some(gold.as_str()))
                .count()
        };
        println!("texts identical to the one-at-a-time path: {same} of {n}");
        println!(
            "accuracy: one at a time {} of {n}, lanes {} of {n}",
            accuracy(&one),
            accuracy(&lanes)
        );
        println!("the same batch reversed, texts identical: {promise} of {n}");
        assert_eq!(
            promise, n,
            "the same batch in another order gave other texts"
        );
        println!("lanes: {:?}", model.lanes_stats().await.unwrap());
    });
}
