//! What only the Anthropic Messages provider does, against a local mock server with bodies
//! shaped like Anthropic's public API reference: the `system` field and headers, its usage
//! arithmetic, the 529 "overloaded" status. The behaviours every HTTP provider shares are in
//! `conformance.rs`.

#![allow(clippy::unwrap_used)]

use metaprompt_llm::{Config, FinishReason, Hub, Message, Request};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn hub(server: &MockServer) -> Hub {
    let config = format!(
        "[providers.anthropic]\nbase_url = \"{}\"\nretry_base_ms = 5\n\n[models.judge]\nprovider = \"anthropic\"\nmodel = \"claude-3-5-haiku-20241022\"\n",
        server.uri()
    );
    Hub::new(Config::parse(&config).unwrap())
        .with_env(|k| (k == "ANTHROPIC_API_KEY").then(|| "sk-ant-test".to_string()))
}

fn message_body(text: &str) -> serde_json::Value {
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

#[tokio::test]
async fn messages_success_with_system_field_headers_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant-test"))
        .and(header("anthropic-version", "2023-06-01"))
        .and(body_json(json!({
            "model": "claude-3-5-haiku-20241022",
            "max_tokens": 64,
            "system": "Answer in one word.",
            "messages": [{"role": "user", "content": "Capital of France?"}],
            "temperature": 0.0,
            "stop_sequences": ["\n"]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(message_body("Paris")))
        .expect(1)
        .mount(&server)
        .await;
    let model = hub(&server).model("judge").unwrap();
    assert_eq!(model.info().name, "anthropic:claude-3-5-haiku-20241022");
    let request = Request::chat(vec![
        Message::system("Answer in one word."),
        Message::user("Capital of France?"),
    ])
    .max_tokens(64)
    .stop("\n");
    let r = model.complete(&request).await.unwrap();
    assert_eq!(r.text, "Paris");
    assert_eq!(r.finish_reason, FinishReason::Stop);
    // Anthropic's input_tokens excludes cache reads: we report the total and the cached part.
    assert_eq!(
        (
            r.usage.input_tokens,
            r.usage.output_tokens,
            r.usage.cached_input_tokens
        ),
        (3095, 503, Some(1000))
    );
    // Built-in claude-3-5-haiku pricing: $0.80 in, $0.08 cached in, $4 out per million tokens.
    let expected = (2095.0 * 0.80 + 1000.0 * 0.08 + 503.0 * 4.0) / 1e6;
    assert!(
        (r.cost_usd.unwrap() - expected).abs() < 1e-12,
        "{:?}",
        r.cost_usd
    );
}

#[tokio::test]
async fn overloaded_then_success() {
    let server = MockServer::start().await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(529).set_body_json(json!({
            "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}
        })))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(message_body("fine")))
        .expect(1)
        .mount(&server)
        .await;
    let r = hub(&server)
        .model("judge")
        .unwrap()
        .complete(&Request::text("Hi"))
        .await
        .unwrap();
    assert_eq!(r.text, "fine");
}
