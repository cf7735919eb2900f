//! Tests of `candidate`.

use super::*;

#[test]
fn instructions_are_read_from_both_forms() {
    assert_eq!(
        instruction_from(" classify the review as positive or negative."),
        ("Classify the review as positive or negative.".into(), None)
    );
    assert_eq!(
        instruction_from("Thinking aloud.\n<prompt>\nYou label reviews.\n</prompt>"),
        (
            "You label reviews.".into(),
            Some("Thinking aloud.".to_string())
        )
    );
    assert_eq!(instruction_from("\"Say yes.\"").0, "Say yes.");
    assert_eq!(
        instruction_from("label it. Never lie.\nNever lie. Be brief.").0,
        "Label it. Never lie. Be brief."
    );
}

#[tokio::test]
async fn a_candidate_over_the_prompt_token_cap_is_rejected_before_it_is_scored() {
    let frame = Frame::of(
        &PromptFile::from_template("seed", "Review: {{ text }}\nSentiment:"),
        &crate::brief::Brief {
            name: "sst2".into(),
            description: "Classify the sentiment of a review.".into(),
            inputs: vec!["text".into()],
            output: "label".into(),
            labels: vec![],
        },
    );
    let (meta, guard) = (MetaPrompts::builtin(), Guard::new(None));
    let checks = Checks {
        meta: &meta,
        guard: &guard,
        constraints: &[],
        probe: None,
        output: "label",
        seed: 1,
        format: Some(PromptFormat::Text),
        max_prompt_tokens: Some(40),
    };
    let short = checks
        .check(
            "p1".into(),
            String::new(),
            None,
            frame.prompt("p", "Label it.", &[]),
            &[],
        )
        .await;
    assert_eq!(short.status, Status::Accepted);
    let long = frame.prompt("p", &"Read the review with care. ".repeat(10), &[]);
    let c = checks
        .check("p2".into(), String::new(), None, long, &[])
        .await;
    let Status::Rejected(why) = &c.status else {
        panic!("{:?}", c.status)
    };
    assert!(why[0].contains("over the cap of 40"), "{why:?}");
}

#[test]
fn a_wrapped_instruction_is_read_without_its_wrapping() {
    for (answer, instruction) in [
        (
            "<prompt>Here's the new instruction: **Classify the sentiment of the movie review as positive or negative.**</prompt>",
            "Classify the sentiment of the movie review as positive or negative.",
        ),
        (
            "Here's the new instruction: <instruction>Given a list of words, write the opposite of each.</instruction>",
            "Given a list of words, write the opposite of each.",
        ),
        (
            "<prompt><choose>Yes if you return to the starting point, No otherwise</choose></prompt>",
            "Yes if you return to the starting point, No otherwise",
        ),
        (
            "<output>language classification</output>",
            "Language classification",
        ),
        ("<reverse>", "<reverse>"),
    ] {
        assert_eq!(instruction_from(answer).0, instruction, "{answer}");
    }
}

#[test]
fn instructions_that_differ_in_case_or_punctuation_only_are_one() {
    assert_eq!(
        instruction_key("Classify the  review -- positive, or negative."),
        instruction_key("classify the review: positive or negative")
    );
    assert_ne!(
        instruction_key("Give the final number after ####."),
        instruction_key("Give the final number after.")
    );
}

#[tokio::test]
async fn the_same_instruction_in_other_case_or_punctuation_is_a_duplicate() {
    let frame = crate::brief::Frame::fresh(&crate::brief::Brief::from_description("x"));
    let probe = Example {
        id: "dev:1".into(),
        vars: std::collections::BTreeMap::from([
            ("input".to_string(), serde_json::json!("dull")),
            ("output".to_string(), serde_json::json!("negative")),
        ]),
        expected: Some(serde_json::json!("negative")),
    };
    let (meta, guard) = (MetaPrompts::builtin(), Guard::new(None));
    let first = Candidate {
        prompt: Some(frame.prompt("p", "Label the review as positive or negative.", &[])),
        status: Status::Accepted,
        ..Candidate::failed("p0".into(), String::new())
    };
    // Compared as files and as a text model sees them.
    for (format, probe) in [(None, None), (Some(PromptFormat::Text), Some(&probe))] {
        let checks = Checks {
            meta: &meta,
            guard: &guard,
            constraints: &[],
            probe,
            output: "output",
            seed: 1,
            format,
            max_prompt_tokens: None,
        };
        for (instruction, twin) in [
            ("label the review as positive or negative", true),
            ("Label the review as -- positive, or negative!", true),
            (
                "Label the review as positive or negative, then stop.",
                false,
            ),
        ] {
            let c = checks
                .check(
                    "p1".into(),
                    String::new(),
                    None,
                    frame.prompt("p", instruction, &[]),
                    std::slice::from_ref(&first),
                )
                .await;
            let expected = if twin {
                Status::Duplicate("p0".into())
            } else {
                Status::Accepted
            };
            assert_eq!(c.status, expected, "{instruction} ({format:?})");
        }
    }
}

#[tokio::test]
async fn a_copy_that_only_adds_a_chat_form_is_a_duplicate_for_a_text_model() {
    let mut seed = PromptFile::from_template("sst2", "Review: {{ text }}\nSentiment:");
    seed.demos = vec![std::collections::BTreeMap::from([
        ("text".to_string(), serde_json::json!("great")),
        ("label".to_string(), serde_json::json!("positive")),
    ])];
    seed.demo_template = Some("Review: {{ text }}\nSentiment: {{ label }}\n\n".into());
    let mut twin = seed.clone();
    twin.messages = vec![metaprompt_eval::prompt::MessageTemplate {
        role: metaprompt_llm::Role::User,
        content: "Review: {{ text }}".into(),
    }];
    let probe = Example {
        id: "dev:1".into(),
        vars: std::collections::BTreeMap::from([
            ("text".to_string(), serde_json::json!("dull")),
            ("label".to_string(), serde_json::json!("negative")),
        ]),
        expected: Some(serde_json::json!("negative")),
    };
    let (meta, guard) = (MetaPrompts::builtin(), Guard::new(None));
    let checks = |format| Checks {
        meta: &meta,
        guard: &guard,
        constraints: &[],
        probe: Some(&probe),
        output: "label",
        seed: 1,
        format,
        max_prompt_tokens: None,
    };
    let earlier = |p: &PromptFile| Candidate {
        id: "p0".into(),
        answer: String::new(),
        notes: None,
        prompt: Some(p.clone()),
        status: Status::Accepted,
        guard: GuardReport::default(),
        score: None,
        report: None,
    };
    let text = checks(Some(PromptFormat::Text))
        .check(
            "p1".into(),
            String::new(),
            None,
            twin.clone(),
            &[earlier(&seed)],
        )
        .await;
    assert_eq!(text.status, Status::Duplicate("p0".into()));
    // A chat model sees the new messages: not a duplicate there, nor by file.
    for format in [Some(PromptFormat::Chat), None] {
        let c = checks(format)
            .check(
                "p1".into(),
                String::new(),
                None,
                twin.clone(),
                &[earlier(&seed)],
            )
            .await;
        assert_eq!(c.status, Status::Accepted, "{format:?}");
    }
}
