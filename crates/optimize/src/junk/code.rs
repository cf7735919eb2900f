//! Code where an instruction should be: a coder meta model's habit of answering with a
//! function (`def reverse(s):`, a fenced block) or an order to write one ("Write a function
//! that takes two strings…"), which the execution model would follow instead of the task.

use super::words::tokens;

/// Verbs that, followed by "a"/"an" and a program-like noun, ask for code.
const MAKE: &[&str] = &["write", "implement", "create", "define", "build", "code"];

/// What such a verb would ask for.
const PROGRAMS: &[&str] = &["function", "program", "script", "class", "method"];

/// Words after the noun that make it ordinary prose: "a class label", "a method name".
const NOT_CODE_AFTER: &[&str] = &["label", "labels", "name", "names", "of"];

/// Words by which a task says it is about code, so that asking for code is its point.
const CODE_WORDS: &[&str] = &[
    "code",
    "coding",
    "function",
    "functions",
    "program",
    "programs",
    "programming",
    "python",
    "script",
    "scripts",
];

/// Whether `text` is or holds code, or asks for it.
pub(super) fn has_code(text: &str) -> bool {
    if text.contains("```") || text.contains("function(") {
        return true;
    }
    // A line that opens with `def` is a Python definition (capitalized when it opens the text).
    let lower = text.to_lowercase();
    if lower.starts_with("def ") || lower.contains(" def ") || lower.contains("\ndef ") {
        return true;
    }
    let words: Vec<String> = tokens(text).collect();
    words.iter().enumerate().any(|(i, verb)| {
        if !MAKE.contains(&verb.as_str()) {
            return false;
        }
        let rest = &words[i + 1..];
        let asks = |noun_at: usize| {
            rest.get(noun_at)
                .is_some_and(|n| PROGRAMS.contains(&n.as_str()))
                && rest
                    .get(noun_at + 1)
                    .is_none_or(|next| !NOT_CODE_AFTER.contains(&next.as_str()))
        };
        // "write code", "write python code"
        let code =
            rest.first().is_some_and(|w| w == "code") || rest.get(1).is_some_and(|w| w == "code");
        // "write a function", "write a python function", "implement a short program"
        let article = rest.first().is_some_and(|w| w == "a" || w == "an");
        code || (article && (asks(1) || asks(2)))
    })
}

/// Whether the task's own words (`text`) say it is about code.
pub(super) fn about_code(text: &str) -> bool {
    tokens(text).any(|w| CODE_WORDS.contains(&w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_requests_for_code_are_found() {
        for code in [
            "Write a function that takes two strings as input and returns the longer one.",
            "Implement a function to reverse each word.",
            "Write a Python program that sorts the list.",
            "Write python code to answer.",
            "```python\nprint(x)\n```",
            "def reverse(s): return s[::-1]",
            "Use function(x) on each input.",
        ] {
            assert!(has_code(code), "{code}");
        }
        for prose in [
            "Write the class of each question.",
            "Write a class label for the question.",
            "Define the word in one sentence.",
            "Classify the sentiment of the review.",
            "Decide whether the function of the sentence is a question.",
        ] {
            assert!(!has_code(prose), "{prose}");
        }
    }

    #[test]
    fn a_task_about_code_says_so() {
        assert!(about_code("Write a Python function for each problem."));
        assert!(about_code("mbpp program synthesis"));
        assert!(!about_code("Classify the sentiment of a movie review."));
    }
}
