//! The junk screen: instructions a weak meta model writes that are not instructions at all,
//! rejected before they cost a metric call.
//!
//! A small base model asked for an instruction continues the document as often as it answers:
//! `""`, `"1, 2, 3, 5, 7, 8, 11"`, a copy of one of the examples it was shown, the same phrase
//! over and over, or a sentence about something else (`"I am a video-game developer…"`). Each
//! would take a racing rung of dev examples to lose. [`Screen::check`] names the first of these
//! that applies, from the text alone (no model call):
//!
//! - **empty** — fewer than three letters or digits;
//! - **no words** — under half of its visible characters are letters (numbers, lists,
//!   punctuation);
//! - **repeats itself** — eight words or more, under a third of them distinct;
//! - **copies an example** — it contains one of the task's example inputs (24 characters or
//!   more), or is one of its expected outputs;
//! - **unrelated to the task** — two content words or more (four letters or longer, not
//!   common function words, matched on their first five letters) and not one of them belongs
//!   to the task: its name, description, field names, labels and seed prompt, the expected
//!   outputs, the words that recur in the example inputs (in 3 examples or 2% of them,
//!   whichever is more), and the words of instructions in general ("classify", "answer",
//!   "think", "step", …).
//!
//! The last is deliberately loose (one shared word passes), so that a rephrasing a person would
//! accept is never lost; what it catches is text about something else entirely (a word that
//! occurs in one review of hundreds does not make "Photograph a spaceship" about reviews). The
//! counts of each reason are part of the run's outcome ([`Screened`]).

use std::collections::{BTreeMap, HashSet};

use metaprompt_eval::dataset::Example;
use serde::{Deserialize, Serialize};

use crate::brief::Brief;
use metaprompt_eval::prompt::PromptFile;

/// Why an instruction was screened out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Junk {
    Empty,
    NoWords,
    Repeats,
    CopiesExample,
    Unrelated,
}

impl Junk {
    /// The reason as a rejection says it.
    pub fn describe(self) -> &'static str {
        match self {
            Junk::Empty => "junk: empty",
            Junk::NoWords => "junk: numbers or punctuation, not words",
            Junk::Repeats => "junk: repeats itself",
            Junk::CopiesExample => "junk: a copy of an example",
            Junk::Unrelated => "junk: shares no word with the task",
        }
    }

    /// The reason as a count says it ("2 empty, 1 copies of an example").
    fn counted(self) -> &'static str {
        match self {
            Junk::Empty => "empty",
            Junk::NoWords => "numbers or punctuation",
            Junk::Repeats => "repetitions",
            Junk::CopiesExample => "copies of an example",
            Junk::Unrelated => "unrelated to the task",
        }
    }
}

/// How many meta-written instructions a run screened, and how many it rejected, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Screened {
    pub instructions: u64,
    pub rejected: BTreeMap<Junk, u64>,
}

impl Screened {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// "3 of 12 rejected (2 empty, 1 copies of an example)", or `None` before any.
    pub fn summary(&self) -> Option<String> {
        if self.instructions == 0 {
            return None;
        }
        let parts: Vec<String> = self
            .rejected
            .iter()
            .map(|(j, n)| format!("{n} {}", j.counted()))
            .collect();
        Some(if parts.is_empty() {
            format!("0 of {} rejected", self.instructions)
        } else {
            format!(
                "{} of {} rejected ({})",
                self.rejected_total(),
                self.instructions,
                parts.join(", ")
            )
        })
    }
}

/// Words too common to say what a text is about.
const FUNCTION_WORDS: &[&str] = &[
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
const INSTRUCTION_WORDS: &[&str] = &[
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
fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphabetic())
        .filter(|w| w.chars().count() >= 4)
        .map(str::to_lowercase)
        .filter(|w| !FUNCTION_WORDS.contains(&w.as_str()))
        .map(|w| w.chars().take(5).collect())
}

fn normalize(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Examples read for the task's vocabulary and for copies, at most.
const EXAMPLES_READ: usize = 200;

/// What a run screens instructions against, built once from the task.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    vocabulary: HashSet<String>,
    /// Example inputs of 24 characters or more, normalized.
    inputs: Vec<String>,
    /// Expected outputs, normalized.
    outputs: HashSet<String>,
}

