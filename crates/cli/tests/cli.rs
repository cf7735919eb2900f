//! The `metaprompt` binary end to end: real process, real config and cache files, and a local
//! mock of the OpenAI-compatible wire format.

#![allow(clippy::unwrap_used)]

mod common;

use common::{metaprompt, sst2, stderr, stdout};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn openai_mock(expected_calls: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1741569952,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Bonjour."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
        })))
        .expect(expected_calls)
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_prints_answer_usage_and_cost_then_serves_the_repeat_from_cache() {
    let server = openai_mock(1).await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!("{}/v1", server.uri());
    let env = [
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", "sk-test"),
    ];
    let args = [
        "complete",
        "--model",
        "openai:gpt-4o-mini",
        "Say hello in French.",
    ];

    let first = metaprompt(dir.path(), &args, &env).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first), "Bonjour.\n");
    let err = stderr(&first);
    // 1000 * $0.15/M + 500 * $0.60/M = $0.00045
    assert!(
        err.contains("1000 in + 500 out tokens")
            && err.contains("$0.00045 ")
            && err.contains("live call"),
        "{err}"
    );

    let second = metaprompt(dir.path(), &args, &env).await;
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&second), "Bonjour.\n");
    let err = stderr(&second);
    assert!(
        err.contains("from cache, no cost") && err.contains("· $0 ·"),
        "{err}"
    );

    let stats = metaprompt(dir.path(), &["cache", "stats", "--json"], &[]).await;
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(
        (stats["entries"].as_u64(), stats["hits"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["models"][0]["model"], "openai:gpt-4o-mini");

    let cleared = metaprompt(dir.path(), &["cache", "clear"], &[]).await;
    assert!(
        stdout(&cleared).contains("deleted 1 cached responses"),
        "{}",
        stdout(&cleared)
    );
    let stats = metaprompt(dir.path(), &["cache", "stats"], &[]).await;
    assert!(stdout(&stats).contains("entries   0"), "{}", stdout(&stats));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_makes_every_call_live_and_json_output_is_complete() {
    let server = openai_mock(2).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metaprompt.toml"),
        format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n[models.cheap]\nprovider = \"mock\"\nmodel = \"tiny\"\npricing = {{ input_per_mtok = 2.0, output_per_mtok = 4.0 }}\n",
            server.uri()
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let out = metaprompt(
            dir.path(),
            &["--no-cache", "complete", "-m", "cheap", "--json", "hi"],
            &[],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["text"], "Bonjour.");
        assert_eq!(r["cached"], false);
        assert_eq!(r["usage"]["input_tokens"], 1000);
        assert!(
            (r["cost_usd"].as_f64().unwrap() - 0.004).abs() < 1e-12,
            "{r}"
        );
    }
    assert!(
        !dir.path().join("cache.sqlite").exists(),
        "--no-cache must not create the cache"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typo_in_the_config_is_an_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metaprompt.toml"),
        "[cache]\nenabled = true\n\n[providers.openai]\nbase_utl = \"http://x\"\n",
    )
    .unwrap();
    let out = metaprompt(
        dir.path(),
        &["complete", "-m", "openai:gpt-4o-mini", "hi"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("metaprompt.toml") && err.contains("line 5") && err.contains("base_utl"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_missing_keys_and_empty_prompts_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = metaprompt(dir.path(), &["complete", "-m", "gpt-4o", "hi"], &[]).await;
    assert!(
        stderr(&out).contains("neither `provider:model`"),
        "{}",
        stderr(&out)
    );
    let out = metaprompt(dir.path(), &["complete", "-m", "openai:gpt-4o", "hi"], &[]).await;
    assert!(
        stderr(&out).contains("OPENAI_API_KEY is not set"),
        "{}",
        stderr(&out)
    );
    let out = metaprompt(
        dir.path(),
        &["complete", "-m", "openai:gpt-4o", "  "],
        &[("OPENAI_API_KEY", "k")],
    )
    .await;
    assert!(
        stderr(&out).contains("the prompt is empty"),
        "{}",
        stderr(&out)
    );
    let out = metaprompt(
        dir.path(),
        &["--config", "nope.toml", "config", "show"],
        &[],
    )
    .await;
    assert!(
        stderr(&out).contains("nope.toml: no such config file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_cache_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cache.sqlite"), vec![7u8; 8192]).unwrap();
    let out = metaprompt(
        dir.path(),
        &["complete", "-m", "openai:gpt-4o", "hi"],
        &[("OPENAI_API_KEY", "k")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cache.sqlite") && err.contains("--no-cache"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn config_model_shows_the_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let out = metaprompt(
        dir.path(),
        &["config", "model", "anthropic:claude-3-5-haiku-latest"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("https://api.anthropic.com") && text.contains("$ANTHROPIC_API_KEY (NOT SET)"),
        "{text}"
    );
    assert!(
        text.contains("$0.8 in / $4 out per million tokens"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_runs_the_embedded_model_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let models = metaprompt_local::fetch::default_models_dir();
    let models = models.to_str().unwrap();
    let out = metaprompt(
        dir.path(),
        &["complete", "--max-tokens", "6", "The capital of France is"],
        &[("METAPROMPT_MODELS_DIR", models)],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).trim().is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("local:gemma-3-270m") && err.contains("out tokens · $0 ·"),
        "{err}"
    );
    let list = metaprompt(
        dir.path(),
        &["model", "list"],
        &[("METAPROMPT_MODELS_DIR", models)],
    )
    .await;
    assert!(
        stdout(&list).contains("gemma-3-270m") && stdout(&list).contains("pulled"),
        "{}",
        stdout(&list)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_pull_from_a_url_checks_the_sha256() {
    let server = MockServer::start().await;
    let body = b"GGUF\x03\x00\x00\x00 not really a model".to_vec();
    Mock::given(method("GET"))
        .and(path("/files/tiny.gguf"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(body))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let env = [("METAPROMPT_MODELS_DIR", models.to_str().unwrap())];
    let url = format!("{}/files/tiny.gguf", server.uri());
    let wrong = "0".repeat(64);
    let out = metaprompt(
        dir.path(),
        &["model", "pull", &url, "--sha256", &wrong],
        &env,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("checksum mismatch"),
        "{}",
        stderr(&out)
    );
    assert!(!models.join("tiny.gguf").exists() && !models.join("tiny.gguf.partial").exists());
    let actual = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            b"GGUF\x03\x00\x00\x00 not really a model",
        ))
    };
    let out = metaprompt(
        dir.path(),
        &["model", "pull", &url, "--sha256", &actual],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(models.join("tiny.gguf").is_file());
    let out = metaprompt(dir.path(), &["model", "pull", &url], &env).await;
    assert!(stderr(&out).contains("needs --sha256"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_on_the_embedded_model_reproduces_from_cache() {
    let dir = tempfile::tempdir().unwrap();
    let models = metaprompt_local::fetch::default_models_dir();
    let env = [("METAPROMPT_MODELS_DIR", models.to_str().unwrap())];
    let task = sst2().join("task.toml");
    let prompt = sst2().join("prompts/four_shot.toml");
    let out = dir.path().join("r.jsonl");
    let args = [
        "eval",
        task.to_str().unwrap(),
        "--prompt",
        prompt.to_str().unwrap(),
        "--limit",
        "24",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let first = metaprompt(dir.path(), &args, &env).await;
    assert!(first.status.success(), "{}", stderr(&first));
    let a: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(a["examples"], 24);
    assert_eq!(a["mode"], "label scoring");
    assert!(a["score"]["mean"].as_f64().unwrap() > 0.6, "{a}");
    assert!(a["score"]["low"].as_f64().unwrap() <= a["score"]["mean"].as_f64().unwrap());
    assert_eq!(a["cached"], 0);
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count(), 24);
    let second = metaprompt(dir.path(), &args, &env).await;
    let b: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(b["score"], a["score"], "identical scores");
    assert_eq!(b["cached"], 24, "second run served from the cache");
    // Human output names the results file.
    let human = metaprompt(dir.path(), &args[..args.len() - 1], &env).await;
    let text = stdout(&human);
    assert!(
        text.contains("95% CI") && text.contains("cost      $0") && text.contains("r.jsonl"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_on_the_embedded_model_finds_four_shot_significantly_better_than_zero_shot() {
    let dir = tempfile::tempdir().unwrap();
    let models = metaprompt_local::fetch::default_models_dir();
    let env = [("METAPROMPT_MODELS_DIR", models.to_str().unwrap())];
    let task = sst2().join("task.toml");
    let zero = sst2().join("prompts/zero_shot.toml");
    let four = sst2().join("prompts/four_shot.toml");
    let out = metaprompt(
        dir.path(),
        &[
            "compare",
            task.to_str().unwrap(),
            zero.to_str().unwrap(),
            four.to_str().unwrap(),
            "--limit",
            "60",
            "--json",
        ],
        &env,
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(c["paired"]["diff"].as_f64().unwrap() > 0.15, "{c}");
    assert!(c["paired"]["p_value"].as_f64().unwrap() < 0.05, "{c}");
    assert!(c["mcnemar"]["p_value"].as_f64().unwrap() < 0.05, "{c}");
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_reports_bad_task_files_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("task.toml");
    std::fs::write(&task, "name = \"x\"\ndescripton = \"typo\"\n").unwrap();
    let out = metaprompt(dir.path(), &["eval", task.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("task.toml") && err.contains("line 2") && err.contains("descripton"),
        "{err}"
    );
}

/// A chat model that answers "positive", but fails (400, not retried) on reviews 3 and 7.
async fn flaky_mock() -> MockServer {
    struct Flaky;
    impl wiremock::Respond for Flaky {
        fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
            let body = String::from_utf8_lossy(&request.body);
            if body.contains("review 3 ") || body.contains("review 7 ") {
                return ResponseTemplate::new(400)
                    .set_body_json(json!({"error": {"message": "bad luck"}}));
            }
            ResponseTemplate::new(200).set_body_json(json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1}
            }))
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Flaky)
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_examples_are_unscored_not_zeros_and_fail_eval_unless_allowed() {
    let server = flaky_mock().await;
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<String> = (0..10)
        .map(|i| {
            json!({"sentence": format!("review {i} is good"), "label": "positive"}).to_string()
        })
        .collect();
    std::fs::write(dir.path().join("dev.jsonl"), rows.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("metaprompt.toml"),
        format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[models.\"mock:m\"]\nformat = \"chat\"\n",
            server.uri()
        ),
    )
    .unwrap();
    let task = dir.path().join("task.toml");
    std::fs::write(
        &task,
        "name = \"t\"\ndescription = \"d\"\ninputs = [\"sentence\"]\noutput = \"label\"\n\
         [prompt]\nname = \"p\"\ntemplate = \"Review: {{ sentence }}\"\n\
         [data]\ndev = \"dev.jsonl\"\n[[metrics]]\ntype = \"equals\"\n\
         [models]\nexecution = \"mock:m\"\n",
    )
    .unwrap();
    let t = task.to_str().unwrap();
    let out = metaprompt(dir.path(), &["--no-cache", "eval", t, "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("2 of 10 examples") && err.contains("unscored") && err.contains("bad luck"),
        "{err}"
    );
    // The score is over the 8 scored examples (all right), not 8/10.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["score"]["mean"], 1.0, "{summary}");
    assert_eq!(summary["errors"], 2);
    let ok = metaprompt(
        dir.path(),
        &["--no-cache", "eval", t, "--max-unscored", "2"],
        &[],
    )
    .await;
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("score     1.000"), "{}", stdout(&ok));
}
