//! The agent's pass over a real library file, with a loopback OpenAI-compatible mock as the
//! execution and meta model (the embedded-model scenario is in the CLI's tests): a slice with
//! no demonstration fails, the agent opens a case, searches, files a proposal with its
//! per-slice evidence, and after approval canaries it and promotes it — or, with a protected
//! constraint the proposal would lose, files nothing and serves nothing.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use metaprompt_agent::{Agent, Case, State};
use metaprompt_engine::{Engine, EngineOptions};
use metaprompt_eval::PromptFile;
use metaprompt_registry::model::{Decision, NewVersion, Origin, VersionRef};
use metaprompt_registry::service::{Feedback, FeedbackSource, Inference, ServiceStore};
use metaprompt_registry::{LabelMove, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The execution model: answers `billing` for an invoice question only when the prompt shows
/// a billing demonstration or says invoices go to billing (it learns from the prompt); `tech`
/// for tech questions; else `other`. As the meta model it writes a one-line hypothesis, or an
/// instruction that would fix billing and keeps nothing else of the prompt.
struct Model;

impl Respond for Model {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let prompt = body["prompt"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| body["messages"].to_string());
        let question = prompt.rsplit("Question:").next().unwrap_or_default();
        let answer = if prompt.contains("Cause:") || prompt.contains("Reason:") {
            "The prompt shows no billing example."
        } else if prompt.contains("Instruction:") || prompt.contains("instruction") {
            // A rewrite that would fix billing and drops every other sentence.
            "Send questions about an invoice to billing."
        } else if question.contains("invoice") {
            if prompt.contains("Team: billing") || prompt.contains("invoice to billing") {
                "billing"
            } else {
                "other"
            }
        } else if question.contains("laptop") {
            "tech"
        } else {
            "other"
        };
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 2});
        let reply = if body.get("messages").is_some() {
            json!({"choices": [{"message": {"role": "assistant", "content": answer},
                "finish_reason": "stop"}], "usage": usage})
        } else {
            json!({"choices": [{"text": answer, "finish_reason": "stop"}], "usage": usage})
        };
        ResponseTemplate::new(200).set_body_json(reply)
    }
}

/// [`Model`], and the first execution call (the search scoring its seed) stops the pass, as
/// Ctrl-C would.
struct Stopping(CancellationToken);

impl Respond for Stopping {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body);
        if !["Cause:", "Reason:", "Instruction:", "instruction"]
            .iter()
            .any(|m| body.contains(m))
        {
            self.0.cancel();
        }
        Model.respond(request)
    }
}

struct World {
    _dir: tempfile::TempDir,
    _server: MockServer,
    library: Arc<dyn Store>,
    service: Arc<dyn ServiceStore>,
    agent: Agent,
}

async fn world(constraint: Option<&str>, agent_toml: &str) -> World {
    world_with(constraint, agent_toml, None).await
}