impl Screen {
    pub fn new(brief: &Brief, seed: &PromptFile, examples: &[&Example]) -> Self {
        let mut own = vec![
            brief.name.replace(['-', '_'], " "),
            brief.description.clone(),
            brief.output.clone(),
            brief.inputs.join(" "),
            brief.labels.join(" "),
        ];
        own.extend(seed.instruction.clone());
        own.extend(seed.template.clone());
        own.extend(seed.messages.iter().map(|m| m.content.clone()));
        own.push(INSTRUCTION_WORDS.join(" "));
        let mut inputs = Vec::new();
        let mut outputs = HashSet::new();
        // In how many examples' inputs each word occurs: the domain's words recur, a stray
        // one (any word at all, over a few hundred examples) does not.
        let mut in_inputs: std::collections::HashMap<String, usize> = Default::default();
        let read = examples.len().min(EXAMPLES_READ);
        for e in examples.iter().take(EXAMPLES_READ) {
            let expected = e.expected.as_ref().or_else(|| e.vars.get(&brief.output));
            for answer in expected
                .map(metaprompt_eval::dataset::accepted)
                .unwrap_or_default()
            {
                outputs.insert(normalize(&answer));
                own.push(answer);
            }
            for (key, value) in &e.vars {
                if *key == brief.output {
                    continue;
                }
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if text.chars().count() >= 24 {
                    inputs.push(normalize(&text));
                }
                for w in content_words(&text).collect::<HashSet<_>>() {
                    *in_inputs.entry(w).or_default() += 1;
                }
            }
        }
        let recurring = (read / 50).max(3);
        let mut vocabulary: HashSet<String> = own.iter().flat_map(|t| content_words(t)).collect();
        vocabulary.extend(
            in_inputs
                .into_iter()
                .filter(|&(_, n)| n >= recurring)
                .map(|(w, _)| w),
        );
        Self {
            vocabulary,
            inputs,
            outputs,
        }
    }

    /// The first reason `instruction` is junk, or `None`.
    pub fn check(&self, instruction: &str) -> Option<Junk> {
        let text = instruction.trim();
        if text.chars().filter(|c| c.is_alphanumeric()).count() < 3 {
            return Some(Junk::Empty);
        }
        let visible = text.chars().filter(|c| !c.is_whitespace()).count();
        let letters = text.chars().filter(|c| c.is_alphabetic()).count();
        if letters * 2 < visible {
            return Some(Junk::NoWords);
        }
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let distinct: HashSet<&String> = words.iter().collect();
        if words.len() >= 8 && distinct.len() * 3 < words.len() {
            return Some(Junk::Repeats);
        }
        let norm = normalize(text);
        let bare = norm.trim_end_matches(['.', '!', '?']);
        if self.outputs.contains(&norm) || self.outputs.contains(bare) {
            return Some(Junk::CopiesExample);
        }
        if self.inputs.iter().any(|i| norm.contains(i.as_str())) {
            return Some(Junk::CopiesExample);
        }
        let content: HashSet<String> = content_words(text).collect();
        if content.len() >= 2 && !self.vocabulary.is_empty() {
            let shared = content.iter().any(|w| self.vocabulary.contains(w));
            if !shared {
                return Some(Junk::Unrelated);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn example(review: &str, label: &str) -> Example {
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("review".into(), json!(review));
        vars.insert("label".into(), json!(label));
        Example {
            id: review.chars().take(8).collect(),
            vars,
            expected: Some(json!(label)),
        }
    }

    fn screen() -> Screen {
        let brief = Brief {
            name: "sst2".into(),
            description: "Classify the sentiment of a movie review as positive or negative.".into(),
            inputs: vec!["review".into()],
            output: "label".into(),
            labels: vec!["negative".into(), "positive".into()],
        };
        let seed = PromptFile::from_template("seed", "Review: {{ review }}\nSentiment:");
        let a = example(
            "a gorgeous, witty, seductive movie that never loses its charm",
            "positive",
        );
        let b = example("the plot is a dull mess of clichés", "negative");
        Screen::new(&brief, &seed, &[&a, &b])
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
    fn instructions_a_person_would_write_pass() {
        let s = screen();
        for ok in [
            "Classify the sentiment of the review.",
            "Decide whether the movie review is positive or negative.",
            "Say if the reviewer liked the film.",
            "Read the review and answer with one word: positive or negative.",
            "Label each review by its tone.",
            "Think step by step.",
        ] {
            assert_eq!(s.check(ok), None, "{ok}");
        }
    }

    #[test]
    fn the_summary_counts_each_reason() {
        let mut n = Screened::default();
        assert_eq!(n.summary(), None);
        n.instructions = 12;
        assert_eq!(n.summary().unwrap(), "0 of 12 rejected");
        *n.rejected.entry(Junk::Empty).or_default() += 2;
        *n.rejected.entry(Junk::CopiesExample).or_default() += 1;
        assert_eq!(
            n.summary().unwrap(),
            "3 of 12 rejected (2 empty, 1 copies of an example)"
        );
    }
}
