//! `metaprompt check-serve TASK NAME@LABEL --server URL`: fidelity checked, not assumed. The
//! version the label points at is fetched from the server, evaluated offline on the task's
//! split (the engine's evaluation), and every example is sent to the server's `/run` exactly as
//! an application sends it (inputs only, no settings, the version pinned); the answers, the
//! settings that ran and the scores are compared. Exit 1 when anything differs.

use anyhow::{Context as _, bail};
use metaprompt_engine::{EvalRequest, Scope};
use metaprompt_eval::settings::RunSettings;
use metaprompt_eval::{Example, PromptFile};
use metaprompt_server::gateway::Applied;
use serde::Serialize;
use serde_json::{Value, json};

use crate::args::{CheckServeArgs, Global};
use crate::context;
use crate::format::outln;

/// What the check found.
#[derive(Debug, Serialize)]
struct Checked {
    prompt: String,
    version: String,
    split: String,
    examples: usize,
    identical: usize,
    /// The examples whose served answer differs: (id, offline, served).
    differing: Vec<(String, String, String)>,
    /// The settings the server ran with (`settings` of its answer).
    served_settings: Option<Applied>,
    /// What in them differs from the offline evaluation's settings (the version's `[run]`,
    /// else the task's).
    settings_differ: Vec<String>,
    offline_score: Option<f64>,
    served_score: Option<f64>,
}

pub async fn run(global: &Global, args: CheckServeArgs) -> anyhow::Result<()> {
    let base = args.server.trim_end_matches('/').to_string();
    let (name, selector) = match args.reference.split_once('@') {
        Some((n, s)) => (n.to_string(), Some(s.to_string())),
        None => (args.reference.clone(), None),
    };
    let http = Client::new(args.token.clone());
    // The version the reference means now; every request below pins it.
    let query = match &selector {
        Some(s) if s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit()) => {
            format!("version={s}")
        }
        Some(label) => format!("label={label}"),
        None => "label=production".into(),
    };
    let head = http
        .get(&format!("{base}/v1/prompts/{name}?{query}"))
        .await?;
    let version = head["version"]
        .as_str()
        .context("the server's answer names no version")?
        .to_string();
    let shown = http
        .get(&format!("{base}/v1/prompts/{name}/versions/{version}"))
        .await?;
    let content = shown["version"]["content"]
        .as_str()
        .context("the server's answer has no version content")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join(format!("{name}.toml"));
    std::fs::write(&file, content)?;

    // Offline: the engine's evaluation of that version.
    let engine = context::engine(global).await?;
    let mut scope = Scope::new(&args.task);
    scope.split.clone_from(&args.split);
    scope.limit = args.limit;
    let offline = engine
        .eval(EvalRequest {
            scope,
            prompt: Some(file.clone()),
            out: Some(dir.path().join("offline.jsonl")),
        })
        .wait()
        .await?;
    let task = metaprompt_eval::Task::load(&args.task)?;
    let stored = PromptFile::load(&file)?;
    // What the offline evaluation ran with: the version's own `[run]`, else the task's.
    let evaluated = stored
        .run
        .clone()
        .unwrap_or_else(|| RunSettings::of_task(&task));

    // Served: each example as an application sends it.
    let mut served = Vec::new();
    let mut served_settings: Option<Applied> = None;
    for r in &offline.report.results {
        let answer = http
            .post(
                &format!("{base}/v1/prompts/{name}/run"),
                &json!({"inputs": r.input, "version": version}),
            )
            .await
            .with_context(|| format!("example {}", r.id))?;
        if served_settings.is_none() {
            served_settings = Some(
                serde_json::from_value(answer["settings"].clone())
                    .context("the server's answer has no `settings` it can read")?,
            );
        }
        let text = answer["output"].as_str().unwrap_or_default().to_string();
        let example = Example {
            id: r.id.clone(),
            vars: r.input.clone(),
            expected: r.expected.clone(),
        };
        served.push((example, text));
    }
    let scores = engine.score_outputs(&args.task, &served).await?;
    engine.close().await;

    let mut checked = Checked {
        prompt: name.clone(),
        version: version.clone(),
        split: args.split.clone(),
        examples: served.len(),
        identical: 0,
        differing: Vec::new(),
        settings_differ: served_settings
            .as_ref()
            .map(|s| settings_differ(s, &evaluated))
            .unwrap_or_default(),
        served_settings,
        offline_score: mean(offline.report.results.iter().map(|r| r.score)),
        served_score: mean(scores.iter().map(|s| s.as_ref().ok().copied())),
    };
    for (r, (_, text)) in offline.report.results.iter().zip(&served) {
        if &r.output == text {
            checked.identical += 1;
        } else {
            checked
                .differing
                .push((r.id.clone(), r.output.clone(), text.clone()));
        }
    }
    report(&checked, &base, &args);
    if !checked.differing.is_empty() || !checked.settings_differ.is_empty() {
        bail!(
            "{}@{} is not served as it was evaluated: {} of {} answers differ{}",
            name,
            version,
            checked.differing.len(),
            checked.examples,
            if checked.settings_differ.is_empty() {
                String::new()
            } else {
                format!("; settings: {}", checked.settings_differ.join("; "))
            }
        );
    }
    Ok(())
}

