//! The OpenAI-compatible provider against a local mock server, with bodies shaped like OpenAI's
//! public API reference: success with usage, error bodies, 429 with Retry-After, 5xx then
//! success, persistent 5xx, timeouts, truncated and incomplete JSON, and the response cache.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use metaprompt_llm::{Config, FinishReason, Hub, LlmError, Message, Request, ResponseCache};
use serde_json::json;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn hub(server: &MockServer, extra: &str) -> Hub {
    let config = format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"MOCK_KEY\"\nretry_base_ms = 5\n{extra}",
        server.uri()
    );
    Hub::new(Config::parse(&config).unwrap())
        .with_env(|k| (k == "MOCK_KEY").then(|| "sk-test-123".to_string()))
}

fn chat_body(content: &str) -> serde_json::Value {
    json!({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default"
    })
}

fn chat_request() -> Request {
    Request::chat(vec![
        Message::system("You are terse."),
        Message::user("Say hello."),
    ])
    .max_tokens(20)
}

#[tokio::test]
async fn chat_success_reports_text_usage_and_cost() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test-123"))
        .and(body_partial_json(json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
            "max_tokens": 20, "temperature": 0.0
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_body("Hello.")))
        .expect(1)
        .mount(&server)
        .await;
    let model = hub(&server, "").model("mock:gpt-4o-mini").unwrap();
    let r = model.complete(&chat_request()).await.unwrap();
    assert_eq!(r.text, "Hello.");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    assert_eq!(
        (
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.usage.cached_input_tokens
        ),
        (19, 10, Some(0))
    );
    assert_eq!(r.model, "gpt-4o-mini-2024-07-18");
    // Built-in gpt-4o-mini pricing: $0.15 in, $0.60 out per million tokens.
    let expected = (19.0 * 0.15 + 10.0 * 0.60) / 1e6;
    assert!(
        (r.cost_usd.unwrap() - expected).abs() < 1e-15,
        "{:?}",
        r.cost_usd
    );
    assert!(!r.cached);
}

#[tokio::test]
async fn text_prompts_use_the_completions_endpoint() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/completions"))
        .and(body_partial_json(json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "stop": ["\n"], "seed": 1346066267577507604u64})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
            "object": "text_completion",
            "created": 1589478378,
            "model": "gpt-3.5-turbo-instruct",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"text": "\n\nThis is indeed a test", "index": 0, "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let model = hub(&server, "")
        .model("mock:gpt-3.5-turbo-instruct")
        .unwrap();
    let r = model
        .complete(&Request::text("Say this is a test").stop("\n").seed(7))
        .await
        .unwrap();
    assert_eq!(r.text, "\n\nThis is indeed a test");
    assert_eq!(r.finish_reason, FinishReason::Length);
    assert_eq!(r.usage.total(), 12);
}

#[tokio::test]
async fn an_error_body_is_a_typed_non_retryable_error_with_the_servers_message() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {"message": "Incorrect API key provided: sk-test-***.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let model = hub(&server, "").model("mock:gpt-4o-mini").unwrap();
    let e = model.complete(&chat_request()).await.unwrap_err();
    assert!(matches!(e, LlmError::Status { status: 401, .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("Incorrect API key provided"), "{e}");
}

#[tokio::test]
async fn rate_limited_with_retry_after_then_success_yields_one_answer() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1").set_body_json(json!({
            "error": {"message": "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}
        })))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_body("Hello after waiting.")))
        .expect(1)
        .mount(&server)
        .await;
    let model = hub(&server, "").model("mock:gpt-4o-mini").unwrap();
    let start = Instant::now();
    let r = model.complete(&chat_request()).await.unwrap();
    assert_eq!(r.text, "Hello after waiting.");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "honoured Retry-After: {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error", "param": null, "code": null}
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_body("ok")))
        .mount(&server)
        .await;
    let model = hub(&server, "").model("mock:gpt-4o-mini").unwrap();
    assert_eq!(model.complete(&chat_request()).await.unwrap().text, "ok");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn five_consecutive_server_errors_give_a_clear_error_after_the_configured_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}
        })))
        .expect(5)
        .mount(&server)
        .await;
    let model = hub(&server, "max_retries = 4")
        .model("mock:gpt-4o-mini")
        .unwrap();
    let e = model.complete(&chat_request()).await.unwrap_err();
    match &e {
        LlmError::RetriesExhausted { attempts, last, .. } => {
            assert_eq!(*attempts, 5);
            assert!(matches!(**last, LlmError::Status { status: 500, .. }));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("gave up after 5 attempts") && text.contains("HTTP 500"),
        "{text}"
    );
}

#[tokio::test]
async fn a_slow_server_times_out_and_is_retried_then_reported() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(chat_body("late"))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(2)
        .mount(&server)
        .await;
    let model = hub(&server, "timeout_secs = 0.3\nmax_retries = 1")
        .model("mock:gpt-4o-mini")
        .unwrap();
    let e = model.complete(&chat_request()).await.unwrap_err();
    match &e {
        LlmError::RetriesExhausted {
            attempts: 2, last, ..
        } => assert!(matches!(**last, LlmError::Timeout { .. }), "{last:?}"),
        other => panic!("expected timeouts, got {other:?}"),
    }
    assert!(e.to_string().contains("per-request timeout"), "{e}");
}

#[tokio::test]
async fn a_malformed_success_body_is_retried_like_a_server_error() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>502 Bad Gateway</html>", "text/html"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_body("ok")))
        .expect(1)
        .mount(&server)
        .await;
    let model = hub(&server, "").model("mock:gpt-4o-mini").unwrap();
    assert_eq!(model.complete(&chat_request()).await.unwrap().text, "ok");
}

