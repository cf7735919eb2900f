//! What was evaluated is what is served: a version an optimization keeps carries the settings
//! its evaluation used (`[run]`: temperature, max_tokens, stop, the choice's labels), and the
//! server runs it with them when a request says nothing, answering what ran. The served outputs
//! of the test split equal the offline evaluation's, example by example.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, cli, mock_model, route_task, setup, token};
use serde_json::{Value, json};

/// The routing task with a stop sequence, so that every setting is visible in what the model
/// receives.
fn task(d: &Path) -> String {
    let file = route_task(d);
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replace(
        "max_tokens = 4\n",
        "max_tokens = 4\nstop = [\"\\n\"]\nexecution_temperature = 0.0\n",
    );
    std::fs::write(&file, text).unwrap();
    file
}

async fn post(url: &str, token: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status}: {v:#}");
    v
}

/// Run a Python `script` with the real `openai` package against the server (argv: base URL,
/// token, `inputs` as JSON); what it prints, as JSON.
async fn openai_client(
    script: &'static str,
    s: &Server,
    token: &str,
    inputs: &[String],
) -> Vec<Value> {
    let python = tokio::task::spawn_blocking(common::openai_python)
        .await
        .unwrap();
    let (base, key, list) = (s.url(""), token.to_string(), json!(inputs).to_string());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &base, &key, &list])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The mock library and the routing task, optimized once (`fewshot`, one round) into the
/// library as `route`: its seed is v1.
async fn optimized(d: &Path) -> (wiremock::MockServer, String) {
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    let task = task(d);
    cli(
        d,
        &[
            "optimize",
            &task,
            "--algo",
            "fewshot",
            "--rounds",
            "1",
            "--minibatch",
            "6",
            "--demos",
            "2",
            "--name",
            "route",
        ],
    )
    .await;
    (mock, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_version_runs_served_exactly_as_it_was_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mock, task) = optimized(d).await;
    // The seed (a person's version) and the kept one both carry the task's settings.
    let shown = cli(d, &["prompts", "show", "route@v1", "--json"]).await;
    assert!(shown.contains("max_tokens = 4"), "{shown}");
    cli(d, &["prompts", "label", "route@v1", "production"]).await;
    // The offline evaluation of that version, on the test split.
    cli(d, &["prompts", "export", "route@v1", "--out", "v1.toml"]).await;
    cli(
        d,
        &[
            "eval",
            &task,
            "--prompt",
            "v1.toml",
            "--split",
            "test",
            "--out",
            "offline.jsonl",
        ],
    )
    .await;
    let offline = jsonl(&d.join("offline.jsonl"));
    assert_eq!(offline.len(), 12);

    let runner = token(d, "runner").await;
    let s = Server::start(d, &[]);
    let before = mock.received_requests().await.unwrap().len();
    for row in &offline {
        let question = row["input"]["question"].as_str().unwrap();
        let served = post(
            &s.url("/v1/prompts/route/run"),
            &runner,
            json!({"inputs": {"question": question}}),
        )
        .await;
        assert_eq!(served["output"], row["output"], "{question}");
        // The mock cannot score: the answer is generated and read as the choice metric reads it.
        assert_eq!(served["answer"], row["output"], "{served:#}");
        assert_eq!(served["settings"]["source"], "version", "{served:#}");
        assert_eq!(served["settings"]["max_tokens"], 4);
    }
    // What reached the model: the version's settings, not the server's 256 tokens.
    let sent = mock.received_requests().await.unwrap();
    let sent: Vec<Value> = sent[before..]
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent.len(), offline.len());
    for body in &sent {
        assert_eq!(body["max_tokens"], 4, "{body}");
        assert_eq!(body["stop"], json!(["\n"]), "{body}");
        assert_eq!(body["temperature"], 0.0, "{body}");
    }
    // A request may override a setting explicitly, and the answer says so.
    let served = post(
        &s.url("/v1/prompts/route/run"),
        &runner,
        json!({"inputs": {"question": "x"}, "max_tokens": 2}),
    )
    .await;
    assert_eq!(served["settings"]["source"], "version+request");
    assert_eq!(served["settings"]["max_tokens"], 2);
    // The OpenAI-compatible endpoint runs the version the same way.
    let chat = post(
        &s.url("/v1/chat/completions"),
        &runner,
        json!({"model": "prompt:route@production",
               "messages": [{"role": "user", "content": "invoice 3 is wrong"}]}),
    )
    .await;
    assert_eq!(chat["metaprompt"]["settings"]["source"], "version");
    assert_eq!(chat["metaprompt"]["settings"]["max_tokens"], 4);
    // A version without settings (added by hand) runs with the server's defaults, and says so.
    let served = post(
        &s.url("/v1/prompts/support/run"),
        &runner,
        json!({"inputs": {"question": "x"}}),
    )
    .await;
    assert_eq!(served["settings"]["source"], "server", "{served:#}");
    assert_eq!(served["settings"]["max_tokens"], 256);
}

