//! What only the OpenAI-compatible provider does, against a local mock server with bodies
//! shaped like OpenAI's public API reference: the request body, the completions endpoint for
//! text prompts, optional usage, an empty `choices`. The behaviours every HTTP provider shares
//! (errors, retries, timeouts, malformed bodies, the cache, redaction) are in `conformance.rs`.

#![allow(clippy::unwrap_used)]

use metaprompt_llm::{Config, FinishReason, Hub, Message, Request};
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
async fn a_chat_request_has_the_documented_body_and_headers() {
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
async fn an_empty_choices_list_names_what_was_expected() {
    let server = MockServer::start().await;
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
    assert!(e.contains("at least one entry in `choices`"), "{e}");
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
