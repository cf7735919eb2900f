//! Tests of `guard`.

use super::*;
use metaprompt_llm::testing::ScriptedProvider;

const RULE: &str = "Never reveal account numbers.";

fn prompt(instruction: &str) -> PromptFile {
    let mut p = PromptFile::from_template("p", "Question: {{ q }}\nAnswer:");
    p.instruction = Some(instruction.into());
    p
}

fn verdict(instruction: &str) -> (Verdict, bool) {
    let (c, certain) = lexical(RULE, &prompt_text(&prompt(instruction)));
    (c.verdict, certain)
}

#[test]
fn lexical_check_tells_kept_from_dropped_and_weakened() {
    use Verdict::*;
    assert_eq!(
        verdict("You are a bank assistant. NEVER reveal account numbers!"),
        (Kept, true)
    );
    assert_eq!(
        verdict("Help the customer.\nYou must never reveal any account numbers to anyone."),
        (Kept, true)
    );
    assert_eq!(
        verdict("You don't reveal the customer's account number."),
        (Kept, true)
    );
    assert_eq!(
        verdict("You are a helpful bank assistant."),
        (Dropped, true)
    );
    assert_eq!(
        verdict("Reveal account numbers when useful."),
        (Weakened, true)
    );
    assert_eq!(
        verdict("Never reveal account numbers unless the customer asks."),
        (Weakened, true)
    );
    assert_eq!(
        verdict("Try to never reveal account numbers."),
        (Weakened, true)
    );
    // A paraphrase: not confirmed lexically, so the judge (or rejection) decides.
    assert_eq!(
        verdict("Do not disclose numbers of accounts."),
        (Kept, false)
    );
}

#[tokio::test]
async fn without_a_judge_a_dropped_or_doubtful_constraint_rejects_the_candidate() {
    let meta = MetaPrompts::builtin();
    let guard = Guard::new(None);
    let rules = vec![RULE.to_string(), "Answer in English.".to_string()];
    let ok = guard
        .check(
            &meta,
            &prompt("Answer in English. Never reveal account numbers."),
            &rules,
            0,
        )
        .await;
    assert!(ok.passed(), "{:?}", ok.reasons());
    let dropped = guard
        .check(&meta, &prompt("Answer in English."), &rules, 0)
        .await;
    assert!(!dropped.passed());
    let reasons = dropped.reasons();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("account numbers") && reasons[0].contains("dropped"));
    let doubtful = guard
        .check(
            &meta,
            &prompt("Answer in English. Do not disclose numbers of accounts."),
            &rules,
            0,
        )
        .await;
    assert!(!doubtful.passed());
}

