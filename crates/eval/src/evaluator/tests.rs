//! Tests of `evaluator`.

use metaprompt_llm::PromptFormat;
use metaprompt_llm::testing::ScriptedProvider;
use serde_json::json;

use super::*;

fn examples() -> Vec<Example> {
    ["good", "bad", "fine"]
        .iter()
        .zip(["positive", "negative", "positive"])
        .enumerate()
        .map(|(i, (t, l))| Example {
            id: format!("d:{}", i + 1),
            vars: BTreeMap::from([("text".into(), json!(t)), ("label".into(), json!(l))]),
            expected: Some(json!(l)),
        })
        .collect()
}

#[test]
fn a_prompts_own_tokens_count_its_words_and_demos_not_the_example() {
    let mut p = PromptFile::from_template("p", "Review: {{ text }}\nSentiment:");
    let bare = own_tokens(&p, PromptFormat::Text, "label").unwrap();
    // "Review: \nSentiment:" is 20 bytes: 5 tokens at 4 bytes a token.
    assert_eq!(bare, 5);
    p.instruction = Some("x".repeat(400));
    // The instruction and its blank line before the template: 422 bytes, 106 tokens.
    assert_eq!(own_tokens(&p, PromptFormat::Text, "label").unwrap(), 106);
    p.demo_template = Some("Review: {{ text }}\nSentiment: {{ label }}\n\n".into());
    p.demos = vec![BTreeMap::from([
        ("text".into(), json!("y".repeat(400))),
        ("label".into(), json!("positive")),
    ])];
    let with_demo = own_tokens(&p, PromptFormat::Text, "label").unwrap();
    assert!(with_demo > 106 + 100, "{with_demo}");
    // In chat form too, and a long example changes nothing: it is not the prompt's own.
    assert!(own_tokens(&p, PromptFormat::Chat, "label").unwrap() > bare + 200);
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_naming_the_example() {
    let mut examples = examples();
    examples[1]
        .vars
        .insert("text".into(), json!("word ".repeat(2000)));
    examples[2]
        .vars
        .insert("text".into(), json!("x".repeat(100_000)));
    let prompt = PromptFile::from_template("p", "Review: {{ text }}\nSentiment:");
    let options = EvalOptions {
        temperature: 0.0,
        max_tokens: 64,
        stop: vec![],
        output: "label".into(),
        seed: 1,
        answer_after: None,
    };
    let mut info = metaprompt_llm::ModelInfo::new(metaprompt_llm::ProviderKind::Local, "m");
    // Unknown window: nothing to check.
    assert!(check_context(&prompt, &info, &examples, &options).is_ok());
    info.context_tokens = Some(2048);
    let e = check_context(&prompt, &info, &examples, &options).unwrap_err();
    assert_eq!((e.example.as_str(), e.others, e.allowed), ("d:2", 1, 1984));
    let text = e.to_string();
    assert!(
            text.starts_with("d:2: prompt `p`")
                && text.contains("about 2509 tokens")
                && text.contains("more than the 1984 that fit local:m (2048 tokens of context, 64 kept for the output)")
                && text.contains("1 more examples are too long")
                && text.contains("[local] context_size"),
            "{text}"
        );
    info.context_tokens = Some(200_000);
    assert!(check_context(&prompt, &info, &examples, &options).is_ok());
}

#[tokio::test]
async fn generation_path_scores_and_summarizes() {
    let model: Arc<dyn Provider> = Arc::new(ScriptedProvider::new("m").respond_with(|r| {
        let Prompt::Chat(m) = &r.prompt else {
            return Ok(String::new());
        };
        Ok(if m[0].content.contains("bad") {
            "Negative".into()
        } else {
            "positive!".into()
        })
    }));
    let choice = MetricConfig::choice(["positive", "negative"]);
    let scorer = Scorer::new(&[choice], None).unwrap();
    let prompt = PromptFile::from_template("p", "Review: {{ text }}\nSentiment:");
    let options = EvalOptions {
        temperature: 0.0,
        max_tokens: 4,
        stop: vec![],
        output: "label".into(),
        seed: 1,
        answer_after: None,
    };
    let report = evaluate(&prompt, &model, &scorer, &examples(), &options, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(report.summary.examples, 3);
    assert_eq!(report.summary.score.mean, 1.0);
    assert_eq!(report.summary.mode, "generation");
    assert_eq!(report.results[1].output, "Negative");
    assert!(report.summary.cost_usd.unwrap() > 0.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/r.jsonl");
    report.write_jsonl(&path).unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["expected"], "positive");
    assert_eq!(lines[0]["input"]["text"], "good");
    assert!(
        lines[0]["input"].get("label").is_none(),
        "the expected output is not an input"
    );
    for key in [
        "output",
        "score",
        "input_tokens",
        "cost_usd",
        "latency_ms",
        "cached",
    ] {
        assert!(lines[0].get(key).is_some(), "{key}");
    }
}

#[tokio::test]
async fn failed_calls_are_recorded_not_dropped() {
    let model: Arc<dyn Provider> = Arc::new(
        ScriptedProvider::new("m")
            .reply("positive")
            .fail(metaprompt_llm::LlmError::Config("boom".into()))
            .reply("positive"),
    );
    let scorer = Scorer::new(&[MetricConfig::equals()], None).unwrap();
    let prompt = PromptFile::from_template("p", "{{ text }}");
    let options = EvalOptions {
        temperature: 0.0,
        max_tokens: 4,
        stop: vec![],
        output: "label".into(),
        seed: 1,
        answer_after: None,
    };
    let report = evaluate(&prompt, &model, &scorer, &examples(), &options, &|_, _| {})
        .await
        .unwrap();
    assert_eq!(report.summary.errors, 1);
    assert_eq!(report.results.len(), 3);
    assert!(report.results[1].error.as_deref().unwrap().contains("boom"));
    // Unscored, not a zero: the estimate is over the two scored examples.
    assert_eq!(report.results[1].score, None);
    assert_eq!(report.results[1].passed, None);
    assert_eq!(report.summary.score.n, 2);
    assert_eq!(report.scores().len(), 2);
    assert_eq!(report.passes().len(), 2);
    let line = serde_json::to_value(&report.results[1]).unwrap();
    assert!(line["score"].is_null(), "{line}");
}

#[tokio::test]
async fn with_no_example_scored_there_is_no_score_but_the_first_error() {
    let model: Arc<dyn Provider> = Arc::new(
        ScriptedProvider::new("m")
            .respond_with(|_| Err(metaprompt_llm::LlmError::Config("nothing listens".into()))),
    );
    let scorer = Scorer::new(&[MetricConfig::equals()], None).unwrap();
    let prompt = PromptFile::from_template("p", "{{ text }}");
    let report = evaluate(
        &prompt,
        &model,
        &scorer,
        &examples(),
        &options(),
        &|_, _| {},
    )
    .await
    .unwrap();
    let s = &report.summary;
    assert_eq!((s.examples, s.errors, s.scored()), (3, 3, 0));
    assert_eq!(
        s.first_error.as_deref(),
        Some("the model call failed: nothing listens")
    );
    // A run with every example scored has no first error.
    let model: Arc<dyn Provider> =
        Arc::new(ScriptedProvider::new("m").respond_with(|_| Ok("positive".into())));
    let report = evaluate(
        &prompt,
        &model,
        &scorer,
        &examples(),
        &options(),
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(report.summary.first_error, None);
    assert_eq!(report.summary.scored(), 3);
    assert!(
        !serde_json::to_string(&report.summary)
            .unwrap()
            .contains("first_error")
    );
}

#[test]
fn error_text_keeps_the_root_cause() {
    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Outer(#[source] std::io::Error);
    let e = Outer(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "Connection refused (os error 111)",
    ));
    assert_eq!(
        error_text(&e),
        "request failed: Connection refused (os error 111)"
    );
    let plain = std::io::Error::other("said once");
    assert_eq!(error_text(&plain), "said once");
}

#[test]
fn shorten_cuts_between_words_and_keeps_the_cause() {
    let e = "the model call failed: openai:gpt-4o-mini: gave up after 3 attempts; last error: openai:gpt-4o-mini: request failed: error sending request for url (http://127.0.0.1:9/v1/chat/completions): Connection refused (os error 111)";
    let short = shorten(e, 160);
    assert!(short.chars().count() <= 160, "{short}");
    assert!(
        short.ends_with(": Connection refused (os error 111)")
            || short.ends_with(" Connection refused (os error 111)"),
        "{short}"
    );
    assert!(short.starts_with("the model call failed: "), "{short}");
    // Every word shown is a whole word of the message.
    let words: Vec<&str> = e.split_whitespace().collect();
    for w in short.split_whitespace().filter(|w| *w != "…") {
        assert!(words.contains(&w), "`{w}` is cut: {short}");
    }
    assert_eq!(shorten("short: enough", 160), "short: enough");
    // A cause longer than the room: the end of it, from a word's start.
    let long = format!("outer: {}", "word ".repeat(100));
    let short = shorten(&long, 60);
    assert!(
        short.starts_with("outer:") && short.ends_with("word"),
        "{short}"
    );
    assert!(short.chars().count() <= 60, "{short}");
    // One giant word is cut, not dropped.
    assert_eq!(shorten(&"x".repeat(50), 10), format!("{}…", "x".repeat(10)));
}

fn options() -> EvalOptions {
    EvalOptions {
        temperature: 0.0,
        max_tokens: 4,
        stop: vec![],
        output: "label".into(),
        seed: 1,
        answer_after: None,
    }
}

fn equals() -> MetricConfig {
    toml::from_str("type = \"equals\"").unwrap()
}

/// Right or wrong like `equals`, but fails outright on an output with a question mark.
#[derive(Debug)]
struct Fussy;

#[async_trait::async_trait]
impl Metric for Fussy {
    fn name(&self) -> &str {
        "fussy"
    }
    async fn score(
        &self,
        example: &Example,
        output: &str,
    ) -> Result<Score, crate::metric::MetricError> {
        if output.contains('?') {
            return Err(crate::metric::MetricError::Failed {
                metric: "fussy".into(),
                message: "cannot read a question".into(),
            });
        }
        let right = example.expected.as_ref().and_then(Value::as_str) == Some(output);
        Ok(Score {
            value: f64::from(u8::from(right)),
            feedback: None,
        })
    }
}

#[tokio::test]
async fn a_failed_metric_leaves_the_example_unscored_not_zero() {
    let model: Arc<dyn Provider> = Arc::new(
        ScriptedProvider::new("m")
            .reply("positive")
            .reply("negative?")
            .reply("negative"),
    );
    let scorer = Scorer {
        metrics: vec![(equals(), Arc::new(Fussy) as Arc<dyn Metric>)],
    };
    let prompt = PromptFile::from_template("p", "{{ text }}");
    let report = evaluate(
        &prompt,
        &model,
        &scorer,
        &examples(),
        &options(),
        &|_, _| {},
    )
    .await
    .unwrap();
    let r = &report.results[1];
    assert_eq!((r.score, r.passed), (None, None));
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("cannot read a question")
    );
    assert_eq!(r.output, "negative?", "the output is kept");
    // One right, one wrong, one unscored: 0.5 over 2, not 1/3 over 3.
    let s = &report.summary;
    assert_eq!((s.examples, s.errors, s.score.n), (3, 1, 2));
    assert_eq!(s.score.mean, 0.5);
    assert_eq!(s.pass_rate, 0.5);
}

#[tokio::test]
async fn compare_pairs_only_examples_scored_for_both() {
    let scorer = Scorer::new(&[equals()], None).unwrap();
    let prompt = PromptFile::from_template("p", "{{ text }}");
    let a: Arc<dyn Provider> = Arc::new(
        ScriptedProvider::new("a")
            .reply("positive")
            .fail(metaprompt_llm::LlmError::Config("boom".into()))
            .reply("positive"),
    );
    let b: Arc<dyn Provider> =
        Arc::new(ScriptedProvider::new("b").respond_with(|_| Ok("negative".into())));
    let ra = evaluate(&prompt, &a, &scorer, &examples(), &options(), &|_, _| {})
        .await
        .unwrap();
    let rb = evaluate(&prompt, &b, &scorer, &examples(), &options(), &|_, _| {})
        .await
        .unwrap();
    let c = compare(&ra, &rb, 1);
    // Example 2 (A failed) is out: on examples 1 and 3 A is right and B wrong.
    assert_eq!((c.pairs, c.unpaired), (2, 1));
    assert_eq!(c.paired.n, 2);
    assert_eq!(c.paired.diff, -1.0);
    assert_eq!((c.mcnemar.only_a, c.mcnemar.only_b), (2, 0));
}

#[test]
fn label_continuations_get_a_leading_space() {
    assert_eq!(
        continuation(&Prompt::Text("Sentiment:".into()), "positive"),
        " positive"
    );
    assert_eq!(continuation(&Prompt::Text("Answer: (".into()), "A)"), "A)");
    assert_eq!(
        continuation(&Prompt::Text("Sentiment: ".into()), "positive"),
        "positive"
    );
}

/// Worked answers whose working names the other label first: read from the whole output, the
/// first label in it is wrong.
fn worked_reply(r: &metaprompt_llm::Request) -> Result<String, metaprompt_llm::LlmError> {
    let Prompt::Chat(m) = &r.prompt else {
        return Ok(String::new());
    };
    Ok(if m.last().unwrap().content.contains("bad") {
        "not positive: so far negative\nAnswer: negative".into()
    } else {
        "not negative: so far positive\nAnswer: positive".into()
    })
}

/// A prompt that works its answer out first (`[run] answer_after`) is generated even where the
/// model scores labels, runs with its own `max_tokens` and no stop, and is scored on what
/// follows the marker; the results keep the whole working.
#[tokio::test]
async fn a_worked_answer_is_generated_and_scored_after_its_marker() {
    let scripted = Arc::new(
        ScriptedProvider::new("m")
            .respond_with(worked_reply)
            .score_with(|_| panic!("a worked answer is never label-scored")),
    );
    let model: Arc<dyn Provider> = scripted.clone();
    let scorer = Scorer::new(&[MetricConfig::choice(["positive", "negative"])], None).unwrap();
    let mut prompt = PromptFile::from_template("p", "Review: {{ text }}\nSentiment:");
    prompt.run = Some(crate::settings::RunSettings {
        temperature: 0.0,
        max_tokens: 200,
        stop: vec![],
        labels: None,
        generate: false,
        answer: None,
        answer_after: Some("Answer:".into()),
    });
    let mut task_options = options();
    task_options.stop = vec!["\n".into()];
    let report = evaluate(
        &prompt,
        &model,
        &scorer,
        &examples(),
        &task_options,
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(report.summary.mode, "generation");
    assert_eq!(report.summary.score.mean, 1.0, "{:?}", report.results);
    assert!(report.results[1].output.starts_with("not positive"));
    let calls = scripted.calls();
    assert_eq!(calls.len(), 3);
    for call in calls {
        assert_eq!(call.max_tokens, 200);
        assert!(
            call.stop.is_empty(),
            "the task's line stop would cut the working"
        );
    }
    // The same outputs without the marker setting: each read from its first label, all wrong.
    prompt.run = None;
    let plain: Arc<dyn Provider> = Arc::new(ScriptedProvider::new("m").respond_with(worked_reply));
    let report = evaluate(
        &prompt,
        &plain,
        &scorer,
        &examples(),
        &options(),
        &|_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(report.summary.score.mean, 0.0);
}
