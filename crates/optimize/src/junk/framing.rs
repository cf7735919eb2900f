//! Instructions made of the meta-prompt's own framing: "Follow one instruction to turn each
//! input into its output." restates what every meta-prompt says about every task, and "The
//! instruction is a reframing of…" talks about an instruction instead of giving one. Neither
//! tells the execution model anything about the task.

use std::collections::HashSet;

use super::words::{content_words, tokens};

/// How the meta-prompts frame any task: instructions, inputs, outputs, examples, and the verbs
/// that relate them.
const FRAMING: &[&str] = &[
    "instruction",
    "instructions",
    "input",
    "inputs",
    "output",
    "outputs",
    "example",
    "examples",
    "pair",
    "pairs",
    "rule",
    "rules",
    "follow",
    "follows",
    "following",
    "turn",
    "turns",
    "transform",
    "transforms",
    "convert",
    "converts",
    "map",
    "maps",
    "produce",
    "generate",
    "apply",
    "write",
    "return",
    "each",
    "every",
    "one",
    "into",
    "its",
    "given",
    "shown",
    "corresponding",
];

/// Words that carry no meaning of their own, skipped before the framing is judged.
const FILLER: &[&str] = &[
    "a",
    "an",
    "the",
    "to",
    "of",
    "for",
    "and",
    "or",
    "in",
    "on",
    "by",
    "with",
    "as",
    "from",
    "that",
    "this",
    "it",
    "is",
    "are",
    "be",
    "all",
    "them",
    "their",
    "same",
    "way",
    "so",
    "then",
    "please",
    "correctly",
    "accordingly",
];

/// Whether every word of `text` (fillers aside) is framing and none is the task's own
/// (`own`: the task's content words, as [`content_words`] reads them). A task whose own words
/// include a framing word ("turn" in a navigation task) keeps instructions that use it.
pub(super) fn vacuous(text: &str, own: &HashSet<String>) -> bool {
    let mut words = tokens(text)
        .filter(|w| !FILLER.contains(&w.as_str()))
        .peekable();
    words.peek().is_some()
        && words.all(|w| FRAMING.contains(&w.as_str()))
        && !content_words(text).any(|w| own.contains(&w))
}

/// Whether `text` talks about an instruction instead of being one: it opens with "The
/// instruction is/was/are…", "This instruction…", or the same of a prompt.
pub(super) fn about_an_instruction(text: &str) -> bool {
    let words: Vec<String> = tokens(text).take(3).collect();
    let subject = |w: &str| matches!(w, "instruction" | "instructions" | "prompt");
    match words.as_slice() {
        [this, noun, ..] if this == "this" && subject(noun) => true,
        [the, noun, verb] if the == "the" && subject(noun) => {
            matches!(verb.as_str(), "is" | "was" | "are" | "were")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framing_alone_is_vacuous_and_a_task_word_is_not() {
        let none = HashSet::new();
        for vacuous_one in [
            "Follow one instruction to turn each input into its output.",
            "Transform each input into its output.",
            "Map each input to its output.",
            "Follow the instructions.",
        ] {
            assert!(vacuous(vacuous_one, &none), "{vacuous_one}");
        }
        for ok in [
            "Think step by step.",
            "Answer the question.",
            "Classify the review.",
            "Turn right.",
            "Do it.",
        ] {
            assert!(!vacuous(ok, &none), "{ok}");
        }
        // In a navigation task "turn" is the task's own word.
        let navigate: HashSet<String> = content_words("turn left, turn around").collect();
        assert!(!vacuous(
            "Follow one instruction to turn each input into its output.",
            &navigate
        ));
    }

    #[test]
    fn talk_about_an_instruction_is_found() {
        assert!(about_an_instruction(
            "The instruction is a reframing of a movie into its output."
        ));
        assert!(about_an_instruction("The instruction was to label it."));
        assert!(about_an_instruction("This instruction asks for a label."));
        assert!(!about_an_instruction(
            "The review is positive or negative: say which."
        ));
        assert!(!about_an_instruction("Follow the instruction."));
    }
}
