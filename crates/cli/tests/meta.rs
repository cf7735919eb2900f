//! The meta-layer commands end to end: `generate` and `translate` through the real binary, with
//! an instruction-tuned meta model behind a local mock of the OpenAI wire format (chat-form
//! meta-prompts), and the embedded base model as a real target.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{metaprompt, sst2, stderr, stdout};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const RULE: &str = "Never mention the reviewer's name.";

/// What the mock chat model answers, by the meta-prompt it recognises; anything else is an
/// execution call, answered by keyword. Written prompts cycle through: one that keeps the
/// protected constraint, one that drops it, one with a loophole only the judge sees.
fn brain(written: &AtomicUsize, body: &Value) -> String {
    let messages = body["messages"].as_array().unwrap();
    let system = messages[0]["content"].as_str().unwrap_or_default();
    let last = messages.last().unwrap()["content"]
        .as_str()
        .unwrap_or_default();
    if system.contains("You audit prompts") {
        // A competent judge: it sees the loophole, and the exception the guard's entrance
        // check adds to each constraint.
        let verdict = if last.contains("Admins may") || last.contains("does not apply when") {
            r#"[{"constraint": 1, "verdict": "weakened", "reason": "admins get an exception"}]"#
        } else {
            r#"[{"constraint": 1, "verdict": "kept", "reason": "stated as is"}]"#
        };
        return verdict.into();
    }
    if last.starts_with("Analyse this task") {
        return "Requirements: one label.\nLikely failure modes: sarcasm reads as praise.".into();
    }
    if last.starts_with("Write a prompt for this task") {
        return match written.fetch_add(1, Ordering::SeqCst) % 3 {
            0 => format!(
                "Notes: keep it short.\n<prompt>\nYou are a precise sentiment classifier. Read the movie review and answer with exactly one word: positive or negative.\n{RULE}\n</prompt>"
            ),
            1 => "<prompt>You label movie reviews as positive or negative.</prompt>".into(),
            _ => format!(
                "<prompt>You classify reviews as positive or negative. {RULE} Admins may see reviewer names.</prompt>"
            ),
        };
    }
    if last.starts_with("Rewrite this prompt for a different model") {
        return format!(
            "<prompt>Decide whether the movie review is positive or negative. {RULE}</prompt>"
        );
    }
    let good = ["good", "great", "fine", "fun", "best", "love"];
    if good.iter().any(|w| last.to_lowercase().contains(w)) {
        "positive".into()
    } else {
        "negative".into()
    }
}

async fn mock_chat_model() -> MockServer {
    let server = MockServer::start().await;
    let written = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            let text = brain(&written, &body);
            ResponseTemplate::new(200).set_body_json(json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1741569952,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
            }))
        })
        .mount(&server)
        .await;
    server
}

fn config(dir: &Path, server: &MockServer) {
    std::fs::write(
        dir.join("metaprompt.toml"),
        format!(
            r#"[providers.mock]
kind = "openai"
base_url = "{}/v1"

[models."mock:writer"]
pricing = {{ input_per_mtok = 10.0, output_per_mtok = 30.0 }}

[models."mock:runner"]
pricing = {{ input_per_mtok = 0.1, output_per_mtok = 0.4 }}
"#,
            server.uri()
        ),
    )
    .unwrap();
}