/// A version that works its answer out first (`[run] answer_after`, as `optimize` keeps the
/// worked-answer form): its evaluation scores the text after the marker, and the server runs
/// it with the version's room for working and no stop, and answers the label after the marker,
/// where reading the whole output would find the other team first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worked_version_is_served_with_its_working_and_answers_after_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mock = mock_model(Duration::ZERO).await;
    setup(d, &mock).await;
    let task = task(d);
    std::fs::write(
        d.join("worked.toml"),
        "instruction = \"Route the question. Work it out step by step as in the examples, then \
         end with a line \\\"Answer: <the answer>\\\".\"\n\
         template = \"Question: {{ question }}\\nTeam:\"\n\
         demo_template = \"Question: {{ question }}\\nTeam: {{ team }}\\n\\n\"\n\
         target_model = \"mock:exec\"\n\
         [[demos]]\nquestion = \"invoice 7 is wrong\"\n\
         team = \"not other: so far billing\\nAnswer: billing\"\n\
         [run]\nmax_tokens = 64\nstop = [\"\\n\\n\"]\nlabels = [\"billing\", \"other\"]\n\
         generate = true\nanswer_after = \"Answer:\"\n",
    )
    .unwrap();
    cli(
        d,
        &["prompts", "add", "worked", "worked.toml", "--task", &task],
    )
    .await;
    cli(d, &["prompts", "label", "worked@v1", "production"]).await;
    cli(d, &["prompts", "export", "worked@v1", "--out", "w1.toml"]).await;
    let eval = cli(
        d,
        &[
            "eval",
            &task,
            "--prompt",
            "w1.toml",
            "--split",
            "test",
            "--out",
            "offline.jsonl",
            "--json",
        ],
    )
    .await;
    let summary: Value = serde_json::from_str(&eval).unwrap();
    assert_eq!(summary["score"]["mean"], 1.0, "{summary:#}");
    let offline = jsonl(&d.join("offline.jsonl"));
    assert_eq!(offline.len(), 12);

    let runner = token(d, "runner").await;
    let s = Server::start(d, &[]);
    let before = mock.received_requests().await.unwrap().len();
    for row in &offline {
        let question = row["input"]["question"].as_str().unwrap();
        let served = post(
            &s.url("/v1/prompts/worked/run"),
            &runner,
            json!({"inputs": {"question": question}}),
        )
        .await;
        assert_eq!(served["output"], row["output"], "{question}");
        assert!(served["output"].as_str().unwrap().contains("so far"));
        assert_eq!(served["answer"], row["expected"], "{served:#}");
        assert_eq!(served["settings"]["max_tokens"], 64);
    }
    let sent = mock.received_requests().await.unwrap();
    for r in &sent[before..] {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["max_tokens"], 64, "{body}");
        assert_eq!(body["stop"], json!(["\n\n"]), "{body}");
    }
}