#[tokio::test]
async fn truncated_json_every_time_gives_a_clear_error_after_the_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"id": "chatcmpl-1", "choices": [{"index": 0, "mess"#,
            "application/json",
        ))
        .expect(3)
        .mount(&server)
        .await;
    let model = hub(&server, "max_retries = 2")
        .model("mock:gpt-4o-mini")
        .unwrap();
    let e = model.complete(&chat_request()).await.unwrap_err();
    match &e {
        LlmError::RetriesExhausted {
            attempts: 3, last, ..
        } => assert!(matches!(**last, LlmError::Decode { .. }), "{last:?}"),
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("gave up after 3 attempts") && text.contains("not valid JSON"),
        "{text}"
    );
}

#[tokio::test]
async fn garbage_and_missing_fields_name_what_was_expected() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>502 Bad Gateway</html>", "text/html"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "x", "object": "chat.completion", "model": "m"})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "x", "choices": [], "model": "m"})),
        )
        .mount(&server)
        .await;
    let model = hub(&server, "max_retries = 0")
        .model("mock:gpt-4o-mini")
        .unwrap();
    let e = model
        .complete(&chat_request())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not valid JSON") && e.contains("502 Bad Gateway"),
        "{e}"
    );
    let e = model
        .complete(&chat_request())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `choices`"), "{e}");
    let e = model
        .complete(&chat_request())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one entry in `choices`"), "{e}");
}

#[tokio::test]
async fn a_demanded_wait_beyond_the_limit_fails_fast() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600").set_body_json(json!({
            "error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let model = hub(&server, "").model("mock:gpt-4o-mini").unwrap();
    let e = model.complete(&chat_request()).await.unwrap_err();
    assert!(matches!(e, LlmError::WaitTooLong { .. }), "{e:?}");
    assert!(e.to_string().contains("max_retry_after_secs"), "{e}");
}

#[tokio::test]
async fn responses_without_usage_have_unknown_cost() {
    let server = MockServer::start().await;
    let mut body = chat_body("hi");
    body.as_object_mut().unwrap().remove("usage");
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let r = hub(&server, "")
        .model("mock:gpt-4o-mini")
        .unwrap()
        .complete(&chat_request())
        .await
        .unwrap();
    assert_eq!((r.text.as_str(), r.cost_usd), ("hi", None));
}

#[tokio::test]
async fn the_second_identical_call_is_served_from_the_cache() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_body("Hello.")))
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cache = ResponseCache::open(&dir.path().join("cache.sqlite"))
        .await
        .unwrap();
    let hub = hub(&server, "").with_cache(Some(cache.clone()));
    let model = hub.model("mock:gpt-4o-mini").unwrap();
    let first = model.complete(&chat_request()).await.unwrap();
    let second = model.complete(&chat_request()).await.unwrap();
    assert!(!first.cached && second.cached);
    assert_eq!(second.text, first.text);
    assert_eq!(
        second.usage, first.usage,
        "usage is what the answer took to make"
    );
    assert_eq!(second.cost_usd, Some(0.0));
    // Another sample of the same request is a new call, then cached in its own right.
    let other = model.complete(&chat_request().sample(1)).await.unwrap();
    assert!(!other.cached);
    assert!(
        model
            .complete(&chat_request().sample(1))
            .await
            .unwrap()
            .cached
    );
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.entries, stats.hits), (2, 2));
    // The key is not stored anywhere in the cache file.
    cache.close().await;
    let bytes = std::fs::read(dir.path().join("cache.sqlite")).unwrap();
    let wal = std::fs::read(dir.path().join("cache.sqlite-wal")).unwrap_or_default();
    for b in [bytes, wal] {
        assert!(
            !b.windows(11).any(|w| w == b"sk-test-123"),
            "API key found in the cache file"
        );
    }
}

#[tokio::test]
async fn concurrency_is_capped_per_model() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(chat_body("x"))
                .set_delay(Duration::from_millis(200)),
        )
        .expect(6)
        .mount(&server)
        .await;
    let hub = hub(&server, "concurrency = 2");
    let model = hub.model("mock:gpt-4o-mini").unwrap();
    let start = Instant::now();
    let calls = (0..6).map(|i| {
        let model = model.clone();
        async move { model.complete(&chat_request().sample(i)).await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    // 6 calls of 200 ms, 2 at a time: at least 3 rounds.
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_key_echoed_by_the_server_is_in_no_error_or_call_log() {
    // Not shaped like a token, so only knowing the configured key can mask it.
    const CANARY: &str = "canary7f3a9c1e5bPLAIN";
    let server = MockServer::start().await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {"message": format!("Invalid header Authorization: Bearer {CANARY}; key {CANARY} unknown"), "type": "invalid_request_error"}
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!("<html>you sent x-api-key: {CANARY}</html>"),
            "text/html",
        ))
        .mount(&server)
        .await;
    let config = format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key_env = \"MOCK_KEY\"\nmax_retries = 0\n",
        server.uri()
    );
    let hub = Hub::new(Config::parse(&config).unwrap())
        .with_env(|k| (k == "MOCK_KEY").then(|| CANARY.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("calls.jsonl");
    let meter = metaprompt_llm::Meter::logged(
        metaprompt_llm::CallLog::append(&log_path).unwrap(),
        "execution",
    );
    let model = metaprompt_llm::Metered::wrap(hub.model("mock:gpt-4o-mini").unwrap(), meter);
    for _ in 0..2 {
        let e = model.complete(&chat_request()).await.unwrap_err();
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains(CANARY), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.lines().count(), 2);
    assert!(!log.contains(CANARY), "{log}");
}
