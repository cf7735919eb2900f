//! What the caller got wrong is a 4xx naming the part to change, never a 502: an input too long
//! for the model's context and a model that does not exist, through `/v1/prompts/NAME/run` and
//! the OpenAI-compatible endpoints, from an HTTP provider (a loopback mock answering as OpenAI
//! does) and from the embedded model. A provider that fails on its own is still a 502. And the
//! address `serve --listen` takes may be a host name (`localhost:PORT`).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, metaprompt, models_dir, setup, stderr, token};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// An input the mock provider finds too long for its context.
const TOO_LONG: &str = "TOO_LONG";
/// An input on which the mock provider fails on its own (a 500).
const PROVIDER_DOWN: &str = "PROVIDER_DOWN";

/// An OpenAI-compatible provider that refuses as OpenAI does: model `nosuch` is a 404
/// `model_not_found`, a request mentioning [`TOO_LONG`] a 400 `context_length_exceeded`, one
/// mentioning [`PROVIDER_DOWN`] a 500; anything else is answered `other`.
struct Refusing;

impl Respond for Refusing {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let text = body.to_string();
        let error = |status: u16, message: &str, param: Value, code: &str| {
            ResponseTemplate::new(status).set_body_json(json!({"error": {
                "message": message, "type": "invalid_request_error", "param": param, "code": code,
            }}))
        };
        if body["model"] == "nosuch" {
            return error(
                404,
                "The model `nosuch` does not exist or you do not have access to it.",
                Value::Null,
                "model_not_found",
            );
        }
        if text.contains(TOO_LONG) {
            return error(
                400,
                "This model's maximum context length is 4097 tokens. However, your messages \
                 resulted in 9120 tokens. Please reduce the length of the messages.",
                json!("messages"),
                "context_length_exceeded",
            );
        }
        if text.contains(PROVIDER_DOWN) {
            return ResponseTemplate::new(500).set_body_json(
                json!({"error": {"message": "The server had an error", "type": "server_error"}}),
            );
        }
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 1});
        ResponseTemplate::new(200).set_body_json(if body.get("messages").is_some() {
            json!({"choices": [{"message": {"role": "assistant", "content": "other"},
                "finish_reason": "stop"}], "usage": usage})
        } else {
            json!({"choices": [{"text": "other", "finish_reason": "stop"}], "usage": usage})
        })
    }
}