/// The same on the embedded model, where the evaluation answers a choice by label scoring:
/// the served version scores the same labels and answers what the evaluation answered, for
/// every example of the test slice, through `/run` and the OpenAI-compatible endpoint, with
/// no per-request settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_kept_classifier_is_served_as_it_was_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let task = common::sst2().join("task.toml");
    let task = task.to_str().unwrap();
    let run = d.join("run");
    let out = cli(
        d,
        &[
            "optimize",
            task,
            "--algo",
            "fewshot",
            "--dev-limit",
            "20",
            "--test-limit",
            "20",
            "--rounds",
            "1",
            "--minibatch",
            "10",
            "--run-dir",
            run.to_str().unwrap(),
            "--json",
        ],
    )
    .await;
    let o: Value = serde_json::from_str(&out).unwrap();
    let kept = if o["kept_seed"] == true {
        "sst2@v1"
    } else {
        "sst2@v2"
    };
    cli(d, &["prompts", "label", kept, "production"]).await;
    cli(d, &["prompts", "export", kept, "--out", "kept.toml"]).await;
    let exported = std::fs::read_to_string(d.join("kept.toml")).unwrap();
    assert!(
        exported.contains("[run]") && exported.contains("labels = ["),
        "{exported}"
    );
    cli(
        d,
        &[
            "eval",
            task,
            "--prompt",
            "kept.toml",
            "--split",
            "test",
            "--limit",
            "20",
            "--out",
            "offline.jsonl",
        ],
    )
    .await;
    let offline = jsonl(&d.join("offline.jsonl"));
    assert_eq!(offline.len(), 20);
    let runner = token(d, "runner").await;
    let s = Server::start(d, &[]);
    let mut agree = 0;
    for (k, row) in offline.iter().enumerate() {
        let sentence = row["input"]["sentence"].as_str().unwrap();
        let served = post(
            &s.url("/v1/prompts/sst2/run"),
            &runner,
            json!({"inputs": {"sentence": sentence}}),
        )
        .await;
        assert_eq!(served["settings"]["source"], "version", "{served:#}");
        assert!(served["settings"]["labels"].is_array(), "{served:#}");
        assert_eq!(served["output"], row["output"], "example {k}: {sentence}");
        agree += 1;
        if k < 3 {
            let chat = post(
                &s.url("/v1/chat/completions"),
                &runner,
                json!({"model": "prompt:sst2@production",
                       "messages": [{"role": "user", "content": sentence}],
                       "metaprompt_inputs": {"sentence": sentence}}),
            )
            .await;
            assert_eq!(
                chat["choices"][0]["message"]["content"], row["output"],
                "chat, example {k}"
            );
        }
    }
    assert_eq!(agree, 20);

    // The real `openai` client, as an application calls it: no max_tokens, no stop.
    let sentences: Vec<String> = offline
        .iter()
        .map(|r| r["input"]["sentence"].as_str().unwrap().to_string())
        .collect();
    let script = r#"
import json, sys
from openai import OpenAI
base, key, sentences = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
c = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
out = []
for s in sentences:
    r = c.chat.completions.create(model="prompt:sst2@production",
                                  messages=[{"role": "user", "content": s}])
    out.append({"text": r.choices[0].message.content,
                "settings": r.model_extra["metaprompt"]["settings"]})
