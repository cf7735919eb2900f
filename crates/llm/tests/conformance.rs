//! One conformance suite for every HTTP provider: the same wire behaviours, run against a local
//! mock server once per provider. A provider describes its wire format in a [`Wire`] (path,
//! headers, success and error bodies, how to configure it against a base URL) and gets every
//! test here with one line in `conformance!` at the bottom. What only one provider does (its
//! request body shape, its own statuses, its usage arithmetic) stays in its own `*_wire.rs`.
//!
//! The behaviours: success with usage and cost; error bodies; 429 with Retry-After; a demanded
//! wait beyond the limit; 5xx then success; giving up after the configured retries; timeouts;
//! malformed success bodies (retried, then a clear error); oversized bodies; the response
//! cache (hits, and no key in the file); per-model concurrency; an unusable base URL; and no
//! echoed key in errors or the call log.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use metaprompt_llm::{
    CallLog, Config, FinishReason, Hub, LlmError, Message, Meter, Metered, Provider, Request,
    ResponseCache,
};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// What the suite needs to know of a provider's wire format.
trait Wire {
    /// The model spec the suite opens.
    const SPEC: &'static str;
    /// The environment variable the config names for the key, and the key. The key is shaped
    /// like no token on purpose: only a redactor that knows it can mask it.
    const KEY_ENV: &'static str;
    const KEY: &'static str;
    /// Where a chat request is posted, relative to the server root.
    const PATH: &'static str;
    /// The header carrying the key, and its value for `key`.
    fn auth_header(key: &str) -> (&'static str, String);
    /// Config text building the provider against the server at `base`; `extra` holds more
    /// settings for the provider's table (`max_retries = 2`).
    fn config(base: &str, extra: &str) -> String;
    /// A documented success body answering `text`.
    fn success_body(text: &str) -> Value;
    /// What the success body reports: model, (input, output, cached input) tokens, and the
    /// cost under the model's built-in pricing.
    const REPORTED_MODEL: &'static str;
    const USAGE: (u64, u64, Option<u64>);
    const COST: f64;
    /// A documented error body with this message and error type.
    fn error_body(message: &str, kind: &str) -> Value;
    /// Valid JSON that lacks a field the format requires, and that field's name.
    fn missing_field_body() -> (Value, &'static str);
}

struct OpenAi;

impl Wire for OpenAi {
    const SPEC: &'static str = "mock:gpt-4o-mini";
    const KEY_ENV: &'static str = "MOCK_KEY";
    const KEY: &'static str = "canaryOPENAI7f3a9c1e5b";
    const PATH: &'static str = "/v1/chat/completions";
    fn auth_header(key: &str) -> (&'static str, String) {
        ("authorization", format!("Bearer {key}"))
    }
    fn config(base: &str, extra: &str) -> String {
        format!(
            "[providers.mock]\nkind = \"openai\"\nbase_url = \"{base}/v1\"\napi_key_env = \"MOCK_KEY\"\nretry_base_ms = 5\n{extra}\n"
        )
    }
    fn success_body(text: &str) -> Value {
        json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
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
    const REPORTED_MODEL: &'static str = "gpt-4o-mini-2024-07-18";
    const USAGE: (u64, u64, Option<u64>) = (19, 10, Some(0));
    // Built-in gpt-4o-mini pricing: $0.15 in, $0.60 out per million tokens.
    const COST: f64 = (19.0 * 0.15 + 10.0 * 0.60) / 1e6;
    fn error_body(message: &str, kind: &str) -> Value {
        json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
    }
    fn missing_field_body() -> (Value, &'static str) {
        (
            json!({"id": "x", "object": "chat.completion", "model": "m"}),
            "choices",
        )
    }
}

struct Anthropic;

impl Wire for Anthropic {
    const SPEC: &'static str = "anthropic:claude-3-5-haiku-20241022";
    const KEY_ENV: &'static str = "ANTHROPIC_API_KEY";
    const KEY: &'static str = "canaryANTHROPIC4d2e8b6a0c";
    const PATH: &'static str = "/v1/messages";
    fn auth_header(key: &str) -> (&'static str, String) {
        ("x-api-key", key.to_string())
    }
    fn config(base: &str, extra: &str) -> String {
        format!("[providers.anthropic]\nbase_url = \"{base}\"\nretry_base_ms = 5\n{extra}\n")
    }
    fn success_body(text: &str) -> Value {
        json!({
            "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-20241022",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 2095, "output_tokens": 503, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 1000}
        })
    }
    const REPORTED_MODEL: &'static str = "claude-3-5-haiku-20241022";
    // Anthropic's input_tokens excludes cache reads: the total and the cached part.
    const USAGE: (u64, u64, Option<u64>) = (3095, 503, Some(1000));
    // Built-in claude-3-5-haiku pricing: $0.80 in, $0.08 cached in, $4 out per million tokens.
    const COST: f64 = (2095.0 * 0.80 + 1000.0 * 0.08 + 503.0 * 4.0) / 1e6;
    fn error_body(message: &str, kind: &str) -> Value {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    }
    fn missing_field_body() -> (Value, &'static str) {
        (
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1}
            }),
            "content",
        )
    }
}