async fn post(url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The refusal: its status, `param` and `code`.
fn assert_refused(got: &(StatusCode, Value), status: StatusCode, param: &str, code: &str) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body:#}");
    assert_eq!(body["error"]["param"], param, "{body:#}");
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_from_an_http_provider_are_4xx_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Refusing)
        .mount(&mock)
        .await;
    setup(d, &mock).await;
    // No retries, so the provider's own 500 is answered at once.
    let config = std::fs::read_to_string(d.join("metaprompt.toml")).unwrap();
    std::fs::write(
        d.join("metaprompt.toml"),
        config.replace(
            "concurrency = 256\n",
            "concurrency = 256\nmax_retries = 0\n",
        ),
    )
    .unwrap();
    let t = token(d, "runner").await;
    let s = Server::start(d, &[]);
    let run = s.url("/v1/prompts/support/run");
    let chat = s.url("/v1/chat/completions");
    let completions = s.url("/v1/completions");
    let long = format!("{TOO_LONG} {}", "word ".repeat(50));

    // Through `/run`: the inputs are what to shorten; the model is what does not exist.
    let ok = post(&run, &t, json!({"inputs": {"question": "hello"}})).await;
    assert_eq!(ok.0, StatusCode::OK, "{:#}", ok.1);
    assert_refused(
        &post(&run, &t, json!({"inputs": {"question": long}})).await,
        StatusCode::BAD_REQUEST,
        "inputs",
        "context_length_exceeded",
    );
    assert_refused(
        &post(
            &run,
            &t,
            json!({"inputs": {"question": "hello"}, "model": "mock:nosuch"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "model",
        "model_not_found",
    );
    // A model spec that does not resolve at all.
    for spec in ["nosuchprovider:x", "no-provider-at-all", "mock:"] {
        let got = post(
            &run,
            &t,
            json!({"inputs": {"question": "hello"}, "model": spec}),
        )
        .await;
        assert!(got.0.is_client_error(), "{spec}: {} {:#}", got.0, got.1);
        assert_eq!(got.1["error"]["param"], "model", "{spec}: {:#}", got.1);
    }
    // The provider failing on its own stays a 502.
    assert_refused(
        &post(&run, &t, json!({"inputs": {"question": PROVIDER_DOWN}})).await,
        StatusCode::BAD_GATEWAY,
        "model",
        "model_error",
    );

    // Through the OpenAI-compatible endpoints, a served prompt and a model alike.
    let say = |model: &str, text: &str| json!({"model": model, "messages": [{"role": "user", "content": text}]});
    for model in ["prompt:support", "mock:exec"] {
        assert_refused(
            &post(&chat, &t, say(model, &long)).await,
            StatusCode::BAD_REQUEST,
            "messages",
            "context_length_exceeded",
        );
        // Streaming: refused before the stream starts, with the same status and body.
        let mut body = say(model, &long);
        body["stream"] = json!(true);
        assert_refused(
            &post(&chat, &t, body).await,
            StatusCode::BAD_REQUEST,
            "messages",
            "context_length_exceeded",
        );
    }
    let got = post(
        &chat,
        &t,
        json!({"model": "prompt:support", "messages": [{"role": "user", "content": "x"}],
            "metaprompt_inputs": {"question": long}}),
    )
    .await;
    assert_refused(
        &got,
        StatusCode::BAD_REQUEST,
        "metaprompt_inputs",
        "context_length_exceeded",
    );
    assert_refused(
        &post(
            &completions,
            &t,
            json!({"model": "mock:exec", "prompt": long}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "prompt",
        "context_length_exceeded",
    );
    let got = post(&chat, &t, say("mock:nosuch", "hello")).await;
    assert_refused(&got, StatusCode::NOT_FOUND, "model", "model_not_found");
    assert_eq!(got.1["error"]["type"], "not_found_error", "{:#}", got.1);
    let got = post(&chat, &t, say("nosuchprovider:x", "hello")).await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{:#}", got.1);
    assert_eq!(got.1["error"]["param"], "model", "{:#}", got.1);
    assert_refused(
        &post(&chat, &t, say("mock:exec", PROVIDER_DOWN)).await,
        StatusCode::BAD_GATEWAY,
        "model",
        "model_error",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn client_errors_embedded_input_longer_than_the_context_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = MockServer::start().await;
    setup(d, &mock).await;
    let config = std::fs::read_to_string(d.join("metaprompt.toml")).unwrap();
    std::fs::write(
        d.join("metaprompt.toml"),
        format!("{config}[local]\ncontext_size = 512\nparallel = 2\n"),
    )
    .unwrap();
    let t = token(d, "runner").await;
    let s = Server::start(d, &[]);
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(200);
    let got = post(
        &s.url("/v1/chat/completions"),
        &t,
        json!({"model": "local:gemma-3-270m", "max_tokens": 4,
            "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_refused(
        &got,
        StatusCode::BAD_REQUEST,
        "messages",
        "context_length_exceeded",
    );
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("context_size"), "{message}");
    let got = post(
        &s.url("/v1/prompts/support/run"),
        &t,
        json!({"inputs": {"question": long}, "model": "local:gemma-3-270m", "max_tokens": 4}),
    )
    .await;
    assert_refused(
        &got,
        StatusCode::BAD_REQUEST,
        "inputs",
        "context_length_exceeded",
    );
    // What fits is answered.
    let got = post(
        &s.url("/v1/chat/completions"),
        &t,
        json!({"model": "local:gemma-3-270m", "max_tokens": 2,
            "messages": [{"role": "user", "content": "Hello"}]}),
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{:#}", got.1);
}

/// `serve ARGS --print-address` on the library `dir/lib.db`: the address it printed, or its
/// error output when it exited.
fn serve_address(dir: &Path, args: &[&str]) -> Result<String, String> {
    let log = dir.join(format!("listen-{}.log", common::rand_suffix()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_metaprompt"))
        .current_dir(dir)
        .env_clear()
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("METAPROMPT_NO_CACHE", "1")
        .env("METAPROMPT_LIBRARY", dir.join("lib.db"))
        .env("METAPROMPT_MODELS_DIR", models_dir())
        .args(["serve", "--print-address"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    serde_json::from_str::<Value>(&line)
        .ok()
        .and_then(|v| v["address"].as_str().map(String::from))
        .ok_or_else(|| std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_listens_on_a_host_name_and_names_the_flag_for_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr = serve_address(d, &["--listen", "localhost:0", "--insecure-local"]).unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let addr = serve_address(d, &["--listen", "127.0.0.1:0"]).unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    for garbage in ["nowhere", "localhost:http", ":8080", "localhost:70000"] {
        let e = serve_address(d, &["--listen", garbage]).unwrap_err();
        assert!(e.contains(&format!("--listen {garbage}:")), "{e}");
        assert!(e.contains("localhost:8080"), "{e}");
    }
    // In the config file, the error names the field.
    std::fs::write(
        d.join("metaprompt.toml"),
        "[server]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = metaprompt(
        d,
        &["serve"],
        &[("METAPROMPT_LIBRARY", d.join("lib.db").to_str().unwrap())],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("[server] listen = \"nowhere\""),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        d.join("metaprompt.toml"),
        "[server]\nlisten = \"localhost:0\"\n",
    )
    .unwrap();
    let addr = serve_address(d, &["--insecure-local"]).unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
}