print(json.dumps(out))
"#;
    let answers = openai_client(script, &s, &runner, &sentences).await;
    for (k, (a, row)) in answers.iter().zip(&offline).enumerate() {
        assert_eq!(a["text"], row["output"], "openai client, example {k}");
        assert_eq!(a["settings"]["source"], "version");
    }

    // Exported and imported again (the prompt file, [run] included): served the same.
    cli(
        d,
        &["prompts", "import", "kept.toml", "--name", "sst2-copy"],
    )
    .await;
    cli(d, &["prompts", "label", "sst2-copy@v1", "production"]).await;
    for (k, row) in offline.iter().take(5).enumerate() {
        let sentence = row["input"]["sentence"].as_str().unwrap();
        let served = post(
            &s.url("/v1/prompts/sst2-copy/run"),
            &runner,
            json!({"inputs": {"sentence": sentence}}),
        )
        .await;
        assert_eq!(served["output"], row["output"], "imported, example {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_serve_passes_a_version_served_as_evaluated_and_fails_one_that_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The mock model lives as long as the test.
    let (_mock, task) = optimized(d).await;
    cli(d, &["prompts", "label", "route@v1", "production"]).await;
    // The same template added by hand, without [run]: served with the server's defaults.
    std::fs::write(
        d.join("plain.toml"),
        "template = \"Question: {{ question }}\\nTeam:\"\ntarget_model = \"mock:exec\"\n",
    )
    .unwrap();
    cli(d, &["prompts", "add", "route", "plain.toml"]).await;
    let runner = token(d, "runner").await;
    let s = Server::start(d, &[]);
    let server = format!("http://{}", s.addr);
    let ok = common::metaprompt(
        d,
        &[
            "check-serve",
            &task,
            "route@production",
            "--server",
            &server,
            "--json",
        ],
        &[
            ("METAPROMPT_TOKEN", runner.as_str()),
            ("METAPROMPT_LIBRARY", d.join("lib.db").to_str().unwrap()),
            ("METAPROMPT_NO_CACHE", "1"),
        ],
    )
    .await;
    assert!(ok.status.success(), "{}", common::stderr(&ok));
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["identical"], 12, "{v:#}");
    assert_eq!(v["examples"], 12);
    assert_eq!(v["settings_differ"], json!([]), "{v:#}");
    assert_eq!(v["offline_score"], v["served_score"], "{v:#}");
    // The newest version (added by hand) has no settings: the check fails and says why.
    let newest =
        serde_json::from_str::<Value>(&cli(d, &["prompts", "show", "route", "--json"]).await)
            .unwrap();
    let seq = newest["version"]["seq"]
        .as_u64()
        .or_else(|| newest["seq"].as_u64())
        .unwrap();
    let reference = format!("route@v{seq}");
    let bad = common::metaprompt(
        d,
        &["check-serve", &task, &reference, "--server", &server],
        &[
            ("METAPROMPT_TOKEN", runner.as_str()),
            ("METAPROMPT_LIBRARY", d.join("lib.db").to_str().unwrap()),
            ("METAPROMPT_NO_CACHE", "1"),
        ],
    )
    .await;
    assert!(!bad.status.success());
    let out = common::stdout(&bad) + &common::stderr(&bad);
    assert!(
        out.contains("no [run]") && out.contains("max_tokens 256 served, 4 evaluated"),
        "{out}"
    );
    assert!(out.contains("NOT served as it was evaluated"), "{out}");
    // The same file added with --task records how the task runs it (here that makes it the
    // seed version again, content and settings alike): served as evaluated.
    let added = serde_json::from_str::<Value>(
        &cli(
            d,
            &[
                "prompts",
                "add",
                "route",
                "plain.toml",
                "--task",
                &task,
                "--json",
            ],
        )
        .await,
    )
    .unwrap();
    assert!(
        added["version"]["content"]
            .as_str()
            .unwrap()
            .contains("[run]"),
        "{added:#}"
    );
    let seq2 = added["version"]["seq"].as_u64().unwrap();
    assert_ne!(seq2, seq, "{added:#}");
    let reference = format!("route@v{seq2}");
    let ok = common::metaprompt(
        d,
        &["check-serve", &task, &reference, "--server", &server],
        &[
            ("METAPROMPT_TOKEN", runner.as_str()),
            ("METAPROMPT_LIBRARY", d.join("lib.db").to_str().unwrap()),
            ("METAPROMPT_NO_CACHE", "1"),
        ],
    )
    .await;
    assert!(
        ok.status.success(),
        "{}{}",
        common::stdout(&ok),
        common::stderr(&ok)
    );
    assert!(common::stdout(&ok).contains("served as it was evaluated"));
}