/// How the served settings differ from those the offline evaluation used.
fn settings_differ(served: &Applied, evaluated: &RunSettings) -> Vec<String> {
    let mut out = Vec::new();
    if served.source == "server" {
        out.push(
            "the version has no [run]: it is served with the server's defaults (store it with \
             optimize, or add a [run] table)"
                .into(),
        );
    }
    if served.max_tokens != evaluated.max_tokens {
        out.push(format!(
            "max_tokens {} served, {} evaluated",
            served.max_tokens, evaluated.max_tokens
        ));
    }
    if (served.temperature - evaluated.temperature).abs() > 1e-6 {
        out.push(format!(
            "temperature {} served, {} evaluated",
            served.temperature, evaluated.temperature
        ));
    }
    if served.stop != evaluated.stop {
        out.push(format!(
            "stop {:?} served, {:?} evaluated",
            served.stop, evaluated.stop
        ));
    }
    // A model that cannot score generates in both places; labels that are scored must match.
    if let Some(labels) = &served.labels
        && Some(labels) != evaluated.labels.as_ref()
    {
        out.push(format!(
            "labels {labels:?} served, {:?} evaluated",
            evaluated.labels
        ));
    }
    out
}

fn mean(scores: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = scores.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn report(c: &Checked, base: &str, args: &CheckServeArgs) {
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(c).unwrap_or_else(|_| "{}".into())
        );
        return;
    }
    let score = |s: Option<f64>| s.map_or_else(|| "none scored".to_string(), |v| format!("{v:.3}"));
    outln!(
        "check-serve · {}@{} on {base} · {}, {} examples",
        c.prompt,
        c.version,
        c.split,
        c.examples
    );
    outln!(
        "settings   served {}",
        serde_json::to_string(&c.served_settings).unwrap_or_default()
    );
    for d in &c.settings_differ {
        outln!("  differs  {d}");
    }
    outln!("answers    {} of {} identical", c.identical, c.examples);
    for (id, offline, served) in c.differing.iter().take(5) {
        outln!("  {id}: offline {offline:?} · served {served:?}");
    }
    outln!(
        "score      offline {} · served {}",
        score(c.offline_score),
        score(c.served_score)
    );
    outln!(
        "verdict    {}",
        if c.differing.is_empty() && c.settings_differ.is_empty() {
            "served as it was evaluated"
        } else {
            "NOT served as it was evaluated"
        }
    );
}

/// JSON over HTTP with the caller's token; a non-2xx answer is an error with the server's
/// message.
struct Client {
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    fn new(token: Option<String>) -> Self {
        Self {
            http: reqwest::Client::new(),
            token,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let r = match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        };
        let response = r
            .send()
            .await
            .with_context(|| format!("{what}: cannot reach the server"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{what}: {status}: {}",
                body["error"]["message"].as_str().unwrap_or("no message")
            );
        }
        Ok(body)
    }

    async fn get(&self, url: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(url), &format!("GET {url}")).await
    }

    async fn post(&self, url: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(url).json(body), &format!("POST {url}"))
            .await
    }
}