/// A small sentiment task with a protected constraint, run by the mock models.
fn task(dir: &Path) -> std::path::PathBuf {
    let rows = |items: &[(&str, &str)]| {
        items
            .iter()
            .map(|(s, l)| json!({"sentence": s, "label": l}).to_string() + "\n")
            .collect::<String>()
    };
    std::fs::write(
        dir.join("train.jsonl"),
        rows(&[
            ("a great cast", "positive"),
            ("dull and slow", "negative"),
            ("fun from start to end", "positive"),
            ("a waste of time", "negative"),
        ]),
    )
    .unwrap();
    std::fs::write(
        dir.join("dev.jsonl"),
        rows(&[
            ("good acting", "positive"),
            ("the best film this year", "positive"),
            ("boring", "negative"),
            ("i love it", "positive"),
            ("terrible script", "negative"),
            ("weak ending", "negative"),
        ]),
    )
    .unwrap();
    let path = dir.join("task.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "mini-sst"
description = "Classify the sentiment of a movie review."
inputs = ["sentence"]
output = "label"
constraints = ["{RULE}"]

[prompt]
template = "Review: {{{{ sentence }}}}\nSentiment:"

[data]
train = "train.jsonl"
dev = "dev.jsonl"

[[metrics]]
type = "choice"
labels = ["negative", "positive"]

[models]
meta = "mock:writer"
execution = "mock:runner"
"#
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_with_a_chat_meta_model_checks_constraints_scores_and_counts_each_layer() {
    let server = mock_chat_model().await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server);
    let task = task(dir.path());
    let out_path = dir.path().join("generated.toml");
    let out = metaprompt(
        dir.path(),
        &[
            "generate",
            "--task",
            task.to_str().unwrap(),
            "--candidates",
            "3",
            "--out",
            out_path.to_str().unwrap(),
            "--json",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    let candidates = g["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    let accepted: Vec<&Value> = candidates
        .iter()
        .filter(|c| c["status"] == "accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "{g:#}");
    assert!(
        accepted[0]["prompt"]["instruction"]
            .as_str()
            .unwrap()
            .contains(RULE)
    );
    assert!(accepted[0]["score"]["score"]["mean"].as_f64().unwrap() > 0.9);
    let why: Vec<String> = candidates
        .iter()
        .filter(|c| c["status"] == "rejected")
        .map(|c| c["why"][0].as_str().unwrap().to_string())
        .collect();
    assert!(
        why.iter()
            .any(|w| w.contains("dropped") && w.contains("lexical")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|w| w.contains("weakened") && w.contains("judge") && w.contains("admins")),
        "{why:?}"
    );
    // The chosen one is the accepted one, and the seed was scored beside it.
    let chosen = g["chosen"].as_u64().unwrap() as usize;
    assert_eq!(candidates[chosen]["status"], "accepted");
    assert_eq!(g["seed_score"]["examples"], 6);
    // Per layer: 1 analysis + 3 writes + the judge's entrance check (2 calls, once for the
    // run) + 2 judge calls (the dropped constraint fails lexically, no judge needed);
    // execution: 6 dev examples for the accepted candidate and 6 for the seed.
    assert_eq!(g["costs"]["meta"]["calls"], 8, "{:#}", g["costs"]);
    assert_eq!(g["costs"]["execution"]["calls"], 12);
    // 8 calls * (100 in * $10/M + 10 out * $30/M) = $0.0104
    let meta_cost = g["costs"]["meta"]["cost_usd"].as_f64().unwrap();
    assert!((meta_cost - 0.0104).abs() < 1e-9, "{meta_cost}");
    let per = g["costs"]["per_execution"]["cost_usd"].as_f64().unwrap();
    assert!(
        (per - (100.0 * 0.1 + 10.0 * 0.4) / 1e6).abs() < 1e-12,
        "{per}"
    );

    // The meta model got chat-form meta-prompts: a system message, then the task.
    let requests = server.received_requests().await.unwrap();
    let analysis: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .filter(|b| b["model"] == "writer")
        .collect();
    assert_eq!(analysis.len(), 8);
    for b in &analysis {
        let roles: Vec<&str> = b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user"]);
    }

    // The prompt file: loadable, with its rationale, its constraint and four demonstrations.
    let saved = std::fs::read_to_string(&out_path).unwrap();
    let p: toml::Value = toml::from_str(&saved).unwrap();
    assert!(
        p["rationale"]
            .as_str()
            .unwrap()
            .contains("sarcasm reads as praise")
    );
    assert_eq!(p["constraints"][0].as_str().unwrap(), RULE);
    assert_eq!(p["demos"].as_array().unwrap().len(), 4);
    assert!(dir.path().join("generated.report.json").exists());
    // It evaluates as a prompt file of its own.
    let eval = metaprompt(
        dir.path(),
        &[
            "eval",
            task.to_str().unwrap(),
            "--prompt",
            out_path.to_str().unwrap(),
            "--json",
        ],
        &[],
    )
    .await;
    assert!(eval.status.success(), "{}", stderr(&eval));

    // Human output: the candidates table with the rejection reasons, and both layers' costs.
    let human = metaprompt(
        dir.path(),
        &["generate", "--task", task.to_str().unwrap(), "-n", "3"],
        &[],
    )
    .await;
    assert!(human.status.success(), "{}", stderr(&human));
    let text = stdout(&human);
    for needle in [
        "REJECTED",
        "seed",
        "meta ",
        "execution ",
        "amortized",
        "prompt ",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(dir.path().join("results/mini-sst-generated.toml").exists());

    // Both runs landed in the library (the second found the same prompt there), the chosen
    // candidate proposed with its guardrail report, each run with every candidate.
    assert!(
        text.contains("mini-sst@v2")
            && text.contains("review     metaprompt review show mini-sst@v2"),
        "{text}"
    );
    let library = dir.path().join(".local/share/metaprompt/library.sqlite");
    let store = metaprompt_registry::SqliteStore::open(&library)
        .await
        .unwrap();
    use metaprompt_registry::Store as _;
    let versions = store.versions("mini-sst").await.unwrap();
    assert_eq!(versions.len(), 2, "seed and the generated prompt");
    let generated = &versions[1];
    assert_eq!(generated.origin, metaprompt_registry::Origin::Generate);
    assert_eq!(generated.review, metaprompt_registry::ReviewState::Proposed);
    assert_eq!(generated.parents, vec![versions[0].hash.clone()]);
    assert!(
        generated
            .checks
            .as_ref()
            .unwrap()
            .to_string()
            .contains("kept"),
        "{:?}",
        generated.checks
    );
    let evidence = store.evidence(generated).await.unwrap();
    assert!(evidence[0].baseline.is_some() && evidence[0].p_value.is_some());
    let runs = store.runs("mini-sst").await.unwrap();
    assert_eq!(runs.len(), 2);
    let run = store.run(&runs[0].id).await.unwrap();
    assert_eq!(run.candidates.len(), 3);
    assert!(run.candidates.iter().any(|c| c.status == "rejected"));
    assert!(run.started_at <= run.finished_at);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_where_every_candidate_breaks_a_constraint_fails_and_says_why() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "writer",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "<prompt>Label the review.</prompt>"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server);
    let task = task(dir.path());
    let out = metaprompt(
        dir.path(),
        &["generate", "--task", task.to_str().unwrap(), "-n", "2"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no candidate passed the checks"), "{err}");
    assert!(stdout(&out).contains("REJECTED"), "{}", stdout(&out));
    assert!(!dir.path().join("results").exists(), "nothing is written");
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_without_a_description_or_task_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = metaprompt(dir.path(), &["generate"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("say what the prompt must do"));
    let out = metaprompt(
        dir.path(),
        &["generate", "x", "--templates", "/no/such/dir"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/dir"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn translate_a_chat_prompt_to_the_embedded_base_model_reports_parity() {
    let server = mock_chat_model().await;
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &server);
    let data = sst2().join("data");
    let task = dir.path().join("task.toml");
    std::fs::write(
        &task,
        format!(
            r#"name = "sst2"
description = "Classify the sentiment of a movie review as positive or negative."
inputs = ["sentence"]
output = "label"
constraints = ["{RULE}"]
prompt = "chat.toml"

[data]
train = "{}"
dev = "{}"

[[metrics]]
type = "choice"
labels = ["negative", "positive"]

[models]
meta = "mock:writer"
execution = "mock:runner"
"#,
            data.join("train.jsonl").display(),
            data.join("dev.jsonl").display()
        ),
    )
    .unwrap();
    // A chat-form prompt with demonstrations, written for the mock chat model.
    let source = dir.path().join("chat.toml");
    std::fs::write(
        &source,
        format!(
            r#"name = "chat"
instruction = "You are a film critic's assistant. Reply with one word, positive or negative. {RULE}"
target_model = "mock:runner"

[[messages]]
role = "user"
content = "Review: {{{{ sentence }}}}"

[[demos]]
sentence = "a great, fun film"
label = "positive"

[[demos]]
sentence = "dull and slow"
label = "negative"
"#
        ),
    )
    .unwrap();
    let models = metaprompt_local::fetch::default_models_dir();
    let env = [("METAPROMPT_MODELS_DIR", models.to_str().unwrap())];
    let out = metaprompt(
        dir.path(),
        &[
            "translate",
            source.to_str().unwrap(),
            "--to",
            "local:gemma-3-270m",
            "--task",
            task.to_str().unwrap(),
            "--limit",
            "30",
            "-n",
            "1",
            "--json",
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(t["source_model"], "mock:runner");
    assert_eq!(t["target_model"], "local:gemma-3-270m");
    assert_eq!(t["source_score"]["examples"], 30);
    assert_eq!(t["source_score"]["mode"], "generation");
    let candidates = t["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "v0 (layout only) and v1 (rewritten)");
    for c in candidates {
        assert_eq!(c["status"], "accepted", "{c:#}");
        // On the base model: a text-form prompt, scored by label log-probabilities.
        assert_eq!(c["score"]["mode"], "label scoring");
        assert_eq!(c["prompt"]["template"], "Review: {{ sentence }}\nLabel:");
        assert!(c["prompt"]["instruction"].as_str().unwrap().contains(RULE));
    }
    let parity = &t["parity"]["paired"];
    assert_eq!(parity["n"], 30);
    assert!(parity["low"].as_f64().unwrap() <= parity["diff"].as_f64().unwrap());
    // The translated prompt file is for the target, keeps the constraint, and says where it
    // came from.
    let path = dir.path().join("results/chat-for-local-gemma-3-270m.toml");
    let p: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(p["target_model"].as_str().unwrap(), "local:gemma-3-270m");
    assert_eq!(p["constraints"][0].as_str().unwrap(), RULE);
    assert!(
        p["rationale"]
            .as_str()
            .unwrap()
            .contains("Translated from mock:runner")
    );
    // The rewrite request told the meta model about the base-model target.
    let requests = server.received_requests().await.unwrap();
    let rewrite = requests
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .find(|b| {
            b["messages"][1]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("Rewrite this prompt"))
        })
        .unwrap();
    let user = rewrite["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("a base model that continues text"), "{user}");
    assert!(user.contains("You are a film critic's assistant"), "{user}");
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_runs_on_the_embedded_base_model_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let models = metaprompt_local::fetch::default_models_dir();
    let env = [("METAPROMPT_MODELS_DIR", models.to_str().unwrap())];
    let task = sst2().join("task.toml");
    let out_path = dir.path().join("p.toml");
    let out = metaprompt(
        dir.path(),
        &[
            "generate",
            "Classify the sentiment of a movie review as positive or negative",
            "--task",
            task.to_str().unwrap(),
            "-n",
            "2",
            "--limit",
            "24",
            "--out",
            out_path.to_str().unwrap(),
            "--json",
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g["meta_model"], "local:gemma-3-270m");
    assert!(!g["analysis"].as_str().unwrap().is_empty());
    // Completion-form meta calls: one analysis and two samples.
    assert_eq!(g["costs"]["meta"]["calls"], 3);
    assert_eq!(g["costs"]["meta"]["cost_usd"], 0.0);
    let scored: Vec<f64> = g["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["score"]["score"]["mean"].as_f64())
        .collect();
    assert!(!scored.is_empty(), "{g:#}");
    // Four label-balanced demonstrations lift the base model well above its zero-shot seed.
    let seed = g["seed_score"]["score"]["mean"].as_f64().unwrap();
    let best = scored.iter().copied().fold(0.0, f64::max);
    assert!(best > seed + 0.15, "best {best} vs seed {seed}");
    let p: toml::Value = toml::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(p["demos"].as_array().unwrap().len(), 4);
    assert!(
        p["rationale"]
            .as_str()
            .unwrap()
            .contains("Analysis of the task")
    );
}

/// The default meta model, Qwen2.5-Coder 1.5B Instruct, with the chat meta-prompts and their
/// `form.rules`: what it writes is short, says the answer format with the task's labels, and
/// is neither code, a template with a placeholder, nor the example of form (issue 35; before
/// the form rules it wrote paragraphs that ended with its own analysis's failure modes).
#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_instruct_meta_model_writes_short_instructions_with_the_answer_format() {
    let dir = tempfile::tempdir().unwrap();
    let models = metaprompt_local::fetch::default_models_dir();
    let env = [("METAPROMPT_MODELS_DIR", models.to_str().unwrap())];
    let task = sst2().join("task.toml");
    let out_path = dir.path().join("p.toml");
    let out = metaprompt(
        dir.path(),
        &[
            "generate",
            "--task",
            task.to_str().unwrap(),
            "--meta",
            "local:qwen2.5-coder-1.5b-instruct",
            "-m",
            "local:qwen2.5-coder-0.5b-instruct",
            "-n",
            "3",
            "--no-eval",
            "--no-library",
            "--out",
            out_path.to_str().unwrap(),
            "--json",
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(g["meta_model"], "local:qwen2.5-coder-1.5b-instruct");
    let written: Vec<String> = g["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "accepted")
        .filter_map(|c| c["prompt"]["instruction"].as_str().map(str::to_string))
        .collect();
    assert!(!written.is_empty(), "{g:#}");
    for w in &written {
        let lower = w.to_lowercase();
        assert!(w.split_whitespace().count() <= 60, "short: {w}");
        assert!(
            lower.contains("positive") && lower.contains("negative"),
            "the answer format, with the labels: {w}"
        );
        for junk in [
            "[",
            "```",
            "def ",
            "recipe",
            "vegetarian",
            "overfitting",
            "training",
        ] {
            assert!(!lower.contains(junk), "{junk:?} in {w}");
        }
    }
}