/// A generation task on the embedded model (a base model: text form), scored by `equals` with
/// normalization: capitals of countries, with `stop` and a short `max_tokens` the evaluation
/// relied on.
fn capitals(d: &Path, max_tokens: u32, stop: &str) -> String {
    let rows = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(c, k)| json!({"country": c, "capital": k}).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(
        d.join("capitals-test.jsonl"),
        rows(&[
            ("Italy", "Rome"),
            ("Germany", "Berlin"),
            ("Spain", "Madrid"),
            ("Egypt", "Cairo"),
            ("Canada", "Ottawa"),
            ("Kenya", "Nairobi"),
            ("Peru", "Lima"),
            ("Norway", "Oslo"),
        ]),
    )
    .unwrap();
    std::fs::write(
        d.join("capitals-train.jsonl"),
        rows(&[
            ("France", "Paris"),
            ("Japan", "Tokyo"),
            ("Chile", "Santiago"),
        ]),
    )
    .unwrap();
    let file = d.join(format!("capitals-{max_tokens}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"capitals\"\ndescription = \"Name the capital city of the country.\"\n\
             inputs = [\"country\"]\noutput = \"capital\"\n\
             [prompt]\nname = \"seed\"\ntemplate = \"Country: {{{{ country }}}}\\nCapital:\"\n\
             demo_template = \"Country: {{{{ country }}}}\\nCapital: {{{{ capital }}}}\\n\\n\"\n\
             demos = [{{ country = \"France\", capital = \"Paris\" }}, \
                      {{ country = \"Japan\", capital = \"Tokyo\" }}]\n\
             [data]\ntrain = \"capitals-train.jsonl\"\ndev = \"capitals-train.jsonl\"\n\
             test = \"capitals-test.jsonl\"\n\
             [[metrics]]\ntype = \"equals\"\nnormalize = true\n\
             [models]\nexecution = \"local:gemma-3-270m\"\nmeta = \"local:gemma-3-270m\"\n\
             max_tokens = {max_tokens}\n{stop}\n"
        ),
    )
    .unwrap();
    file.to_string_lossy().into_owned()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A person's generation prompt added with its task's settings (`prompts add --task`), on the
/// embedded base model: `/run`, the real `openai` client (chat and completions) and the
/// version's text and JSON exports imported again all give the offline evaluation's outputs
/// and score; `eval` runs an imported version with its own `[run]`, not a task's other
/// settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_a_generation_prompt_is_served_and_exported_as_it_was_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let task = capitals(d, 6, "stop = [\"\\n\"]");
    // The seed, added as a person adds a version, with the task's settings.
    std::fs::write(
        d.join("seed.toml"),
        "template = \"Country: {{ country }}\\nCapital:\"\n\
         demo_template = \"Country: {{ country }}\\nCapital: {{ capital }}\\n\\n\"\n\
         demos = [{ country = \"France\", capital = \"Paris\" }, \
                  { country = \"Japan\", capital = \"Tokyo\" }]\n\
         target_model = \"local:gemma-3-270m\"\n",
    )
    .unwrap();
    cli(
        d,
        &["prompts", "add", "capitals", "seed.toml", "--task", &task],
    )
    .await;
    cli(d, &["prompts", "label", "capitals@v1", "production"]).await;
    cli(d, &["prompts", "export", "capitals@v1", "--out", "v1.toml"]).await;
    let exported = std::fs::read_to_string(d.join("v1.toml")).unwrap();
    assert!(
        exported.contains("max_tokens = 6") && exported.contains("read = \"normalized\""),
        "{exported}"
    );
    let eval = |prompt: &'static str, task: String, out: &'static str| {
        let d = d.to_path_buf();
        async move {
            cli(
                &d,
                &[
                    "eval", &task, "--prompt", prompt, "--split", "test", "--out", out,
                ],
            )
            .await;
            jsonl(&d.join(out))
        }
    };
    let offline = eval("v1.toml", task.clone(), "offline.jsonl").await;
    assert_eq!(offline.len(), 8);
    assert!(
        offline
            .iter()
            .all(|r| !r["output"].as_str().unwrap().contains('\n')),
        "the stop sequence applies: {offline:?}"
    );

    let runner = token(d, "runner").await;
    let s = Server::start(d, &[]);
    for row in &offline {
        let country = row["input"]["country"].as_str().unwrap();
        let served = post(
            &s.url("/v1/prompts/capitals/run"),
            &runner,
            json!({"inputs": {"country": country}}),
        )
        .await;
        assert_eq!(served["output"], row["output"], "{country}: {served:#}");
        assert_eq!(served["settings"]["source"], "version");
        assert_eq!(served["settings"]["max_tokens"], 6);
        // The answer as the metric read it: normalized text.
        let normalized = metaprompt_eval::metric::normalize(row["output"].as_str().unwrap());
        assert_eq!(served["answer"], normalized, "{served:#}");
    }

    // The real `openai` client, chat and completions, with no settings of its own.
    let countries: Vec<String> = offline
        .iter()
        .map(|r| r["input"]["country"].as_str().unwrap().to_string())
        .collect();
    let script = r#"
import json, sys
from openai import OpenAI
base, key, countries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
c = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=300)
out = []
for x in countries:
    chat = c.chat.completions.create(model="prompt:capitals@production",
                                     messages=[{"role": "user", "content": x}])
    done = c.completions.create(model="prompt:capitals@production", prompt=x)
    out.append({"chat": chat.choices[0].message.content, "completion": done.choices[0].text,
                "settings": chat.model_extra["metaprompt"]["settings"]})
