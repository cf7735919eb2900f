//! The words the screen reads a text by: its content words (matched on a crude stem), the
//! words of instructions in general, and plain lower-case tokens.

/// Words too common to say what a text is about.
pub(super) const FUNCTION_WORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "also",
    "always",
    "another",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "each",
    "every",
    "from",
    "have",
    "having",
    "here",
    "into",
    "just",
    "like",
    "make",
    "more",
    "most",
    "much",
    "must",
    "only",
    "other",
    "over",
    "same",
    "should",
    "some",
    "such",
    "than",
    "that",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "under",
    "very",
    "what",
    "when",
    "where",
    "which",
    "while",
    "will",
    "with",
    "would",
    "your",
    "yours",
    "given",
    "following",
    "text",
    "input",
    "output",
    "answer",
    "write",
    "task",
    "please",
    "based",
    "using",
];

/// Words of instructions in general, which relate an instruction to any task.
pub(super) const INSTRUCTION_WORDS: &[&str] = &[
    "answer",
    "reply",
    "respond",
    "response",
    "classify",
    "classification",
    "categorize",
    "category",
    "determine",
    "decide",
    "identify",
    "label",
    "choose",
    "select",
    "pick",
    "think",
    "step",
    "reason",
    "explain",
    "read",
    "return",
    "print",
    "question",
    "sentence",
    "word",
    "phrase",
    "correct",
    "careful",
    "carefully",
    "exactly",
    "only",
    "single",
    "format",
    "summarize",
    "translate",
    "rewrite",
    "extract",
    "list",
    "count",
    "compute",
    "calculate",
    "solve",
    "evaluate",
    "example",
    "examples",
    "instruction",
    "given",
    "option",
    "options",
];

/// What a word is matched by: lower case, its first five letters (a crude stem, so that
/// "reviewer" meets "review" and "classifies" meets "classify"); words under four letters and
/// common function words are not content.
pub(super) fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 4)
        .map(str::to_lowercase)
        .filter(|w| !FUNCTION_WORDS.contains(&w.as_str()))
        .map(|w| w.chars().take(5).collect())
}

/// Whitespace collapsed, lower case: how texts are compared verbatim.
pub(super) fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Lower-case runs of letters and digits: `What 's the West Indies ?` reads as `what`, `s`,
/// `the`, `west`, `indies`, so spacing and punctuation do not tell two texts apart.
pub(super) fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Verbs an instruction starts with besides the [`INSTRUCTION_WORDS`]: a two-word text that
/// starts with one of these ("Reverse words") is an order, not a label.
const IMPERATIVES: &[&str] = &[
    "add", "be", "compare", "complete", "continue", "convert", "describe", "detect", "find", "fix",
    "generate", "give", "guess", "name", "output", "predict", "rate", "rephrase", "reverse", "say",
    "score", "sort", "state", "tell", "use", "write",
];

/// Whether `word` is one an instruction starts with (a verb of instructions).
pub(super) fn opens_instruction(word: &str) -> bool {
    let w = word
        .trim_matches(|c: char| !c.is_alphabetic())
        .to_lowercase();
    INSTRUCTION_WORDS.contains(&w.as_str()) || IMPERATIVES.contains(&w.as_str())
}
