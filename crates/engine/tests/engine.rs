//! The engine driven as another program would drive it, with no CLI: against a loopback
//! OpenAI-compatible mock server (an execution model that answers right only when the prompt
//! says "magic", and a chat meta model whose answers depend only on the request), an
//! optimization is cancelled mid-round, resumed from its checkpoint, and must end exactly where
//! an uninterrupted run ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use metaprompt_engine::{
    Engine, EngineError, EngineOptions, EvalRequest, OptimizeRequest, Progress, Scope, Stored,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

struct Model;

impl Respond for Model {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 2});
        if let Some(prompt) = body["prompt"].as_str() {
            // The execution model: right only with "magic" in the prompt.
            let last = prompt
                .lines()
                .rev()
                .find(|l| l.starts_with("Review:"))
                .unwrap_or("");
            let answer = if prompt.contains("magic") && last.ends_with("negative") {
                "negative"
            } else {
                "positive"
            };
            return ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"text": answer, "finish_reason": "stop"}],
                "usage": usage,
            }));
        }
        let user = body["messages"][1]["content"].as_str().unwrap_or("");
        if body["messages"][0]["content"]
            .as_str()
            .is_some_and(|s| s.starts_with("You grade"))
        {
            // As a judge: right when the graded output is the reference answer.
            let reference = user
                .lines()
                .find_map(|l| l.strip_prefix("Reference answer: "))
                .unwrap_or("?");
            let output = user.rsplit("Output to grade:\n").next().unwrap_or("");
            let score = if output.trim() == reference { 1.0 } else { 0.0 };
            let text = json!({"score": score, "reason": "compared with the reference"}).to_string();
            return ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": usage,
            }));
        }
        // The meta model: an instruction chosen by the request's seed (so a replayed call gets
        // the same answer), the magic one for half the seeds.
        let seed = body["seed"].as_u64().unwrap_or(0);
        let text = if seed.is_multiple_of(2) {
            format!(
                "<prompt>Label the review; the magic word is {}: answer negative for a negative review.</prompt>",
                seed % 97
            )
        } else {
            format!(
                "<prompt>Label the sentiment of review kind {}.</prompt>",
                seed % 89
            )
        };
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage,
        }))
    }
}

async fn server() -> MockServer {
    let server = MockServer::start().await;
    for p in ["/completions", "/chat/completions"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(Model)
            .mount(&server)
            .await;
    }
    server
}