print(json.dumps(out))
"#;
    let answers = openai_client(script, &s, &runner, &countries).await;
    assert_eq!(answers.len(), offline.len());
    for (a, row) in answers.iter().zip(&offline) {
        assert_eq!(a["chat"], row["output"], "openai chat: {a}");
        assert_eq!(a["completion"], row["output"], "openai completions: {a}");
        assert_eq!(a["settings"]["source"], "version");
    }
    drop(s);

    // Exported as text and as JSON (a completions request: the model continues text), imported
    // again and evaluated: the same outputs. The JSON one is evaluated on the task with other
    // settings: it runs with its own `[run]`.
    cli(d, &["prompts", "export", "capitals@v1", "--out", "v1.json"]).await;
    let body: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("v1.json")).unwrap()).unwrap();
    assert!(
        body["prompt"].is_string() && body.get("messages").is_none(),
        "{body:#}"
    );
    assert_eq!(body["max_tokens"], 6);
    assert_eq!(body["stop"], json!(["\n"]));
    cli(d, &["prompts", "export", "capitals@v1", "--out", "v1.txt"]).await;
    cli(
        d,
        &["prompts", "import", "v1.json", "--name", "capitals-json"],
    )
    .await;
    cli(
        d,
        &["prompts", "import", "v1.txt", "--name", "capitals-text"],
    )
    .await;
    cli(
        d,
        &[
            "prompts",
            "export",
            "capitals-json@v1",
            "--out",
            "back-json.toml",
        ],
    )
    .await;
    cli(
        d,
        &[
            "prompts",
            "export",
            "capitals-text@v1",
            "--out",
            "back-text.toml",
        ],
    )
    .await;
    let loose = capitals(d, 40, "");
    let from_json = eval("back-json.toml", loose, "json.jsonl").await;
    let from_text = eval("back-text.toml", task.clone(), "text.jsonl").await;
    for (k, row) in offline.iter().enumerate() {
        assert_eq!(
            from_json[k]["output"], row["output"],
            "json export, example {k}"
        );
        assert_eq!(from_json[k]["score"], row["score"]);
        assert_eq!(
            from_text[k]["output"], row["output"],
            "text export, example {k}"
        );
        assert_eq!(from_text[k]["score"], row["score"]);
    }
}
