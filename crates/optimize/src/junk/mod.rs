//! The junk screen: instructions a weak meta model writes that are not instructions at all,
//! rejected before they cost a metric call.
//!
//! A small base model asked for an instruction continues the document as often as it answers:
//! `""`, `"1, 2, 3, 5, 7, 8, 11"`, a copy of one of the examples it was shown, the same phrase
//! over and over, or a sentence about something else (`"I am a video-game developer…"`). A small
//! instruction-tuned one (a 0.5B–1.5B coder) wraps, tags or codes instead: `<reverse>`, `Write a
//! function that…`, `Transform each input into its output.` Each would take a racing rung of dev
//! examples to lose. The wrapping a usable instruction comes in (`Here's the new instruction:
//! **…**`, `<instruction>…</instruction>`) is stripped before, when the instruction is read
//! ([`crate::clean`]); what is left is screened. [`Screen::check`] names the first of these
//! that applies, in this order, from the text alone (no model call):
//!
//! - **empty** — fewer than three letters or digits;
//! - **markup** — an XML-like tag (`<word>`, `<word …>`, `</word>`) is left in it: a tag-only
//!   answer (`<reverse>`, `<classify-sentiment text>`) or tags mixed into the text (`<turn
//!   right> Take 5 steps`); tags the task's own texts use are allowed;
//! - **code** — it is code (a ```` ``` ```` fence, `def `, `function(`) or asks for code ("write
//!   a function/program/script/class/method", "implement a function"), unless the task's own
//!   words (name, description, seed prompt) say code, function, program, python or script;
//! - **no words** — under half of its visible characters are letters (numbers, lists,
//!   punctuation);
//! - **repeats itself** — eight words or more, under a third of them distinct;
//! - **copies an example** — it is one of the expected outputs, contains one of the task's
//!   example inputs (24 characters or more), or holds 80% of the distinct words (letters and
//!   digits, two or more) of an input with six or more: `What is the largest island in the
//!   West Indies?` copies `What 's the largest island in the West Indies ?`, or copies the
//!   example of form a meta-prompt showed (`form.toml`'s, which Qwen 1.5B returned as its own
//!   for TREC);
//! - **about an instruction** (`wrapper`) — it opens with "The instruction is/was", "This
//!   instruction" (or the same of a prompt): a description of an instruction, not one;
//! - **framing only** (`vacuous`) — every word (fillers aside) is the meta-prompts' framing of
//!   any task (instruction, input, output, example, pair, rule, follow, turn, transform,
//!   convert, map, each, into, its, given, …) and none is the task's own: `Follow one
//!   instruction to turn each input into its output.`;
//! - **a phrase** (`fragment`) — two words or fewer, without a full stop, not opening with a
//!   verb of instructions: a label or a title (`language classification`);
//! - **unrelated to the task** — two content words or more (four letters or longer, not
//!   common function words, matched on their first five letters) and not one of them belongs
//!   to the task: its name, description, field names, labels and seed prompt, the expected
//!   outputs, the words that recur in the example inputs (in 3 examples or 2% of them,
//!   whichever is more), and the words of instructions in general ("classify", "answer",
//!   "think", "step", …).
//!
//! The checks of words are deliberately loose (one shared word passes; "Think step by step."
//! and "Answer the question." are neither framing nor phrases), so that a rephrasing a person
//! would accept is never lost; what they catch is text about something else entirely (a word
//! that occurs in one review of hundreds does not make "Photograph a spaceship" about
//! reviews), or about nothing. The counts of each reason are part of the run's outcome
//! ([`Screened`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod code;
mod copies;
mod framing;
mod markup;
mod screen;
#[cfg(test)]
mod tests;
mod words;

pub use screen::Screen;

/// Why an instruction was screened out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Junk {
    Empty,
    NoWords,
    Repeats,
    CopiesExample,
    Unrelated,
    // Added after the first five, which keep their place: counts read from older checkpoints
    // list in the same order.
    Markup,
    Code,
    Vacuous,
    Wrapper,
    Fragment,
    Names,
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
            Junk::Markup => "junk: markup tags, not a sentence",
            Junk::Code => "junk: code, or asks for code",
            Junk::Vacuous => "junk: only the meta-prompt's framing, nothing of the task",
            Junk::Wrapper => "junk: talks about an instruction instead of giving one",
            Junk::Fragment => "junk: a phrase, not an instruction",
            Junk::Names => "junk: names someone or something from the examples",
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
            Junk::Markup => "markup",
            Junk::Code => "code",
            Junk::Vacuous => "framing only",
            Junk::Wrapper => "about an instruction",
            Junk::Fragment => "phrases",
            Junk::Names => "naming the examples' people or places",
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
