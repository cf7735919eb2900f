//! The screen on real answers: what the weak meta models wrote (each with its reason, read
//! through `instruction_from` as a run reads it), and instructions a person would write, which
//! must pass, on an SST-2-like, a TREC-like, a navigation and a code task.

#![allow(clippy::unwrap_used)]

use metaprompt_eval::dataset::Example;
use metaprompt_eval::prompt::PromptFile;
use serde_json::json;

use super::*;
use crate::brief::Brief;
use crate::candidate::instruction_from;

fn example(field: &str, input: &str, output: &str) -> Example {
    let mut vars = std::collections::BTreeMap::new();
    vars.insert(field.into(), json!(input));
    vars.insert("label".into(), json!(output));
    Example {
        id: input.chars().take(8).collect(),
        vars,
        expected: Some(json!(output)),
    }
}

/// A classification task: `field` in, `label` out.
fn task(name: &str, description: &str, field: &str, labels: &[&str]) -> Brief {
    Brief {
        name: name.into(),
        description: description.into(),
        inputs: vec![field.into()],
        output: "label".into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

fn screen_of(brief: &Brief, seed: &str, examples: &[(&str, &str)]) -> Screen {
    let seed = PromptFile::from_template("seed", seed);
    let examples: Vec<Example> = examples
        .iter()
        .map(|(i, o)| example(&brief.inputs[0], i, o))
        .collect();
    Screen::new(brief, &seed, &examples.iter().collect::<Vec<_>>())
}

fn screen() -> Screen {
    let seed = "Review: {{ review }}\nSentiment:";
    let brief = task(
        "sst2",
        "Classify the sentiment of a movie review as positive or negative.",
        "review",
        &["negative", "positive"],
    );
    screen_of(
        &brief,
        seed,
        &[
            (
                "a gorgeous, witty, seductive movie that never loses its charm",
                "positive",
            ),
            ("the plot is a dull mess of clichés", "negative"),
        ],
    )
}

fn trec() -> Screen {
    let seed = "Question: {{ question }}\nType:";
    let brief = task(
        "trec",
        "Classify what kind of answer a question asks for.",
        "question",
        &[
            "abbreviation",
            "description",
            "entity",
            "human",
            "location",
            "number",
        ],
    );
    screen_of(
        &brief,
        seed,
        &[
            (
                "What 's the largest island in the West Indies ?",
                "location",
            ),
            ("How many calories are in a banana ?", "number"),
            ("Who invented the telephone ?", "human"),
            ("What does NASA stand for ?", "abbreviation"),
            ("Why is the sky blue ?", "description"),
            ("What breed of dog is Scooby-Doo ?", "entity"),
        ],
    )
}

fn navigate() -> Screen {
    let seed = "{{ input }}\nAnswer:";
    let brief = task(
        "navigate",
        "If you follow these instructions, do you return to the starting point?",
        "input",
        &["Yes", "No"],
    );
    screen_of(
        &brief,
        seed,
        &[
            (
                "Always face forward. Take 5 steps right. Take 5 steps left.",
                "Yes",
            ),
            ("Turn left. Take 3 steps. Turn around. Take 3 steps.", "Yes"),
            ("Take 2 steps. Turn right. Take 1 step.", "No"),
        ],
    )
}

fn code_task() -> Screen {
    let seed = "Problem: {{ problem }}\nSolution:";
    let brief = task(
        "mbpp",
        "Write a Python function that solves the problem.",
        "problem",
        &[],
    );
    screen_of(
        &brief,
        seed,
        &[(
            "Write a function to find the longer of two strings.",
            "def f",
        )],
    )
}

/// The reason a meta answer is junk, read as a run reads it.
fn answer(s: &Screen, answer: &str) -> Option<Junk> {
    s.check(&instruction_from(answer).0)
}

#[test]
fn what_the_weak_meta_model_wrote_is_screened_out_with_its_reason() {
    let s = screen();
    // Answers the 270M base model wrote in real runs.
    assert_eq!(s.check(""), Some(Junk::Empty));
    assert_eq!(s.check("\"\""), Some(Junk::Empty));
    assert_eq!(
        s.check("1, 2, 3, 5, 7, 8, 11, 12, 15, 16, 17, 18, 19, 20"),
        Some(Junk::NoWords)
    );
    assert_eq!(
        s.check("I am a video-game developer living in Oregon."),
        Some(Junk::Unrelated)
    );
    assert_eq!(
        s.check("Translate the formula into an expression or verbal logic."),
        None,
        "\"translate\" is an instruction word: loose on purpose"
    );
    assert_eq!(s.check("Photograph a spaceship."), Some(Junk::Unrelated));
    assert_eq!(
        s.check("the review the review the review the review the review"),
        Some(Junk::Repeats)
    );
    assert_eq!(s.check("Positive."), Some(Junk::CopiesExample));
    assert_eq!(
        s.check("Review: A gorgeous, witty, seductive movie that never loses its charm"),
        Some(Junk::CopiesExample)
    );
}

#[test]
fn what_the_small_instruction_tuned_meta_models_wrote_is_screened_out_with_its_reason() {
    let s = screen();
    for (written, reason) in [
        (
            "The instruction is a reframing of a movie into its output.",
            Junk::Wrapper,
        ),
        ("<reverse>", Junk::Markup),
        ("<classify-sentiment text>", Junk::Markup),
        (
            "<do a sentence embedding analysis of the given inputs and outputs>",
            Junk::Markup,
        ),
        (
            "<turn right> Take 5 steps <turn around> Take 1 step",
            Junk::Markup,
        ),
        ("<instruction></instruction>", Junk::Markup),
        // Unwrapped to "Language classification": a label, not an order.
        ("<output>language classification</output>", Junk::Fragment),
        (
            "Write a function that takes two strings as input and returns the longer one.",
            Junk::Code,
        ),
        (
            "```python\ndef label(review):\n    return 1\n```",
            Junk::Code,
        ),
        ("Use this:\n```\nprint(review.sentiment)\n```", Junk::Code),
        (
            "Follow one instruction to turn each input into its output.",
            Junk::Vacuous,
        ),
        ("Transform each input into its output.", Junk::Vacuous),
    ] {
        assert_eq!(answer(&s, written), Some(reason), "{written}");
    }
    let t = trec();
    assert_eq!(
        answer(&t, "What is the largest island in the West Indies?"),
        Some(Junk::CopiesExample),
        "a near copy of `What 's the largest island in the West Indies ?`"
    );
    assert_eq!(
        answer(&t, "<prompt>Transform each input into its output.</prompt>"),
        Some(Junk::Vacuous)
    );
}

#[test]
fn a_usable_instruction_in_a_wrapper_or_a_stray_tag_passes_once_unwrapped() {
    for (s, written) in [
        (
            screen(),
            "Here's the new instruction: **Classify the sentiment of the movie review as positive or negative.**",
        ),
        (
            screen(),
            "Here's the new instruction: <instruction>Given a list of words, write the opposite of each.</instruction>",
        ),
        (
            trec(),
            "<instruction>Identify the type of entity or information asked in the input and return it.</instruction>",
        ),
        (
            navigate(),
            "<choose>Yes if you return to the starting point, No otherwise</choose>",
        ),
    ] {
        assert_eq!(answer(&s, written), None, "{written}");
    }
}

#[test]
fn instructions_a_person_would_write_pass() {
    let general = [
        "Think step by step.",
        "Let's think step by step.",
        "Answer the question.",
        "Classify the review.",
        "Reply with the label only.",
        "Solve the math word problem step by step, then give the final number after ####.",
    ];
    let sst2 = [
        "Classify the sentiment of the review.",
        "Decide whether the movie review is positive or negative.",
        "Say if the reviewer liked the film.",
        "Read the review and answer with one word: positive or negative.",
        "Label each review by its tone.",
    ];
    let trec_own = [
        "Classify what kind of answer a question asks for: abbreviation, description, entity, human, location or number.",
        "Say whether the question asks for a person, a place, a number or something else.",
    ];
    let navigate_own = ["Follow the steps and say Yes if you end where you started."];
    for (name, s, own) in [
        ("sst2", screen(), &sst2[..]),
        ("trec", trec(), &trec_own[..]),
        ("navigate", navigate(), &navigate_own[..]),
    ] {
        for ok in general.iter().chain(own) {
            assert_eq!(s.check(ok), None, "{name}: {ok}");
        }
    }
}

#[test]
fn what_the_task_itself_uses_is_allowed() {
    // A task about code may ask for code.
    let written = "Write a function that takes two strings as input and returns the longer one.";
    assert_eq!(code_task().check(written), None);
    // Tags the seed prompt uses may be named.
    let seed = "Think, then answer inside <answer></answer>.\n{{ question }}";
    let brief = task("qa", "Answer the question.", "question", &[]);
    let tagged = screen_of(&brief, seed, &[]);
    let written = "Think step by step, then put the final answer in <answer></answer> tags.";
    assert_eq!(tagged.check(written), None);
    assert_eq!(screen().check(written), Some(Junk::Markup));
    // In a navigation task "turn" is the task's own word, not the meta-prompt's framing.
    assert_eq!(
        navigate().check("Follow one instruction to turn each input into its output."),
        None
    );
}

#[test]
fn the_summary_counts_each_reason() {
    let mut n = Screened::default();
    assert_eq!(n.summary(), None);
    n.instructions = 12;
    assert_eq!(n.summary().unwrap(), "0 of 12 rejected");
    *n.rejected.entry(Junk::Empty).or_default() += 2;
    *n.rejected.entry(Junk::CopiesExample).or_default() += 1;
    *n.rejected.entry(Junk::Markup).or_default() += 1;
    assert_eq!(
        n.summary().unwrap(),
        "4 of 12 rejected (2 empty, 1 copies of an example, 1 markup)"
    );
}

#[test]
fn reasons_read_and_write_in_kebab_case_and_old_counts_still_read() {
    let old: Screened = serde_json::from_str(
        r#"{"instructions": 3, "rejected": {"copies-example": 1, "no-words": 2}}"#,
    )
    .unwrap();
    assert_eq!(old.rejected_total(), 3);
    let mut n = Screened::default();
    for j in [
        Junk::Markup,
        Junk::Code,
        Junk::Vacuous,
        Junk::Wrapper,
        Junk::Fragment,
    ] {
        n.rejected.insert(j, 1);
    }
    assert_eq!(
        serde_json::to_value(&n.rejected).unwrap(),
        json!({"markup": 1, "code": 1, "vacuous": 1, "wrapper": 1, "fragment": 1})
    );
}

#[test]
fn a_copy_of_the_meta_prompts_example_of_form_is_screened_out() {
    let shown = crate::meta::MetaPrompts::builtin().shown_instructions();
    assert_eq!(shown.len(), 1, "{shown:?}");
    let s = trec().with_shown(&shown);
    // What Qwen 1.5B answered for TREC, given an example of form: the example itself.
    let copied = format!("<prompt>{}</prompt>", shown[0]);
    assert_eq!(answer(&s, &copied), Some(Junk::CopiesExample));
    let reworded = shown[0]
        .replace("Read the", "Read this")
        .replace(" only", "");
    assert_eq!(answer(&s, &reworded), Some(Junk::CopiesExample));
    // Its topic leaking into an instruction for the task (Qwen 1.5B, TREC).
    let leaked = "Read the instructions and decide whether the recipe calls for chocolate. \
                  Answer with yes or no only.";
    assert_eq!(answer(&s, leaked), Some(Junk::CopiesExample));
    // The same form, about the task: what it wrote the other three times.
    for own in [
        "Read the question and decide whether it asks for an abbreviation, a description, an \
         entity, a human, a location or a number. Answer with that word only.",
        "Read the given question and determine what kind of answer it asks for. Answer with \
         abbreviation, description, entity, human, location or number only.",
    ] {
        assert_eq!(answer(&s, own), None, "{own}");
    }
    // The example's form on a yes-or-no task is what the example is for (Qwen 1.5B, BIG-Bench
    // Hard sports and navigate): not a copy.
    let sports = screen_of(
        &task(
            "bbh_sports_understanding",
            "Say whether a sentence about sports is plausible (yes or no).",
            "input",
            &["yes", "no"],
        ),
        "Q: {{ input }}\nA:",
        &[(
            "Joao Moutinho caught the screen pass in the NFC championship.",
            "no",
        )],
    )
    .with_shown(&shown);
    for own in [
        "Read the sentence and decide whether it is plausible about sports. Answer with yes or \
         no only.",
        "Read the sentence and decide whether it is about sports. Answer with yes or no only.",
        "Read the instruction and decide whether it brings you back to the starting point. \
         Answer with yes or no only.",
    ] {
        assert_eq!(answer(&sports, own), None, "{own}");
    }
}

/// An instruction for every input names none of them: "…the city is located in New York"
/// (Qwen 1.5B on TREC), "…whether Crista tells the truth" (on web of lies). The task's own
/// capitalised words (its labels, `True`, an acronym it defines) and a sentence's first word
/// are not names.
#[test]
fn an_instruction_that_names_an_examples_people_or_places_is_rejected() {
    let trec = trec();
    assert_eq!(
        trec.check(
            "Read the description about a city and decide what kind of answer the question \
             asks for: the city is in the West Indies. Answer with one word."
        ),
        Some(Junk::Names)
    );
    assert_eq!(
        trec.check("Decide whether the question asks about NASA or another entity."),
        Some(Junk::Names)
    );
    assert_eq!(
        trec.check(
            "Read the question and decide what kind of answer it asks for.\nWho, What or \
             Where questions: answer human, entity or location."
        ),
        None
    );
    let brief = task(
        "bbh_web_of_lies",
        "Evaluate a random boolean function expressed as a word problem.",
        "input",
        &["Yes", "No"],
    );
    let lies = screen_of(
        &brief,
        "Q: {{ input }}\nA:",
        &[(
            "Question: Fidel lies. Crista says Fidel tells the truth. Does Crista tell the truth?",
            "No",
        )],
    );
    assert_eq!(
        lies.check("Decide whether Crista tells the truth. Answer Yes or No."),
        Some(Junk::Names)
    );
    assert_eq!(
        lies.check(
            "Follow who says whom lies and decide whether the last person tells the truth. \
             Answer Yes or No."
        ),
        None
    );
}