async fn world_with(
    constraint: Option<&str>,
    agent_toml: &str,
    stop: Option<CancellationToken>,
) -> World {
    let server = MockServer::start().await;
    match stop {
        Some(token) => {
            Mock::given(method("POST"))
                .respond_with(Stopping(token))
                .mount(&server)
                .await
        }
        None => {
            Mock::given(method("POST"))
                .respond_with(Model)
                .mount(&server)
                .await
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = metaprompt_llm::Config::parse(&format!(
        "[providers.mock]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [models.\"mock:exec\"]\nformat = \"text\"\n\
         pricing = {{ input_per_mtok = 0.0, output_per_mtok = 0.0 }}\n\
         [agent]\nmin_n = 20\ncanary_min_n = 30\n{agent_toml}\n",
        server.uri()
    ))
    .unwrap();
    let lib = dir.path().join("library.sqlite");
    let engine = Engine::open(EngineOptions {
        config,
        cache: None,
        library: Some(lib.clone()),
        author: "test".into(),
    })
    .await
    .unwrap();
    let library = engine.library().await.unwrap().unwrap();
    let mut p = PromptFile::from_template("support", "Question: {{ question }}\nTeam:");
    p.demo_template = Some("Question: {{ question }}\nTeam: {{ team }}\n\n".into());
    p.demos = vec![
        [
            ("question".into(), json!("my laptop is slow")),
            ("team".into(), json!("tech")),
        ]
        .into(),
        [
            ("question".into(), json!("hello there")),
            ("team".into(), json!("other")),
        ]
        .into(),
    ];
    p.target_model = Some("mock:exec".into());
    if let Some(c) = constraint {
        p.instruction = Some(format!("Route the question to the right team. {c}"));
        p.constraints = vec![c.into()];
    }
    library
        .add(NewVersion::new("support", p, Origin::Human, "alice"))
        .await
        .unwrap();
    library
        .move_label(&LabelMove {
            prompt: "support".into(),
            label: "production".into(),
            to: Some(
                library
                    .resolve(&VersionRef::parse("support@v1").unwrap())
                    .await
                    .unwrap()
                    .hash,
            ),
            actor: "alice".into(),
            comment: None,
        })
        .await
        .unwrap();
    let service = metaprompt_registry::open_service(&lib).await.unwrap();
    let settings = metaprompt_agent::Settings::load(engine.config()).unwrap();
    let agent = Agent::new(
        engine,
        library.clone(),
        service.clone(),
        dir.path().join("agent"),
        settings,
    );
    World {
        _dir: dir,
        _server: server,
        library,
        service,
        agent,
    }
}

/// `n` inferences per topic at `seq`, scored as the mock model would be judged.
async fn traffic(w: &World, seq: u32, n: usize, minutes_ago: i64, tag: &str) {
    let version = w
        .library
        .resolve(&VersionRef::parse(&format!("support@v{seq}")).unwrap())
        .await
        .unwrap();
    let knows_billing = version.content.contains("billing");
    let (mut inferences, mut feedback) = (Vec::new(), Vec::new());
    for (topic, question, right) in [
        ("billing", "where is my invoice", "billing"),
        ("tech", "my laptop broke", "tech"),
        ("other", "good morning", "other"),
    ] {
        for k in 0..n {
            let id = format!("{tag}-{topic}-{seq}-{k}");
            let output = if topic == "billing" && !knows_billing {
                "other"
            } else {
                right
            };
            inferences.push(Inference {
                hash: version.hash.clone(),
                inputs: json!({"question": format!("{question} #{k}")}),
                output: Some(output.into()),
                tags: [("topic".to_string(), topic.to_string())].into(),
                ..logged(
                    &id,
                    seq,
                    Utc::now() - Duration::minutes(minutes_ago) + Duration::milliseconds(k as i64),
                )
            });
            feedback.push(judged(
                &id,
                output == right,
                (output != right).then(|| right.to_string()),
            ));
        }
    }
    w.service.record(&inferences, &feedback).await.unwrap();
}

/// A logged inference of `support` at `seq` on production (inputs and tags to fill in).
fn logged(id: &str, seq: u32, at: chrono::DateTime<Utc>) -> Inference {
    Inference {
        id: id.into(),
        prompt: "support".into(),
        hash: String::new(),
        seq,
        label: Some("production".into()),
        model: "mock:exec".into(),
        inputs: json!({"question": id}),
        rendered_hash: String::new(),
        output: Some("other".into()),
        error: None,
        tags: Default::default(),
        metadata: Value::Null,
        input_tokens: 1,
        output_tokens: 1,
        cost_usd: None,
        latency_ms: 1.0,
        caller: "app".into(),
        created_at: at,
    }
}

/// A user's verdict, with the right answer when it was wrong.
fn judged(id: &str, right: bool, correction: Option<String>) -> Feedback {
    Feedback {
        inference_id: id.into(),
        score: Some(if right { 1.0 } else { 0.0 }),
        label: None,
        correction,
        comment: None,
        source: FeedbackSource::User,
        caller: "app".into(),
        created_at: Utc::now(),
    }
}

/// The case on the billing slice (there is one, not one per pass).
async fn case(w: &World) -> Case {
    let cases: Vec<Case> = w
        .agent
        .cases(Some("support"))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.slice.to_string() == "topic=billing")
        .collect();
    assert_eq!(cases.len(), 1, "one case, not one per pass: {cases:#?}");
    cases.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_slice_becomes_a_proposal_a_canary_and_a_promotion() {
    let w = world(None, "").await;
    traffic(&w, 1, 60, 10, "a").await;
    let pass = w.agent.pass(Utc::now()).await.unwrap();
    assert!(
        pass.findings
            .iter()
            .any(|f| f.slice.to_string() == "topic=billing"),
        "{:#?}",
        pass.findings
    );
    let c = case(&w).await;
    assert_eq!(c.state, State::Proposed, "{:#?}", c.log);
    let d = c.diagnosis.clone().unwrap();
    assert!(d.summary.contains("`billing` ×"), "{}", d.summary);
    assert_eq!(d.hypothesis, "The prompt shows no billing example.");
    let p = c.proposal.clone().unwrap();
    assert_eq!(p.checks[0].slice, "topic=billing");
    assert!(
        p.checks[0].before < 0.1 && p.checks[0].after > 0.9,
        "{p:#?}"
    );
    assert!(p.checks.iter().any(|s| s.slice == "all"));
    // The proposal is in the review queue with its evidence, one row per slice.
    let queue = w.library.proposed().await.unwrap();
    assert_eq!(queue.len(), 1);
    let v2 = &queue[0];
    assert_eq!((v2.seq, v2.author.as_str()), (2, "agent"));
    assert!(v2.content.contains("billing"));
    let evidence = w.library.evidence(v2).await.unwrap();
    assert!(
        evidence
            .iter()
            .any(|e| e.split == "live topic=billing" && e.diff.unwrap() > 0.5),
        "{evidence:#?}"
    );

    // A second pass does not re-report the finding or search again.
    w.agent.pass(Utc::now()).await.unwrap();
    let again = case(&w).await;
    assert_eq!(again.state, State::Proposed);
    assert_eq!(again.seen, 2);
    assert_eq!(w.library.proposed().await.unwrap().len(), 1);

    // Another slice goes wrong meanwhile: its case waits while this prompt has a proposal out.
    let (mut inferences, mut feedback) = (Vec::new(), Vec::new());
    for k in 0..60 {
        let id = format!("tech-{k}");
        inferences.push(Inference {
            tags: [("channel".to_string(), "chat".to_string())].into(),
            ..logged(&id, 1, Utc::now() - Duration::minutes(3))
        });
        feedback.push(judged(&id, false, Some("tech".into())));
    }
    w.service.record(&inferences, &feedback).await.unwrap();
    w.agent.pass(Utc::now()).await.unwrap();
    let all = w.agent.cases(Some("support")).await.unwrap();
    let chat = all
        .iter()
        .find(|c| c.slice.to_string() == "channel=chat")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(chat.state, State::Open);
    assert!(
        chat.log
            .last()
            .unwrap()
            .what
            .starts_with("waiting: case support.topic_billing"),
        "{:#?}",
        chat.log
    );
    assert_eq!(
        w.library.proposed().await.unwrap().len(),
        1,
        "no second search"
    );

    // Approved: the next pass starts the canary.
    w.library
        .review(v2, Decision::Approve, "bob", Some("adds billing"))
        .await
        .unwrap();
    w.agent.pass(Utc::now()).await.unwrap();
    assert_eq!(case(&w).await.state, State::Canary);
    let splits = w.library.splits("support").await.unwrap();
    assert_eq!((splits.len(), splits[0].seq), (1, 2));

    // Live outcomes on both versions since the split: the canary is better; promoted.
    traffic(&w, 1, 40, -1, "inc").await;
    traffic(&w, 2, 40, -1, "can").await;
    w.agent
        .pass(Utc::now() + Duration::minutes(2))
        .await
        .unwrap();
    let c = case(&w).await;
    assert_eq!(c.state, State::Promoted, "{:#?}", c.log);
    let label = w
        .library
        .resolve(&VersionRef::parse("support@production").unwrap())
        .await
        .unwrap();
    assert_eq!(label.seq, 2);
    assert!(w.library.splits("support").await.unwrap().is_empty());
    let events = w.library.events("support").await.unwrap();
    assert!(
        events.iter().any(|e| e.actor == "agent"
            && e.comment.as_deref().unwrap_or("").contains("promotion")),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worse_canary_is_rolled_back() {
    let w = world(None, "canary_weight = 50").await;
    traffic(&w, 1, 60, 10, "a").await;
    w.agent.pass(Utc::now()).await.unwrap();
    let v2 = w.library.proposed().await.unwrap().remove(0);
    w.library
        .review(&v2, Decision::Approve, "bob", Some("try it"))
        .await
        .unwrap();
    w.agent.pass(Utc::now()).await.unwrap();
    assert_eq!(case(&w).await.state, State::Canary);
    // On live traffic the canary does worse (users judge differently from the check set).
    let started = case(&w).await.canary.unwrap().started_at;
    let (mut inferences, mut feedback) = (Vec::new(), Vec::new());
    for k in 0..60 {
        for (seq, pass) in [(1u32, k % 10 < 8), (2, k % 10 < 3)] {
            let id = format!("live-{seq}-{k}");
            inferences.push(logged(&id, seq, started + Duration::seconds(1 + k)));
            feedback.push(judged(&id, pass, None));
        }
    }
    w.service.record(&inferences, &feedback).await.unwrap();
    w.agent
        .pass(Utc::now() + Duration::minutes(2))
        .await
        .unwrap();
    let c = case(&w).await;
    assert_eq!(c.state, State::RolledBack, "{:#?}", c.log);
    assert!(w.library.splits("support").await.unwrap().is_empty());
    let production = w
        .library
        .resolve(&VersionRef::parse("support@production").unwrap())
        .await
        .unwrap();
    assert_eq!(production.seq, 1, "the label never moved");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proposal_that_drops_a_protected_constraint_is_never_filed_or_served() {
    let keep = "Never promise a refund.";
    // protegi rewrites the instruction; the mock meta model's rewrite keeps nothing of the
    // prompt, and the search puts the protected constraint back: what is filed keeps it.
    let w = world(
        Some(keep),
        "[agent.prompts.support]\nalgorithm = \"protegi\"",
    )
    .await;
    traffic(&w, 1, 60, 10, "a").await;
    w.agent.pass(Utc::now()).await.unwrap();
    let c = case(&w).await;
    assert_eq!(c.state, State::Proposed, "{:#?}", c.log);
    for v in &w.library.versions("support").await.unwrap() {
        assert!(
            v.content.contains(keep),
            "a version without the constraint was filed: {}",
            v.content
        );
    }
    // Whatever files a proposal without it (here: planted on the case), it is never served.
    let mut lost = w
        .library
        .resolve(&VersionRef::parse("support@v2").unwrap())
        .await
        .unwrap()
        .file()
        .unwrap();
    lost.instruction = Some("Send questions about an invoice to billing.".into());
    lost.constraints.clear();
    let v3 = w
        .library
        .add(NewVersion::new(
            "support",
            lost,
            Origin::Optimize,
            "someone",
        ))
        .await
        .unwrap()
        .version;
    let mut planted = c.clone();
    planted.proposal.as_mut().unwrap().version = metaprompt_agent::case::VersionId {
        hash: v3.hash.clone(),
        seq: v3.seq,
    };
    w.service
        .save_case(&planted.to_row().unwrap())
        .await
        .unwrap();
    w.library
        .review(&v3, Decision::Approve, "bob", Some("ship it"))
        .await
        .unwrap();
    w.agent.pass(Utc::now()).await.unwrap();
    let c = case(&w).await;
    assert_eq!(c.state, State::Attempted, "{:#?}", c.log);
    let why = &c.attempts.last().unwrap().why;
    assert!(
        why.starts_with("not served") && why.contains("refund"),
        "{why}"
    );
    assert!(w.library.splits("support").await.unwrap().is_empty());
    let production = w
        .library
        .resolve(&VersionRef::parse("support@production").unwrap())
        .await
        .unwrap();
    assert_eq!(production.seq, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pass_stopped_midway_keeps_its_case_spend_and_run_and_the_next_pass_resumes_it() {
    let stop = CancellationToken::new();
    let w = world_with(None, "", Some(stop.clone())).await;
    traffic(&w, 1, 60, 10, "a").await;
    // The pass is stopped while its search scores the seed.
    let stopped = w.agent.clone().with_cancel(stop.clone());
    stopped.pass(Utc::now()).await.unwrap();
    assert!(stop.is_cancelled());
    let c = case(&w).await;
    assert_eq!(c.state, State::Open, "{:#?}", c.log);
    let search = c.search.clone().unwrap_or_else(|| panic!("{:#?}", c.log));
    assert!(search.stopped_at.is_some());
    let run = std::path::PathBuf::from(&search.run_dir);
    assert!(run.join("checkpoint.json").is_file(), "{}", run.display());
    assert!(
        !run.join("report.json").exists(),
        "the search did not finish"
    );
    let spent: u64 = c.spent.iter().map(|s| s.calls).sum();
    assert!(
        spent >= 1 && spent == search.calls_recorded,
        "{:#?}",
        c.spent
    );
    let last = &c.log.last().unwrap().what;
    assert!(
        last.starts_with("stopped midway") && last.contains(&search.run_dir),
        "{last}"
    );
    assert!(c.diagnosis.is_some());
    assert!(w.library.proposed().await.unwrap().is_empty());

    // The next pass resumes that run (no second diagnosis, no second run) and files it,
    // saying what it does as it does it.
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = lines.clone();
    let agent = w
        .agent
        .clone()
        .with_progress(metaprompt_agent::Progress::to(move |s| {
            seen.lock().unwrap().push(s.to_string());
        }));
    agent.pass(Utc::now()).await.unwrap();
    let lines = lines.lock().unwrap().join("\n");
    for stage in [
        "reading the inference and feedback log",
        "collecting its failing and regression sets",
        "searching (fewshot",
        "resuming after round 0",
        "checking candidate",
    ] {
        assert!(lines.contains(stage), "{stage}: {lines}");
    }
    let c = case(&w).await;
    assert_eq!(c.state, State::Proposed, "{:#?}", c.log);
    assert!(c.search.is_none());
    assert!(
        c.log
            .iter()
            .any(|e| e.what == format!("resumed search: {}", search.run_dir)),
        "{:#?}",
        c.log
    );
    assert_eq!(c.proposal.as_ref().unwrap().run_dir, search.run_dir);
    assert!(run.join("report.json").is_file());
    assert!(!run.parent().unwrap().join("run-2").exists());
    let diagnosed = c
        .log
        .iter()
        .filter(|e| e.what.starts_with("diagnosed"))
        .count();
    assert_eq!(diagnosed, 1, "{:#?}", c.log);
    assert_eq!(
        c.spent.len(),
        2,
        "the stopped part and the rest: {:#?}",
        c.spent
    );
    assert_eq!(w.library.proposed().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn not_enough_data_says_exactly_what_is_missing() {
    // Ten calls a day: below what a search needs.
    let w = world(None, "max_calls_per_day = 10").await;
    traffic(&w, 1, 30, 10, "a").await;
    // A slice too small to test.
    let (mut inferences, mut feedback) = (Vec::new(), Vec::new());
    for k in 0..5 {
        let id = format!("email-{k}");
        inferences.push(Inference {
            tags: [("channel".to_string(), "email".to_string())].into(),
            ..logged(&id, 1, Utc::now() - Duration::minutes(3))
        });
        feedback.push(judged(&id, true, None));
    }
    w.service.record(&inferences, &feedback).await.unwrap();
    let pass = w.agent.pass(Utc::now()).await.unwrap();
    let email = pass
        .untested
        .iter()
        .find(|s| s.slice.to_string() == "channel=email")
        .unwrap_or_else(|| panic!("{:#?}", pass.untested));
    assert_eq!(
        email.why,
        "channel=email: 5 scored outcomes in the current window, needs 20"
    );
    // Too few corrections, and too little budget: both are said, the data first.
    let c = case(&w).await;
    let why = c.waiting.clone().unwrap_or_else(|| panic!("{:#?}", c.log));
    assert_eq!(
        why,
        "waiting for corrections: 30 of 30 failing inferences on topic=billing have a corrected \
         output (40 needed to search on); and the budget: a search needs at least 100 model \
         calls and 10 are left today (0 of 10 spent by all prompts, 0 of 1000 by support)"
    );
    assert_eq!(c.log.last().unwrap().what, why);
    // Enough corrections now (30 new inputs): only the budget is missing.
    traffic(&w, 1, 60, 5, "b").await;
    w.agent.pass(Utc::now()).await.unwrap();
    let why = case(&w).await.waiting.unwrap();
    assert!(
        why.starts_with("waiting for budget: a search needs at least 100 model calls and 10"),
        "{why}"
    );
    // `agent status` carries both.
    let status = metaprompt_agent::status(
        w.service.as_ref(),
        w.agent.settings(),
        Some("support"),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(status.untested.iter().any(|s| s.why == email.why));
    assert!(
        status
            .cases
            .iter()
            .any(|c| c.waiting.as_deref() == Some(why.as_str()))
    );
}
