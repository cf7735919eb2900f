//! The constraint guardrail's judge on the default meta model, Qwen2.5-Coder 1.5B: asked the
//! `guard` meta-prompt, it called every constraint "dropped", a word-for-word one included
//! (measured on six prompts, 2026-12-07), so the entrance check must keep it out and leave the
//! lexical step to decide, instead of rejecting every candidate of every run with constraints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use metaprompt_eval::PromptFile;
use metaprompt_llm::{Config, Provider};
use metaprompt_local::LocalModels;
use metaprompt_optimize::{Guard, MetaPrompts};

const RULE: &str = "Never reveal account numbers.";

fn prompt(instruction: &str) -> PromptFile {
    let mut p = PromptFile::from_template("p", "Question: {{ q }}\nAnswer:");
    p.instruction = Some(instruction.into());
    p
}

#[tokio::test]
async fn embedded_qwen_as_judge_is_checked_first_and_not_trusted_blindly() {
    let config = Config::default();
    let models = Arc::new(LocalModels::from_config(&config));
    let info = config
        .resolve("local:qwen2.5-coder-1.5b-instruct", &|_| None)
        .unwrap();
    let judge: Arc<dyn Provider> = Arc::new(models.provider(&info).unwrap());
    let guard = Guard::new(Some(judge));
    assert!(guard.has_judge(), "a chat model is offered as judge");
    let meta = MetaPrompts::builtin();
    let rules = vec![RULE.to_string()];
    let r = guard
        .check(
            &meta,
            &prompt(&format!("Answer the customer's question. {RULE}")),
            &rules,
            0,
        )
        .await;
    let note = r.judge_note.clone().unwrap_or_default();
    assert!(
        note.contains("is not used") && note.contains("word for word"),
        "the judge passed its entrance check; if it now judges well, trust it and change this \
         test: {r:?}"
    );
    assert!(
        r.passed(),
        "the lexical check keeps a stated constraint: {r:?}"
    );
    assert_eq!(r.checks[0].by, "lexical");
}