fn write_jsonl(path: &Path, range: std::ops::Range<usize>) {
    let lines: Vec<String> = range
        .map(|i| {
            let label = if i % 2 == 0 { "positive" } else { "negative" };
            json!({"sentence": format!("review number {i} is {label}"), "label": label}).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// A task folder with train/dev/test data, on the mock models.
fn task(dir: &Path) -> PathBuf {
    write_jsonl(&dir.join("train.jsonl"), 1000..1012);
    write_jsonl(&dir.join("dev.jsonl"), 0..20);
    write_jsonl(&dir.join("test.jsonl"), 500..510);
    let path = dir.join("task.toml");
    std::fs::write(
        &path,
        r#"name = "synthetic"
description = "Label the review as positive or negative."
inputs = ["sentence"]
output = "label"

[prompt]
name = "seed"
template = "Review: {{ sentence }}\nLabel:"

[data]
train = "train.jsonl"
dev = "dev.jsonl"
test = "test.jsonl"

[[metrics]]
type = "choice"
labels = ["negative", "positive"]

[models]
execution = "mock:exec"
meta = "mock:meta"
max_tokens = 4
"#,
    )
    .unwrap();
    path
}

async fn engine(server: &MockServer, dir: &Path) -> Engine {
    engine_with(server, dir, "").await
}

/// The engine, with `exec` added to the execution model's config table.
async fn engine_with(server: &MockServer, dir: &Path, exec: &str) -> Engine {
    let config = metaprompt_llm::Config::parse(&format!(
        r#"
[providers.mock]
kind = "openai"
base_url = "{}"

[models."mock:exec"]
format = "text"
pricing = {{ input_per_mtok = 0.0, output_per_mtok = 0.0 }}
{exec}

[models."mock:meta"]
format = "chat"
pricing = {{ input_per_mtok = 0.0, output_per_mtok = 0.0 }}
"#,
        server.uri()
    ))
    .unwrap();
    Engine::open(EngineOptions {
        config,
        // No shared cache: each run replays from the cache in its own run directory.
        cache: None,
        library: Some(dir.join("library.sqlite")),
        author: "test".into(),
    })
    .await
    .unwrap()
}

fn request(task: &Path, run_dir: PathBuf) -> OptimizeRequest {
    let mut r = OptimizeRequest::new(task);
    r.algorithm = "opro".into();
    r.rounds = 3;
    r.patience = 5;
    r.per_round = 2;
    r.minibatch = 10;
    r.meta.seed = 11;
    r.run_dir = Some(run_dir);
    r
}

/// Prepare, start and wait for an optimization.
async fn optimize(
    engine: &Engine,
    r: OptimizeRequest,
) -> Result<metaprompt_engine::OptimizeResult, EngineError> {
    engine.optimize(r).await?.start().wait().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_optimization_resumes_to_the_result_of_an_uninterrupted_one() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    let engine = engine(&server, dir.path()).await;
    let requests = async || server.received_requests().await.unwrap().len();

    let whole = optimize(&engine, request(&task, dir.path().join("whole")))
        .await
        .unwrap();
    let whole_requests = requests().await;
    assert!(!whole.outcome.kept_seed, "the magic instruction wins");
    assert!(matches!(&whole.stored, Stored::In { added, .. } if added.len() == 2));

    // The same run, cancelled while round 2 is in flight.
    let cut = dir.path().join("cut");
    let mut handle = engine
        .optimize(request(&task, cut.clone()))
        .await
        .unwrap()
        .start();
    let mut round = 0;
    let mut cancelled_in = None;
    while let Some(p) = handle.next().await {
        match p {
            Progress::Step { text } if text.starts_with("round ") => {
                round = text[6..].split(' ').next().unwrap().parse().unwrap();
            }
            Progress::Candidate { .. } if round == 2 && cancelled_in.is_none() => {
                handle.cancel();
                cancelled_in = Some(round);
            }
            _ => {}
        }
    }
    assert_eq!(cancelled_in, Some(2));
    match handle.wait().await {
        Err(EngineError::Cancelled { resume: Some(d) }) => assert_eq!(d, cut),
        other => panic!("expected a cancelled run, got {other:?}"),
    }
    assert!(!cut.join("report.json").exists());
    let before_cut = requests().await - whole_requests;

    let prepared = engine.resume(&cut).await.unwrap();
    assert!(prepared.resumed());
    let resumed = prepared.start().wait().await.unwrap();
    // What round 2 had finished before the cancel is not paid again: the resumed run replays
    // it from the run's cache, so the two halves together sent exactly what the whole run did.
    let after_resume = requests().await - whole_requests - before_cut;
    assert!(before_cut > 0 && after_resume > 0);
    assert_eq!(
        before_cut + after_resume,
        whole_requests,
        "{before_cut} requests before the cancel + {after_resume} after the resume"
    );
    let json = |o: &metaprompt_optimize::run::Outcome| serde_json::to_value(o).unwrap();
    let (a, b) = (json(&resumed.outcome), json(&whole.outcome));
    for key in [
        "winner",
        "best",
        "kept_seed",
        "best_dev",
        "winner_test",
        "stop",
        "metric_calls",
        "meta_calls",
        "pool",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
    assert!(cut.join("best.toml").exists() && cut.join("report.html").exists());

    // A finished run does not resume.
    let e = engine.resume(&cut).await.unwrap_err();
    assert!(matches!(e, EngineError::Finished { .. }), "{e}");
    assert!(e.to_string().contains("has finished"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_fails_writing_its_report_is_not_finished_and_resumes_to_write_it() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    let engine = engine(&server, dir.path()).await;
    let whole = optimize(&engine, request(&task, dir.path().join("whole")))
        .await
        .unwrap();
    // A directory where the report goes: the run's end fails after its verdict.
    let run = dir.path().join("blocked");
    std::fs::create_dir_all(run.join("report.html")).unwrap();
    let e = optimize(&engine, request(&task, run.clone()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("report.html"), "{e}");
    let cp: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap())
            .unwrap();
    assert!(cp["stop"].is_null(), "not marked finished: {}", cp["stop"]);
    std::fs::remove_dir(run.join("report.html")).unwrap();
    let resumed = engine
        .resume(&run)
        .await
        .unwrap()
        .start()
        .wait()
        .await
        .unwrap();
    assert!(run.join("report.html").is_file() && run.join("best.toml").is_file());
    // The kept prompt is named as the library stores it, not after the seed file.
    let best = std::fs::read_to_string(run.join("best.toml")).unwrap();
    assert!(best.contains("name = \"synthetic\""), "{best}");
    assert_eq!(resumed.prompt.name, "synthetic");
    assert_eq!(resumed.outcome.winner, whole.outcome.winner);
    assert_eq!(resumed.outcome.metric_calls, whole.outcome.metric_calls);
    assert!(matches!(&resumed.stored, Stored::In { .. }));
    let cp: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint.json")).unwrap())
            .unwrap();
    assert!(!cp["stop"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_llm_rubric_judge_is_metered_and_logged_with_the_meta_layer() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    let text = std::fs::read_to_string(&task).unwrap().replace(
        "type = \"choice\"\nlabels = [\"negative\", \"positive\"]",
        "type = \"llm-rubric\"\nrubric = \"The label is the reference answer.\"",
    );
    std::fs::write(&task, text).unwrap();
    let engine = engine(&server, dir.path()).await;
    let run = dir.path().join("run");
    let mut r = request(&task, run.clone());
    r.rounds = 1;
    let result = optimize(&engine, r).await.unwrap();
    let o = &result.outcome;
    // One judge call per scored pair, on top of the meta-prompt calls.
    assert!(o.metric_calls > 0);
    assert!(
        o.meta_usage.calls >= o.meta_calls + o.metric_calls,
        "meta usage {} calls vs {} meta-prompt calls + {} metric calls",
        o.meta_usage.calls,
        o.meta_calls,
        o.metric_calls
    );
    let log = std::fs::read_to_string(run.join("calls.jsonl")).unwrap();
    let meta_lines = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["layer"] == "meta")
        .count() as u64;
    assert_eq!(meta_lines, o.meta_usage.calls + o.meta_usage.failed);
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_reports_progress_and_writes_results() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    let engine = engine(&server, dir.path()).await;
    let out = dir.path().join("results.jsonl");
    let mut seen = 0;
    let result = engine
        .eval(EvalRequest {
            scope: Scope::new(&task),
            prompt: None,
            out: Some(out.clone()),
        })
        .drive(|p| {
            if let Progress::Evaluating { total, .. } = p {
                assert_eq!(total, 20);
                seen += 1;
            }
        })
        .await
        .unwrap();
    assert!(seen > 0);
    // The seed says "positive" to everything: half right.
    assert_eq!(result.report.summary.examples, 20);
    assert!((result.report.summary.score.mean - 0.5).abs() < 1e-9);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_clear_errors() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    let engine = engine(&server, dir.path()).await;
    let mut r = request(&task, dir.path().join("x"));
    r.algorithm = "nope".into();
    let e = engine.optimize(r).await.unwrap_err().to_string();
    assert!(
        e.contains("unknown algorithm `nope`") && e.contains("opro"),
        "{e}"
    );

    // A broken train file is an error naming the file and line, not "no train data".
    std::fs::write(
        dir.path().join("train.jsonl"),
        "{\"sentence\": \"a\", \"label\": \"positive\"}\nnot json\n",
    )
    .unwrap();
    let e = engine
        .optimize(request(&task, dir.path().join("y")))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.jsonl") && e.contains('2'), "{e}");

    let e = engine
        .resume(&dir.path().join("no-such-run"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-run"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_too_long_for_the_model_fails_eval_compare_and_optimize_before_any_call() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let task = task(dir.path());
    // Line 7 of dev.jsonl becomes a 1 MB review (under the 8 MiB template output limit, so the
    // context check is what refuses it).
    let dev = dir.path().join("dev.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&dev)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[6] = json!({"sentence": "long ".repeat(200_000), "label": "positive"}).to_string();
    std::fs::write(&dev, lines.join("\n") + "\n").unwrap();
    let expect = |e: &EngineError| {
        let text = e.to_string();
        assert!(matches!(e, EngineError::TooLong(_)), "{e:?}");
        assert!(
            text.contains(&format!("{}:7: prompt `seed`", dev.display()))
                && text.contains("about 250004 tokens")
                && text.contains("more than the 8188 that fit mock:exec (8192 tokens of context")
                && text.contains("context_tokens of [models.\"mock:exec\"]"),
            "{text}"
        );
    };
    let engine = engine_with(&server, dir.path(), "context_tokens = 8192").await;
    let e = engine
        .eval(EvalRequest {
            scope: Scope::new(&task),
            prompt: None,
            out: Some(dir.path().join("results.jsonl")),
        })
        .wait()
        .await
        .unwrap_err();
    expect(&e);
    let prompt = dir.path().join("p.toml");
    std::fs::write(&prompt, "template = \"Review: {{ sentence }}\\nLabel:\"\n").unwrap();
    let e = engine
        .compare(metaprompt_engine::CompareRequest {
            scope: Scope::new(&task),
            a: prompt.clone(),
            b: prompt.clone(),
        })
        .wait()
        .await
        .unwrap_err();
    assert!(e.to_string().contains(":7: prompt `p`"), "{e}");
    let e = engine
        .optimize(request(&task, dir.path().join("run")))
        .await
        .unwrap_err();
    expect(&e);
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        0,
        "no call was made"
    );
    // Where the window is not known, nothing is refused.
    let unknown = engine_with(&server, dir.path(), "").await;
    let mut scope = Scope::new(&task);
    scope.limit = Some(3);
    unknown
        .eval(EvalRequest {
            scope,
            prompt: None,
            out: Some(dir.path().join("results.jsonl")),
        })
        .wait()
        .await
        .unwrap();
}
