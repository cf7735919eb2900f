//! The optimizers' mechanics against scripted models: a synthetic task where the execution
//! model answers correctly only when the prompt contains the word "magic" (else it always says
//! "positive": 50%), and a chat meta model whose answers the test controls.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metaprompt_eval::metric::MetricConfig;
use metaprompt_eval::{EvalOptions, Example, PromptFile, Scorer};
use metaprompt_llm::testing::ScriptedProvider;
use metaprompt_llm::{
    LlmError, ModelInfo, Pricing, Prompt, PromptFormat, Provider, ProviderKind, Request, Response,
};
use metaprompt_optimize::algo;
use metaprompt_optimize::run::{
    self, Budget, CancellationToken, Checkpoint, FsRunStore, Outcome, Problem, RunStore, Runner,
    Settings, StopReason,
};
use metaprompt_optimize::{Brief, Frame, Guard, Layers, MetaPrompts};
use serde_json::json;

fn example(i: usize) -> Example {
    let label = if i.is_multiple_of(2) {
        "positive"
    } else {
        "negative"
    };
    Example {
        id: format!("e{i}"),
        vars: [
            (
                "sentence".to_string(),
                json!(format!("review number {i} is {label}")),
            ),
            ("label".to_string(), json!(label)),
        ]
        .into(),
        expected: Some(json!(label)),
    }
}

fn problem(dev: usize, test: usize) -> Problem {
    let brief = Brief {
        name: "synthetic".into(),
        description: "Label the review.".into(),
        inputs: vec!["sentence".into()],
        output: "label".into(),
        labels: vec!["negative".into(), "positive".into()],
    };
    let mut seed = PromptFile::from_template("seed", "Review: {{ sentence }}\nLabel:");
    seed.instruction = Some("Label the review.".into());
    let metric: MetricConfig =
        toml::from_str("type = \"choice\"\nlabels = [\"negative\", \"positive\"]").unwrap();
    Problem {
        frame: Frame::of(&seed, &brief),
        seed_prompt: seed,
        constraints: Vec::new(),
        train: (1000..1012).map(example).collect(),
        dev: (0..dev).map(example).collect(),
        confirm: Vec::new(),
        test: (500..500 + test).map(example).collect(),
        scorer: Scorer::new(&[metric], None).unwrap(),
        options: EvalOptions {
            temperature: 0.0,
            max_tokens: 4,
            stop: vec![],
            output: "label".into(),
            seed: 1,
            answer_after: None,
        },
        brief,
    }
}