fn hub<W: Wire>(server: &MockServer, extra: &str) -> Hub {
    Hub::new(Config::parse(&W::config(&server.uri(), extra)).unwrap())
        .with_env(|k| (k == W::KEY_ENV).then(|| W::KEY.to_string()))
}

fn model<W: Wire>(server: &MockServer, extra: &str) -> std::sync::Arc<dyn Provider> {
    hub::<W>(server, extra).model(W::SPEC).unwrap()
}

fn request() -> Request {
    Request::chat(vec![
        Message::system("You are terse."),
        Message::user("Say hello."),
    ])
    .max_tokens(20)
}

fn ok<W: Wire>(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(W::success_body(text))
}

/// The error wrapped by a `RetriesExhausted` with `attempts` attempts.
fn exhausted(e: &LlmError, attempts: u32) -> &LlmError {
    match e {
        LlmError::RetriesExhausted {
            attempts: n, last, ..
        } if *n == attempts => last,
        other => panic!("expected RetriesExhausted after {attempts} attempts, got {other:?}"),
    }
}

async fn success_reports_text_usage_and_cost<W: Wire>() {
    let server = MockServer::start().await;
    let (name, value) = W::auth_header(W::KEY);
    Mock::given(method("POST"))
        .and(path(W::PATH))
        .and(header(name, value.as_str()))
        .respond_with(ok::<W>("Hello."))
        .expect(1)
        .mount(&server)
        .await;
    let r = model::<W>(&server, "").complete(&request()).await.unwrap();
    assert_eq!(r.text, "Hello.");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    let u = r.usage;
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cached_input_tokens),
        W::USAGE
    );
    assert_eq!(r.model, W::REPORTED_MODEL);
    let cost = r.cost_usd.unwrap();
    assert!((cost - W::COST).abs() < 1e-12, "{cost} != {}", W::COST);
    assert!(!r.cached);
}

async fn an_error_body_is_a_typed_non_retryable_error_with_the_servers_message<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(W::error_body(
            "max_tokens: Field required",
            "invalid_request_error",
        )))
        .expect(1)
        .mount(&server)
        .await;
    let e = model::<W>(&server, "")
        .complete(&request())
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::Status { status: 400, .. }), "{e:?}");
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains("HTTP 400")
            && text.contains("max_tokens: Field required (invalid_request_error)"),
        "{text}"
    );
}

async fn rate_limited_with_retry_after_then_success_yields_one_answer<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(W::error_body("Rate limit reached", "rate_limit_error")),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(W::PATH))
        .respond_with(ok::<W>("Hello after waiting."))
        .expect(1)
        .mount(&server)
        .await;
    let start = Instant::now();
    let r = model::<W>(&server, "").complete(&request()).await.unwrap();
    assert_eq!(r.text, "Hello after waiting.");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "honoured Retry-After: {:?}",
        start.elapsed()
    );
}

