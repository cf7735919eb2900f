//! The prompt-engineer agent end to end: the real `metaprompt serve` binary with the embedded
//! model, a real library file, a news classifier served on `production`, traffic from the
//! shipped AG News subset tagged by topic, and simulated users who send feedback (with the
//! correct topic as a correction) from the dataset's ground truth. Every agent pass is asked
//! for over the API (`POST /v1/agent/pass`), as `serve --agent` would run it on a timer.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Server, cli};
use metaprompt_eval::{Example, Task};
use serde_json::{Value, json};

/// The incumbent: the shipped four-shot prompt without its business demonstration, so the
/// business slice has no example and is answered as something else.
fn incumbent(dir: &Path, with_business: bool) -> PathBuf {
    let demos = [
        (
            "SA 'mercenaries' plead not guilty",
            "Sixty-six men accused of plotting a coup in Equatorial Guinea deny breaching Zimbabwe's security laws.",
            "world",
        ),
        (
            "Big East braces for growth spurt",
            "It's hard to imagine, but the league that gave us college basketball's last two national champions is about to get a lot better.",
            "sports",
        ),
        (
            "Cummins 3Q Profit More Than Quadruples",
            "Service engine maker Cummins Inc. on Wednesday said that third-quarter profits more than quadrupled, beating both its own guidance and Wall Street estimates.",
            "business",
        ),
        (
            "Bill Clinton Helps Launch Search Engine",
            "Former president Bill Clinton on Monday helped launch a new Internet search company backed by the Chinese government.",
            "technology",
        ),
    ];
    let mut toml = String::from(
        "name = \"news\"\n\
         template = \"Title: {{ title }}\\nDescription: {{ description }}\\nTopic:\"\n\
         demo_template = \"Title: {{ title }}\\nDescription: {{ description }}\\nTopic: {{ label }}\\n\\n\"\n\
         target_model = \"local:gemma-3-270m\"\n",
    );
    for (title, description, label) in demos {
        if label == "business" && !with_business {
            continue;
        }
        toml.push_str(&format!(
            "\n[[demos]]\ntitle = {}\ndescription = {}\nlabel = \"{label}\"\n",
            toml_str(title),
            toml_str(description)
        ));
    }
    let path = dir.join(if with_business {
        "good.toml"
    } else {
        "news.toml"
    });
    std::fs::write(&path, toml).unwrap();
    path
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Every shipped AG News article, by topic.
fn articles() -> BTreeMap<String, Vec<Example>> {
    let task =
        Task::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agnews/task.toml"))
            .unwrap();
    let mut by: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for split in ["train", "dev", "test"] {
        for e in task.examples(split).unwrap() {
            let label = e
                .expected
                .as_ref()
                .and_then(Value::as_str)
                .unwrap()
                .to_string();
            by.entry(label).or_default().push(e);
        }
    }
    by
}

/// One embedded-model scenario at a time: two servers decoding at once on two cores take
/// longer together than one after the other.
static EMBEDDED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The application and its users.
struct App {
    server: Server,
    http: reqwest::Client,
    articles: BTreeMap<String, Vec<Example>>,
    next: BTreeMap<String, usize>,
    sent: usize,
    feedback: usize,
}

impl App {
    fn new(server: Server) -> Self {
        App {
            server,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3000))
                .build()
                .unwrap(),
            articles: articles(),
            next: BTreeMap::new(),
            sent: 0,
            feedback: 0,
        }
    }

    /// `n` requests of which `business` percent are business articles (the rest alternate
    /// sports and technology: the application serves no world news), each answered, then
    /// judged by its user against the ground truth (the answer's first word is the topic).
    async fn traffic(&mut self, n: usize, business: usize) {
        let mut items = Vec::new();
        let mut calls = Vec::new();
        for k in 0..n {
            let topic = if (self.sent + k) % 100 < business {
                "business"
            } else {
                ["sports", "technology"][(self.sent + k) % 2]
            };
            let pool = &self.articles[topic];
            let i = self.next.entry(topic.into()).or_default();
            let e = pool[*i % pool.len()].clone();
            *i += 1;
            let body = json!({
                "inputs": {"title": e.vars["title"], "description": e.vars["description"]},
                "tags": {"topic": topic},
                "max_tokens": 3,
                "stop": ["\n"],
                "split_key": format!("user-{}", self.sent + k),
            });
            let url = self.server.url("/v1/prompts/news/run");
            let http = self.http.clone();
            calls.push(tokio::spawn(async move {
                let r = http.post(url).json(&body).send().await.unwrap();
                let status = r.status();
                let v: Value = r.json().await.unwrap();
                assert!(status.is_success(), "{v}");
                (v, topic)
            }));
        }
        for c in calls {
            let (v, topic) = c.await.unwrap();
            let output = v["output"]
                .as_str()
                .unwrap_or_default()
                .trim()
                .to_lowercase();
            let right = output.split_whitespace().next() == Some(topic);
            items.push(json!({
                "inference_id": v["inference_id"], "score": right,
                "correction": (!right).then_some(topic),
            }));
        }
        self.sent += n;
        self.feedback += items.len();
        let r = self
            .http
            .post(self.server.url("/v1/feedback:batch"))
            .json(&json!({ "items": items }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn pass(&self) -> Value {
        let r = self
            .http
            .post(self.server.url("/v1/agent/pass"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{v}\n{}", self.server.log());
        v
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.http.get(self.server.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "{path}");
        r.json().await.unwrap()
    }

    /// The case on the business slice, if one is open.
    async fn case(&self) -> Option<Value> {
        let s = self.get("/v1/agent?prompt=news").await;
        s["cases"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|c| c["slice"]["value"] == "business")
            .cloned()
    }
}

/// A library with `news` v1 on `production`, the agent's policy, and the server. The agent's
/// meta model is the capable embedded one (the served model, a 270M base model, would be the
/// default): it writes the diagnosis's hypothesis.
async fn start(dir: &Path, with_business: bool) -> App {
    std::fs::write(
        dir.join("metaprompt.toml"),
        "[server]\nrequest_timeout_secs = 3000\n\
         [agent]\nmeta = \"local:qwen2.5-coder-1.5b-instruct\"\n\
         min_n = 20\ncanary_weight = 50\ncanary_min_n = 40\ncanary_margin = 0.1\n\
         max_calls_per_day = 3000\n\
         [agent.prompts.news]\nmax_tokens = 3\nstop = [\"\\n\"]\n",
    )
    .unwrap();
    let file = incumbent(dir, with_business);
    cli(dir, &["prompts", "add", "news", file.to_str().unwrap()]).await;
    cli(dir, &["prompts", "label", "news@v1", "production"]).await;
    App::new(Server::start(dir, &["--insecure-local"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_agent_finds_the_drifting_slice_proposes_a_fix_and_ships_it_through_a_canary() {
    let _one = EMBEDDED.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut app = start(d, false).await;

    // Business articles are rare at first: too few to test, nothing is found.
    for _ in 0..4 {
        app.traffic(20, 5).await;
        let p = app.pass().await;
        assert!(
            app.case().await.is_none(),
            "nothing to find yet: {p:#}\n{:#}",
            app.get("/v1/agent").await
        );
    }
    let before = app.feedback;

    // The mix drifts: half the traffic is business now.
    let mut detected = None;
    while app.feedback - before < 200 {
        app.traffic(20, 50).await;
        app.pass().await;
        if app.case().await.is_some() {
            detected = Some(app.feedback - before);
            break;
        }
    }
    let events = detected.unwrap_or_else(|| panic!("not detected in 200 feedback events"));
    eprintln!("detected after {events} feedback events since the drift began");
    // The case waits for enough corrected failures to search on, then searches.
    for _ in 0..10 {
        if app.case().await.unwrap()["state"] != "open" {
            break;
        }
        app.traffic(20, 50).await;
        app.pass().await;
    }
    let case = app.case().await.unwrap();
    eprintln!("{case:#}");
    if case["state"] != "proposed" {
        // What the search tried, for the failure message.
        let run = case["attempts"][0]["run_dir"].as_str().unwrap_or_default();
        let report: Value = std::fs::read(Path::new(run).join("report.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for e in report["pool"].as_array().into_iter().flatten() {
            let scores = e["scores"].as_object().map(|s| {
                let v: Vec<f64> = s.values().filter_map(Value::as_f64).collect();
                (v.iter().sum::<f64>() / v.len().max(1) as f64, v.len())
            });
            eprintln!(
                "{} {} {:?} demos {}",
                e["id"], e["op"], scores, e["prompt"]["demos"]
            );
        }
        eprintln!("{:#}", report["rounds"]);
        panic!("not proposed: {case:#}");
    }
    let diagnosis = &case["diagnosis"];
    assert!(
        diagnosis["summary"]
            .as_str()
            .unwrap()
            .contains("`business`"),
        "the counts name what the failures should have been: {diagnosis:#}"
    );
    assert!(!diagnosis["hypothesis"].as_str().unwrap().is_empty());
    // Better on business, significantly; no slice significantly worse.
    let checks = case["proposal"]["checks"].as_array().unwrap();
    assert_eq!(checks[0]["slice"], "topic=business");
    assert!(
        checks[0]["diff"].as_f64().unwrap() > 0.0 && checks[0]["p"].as_f64().unwrap() < 0.05,
        "{checks:#?}"
    );
    for c in &checks[1..] {
        assert!(
            !(c["diff"].as_f64().unwrap() < 0.0 && c["p"].as_f64().unwrap() < 0.05),
            "{c:#}"
        );
    }

    // It is in the review queue, with its diagnosis; a reviewer approves it over the API.
    let seq = case["proposal"]["version"]["seq"].as_u64().unwrap();
    let queue = app.get("/v1/review").await;
    assert!(queue.to_string().contains("\"news\""), "{queue:#}");
    let shown = app.get(&format!("/v1/prompts/news/versions/v{seq}")).await;
    assert!(
        shown.to_string().contains("business"),
        "the proposal shows a business demonstration: {shown:#}"
    );
    let r = app
        .http
        .post(
            app.server
                .url(&format!("/v1/prompts/news/versions/v{seq}/review")),
        )
        .json(&json!({"decision": "approve", "comment": "adds the missing topic"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // The next pass starts the canary on production.
    app.pass().await;
    let case = app.case().await.unwrap();
    assert_eq!(case["state"], "canary", "{case:#}");
    let labels = app.get("/v1/prompts/news/labels").await;
    eprintln!("{labels:#}");

    // Live traffic on both; the agent promotes when the canary is not worse beyond the margin.
    let mut promoted = false;
    for _ in 0..10 {
        app.traffic(40, 50).await;
        app.pass().await;
        let case = app.case().await.unwrap();
        eprintln!(
            "canary {} / {}: {}",
            case["canary"]["canary_n"], case["canary"]["incumbent_n"], case["canary"]["last"]
        );
        match case["state"].as_str().unwrap() {
            "canary" => continue,
            "promoted" => {
                promoted = true;
                break;
            }
            other => panic!("the canary ended {other}: {case:#}"),
        }
    }
    assert!(promoted, "{:#}", app.case().await.unwrap());
    let fetched = app.get("/v1/prompts/news?label=production").await;
    assert_eq!(fetched["seq"].as_u64(), Some(seq), "{fetched:#}");
    let events = app.get("/v1/prompts/news/events").await.to_string();
    assert!(
        events.contains("promotion of agent case"),
        "the label move is in the audit log with its evidence: {events}"
    );
    // `agent status` shows the same case from the library.
    let text = cli(d, &["agent", "status", "--prompt", "news"]).await;
    assert!(
        text.contains("promoted") && text.contains("topic=business"),
        "{text}"
    );
}

/// A proposal measured better on the held-out check can still do worse on live traffic; the
/// canary is what catches it. The search does not file what it measured as worse, so the
/// worse proposal is planted: a version whose demonstrations are all labelled `politics` (a
/// word the application does not accept as a topic), filed
/// as a machine proposal on an agent case, approved by a reviewer over the API.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_agent_rolls_back_a_canary_that_does_worse_on_live_traffic() {
    let _one = EMBEDDED.lock().await;
    use metaprompt_agent::case::{Proposal, VersionId};
    use metaprompt_agent::monitor::{Against, Finding, Slice};
    use metaprompt_agent::{Case, State};
    use metaprompt_registry::model::{NewVersion, Origin, VersionRef};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("metaprompt.toml"),
        "[agent]\nmin_n = 20\ncanary_weight = 50\ncanary_min_n = 40\n",
    )
    .unwrap();
    let good = incumbent(d, true);
    cli(d, &["prompts", "add", "news", good.to_str().unwrap()]).await;
    cli(d, &["prompts", "label", "news@v1", "production"]).await;
    let lib = d.join("lib.db");
    let library = metaprompt_registry::open(&lib).await.unwrap();
    let v1 = library
        .resolve(&VersionRef::parse("news@v1").unwrap())
        .await
        .unwrap();
    let mut bad = v1.file().unwrap();
    for demo in &mut bad.demos {
        demo.insert("label".into(), json!("politics"));
    }
    let v2 = library
        .add(NewVersion {
            parents: vec![v1.hash.clone()],
            ..NewVersion::new("news", bad, Origin::Optimize, "agent")
        })
        .await
        .unwrap()
        .version;
    library.close().await;
    let now = chrono::Utc::now();
    let slice = Slice::Tag {
        key: "topic".into(),
        value: "business".into(),
    };
    let case = Case {
        id: "news.planted".into(),
        prompt: "news".into(),
        slice: slice.clone(),
        state: State::Proposed,
        opened_at: now,
        updated_at: now,
        label: "production".into(),
        incumbent: VersionId {
            hash: v1.hash.clone(),
            seq: 1,
        },
        finding: Finding {
            prompt: "news".into(),
            slice,
            against: Against::Rest,
            n: 40,
            mean: 0.2,
            reference_n: 80,
            reference_mean: 0.8,
            p: 1e-6,
            q: 1e-5,
        },
        seen: 1,
        diagnosis: None,
        proposal: Some(Proposal {
            version: VersionId {
                hash: v2.hash.clone(),
                seq: v2.seq,
            },
            algorithm: "planted".into(),
            run_dir: String::new(),
            checks: Vec::new(),
            cost_per_execution_usd: None,
        }),
        attempts: Vec::new(),
        review_comment: None,
        canary: None,
        spent: Vec::new(),
        search: None,
        waiting: None,
        log: Vec::new(),
    };
    let service = metaprompt_registry::open_service(&lib).await.unwrap();
    service.save_case(&case.to_row().unwrap()).await.unwrap();
    service.close().await;

    let mut app = App::new(Server::start(d, &["--insecure-local"]));
    let r = app
        .http
        .post(
            app.server
                .url(&format!("/v1/prompts/news/versions/v{}/review", v2.seq)),
        )
        .json(&json!({"decision": "approve", "comment": "looks fine"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    app.pass().await;
    assert_eq!(app.case().await.unwrap()["state"], "canary");

    let mut ended = None;
    for _ in 0..8 {
        app.traffic(40, 25).await;
        app.pass().await;
        let case = app.case().await.unwrap();
        eprintln!("{}", case["log"].as_array().unwrap().last().unwrap());
        if case["state"] != "canary" {
            ended = Some(case);
            break;
        }
    }
    let case = ended.unwrap_or_else(|| panic!("the canary never ended"));
    assert_eq!(case["state"], "rolled_back", "{case:#}");
    assert!(
        case["canary"]["last"]["high"].as_f64().unwrap() < 0.0,
        "rolled back because the interval lies below zero: {case:#}"
    );
    let fetched = app.get("/v1/prompts/news?label=production").await;
    assert_eq!(fetched["seq"].as_u64(), Some(1), "{fetched:#}");
    let labels = app.get("/v1/prompts/news/labels").await.to_string();
    assert!(!labels.contains(&v2.hash), "the split is gone: {labels}");
}
