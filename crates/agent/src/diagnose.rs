//! The meta model's hypothesis, checked: a small model asked for a root cause often repeats
//! the `diagnose` meta-prompt's own worked example (the chat-message case) instead of reading
//! the failures in front of it. Such a copy says nothing about the prompt; it is dropped and the
//! case says there is no hypothesis.

/// The shipped `diagnose` meta-prompt; its worked examples are the `Cause:` lines that say
/// something (the last `Cause:` is where the model writes).
const TEMPLATE: &str = include_str!("../../optimize/templates/diagnose.toml");

/// The worked examples' causes in the shipped `diagnose` meta-prompt.
pub fn worked_examples() -> Vec<&'static str> {
    TEMPLATE
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Cause:"))
        .map(str::trim)
        .filter(|c| c.split_whitespace().count() >= 4)
        .collect()
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `hypothesis` copies one of the worked examples: the same text once case,
/// punctuation and spacing are set aside, or most of the example's words (at least 60% of its
/// distinct words, and they make at least half of the hypothesis).
pub fn copies_example(hypothesis: &str) -> bool {
    let h = words(hypothesis);
    if h.is_empty() {
        return false;
    }
    let hs: std::collections::BTreeSet<&str> = h.iter().map(String::as_str).collect();
    worked_examples().into_iter().any(|example| {
        let e = words(example);
        if e == h {
            return true;
        }
        let es: std::collections::BTreeSet<&str> = e.iter().map(String::as_str).collect();
        let shared = es.intersection(&hs).count() as f64;
        shared >= 0.6 * es.len() as f64 && shared >= 0.5 * hs.len() as f64
    })
}

/// What the case says instead of a copied hypothesis.
pub const COPIED: &str = "(no hypothesis: the meta model repeated the meta-prompt's worked example instead of reading \
     the failures)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example_is_found_in_the_shipped_template() {
        let examples = worked_examples();
        assert_eq!(examples.len(), 1, "{examples:?}");
        assert!(examples[0].starts_with("The prompt's examples are all formal emails"));
    }

    #[test]
    fn a_copy_of_the_worked_example_is_detected_and_a_real_hypothesis_is_not() {
        let example = worked_examples()[0];
        assert!(copies_example(example));
        assert!(copies_example(&format!("  {}  ", example.to_uppercase())));
        // Lightly edited: still a copy.
        assert!(copies_example(
            "The prompt's examples are all formal emails; short chat messages with slang have \
             no examples, so the model reads them as small talk"
        ));
        // The first half of it, followed by the model's continuation of the notes.
        assert!(copies_example(
            "The prompt's examples are all formal emails; short chat messages with slang carry \
             no examples"
        ));
        assert!(!copies_example("The prompt shows no billing example."));
        assert!(!copies_example(
            "The prompt's examples never show the business label, so business news is read as \
             technology or finance."
        ));
        assert!(!copies_example(""));
    }
}