async fn a_demanded_wait_beyond_the_limit_fails_fast<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "3600")
                .set_body_json(W::error_body("You exceeded your quota.", "quota")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let e = model::<W>(&server, "")
        .complete(&request())
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::WaitTooLong { .. }), "{e:?}");
    assert!(e.to_string().contains("max_retry_after_secs"), "{e}");
}

async fn server_error_then_success_is_retried<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(W::error_body("The server had an error", "server_error")),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(W::PATH))
        .respond_with(ok::<W>("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let r = model::<W>(&server, "").complete(&request()).await.unwrap();
    assert_eq!(r.text, "ok");
}

async fn persistent_server_errors_give_up_after_the_configured_retries<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_json(W::error_body("The server had an error", "server_error")),
        )
        .expect(3)
        .mount(&server)
        .await;
    let e = model::<W>(&server, "max_retries = 2")
        .complete(&request())
        .await
        .unwrap_err();
    let last = exhausted(&e, 3);
    assert!(
        matches!(last, LlmError::Status { status: 500, .. }),
        "{last:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("gave up after 3 attempts") && text.contains("HTTP 500"),
        "{text}"
    );
}

async fn a_slow_server_times_out_and_is_retried_then_reported<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(ok::<W>("late").set_delay(Duration::from_secs(3)))
        .expect(2)
        .mount(&server)
        .await;
    let e = model::<W>(&server, "timeout_secs = 0.3\nmax_retries = 1")
        .complete(&request())
        .await
        .unwrap_err();
    let last = exhausted(&e, 2);
    assert!(matches!(last, LlmError::Timeout { .. }), "{last:?}");
    assert!(e.to_string().contains("per-request timeout"), "{e}");
}

async fn a_malformed_success_body_is_retried_like_a_server_error<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>502 Bad Gateway</html>", "text/html"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(W::PATH))
        .respond_with(ok::<W>("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let r = model::<W>(&server, "").complete(&request()).await.unwrap();
    assert_eq!(r.text, "ok");
}

async fn truncated_json_every_time_gives_a_clear_error_after_the_retries<W: Wire>() {
    let server = MockServer::start().await;
    let whole = W::success_body("cut short").to_string();
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(&whole[..whole.len() / 2], "application/json"),
        )
        .expect(3)
        .mount(&server)
        .await;
    let e = model::<W>(&server, "max_retries = 2")
        .complete(&request())
        .await
        .unwrap_err();
    let last = exhausted(&e, 3);
    assert!(matches!(last, LlmError::Decode { .. }), "{last:?}");
    let text = e.to_string();
    assert!(
        text.contains("gave up after 3 attempts") && text.contains("not valid JSON"),
        "{text}"
    );
}

async fn html_and_missing_fields_name_what_was_expected<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("<html>502 Bad Gateway</html>", "text/html"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let (body, field) = W::missing_field_body();
    Mock::given(path(W::PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    let model = model::<W>(&server, "max_retries = 0");
    // With no retries, the one attempt is reported as given up after.
    let e = model.complete(&request()).await.unwrap_err();
    assert!(matches!(exhausted(&e, 1), LlmError::Decode { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("not valid JSON") && text.contains("502 Bad Gateway"),
        "{text}"
    );
    let e = model.complete(&request()).await.unwrap_err().to_string();
    assert!(e.contains(&format!("missing field `{field}`")), "{e}");
}

async fn an_oversized_body_fails_with_the_url_and_the_limit<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(ok::<W>(&"many words ".repeat(200)))
        .expect(1)
        .mount(&server)
        .await;
    let e = model::<W>(&server, "max_response_bytes = 1000")
        .complete(&request())
        .await
        .unwrap_err();
    assert!(
        matches!(e, LlmError::ResponseTooLarge { limit: 1000, .. }),
        "{e:?}"
    );
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(
        text.contains(W::PATH)
            && text.contains("1000 bytes")
            && text.contains("max_response_bytes"),
        "{text}"
    );
}

async fn the_second_identical_call_is_served_from_the_cache_which_holds_no_key<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(ok::<W>("Hello."))
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.sqlite");
    let cache = ResponseCache::open(&file).await.unwrap();
    let hub = hub::<W>(&server, "").with_cache(Some(cache.clone()));
    let model = hub.model(W::SPEC).unwrap();
    let first = model.complete(&request()).await.unwrap();
    let second = model.complete(&request()).await.unwrap();
    assert!(!first.cached && second.cached);
    assert_eq!(second.text, first.text);
    assert_eq!(
        second.usage, first.usage,
        "usage is what the answer took to make"
    );
    assert_eq!(second.cost_usd, Some(0.0));
    // Another sample of the same request is a new call, then cached in its own right.
    assert!(!model.complete(&request().sample(1)).await.unwrap().cached);
    assert!(model.complete(&request().sample(1)).await.unwrap().cached);
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.entries, stats.hits), (2, 2));
    // The key is not stored anywhere in the cache file.
    cache.close().await;
    let mut wal = file.clone().into_os_string();
    wal.push("-wal");
    for f in [file.into_os_string(), wal] {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes.windows(W::KEY.len()).any(|w| w == W::KEY.as_bytes()),
            "API key found in {f:?}"
        );
    }
}

