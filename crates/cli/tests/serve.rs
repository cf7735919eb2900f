//! `metaprompt serve` as applications and reviewers use it: the real binary on a loopback port
//! with a real library file, called over HTTP (reqwest, curl-like) and by the real `openai`
//! Python client. The execution model is a loopback OpenAI-compatible mock where the test is
//! about the service, and the embedded model where it is about serving a model.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, cli, metaprompt, mock_model, route_task_in_root, setup, stderr, token};
use metaprompt_registry::model::{NewVersion, Origin};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

struct Api {
    http: reqwest::Client,
}

impl Api {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    async fn call(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }
}

/// The error body every refusal carries.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, param: &str) {
    assert_eq!(status, want, "{body:#}");
    assert_eq!(body["error"]["param"], param, "{body:#}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_roles_etags_runs_feedback_and_review_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Each model call takes 300 ms, so the gateway's overhead metric can be told from it.
    let mock = mock_model(Duration::from_millis(300)).await;
    setup(d, &mock).await;
    let viewer = token(d, "viewer").await;
    let runner = token(d, "runner").await;
    let editor = token(d, "editor").await;
    let reviewer = token(d, "reviewer").await;
    let admin = token(d, "admin").await;
    let s = Server::start(d, &[]);
    let api = Api::new();

    // No token, a wrong token: 401 with the JSON error.
    let (st, b) = api
        .call("GET", &s.url("/v1/prompts/support"), None, None)
        .await;
    assert_error(st, &b, StatusCode::UNAUTHORIZED, "Authorization");
    let (st, b) = api
        .call("GET", &s.url("/v1/prompts/support"), Some("mp_wrong"), None)
        .await;
    assert_error(st, &b, StatusCode::UNAUTHORIZED, "Authorization");

    // Each endpoint refuses the role below the one it needs, and accepts that one.
    let run_body = json!({"inputs": {"question": "Why was I charged twice?"}});
    // (method, url, body, a role below the one needed, the role needed); viewer is the lowest.
    let cases: Vec<(&str, String, Option<Value>, &str, &str)> = vec![
        ("GET", s.url("/v1/prompts"), None, "", "viewer"),
        ("GET", s.url("/v1/review"), None, "", "viewer"),
        (
            "POST",
            s.url("/v1/prompts/support/run"),
            Some(run_body.clone()),
            "viewer",
            "runner",
        ),
        (
            "POST",
            s.url("/v1/chat/completions"),
            Some(
                json!({"model": "prompt:support", "messages": [{"role": "user", "content": "invoice?"}]}),
            ),
            "viewer",
            "runner",
        ),
        (
            "POST",
            s.url("/v1/prompts/support/versions"),
            Some(
                json!({"toml": "template = \"Q: {{ question }}\\nA:\"\ntarget_model = \"mock:exec\"\n"}),
            ),
            "runner",
            "editor",
        ),
        (
            "PUT",
            s.url("/v1/prompts/support/labels/staging"),
            Some(json!({"version": "v2"})),
            "runner",
            "editor",
        ),
        (
            "PUT",
            s.url("/v1/prompts/support/labels/production"),
            Some(json!({"version": "v1"})),
            "editor",
            "reviewer",
        ),
        ("GET", s.url("/v1/tokens"), None, "reviewer", "admin"),
    ];
    let token_of = |role: &str| match role {
        "viewer" => viewer.clone(),
        "runner" => runner.clone(),
        "editor" => editor.clone(),
        "reviewer" => reviewer.clone(),
        _ => admin.clone(),
    };
    for (m, url, body, below, needed) in &cases {
        let (st, b) = api.call(m, url, None, body.clone()).await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{m} {url} without a token: {b:#}"
        );
        if !below.is_empty() {
            let (st, b) = api.call(m, url, Some(&token_of(below)), body.clone()).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{m} {url} as {below}: {b:#}");
            let message = b["error"]["message"].as_str().unwrap();
            assert!(message.contains(needed), "{b:#}");
        }
        let (st, b) = api
            .call(m, url, Some(&token_of(needed)), body.clone())
            .await;
        assert!(st.is_success(), "{m} {url} as {needed}: {st} {b:#}");
    }

    // Fetch by label with an ETag; revalidation is a 304; moving the label changes it.
    let fetch = |tag: Option<String>| {
        let mut r = api
            .http
            .get(s.url("/v1/prompts/support?label=production"))
            .bearer_auth(&viewer);
        if let Some(t) = tag {
            r = r.header("if-none-match", t);
        }
        r.send()
    };
    let r = fetch(None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tag = r.headers()["etag"].to_str().unwrap().to_string();
    let v1: Value = r.json().await.unwrap();
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["variables"], json!(["question"]));
    assert_eq!(tag, format!("\"{}\"", v1["hash"].as_str().unwrap()));
    let r = fetch(Some(tag.clone())).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let (st, _) = api
        .call(
            "PUT",
            &s.url("/v1/prompts/support/labels/production"),
            Some(&reviewer),
            Some(json!({"version": "v2", "comment": "shorter"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let r = fetch(Some(tag.clone())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "a moved label is not fresh");
    let v2: Value = r.json().await.unwrap();
    assert_eq!(v2["version"], "v2");

    // Run, with tags; the inference is recorded with the version that served it.
    let (st, ran) = api
        .call(
            "POST",
            &s.url("/v1/prompts/support/run"),
            Some(&runner),
            Some(json!({"inputs": {"question": "Where is my invoice?"},
                        "tags": {"topic": "billing"}, "metadata": {"user": 7}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ran:#}");
    assert_eq!(ran["output"], "billing");
    assert_eq!(ran["version"], "v2");
    assert_eq!(ran["label"], "production");
    assert!(ran["cost_usd"].as_f64().unwrap() > 0.0);
    let id = ran["inference_id"].as_str().unwrap().to_string();

    // Feedback (bool, number, label with a correction), then read it all back.
    for score in [json!(true), json!(0.25), json!("wrong-team")] {
        let (st, b) = api
            .call(
                "POST",
                &s.url("/v1/feedback"),
                Some(&runner),
                Some(json!({"inference_id": id, "score": score, "correction": "billing"})),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b:#}");
    }
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/feedback:batch"),
            Some(&runner),
            Some(
                json!({"items": [{"inference_id": id, "score": 1, "source": "metric"},
                                  {"inference_id": id, "comment": "fine", "source": "human"}]}),
            ),
        )
        .await;
    assert_eq!((st, b["recorded"].clone()), (StatusCode::CREATED, json!(2)));
    let (st, got) = api
        .call(
            "GET",
            &s.url(&format!("/v1/inferences/{id}")),
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["inference"]["tags"], json!({"topic": "billing"}));
    assert_eq!(got["inference"]["seq"], 2);
    assert_eq!(got["inference"]["caller"], "runner");
    let fb = got["feedback"].as_array().unwrap();
    let scores: Vec<Value> = fb.iter().map(|f| f["score"].clone()).collect();
    assert_eq!(
        scores,
        vec![
            json!(1.0),
            json!(0.25),
            Value::Null,
            json!(1.0),
            Value::Null
        ]
    );
    assert_eq!(fb[2]["label"], "wrong-team");
    assert_eq!(fb[3]["source"], "metric");

    // Online scoring: the caller sends the expected output; the score is answered and
    // recorded as metric feedback with the inference.
    for (expected, metric, want) in [
        (json!("Billing"), Value::Null, 1.0),
        (json!("tech"), Value::Null, 0.0),
        (json!("bill"), json!({"type": "contains"}), 1.0),
    ] {
        let mut body =
            json!({"inputs": {"question": "Where is my invoice?"}, "expected": expected});
        if !metric.is_null() {
            body["metric"] = metric;
        }
        let (st, ran) = api
            .call(
                "POST",
                &s.url("/v1/prompts/support/run"),
                Some(&runner),
                Some(body),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{ran:#}");
        assert_eq!(ran["score"]["value"], json!(want), "{ran:#}");
        let id = ran["inference_id"].as_str().unwrap();
        let (_, got) = api
            .call(
                "GET",
                &s.url(&format!("/v1/inferences/{id}")),
                Some(&viewer),
                None,
            )
            .await;
        let fb = got["feedback"].as_array().unwrap();
        assert_eq!(fb.len(), 1, "{got:#}");
        assert_eq!(
            (fb[0]["score"].clone(), fb[0]["source"].clone()),
            (json!(want), json!("metric"))
        );
    }

    // The OpenAI-compatible endpoint serves the prompt too, and says which inference it was.
    let (st, c) = api
        .call(
            "POST",
            &s.url("/v1/chat/completions"),
            Some(&runner),
            Some(json!({"model": "prompt:support@production",
                        "messages": [{"role": "user", "content": "I was charged twice"}],
                        "metaprompt_tags": {"topic": "billing"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{c:#}");
    assert_eq!(c["choices"][0]["message"]["content"], "billing");
    assert_eq!(c["metaprompt"]["version"], "v2");

    // Review over HTTP: a machine-made version of a prompt with a protected constraint cannot
    // reach production until a reviewer approves it; then it can, and the audit trail says so.
    let store = metaprompt_registry::open(d.join("lib.db")).await.unwrap();
    let mut file = metaprompt_eval::prompt::PromptFile::from_template(
        "support",
        "Question: {{ question }}\nAnswer with one team name.\nTeam:",
    );
    file.constraints = vec!["Answer with one team name.".into()];
    file.target_model = Some("mock:exec".into());
    let mut proposal = NewVersion::new("support", file, Origin::Optimize, "optimizer");
    proposal.message = Some("a constraint-keeping rewrite".into());
    let added = store.add(proposal).await.unwrap();
    store.close().await;
    let v3 = format!("v{}", added.version.seq);
    let (st, q) = api
        .call("GET", &s.url("/v1/review"), Some(&viewer), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(q["proposed"][0]["version"]["seq"], added.version.seq);
    let (st, b) = api
        .call(
            "PUT",
            &s.url("/v1/prompts/support/labels/production"),
            Some(&reviewer),
            Some(json!({"version": v3})),
        )
        .await;
    assert_error(st, &b, StatusCode::CONFLICT, "label");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("approval"),
        "{b:#}"
    );
    let (st, b) = api
        .call(
            "POST",
            &s.url(&format!("/v1/prompts/support/versions/{v3}/review")),
            Some(&reviewer),
            Some(json!({"decision": "reject"})),
        )
        .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "comment");
    let (st, b) = api
        .call(
            "POST",
            &s.url(&format!("/v1/prompts/support/versions/{v3}/review")),
            Some(&reviewer),
            Some(json!({"decision": "approve", "comment": "keeps the constraint"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    assert_eq!(b["version"]["review"], "approved");
    let (st, b) = api
        .call(
            "PUT",
            &s.url("/v1/prompts/support/labels/production"),
            Some(&reviewer),
            Some(json!({"version": v3, "comment": "ship"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    let (_, ev) = api
        .call(
            "GET",
            &s.url("/v1/prompts/support/events"),
            Some(&viewer),
            None,
        )
        .await;
    let kinds: Vec<(String, String)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["actor"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("review".into(), "reviewer".into())),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().unwrap(),
        &("label".to_string(), "reviewer".to_string())
    );
    // A label moved through this server is served at once (its resolve cache forgets).
    let (_, ran) = api
        .call(
            "POST",
            &s.url("/v1/prompts/support/run"),
            Some(&runner),
            Some(run_body),
        )
        .await;
    assert_eq!(ran["version"], v3);
    // Rollback goes back to v2.
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/prompts/support/labels/production/rollback"),
            Some(&reviewer),
            Some(json!({"comment": "regression"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    assert_eq!(b["moved"]["to"]["seq"], 2);

    // Metrics count what happened.
    let m = api
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("metaprompt_inferences_total{prompt=\"support\",outcome=\"ok\"}"),
        "{m}"
    );
    assert!(
        m.contains("route=\"/v1/prompts/{name}\",status=\"304\""),
        "{m}"
    );
    // The gateway's own overhead leaves out the model's 300 ms: every run and completion took
    // longer than 0.25 s, and every one's overhead is within it.
    let value = |name: &str, route: &str, le: Option<&str>| -> u64 {
        m.lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{"))
                    && l.contains(&format!("route=\"{route}\""))
                    && le.is_none_or(|le| l.contains(&format!("le=\"{le}\"")))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {route} in {m}"))
    };
    for route in ["/v1/prompts/{name}/run", "/v1/chat/completions"] {
        let ran = value("metaprompt_gateway_overhead_seconds_count", route, None);
        assert!(ran >= 1, "{route}: {m}");
        let overhead = "metaprompt_gateway_overhead_seconds_bucket";
        assert_eq!(value(overhead, route, Some("0.25")), ran, "{route}: {m}");
        // The requests themselves (refusals included) took longer: at least `ran` of them.
        let latency = "metaprompt_http_request_duration_seconds";
        let slow = value(&format!("{latency}_count"), route, None)
            - value(&format!("{latency}_bucket"), route, Some("0.2048"));
        assert!(slow >= ran, "{route}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_bad_requests_with_json_errors_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    let t = token(d, "admin").await;
    let s = Server::start(d, &[]);
    let api = Api::new();
    let raw = |path: &str, body: &'static str| {
        api.http
            .post(s.url(path))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let read = |r: reqwest::Response| async move {
        let st = r.status();
        (st, r.json::<Value>().await.unwrap())
    };
    let run = "/v1/prompts/support/run";
    let (st, b) = read(raw(run, "{\"inputs\": {").await.unwrap()).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "body");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (st, b) = read(raw(run, "").await.unwrap()).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "body");
    let (st, b) = read(raw(run, "{\"inputs\": {}, \"tgas\": {}}").await.unwrap()).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "tgas");
    let (st, b) = read(raw(run, "{\"inputs\": {}}").await.unwrap()).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "inputs.question");
    let (st, b) = read(
        raw(
            run,
            "{\"inputs\": {\"question\": \"x\"}, \"tags\": {\"a\": 1}}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "tags.a");
    let (st, b) = read(
        raw(
            run,
            "{\"inputs\": {\"question\": \"x\"}, \"temperature\": 7}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "temperature");
    let (st, b) = read(
        raw(
            run,
            "{\"inputs\": {\"question\": \"x\"}, \"model\": \"nosuch:thing\"}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "model");
    let (st, b) = read(
        raw(
            run,
            "{\"inputs\": {\"question\": \"x\"}, \"label\": \"a\", \"version\": \"v1\"}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b:#}");
    // Oversized: the config allows 64 KiB.
    let big = json!({"inputs": {"question": "x".repeat(100_000)}}).to_string();
    let r = api
        .http
        .post(s.url(run))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (st, b) = read(r).await;
    assert_error(st, &b, StatusCode::PAYLOAD_TOO_LARGE, "body");
    // Unknown prompt, label, version, inference, route, method.
    let get = |path: String| {
        let url = s.url(&path);
        let api = &api;
        let t = &t;
        async move { api.call("GET", &url, Some(t), None).await }
    };
    let (st, b) = get("/v1/prompts/nosuch/versions".into()).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "name");
    let (st, b) = get("/v1/prompts/nosuch".into()).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "label");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("known: support"),
        "{b:#}"
    );
    let (st, b) = get("/v1/prompts/support?label=staging".into()).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "label");
    let (st, b) = get("/v1/prompts/support?version=v9".into()).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "version");
    let (st, b) = get("/v1/prompts/support?lable=x".into()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b:#}");
    let (st, b) = get("/v1/inferences/inf_nope".into()).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "id");
    let (st, b) = get("/v1/nothing".into()).await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "path");
    let (st, b) = api
        .call("DELETE", &s.url("/v1/prompts"), Some(&t), None)
        .await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED, "{b:#}");
    // Feedback: out of range, unknown inference, empty.
    let (st, b) = read(
        raw(
            "/v1/feedback",
            "{\"inference_id\": \"inf_x\", \"score\": 3}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "score");
    let (st, b) = read(
        raw(
            "/v1/feedback",
            "{\"inference_id\": \"inf_x\", \"score\": 1}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "inference_id");
    let (st, b) = read(raw("/v1/feedback:batch", "{\"items\": [{\"inference_id\": \"inf_x\", \"score\": 1}, {\"inference_id\": \"inf_x\", \"score\": -1}]}").await.unwrap()).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "items[1].score");
    // Online metrics: one without `expected`, one that would run a program, an unknown type.
    for (body, param) in [
        (
            "{\"inputs\": {\"question\": \"x\"}, \"metric\": {\"type\": \"equals\"}}",
            "metric",
        ),
        (
            "{\"inputs\": {\"question\": \"x\"}, \"expected\": \"a\", \"metric\": {\"type\": \"command\", \"command\": [\"rm\"]}}",
            "metric.type",
        ),
        (
            "{\"inputs\": {\"question\": \"x\"}, \"expected\": \"a\", \"metric\": {\"type\": \"nosuch\"}}",
            "metric",
        ),
    ] {
        let (st, b) = read(raw("/v1/prompts/support/run", body).await.unwrap()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{b:#}");
        assert!(
            b["error"]["param"].as_str().unwrap().starts_with(param),
            "{param}: {b:#}"
        );
    }
    // OpenAI shapes: no messages, a bad role, n > 1, a prompt with no inputs.
    let (st, b) = read(
        raw(
            "/v1/chat/completions",
            "{\"model\": \"prompt:support\", \"messages\": []}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "messages");
    let (st, b) = read(
        raw(
            "/v1/chat/completions",
            "{\"model\": \"mock:exec\", \"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "messages[0].role");
    let (st, b) = read(raw("/v1/chat/completions", "{\"model\": \"mock:exec\", \"n\": 2, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}").await.unwrap()).await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "n");
    let (st, b) = read(
        raw(
            "/v1/completions",
            "{\"model\": \"prompt:nosuch\", \"prompt\": \"x\"}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "model");
    // A version that picks demonstrations by words renders them per input; one that picks by
    // the model's embeddings is refused for a model that has none, naming `model`; a selector
    // without its pool is refused naming the field.
    let knn = |embed: &str| {
        json!({"toml": format!(
            "template = \"Question: {{{{ question }}}}\\nTeam:\"\n\
             demo_template = \"Question: {{{{ question }}}}\\nTeam: {{{{ team }}}}\\n\\n\"\n\
             target_model = \"mock:exec\"\n[selector]\nkind = \"knn\"\nk = 1\nembed = \"{embed}\"\n\
             [[pool]]\nquestion = \"my invoice is wrong\"\nteam = \"billing\"\n\
             [[pool]]\nquestion = \"the app crashes at login\"\nteam = \"tech\"\n"
        )})
    };
    for (embed, prompt) in [("words", "knn-words"), ("model", "knn-model")] {
        let (st, b) = api
            .call(
                "POST",
                &s.url(&format!("/v1/prompts/{prompt}/versions")),
                Some(&t),
                Some(knn(embed)),
            )
            .await;
        assert!(st.is_success(), "{b:#}");
    }
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/prompts/knn-words/render"),
            Some(&t),
            Some(json!({"version": "v1", "inputs": {"question": "why does login crash"}})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    let text = b["prompt"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Question: the app crashes at login\nTeam: tech\n\n")
            && !text.contains("invoice"),
        "{text}"
    );
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/prompts/knn-model/run"),
            Some(&t),
            Some(json!({"version": "v1", "inputs": {"question": "why does login crash"}})),
        )
        .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "model");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot embed"),
        "{b:#}"
    );
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/prompts/knn-bad/versions"),
            Some(&t),
            Some(json!({"toml": "template = \"{{ question }}\"\n[selector]\nkind = \"knn\"\nk = 1\n"})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b:#}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`[[pool]]`"),
        "{b:#}"
    );
    // Nothing above was a server error, and the server is still up.
    let m = api
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!m.contains("status=\"5"), "{m}");
    let (st, _) = api.call("GET", &s.url("/healthz"), None, None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_keeps_every_acknowledged_inference_and_feedback_through_kill_9() {
    kill_9_loses_nothing_acknowledged(None).await;
}

// Written to the operating system but not fsynced is enough for a crash of the server.
#[tokio::test(flavor = "multi_thread")]
async fn serve_with_log_sync_normal_also_keeps_everything_acknowledged_through_kill_9() {
    kill_9_loses_nothing_acknowledged(Some("normal")).await;
}

async fn kill_9_loses_nothing_acknowledged(log_sync: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::from_millis(30)).await;
    setup(d, &mock).await;
    if let Some(sync) = log_sync {
        // `setup`'s config ends inside its `[server]` table.
        let config = std::fs::read_to_string(d.join("metaprompt.toml")).unwrap();
        std::fs::write(
            d.join("metaprompt.toml"),
            format!("{config}log_sync = \"{sync}\"\n"),
        )
        .unwrap();
    }
    let t = token(d, "runner").await;
    let mut s = Server::start(d, &[]);
    let api = std::sync::Arc::new(Api::new());
    // A burst: 32 clients, each running and then sending feedback in a loop.
    let mut clients = Vec::new();
    for c in 0..32 {
        let api = api.clone();
        let url = s.url("");
        let t = t.clone();
        clients.push(tokio::spawn(async move {
            let mut acked_runs = Vec::new();
            let mut acked_feedback = Vec::new();
            for k in 0.. {
                let body = json!({"inputs": {"question": format!("invoice {c}-{k}")}});
                let Ok(r) = api
                    .http
                    .post(format!("{url}/v1/prompts/support/run"))
                    .bearer_auth(&t)
                    .json(&body)
                    .send()
                    .await
                else {
                    break;
                };
                if r.status() != StatusCode::OK {
                    break;
                }
                let Ok(v) = r.json::<Value>().await else {
                    break;
                };
                let id = v["inference_id"].as_str().unwrap().to_string();
                acked_runs.push(id.clone());
                let Ok(r) = api
                    .http
                    .post(format!("{url}/v1/feedback"))
                    .bearer_auth(&t)
                    .json(&json!({"inference_id": id, "score": 1, "comment": format!("{c}-{k}")}))
                    .send()
                    .await
                else {
                    break;
                };
                if r.status() != StatusCode::CREATED {
                    break;
                }
                acked_feedback.push(format!("{c}-{k}"));
            }
            (acked_runs, acked_feedback)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    let mut runs = Vec::new();
    let mut feedback = HashSet::new();
    for c in clients {
        let (r, f) = c.await.unwrap();
        runs.extend(r);
        feedback.extend(f);
    }
    assert!(
        runs.len() > 100,
        "the burst was too small to mean much: {}",
        runs.len()
    );
    // Restart on the same library: every acknowledged record is there.
    let s2 = Server::start(d, &[]);
    let service = metaprompt_registry::open_service(d.join("lib.db"))
        .await
        .unwrap();
    let known = service.known(&runs).await.unwrap();
    let lost: Vec<&String> = runs.iter().filter(|id| !known.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged inferences lost",
        lost.len(),
        runs.len()
    );
    let mut stored = HashSet::new();
    for id in &runs {
        for f in service.feedback(id).await.unwrap() {
            stored.insert(f.comment.unwrap_or_default());
        }
    }
    let missing: Vec<&String> = feedback.iter().filter(|f| !stored.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged feedback lost",
        missing.len()
    );
    service.close().await;
    let (st, _) = Api::new().call("GET", &s2.url("/readyz"), None, None).await;
    assert_eq!(st, StatusCode::OK);
    eprintln!(
        "kill -9 (log_sync {log_sync:?}): {} inferences and {} feedback acknowledged, none lost",
        runs.len(),
        feedback.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_stops_gracefully_on_sigterm_and_refuses_insecure_local_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::from_millis(500)).await;
    setup(d, &mock).await;
    let t = token(d, "runner").await;
    let mut s = Server::start(d, &[]);
    // A request in flight when SIGTERM arrives is answered, and recorded.
    let url = s.url("/v1/prompts/support/run");
    let tk = t.clone();
    let inflight = tokio::spawn(async move {
        Api::new()
            .call(
                "POST",
                &url,
                Some(&tk),
                Some(json!({"inputs": {"question": "invoice"}})),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || {
        let st = s.terminate();
        (st, s.log())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1);
    let (st, b) = inflight.await.unwrap();
    assert_eq!(st, StatusCode::OK, "{b:#}");
    let service = metaprompt_registry::open_service(d.join("lib.db"))
        .await
        .unwrap();
    assert!(
        service
            .inference(b["inference_id"].as_str().unwrap())
            .await
            .unwrap()
            .is_some()
    );
    service.close().await;

    let lib = d.join("lib.db");
    let out = metaprompt(
        d,
        &["serve", "--listen", "0.0.0.0:0", "--insecure-local"],
        &[("METAPROMPT_LIBRARY", lib.to_str().unwrap())],
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));
}

const CLIENT: &str = r#"
import json, sys, time
from openai import OpenAI
base, key = sys.argv[1], sys.argv[2]
c = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
out = {}
msgs = [{"role": "user", "content": "The capital of France is"}]
r = c.chat.completions.create(model="local:gemma-3-270m", messages=msgs, max_tokens=8, temperature=0)
out["chat"] = {"text": r.choices[0].message.content, "usage": r.usage.completion_tokens,
               "finish": r.choices[0].finish_reason, "object": r.object}
s = c.chat.completions.create(model="local:gemma-3-270m", messages=msgs, max_tokens=8,
                              temperature=0, stream=True, stream_options={"include_usage": True})
parts, usage, times = [], None, []
for ch in s:
    if ch.choices and ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
        times.append(time.monotonic())
    if ch.usage:
        usage = ch.usage.completion_tokens
out["chat_stream"] = {"text": "".join(parts), "usage": usage, "pieces": len(parts),
                      "spread": times[-1] - times[0] if times else 0}
r = c.completions.create(model="local:gemma-3-270m", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
out["completion"] = {"text": r.choices[0].text, "object": r.object}
s = c.completions.create(model="local:gemma-3-270m", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0, stream=True)
out["completion_stream"] = "".join(ch.choices[0].text for ch in s if ch.choices)
r = c.chat.completions.create(model="prompt:capital@production",
                              messages=[{"role": "user", "content": "Italy"}], max_tokens=4)
out["served"] = {"text": r.choices[0].message.content, "ext": r.model_extra.get("metaprompt")}
s = c.chat.completions.create(model="prompt:capital@production",
                              messages=[{"role": "user", "content": "Italy"}], max_tokens=4, stream=True)
out["served_stream"] = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
out["served_stream_id"] = s.response.headers.get("x-metaprompt-inference-id")
r = c.completions.create(model="prompt:capital", prompt="Spain", max_tokens=4)
out["served_completion"] = r.choices[0].text
# The same prompt rendered by the server and sent to the plain model answers the same.
import urllib.request
req = urllib.request.Request(base + "/v1/prompts/capital/render",
                             data=json.dumps({"inputs": {"country": "Italy"}}).encode(),
                             headers={"Authorization": "Bearer " + key,
                                      "Content-Type": "application/json"})
rendered = json.load(urllib.request.urlopen(req, timeout=60))
out["rendered"] = rendered["prompt"]
r = c.completions.create(model="local:gemma-3-270m", prompt=rendered["prompt"]["text"],
                         max_tokens=4, temperature=0)
out["direct"] = r.choices[0].text
try:
    c.chat.completions.create(model="prompt:nosuch", messages=msgs)
    out["error"] = None
except Exception as e:
    out["error"] = {"status": getattr(e, "status_code", None), "message": str(e)}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn openai_python_client_against_the_embedded_model_and_a_served_prompt() {
    let python = tokio::task::spawn_blocking(common::openai_python)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("capital.toml"),
        "name = \"capital\"\ndemo_template = \"Country: {{ country }}\\nCapital: {{ capital }}\\n\\n\"\n\
         template = \"Country: {{ country }}\\nCapital:\"\ntarget_model = \"local:gemma-3-270m\"\n\
         [[demos]]\ncountry = \"Germany\"\ncapital = \"Berlin\"\n\
         [[demos]]\ncountry = \"Japan\"\ncapital = \"Tokyo\"\n",
    )
    .unwrap();
    cli(d, &["prompts", "add", "capital", "capital.toml"]).await;
    cli(d, &["prompts", "label", "capital@v1", "production"]).await;
    // The same task with two demonstrations per input, nearest by the model's embeddings.
    let mut knn = String::from(
        "name = \"capital-knn\"\ndemo_template = \"Country: {{ country }}\\nCapital: {{ capital }}\\n\\n\"\n\
         template = \"Country: {{ country }}\\nCapital:\"\ntarget_model = \"local:gemma-3-270m\"\n\
         [selector]\nkind = \"knn\"\nk = 2\n",
    );
    for (country, capital) in [
        ("Germany", "Berlin"),
        ("Japan", "Tokyo"),
        ("Kenya", "Nairobi"),
        ("Peru", "Lima"),
        ("Norway", "Oslo"),
    ] {
        knn.push_str(&format!(
            "[[pool]]\ncountry = \"{country}\"\ncapital = \"{capital}\"\n"
        ));
    }
    std::fs::write(d.join("knn.toml"), knn).unwrap();
    cli(d, &["prompts", "add", "capital-knn", "knn.toml"]).await;
    cli(d, &["prompts", "label", "capital-knn@v1", "production"]).await;
    let t = token(d, "runner").await;
    let s = Server::start(d, &[]);
    let api = Api::new();
    let render_url = s.url("/v1/prompts/capital-knn/render");
    let render = |country: &str| {
        api.call(
            "POST",
            &render_url,
            Some(&t),
            Some(json!({"inputs": {"country": country}})),
        )
    };
    // An input that is in the pool has itself as its nearest neighbour: the last demonstration.
    let (st, b) = render("Kenya").await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    let text = b["prompt"]["text"].as_str().unwrap();
    assert_eq!(
        text.matches("Capital:").count(),
        3,
        "two demonstrations: {text}"
    );
    assert!(
        text.ends_with("Country: Kenya\nCapital: Nairobi\n\nCountry: Kenya\nCapital:"),
        "{text}"
    );
    let (_, again) = render("Kenya").await;
    assert_eq!(
        again["prompt"], b["prompt"],
        "the same input, the same demonstrations"
    );
    let (st, b) = render("Norway").await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    let text = b["prompt"]["text"].as_str().unwrap();
    assert!(
        text.ends_with("Capital: Oslo\n\nCountry: Norway\nCapital:"),
        "{text}"
    );
    let (st, ran) = api
        .call(
            "POST",
            &s.url("/v1/prompts/capital-knn/run"),
            Some(&t),
            Some(json!({"inputs": {"country": "Peru"}, "max_tokens": 4})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{ran:#}");
    assert!(!ran["output"].as_str().unwrap().is_empty(), "{ran:#}");
    let base = s.url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", CLIENT, &base, &t])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    let o: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{o:#}");
    assert_eq!(o["chat"]["object"], "chat.completion");
    assert!(o["chat"]["usage"].as_u64().unwrap() >= 1);
    assert!(!o["chat"]["text"].as_str().unwrap().is_empty());
    // Greedy decoding: streamed and whole answers are the same text.
    assert_eq!(o["chat_stream"]["text"], o["chat"]["text"]);
    assert_eq!(o["chat_stream"]["usage"], o["chat"]["usage"]);
    // Streamed token by token as they were decoded, not one buffered answer cut up.
    let tokens = o["chat_stream"]["usage"].as_u64().unwrap();
    let pieces = o["chat_stream"]["pieces"].as_u64().unwrap();
    assert!(
        tokens < 3 || pieces * 2 >= tokens,
        "{pieces} pieces for {tokens} tokens"
    );
    if pieces >= 3 {
        let spread = o["chat_stream"]["spread"].as_f64().unwrap();
        assert!(
            spread > 0.003,
            "the pieces arrived within {spread} s of each other"
        );
    }
    assert_eq!(o["completion"]["object"], "text_completion");
    assert_eq!(o["completion_stream"], o["completion"]["text"]);
    // The served prompt ran as its rendered text (demos first, then the input).
    let rendered = o["rendered"]["text"].as_str().unwrap();
    assert!(
        rendered.starts_with("Country: Germany\nCapital: Berlin")
            && rendered.ends_with("Country: Italy\nCapital:"),
        "{rendered}"
    );
    assert!(!o["served"]["text"].as_str().unwrap().is_empty());
    assert_eq!(o["served"]["text"], o["direct"], "{o:#}");
    assert_eq!(o["served"]["ext"]["version"], "v1");
    assert_eq!(o["served_stream"], o["served"]["text"]);
    assert!(!o["served_completion"].as_str().unwrap().is_empty());
    assert_eq!(o["error"]["status"], 404, "{o:#}");
    // The served runs are in the inference log, with the inputs taken from the messages.
    let service = metaprompt_registry::open_service(d.join("lib.db"))
        .await
        .unwrap();
    let id = o["served"]["ext"]["inference_id"].as_str().unwrap();
    let i = service.inference(id).await.unwrap().unwrap();
    assert_eq!(i.inputs, json!({"country": "Italy"}));
    assert_eq!(i.caller, "runner");
    // A streamed run's inference id is in its headers before the answer, and it is recorded.
    let id = o["served_stream_id"].as_str().unwrap();
    let i = service.inference(id).await.unwrap().unwrap();
    assert_eq!(
        i.output.as_ref(),
        o["served_stream"].as_str().map(String::from).as_ref()
    );
    service.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traffic_split_serves_both_versions_in_proportion_sticky_per_key_and_records_which() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    std::fs::write(
        d.join("v2.toml"),
        "name = \"support\"\ntemplate = \"Q: {{ question }}\\nTeam:\"\ntarget_model = \"mock:exec\"\n",
    )
    .unwrap();
    cli(d, &["prompts", "add", "support", "v2.toml"]).await;
    let said = cli(
        d,
        &[
            "prompts",
            "label",
            "support@v2",
            "production",
            "--weight",
            "10",
            "-c",
            "canary",
        ],
    )
    .await;
    assert!(said.contains("serves 10% as a canary"), "{said}");
    let shown = cli(d, &["prompts", "show", "support@v2"]).await;
    assert!(shown.contains("canary     10% of `production`"), "{shown}");
    let runner = token(d, "runner").await;
    let reviewer = token(d, "reviewer").await;
    let s = Server::start(d, &[]);
    let api = std::sync::Arc::new(Api::new());
    let (_, labels) = api
        .call(
            "GET",
            &s.url("/v1/prompts/support/labels"),
            Some(&runner),
            None,
        )
        .await;
    assert_eq!(labels["labels"][0]["seq"], 1);
    assert_eq!(labels["splits"][0]["seq"], 2);
    assert_eq!(labels["splits"][0]["weight"], 10.0);

    // 1,000 requests from 1,000 callers, 16 at a time.
    let n = 1000;
    let mut served = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let mut batch = Vec::new();
        for &i in chunk {
            let api = api.clone();
            let url = s.url("/v1/prompts/support/run");
            let t = runner.clone();
            batch.push(tokio::spawn(async move {
                let body =
                    json!({"inputs": {"question": "invoice"}, "split_key": format!("user-{i}")});
                api.call("POST", &url, Some(&t), Some(body)).await
            }));
        }
        for b in batch {
            let (st, v) = b.await.unwrap();
            assert_eq!(st, StatusCode::OK, "{v:#}");
            served.push((
                v["version"].as_str().unwrap().to_string(),
                v["inference_id"].as_str().unwrap().to_string(),
            ));
        }
    }
    let canary = served.iter().filter(|(v, _)| v == "v2").count();
    // Binomial(1000, 0.10): mean 100, sd 9.5; ±4.5 sd fails a correct split once in ~150,000.
    assert!(
        (57..=143).contains(&canary),
        "canary served {canary} of {n}"
    );
    // Sticky: one caller always gets the same version.
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let (_, v) = api
            .call(
                "POST",
                &s.url("/v1/prompts/support/run"),
                Some(&runner),
                Some(json!({"inputs": {"question": "x"}, "split_key": "alice"})),
            )
            .await;
        seen.insert(v["version"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    // The log says which version served each inference.
    let service = metaprompt_registry::open_service(d.join("lib.db"))
        .await
        .unwrap();
    for (version, id) in served.iter().step_by(37) {
        let i = service.inference(id).await.unwrap().unwrap();
        assert_eq!(format!("v{}", i.seq), *version);
        assert_eq!(i.label.as_deref(), Some("production"));
    }
    service.close().await;
    // Promote: moving the label to the canary ends the split; everyone gets v2.
    let (st, b) = api
        .call(
            "PUT",
            &s.url("/v1/prompts/support/labels/production"),
            Some(&reviewer),
            Some(json!({"version": "v2", "comment": "canary held up"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    let (_, labels) = api
        .call(
            "GET",
            &s.url("/v1/prompts/support/labels"),
            Some(&runner),
            None,
        )
        .await;
    assert_eq!(labels["splits"], json!([]));
    for i in 0..20 {
        let (_, v) = api
            .call(
                "POST",
                &s.url("/v1/prompts/support/run"),
                Some(&runner),
                Some(json!({"inputs": {"question": "x"}, "split_key": format!("k{i}")})),
            )
            .await;
        assert_eq!(v["version"], "v2");
    }
    // Splits over HTTP: refused weights, then set and ended; the audit trail has them all.
    let split_url = s.url("/v1/prompts/support/labels/production/split");
    let (st, b) = api
        .call(
            "PUT",
            &split_url,
            Some(&reviewer),
            Some(json!({"version": "v1", "weight": 100})),
        )
        .await;
    assert_error(st, &b, StatusCode::BAD_REQUEST, "weight");
    let (st, b) = api
        .call(
            "PUT",
            &split_url,
            Some(&runner),
            Some(json!({"version": "v1", "weight": 5})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b:#}");
    let (st, b) = api
        .call(
            "PUT",
            &split_url,
            Some(&reviewer),
            Some(json!({"version": "v2", "weight": 5})),
        )
        .await;
    assert_error(st, &b, StatusCode::CONFLICT, "label");
    let (st, b) = api
        .call(
            "PUT",
            &split_url,
            Some(&reviewer),
            Some(json!({"version": "v1", "weight": 5})),
        )
        .await;
    assert_eq!(
        (st, b["split"]["seq"].clone()),
        (StatusCode::OK, json!(1)),
        "{b:#}"
    );
    let (st, _) = api.call("DELETE", &split_url, Some(&reviewer), None).await;
    assert_eq!(st, StatusCode::OK);
    let log = cli(d, &["prompts", "log", "support"]).await;
    assert!(log.contains("split production v1 → v2 at 10%"), "{log}");
    assert!(log.contains("split production v2 → v1 at 5%"), "{log}");
    assert!(log.contains("split production ended"), "{log}");
}

/// A routing task on the mock model (`fewshot` needs no meta calls), with a slow model so a run
/// lasts long enough to be stopped.
/// Server-sent events of a run until `until` says stop (or the stream ends).
async fn watch(
    api: &Api,
    url: &str,
    token: &str,
    mut until: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut r = api.http.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut buf = String::new();
    let mut seen = Vec::new();
    let mut name = String::from("message");
    while let Some(chunk) = r.chunk().await.unwrap() {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(k) = buf.find('\n') {
            let line = buf[..k].trim_end_matches('\r').to_string();
            buf.drain(..=k);
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap();
                let stop = until(&name, &v);
                seen.push((name.clone(), v));
                if stop {
                    return seen;
                }
            }
        }
    }
    seen
}

async fn wait_status(api: &Api, url: &str, token: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, r) = api.call("GET", url, Some(token), None).await;
        if r["status"] == want {
            return r;
        }
        last = r;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became {want}: {last:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_optimization_started_over_http_is_watched_cancelled_resumed_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::from_millis(150)).await;
    setup(d, &mock).await;
    // Runs over HTTP name a task in the server's task roots.
    let task = route_task_in_root(d);
    let editor = token(d, "editor").await;
    let viewer = token(d, "viewer").await;
    let mut s = Server::start(d, &["--tasks", "tasks"]);
    let api = Api::new();
    let body = json!({"kind": "optimize", "request": {
        "task": task, "algorithm": "fewshot", "rounds": 3, "patience": 3, "minibatch": 6,
        "demos": 2, "name": "route"}});
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/runs"),
            Some(&viewer),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b:#}");
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/runs"),
            Some(&editor),
            Some(json!({"kind": "optimize", "request": {"task": "nosuch"}})),
        )
        .await;
    assert_error(st, &b, StatusCode::NOT_FOUND, "request.task");
    let (st, b) = api
        .call(
            "POST",
            &s.url("/v1/runs"),
            Some(&editor),
            Some(json!({"kind": "optimize", "request": {"task": task, "algo": "x"}})),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b:#}");

    // Start, watch until the first evaluation finishes, cancel.
    let (st, run) = api
        .call(
            "POST",
            &s.url("/v1/runs"),
            Some(&editor),
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{run:#}");
    let id = run["id"].as_str().unwrap().to_string();
    let run_url = s.url(&format!("/v1/runs/{id}"));
    let events = watch(&api, &format!("{run_url}/events"), &viewer, |_, v| {
        v["event"] == "round"
    })
    .await;
    assert_eq!(events.last().unwrap().1["stats"]["round"], 1, "{events:?}");
    let (st, _) = api.call("DELETE", &run_url, Some(&editor), None).await;
    assert_eq!(st, StatusCode::OK);
    let stopped = wait_status(&api, &run_url, &viewer, "cancelled").await;
    assert!(
        stopped["error"].as_str().unwrap().contains("resume"),
        "{stopped:#}"
    );
    // Resume; watch to the end.
    let (st, b) = api
        .call("POST", &format!("{run_url}/resume"), Some(&editor), None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b:#}");
    let events = watch(&api, &format!("{run_url}/events"), &viewer, |n, v| {
        n == "end" && v["status"] != "cancelled"
    })
    .await;
    let (name, last) = events.last().unwrap();
    assert_eq!(
        (name.as_str(), last["status"].clone()),
        ("end", json!("finished")),
        "{events:?}"
    );
    assert!(events.iter().any(|(_, v)| v["event"] == "resumed"));
    let (_, done) = api.call("GET", &run_url, Some(&viewer), None).await;
    assert_eq!(done["resumed"], 1);
    let outcome = &done["result"]["outcome"];
    assert!(outcome["winner"].is_string(), "{done:#}");
    assert!(Path::new(done["result"]["report_html"].as_str().unwrap()).exists());

    // Start another, kill -9 the server mid-run, restart: it resumes and finishes by itself.
    let (_, run) = api
        .call("POST", &s.url("/v1/runs"), Some(&editor), Some(body))
        .await;
    let id2 = run["id"].as_str().unwrap().to_string();
    let url2 = s.url(&format!("/v1/runs/{id2}"));
    watch(&api, &format!("{url2}/events"), &viewer, |_, v| {
        v["event"] == "round"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.kill9();
    let s2 = Server::start(d, &["--tasks", "tasks"]);
    let url2 = s2.url(&format!("/v1/runs/{id2}"));
    let done = wait_status(&api, &url2, &viewer, "finished").await;
    assert_eq!(done["resumed"], 1, "{done:#}");
    let (_, list) = api
        .call("GET", &s2.url("/v1/runs"), Some(&viewer), None)
        .await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 2);
}

/// A webhook receiver that refuses the first attempt of every delivery (500), then accepts.
/// A delivery as received: its id, event, signature and body.
type Received = (String, String, String, String);

#[derive(Clone)]
struct Hooks {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Respond for Hooks {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let h = |k: &str| {
            request
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let mut seen = self.seen.lock().unwrap();
        let delivery = h("x-metaprompt-delivery");
        let first = !seen.iter().any(|(d, ..)| *d == delivery);
        seen.push((
            delivery,
            h("x-metaprompt-event"),
            h("x-metaprompt-signature"),
            String::from_utf8_lossy(&request.body).into_owned(),
        ));
        ResponseTemplate::new(if first { 500 } else { 204 })
    }
}

impl Hooks {
    /// What was received once at least `n` requests came (waiting up to 10 s).
    async fn at_least(&self, n: usize) -> Vec<Received> {
        for _ in 0..100 {
            let seen = self.seen.lock().unwrap().clone();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_retried_until_delivered_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    let hooks = Hooks {
        seen: std::sync::Arc::new(std::sync::Mutex::new(Vec::new())),
    };
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(hooks.clone())
        .mount(&receiver)
        .await;
    let mut config = std::fs::read_to_string(d.join("metaprompt.toml")).unwrap();
    config.push_str(&format!(
        "[[server.webhooks]]\nurl = \"{}/hook\"\nsecret_env = \"HOOK_SECRET\"\n\
         events = [\"label.moved\", \"review.decided\", \"split.changed\", \"version.proposed\"]\n",
        receiver.uri()
    ));
    std::fs::write(d.join("metaprompt.toml"), &config).unwrap();
    std::fs::write(
        d.join("v2.toml"),
        "template = \"Q: {{ question }}\\nTeam:\"\ntarget_model = \"mock:exec\"\n",
    )
    .unwrap();
    cli(d, &["prompts", "add", "support", "v2.toml"]).await;
    let reviewer = token(d, "reviewer").await;
    let admin = token(d, "admin").await;
    // Without its secret the server refuses to start, naming the variable.
    let lib = d.join("lib.db");
    let out = metaprompt(
        d,
        &["serve", "--listen", "127.0.0.1:0"],
        &[("METAPROMPT_LIBRARY", lib.to_str().unwrap())],
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("HOOK_SECRET"), "{}", stderr(&out));
    let secret = "hook-secret-123";
    let mut s = Server::start_with(d, &[], &[("HOOK_SECRET", secret)]);
    let api = Api::new();
    let (st, _) = api
        .call(
            "PUT",
            &s.url("/v1/prompts/support/labels/production"),
            Some(&reviewer),
            Some(json!({"version": "v2"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api
        .call(
            "POST",
            &s.url("/v1/prompts/support/versions/v1/review"),
            Some(&reviewer),
            Some(json!({"decision": "approve", "comment": "fine"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = api
        .call(
            "PUT",
            &s.url("/v1/prompts/support/labels/production/split"),
            Some(&reviewer),
            Some(json!({"version": "v1", "weight": 20})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // Three events, each refused once and delivered on the retry (0.5 s later).
    let delivered = hooks.at_least(6).await;
    assert_eq!(delivered.len(), 6, "{delivered:?}");
    let kinds: HashSet<&str> = delivered.iter().map(|(_, k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        HashSet::from(["label.moved", "review.decided", "split.changed"])
    );
    for (id, kind, sig, body) in &delivered {
        assert_eq!(
            *sig,
            metaprompt_server::webhooks::signature(secret.as_bytes(), body.as_bytes())
        );
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["id"].as_str().unwrap(), v["type"].as_str().unwrap()),
            (id.as_str(), kind.as_str())
        );
    }
    let label = delivered
        .iter()
        .find(|(_, k, _, _)| k == "label.moved")
        .unwrap();
    let v: Value = serde_json::from_str(&label.3).unwrap();
    assert_eq!(
        (&v["data"]["from"]["seq"], &v["data"]["to"]["seq"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(v["data"]["label"], "production");
    assert_eq!(v["data"]["by"], "reviewer");
    // Every attempt is logged: a 500 then a 204 for each event.
    let (st, log) = api
        .call("GET", &s.url("/v1/webhooks/deliveries"), Some(&admin), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let log = log["deliveries"].as_array().unwrap();
    assert_eq!(log.len(), 6, "{log:?}");
    for a in log {
        let want = if a["attempt"] == 1 {
            json!(500)
        } else {
            json!(204)
        };
        assert_eq!(a["status"], want, "{a}");
        assert_eq!(a["error"].is_null(), a["attempt"] == 2, "{a}");
    }
    let (st, _) = api
        .call(
            "GET",
            &s.url("/v1/webhooks/deliveries"),
            Some(&reviewer),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Changes made outside this server reach the hooks too: a label moved by the CLI, and a
    // machine-made version another process (the agent, an optimizer) stored in the library.
    cli(d, &["prompts", "label", "support@v1", "staging"]).await;
    let other = metaprompt_registry::open(&lib).await.unwrap();
    let mut proposal = metaprompt_registry::NewVersion::new(
        "support",
        metaprompt_eval::PromptFile {
            instruction: Some("Route it: billing, tech or other.".into()),
            template: Some("Question: {{ question }}\nTeam:".into()),
            ..Default::default()
        },
        metaprompt_registry::Origin::Optimize,
        "optimizer",
    );
    proposal.message = Some("shorter".into());
    other.add(proposal).await.unwrap();
    other.close().await;
    let seen = hooks.at_least(10).await;
    let body = |kind: &str| -> Vec<Value> {
        seen.iter()
            .filter(|(_, k, _, _)| k == kind)
            .map(|r| serde_json::from_str(&r.3).unwrap())
            .collect()
    };
    let staging: Vec<Value> = body("label.moved")
        .into_iter()
        .filter(|v| v["data"]["label"] == "staging")
        .collect();
    assert_eq!(staging.len(), 2, "refused once, then delivered: {seen:?}");
    assert_eq!(staging[0]["data"]["to"]["seq"], 1);
    assert!(staging[0]["data"]["from"].is_null());
    let proposed = body("version.proposed");
    assert_eq!(proposed.len(), 2, "{seen:?}");
    assert_eq!(proposed[0]["data"]["version"]["seq"], 3);
    assert_eq!(proposed[0]["data"]["version"]["review"], "proposed");
    assert_eq!(proposed[0]["data"]["by"], "optimizer");
    assert_eq!(proposed[0]["data"]["comment"], "shorter");
    // A change made while no server runs is delivered when one starts again (after kill -9);
    // an event the receiver already has may come again, always under its delivery id.
    s.kill9();
    let ids = |seen: &[Received]| -> HashSet<String> { seen.iter().map(|r| r.0.clone()).collect() };
    let before = ids(&seen);
    cli(d, &["prompts", "label", "support@v2", "staging"]).await;
    let _s = Server::start_with(d, &[], &[("HOOK_SECRET", secret)]);
    let mut after = Vec::new();
    for _ in 0..100 {
        after = hooks.seen.lock().unwrap().clone();
        if after.iter().filter(|r| !before.contains(&r.0)).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new: Vec<&Received> = after.iter().filter(|r| !before.contains(&r.0)).collect();
    assert_eq!(new.len(), 2, "one event, refused once: {after:?}");
    let v: Value = serde_json::from_str(&new[1].3).unwrap();
    assert_eq!(v["type"], "label.moved");
    assert_eq!(
        (
            &v["data"]["label"],
            &v["data"]["from"]["seq"],
            &v["data"]["to"]["seq"]
        ),
        (&json!("staging"), &json!(1), &json!(2))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_once_reports_the_slice_that_got_worse_in_the_live_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let service = metaprompt_registry::open_service(d.join("lib.db"))
        .await
        .unwrap();
    // The hour before: every topic passes 4 of 5; this hour billing passes 2 of 5.
    let now = chrono::Utc::now();
    let (mut inferences, mut feedback) = (Vec::new(), Vec::new());
    for (window, minutes_ago) in [("before", 90), ("now", 30)] {
        for topic in ["billing", "tech", "other"] {
            for k in 0..60 {
                let id = format!("inf_{window}_{topic}_{k}");
                inferences.push(logged(
                    &id,
                    "h",
                    topic,
                    "q",
                    "other",
                    now - chrono::Duration::minutes(minutes_ago) + chrono::Duration::seconds(k),
                ));
                let passes = if topic == "billing" && window == "now" {
                    2
                } else {
                    4
                };
                feedback.push(judged(&id, k % 5 < passes, None));
            }
        }
    }
    service.record(&inferences, &feedback).await.unwrap();
    service.close().await;
    let out: Value = serde_json::from_str(&cli(d, &["agent", "--once", "--json"]).await).unwrap();
    assert_eq!(out["scored"], 360, "{out:#}");
    let found: Vec<String> = out["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}={} against {}",
                f["slice"]["key"], f["slice"]["value"], f["against"]
            )
        })
        .collect();
    assert!(
        found.contains(&"\"topic\"=\"billing\" against \"baseline\"".to_string())
            && found.contains(&"\"topic\"=\"billing\" against \"rest\"".to_string()),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .all(|f| f.contains("billing") || f.starts_with("null")),
        "only billing (and the whole prompt, which it drags down): {found:?}"
    );
    let text = cli(d, &["agent", "--once"]).await;
    eprintln!("{text}");
    assert!(
        text.contains("FOUND support topic=billing: 0.400 (n 60)"),
        "{text}"
    );
    // A window that holds nothing, and bad settings, say so.
    let text = cli(d, &["agent", "--once", "--window", "1m"]).await;
    assert!(text.contains("nothing scored"), "{text}");
    let lib = d.join("lib.db");
    let env = [("METAPROMPT_LIBRARY", lib.to_str().unwrap())];
    let bad = metaprompt(d, &["agent", "--once", "--fdr", "2"], &env).await;
    assert!(
        !bad.status.success() && stderr(&bad).contains("--fdr 2"),
        "{}",
        stderr(&bad)
    );
    let bad = metaprompt(d, &["agent", "--once", "--window", "soon"], &env).await;
    assert!(
        !bad.status.success() && stderr(&bad).contains("--window"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_agent_runs_passes_on_its_own_and_shows_its_cases_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    std::fs::write(
        d.join("metaprompt.toml"),
        std::fs::read_to_string(d.join("metaprompt.toml")).unwrap()
            + "[agent]\nmin_n = 20\n[agent.prompts.support]\nmax_tokens = 4\n",
    )
    .unwrap();
    let viewer = token(d, "viewer").await;
    let editor = token(d, "editor").await;
    // The live log: billing questions were answered `other` and corrected by their users.
    let v1 = cli(d, &["prompts", "show", "support@v1", "--json"]).await;
    let hash = serde_json::from_str::<Value>(&v1).unwrap()["version"]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let service = metaprompt_registry::open_service(d.join("lib.db"))
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let (mut inferences, mut feedback) = (Vec::new(), Vec::new());
    for (topic, question, output, right) in [
        ("billing", "Where is my invoice", "other", "billing"),
        ("other", "Hello", "other", "other"),
    ] {
        for k in 0..50 {
            let id = format!("inf_{topic}_{k}");
            inferences.push(logged(
                &id,
                &hash,
                topic,
                &format!("{question} #{k}?"),
                output,
                now - chrono::Duration::minutes(5) + chrono::Duration::seconds(k),
            ));
            feedback.push(judged(
                &id,
                output == right,
                (output != right).then_some(right),
            ));
        }
    }
    service.record(&inferences, &feedback).await.unwrap();
    service.close().await;

    let s = Server::start(d, &["--agent", "--agent-interval", "1s"]);
    let api = Api::new();
    // A viewer may read the agent's state, not run a pass.
    let (st, b) = api
        .call("POST", &s.url("/v1/agent/pass"), Some(&viewer), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b:#}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("editor"),
        "{b:#}"
    );
    // The server's own loop opens the case and works it, with no request asking.
    let mut case = Value::Null;
    for _ in 0..120 {
        let (st, b) = api
            .call(
                "GET",
                &s.url("/v1/agent?prompt=support"),
                Some(&viewer),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{b:#}");
        if let Some(c) = b["cases"].as_array().and_then(|c| c.first())
            && c["state"] != "open"
        {
            case = c.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(case["slice"]["value"], "billing", "{case:#}\n{}", s.log());
    assert!(
        ["proposed", "attempted"].contains(&case["state"].as_str().unwrap()),
        "{case:#}"
    );
    assert!(
        case["diagnosis"]["summary"]
            .as_str()
            .unwrap()
            .contains("corrected to `billing` ×50"),
        "{case:#}"
    );
    // An editor's pass finds the same case, not a new one.
    let (st, b) = api
        .call("POST", &s.url("/v1/agent/pass"), Some(&editor), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{b:#}");
    let (_, b) = api
        .call("GET", &s.url("/v1/agent"), Some(&viewer), None)
        .await;
    assert_eq!(b["cases"].as_array().unwrap().len(), 1, "{b:#}");
    assert!(
        b["slices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|sl| sl["slice"]["value"] == "billing"
                && sl["mean"] == 0.0
                && sl["calls"] == 50
                && sl["error_rate"] == 0.0
                && sl["mean_latency_ms"] == 1.0
                && sl["cost_per_call_usd"].is_null()),
        "{b:#}"
    );
    // A bad query part is named.
    let (st, b) = api
        .call("GET", &s.url("/v1/agent?promt=x"), Some(&viewer), None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b:#}");
}

/// An inference of `support@v1` (hash `hash`) on production, as the server logs one.
fn logged(
    id: &str,
    hash: &str,
    topic: &str,
    question: &str,
    output: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> metaprompt_registry::service::Inference {
    metaprompt_registry::service::Inference {
        id: id.into(),
        prompt: "support".into(),
        hash: hash.into(),
        seq: 1,
        label: Some("production".into()),
        model: "mock:exec".into(),
        inputs: json!({ "question": question }),
        rendered_hash: "r".into(),
        output: Some(output.into()),
        error: None,
        tags: [("topic".to_string(), topic.to_string())].into(),
        metadata: Value::Null,
        input_tokens: 1,
        output_tokens: 1,
        cost_usd: None,
        latency_ms: 1.0,
        caller: "app".into(),
        created_at: at,
    }
}

/// A user's verdict on an inference, with the right answer when it was wrong.
fn judged(
    id: &str,
    right: bool,
    correction: Option<&str>,
) -> metaprompt_registry::service::Feedback {
    metaprompt_registry::service::Feedback {
        inference_id: id.into(),
        score: Some(if right { 1.0 } else { 0.0 }),
        label: None,
        correction: correction.map(Into::into),
        comment: None,
        source: metaprompt_registry::service::FeedbackSource::User,
        caller: "app".into(),
        created_at: chrono::Utc::now(),
    }
}