fn text(r: &Request) -> String {
    match &r.prompt {
        Prompt::Text(t) => t.clone(),
        Prompt::Chat(m) => m
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// The execution model: right only with "magic" in the prompt.
fn executor() -> Arc<ScriptedProvider> {
    executor_as(exec_info(), Duration::ZERO)
}

fn exec_info() -> ModelInfo {
    let mut info = ModelInfo::new(ProviderKind::Local, "exec");
    info.format = PromptFormat::Text;
    info
}

fn meta_info() -> ModelInfo {
    let mut info = ModelInfo::new(ProviderKind::Openai, "meta");
    info.format = PromptFormat::Chat;
    info
}

/// `info` at $1000 per million tokens in and out (the scripted models count a word as a
/// token): a tenth of a cent per word.
fn priced(mut info: ModelInfo) -> ModelInfo {
    info.pricing = Some(Pricing {
        input_per_mtok: 1000.0,
        output_per_mtok: 1000.0,
        cached_input_per_mtok: None,
    });
    info
}

/// The execution model of `executor`, described by `info`, taking `pause` per call.
fn executor_as(info: ModelInfo, pause: Duration) -> Arc<ScriptedProvider> {
    Arc::new(
        ScriptedProvider::new("exec")
            .with_info(info)
            .respond_with(move |r| {
                std::thread::sleep(pause);
                let t = text(r);
                let last = last_review(&t);
                Ok(if t.contains("magic") && last.ends_with("negative") {
                    "negative".into()
                } else {
                    "positive".into()
                })
            }),
    )
}

/// A meta model whose `n`-th answer is the instruction that works ("Use magic…"), the
/// others plain variants.
fn magic_at(n: usize) -> Arc<ScriptedProvider> {
    meta_model(move |_, k| {
        if k == n {
            "<prompt>Use magic to label the review.</prompt>".into()
        } else {
            format!("<prompt>Label review variant {k}.</prompt>")
        }
    })
}

/// The last `Review:` line of a rendered prompt: the example being asked about.
fn last_review(t: &str) -> &str {
    t.lines()
        .rev()
        .find(|l| l.starts_with("Review:"))
        .unwrap_or("")
}

/// A chat meta model answering with `answer(meta-prompt text, call number)`.
fn meta_model(
    answer: impl Fn(&str, usize) -> String + Send + Sync + 'static,
) -> Arc<ScriptedProvider> {
    meta_model_as(meta_info(), answer)
}

fn meta_model_as(
    info: ModelInfo,
    answer: impl Fn(&str, usize) -> String + Send + Sync + 'static,
) -> Arc<ScriptedProvider> {
    let n = Mutex::new(0);
    Arc::new(
        ScriptedProvider::new("meta")
            .with_info(info)
            .respond_with(move |r| {
                let mut k = n.lock().unwrap();
                *k += 1;
                Ok(answer(&text(r), *k))
            }),
    )
}

#[allow(clippy::too_many_arguments)]
async fn optimize(
    name: &str,
    meta: Arc<dyn Provider>,
    exec: Arc<dyn Provider>,
    problem: &Problem,
    settings: &Settings,
    budget: &Budget,
    dir: &std::path::Path,
    resume: Option<Checkpoint>,
) -> Result<Outcome, run::RunError> {
    optimize_until(
        name,
        meta,
        exec,
        problem,
        settings,
        budget,
        dir,
        resume,
        CancellationToken::new(),
    )
    .await
}

/// `optimize`, cancellable through `cancel`.
#[allow(clippy::too_many_arguments)]
async fn optimize_until(
    name: &str,
    meta: Arc<dyn Provider>,
    exec: Arc<dyn Provider>,
    problem: &Problem,
    settings: &Settings,
    budget: &Budget,
    dir: &std::path::Path,
    resume: Option<Checkpoint>,
    cancel: CancellationToken,
) -> Result<Outcome, run::RunError> {
    let layers = Layers::new(meta, exec);
    let mut optimizer = algo::by_name(name).unwrap();
    let runner = Runner {
        meta_prompts: &MetaPrompts::builtin(),
        layers: &layers,
        guard: &Guard::new(None),
        problem,
        settings,
        budget,
        task: std::path::Path::new("task.toml"),
        store: &FsRunStore::new(dir),
        observe: &|_| {},
        cancel,
    };
    run::run(optimizer.as_mut(), runner, resume).await
}

fn settings() -> Settings {
    Settings {
        minibatch: 8,
        ..Settings::default()
    }
}

#[tokio::test]
async fn junk_from_the_meta_model_is_rejected_before_any_metric_call_and_counted() {
    // What a weak base meta model writes, in rotation with one real instruction.
    let junk = [
        "<prompt></prompt>",
        "<prompt>1, 2, 3, 5, 7, 8, 11, 12, 15, 16, 17, 18, 19, 20</prompt>",
        "<prompt>review number 1003 is negative</prompt>",
        "<prompt>I am a video-game developer living in Oregon.</prompt>",
        "<prompt>Use magic to label the review.</prompt>",
    ];
    let meta = meta_model(move |_, k| junk[(k - 1) % junk.len()].to_string());
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let p = problem(20, 4);
    let settings = Settings {
        rounds: 2,
        per_round: 5,
        ..settings()
    };
    let o = optimize(
        "opro",
        meta,
        exec.clone(),
        &p,
        &settings,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    // Every junk answer was screened out with its reason and never reached the execution
    // model; the real instruction was raced and kept.
    let s = &o.screened;
    assert!(s.instructions >= 5, "{s:?}");
    assert_eq!(s.rejected_total() * 5, s.instructions * 4, "{s:?}");
    let reasons: Vec<&str> = o
        .rejected
        .iter()
        .flat_map(|r| r.why.iter().map(String::as_str))
        .collect();
    for why in [
        "junk: empty",
        "junk: numbers or punctuation, not words",
        "junk: a copy of an example",
        "junk: shares no word with the task",
    ] {
        assert!(reasons.contains(&why), "{why} in {reasons:?}");
    }
    for call in exec.calls() {
        let t = text(&call);
        assert!(!t.contains("Oregon") && !t.contains("11, 12"), "{t}");
    }
    let kept = o.entry(&o.winner).unwrap();
    assert!(
        kept.prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic"),
        "{:?}",
        kept.prompt.instruction
    );
    let summary = o.screened.summary().unwrap();
    assert!(
        summary.contains("empty, ") && summary.ends_with("unrelated to the task)"),
        "{summary}"
    );
}

#[tokio::test]
async fn opro_shows_the_trajectory_ascending_and_finds_the_better_instruction() {
    let meta = meta_model(|prompt, k| {
        if prompt.contains("Earlier instructions") && k >= 3 {
            "<prompt>Use magic to label the review.</prompt>".into()
        } else {
            format!("<prompt>Label review variant {k}.</prompt>")
        }
    });
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let p = problem(40, 20);
    let o = optimize(
        "opro",
        meta.clone(),
        exec,
        &p,
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert!(!o.kept_seed, "{:?}", o.dev_test);
    let winner = o.entry(&o.winner).unwrap();
    assert!(
        winner
            .prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic")
    );
    assert_eq!(winner.op, "opro");
    assert_eq!(winner.parents, ["p0"]);
    assert!(o.dev_test.p_value < 0.05);
    assert_eq!(o.winner_test.unwrap().mean, 1.0);
    // The second round's meta-prompt lists earlier instructions worst first, best last.
    let calls = meta.calls();
    let later = text(&calls[calls.len() - 1]);
    let scores: Vec<i64> = later
        .lines()
        .filter_map(|l| l.strip_prefix("Score: ").map(|s| s.parse().unwrap()))
        .collect();
    assert!(scores.len() >= 2);
    assert!(scores.windows(2).all(|w| w[0] <= w[1]), "{scores:?}");
    // Round temperatures follow the schedule: exploring first, lower later.
    assert!(calls[0].temperature > calls[calls.len() - 1].temperature);
}

#[tokio::test]
async fn a_metric_call_cap_is_never_exceeded_and_the_stop_is_reported() {
    let meta = meta_model(|_, k| format!("<prompt>Label review variant {k}.</prompt>"));
    let exec = executor();
    let dir = tempfile::tempdir().unwrap();
    let p = problem(20, 5);
    let budget = Budget {
        max_metric_calls: 50,
        ..Budget::default()
    };
    let o = optimize(
        "opro",
        meta,
        exec.clone(),
        &p,
        &settings(),
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap();
    // The cap bounds the search; the test split (5 examples, seed and kept prompt) is counted
    // apart, and every call the model saw is one of the two.
    assert!(o.metric_calls <= 50, "{}", o.metric_calls);
    assert!(
        o.metric_calls >= 40,
        "the search used its budget: {}",
        o.metric_calls
    );
    assert!((5..=10).contains(&o.test_calls), "{}", o.test_calls);
    assert_eq!(exec.calls().len() as u64, o.metric_calls + o.test_calls);
    assert_eq!(o.stop, StopReason::MetricCalls);
    assert!(o.seed_test.is_some());

    let too_small = Budget {
        max_metric_calls: 19,
        ..Budget::default()
    };
    let meta = meta_model(|_, _| String::new());
    let e = optimize(
        "opro",
        meta,
        executor(),
        &p,
        &settings(),
        &too_small,
        dir.path(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            run::RunError::BudgetTooSmall {
                max_metric_calls: 19,
                dev: 20,
            }
        ),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(message.contains("cannot even score the seed"), "{message}");
    assert!(message.contains("raise the metric-call cap, or use fewer dev examples"));
    assert!(!message.contains("--"), "no command-line flag: {message}");
}

#[tokio::test]
async fn a_meta_call_cap_stops_the_run() {
    let meta = meta_model(|_, k| format!("<prompt>Label review variant {k}.</prompt>"));
    let dir = tempfile::tempdir().unwrap();
    let budget = Budget {
        max_meta_calls: 6,
        ..Budget::default()
    };
    let s = Settings {
        patience: 10,
        ..settings()
    };
    let o = optimize(
        "opro",
        meta.clone(),
        executor(),
        &problem(20, 0),
        &s,
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(meta.calls().len(), 6);
    assert_eq!(o.meta_calls, 6);
    assert_eq!(o.stop, StopReason::MetaCalls);
}

#[tokio::test]
async fn a_meta_token_cap_sizes_each_meta_call_by_the_answers_so_far_and_stops_the_run() {
    // Every answer is 100 words (100 tokens to the scripted provider).
    let filler = vec!["word"; 96].join(" ");
    let meta =
        meta_model(move |_, k| format!("<prompt>Label review variant {k}. {filler}</prompt>"));
    let dir = tempfile::tempdir().unwrap();
    // The engine's resolution of a token cap given alone: no call cap.
    let budget = Budget {
        max_meta_calls: u64::MAX,
        max_meta_tokens: Some(1000),
        ..Budget::default()
    };
    let s = Settings {
        patience: 50,
        rounds: 50,
        ..settings()
    };
    let o = optimize(
        "opro",
        meta.clone(),
        executor(),
        &problem(20, 0),
        &s,
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(o.stop, StopReason::MetaTokens);
    let generated = o.meta_usage.output_tokens;
    assert!(generated <= 1000, "{generated} tokens generated");
    // Whole calls only: it stops when the next sample would cross the cap.
    assert!(generated > 1000 - 100, "{generated} tokens generated");
    assert_eq!(o.meta_calls, meta.calls().len() as u64);
    assert_eq!(o.meta_calls, generated / 100);
}

#[tokio::test]
async fn without_a_significant_improvement_the_seed_is_kept() {
    let meta = meta_model(|_, k| format!("<prompt>Label review variant {k}.</prompt>"));
    let dir = tempfile::tempdir().unwrap();
    let o = optimize(
        "opro",
        meta,
        executor(),
        &problem(20, 4),
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert!(o.kept_seed);
    assert_eq!(o.winner, "p0");
    assert_eq!(o.stop, StopReason::Converged);
}

#[tokio::test]
async fn ape_induces_from_demo_subsets_resamples_the_best_and_selects_by_ucb() {
    let meta = meta_model(|prompt, k| {
        if prompt.contains("What was the instruction?") {
            // The induction prompt shows the demo subset.
            assert!(prompt.contains("Input: review number 10"));
            if k == 2 {
                "<prompt>Label with magic.</prompt>".into()
            } else {
                format!("<prompt>Label variant {k}.</prompt>")
            }
        } else {
            assert!(
                prompt.contains("Write a variation of this instruction"),
                "{prompt}"
            );
            assert!(prompt.contains("Label with magic."));
            format!("<prompt>Magic labelling, take {k}.</prompt>")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let o = optimize(
        "ape",
        meta,
        executor(),
        &problem(40, 10),
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let winner = o.entry(&o.winner).unwrap();
    assert!(
        winner
            .prompt
            .instruction
            .as_deref()
            .unwrap()
            .to_lowercase()
            .contains("magic")
    );
    assert_eq!(
        winner.scores.len(),
        40,
        "the UCB leader is scored on all of dev"
    );
    assert!(o.pool.iter().any(|e| e.op == "ape-resample"));
    // Losers were not all scored on the whole split: the bandit spent calls on the leader.
    assert!(
        o.pool
            .iter()
            .any(|e| e.op == "ape-induce" && e.scores.len() < 40)
    );
}

#[tokio::test]
async fn ape_induces_again_while_the_seed_leads_without_an_instruction() {
    // Every induced instruction is plain (no "magic"): none beats the seed, which has none.
    let meta = meta_model(|prompt, k| {
        assert!(
            prompt.contains("What was the instruction?"),
            "only induction: there is no instruction to paraphrase\n{prompt}"
        );
        format!("<prompt>Label variant {k}.</prompt>")
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings();
    s.rounds = 3;
    s.patience = 3;
    let mut p = problem(20, 10);
    p.seed_prompt.instruction = None;
    p.frame = Frame::of(&p.seed_prompt, &p.brief);
    let o = optimize(
        "ape",
        meta,
        executor(),
        &p,
        &s,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert_ne!(o.stop, StopReason::Exhausted, "{:?}", o.stop);
    assert!(
        o.pool.iter().any(|e| e.op == "ape-induce" && e.round >= 2),
        "{:?}",
        o.pool.iter().map(|e| (&e.op, e.round)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn ape_ranks_its_candidates_by_likelihood_and_races_only_the_most_likely() {
    // 8 induced instructions for 4 racing places; only the sixth says "magic". The execution
    // model finds the expected labels likely only after a "magic" prompt (log P -0.1 vs -2).
    let meta = magic_at(6);
    // Label scoring (the metric's, and the proxy's): after a "magic" prompt the right label
    // gets log P -0.1 and the other -3; otherwise " positive" -0.5 and " negative" -1.5.
    let exec = Arc::new(
        ScriptedProvider::new("exec")
            .with_info(exec_info())
            .respond_with(|_| Ok("positive".into()))
            .score_with(|r| {
                let Prompt::Text(t) = &r.prompt else {
                    unreachable!()
                };
                let last = last_review(t);
                let right = if last.ends_with("negative") {
                    " negative"
                } else {
                    " positive"
                };
                let logprobs: Vec<f64> = r
                    .labels
                    .iter()
                    .map(|l| match (t.contains("magic"), l.as_str()) {
                        (true, l) if l == right => -0.1,
                        (true, _) => -3.0,
                        (false, " positive") => -0.5,
                        (false, _) => -1.5,
                    })
                    .collect();
                let total: f64 = logprobs.iter().map(|x| x.exp()).sum();
                Ok(metaprompt_llm::LabelScores {
                    probs: logprobs.iter().map(|x| x.exp() / total).collect(),
                    label_tokens: vec![1; r.labels.len()],
                    logprobs,
                    usage: Default::default(),
                    latency: Duration::ZERO,
                    cost_usd: Some(0.0),
                    cached: false,
                })
            }),
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        rounds: 1,
        per_round: 4,
        proxy: true,
        ..settings()
    };
    let o = optimize(
        "ape",
        meta,
        exec.clone(),
        &problem(20, 4),
        &s,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let induced: Vec<&run::Entry> = o.pool.iter().filter(|e| e.op == "ape-induce").collect();
    assert_eq!(induced.len(), 8, "{:?}", o.rejected);
    assert!(induced.iter().all(|e| e.proxy.is_some()));
    // Only the four most likely were raced; the magic one is among them, and is kept.
    let raced: Vec<&str> = induced
        .iter()
        .filter(|e| !e.scores.is_empty())
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(raced.len(), 4, "{raced:?}");
    let kept = o.entry(&o.winner).unwrap();
    assert!(
        kept.prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic"),
        "{:?}",
        o.pool
            .iter()
            .map(|e| (&e.id, &e.prompt.instruction, e.proxy, e.mean()))
            .collect::<Vec<_>>()
    );
    assert!((kept.proxy.unwrap() + 0.1).abs() < 1e-9, "{:?}", kept.proxy);
    // 8 candidates × 8 training examples, scored without decoding and counted apart.
    assert_eq!(o.proxy_calls, 64);
    let proxy_scorings = exec
        .score_calls()
        .iter()
        .filter(|c| c.labels.len() == 1)
        .count();
    assert_eq!(proxy_scorings, 64);
}

#[tokio::test]
async fn fewshot_picks_label_balanced_demonstrations_and_races_them() {
    let meta = meta_model(|_, _| panic!("fewshot makes no meta calls"));
    let dir = tempfile::tempdir().unwrap();
    let p = problem(24, 0);
    let o = optimize(
        "fewshot",
        meta,
        executor(),
        &p,
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let first_round: Vec<_> = o
        .pool
        .iter()
        .filter(|e| e.op == "fewshot" && e.round == 1)
        .collect();
    assert!(!first_round.is_empty());
    for e in &first_round {
        assert_eq!(e.prompt.demos.len(), 4);
        let positives = e
            .prompt
            .demos
            .iter()
            .filter(|d| d["label"] == "positive")
            .count();
        assert_eq!(positives, 2, "balanced: {:?}", e.prompt.demos);
    }
    assert!(
        o.saved_calls > 0,
        "racing dropped losers before the whole split"
    );
}

/// A training row with a null field makes demonstrations TOML cannot hold: such a candidate is
/// refused when proposed, saying where the null is, and the run goes on with the others.
#[tokio::test]
async fn a_demonstration_with_a_null_field_is_refused_when_proposed_not_lost_when_kept() {
    let meta = meta_model(|_, _| panic!("fewshot makes no meta calls"));
    let dir = tempfile::tempdir().unwrap();
    let mut p = problem(24, 0);
    for e in p.train.iter_mut().step_by(2) {
        e.vars.insert("sentence".into(), serde_json::Value::Null);
    }
    p.train.push(example(2000));
    p.train.push(example(2001));
    let o = optimize(
        "fewshot",
        meta,
        executor(),
        &p,
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert!(
        o.rejected
            .iter()
            .any(|r| r.why.iter().any(|w| w.contains(".sentence is null"))),
        "{:?}",
        o.rejected
    );
    for e in &o.pool {
        e.prompt.to_toml().unwrap();
    }
}

/// A generation task: every output is different ("out 7" for "item 7"), scored by `equals`.
fn generation(dev: usize) -> Problem {
    let example = |i: usize| Example {
        id: format!("g{i}"),
        vars: [
            ("sentence".to_string(), json!(format!("item {i}"))),
            ("label".to_string(), json!(format!("out {i}"))),
        ]
        .into(),
        expected: Some(json!(format!("out {i}"))),
    };
    let mut p = problem(dev, 0);
    p.brief.labels.clear();
    p.train = (1000..1030).map(example).collect();
    p.dev = (0..dev).map(example).collect();
    p.scorer = Scorer::new(&[toml::from_str("type = \"equals\"").unwrap()], None).unwrap();
    p
}

#[tokio::test]
async fn fewshot_searches_which_how_many_and_in_what_order_on_a_generation_task() {
    // The more demonstrations the prompt shows, the more items the model gets right (item n
    // when n % 8 is below their number); the outputs never repeat, so a same-output swap
    // would have nothing to propose.
    let exec = Arc::new(
        ScriptedProvider::new("exec")
            .with_info(exec_info())
            .respond_with(|r| {
                let t = text(r);
                let shown = t.matches("Review:").count() - 1;
                let last = last_review(&t);
                let n: usize = last.trim_start_matches("Review: item ").parse().unwrap();
                Ok(if n % 8 < shown {
                    format!("out {n}")
                } else {
                    "out ?".into()
                })
            }),
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        rounds: 6,
        patience: 6,
        ..settings()
    };
    let o = optimize(
        "fewshot",
        meta_model(|_, _| panic!("fewshot makes no meta calls")),
        exec,
        &generation(16),
        &s,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let ops: std::collections::BTreeSet<&str> = o.pool.iter().map(|e| e.op.as_str()).collect();
    for op in [
        "fewshot-swap",
        "fewshot-add",
        "fewshot-drop",
        "fewshot-order",
    ] {
        assert!(ops.contains(op), "{op} in {ops:?}");
    }
    assert_ne!(o.stop, StopReason::Exhausted);
    // It grew the set past the 4 it started with.
    let kept = o.entry(&o.winner).unwrap();
    assert!(kept.prompt.demos.len() > 4, "{}", kept.prompt.demos.len());
    assert!(!o.kept_seed, "{:?}", o.dev_test);
    // Every demonstration shows a different training example.
    let mut inputs: Vec<&serde_json::Value> =
        kept.prompt.demos.iter().map(|d| &d["sentence"]).collect();
    inputs.sort_by_key(|v| v.to_string());
    inputs.dedup();
    assert_eq!(inputs.len(), kept.prompt.demos.len());
}

/// Ten topics; an example's answer is its topic's, and the model gets it right only when a
/// demonstration of the same topic is shown: a fixed set of four cannot cover them all.
const TOPICS: [&str; 10] = [
    "apple", "river", "violin", "glacier", "tractor", "orchid", "falcon", "copper", "lantern",
    "meadow",
];

fn topical(dev: usize) -> Problem {
    let example = |i: usize| {
        let topic = TOPICS[i % TOPICS.len()];
        Example {
            id: format!("t{i}"),
            vars: [
                (
                    "sentence".to_string(),
                    json!(format!("{topic} {topic} case {i}")),
                ),
                ("label".to_string(), json!(format!("answer {topic}"))),
            ]
            .into(),
            expected: Some(json!(format!("answer {topic}"))),
        }
    };
    let mut p = problem(dev, 0);
    p.brief.labels.clear();
    p.train = (1000..1040).map(example).collect();
    p.dev = (0..dev).map(example).collect();
    p.test = (500..540).map(example).collect();
    p.scorer = Scorer::new(&[toml::from_str("type = \"equals\"").unwrap()], None).unwrap();
    p
}

#[tokio::test]
async fn fewshot_tries_nearest_neighbour_demonstrations_and_keeps_them_when_they_win() {
    let exec = Arc::new(
        ScriptedProvider::new("exec")
            .with_info(exec_info())
            .respond_with(|r| {
                let t = text(r);
                let last = last_review(&t);
                let topic = last
                    .trim_start_matches("Review: ")
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let shown = t
                    .lines()
                    .filter(|l| l.starts_with("Review:"))
                    .filter(|l| *l != last)
                    .any(|l| l.starts_with(&format!("Review: {topic} ")));
                Ok(if shown {
                    format!("answer {topic}")
                } else {
                    "answer ?".into()
                })
            }),
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        rounds: 4,
        patience: 4,
        ..settings()
    };
    let o = optimize(
        "fewshot",
        meta_model(|_, _| panic!("fewshot makes no meta calls")),
        exec.clone(),
        &topical(30),
        &s,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let knn: Vec<_> = o.pool.iter().filter(|e| e.op == "fewshot-knn").collect();
    assert_eq!(knn.len(), 1, "one nearest-neighbour rival per run");
    let kept = o.entry(&o.winner).unwrap();
    let selector = kept.prompt.selector.as_ref().unwrap_or_else(|| {
        panic!(
            "the neighbours win: {}",
            kept.prompt.to_toml().unwrap_or_else(|e| e.to_string())
        )
    });
    assert!(kept.prompt.demos.is_empty());
    assert_eq!(kept.prompt.pool.len(), 40, "the training split is the pool");
    // The scripted model embeds (hashed words): compared by the model's embeddings.
    assert_eq!(
        selector.embed,
        metaprompt_eval::select::Embedding::Model,
        "{selector:?}"
    );
    assert!(!exec.embed_calls().is_empty());
    // On test the neighbours answer every topic; the seed (no demonstrations) none.
    let winner = o.winner_test.as_ref().expect("a test evaluation");
    let seed = o.seed_test.as_ref().expect("a test evaluation");
    assert!(
        winner.mean > 0.9 && seed.mean < 0.1,
        "{winner:?} vs {seed:?}"
    );
    // Later rounds vary the leader: fewer or more neighbours, the other embedding.
    let ops: std::collections::BTreeSet<&str> = o.pool.iter().map(|e| e.op.as_str()).collect();
    assert!(
        ops.iter().any(|op| op.starts_with("fewshot-knn-")),
        "{ops:?}"
    );
}

#[tokio::test]
async fn mipro_searches_instructions_and_demonstrations_jointly() {
    // Right only with "magic" in the instruction *and* demonstrations shown: neither half
    // alone beats the seed, the pair does.
    let meta = magic_at(3);
    let exec = Arc::new(
        ScriptedProvider::new("exec")
            .with_info(exec_info())
            .respond_with(|r| {
                let t = text(r);
                let demos = t.matches("Review:").count() > 1;
                let last = last_review(&t);
                Ok(
                    if t.contains("magic") && demos && last.ends_with("negative") {
                        "negative".into()
                    } else {
                        "positive".into()
                    },
                )
            }),
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        rounds: 8,
        patience: 8,
        ..settings()
    };
    let o = optimize(
        "mipro",
        meta,
        exec,
        &problem(20, 4),
        &s,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let kept = o.entry(&o.winner).unwrap();
    assert_eq!(
        kept.op,
        "mipro",
        "{:?} {:?}",
        o.stop,
        o.pool
            .iter()
            .map(|e| (
                &e.id,
                e.round,
                &e.prompt.instruction,
                e.prompt.demos.len(),
                e.mean()
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        kept.prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic")
            && !kept.prompt.demo_entries().is_empty(),
        "{:?} with {} demos",
        kept.prompt.instruction,
        kept.prompt.demo_entries().len()
    );
    assert!(!o.kept_seed, "{:?}", o.dev_test);
    // Pairs mixed both halves: new instructions with the seed's (no) demonstrations, and the
    // seed's instruction with new demonstration sets.
    assert!(o.pool.iter().any(|e| e.prompt.demos.is_empty()
        && e.prompt.instruction.as_deref() != Some("Label the review.")));
    assert!(o.pool.iter().any(|e| !e.prompt.demos.is_empty()
        && e.prompt.instruction.as_deref() == Some("Label the review.")));
    // The demonstration sets include a per-input one (nearest neighbours from the training
    // examples), paired like the others.
    let knn: Vec<_> = o
        .pool
        .iter()
        .filter(|e| e.op == "mipro" && e.prompt.selector.is_some())
        .collect();
    assert!(
        !knn.is_empty(),
        "{:?}",
        o.pool.iter().map(|e| &e.op).collect::<Vec<_>>()
    );
    for e in &knn {
        let selector = e.prompt.selector.as_ref().unwrap();
        assert!(e.prompt.demos.is_empty() && e.prompt.pool.len() > selector.k);
    }
}

#[tokio::test]
async fn a_resumed_run_reaches_the_result_of_an_uninterrupted_one() {
    let answer = |prompt: &str, _k: usize| {
        // Deterministic in the request (as a seeded, cached model is): the answer depends on
        // how many instructions the trajectory shows.
        let n = prompt.matches("Score: ").count();
        if n >= 3 {
            "<prompt>Use magic.</prompt>".into()
        } else {
            format!("<prompt>Variant {n}-{}.</prompt>", prompt.len() % 7)
        }
    };
    let p = problem(24, 6);
    let s = Settings {
        patience: 10,
        rounds: 4,
        ..settings()
    };
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = optimize(
        "opro",
        meta_model(answer),
        executor(),
        &p,
        &s,
        &Budget::default(),
        whole_dir.path(),
        None,
    )
    .await
    .unwrap();

    // The same run, cut after round 2: run 2 rounds, then rewind the checkpoint's stop mark,
    // as a process killed after its round-2 checkpoint leaves it.
    let dir = tempfile::tempdir().unwrap();
    let short = Settings {
        rounds: 2,
        ..s.clone()
    };
    optimize(
        "opro",
        meta_model(answer),
        executor(),
        &p,
        &short,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let mut cp: Checkpoint = FsRunStore::new(dir.path()).load().unwrap().unwrap();
    assert_eq!(cp.round, 2);
    cp.stop = None;
    cp.settings = s.clone();
    let resumed = optimize(
        "opro",
        meta_model(answer),
        executor(),
        &p,
        &s,
        &Budget::default(),
        dir.path(),
        Some(cp),
    )
    .await
    .unwrap();
    assert_eq!(resumed.winner, whole.winner);
    assert_eq!(
        resumed.entry(&resumed.winner).unwrap().prompt,
        whole.entry(&whole.winner).unwrap().prompt
    );
    assert_eq!(resumed.rounds.len(), whole.rounds.len());
    assert_eq!(resumed.pool.len(), whole.pool.len());
}

/// The pool as JSON (entries have no `PartialEq`): ids, prompts, lineage, scores, outputs.
fn pool_json(o: &Outcome) -> serde_json::Value {
    serde_json::to_value(&o.pool).unwrap()
}

#[tokio::test]
async fn a_run_cancelled_mid_round_resumes_to_the_result_of_an_uninterrupted_one() {
    // Deterministic in the request, as a seeded, cached model is.
    let answer = |prompt: &str| {
        let n = prompt.matches("Score: ").count();
        if n >= 3 {
            "<prompt>Use magic.</prompt>".to_string()
        } else {
            format!("<prompt>Variant {n}-{}.</prompt>", prompt.len() % 7)
        }
    };
    let p = problem(24, 6);
    let s = Settings {
        patience: 10,
        rounds: 4,
        ..settings()
    };
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = optimize(
        "opro",
        meta_model(move |prompt, _| answer(prompt)),
        executor(),
        &p,
        &s,
        &Budget::default(),
        whole_dir.path(),
        None,
    )
    .await
    .unwrap();

    // The same run, cancelled from inside the meta model's 6th call: round 2's proposals
    // (calls 5 to 8) are being written, so the cancellation lands in the middle of round 2.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let meta = meta_model(move |prompt, k| {
        if k == 6 {
            trigger.cancel();
        }
        answer(prompt)
    });
    let dir = tempfile::tempdir().unwrap();
    let e = optimize_until(
        "opro",
        meta,
        executor(),
        &p,
        &s,
        &Budget::default(),
        dir.path(),
        None,
        cancel,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, run::RunError::Cancelled { round: 1 }),
        "cancelled after the round-1 checkpoint: {e}"
    );
    let cp: Checkpoint = FsRunStore::new(dir.path()).load().unwrap().unwrap();
    assert_eq!((cp.round, cp.stop, cp.ended), (1, None, None), "unfinished");

    let resumed = optimize(
        "opro",
        meta_model(move |prompt, _| answer(prompt)),
        executor(),
        &p,
        &s,
        &Budget::default(),
        dir.path(),
        Some(cp),
    )
    .await
    .unwrap();
    assert_eq!(resumed.winner, whole.winner);
    assert_eq!(resumed.best, whole.best);
    assert_eq!(pool_json(&resumed), pool_json(&whole));
    assert_eq!(resumed.metric_calls, whole.metric_calls);
    assert_eq!(resumed.meta_calls, whole.meta_calls);
    assert_eq!(resumed.stop, whole.stop);
    assert_eq!(resumed.rounds.len(), whole.rounds.len());
    let done: Checkpoint = FsRunStore::new(dir.path()).load().unwrap().unwrap();
    assert_eq!(done.stop, Some(whole.stop), "the resumed run finished");
}

/// The review number and its label, from the last `Review:` line of a request.
fn review(r: &Request) -> (usize, &'static str) {
    let t = text(r);
    let last = t
        .lines()
        .rev()
        .find(|l| l.starts_with("Review:"))
        .unwrap_or("");
    let i = last
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    (
        i,
        if last.ends_with("negative") {
            "negative"
        } else {
            "positive"
        },
    )
}

/// The execution model of the fault tests. With "magic" in the prompt it is always right, but
/// its call fails for good on every fifth review (20%); with "decent" it is wrong on every
/// tenth review (90% right); otherwise it says "positive" (50%). Scoring the failures as zeros
/// would rank "decent" (0.9) above "magic" (0.8).
fn faulty_executor() -> Arc<ScriptedProvider> {
    let mut info = ModelInfo::new(ProviderKind::Local, "exec");
    info.format = PromptFormat::Text;
    Arc::new(
        ScriptedProvider::new("exec")
            .with_info(info)
            .respond_with(|r| {
                let (i, label) = review(r);
                let t = text(r);
                let other = if label == "negative" {
                    "positive"
                } else {
                    "negative"
                };
                Ok(if t.contains("magic") {
                    if i % 5 == 2 {
                        return Err(LlmError::Config("the endpoint is overloaded".into()));
                    }
                    label.into()
                } else if t.contains("decent") {
                    if i % 10 == 3 { other } else { label }.into()
                } else {
                    "positive".into()
                })
            }),
    )
}

fn magic_and_decent() -> Arc<ScriptedProvider> {
    meta_model(|_, k| match k {
        1 => "<prompt>Use magic to label the review.</prompt>".into(),
        2 => "<prompt>Label the review decently.</prompt>".into(),
        _ => format!("<prompt>Label review variant {k}.</prompt>"),
    })
}

#[tokio::test]
async fn failed_calls_are_left_out_not_scored_zero_so_the_better_prompt_still_wins() {
    let exec = faulty_executor();
    let dir = tempfile::tempdir().unwrap();
    let s = Settings {
        max_unscored: 0.3,
        ..settings()
    };
    let o = optimize(
        "opro",
        magic_and_decent(),
        exec.clone(),
        &problem(40, 10),
        &s,
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let winner = o.entry(&o.winner).unwrap();
    assert!(
        winner
            .prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic"),
        "{:?}",
        winner.prompt.instruction
    );
    assert_eq!(o.best, o.winner);
    assert!(!o.kept_seed, "{:?}", o.dev_test);
    let decent = o
        .pool
        .iter()
        .find(|e| {
            e.prompt
                .instruction
                .as_deref()
                .is_some_and(|i| i.contains("decent"))
        })
        .unwrap();
    assert!(decent.evaluated_count() < 40, "decent lost the race");
    // Dev reviews 2, 7, …, 37 (8 of 40) could not be scored for the winner: kept as failed,
    // with the reason, out of its scores and out of the paired test against the seed.
    assert_eq!((winner.scores.len(), winner.failed.len()), (32, 8));
    assert_eq!(winner.mean(), Some(1.0));
    assert!(winner.failed.values().all(|w| w.contains("overloaded")));
    assert_eq!(o.dev_test.n, 32);
    assert_eq!(o.best_dev.n, 32);
    assert_eq!(o.unscored.count, 8);
    assert_eq!(o.unscored.reasons.len(), 1);
    assert_eq!(o.unscored.reasons[0].count, 8);
    assert!(o.unscored.reasons[0].reason.contains("overloaded"));
    assert_eq!(o.rounds[1].unscored, 8);
    // The test split: reviews 502 and 507 unscored for the winner, left out too.
    assert_eq!(o.test_unscored.count, 2);
    let t = o.winner_test.unwrap();
    assert_eq!((t.n, t.mean), (8, 1.0));
    assert_eq!(o.test_paired.unwrap().n, 8);
    assert_eq!(o.seed_test.unwrap().n, 10);
    // Every attempt, retries included, was a metric call.
    assert_eq!(exec.calls().len() as u64, o.metric_calls + o.test_calls);
}

#[tokio::test]
async fn too_many_unscored_pairs_stop_the_run_and_leave_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let e = optimize(
        "opro",
        magic_and_decent(),
        faulty_executor(),
        &problem(40, 10),
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap_err();
    let run::RunError::Unscored {
        round,
        failed,
        attempted,
        allowed,
        ref reasons,
    } = e
    else {
        panic!("{e}");
    };
    assert_eq!((round, failed, allowed), (1, 8, 0.05));
    assert!(failed as f64 > 0.05 * attempted as f64);
    assert!(reasons[0].reason.contains("overloaded"));
    let message = e.to_string();
    assert!(message.contains(&format!("8 of {attempted}")), "{message}");
    assert!(
        message.contains("overloaded") && message.contains("5%"),
        "{message}"
    );
    // Round 1 was not checkpointed: the seed round's checkpoint can be resumed.
    let cp: Checkpoint = FsRunStore::new(dir.path()).load().unwrap().unwrap();
    assert_eq!((cp.round, cp.stop), (0, None));
}

#[tokio::test]
async fn protegi_turns_errors_into_a_gradient_then_edits_against_it() {
    let meta = meta_model(|prompt, _| {
        if prompt.contains("It gave wrong answers on these examples") {
            // The minibatch of errors: what the model answered and what was right.
            assert!(prompt.contains("Answer given: positive"), "{prompt}");
            assert!(prompt.contains("Correct answer: negative"), "{prompt}");
            "It never tells the model to use magic.".into()
        } else {
            assert!(
                prompt.contains("What is wrong with it:\nIt never tells the model to use magic.")
            );
            "<prompt>Label the review, using magic.</prompt>".into()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let o = optimize(
        "protegi",
        meta,
        executor(),
        &problem(24, 6),
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let winner = o.entry(&o.winner).unwrap();
    assert_eq!(winner.op, "protegi-edit");
    assert!(
        winner
            .prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic")
    );
    assert!(!o.kept_seed);
}

#[tokio::test]
async fn gepa_reflects_on_traces_and_validates_only_minibatch_winners() {
    let meta = meta_model(|prompt, k| {
        assert!(prompt.contains("What the model did with it"), "{prompt}");
        assert!(prompt.contains("Model output: positive"), "{prompt}");
        if k == 1 {
            // The first child does no better than its parent on the minibatch.
            "The outputs ignore negative reviews.\n<prompt>Label it carefully.</prompt>".into()
        } else {
            "<prompt>Label it with magic.</prompt>".into()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let o = optimize(
        "gepa",
        meta,
        executor(),
        &problem(24, 6),
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    let first = o.pool.iter().find(|e| e.op == "gepa-reflect").unwrap();
    assert!(
        first
            .prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("carefully")
    );
    assert_eq!(
        first.scores.len(),
        8,
        "a minibatch loser is not validated on all of dev"
    );
    let winner = o.entry(&o.winner).unwrap();
    assert!(
        winner
            .prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic")
    );
    assert_eq!(winner.scores.len(), 24);
    assert!(!o.kept_seed);
}

#[tokio::test]
async fn evolve_breeds_a_population_by_tournaments_and_mutation() {
    let meta = meta_model(|prompt, k| {
        if prompt.contains("Summarize and improve it") {
            "<prompt>Vary it boldly.</prompt>".into()
        } else if k >= 4 {
            format!("<prompt>Label with magic, version {k}.</prompt>")
        } else {
            format!("<prompt>Label plainly, version {k}.</prompt>")
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let o = optimize(
        "evolve",
        meta,
        executor(),
        &problem(24, 6),
        &settings(),
        &Budget::default(),
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert!(o.pool.iter().filter(|e| e.op == "evolve-init").count() >= 3);
    assert!(
        o.pool
            .iter()
            .any(|e| e.op.starts_with("evolve-") && e.op != "evolve-init")
    );
    // Tournaments killed some units; every unit carries a mutation prompt.
    assert!(
        o.pool
            .iter()
            .any(|e| e.attrs.get("alive").is_some_and(|a| a == "no"))
    );
    assert!(
        o.pool
            .iter()
            .filter(|e| e.op.starts_with("evolve"))
            .all(|e| e.attrs.contains_key("mutation"))
    );
    let winner = o.entry(&o.winner).unwrap();
    assert!(
        winner
            .prompt
            .instruction
            .as_deref()
            .unwrap()
            .contains("magic"),
        "{:?}",
        winner.prompt.instruction
    );
    assert!(!o.kept_seed);
}

fn variants() -> Arc<ScriptedProvider> {
    meta_model_as(priced(meta_info()), |_, k| {
        format!("<prompt>Label review variant {k}.</prompt>")
    })
}

fn patient() -> Settings {
    Settings {
        patience: 10,
        ..settings()
    }
}

#[tokio::test]
async fn a_meta_cost_cap_stops_the_run_before_it_is_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Budget {
        max_meta_cost_usd: Some(2.0),
        ..Budget::default()
    };
    let meta = variants();
    let o = optimize(
        "opro",
        meta.clone(),
        executor(),
        &problem(20, 4),
        &patient(),
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(o.stop, StopReason::MetaCost);
    let spent = o.meta_usage.cost_usd.unwrap();
    assert!(spent <= 2.0, "${spent}");
    assert!(
        o.meta_calls >= 4,
        "at least a round was run: {}",
        o.meta_calls
    );
    assert_eq!(meta.calls().len() as u64, o.meta_calls);
}

#[tokio::test]
async fn a_total_cost_cap_stops_the_run_before_it_is_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 2.5;
    let budget = Budget {
        max_cost_usd: Some(cap),
        ..Budget::default()
    };
    let o = optimize(
        "opro",
        variants(),
        executor_as(priced(exec_info()), Duration::ZERO),
        &problem(20, 4),
        &patient(),
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(o.stop, StopReason::Cost);
    let spent = o.meta_usage.cost_usd.unwrap() + o.execution_usage.cost_usd.unwrap();
    assert!(spent <= cap, "${spent}");
    assert!(
        o.seed_test.is_some(),
        "the test split was priced in before every step"
    );
    assert!(o.rounds.len() >= 2, "{}", o.rounds.len());
}

#[tokio::test]
async fn a_wall_time_cap_stops_the_run_before_it_is_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Budget {
        max_wall_secs: Some(1),
        ..Budget::default()
    };
    let o = optimize(
        "opro",
        meta_model(|_, k| format!("<prompt>Label review variant {k}.</prompt>")),
        executor_as(exec_info(), Duration::from_millis(20)),
        &problem(20, 4),
        &patient(),
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(o.stop, StopReason::Wall);
    assert!(o.wall_secs <= 1.0, "{} s", o.wall_secs);
    assert!(o.seed_test.is_some());
}

#[tokio::test]
async fn a_dollar_cap_on_a_model_without_a_price_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let meta = meta_model(|_, _| panic!("nothing is spent"));
    let exec = executor();
    let budget = Budget {
        max_meta_cost_usd: Some(1.0),
        ..Budget::default()
    };
    let e = optimize(
        "opro",
        meta.clone(),
        exec.clone(),
        &problem(20, 4),
        &settings(),
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, run::RunError::Unpriced { model, cap: run::CostCap::Meta } if model == "openai:meta"),
        "{e:?}"
    );
    let message = e.to_string();
    for part in [
        "`openai:meta`",
        "max_meta_cost_usd",
        "metaprompt.toml",
        "[models.\"openai:meta\"]",
        "pricing = { input_per_mtok",
        "output_per_mtok",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(!message.contains("--"), "no command-line flag: {message}");
    assert_eq!(exec.calls().len(), 0);
    // The total cap covers the execution model too.
    let budget = Budget {
        max_cost_usd: Some(1.0),
        ..Budget::default()
    };
    let e = optimize(
        "opro",
        variants(),
        executor(),
        &problem(20, 4),
        &settings(),
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, run::RunError::Unpriced { model, cap: run::CostCap::Total } if model == "local:exec"),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_cost_usd"), "{e}");
}

/// A priced provider whose answers stop carrying a cost after `after` calls.
#[derive(Debug)]
struct LosesItsPrice {
    inner: Arc<ScriptedProvider>,
    after: usize,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Provider for LosesItsPrice {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn complete(&self, request: &Request) -> Result<Response, LlmError> {
        let mut r = self.inner.complete(request).await?;
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.after {
            r.cost_usd = None;
        }
        Ok(r)
    }
}

#[tokio::test]
async fn a_cost_that_turns_unknown_under_a_dollar_cap_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(LosesItsPrice {
        inner: executor_as(priced(exec_info()), Duration::ZERO),
        after: 30,
        calls: AtomicUsize::new(0),
    });
    let budget = Budget {
        max_cost_usd: Some(100.0),
        ..Budget::default()
    };
    let e = optimize(
        "opro",
        variants(),
        exec.clone(),
        &problem(20, 4),
        &patient(),
        &budget,
        dir.path(),
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, run::RunError::Unpriced { model, cap: run::CostCap::Total } if model == "local:exec"),
        "{e:?}"
    );
    // It stopped at the next check: the seed's 20 calls, then one more scoring at most.
    let calls = exec.calls.load(Ordering::SeqCst);
    assert!(calls <= 30 + 8 * 2, "{calls}");
    let cp: Checkpoint = FsRunStore::new(dir.path()).load().unwrap().unwrap();
    assert_eq!(cp.stop, None, "resumable once the model has a price");
}