async fn concurrency_is_capped_per_model<W: Wire>() {
    let server = MockServer::start().await;
    Mock::given(path(W::PATH))
        .respond_with(ok::<W>("x").set_delay(Duration::from_millis(200)))
        .expect(6)
        .mount(&server)
        .await;
    let model = model::<W>(&server, "concurrency = 2");
    let start = Instant::now();
    let calls = (0..6).map(|i| {
        let model = model.clone();
        async move { model.complete(&request().sample(i)).await }
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

async fn an_unusable_base_url_fails_before_any_call<W: Wire>() {
    let err = Config::parse(&W::config("not a url", "")).unwrap_err();
    assert!(
        err.contains("base_url") && err.contains("not a url"),
        "{err}"
    );
}

async fn a_key_echoed_by_the_server_is_in_no_error_or_call_log<W: Wire>() {
    let server = MockServer::start().await;
    let (name, value) = W::auth_header(W::KEY);
    let echo = format!("Invalid header {name}: {value}; key {} unknown", W::KEY);
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(W::error_body(&echo, "authentication_error")),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(401).set_body_raw(format!("<html>{echo}</html>"), "text/html"),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(W::PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(format!("<html>{echo}</html>"), "text/html"),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("calls.jsonl");
    let meter = Meter::logged(CallLog::append(&log_path).unwrap(), "execution");
    let model = Metered::wrap(model::<W>(&server, "max_retries = 0"), meter);
    for _ in 0..3 {
        let e = model.complete(&request()).await.unwrap_err();
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains(W::KEY), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(log.lines().count(), 3);
    assert!(!log.contains(W::KEY), "{log}");
}

/// Every behaviour above, as tests in one module per provider.
macro_rules! conformance {
    ($($module:ident: $wire:ty),* $(,)?) => {$(
        mod $module {
            conformance!(@tests $wire;
                success_reports_text_usage_and_cost,
                an_error_body_is_a_typed_non_retryable_error_with_the_servers_message,
                rate_limited_with_retry_after_then_success_yields_one_answer,
                a_demanded_wait_beyond_the_limit_fails_fast,
                server_error_then_success_is_retried,
                persistent_server_errors_give_up_after_the_configured_retries,
                a_slow_server_times_out_and_is_retried_then_reported,
                a_malformed_success_body_is_retried_like_a_server_error,
                truncated_json_every_time_gives_a_clear_error_after_the_retries,
                html_and_missing_fields_name_what_was_expected,
                an_oversized_body_fails_with_the_url_and_the_limit,
                the_second_identical_call_is_served_from_the_cache_which_holds_no_key,
                concurrency_is_capped_per_model,
                an_unusable_base_url_fails_before_any_call,
                a_key_echoed_by_the_server_is_in_no_error_or_call_log,
            );
        }
    )*};
    (@tests $wire:ty; $($test:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            super::$test::<$wire>().await;
        }
    )*};
}

conformance! {
    openai: super::OpenAi,
    anthropic: super::Anthropic,
}
