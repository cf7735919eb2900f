//! Unbounded template work, end to end: a version whose template does too much work with its
//! own content is refused when it is added (over HTTP and by `prompts add`); one that is heavy
//! only on some input is answered 4xx by `/run` and `/render` within the render limits or the
//! deadline, while `/healthz` keeps answering; `eval` on such a prompt fails cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, cli, metaprompt, mock_model, route_task, setup, stderr, token};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Three nested loops of 1000: a billion steps on its own.
const NESTED: &str = "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}x{% endfor %}{% endfor %}{% endfor %}";

/// Cubic in the length of `question`: cheap for a short question, unbounded for a long one.
const CUBIC: &str = "{% for a in question %}{% for b in question %}{% for c in question %}.{% endfor %}{% endfor %}{% endfor %}Question: {{ question }}\nTeam:";

async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = match &body {
        Some(b) => http.post(url).json(b),
        None => http.get(url),
    };
    r = r.bearer_auth(token);
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Add `heavy` (the cubic template, short demonstrations: it passes the add check) labelled
/// production on the mock model.
async fn add_heavy(dir: &Path) {
    std::fs::write(
        dir.join("heavy.toml"),
        format!(
            "name = \"heavy\"\ntemplate = {}\ntarget_model = \"mock:exec\"\n",
            toml::Value::String(CUBIC.into())
        ),
    )
    .unwrap();
    cli(dir, &["prompts", "add", "heavy", "heavy.toml"]).await;
    cli(dir, &["prompts", "label", "heavy@v1", "production"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_versions_are_refused_over_http_and_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_model(Duration::ZERO).await;
    setup(dir.path(), &mock).await;
    let editor = token(dir.path(), "editor").await;
    let s = Server::start(dir.path(), &[]);
    let http = http();
    let url = s.url("/v1/prompts/support/versions");
    let demo_heavy = format!(
        "template = \"Q: {{{{ question }}}}\"\ndemo_template = {}\n[[demos]]\nquestion = \"a\"\nteam = \"b\"\n",
        toml::Value::String(NESTED.replace('x', "{{ question }}"))
    );
    let input_heavy = format!(
        "template = {}\ndemo_template = \"{{{{ question }}}}\"\n[[demos]]\nquestion = \"{}\"\nteam = \"b\"\n",
        toml::Value::String(CUBIC.into()),
        "q".repeat(2000)
    );
    for (what, body) in [
        (
            "nested loops",
            json!({"toml": format!("template = {}\n", toml::Value::String(NESTED.into()))}),
        ),
        (
            "string repetition",
            json!({"file": {"template": "{{ 'x' * 50000000 }}"}}),
        ),
        (
            "recursion",
            json!({"file": {"template": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"}}),
        ),
        (
            "huge join",
            json!({"file": {"template": "{{ range(100000)|join('x' * 1000) }}"}}),
        ),
        ("heavy demo template", json!({"toml": demo_heavy})),
        (
            "heavy on its own demonstration's input",
            json!({"toml": input_heavy}),
        ),
    ] {
        let started = Instant::now();
        let (status, v) = call(&http, &url, &editor, Some(body)).await;
        let took = started.elapsed();
        assert!(status.is_client_error(), "{what}: {status} {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("`support`") && message.contains("within the limits"),
            "{what}: {message}"
        );
        assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
    }
    // A demonstration with a null field cannot be kept as a prompt file (TOML has no null):
    // refused, naming where the null is, rather than stored as an empty version.
    let (status, v) = call(
        &http,
        &url,
        &editor,
        Some(json!({"file": {
            "template": "Q: {{ question }}",
            "demo_template": "{{ question }}\n",
            "demos": [{"question": "a", "team": "b"}, {"question": null, "team": "b"}],
        }})),
    )
    .await;
    assert_eq!(status.as_u16(), 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("demos[1].question is null"), "{message}");
    // Nothing was stored.
    let (_, v) = call(&http, &s.url("/v1/prompts/support/versions"), &editor, None).await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 1, "{v}");
    assert!(
        call(&http, &s.url("/healthz"), &editor, None)
            .await
            .0
            .is_success()
    );

    // The CLI's add goes through the same check.
    std::fs::write(
        dir.path().join("hostile.toml"),
        format!("template = {}\n", toml::Value::String(NESTED.into())),
    )
    .unwrap();
    let lib = dir.path().join("lib.db");
    let out = metaprompt(
        dir.path(),
        &["prompts", "add", "hostile", "hostile.toml"],
        &[
            ("METAPROMPT_LIBRARY", lib.to_str().unwrap()),
            ("METAPROMPT_AUTHOR", "tester"),
        ],
    )
    .await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("hostile") && err.contains("max_fuel") && !err.contains("panicked"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heavy_input_is_a_4xx_while_the_server_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_model(Duration::ZERO).await;
    setup(dir.path(), &mock).await;
    add_heavy(dir.path()).await;
    let runner = token(dir.path(), "runner").await;
    let config = dir.path().join("metaprompt.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    let long = "q".repeat(3000);
    let run = json!({"inputs": {"question": long}});
    let http = http();
    // A short question renders and runs.
    {
        let s = Server::start(dir.path(), &[]);
        let (status, v) = call(
            &http,
            &s.url("/v1/prompts/heavy/run"),
            &runner,
            Some(json!({"inputs": {"question": "invoice?"}})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
    }
    // Stopped by the step limit (the defaults), and by the deadline when the steps allowed are
    // many more than the deadline lets run.
    for (extra, expected) in [
        ("", "max_fuel"),
        (
            "[templates]\nmax_fuel = 100000000000\ntimeout_secs = 1\n",
            "timeout_secs",
        ),
    ] {
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
        let s = Server::start(dir.path(), &[]);
        let mut heavy = Vec::new();
        for path in ["/run", "/render", "/run", "/render"] {
            let (http, url, runner, run) = (
                http.clone(),
                s.url(&format!("/v1/prompts/heavy{path}")),
                runner.clone(),
                run.clone(),
            );
            heavy.push(tokio::spawn(async move {
                let started = Instant::now();
                let (status, v) = call(&http, &url, &runner, Some(run)).await;
                (path, status, v, started.elapsed())
            }));
        }
        // `/healthz` answers quickly all along.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            let t = Instant::now();
            let (status, _) = call(&http, &s.url("/healthz"), &runner, None).await;
            assert!(status.is_success());
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{expected}: /healthz took {:?}",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for h in heavy {
            let (path, status, v, took) = h.await.unwrap();
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {v}");
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("heavy") && message.contains(expected),
                "{path}: {message}"
            );
            assert_eq!(v["error"]["code"], "template_limit", "{v}");
            assert!(took < Duration::from_secs(10), "{path}: took {took:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_fails_cleanly_on_a_heavy_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_model(Duration::ZERO).await;
    setup(dir.path(), &mock).await;
    let task = route_task(dir.path());
    let text = std::fs::read_to_string(&task).unwrap().replace(
        "template = \"Question: {{ question }}\\nTeam:\"",
        &format!("template = {}", toml::Value::String(NESTED.into())),
    );
    std::fs::write(&task, text).unwrap();
    let started = Instant::now();
    let out = metaprompt(dir.path(), &["--no-cache", "eval", &task], &[]).await;
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("prompt `seed`") && err.contains("max_fuel") && !err.contains("panicked"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
}