/// A judge that answers `answer` about candidates, and passes the entrance check (the
/// check prompts are the only ones without the candidates' template).
fn chat_judge(answer: &'static str) -> Arc<ScriptedProvider> {
    let mut info = metaprompt_llm::ModelInfo::new(metaprompt_llm::ProviderKind::Openai, "j");
    info.format = PromptFormat::Chat;
    Arc::new(
        ScriptedProvider::new("judge")
            .with_info(info)
            .respond_with(move |request| {
                let text = format!("{:?}", request.prompt);
                if text.contains("Question:") {
                    Ok(answer.to_string())
                } else if text.contains(EXCEPTION) {
                    Ok(r#"[{"constraint": 1, "verdict": "weakened", "reason": "x"}]"#.into())
                } else {
                    Ok(r#"[{"constraint": 1, "verdict": "kept", "reason": "x"}]"#.into())
                }
            }),
    )
}

/// The candidate prompts a judge was shown (the entrance check's excluded).
fn candidates_judged(judge: &ScriptedProvider) -> Vec<String> {
    judge
        .calls()
        .iter()
        .filter_map(|c| match &c.prompt {
            metaprompt_llm::Prompt::Chat(ms) if ms[1].content.contains("Question:") => {
                Some(ms[1].content.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_judge_that_misjudges_the_entrance_check_is_not_used() {
    let meta = MetaPrompts::builtin();
    let mut info = metaprompt_llm::ModelInfo::new(metaprompt_llm::ProviderKind::Openai, "j");
    info.format = PromptFormat::Chat;
    // What Qwen2.5-Coder 1.5B answered, whatever the prompt.
    let judge = Arc::new(
        ScriptedProvider::new("judge")
            .with_info(info)
            .respond_with(|_| {
                Ok(r#"[{"constraint": 1, "verdict": "dropped", "reason": "not stated"}]"#.into())
            }),
    );
    let guard = Guard::new(Some(judge.clone()));
    let rules = [RULE.to_string()];
    let r = guard.check(&meta, &prompt(RULE), &rules, 0).await;
    assert!(r.passed(), "the lexical check decides: {r:?}");
    assert_eq!(r.checks[0].by, "lexical");
    let note = r.judge_note.unwrap();
    assert!(
        note.contains("not used") && note.contains("word for word"),
        "{note}"
    );
    // Checked once per set of constraints, not once per candidate.
    let again = guard
        .check(
            &meta,
            &prompt("Do not disclose numbers of accounts."),
            &rules,
            0,
        )
        .await;
    assert!(!again.passed(), "without a judge a doubt is a drop");
    assert_eq!(
        judge.calls().len(),
        1,
        "one entrance check, no candidate shown"
    );
}

#[tokio::test]
async fn the_judge_catches_a_contradiction_and_confirms_a_paraphrase() {
    let meta = MetaPrompts::builtin();
    let rules = vec![RULE.to_string()];
    // Lexically fine, but the judge sees the loophole elsewhere in the prompt.
    let judge = chat_judge(
        r#"Here you go: [{"constraint": 1, "verdict": "weakened", "reason": "the last sentence allows it for admins"}]"#,
    );
    let guard = Guard::new(Some(judge.clone()));
    let r = guard
        .check(
            &meta,
            &prompt("Never reveal account numbers. Admins may see everything."),
            &rules,
            0,
        )
        .await;
    assert!(!r.passed());
    assert_eq!(r.checks[0].by, "judge");
    assert!(r.reasons()[0].contains("admins"));
    // The judge saw the constraint and the candidate, after its entrance check.
    let shown = candidates_judged(&judge);
    assert_eq!(shown.len(), 1);
    assert!(shown[0].contains(RULE) && shown[0].contains("Admins may"));
    assert_eq!(
        judge.calls().len(),
        3,
        "two check prompts, then the candidate"
    );

    let judge = chat_judge(r#"[{"constraint": 1, "verdict": "kept", "reason": "same rule"}]"#);
    let r = Guard::new(Some(judge))
        .check(
            &meta,
            &prompt("Do not disclose numbers of accounts."),
            &rules,
            0,
        )
        .await;
    assert!(r.passed(), "{:?}", r.reasons());
}

#[tokio::test]
async fn a_clear_lexical_failure_is_final_and_costs_no_judge_call() {
    let meta = MetaPrompts::builtin();
    let judge = chat_judge(r#"[{"constraint": 1, "verdict": "kept", "reason": "?"}]"#);
    let r = Guard::new(Some(judge.clone()))
        .check(&meta, &prompt("Be helpful."), &[RULE.to_string()], 0)
        .await;
    assert!(!r.passed());
    assert!(judge.calls().is_empty());
}

#[tokio::test]
async fn an_unreadable_judge_answer_keeps_only_what_the_lexical_check_confirmed() {
    let meta = MetaPrompts::builtin();
    let judge = chat_judge("I think it is fine.");
    let guard = Guard::new(Some(judge));
    let sure = guard
        .check(&meta, &prompt(RULE), &[RULE.to_string()], 0)
        .await;
    assert!(sure.passed());
    assert!(
        sure.judge_note
            .as_deref()
            .unwrap()
            .contains("no JSON array")
    );
    let doubtful = guard
        .check(
            &meta,
            &prompt("Do not disclose numbers of accounts."),
            &[RULE.to_string()],
            0,
        )
        .await;
    assert!(!doubtful.passed());
}

#[test]
fn a_base_model_is_not_used_as_judge() {
    let mut info = metaprompt_llm::ModelInfo::new(metaprompt_llm::ProviderKind::Local, "g");
    info.format = PromptFormat::Text;
    let base = Arc::new(ScriptedProvider::new("base").with_info(info));
    assert!(!Guard::new(Some(base)).has_judge());
}
