//! Copies of an example: an instruction that repeats one of the task's example inputs (the
//! meta model continuing the examples it was shown instead of describing them), verbatim or
//! nearly, or that is one of the expected outputs.
//!
//! A near copy must share a word particular to that input. Words most inputs have are the
//! task's own alphabet, and an instruction about the task names them: every Boolean
//! expression is made of `not`, `and`, `or`, `True`, `False`, `is`, so "Evaluate the
//! expression: NOT first, then AND, then OR. Answer with True or False." holds most of any
//! input's words and copies none (Qwen 1.5B wrote it on BBH boolean expressions, and the
//! screen took it for a copy).

use std::collections::{HashMap, HashSet};

use super::words::{normalize, tokens};

/// An input this long (in characters) or longer is a copy when contained verbatim.
const VERBATIM_CHARS: usize = 24;

/// An input with this many distinct words or more is a copy when most of them recur.
const NEAR_WORDS: usize = 6;

/// The share of an input's distinct words an instruction must hold to be a near copy, as a
/// fraction (4 of 5): high enough that an instruction which merely talks about the same
/// things is not one.
const NEAR_SHARE: (usize, usize) = (4, 5);

/// Inputs a word must occur in, at the least, to count as the task's alphabet (besides being
/// in more than half of them): with a handful of inputs every word is in half of them.
const COMMON_MIN: usize = 3;

/// The example texts an instruction is compared with.
#[derive(Debug, Clone, Default)]
pub(super) struct Copies {
    /// Inputs of [`VERBATIM_CHARS`] or more, normalized.
    verbatim: Vec<String>,
    /// The distinct words of inputs of [`NEAR_WORDS`] or more, each of two characters or
    /// more: a lone letter is the noise of a split contraction (`What 's` against `What is`).
    words: Vec<HashSet<String>>,
    /// Expected outputs, normalized.
    outputs: HashSet<String>,
    /// In how many inputs each word occurs, and how many inputs there are.
    seen_in: HashMap<String, usize>,
    inputs: usize,
}

impl Copies {
    pub(super) fn add_input(&mut self, text: &str) {
        if text.chars().count() >= VERBATIM_CHARS {
            self.verbatim.push(normalize(text));
        }
        let distinct = distinct_words(text);
        self.inputs += 1;
        for w in &distinct {
            *self.seen_in.entry(w.clone()).or_default() += 1;
        }
        if distinct.len() >= NEAR_WORDS {
            self.words.push(distinct);
        }
    }

    pub(super) fn add_output(&mut self, text: &str) {
        self.outputs.insert(normalize(text));
    }

    /// Whether `text` is an expected output, contains an input, or holds most of an input's
    /// words (in any spelling of its punctuation and spacing).
    pub(super) fn copied(&self, text: &str) -> bool {
        let norm = normalize(text);
        let bare = norm.trim_end_matches(['.', '!', '?']);
        if self.outputs.contains(&norm) || self.outputs.contains(bare) {
            return true;
        }
        if self.verbatim.iter().any(|i| norm.contains(i.as_str())) {
            return true;
        }
        let own = distinct_words(text);
        let (num, den) = NEAR_SHARE;
        self.words.iter().any(|input| {
            let shared: Vec<&String> = input.iter().filter(|w| own.contains(*w)).collect();
            shared.len() * den >= input.len() * num && shared.iter().any(|w| !self.common(w))
        })
    }

    /// Whether `word` is the task's alphabet: in more than half of the inputs, and in at
    /// least [`COMMON_MIN`].
    fn common(&self, word: &str) -> bool {
        let n = self.seen_in.get(word).copied().unwrap_or(0);
        n >= COMMON_MIN && n * 2 > self.inputs
    }
}

fn distinct_words(text: &str) -> HashSet<String> {
    tokens(text).filter(|w| w.chars().count() >= 2).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reworded_input_is_a_near_copy_and_a_question_about_it_is_not() {
        let mut c = Copies::default();
        c.add_input("What 's the largest island in the West Indies ?");
        c.add_input("How far is it from Denver to Aspen ?");
        c.add_output("location");
        assert!(c.copied("What is the largest island in the West Indies?"));
        assert!(c.copied("Answer: how far is it from Denver to Aspen?"));
        assert!(c.copied("Location."));
        assert!(!c.copied("Say what kind of place or thing the question asks about."));
        assert!(!c.copied("Name the largest island of the question's region."));
    }

    #[test]
    fn an_instruction_in_the_tasks_own_alphabet_copies_no_input() {
        let mut c = Copies::default();
        for input in [
            "not ( True ) and ( True ) is",
            "True and not not ( not False ) is",
            "not True or ( False and True ) is",
            "False or not ( True ) and False is",
            "True or False and not False is",
            "( True or False ) or not True is",
        ] {
            c.add_input(input);
        }
        assert!(!c.copied(
            "Read the Boolean expression and evaluate it: NOT first, then AND, then OR, and \
             what is in parentheses before all. Answer with True or False only."
        ));
        // A near copy of one input still shares what is particular to it.
        let mut c = Copies::default();
        for input in [
            "Joao Moutinho caught the screen pass in the NFC championship.",
            "Kyle Anderson scored the go-ahead goal in the World Cup.",
            "Jonas Valanciunas beat the buzzer in the Eastern Conference Finals.",
        ] {
            c.add_input(input);
        }
        assert!(c.copied("Joao Moutinho caught a screen pass in the NFC championship"));
    }
}
